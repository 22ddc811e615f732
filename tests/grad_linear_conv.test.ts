// Backward of matmul / Linear and conv2d against PyTorch autograd (ops_grad.safetensors) and
// against central finite differences of the float64 references (tests/reference.ts) on awkward
// shapes: odd sides, batch > 1, stride 2 and 4, asymmetric padding, channel counts and pixel
// counts over one 64-wide tile, stride-2 phase classes that no tap reaches, K-split reductions,
// f16 weights.
//
// Tolerance, from float32 behaviour: the fixture README measured PyTorch's own float32 gradients
// of these ops within 4.1e-7·max|ref| of float64. Ours are float32 sums of at most 650 terms in
// another order; each gradient must be within 2e-6·max|ref| of the float64 value (5× the
// measured PyTorch worst case; measured here: at most 3.2e-7 on the fixture, 3.9e-7 by finite
// differences). f16 weights are compared with the same weights rounded to f16.
// The finite differences are of functions linear in the perturbed tensor, so they carry no
// truncation error; with float64 sums their error is ~1e-15 of the largest term.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import type { Tensor } from '../src/engine/tensor.js';
import { conv2dBackward } from '../src/engine/ops/conv2d.js';
import { kSplits, linearBackward, matmulBackward } from '../src/engine/ops/matmul.js';
import { f16ToF32, f32ToF16Bits } from '../src/engine/half.js';
import { SafetensorsFile } from '../src/weights/safetensors.js';
import { FIXTURES, absMax, expectClose, rand } from './helpers.js';
import { conv2dRef, matmulRef } from './reference.js';

const REL = 2e-6;
const expectGrad = (got: ArrayLike<number>, ref: ArrayLike<number>): void => expectClose(got, ref, 0, REL * absMax(ref));

/** d⟨f(v), dy⟩/dv by central differences at every element of v (f is linear in v). */
function fdGrad(f: (v: Float64Array) => ArrayLike<number>, v: ArrayLike<number>, dy: ArrayLike<number>, h = 0.25): Float64Array {
  const p = Float64Array.from(v);
  const g = new Float64Array(p.length);
  const L = (): number => {
    const y = f(p);
    let s = 0;
    for (let i = 0; i < y.length; i++) s += y[i] * dy[i];
    return s;
  };
  for (let i = 0; i < p.length; i++) {
    const x = p[i];
    p[i] = x + h;
    const up = L();
    p[i] = x - h;
    g[i] = (up - L()) / (2 * h);
    p[i] = x;
  }
  return g;
}

const f16Round = (v: Float32Array): Float32Array => Float32Array.from(v, (x) => f16ToF32(f32ToF16Bits(x)));

let e: Engine;
let fx: SafetensorsFile;
beforeAll(async () => {
  e = await Engine.create();
  fx = SafetensorsFile.open(path.join(FIXTURES, 'train/ops_grad.safetensors'));
});
afterAll(() => fx.close());

const up = (name: string): Tensor => e.upload(fx.readF32(name), fx.info(name).shape);

describe('ops_grad fixture (PyTorch autograd)', () => {
  it('linear: grads of x, weight, bias', async () => {
    const [x, w, dy] = ['x', 'weight', 'grad_out'].map((n) => up(`linear.${n}`));
    const g = linearBackward(e, x, w, dy, { x: true, weight: true, bias: true });
    expect(g.dx!.shape).toEqual([2, 3, 5]);
    expectGrad(await e.read(g.dx!), fx.readF32('linear.grad_x'));
    expectGrad(await e.read(g.dw!), fx.readF32('linear.grad_weight'));
    expectGrad(await e.read(g.dbias!), fx.readF32('linear.grad_bias'));
  });

  it.each(['conv1x1', 'conv3x3s1', 'conv3x3s2', 'conv3x3s2odd'])('%s: grads of x, weight, bias', async (c) => {
    const { stride, padding } = JSON.parse(fx.metadata.cases)[c] as { stride: number; padding: number };
    const [x, w, dy] = ['x', 'weight', 'grad_out'].map((n) => up(`${c}.${n}`));
    const g = conv2dBackward(e, x, w, dy, { stride, padding }, { x: true, w: true, bias: true });
    expectGrad(await e.read(g.dx!), fx.readF32(`${c}.grad_x`));
    expectGrad(await e.read(g.dw!), fx.readF32(`${c}.grad_weight`));
    expectGrad(await e.read(g.dbias!), fx.readF32(`${c}.grad_bias`));
  });
});

describe('conv2d backward by finite differences', () => {
  it.each([
    // [B, Cin, H, W], [Cout, KH, KW], stride, padding
    [[2, 3, 7, 9], [5, 3, 3], 2, [0, 1, 0, 1]], // the VAE downsampler's F.pad, odd sides
    [[3, 4, 5, 6], [6, 3, 3], 1, 1],
    [[1, 70, 1, 2], [67, 1, 1], 1, 0], // channels over one tile in every product
    [[2, 2, 17, 19], [3, 3, 3], 2, 1], // 90 pixels in the largest stride-2 class: two tiles
    [[1, 3, 5, 6], [4, 1, 1], 2, 0], // 1×1 stride 2: three of four classes get no tap (dx 0)
    [[1, 2, 9, 10], [3, 4, 4], 4, [2, 1, 0, 2]], // kernel = stride; rows the output never reads
  ])('input %j, kernel %j, stride %i, padding %j', async (xs, [Cout, KH, KW], stride, padding) => {
    const [B, Cin, H, W] = xs as number[];
    const wShape = [Cout, Cin, KH, KW];
    const x = rand(B * Cin * H * W, 20);
    const w = rand(Cout * Cin * KH * KW, 21);
    const bias = rand(Cout, 22);
    const { Ho, Wo } = conv2dRef(x, w, bias, xs as number[], wShape, stride, padding);
    const dy = rand(B * Cout * Ho * Wo, 23);
    const g = e.tidy(() => conv2dBackward(e, e.upload(x, [B, Cin, H, W]), e.upload(w, wShape), e.upload(dy, [B, Cout, Ho, Wo]),
      { stride, padding: padding as [number, number, number, number] | number }, { x: true, w: true, bias: true }));
    const conv = (xv: ArrayLike<number>, wv: ArrayLike<number>, bv: ArrayLike<number>) =>
      conv2dRef(xv, wv, bv, xs as number[], wShape, stride, padding).y;
    expectGrad(await e.read(g.dx!), fdGrad((v) => conv(v, w, bias), x, dy));
    expectGrad(await e.read(g.dw!), fdGrad((v) => conv(x, v, bias), w, dy));
    expectGrad(await e.read(g.dbias!), fdGrad((v) => conv(x, w, v), bias, dy));
  });

  it('dw over 640 batch × pixel terms is summed in K splits', async () => {
    const [B, Cin, H, W, Cout] = [2, 1, 16, 20, 2];
    expect(kSplits(1, B * H * W)).toBeGreaterThan(1);
    const x = rand(B * Cin * H * W, 24);
    const w = rand(Cout * Cin * 9, 25);
    const dy = rand(B * Cout * H * W, 26);
    const g = conv2dBackward(e, e.upload(x, [B, Cin, H, W]), e.upload(w, [Cout, Cin, 3, 3]), e.upload(dy, [B, Cout, H, W]),
      { padding: 1 }, { w: true });
    expect(g.dx).toBeUndefined();
    expect(g.dbias).toBeUndefined();
    const dw = await e.read(g.dw!);
    expectGrad(dw, fdGrad((v) => conv2dRef(x, v, undefined, [B, Cin, H, W], [Cout, Cin, 3, 3], 1, 1).y, w, dy));
  });

  it('f16 weights give f32 gradients', async () => {
    const [B, Cin, H, W, Cout] = [2, 3, 6, 5, 4];
    const x = rand(B * Cin * H * W, 27);
    const w = rand(Cout * Cin * 9, 28);
    const dy = rand(B * Cout * 3 * 3, 29);
    const wf16 = e.upload(w, [Cout, Cin, 3, 3], 'f16');
    const g = conv2dBackward(e, e.upload(x, [B, Cin, H, W]), wf16, e.upload(dy, [B, Cout, 3, 3]), { stride: 2, padding: 1 },
      { x: true, w: true });
    expect([g.dx!.dtype, g.dw!.dtype]).toEqual(['f32', 'f32']);
    const wr = f16Round(w);
    const conv = (xv: ArrayLike<number>, wv: ArrayLike<number>) => conv2dRef(xv, wv, undefined, [B, Cin, H, W], [Cout, Cin, 3, 3], 2, 1).y;
    expectGrad(await e.read(g.dx!), fdGrad((v) => conv(v, wr), x, dy));
    expectGrad(await e.read(g.dw!), fdGrad((v) => conv(x, v), wr, dy));
  });
});

describe('matmul backward by finite differences', () => {
  it.each([
    // batch, M, K, N, transB, per-item b
    [2, 5, 7, 9, true, false],
    [3, 4, 6, 5, false, false],
    [3, 4, 6, 5, true, true], // as attention's q·kᵀ
    [2, 3, 5, 4, false, true], // as attention's p·v
  ])('batch %i, %i×%i · %i (transB %s, per-item b %s)', async (batch, M, K, N, transB, perItem) => {
    const a = rand(batch * M * K, 30);
    const bShape = [...(perItem ? [batch] : []), ...(transB ? [N, K] : [K, N])];
    const b = rand(bShape.reduce((p, d) => p * d, 1), 31);
    const bias = rand(N, 32);
    const dc = rand(batch * M * N, 33);
    const g = matmulBackward(e, e.upload(a, [batch, M, K]), e.upload(b, bShape), e.upload(dc, [batch, M, N]), { transB },
      { a: true, b: true, bias: !perItem });
    expect(g.db!.shape).toEqual(bShape);
    const mm = (av: ArrayLike<number>, bv: ArrayLike<number>, biasv?: ArrayLike<number>) =>
      matmulRef(av, bv, batch, M, K, N, { transB, bBatched: perItem, bias: biasv });
    expectGrad(await e.read(g.da!), fdGrad((v) => mm(v, b), a, dc));
    expectGrad(await e.read(g.db!), fdGrad((v) => mm(a, v), b, dc));
    if (!perItem) expectGrad(await e.read(g.dbias!), fdGrad((v) => mm(a, b, v), bias, dc));
  });

  it('linear over 520 rows: weight gradient in K splits, 66 outputs over a tile', async () => {
    const [lead, K, N] = [[2, 260], 2, 66];
    const rows = 520;
    expect(kSplits(Math.ceil(N / 64) * Math.ceil(K / 64), rows)).toBeGreaterThan(1);
    const x = rand(rows * K, 34);
    const w = rand(N * K, 35);
    const bias = rand(N, 36);
    const dy = rand(rows * N, 37);
    const g = linearBackward(e, e.upload(x, [...lead, K]), e.upload(w, [N, K]), e.upload(dy, [...lead, N]), { x: true, weight: true, bias: true });
    expect(g.dx!.shape).toEqual([...lead, K]);
    const lin = (xv: ArrayLike<number>, wv: ArrayLike<number>, bv: ArrayLike<number>) => matmulRef(xv, wv, 1, rows, K, N, { transB: true, bias: bv });
    expectGrad(await e.read(g.dx!), fdGrad((v) => lin(v, w, bias), x, dy));
    expectGrad(await e.read(g.dw!), fdGrad((v) => lin(x, v, bias), w, dy));
    expectGrad(await e.read(g.dbias!), fdGrad((v) => lin(x, w, v), bias, dy));
  });

  it('only the asked-for gradients: a frozen weight gets none', () => {
    const g = linearBackward(e, e.upload(rand(6, 38), [2, 3]), e.upload(rand(12, 39), [4, 3]), e.upload(rand(8, 40), [2, 4]), { x: true });
    expect(Object.keys(g).filter((k) => g[k as keyof typeof g])).toEqual(['dx']);
  });
});
