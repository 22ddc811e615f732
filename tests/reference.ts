// Plain TypeScript references for every kernel, in double precision. Slow and
// obvious on purpose: they define what the WGSL kernels must compute.

export function matmulRef(a: Float32Array, b: Float32Array, batch: number, M: number, K: number, N: number,
  opts: { transB?: boolean; bBatched?: boolean; bias?: Float32Array; act?: (x: number) => number } = {}): Float64Array {
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

export function conv2dRef(x: Float32Array, w: Float32Array, bias: Float32Array | undefined,
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

export function layerNormRef(x: Float32Array, D: number, g: Float32Array, b: Float32Array, eps: number): Float64Array {
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

export function groupNormRef(x: Float32Array, N: number, C: number, S: number, G: number, g: Float32Array, b: Float32Array,
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
export function attentionRef(q: Float32Array, k: Float32Array, v: Float32Array, B: number, Lq: number, Lk: number,
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

// Activations exactly as PyTorch defines them (erf GELU via a series good to 1e-15).
export function erf(x: number): number {
  const z = Math.abs(x);
  if (z > 6) return Math.sign(x);
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
export const geluRef = (x: number): number => 0.5 * x * (1 + erf(x / Math.SQRT2));
export const sigmoidRef = (x: number): number => 1 / (1 + Math.exp(-x));
export const quickGeluRef = (x: number): number => x * sigmoidRef(1.702 * x);
export const siluRef = (x: number): number => x * sigmoidRef(x);
export const leakyReluRef = (slope: number) => (x: number): number => (x >= 0 ? x : slope * x);
