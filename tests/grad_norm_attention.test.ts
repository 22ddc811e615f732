// Backward of group norm (with its fused SiLU), layer norm and flash attention: against
// PyTorch autograd (ops_grad.safetensors: group_norm32, group_norm4, layer_norm, sdpa and
// diffusers' Attention as self, cross and one-token cross-attention) and against central
// finite differences of the float64 forward references (tests/reference.ts) on awkward
// shapes: odd sizes and head sizes, batch > 1, several heads, a single context token,
// causal masks, fused-projection slices, more rows than one workgroup or shared tile.
//
// Tolerance, from float32 behaviour: the fixture README measured these ops' float32-vs-float64
// differences at ≤ 3.5e-7 of max|ref| for outputs and gradients; an f32 kernel's own rounding
// is of the same order, so every output and gradient must match to rtol 1e-4 plus
// 1e-5·max|ref| (the README's suggested op tolerance). Measured here (lavapipe): ≤ 5.7e-7 of
// max|ref| against the fixture, ≤ 1.2e-6 against finite differences (layer norm over 3
// values), ≤ 3.1e-6 at 4096 tokens. The finite differences are of float64 functions with
// h = 1e-6: truncation ~h²·|f'''| and cancellation ~1e-16·|L|/h, both far below that.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import type { Tensor } from '../src/engine/tensor.js';
import { attention, attentionBackward, type AttentionNeeds } from '../src/engine/ops/attention.js';
import { groupNorm, groupNormBackward, layerNorm, layerNormBackward } from '../src/engine/ops/norms.js';
import { linear, linearBackward } from '../src/engine/ops/matmul.js';
import { SafetensorsFile } from '../src/weights/safetensors.js';
import { FIXTURES, absMax, expectClose, rand } from './helpers.js';
import { attentionBackwardRef, attentionRef, groupNormRef, layerNormRef, siluRef } from './reference.js';

const expectGrad = (got: ArrayLike<number>, ref: ArrayLike<number>): void => expectClose(got, ref, 1e-4, 1e-5 * absMax(ref));

/** Central differences of a scalar float64 function at x, at every index or the given ones. */
function fdGrad(L: (x: Float64Array) => number, x: ArrayLike<number>, indices?: number[], h = 1e-6): Map<number, number> {
  const p = Float64Array.from(x);
  const g = new Map<number, number>();
  for (const i of indices ?? p.keys()) {
    const v = p[i];
    p[i] = v + h;
    const up = L(p);
    p[i] = v - h;
    g.set(i, (up - L(p)) / (2 * h));
    p[i] = v;
  }
  return g;
}

/** The kernel's gradient at the finite-difference indices against the differences. */
function expectFd(got: Float32Array, fd: Map<number, number>): void {
  const idx = [...fd.keys()];
  expectGrad(idx.map((i) => got[i]), idx.map((i) => fd.get(i)!));
}

const dot = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};

/** n indices spread over [0, size) (every index when size ≤ n). */
const sample = (size: number, n: number): number[] =>
  size <= n ? [...Array(size).keys()] : [...Array(n).keys()].map((i) => Math.floor((i * size) / n + (i % 3)) % size);

let e: Engine;
let fx: SafetensorsFile;
let cases: Record<string, Record<string, number | string>>;
beforeAll(async () => {
  e = await Engine.create();
  fx = SafetensorsFile.open(path.join(FIXTURES, 'train/ops_grad.safetensors'));
  cases = JSON.parse(fx.metadata.cases);
});
afterAll(() => fx.close());

const up = (name: string): Tensor => e.upload(fx.readF32(name), fx.info(name).shape);

describe('group norm backward', () => {
  it.each(['group_norm32', 'group_norm4'])('%s matches PyTorch autograd', async (c) => {
    const { groups, eps } = cases[c] as { groups: number; eps: number };
    const x = up(`${c}.x`);
    const weight = up(`${c}.weight`);
    const bias = up(`${c}.bias`);
    const stats = e.empty([x.shape[0], groups, 2]);
    const y = groupNorm(e, x, weight, bias, groups, eps, 'none', stats);
    expectGrad(await e.read(y), fx.readF32(`${c}.out`));
    const g = groupNormBackward(e, x, weight, bias, stats, up(`${c}.grad_out`), { groups }, { dx: true, dweight: true, dbias: true });
    expectGrad(await e.read(g.dx!), fx.readF32(`${c}.grad_x`));
    expectGrad(await e.read(g.dweight!), fx.readF32(`${c}.grad_weight`));
    expectGrad(await e.read(g.dbias!), fx.readF32(`${c}.grad_bias`));
  });

  // [N, C, S]: odd sizes; 3 channels of 7 a group; a group larger than one workgroup (4·150 > 128).
  it.each([
    [2, 6, 7, 2, true],
    [3, 6, 5, 3, false],
    [1, 4, 150, 1, true],
    [2, 15, 70, 5, true], // channels not a multiple of 4, channels longer than the 64 or 8 threads
  ] as const)('N %i C %i S %i groups %i silu %s: finite differences', async (N, C, S, G, withSilu) => {
    const eps = 1e-5;
    const act = withSilu ? siluRef : undefined;
    const x = rand(N * C * S, 11, 2);
    const w = rand(C, 12);
    const b = rand(C, 13);
    const dy = rand(N * C * S, 14);
    const xT = e.upload(x, [N, C, S]);
    const wT = e.upload(w, [C]);
    const bT = e.upload(b, [C]);
    const stats = e.empty([N, G, 2]);
    const y = groupNorm(e, xT, wT, bT, G, eps, withSilu ? 'silu' : 'none', stats);
    expectGrad(await e.read(y), groupNormRef(x, N, C, S, G, w, b, eps, act));
    const g = groupNormBackward(e, xT, wT, bT, stats, e.upload(dy, [N, C, S]), { groups: G, act: withSilu ? 'silu' : 'none' },
      { dx: true, dweight: true, dbias: true });
    const idx = sample(x.length, 200);
    expectFd(await e.read(g.dx!), fdGrad((v) => dot(dy, groupNormRef(v, N, C, S, G, w, b, eps, act)), x, idx));
    expectFd(await e.read(g.dweight!), fdGrad((v) => dot(dy, groupNormRef(x, N, C, S, G, v, b, eps, act)), w));
    expectFd(await e.read(g.dbias!), fdGrad((v) => dot(dy, groupNormRef(x, N, C, S, G, w, v, eps, act)), b));
  });

  it('computes only what is asked: dbias alone equals the full pass', async () => {
    const [N, C, S, G] = [2, 4, 3, 2];
    const x = e.upload(rand(N * C * S, 1), [N, C, S]);
    const w = e.upload(rand(C, 2), [C]);
    const b = e.upload(rand(C, 3), [C]);
    const dy = e.upload(rand(N * C * S, 4), [N, C, S]);
    const stats = e.empty([N, G, 2]);
    groupNorm(e, x, w, b, G, 1e-6, 'silu', stats);
    const only = groupNormBackward(e, x, w, b, stats, dy, { groups: G, act: 'silu' }, { dbias: true });
    expect(Object.keys(only)).toEqual(['dbias']);
    const all = groupNormBackward(e, x, w, b, stats, dy, { groups: G, act: 'silu' }, { dx: true, dweight: true, dbias: true });
    expect(await e.read(only.dbias!)).toEqual(await e.read(all.dbias!));
  });
});

describe('layer norm backward', () => {
  it('layer_norm matches PyTorch autograd', async () => {
    const { eps } = cases.layer_norm as { eps: number };
    const x = up('layer_norm.x');
    const weight = up('layer_norm.weight');
    const stats = e.empty([x.size / x.shape.at(-1)!, 2]);
    const y = layerNorm(e, x, weight, up('layer_norm.bias'), eps, stats);
    expectGrad(await e.read(y), fx.readF32('layer_norm.out'));
    const g = layerNormBackward(e, x, weight, stats, up('layer_norm.grad_out'), { dx: true, dweight: true, dbias: true });
    expectGrad(await e.read(g.dx!), fx.readF32('layer_norm.grad_x'));
    expectGrad(await e.read(g.dweight!), fx.readF32('layer_norm.grad_weight'));
    expectGrad(await e.read(g.dbias!), fx.readF32('layer_norm.grad_bias'));
  });

  // rows × D: odd; a row longer than one workgroup; more rows than one workgroup reduces at once.
  it.each([[15, 37], [2, 300], [130, 3]])('rows %i D %i: finite differences', async (rows, D) => {
    const eps = 1e-5;
    const x = rand(rows * D, 21, 3);
    const w = rand(D, 22);
    const b = rand(D, 23);
    const dy = rand(rows * D, 24);
    const xT = e.upload(x, [rows, D]);
    const wT = e.upload(w, [D]);
    const stats = e.empty([rows, 2]);
    layerNorm(e, xT, wT, e.upload(b, [D]), eps, stats);
    const g = layerNormBackward(e, xT, wT, stats, e.upload(dy, [rows, D]), { dx: true, dweight: true, dbias: true });
    const idx = sample(x.length, 200);
    expectFd(await e.read(g.dx!), fdGrad((v) => dot(dy, layerNormRef(v, D, w, b, eps)), x, idx));
    expectFd(await e.read(g.dweight!), fdGrad((v) => dot(dy, layerNormRef(x, D, v, b, eps)), w));
    expectFd(await e.read(g.dbias!), fdGrad((v) => dot(dy, layerNormRef(x, D, w, v, eps)), b));
  });
});

/** [B, H, L, D] (PyTorch SDPA) ⇄ [B, L, H·D] (our attention's layout). */
function heads2rows(x: Float32Array, B: number, H: number, L: number, D: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let l = 0; l < L; l++) for (let d = 0; d < D; d++) {
    out[((b * L + l) * H + h) * D + d] = x[((b * H + h) * L + l) * D + d];
  }
  return out;
}
function rows2heads(x: Float32Array, B: number, H: number, L: number, D: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let l = 0; l < L; l++) for (let d = 0; d < D; d++) {
    out[((b * H + h) * L + l) * D + d] = x[((b * L + l) * H + h) * D + d];
  }
  return out;
}

const ALL: AttentionNeeds = { dq: true, dk: true, dv: true };

describe('attention backward', () => {
  it('sdpa matches PyTorch autograd', async () => {
    const [B, H, Lq, D] = fx.info('sdpa.q').shape;
    const Lk = fx.info('sdpa.k').shape[2];
    const load = (n: string, L: number) => e.upload(heads2rows(fx.readF32(`sdpa.${n}`), B, H, L, D), [B, L, H * D]);
    const [q, k, v] = [load('q', Lq), load('k', Lk), load('v', Lk)];
    const lse = e.empty([B, H, Lq]);
    const out = attention(e, q, k, v, { heads: H }, lse);
    expectGrad(rows2heads(await e.read(out), B, H, Lq, D), fx.readF32('sdpa.out'));
    const g = attentionBackward(e, q, k, v, out, lse, load('grad_out', Lq), { heads: H }, ALL);
    expectGrad(rows2heads(await e.read(g.dq!), B, H, Lq, D), fx.readF32('sdpa.grad_q'));
    expectGrad(rows2heads(await e.read(g.dk!), B, H, Lk, D), fx.readF32('sdpa.grad_k'));
    expectGrad(rows2heads(await e.read(g.dv!), B, H, Lk, D), fx.readF32('sdpa.grad_v'));
  });

  // diffusers Attention: q, k, v projections (no bias) → sdpa over heads → to_out (with bias),
  // forward and backward on the engine (linearBackward for the projections).
  it.each(['attn_self', 'attn_cross', 'attn_cross1tok'])('%s matches PyTorch autograd', async (c) => {
    const { heads } = cases[c] as { heads: number };
    const self = c === 'attn_self';
    const x = up(`${c}.x`);
    const ctx = self ? x : up(`${c}.context`);
    const [B, L] = x.shape;
    const [toQ, toK, toV, toOut] = ['to_q', 'to_k', 'to_v', 'to_out_weight'].map((n) => up(`${c}.${n}`));
    const q = linear(e, x, toQ);
    const k = linear(e, ctx, toK);
    const v = linear(e, ctx, toV);
    const lse = e.empty([B, heads, L]);
    const o = attention(e, q, k, v, { heads }, lse);
    const out = linear(e, o, toOut, up(`${c}.to_out_bias`));
    expectGrad(await e.read(out), fx.readF32(`${c}.out`));

    const toOutBack = linearBackward(e, o, toOut, up(`${c}.grad_out`), { x: true, weight: true, bias: true });
    expectGrad(await e.read(toOutBack.dw!), fx.readF32(`${c}.grad_to_out_weight`));
    expectGrad(await e.read(toOutBack.dbias!), fx.readF32(`${c}.grad_to_out_bias`));
    const g = attentionBackward(e, q, k, v, o, lse, toOutBack.dx!, { heads }, ALL);
    const qBack = linearBackward(e, x, toQ, g.dq!, { x: true, weight: true });
    const kBack = linearBackward(e, ctx, toK, g.dk!, { x: true, weight: true });
    const vBack = linearBackward(e, ctx, toV, g.dv!, { x: true, weight: true });
    expectGrad(await e.read(qBack.dw!), fx.readF32(`${c}.grad_to_q`));
    expectGrad(await e.read(kBack.dw!), fx.readF32(`${c}.grad_to_k`));
    expectGrad(await e.read(vBack.dw!), fx.readF32(`${c}.grad_to_v`));
    // The context feeds k and v (and q too in self-attention): its gradients add up.
    const [dxq, dxk, dxv] = await Promise.all([qBack.dx!, kBack.dx!, vBack.dx!].map((t) => e.read(t)));
    const dctx = dxk.map((d, i) => d + dxv[i]);
    if (self) {
      expectGrad(dxq.map((d, i) => d + dctx[i]), fx.readF32(`${c}.grad_x`));
    } else {
      expectGrad(dxq, fx.readF32(`${c}.grad_x`));
      expectGrad(dctx, fx.readF32(`${c}.grad_context`));
    }
    if (c === 'attn_cross1tok') {
      // One key: its probability is 1, so q and k get no gradient (structurally zero in the
      // fixture). O is then exactly v, so dO·v − rowsum(dO∘O) is exactly 0: exact zeros.
      expect(absMax(await e.read(g.dq!))).toBe(0);
      expect(absMax(await e.read(g.dk!))).toBe(0);
    }
  });

  // [B, heads, head size, Lq, Lk, causal]: odd lengths; several query and key blocks of 64;
  // an odd head size over 64 (shared tiles of 31 rows, so several); one context token; a
  // causal mask across blocks. Head size 4 shares its pipelines with the sdpa case.
  it.each([
    [2, 3, 4, 7, 9, false],
    [2, 2, 4, 130, 67, false],
    [1, 1, 65, 40, 33, false],
    [3, 2, 4, 6, 1, false],
    [2, 1, 4, 70, 70, true],
    [1, 1, 512, 5, 7, false],
  ] as const)('B %i heads %i d %i Lq %i Lk %i causal %s: finite differences', async (B, H, d, Lq, Lk, causal) => {
    const W = H * d;
    const q = rand(B * Lq * W, 31, 1.5);
    const k = rand(B * Lk * W, 32, 1.5);
    const v = rand(B * Lk * W, 33);
    const dout = rand(B * Lq * W, 34);
    const [qT, kT, vT] = [e.upload(q, [B, Lq, W]), e.upload(k, [B, Lk, W]), e.upload(v, [B, Lk, W])];
    const lse = e.empty([B, H, Lq]);
    const out = attention(e, qT, kT, vT, { heads: H, causal }, lse);
    const g = attentionBackward(e, qT, kT, vT, out, lse, e.upload(dout, [B, Lq, W]), { heads: H, causal }, ALL);
    const ref = (qq: ArrayLike<number>, kk: ArrayLike<number>, vv: ArrayLike<number>) =>
      dot(dout, attentionRef(qq, kk, vv, B, Lq, Lk, H, d, causal));
    expectFd(await e.read(g.dq!), fdGrad((x) => ref(x, k, v), q, sample(q.length, 120)));
    expectFd(await e.read(g.dk!), fdGrad((x) => ref(q, x, v), k, sample(k.length, 120)));
    expectFd(await e.read(g.dv!), fdGrad((x) => ref(q, k, x), v, sample(v.length, 120)));
  });

  // SD 1.5's self-attention at 64×64 latents has 4096 tokens: the kernels never hold more
  // than a tile of scores, whatever the length. Against the closed form in float64; the f32
  // sums over 4096 keys stay inside the tolerance (measured ≤ 3.1e-6 of max|ref|).
  it('4096 tokens: self-attention, and one-token cross-attention with batch 2', async () => {
    const [H, d, L] = [1, 4, 4096];
    const W = H * d;
    for (const [B, Lk] of [[1, L], [2, 1]]) {
      const q = rand(B * L * W, 61, 1.5);
      const k = rand(B * Lk * W, 62, 1.5);
      const v = rand(B * Lk * W, 63);
      const dout = rand(B * L * W, 64);
      const [qT, kT, vT] = [e.upload(q, [B, L, W]), e.upload(k, [B, Lk, W]), e.upload(v, [B, Lk, W])];
      const lse = e.empty([B, H, L]);
      const out = attention(e, qT, kT, vT, { heads: H }, lse);
      const g = attentionBackward(e, qT, kT, vT, out, lse, e.upload(dout, [B, L, W]), { heads: H }, ALL);
      const ref = attentionBackwardRef(q, k, v, dout, B, L, Lk, H, d);
      expectGrad(await e.read(g.dq!), ref.dq);
      expectGrad(await e.read(g.dk!), ref.dk);
      expectGrad(await e.read(g.dv!), ref.dv);
    }
  });

  it('q, k, v as slices of one fused projection: the same gradients as separate tensors', async () => {
    const [B, L, H, d] = [2, 11, 2, 6];
    const W = H * d;
    const fused = rand(B * L * 3 * W, 41);
    const part = (j: number) => {
      const out = new Float32Array(B * L * W);
      for (let r = 0; r < B * L; r++) out.set(fused.subarray(r * 3 * W + j * W, r * 3 * W + (j + 1) * W), r * W);
      return e.upload(out, [B, L, W]);
    };
    const t = e.upload(fused, [B, L, 3 * W]);
    const slices = [0, 1, 2].map((j) => ({ t, stride: 3 * W, offset: j * W }));
    const dout = e.upload(rand(B * L * W, 42), [B, L, W]);
    const lse1 = e.empty([B, H, L]);
    const out1 = attention(e, slices[0], slices[1], slices[2], { heads: H, headDim: d }, lse1);
    const g1 = attentionBackward(e, slices[0], slices[1], slices[2], out1, lse1, dout, { heads: H, headDim: d }, ALL);
    const [q, k, v] = [part(0), part(1), part(2)];
    const lse2 = e.empty([B, H, L]);
    const out2 = attention(e, q, k, v, { heads: H }, lse2);
    const g2 = attentionBackward(e, q, k, v, out2, lse2, dout, { heads: H }, ALL);
    for (const key of ['dq', 'dk', 'dv'] as const) expect(await e.read(g1[key]!)).toEqual(await e.read(g2[key]!));
  });

  // Frozen f16 modules pass f16 activations (and outputs) with f32 upstream gradients. The
  // inputs are f16 values in both runs, so the difference is the f16 rounding of the saved
  // output O (4.9e-4 relative) entering D = rowsum(dO ∘ O): allowed 2e-3·max|f32 gradient|.
  it('f16 activations with f32 gradients: within f16 rounding of the f32 path', async () => {
    const [B, H, L, d] = [2, 2, 9, 8];
    const W = H * d;
    const data = [71, 72, 73].map((s) => e.upload(rand(B * L * W, s), [B, L, W], 'f16'));
    const dout = e.upload(rand(B * L * W, 74), [B, L, W]);
    const run = async (t: Tensor[]) => {
      const lse = e.empty([B, H, L]);
      const out = attention(e, t[0], t[1], t[2], { heads: H }, lse);
      const g = attentionBackward(e, t[0], t[1], t[2], out, lse, dout, { heads: H }, ALL);
      expect([g.dq!.dtype, g.dk!.dtype, g.dv!.dtype]).toEqual(['f32', 'f32', 'f32']);
      return Promise.all([g.dq!, g.dk!, g.dv!].map((x) => e.read(x)));
    };
    const half = await run(data);
    const full = await run(await Promise.all(data.map(async (t) => e.upload(await e.read(t), t.shape))));
    half.forEach((h, i) => expectClose(h, full[i], 0, 2e-3 * absMax(full[i])));

    const [N, C, S, G] = [2, 6, 10, 3];
    const x = e.upload(rand(N * C * S, 75, 2), [N, C, S], 'f16');
    const [w, b] = [76, 77].map((s) => e.upload(rand(C, s), [C]));
    const dy = e.upload(rand(N * C * S, 78), [N, C, S]);
    const norm = async (xt: Tensor) => {
      const stats = e.empty([N, G, 2]);
      groupNorm(e, xt, w, b, G, 1e-5, 'silu', stats);
      const g = groupNormBackward(e, xt, w, b, stats, dy, { groups: G, act: 'silu' }, { dx: true, dweight: true });
      return Promise.all([g.dx!, g.dweight!].map((t) => e.read(t)));
    };
    // The statistics and x̂ come from the same f16 inputs: only f32 summation order differs.
    const [nh, nf] = [await norm(x), await norm(e.upload(await e.read(x), x.shape))];
    nh.forEach((h, i) => expectGrad(h, nf[i]));
  });

  it('computes only what is asked', async () => {
    const [B, L, W] = [1, 5, 8];
    const [q, k, v] = [51, 52, 53].map((s) => e.upload(rand(B * L * W, s), [B, L, W]));
    const lse = e.empty([B, 2, L]);
    const out = attention(e, q, k, v, { heads: 2 }, lse);
    const dout = e.upload(rand(B * L * W, 54), [B, L, W]);
    expect(Object.keys(attentionBackward(e, q, k, v, out, lse, dout, { heads: 2 }, { dv: true }))).toEqual(['dv']);
    expect(Object.keys(attentionBackward(e, q, k, v, out, lse, dout, { heads: 2 }, { dq: true }))).toEqual(['dq']);
  });
});
