/**
 * NIQE exactly as pyiqa's default `niqe` computes it (Mittal et al. 2013, via BasicSR), in
 * float64 on the CPU: the metric ends in a grid search (AGGD shape over 9801 values) and a
 * pseudo-inverse, where float32 would move the chosen grid point, and its arithmetic is a few
 * million operations, small next to reading the image. Steps and conventions:
 * ../shared/fixtures/metrics/README.md ("NIQE").
 */
import { NoScore } from '../../errors.js';
import type { RgbImage } from '../../image/load.js';
import { NIQE_COV_PRIS, NIQE_MU_PRIS } from './niqe_params.js';
import { gaussianWindow } from './ssim.js';

const fr = Math.fround;
const BLOCK = 96;
const EPS64 = 2.220446049250313e-16;

/** 8-bit Y of YIQ as pyiqa: float32 (u8/255), 0.299 R + 0.587 G + 0.114 B, ×255, rounded half to even. */
export function niqeLuma(img: RgbImage): Float64Array {
  const n = img.width * img.height;
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const [r, g, b] = [fr(img.data[3 * i] / 255), fr(img.data[3 * i + 1] / 255), fr(img.data[3 * i + 2] / 255)];
    const v = fr(fr(fr(fr(r * fr(0.299)) + fr(g * fr(0.587))) + fr(b * fr(0.114))) * 255);
    y[i] = roundHalfEven(v);
  }
  return y;
}

function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

export interface NiqeTrace {
  normalizedScale1: Float64Array;
  halfScale: Float64Array;
  normalizedScale2: Float64Array;
  features: Float64Array[]; // per block, 36 values, MATLAB blockproc (column-major) order
  muDist: Float64Array;
  covDist: Float64Array;
}

/**
 * NIQE of an 8-bit RGB image (lower is better). `trace` receives the intermediates (tests).
 * Fewer than 2 blocks with finite features have no covariance, and pyiqa then gives no score:
 * one such block divides by n − 1 = 0 in its `nancov` (ZeroDivisionError), none makes its
 * `nanmean` NaN, and below 96 pixels a side there is no block to crop. That is `NoScore` here.
 */
export function niqe(img: RgbImage, trace?: (t: NiqeTrace) => void): number {
  const nh = Math.floor(img.height / BLOCK);
  const nw = Math.floor(img.width / BLOCK);
  if (nh * nw < 2) {
    throw new NoScore(`${img.width}x${img.height} holds ${nh * nw} whole ${BLOCK}x${BLOCK} block${nh * nw === 1 ? '' : 's'}; NIQE needs 2 (an image of at least ${2 * BLOCK}x${BLOCK} or ${BLOCK}x${2 * BLOCK})`);
  }
  const yFull = niqeLuma(img);
  const [H, W] = [nh * BLOCK, nw * BLOCK];
  const y = new Float64Array(H * W);
  for (let r = 0; r < H; r++) y.set(yFull.subarray(r * img.width, r * img.width + W), r * W);

  const n1 = normalize(y, H, W);
  const f1 = blockFeatures(n1, H, W, nh, nw, BLOCK);
  const half = imresizeHalf(y, H, W);
  const n2 = normalize(half, H / 2, W / 2);
  const f2 = blockFeatures(n2, H / 2, W / 2, nh, nw, BLOCK / 2);
  const feats = f1.map((a, i) => Float64Array.from([...a, ...f2[i]]));

  const { mu, cov, finite } = nanMeanCov(feats);
  if (finite < 2) {
    throw new NoScore(`${finite} of its ${feats.length} ${BLOCK}x${BLOCK} blocks ${finite === 1 ? 'has' : 'have'} finite features (a flat block has none); NIQE needs 2`);
  }
  const D = 36;
  const sum = new Float64Array(D * D);
  for (let i = 0; i < D * D; i++) sum[i] = (NIQE_COV_PRIS[i] + cov[i]) / 2;
  const inv = pinvSymmetric(sum, D);
  const diff = Float64Array.from(NIQE_MU_PRIS, (v, i) => v - mu[i]);
  let q = 0;
  for (let i = 0; i < D; i++) {
    let s = 0;
    for (let j = 0; j < D; j++) s += inv[i * D + j] * diff[j];
    q += diff[i] * s;
  }
  trace?.({ normalizedScale1: n1, halfScale: half, normalizedScale2: n2, features: feats, muDist: mu, covDist: cov });
  return Math.sqrt(q);
}

/** (x − μ) / (σ + 1), μ and σ from the 7×7 Gaussian window (σ 7/6), replicate padding. */
function normalize(x: Float64Array, H: number, W: number): Float64Array {
  const K = 7;
  const r = 3;
  const w = gaussianWindow(K, 7 / 6);
  const out = new Float64Array(H * W);
  for (let i = 0; i < H; i++) {
    for (let j = 0; j < W; j++) {
      let mu = 0;
      let m2 = 0;
      for (let a = 0; a < K; a++) {
        const row = Math.min(H - 1, Math.max(0, i + a - r)) * W;
        for (let b = 0; b < K; b++) {
          const v = x[row + Math.min(W - 1, Math.max(0, j + b - r))];
          const wt = w[a * K + b];
          mu += wt * v;
          m2 += wt * v * v;
        }
      }
      const sigma = Math.sqrt(Math.abs(m2 - mu * mu) + EPS64);
      out[i * W + j] = (x[i * W + j] - mu) / (sigma + 1);
    }
  }
  return out;
}

/** 18 features per block, blocks in MATLAB blockproc order (column-major: index j·nh + i). */
function blockFeatures(x: Float64Array, H: number, W: number, nh: number, nw: number, bs: number): Float64Array[] {
  const out: Float64Array[] = [];
  const block = new Float64Array(bs * bs);
  for (let bj = 0; bj < nw; bj++) {
    for (let bi = 0; bi < nh; bi++) {
      for (let r = 0; r < bs; r++) block.set(x.subarray((bi * bs + r) * W + bj * bs, (bi * bs + r) * W + bj * bs + bs), r * bs);
      out.push(featuresOf(block, bs));
    }
  }
  return out;
}

function featuresOf(block: Float64Array, bs: number): Float64Array {
  const feat: number[] = [];
  const [alpha, bl, br] = aggd(block);
  feat.push(alpha, (bl + br) / 2);
  const prod = new Float64Array(block.length);
  for (const [s0, s1] of [[0, 1], [1, 0], [1, 1], [1, -1]]) {
    // torch.roll: out[i][j] = in[(i − s0) mod bs][(j − s1) mod bs]
    for (let i = 0; i < bs; i++) {
      const si = (i - s0 + bs) % bs;
      for (let j = 0; j < bs; j++) prod[i * bs + j] = block[i * bs + j] * block[si * bs + ((j - s1 + bs) % bs)];
    }
    const [a, l, r] = aggd(prod);
    const mean = (r - l) * Math.exp(lgamma(2 / a) - lgamma(1 / a));
    feat.push(a, mean, l, r);
  }
  return Float64Array.from(feat);
}

// The AGGD shape grid: torch.arange(0.2, 10.001, 0.001) in float32 (9801 values), and its
// ratio function r(γ) = Γ(2/γ)² / (Γ(1/γ) Γ(3/γ)).
let GRID: { gam: Float64Array; r: Float64Array } | undefined;
function grid(): { gam: Float64Array; r: Float64Array } {
  if (GRID) return GRID;
  const n = Math.ceil((10.001 - 0.2) / 0.001);
  const gam = new Float64Array(n);
  const r = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    gam[i] = fr(0.2 + 0.001 * i);
    r[i] = Math.exp(2 * lgamma(2 / gam[i]) - (lgamma(1 / gam[i]) + lgamma(3 / gam[i])));
  }
  return (GRID = { gam, r });
}

/** AGGD fit (alpha, beta_l, beta_r) by moment matching over the grid (first minimum wins). */
function aggd(x: Float64Array): [number, number, number] {
  let [sl, nl, sr, nr, sa, s2] = [0, 0, 0, 0, 0, 0];
  for (const v of x) {
    if (v < 0) {
      sl += v * v;
      nl++;
    } else if (v > 0) {
      sr += v * v;
      nr++;
    }
    sa += Math.abs(v);
    s2 += v * v;
  }
  const left = Math.sqrt(sl / nl);
  const right = Math.sqrt(sr / nr);
  const g = left / right;
  const rhat = (sa / x.length) ** 2 / (s2 / x.length);
  const rnorm = (rhat * (g ** 3 + 1) * (g + 1)) / (g ** 2 + 1) ** 2;
  const { gam, r } = grid();
  let best = 0;
  let bestD = Infinity;
  for (let i = 0; i < gam.length; i++) {
    const d = Math.abs(r[i] - rnorm);
    if (d < bestD) {
      bestD = d;
      best = i;
    }
  }
  const alpha = gam[best];
  const k = Math.sqrt(Math.exp(lgamma(1 / alpha) - lgamma(3 / alpha)));
  return [alpha, left * k, right * k];
}

/** ln Γ(x) for x > 0: Lanczos (g = 7, 9 terms), reflection below 0.5; ~1e-15 relative. */
export function lgamma(x: number): number {
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - lgamma(1 - x);
  const c = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
    12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];
  const z = x - 1;
  let a = c[0];
  const t = z + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (z + i);
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(a);
}

/**
 * MATLAB imresize(x / 255, 0.5) (bicubic a = −0.5, antialiased) × 255, as pyiqa's port
 * computes it: in float32 (its cast_input always converts to float), rows first, then
 * columns, with symmetric (edge-repeating) padding. Sizes are even here (multiples of 96).
 */
function imresizeHalf(x: Float64Array, H: number, W: number): Float64Array {
  // Antialiased cubic at scale 1/2: 10 taps at distances (4.5 − k)·0.5, k = 0..9.
  const taps = new Float32Array(10);
  let s = 0;
  for (let k = 0; k < 10; k++) s += (taps[k] = cubicF32(fr((4.5 - k) * 0.5)));
  for (let k = 0; k < 10; k++) taps[k] = fr(taps[k] / fr(s));
  const src = Float32Array.from(x, (v) => v / 255);
  const rows = resize1d(src, H, W, taps, true);
  const out = resize1d(rows, H / 2, W, taps, false);
  return Float64Array.from(out, (v) => v * 255);
}

function cubicF32(x: number): number {
  const ax = Math.abs(x);
  const ax2 = fr(ax * ax);
  const ax3 = fr(ax * ax2);
  const a = -0.5;
  if (ax <= 1) return fr(fr(fr(fr(a + 2) * ax3) - fr(fr(a + 3) * ax2)) + 1);
  if (ax <= 2) return fr(fr(fr(fr(a * ax3) - fr(fr(5 * a) * ax2)) + fr(fr(8 * a) * ax)) - fr(4 * a));
  return 0;
}

/** Halves one axis: out[p] = Σ_k taps[k] · in[sym(2p − 4 + k)], f32 products and sums. */
function resize1d(x: Float32Array, H: number, W: number, taps: Float32Array, alongRows: boolean): Float32Array {
  const n = alongRows ? H : W;
  const m = n / 2;
  const [oH, oW] = alongRows ? [m, W] : [H, m];
  const out = new Float32Array(oH * oW);
  const sym = (i: number): number => (i < 0 ? -i - 1 : i >= n ? 2 * n - 1 - i : i);
  for (let p = 0; p < m; p++) {
    const idx = Array.from({ length: 10 }, (_, k) => sym(2 * p - 4 + k));
    if (alongRows) {
      for (let c = 0; c < W; c++) {
        let acc = 0;
        for (let k = 0; k < 10; k++) acc = fr(acc + fr(x[idx[k] * W + c] * taps[k]));
        out[p * W + c] = acc;
      }
    } else {
      for (let r = 0; r < H; r++) {
        let acc = 0;
        for (let k = 0; k < 10; k++) acc = fr(acc + fr(x[r * W + idx[k]] * taps[k]));
        out[r * m + p] = acc;
      }
    }
  }
  return out;
}

/** Mean and covariance (N − 1) of the feature rows, leaving out rows that hold a NaN; `finite`: the rows kept. */
function nanMeanCov(rows: Float64Array[]): { mu: Float64Array; cov: Float64Array; finite: number } {
  const D = rows[0].length;
  const ok = rows.filter((r) => r.every((v) => !Number.isNaN(v)));
  const mu = new Float64Array(D);
  for (const r of ok) for (let i = 0; i < D; i++) mu[i] += r[i] / ok.length;
  const cov = new Float64Array(D * D);
  for (const r of ok) {
    for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) cov[i * D + j] += ((r[i] - mu[i]) * (r[j] - mu[j])) / (ok.length - 1);
  }
  return { mu, cov, finite: ok.length };
}

/**
 * Moore–Penrose pseudo-inverse of a symmetric matrix by cyclic Jacobi eigen-decomposition;
 * eigenvalues below n·eps·max|λ| count as zero (torch.linalg.pinv's default cut-off).
 */
export function pinvSymmetric(a: Float64Array, n: number): Float64Array {
  const A = Float64Array.from(a);
  const V = new Float64Array(n * n);
  for (let i = 0; i < n; i++) V[i * n + i] = 1;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += A[p * n + q] ** 2;
    if (off < 1e-30) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = A[p * n + q];
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (A[q * n + q] - A[p * n + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = A[k * n + p];
          const akq = A[k * n + q];
          A[k * n + p] = c * akp - s * akq;
          A[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = A[p * n + k];
          const aqk = A[q * n + k];
          A[p * n + k] = c * apk - s * aqk;
          A[q * n + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = V[k * n + p];
          const vkq = V[k * n + q];
          V[k * n + p] = c * vkp - s * vkq;
          V[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const lambda = Array.from({ length: n }, (_, i) => A[i * n + i]);
  const cutoff = n * EPS64 * Math.max(...lambda.map(Math.abs));
  const inv = new Float64Array(n * n);
  for (let k = 0; k < n; k++) {
    if (Math.abs(lambda[k]) <= cutoff) continue;
    const l = 1 / lambda[k];
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) inv[i * n + j] += V[i * n + k] * l * V[j * n + k];
  }
  return inv;
}
