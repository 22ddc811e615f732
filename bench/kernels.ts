// Kernel throughput: matmul, implicit-GEMM conv2d and flash attention (and their backward), GFLOP/s.
import type { Engine } from '../src/engine/engine.js';
import { attention, attentionBackward } from '../src/engine/ops/attention.js';
import { conv2d, conv2dBackward } from '../src/engine/ops/conv2d.js';
import { linearBackward, matmul } from '../src/engine/ops/matmul.js';
import type { DType, Tensor } from '../src/engine/tensor.js';
import { fmt, measure, progress, rand, type Timing } from './timing.js';

export interface KernelResult {
  section: 'matmul' | 'conv' | 'attention';
  name: string;
  shape: string;
  dtype: DType;
  gflop: number;
  /** Wall clock per iteration (recorded back to back, one sync per repetition). */
  bestMs: number;
  medianMs: number;
  /** GPU time per iteration from timestamp queries, when available. */
  gpuMs?: number;
  /** From the GPU time when there is one, else from the wall clock. */
  gflops: number;
  iters: number;
  reps: number;
}

export interface KernelOptions {
  quick: boolean;
  full: boolean;
  dtypes: DType[];
}

function result(section: KernelResult['section'], name: string, shape: string, dtype: DType, flops: number, t: Timing): KernelResult {
  const seconds = t.gpuBest ?? t.best;
  const r: KernelResult = {
    section, name, shape, dtype,
    gflop: flops / 1e9,
    bestMs: t.best * 1e3,
    medianMs: t.median * 1e3,
    gpuMs: t.gpuBest === undefined ? undefined : t.gpuBest * 1e3,
    gflops: flops / seconds / 1e9,
    iters: t.iters,
    reps: t.reps,
  };
  progress(`  ${section.padEnd(9)} ${name.padEnd(34)} ${dtype} ${fmt(r.gflops, 2).padStart(8)} GFLOP/s  (${fmt(r.gpuMs ?? r.bestMs, 2)} ms)`);
  return r;
}

const timingOpts = (o: KernelOptions, gflop: number) => ({
  minSeconds: o.quick ? 0.1 : 0.3,
  // Big cases take seconds per iteration on a software adapter: fewer repetitions.
  reps: o.quick ? 2 : gflop > 3 ? 2 : 3,
});

// ---- matmul ----------------------------------------------------------------------

interface MatmulCase {
  name: string;
  M: number;
  K: number;
  N: number;
  /** Linear layout: B is [N, K]. */
  transB: boolean;
}

function matmulCases(o: KernelOptions): MatmulCase[] {
  const sq = (n: number): MatmulCase => ({ name: `square ${n}`, M: n, K: n, N: n, transB: false });
  const lin = (name: string, M: number, K: number, N: number): MatmulCase => ({ name, M, K, N, transB: true });
  if (o.quick) return [sq(128), sq(256), { name: 'odd 129·127·131', M: 129, K: 127, N: 131, transB: true }];
  const cases = [
    sq(256), sq(512), sq(1024),
    { name: 'odd 509·509·509', M: 509, K: 509, N: 509, transB: true },
    // SD 1.5 at 16×16 latents, level 0 (256 tokens × 320 channels).
    lin('SD attn q/k/v/out @16² latent', 256, 320, 320),
    lin('SD GEGLU proj @16² latent', 256, 320, 2560),
    lin('SD FF out @16² latent', 256, 1280, 320),
    lin('SD cross-attn k/v (77 tokens)', 77, 768, 320),
    // CLIP-L vision MLP, batch 1 (257 tokens).
    lin('CLIP-L fc1', 257, 1024, 4096),
    lin('CLIP-L fc2', 257, 4096, 1024),
  ];
  if (o.full) {
    cases.push(sq(2048),
      lin('SD attn q/k/v/out @64² latent', 4096, 320, 320),
      lin('SD GEGLU proj @64² latent', 4096, 320, 2560),
      lin('SD FF out @64² latent', 4096, 1280, 320));
  }
  return cases;
}

export async function benchMatmul(e: Engine, o: KernelOptions): Promise<KernelResult[]> {
  const out: KernelResult[] = [];
  for (const dtype of o.dtypes) {
    for (const c of matmulCases(o)) {
      const flops = 2 * c.M * c.N * c.K;
      const a = e.upload(rand(c.M * c.K, 1), [c.M, c.K], dtype);
      const b = e.upload(rand(c.K * c.N, 2, 0.05), c.transB ? [c.N, c.K] : [c.K, c.N], dtype);
      const t = await measure(e, () => matmul(e, a, b, { transB: c.transB }), timingOpts(o, flops / 1e9));
      [a, b].forEach((x) => e.release(x));
      out.push(result('matmul', c.name, `${c.M}×${c.K} · ${c.transB ? `(${c.N}×${c.K})ᵀ` : `${c.K}×${c.N}`}`, dtype, flops, t));
    }
  }
  // Linear backward in f32 (training's gradients): dX = dY·W and dW = dYᵀ·X (read transposed in
  // place, K split over the rows), each as much work as the forward.
  const [name, M, K, N] = o.quick ? ['Linear 256·128 → 128', 256, 128, 128] : ['SD attn q/k/v/out @32² latent', 1024, 320, 320];
  const x = e.upload(rand(M * K, 1), [M, K]);
  const w = e.upload(rand(N * K, 2, 0.05), [N, K]);
  const dy = e.upload(rand(M * N, 3), [M, N]);
  for (const part of ['x', 'weight'] as const) {
    const t = await measure(e, () => linearBackward(e, x, w, dy, { [part]: true }), timingOpts(o, (2 * M * N * K) / 1e9));
    out.push(result('matmul', `${name} backward d${part === 'x' ? 'x' : 'w'}`, `${M}×${K} · (${N}×${K})ᵀ`, 'f32', 2 * M * N * K, t));
  }
  [x, w, dy].forEach((v) => e.release(v));
  return out;
}

// ---- conv2d ----------------------------------------------------------------------

interface ConvCase {
  name: string;
  Cin: number;
  S: number;
  Cout: number;
  k: number;
  stride: number;
  pad: number;
}

function convCases(o: KernelOptions): ConvCase[] {
  const c3 = (name: string, Cin: number, Cout: number, S: number): ConvCase => ({ name, Cin, S, Cout, k: 3, stride: 1, pad: 1 });
  if (o.quick) return [c3('3×3 32→32 @32²', 32, 32, 32), { name: 'patch 14×14 s14 3→256 @112²', Cin: 3, S: 112, Cout: 256, k: 14, stride: 14, pad: 0 }];
  const cases: ConvCase[] = [
    c3('SD conv_in 4→320 @16²', 4, 320, 16),
    c3('SD 3×3 320→320 @16²', 320, 320, 16),
    c3('SD 3×3 640→640 @8²', 640, 640, 8),
    c3('SD 3×3 1280→1280 @4²', 1280, 1280, 4),
    { name: 'SD 1×1 proj_in 320→320 @16²', Cin: 320, S: 16, Cout: 320, k: 1, stride: 1, pad: 0 },
    { name: 'SD downsample 3×3 s2 320 @16²', Cin: 320, S: 16, Cout: 320, k: 3, stride: 2, pad: 1 },
    c3('VAE 3×3 512→512 @16²', 512, 512, 16),
    c3('VAE 3×3 128→128 @64²', 128, 128, 64),
    { name: 'CLIP-L patch embed 224²', Cin: 3, S: 224, Cout: 1024, k: 14, stride: 14, pad: 0 },
  ];
  if (o.full) {
    cases.push(c3('SD 3×3 320→320 @64²', 320, 320, 64), c3('SD 3×3 640→640 @32²', 640, 640, 32),
      c3('SD 3×3 1280→1280 @16²', 1280, 1280, 16), c3('VAE 3×3 512→512 @64²', 512, 512, 64));
  }
  return cases;
}

export async function benchConv(e: Engine, o: KernelOptions): Promise<KernelResult[]> {
  const out: KernelResult[] = [];
  for (const dtype of o.dtypes) {
    for (const c of convCases(o)) {
      const Ho = Math.floor((c.S + 2 * c.pad - c.k) / c.stride) + 1;
      const flops = 2 * c.Cout * c.Cin * c.k * c.k * Ho * Ho;
      const x = e.upload(rand(c.Cin * c.S * c.S, 3), [1, c.Cin, c.S, c.S], dtype);
      const w = e.upload(rand(c.Cout * c.Cin * c.k * c.k, 4, 0.05), [c.Cout, c.Cin, c.k, c.k], dtype);
      const bias = e.upload(rand(c.Cout, 5), [c.Cout], dtype);
      const t = await measure(e, () => conv2d(e, x, w, { stride: c.stride, padding: c.pad, bias }), timingOpts(o, flops / 1e9));
      [x, w, bias].forEach((v) => e.release(v));
      const shape = `[1,${c.Cin},${c.S},${c.S}] ⊛ ${c.Cout}×${c.Cin}×${c.k}×${c.k} s${c.stride} p${c.pad}`;
      out.push(result('conv', c.name, shape, dtype, flops, t));
    }
  }
  // Backward in f32 (training's gradients): dX (transposed implicit GEMM) and dW (GEMM over
  // batch × pixels), each as much work as the forward.
  const c3 = (name: string, Cin: number, Cout: number, S: number, stride = 1): ConvCase => ({ name, Cin, S, Cout, k: 3, stride, pad: 1 });
  const backward = o.quick ? [c3('3×3 32→32 @32²', 32, 32, 32)]
    : [c3('SD 3×3 320→320 @16²', 320, 320, 16), c3('SD downsample 3×3 s2 320 @16²', 320, 320, 16, 2), c3('VAE 3×3 128→128 @64²', 128, 128, 64)];
  for (const c of backward) {
    const Ho = Math.floor((c.S + 2 * c.pad - c.k) / c.stride) + 1;
    const flops = 2 * c.Cout * c.Cin * c.k * c.k * Ho * Ho;
    const x = e.upload(rand(c.Cin * c.S * c.S, 3), [1, c.Cin, c.S, c.S]);
    const w = e.upload(rand(c.Cout * c.Cin * c.k * c.k, 4, 0.05), [c.Cout, c.Cin, c.k, c.k]);
    const dy = e.upload(rand(c.Cout * Ho * Ho, 6), [1, c.Cout, Ho, Ho]);
    for (const part of ['x', 'w'] as const) {
      const t = await measure(e, () => conv2dBackward(e, x, w, dy, { stride: c.stride, padding: c.pad }, { [part]: true }), timingOpts(o, flops / 1e9));
      const shape = `[1,${c.Cin},${c.S},${c.S}] ⊛ ${c.Cout}×${c.Cin}×${c.k}×${c.k} s${c.stride} p${c.pad}`;
      out.push(result('conv', `${c.name} backward d${part}`, shape, 'f32', flops, t));
    }
    [x, w, dy].forEach((v) => e.release(v));
  }
  return out;
}

// ---- attention -------------------------------------------------------------------

interface AttentionCase {
  name: string;
  Lq: number;
  Lk: number;
  heads: number;
  d: number;
}

function attentionCases(o: KernelOptions): AttentionCase[] {
  const self = (L: number, d: number, heads = 8): AttentionCase => ({ name: `self L=${L} d=${d} h=${heads}`, Lq: L, Lk: L, heads, d });
  if (o.quick) return [self(256, 40), self(256, 64)];
  const cases = [
    self(256, 40), self(1024, 40), self(256, 64), self(1024, 64),
    { name: 'cross L=1024×77 d=40 h=8', Lq: 1024, Lk: 77, heads: 8, d: 40 },
    self(257, 64, 16), // CLIP-L vision
  ];
  if (o.full) cases.push(self(4096, 40)); // SD 1.5 at 64×64 latents, level 0
  return cases;
}

export async function benchAttention(e: Engine, o: KernelOptions): Promise<KernelResult[]> {
  const out: KernelResult[] = [];
  for (const dtype of o.dtypes) {
    for (const c of attentionCases(o)) {
      const W = c.heads * c.d;
      // QKᵀ and PV: 2 multiply-adds per (query, key, channel).
      const flops = 4 * c.heads * c.Lq * c.Lk * c.d;
      const t3: Tensor[] = [
        e.upload(rand(c.Lq * W, 21), [1, c.Lq, W], dtype),
        e.upload(rand(c.Lk * W, 22), [1, c.Lk, W], dtype),
        e.upload(rand(c.Lk * W, 23), [1, c.Lk, W], dtype),
      ];
      const t = await measure(e, () => attention(e, t3[0], t3[1], t3[2], { heads: c.heads }), timingOpts(o, flops / 1e9));
      t3.forEach((x) => e.release(x));
      out.push(result('attention', c.name, `q 1×${c.Lq}×${W}, k/v 1×${c.Lk}×${W}, ${c.heads} heads`, dtype, flops, t));
    }
  }
  // Backward in f32 (training's gradients), FlashAttention-2 style: the dq pass recomputes
  // q·kᵀ and dO·vᵀ and forms dS·k (3 products), the dk/dv pass adds Pᵀ·dO and dSᵀ·q (4).
  const cross = (Lk: number): AttentionCase => ({ name: `cross L=1024×${Lk} d=40 h=8`, Lq: 1024, Lk, heads: 8, d: 40 });
  const backward: AttentionCase[] = o.quick ? [attentionCases(o)[0]]
    : [{ name: 'self L=1024 d=40 h=8', Lq: 1024, Lk: 1024, heads: 8, d: 40 }, cross(77), cross(1)];
  if (o.full) backward.push({ name: 'self L=4096 d=40 h=8', Lq: 4096, Lk: 4096, heads: 8, d: 40 });
  for (const c of backward) {
    const W = c.heads * c.d;
    const [q, k, v] = [[c.Lq, 21], [c.Lk, 22], [c.Lk, 23]].map(([L, seed]) => e.upload(rand(L * W, seed), [1, L, W]));
    const lse = e.empty([1, c.heads, c.Lq]);
    const o1 = attention(e, q, k, v, { heads: c.heads }, lse);
    const dout = e.upload(rand(c.Lq * W, 24), [1, c.Lq, W]);
    const shape = `q 1×${c.Lq}×${W}, k/v 1×${c.Lk}×${W}, ${c.heads} heads`;
    for (const [part, products] of [['dq', 3], ['dk', 4]] as const) {
      const flops = 2 * products * c.heads * c.Lq * c.Lk * c.d;
      const t = await measure(e, () => attentionBackward(e, q, k, v, o1, lse, dout, { heads: c.heads }, { [part]: true }), timingOpts(o, flops / 1e9));
      out.push(result('attention', `${c.name} backward ${part === 'dq' ? 'dq' : 'dk+dv'}`, shape, 'f32', flops, t));
    }
    [q, k, v, lse, o1, dout].forEach((x) => e.release(x));
  }
  return out;
}
