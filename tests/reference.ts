// Plain TypeScript references for every kernel, in double precision. Slow and
// obvious on purpose: they define what the WGSL kernels must compute.

export function matmulRef(a: ArrayLike<number>, b: ArrayLike<number>, batch: number, M: number, K: number, N: number,
  opts: { transB?: boolean; bBatched?: boolean; bias?: ArrayLike<number>; act?: (x: number) => number } = {}): Float64Array {
  const out = new Float64Array(batch * M * N);
  for (let z = 0; z < batch; z++) {
    const bOff = opts.bBatched ? z * K * N : 0;
    for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
      let s = opts.bias ? opts.bias[n] : 0;
      for (let k = 0; k < K; k++) {
        const bv = opts.transB ? b[bOff + n * K + k] : b[bOff + k * N + n];
        s += a[z * M * K + m * K + k] * bv;
      }
      out[z * M * N + m * N + n] = opts.act ? opts.act(s) : s;
    }
  }
  return out;
}

export function conv2dRef(x: ArrayLike<number>, w: ArrayLike<number>, bias: ArrayLike<number> | undefined,
  [B, Cin, H, W]: number[], [Cout, , KH, KW]: number[], stride: number, padding: number | number[]): { y: Float64Array; Ho: number; Wo: number } {
  const [top, bottom, left, right] = typeof padding === 'number' ? [padding, padding, padding, padding] : padding;
  const Ho = Math.floor((H + top + bottom - KH) / stride) + 1;
  const Wo = Math.floor((W + left + right - KW) / stride) + 1;
  const y = new Float64Array(B * Cout * Ho * Wo);
  for (let b = 0; b < B; b++) for (let co = 0; co < Cout; co++) for (let oh = 0; oh < Ho; oh++) for (let ow = 0; ow < Wo; ow++) {
    let s = bias ? bias[co] : 0;
    for (let ci = 0; ci < Cin; ci++) for (let kh = 0; kh < KH; kh++) for (let kw = 0; kw < KW; kw++) {
      const ih = oh * stride - top + kh;
      const iw = ow * stride - left + kw;
      if (ih < 0 || iw < 0 || ih >= H || iw >= W) continue;
      s += x[((b * Cin + ci) * H + ih) * W + iw] * w[((co * Cin + ci) * KH + kh) * KW + kw];
    }
    y[((b * Cout + co) * Ho + oh) * Wo + ow] = s;
  }
  return { y, Ho, Wo };
}

export function layerNormRef(x: ArrayLike<number>, D: number, g: ArrayLike<number>, b: ArrayLike<number>, eps: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / D; r++) {
    let mean = 0;
    for (let i = 0; i < D; i++) mean += x[r * D + i];
    mean /= D;
    let v = 0;
    for (let i = 0; i < D; i++) v += (x[r * D + i] - mean) ** 2;
    const rstd = 1 / Math.sqrt(v / D + eps);
    for (let i = 0; i < D; i++) out[r * D + i] = (x[r * D + i] - mean) * rstd * g[i] + b[i];
  }
  return out;
}

export function groupNormRef(x: ArrayLike<number>, N: number, C: number, S: number, G: number, g: ArrayLike<number>, b: ArrayLike<number>,
  eps: number, act: (x: number) => number = (v) => v): Float64Array {
  const out = new Float64Array(x.length);
  const cpg = C / G;
  for (let n = 0; n < N; n++) for (let grp = 0; grp < G; grp++) {
    const base = (n * C + grp * cpg) * S;
    const cnt = cpg * S;
    let mean = 0;
    for (let i = 0; i < cnt; i++) mean += x[base + i];
    mean /= cnt;
    let v = 0;
    for (let i = 0; i < cnt; i++) v += (x[base + i] - mean) ** 2;
    const rstd = 1 / Math.sqrt(v / cnt + eps);
    for (let i = 0; i < cnt; i++) {
      const c = grp * cpg + Math.floor(i / S);
      out[base + i] = act((x[base + i] - mean) * rstd * g[c] + b[c]);
    }
  }
  return out;
}

export function softmaxRef(x: Float32Array, D: number, scale = 1): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / D; r++) {
    let m = -Infinity;
    for (let i = 0; i < D; i++) m = Math.max(m, x[r * D + i] * scale);
    let s = 0;
    for (let i = 0; i < D; i++) s += Math.exp(x[r * D + i] * scale - m);
    for (let i = 0; i < D; i++) out[r * D + i] = Math.exp(x[r * D + i] * scale - m) / s;
  }
  return out;
}

/** q [B, Lq, H·d], k/v [B, Lk, H·d] → [B, Lq, H·d], via the full score matrix. */
export function attentionRef(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, B: number, Lq: number, Lk: number,
  H: number, d: number, causal: boolean): Float64Array {
  const W = H * d;
  const out = new Float64Array(B * Lq * W);
  const scale = 1 / Math.sqrt(d);
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < Lq; i++) {
    const s = new Float64Array(Lk);
    let m = -Infinity;
    for (let j = 0; j < Lk; j++) {
      if (causal && j > i) { s[j] = -Infinity; continue; }
      let dot = 0;
      for (let t = 0; t < d; t++) dot += q[(b * Lq + i) * W + h * d + t] * k[(b * Lk + j) * W + h * d + t];
      s[j] = dot * scale;
      m = Math.max(m, s[j]);
    }
    let sum = 0;
    for (let j = 0; j < Lk; j++) { s[j] = Math.exp(s[j] - m); sum += s[j]; }
    for (let t = 0; t < d; t++) {
      let acc = 0;
      for (let j = 0; j < Lk; j++) acc += s[j] * v[(b * Lk + j) * W + h * d + t];
      out[(b * Lq + i) * W + h * d + t] = acc / sum;
    }
  }
  return out;
}

/**
 * Gradients of attentionRef (non-causal) for upstream dout [B, Lq, H·d], one score row at a
 * time: P = softmax(scale·q·kᵀ), dv = Pᵀ·dO, dS = P ∘ (dO·vᵀ − rowsum(dO ∘ O)), dq = scale·dS·k,
 * dk = scale·dSᵀ·q.
 */
export function attentionBackwardRef(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, dout: ArrayLike<number>,
  B: number, Lq: number, Lk: number, H: number, d: number): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const W = H * d;
  const scale = 1 / Math.sqrt(d);
  const dq = new Float64Array(B * Lq * W);
  const dk = new Float64Array(B * Lk * W);
  const dv = new Float64Array(B * Lk * W);
  const p = new Float64Array(Lk);
  const dp = new Float64Array(Lk);
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < Lq; i++) {
    const qi = (b * Lq + i) * W + h * d;
    let m = -Infinity;
    for (let j = 0; j < Lk; j++) {
      const kj = (b * Lk + j) * W + h * d;
      let s = 0;
      for (let t = 0; t < d; t++) s += q[qi + t] * k[kj + t];
      p[j] = s * scale;
      m = Math.max(m, p[j]);
    }
    let sum = 0;
    for (let j = 0; j < Lk; j++) { p[j] = Math.exp(p[j] - m); sum += p[j]; }
    let delta = 0;
    for (let j = 0; j < Lk; j++) {
      p[j] /= sum;
      const vj = (b * Lk + j) * W + h * d;
      let s = 0;
      for (let t = 0; t < d; t++) s += dout[qi + t] * v[vj + t];
      dp[j] = s;
      delta += p[j] * s;
    }
    for (let j = 0; j < Lk; j++) {
      const kj = (b * Lk + j) * W + h * d;
      const ds = p[j] * (dp[j] - delta) * scale;
      for (let t = 0; t < d; t++) {
        dq[qi + t] += ds * k[kj + t];
        dk[kj + t] += ds * q[qi + t];
        dv[kj + t] += p[j] * dout[qi + t];
      }
    }
  }
  return { dq, dk, dv };
}

// Activations exactly as PyTorch defines them (erf GELU via a series good to 1e-15).
/**
 * erf in f64. The Maclaurin series alone cancels catastrophically past |x| ≈ 3 (its terms reach
 * e^{x²} ≈ 1e13 at x = 5.5, so 1 + erf(x) for GELU's negative tail was off by ~1e-5); from 2 on,
 * erfc's continued fraction e^{-z²}/√π · 1/(z + ½/(z + 1/(z + 3⁄2/(z + …)))) is used instead.
 */
export function erf(x: number): number {
  const z = Math.abs(x);
  if (z >= 2) return Math.sign(x) * (1 - erfcLarge(z));
  let sum = 0;
  let term = z;
  for (let n = 0; n < 200; n++) {
    const t = term / (2 * n + 1);
    sum += t;
    term *= (-z * z) / (n + 1);
    if (Math.abs(t) < 1e-17) break;
  }
  return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
}

/** erfc(z) for z ≥ 2 by its continued fraction, evaluated from the tail (converged to f64 by 200 terms at z = 2). */
function erfcLarge(z: number): number {
  let t = z;
  for (let n = 200; n >= 1; n--) t = z + n / 2 / t;
  return Math.exp(-z * z) / (Math.sqrt(Math.PI) * t);
}
export const geluRef = (x: number): number => 0.5 * x * (1 + erf(x / Math.SQRT2));
export const sigmoidRef = (x: number): number => 1 / (1 + Math.exp(-x));
export const quickGeluRef = (x: number): number => x * sigmoidRef(1.702 * x);
export const siluRef = (x: number): number => x * sigmoidRef(x);
export const leakyReluRef = (slope: number) => (x: number): number => (x >= 0 ? x : slope * x);
export const reluRef = (x: number): number => Math.max(x, 0);

// ---- Forward references for the backward tests: finite differences of these give exact gradients.
// Inputs are ArrayLike so that the perturbed float64 copies can be fed back in.

/** Row-major multi-index of flat index i in `shape`. */
function unravel(i: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    idx[d] = i % shape[d];
    i = Math.floor(i / shape[d]);
  }
  return idx;
}

/** Flat index of a broadcast operand of shape `s` (right-aligned) at the output multi-index. */
function broadcastIndex(idx: readonly number[], s: readonly number[]): number {
  const lead = idx.length - s.length;
  let flat = 0;
  for (let d = 0; d < s.length; d++) flat = flat * s[d] + (s[d] === 1 ? 0 : idx[lead + d]);
  return flat;
}

/** a OP b with NumPy broadcasting. */
export function binaryRef(op: 'add' | 'sub' | 'mul' | 'div', a: ArrayLike<number>, aShape: number[], b: ArrayLike<number>,
  bShape: number[]): { out: Float64Array; shape: number[] } {
  const rank = Math.max(aShape.length, bShape.length);
  const pa = [...Array(rank - aShape.length).fill(1), ...aShape];
  const pb = [...Array(rank - bShape.length).fill(1), ...bShape];
  const shape = pa.map((d, i) => Math.max(d, pb[i]));
  const out = new Float64Array(shape.reduce((p, d) => p * d, 1));
  for (let i = 0; i < out.length; i++) {
    const idx = unravel(i, shape);
    const x = a[broadcastIndex(idx, aShape)];
    const y = b[broadcastIndex(idx, bShape)];
    out[i] = op === 'add' ? x + y : op === 'sub' ? x - y : op === 'mul' ? x * y : x / y;
  }
  return { out, shape };
}

/** t summed over the axes broadcast from `shape` (1 or missing, right-aligned). */
export function sumToRef(t: ArrayLike<number>, tShape: number[], shape: number[]): Float64Array {
  const out = new Float64Array(shape.reduce((p, d) => p * d, 1));
  for (let i = 0; i < t.length; i++) out[broadcastIndex(unravel(i, tShape), shape)] += t[i];
  return out;
}

/** x[..., start:end, ...] along axis. */
export function sliceRef(x: ArrayLike<number>, shape: number[], axis: number, start: number, end: number): Float64Array {
  const outShape = shape.map((d, i) => (i === axis ? end - start : d));
  const out = new Float64Array(outShape.reduce((p, d) => p * d, 1));
  for (let i = 0; i < out.length; i++) {
    const idx = unravel(i, outShape);
    idx[axis] += start;
    out[i] = x[idx.reduce((f, v, d) => f * shape[d] + v, 0)];
  }
  return out;
}

/** Axis permutation: out axis i is x's axis order[i]. */
export function permuteRef(x: ArrayLike<number>, shape: number[], order: number[]): Float64Array {
  const outShape = order.map((o) => shape[o]);
  const out = new Float64Array(x.length);
  for (let i = 0; i < out.length; i++) {
    const idx = unravel(i, outShape);
    const src = new Array<number>(shape.length);
    order.forEach((o, d) => (src[o] = idx[d]));
    out[i] = x[src.reduce((f, v, d) => f * shape[d] + v, 0)];
  }
  return out;
}

/** Nearest ×2 upsampling of [N, C, H, W]. */
export function upsampleNearest2xRef(x: ArrayLike<number>, [N, C, H, W]: number[]): Float64Array {
  const out = new Float64Array(N * C * 4 * H * W);
  for (let p = 0; p < N * C; p++) for (let i = 0; i < 2 * H; i++) for (let j = 0; j < 2 * W; j++) {
    out[(p * 2 * H + i) * 2 * W + j] = x[(p * H + (i >> 1)) * W + (j >> 1)];
  }
  return out;
}

/** avg (count_include_pad=False) or max pooling of [N, C, H, W], window K, stride S, padding P, floor mode. */
export function pool2dRef(x: ArrayLike<number>, [N, C, H, W]: number[], mode: 'avg' | 'max', K: number, S: number, P: number): Float64Array {
  const [Ho, Wo] = [Math.floor((H + 2 * P - K) / S) + 1, Math.floor((W + 2 * P - K) / S) + 1];
  const out = new Float64Array(N * C * Ho * Wo);
  for (let p = 0; p < N * C; p++) for (let oy = 0; oy < Ho; oy++) for (let ox = 0; ox < Wo; ox++) {
    let s = 0;
    let m = -Infinity;
    let count = 0;
    for (let a = 0; a < K; a++) for (let b = 0; b < K; b++) {
      const [iy, ix] = [oy * S - P + a, ox * S - P + b];
      if (iy < 0 || ix < 0 || iy >= H || ix >= W) continue;
      const v = x[(p * H + iy) * W + ix];
      s += v;
      m = Math.max(m, v);
      count++;
    }
    out[(p * Ho + oy) * Wo + ox] = mode === 'avg' ? s / count : m;
  }
  return out;
}

/** GEGLU gate: x [rows, 2F] = [hidden | gate] → hidden · gelu(gate). */
export function gegluRef(x: ArrayLike<number>, rows: number, F: number): Float64Array {
  const out = new Float64Array(rows * F);
  for (let r = 0; r < rows; r++) for (let c = 0; c < F; c++) out[r * F + c] = x[r * 2 * F + c] * geluRef(x[r * 2 * F + F + c]);
  return out;
}

/** mean((a − b)²). */
export function mseRef(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] - b[i]) ** 2;
  return s / a.length;
}

/** Mean over rows of logsumexp(row) − row[label] for logits [B, C]. */
export function crossEntropyRef(logits: ArrayLike<number>, labels: ArrayLike<number>, B: number, C: number): number {
  let s = 0;
  for (let r = 0; r < B; r++) {
    let m = -Infinity;
    for (let c = 0; c < C; c++) m = Math.max(m, logits[r * C + c]);
    let z = 0;
    for (let c = 0; c < C; c++) z += Math.exp(logits[r * C + c] - m);
    s += m + Math.log(z) - logits[r * C + labels[r]];
  }
  return s / B;
}

/**
 * pix2pix's NLayerDiscriminator in f64 (src/graph/train/discriminator.ts): 4×4 convs with padding 1,
 * stride 2 for the first nLayers, then two stride-1 convs; instance norm (affine) after every conv
 * but the first and the last; LeakyReLU after every conv but the last. w(key) gives `model.N.*`.
 */
export function patchGanRef(w: (key: string) => ArrayLike<number>, x: ArrayLike<number>, inShape: number[],
  nLayers: number, eps: number, slope: number): { values: Float64Array; shape: number[] } {
  let shape = inShape;
  let values: Float64Array = Float64Array.from(x);
  let index = 0;
  for (let l = 0; l <= nLayers + 1; l++) {
    const [stride, norm, act] = [l < nLayers ? 2 : 1, l > 0 && l <= nLayers, l <= nLayers];
    const conv = index++;
    const wt = w(`model.${conv}.weight`);
    const Cout = wt.length / (shape[1] * 16);
    const r = conv2dRef(values, wt, w(`model.${conv}.bias`), shape, [Cout, shape[1], 4, 4], stride, 1);
    shape = [shape[0], Cout, r.Ho, r.Wo];
    values = r.y;
    if (norm) {
      const n = index++;
      values = groupNormRef(values, shape[0], Cout, r.Ho * r.Wo, Cout, w(`model.${n}.weight`), w(`model.${n}.bias`), eps);
    }
    if (act) {
      values = values.map((v) => (v > 0 ? v : slope * v));
      index++;
    }
  }
  return { values, shape };
}
