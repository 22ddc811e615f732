// Backward of the small ops — activations, GEGLU, broadcasting binary ops (sumTo), copies,
// nearest ×2 upsampling, pooling, the DMB/DRB gate, MSE and cross-entropy — against PyTorch
// autograd (ops_grad.safetensors) and against central finite differences of the float64
// references (tests/reference.ts) on awkward shapes: odd sizes, broadcasts, batch > 1, more
// elements than one 256-wide workgroup.
//
// Tolerance, from float32 behaviour: the fixture README measured float32-vs-float64 differences
// of these ops at ≤ 2e-7 of max|ref| (0 for the copies and pooling); an f32 kernel's own
// rounding is of the same order, so every gradient must match to rtol 1e-4 plus 1e-5·max|ref|
// (the README's suggested op tolerance). The finite differences are of float64 functions with
// h = 1e-6: truncation ~h²·|f'''| and cancellation ~1e-16·|L|/h, both below 1e-8 here.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import type { Tensor } from '../src/engine/tensor.js';
import type { Activation } from '../src/engine/ops/common.js';
import {
  binaryBackward, gegluBackward, geglu, mul, sumTo, unary, unaryBackward, type BinaryOp,
} from '../src/engine/ops/elementwise.js';
import { concatBackward, permuteBackward, sliceBackward, upsampleNearest2xBackward, upsampleNearestBackward } from '../src/engine/ops/copy.js';
import { linear, linearBackward } from '../src/engine/ops/matmul.js';
import { pool2d, pool2dBackward } from '../src/engine/ops/pool2d.js';
import { crossEntropy, crossEntropyBackward, mse, mseBackward } from '../src/engine/ops/losses.js';
import { SafetensorsFile } from '../src/weights/safetensors.js';
import { f16ToF32, f32ToF16Bits } from '../src/engine/half.js';
import { FIXTURES, absMax, expectClose, rand } from './helpers.js';
import {
  binaryRef, crossEntropyRef, geluRef, gegluRef, leakyReluRef, mseRef, permuteRef, pool2dRef, quickGeluRef, reluRef,
  sigmoidRef, siluRef, sliceRef, sumToRef, upsampleNearest2xRef,
} from './reference.js';

const expectGrad = (got: ArrayLike<number>, ref: ArrayLike<number>): void => expectClose(got, ref, 1e-4, 1e-5 * absMax(ref));

/** Central differences of a scalar float64 function at x (h relative to 1). */
function fdGrad(L: (x: Float64Array) => number, x: ArrayLike<number>, h = 1e-6): Float64Array {
  const p = Float64Array.from(x);
  const g = new Float64Array(p.length);
  for (let i = 0; i < p.length; i++) {
    const v = p[i];
    p[i] = v + h;
    const up = L(p);
    p[i] = v - h;
    g[i] = (up - L(p)) / (2 * h);
    p[i] = v;
  }
  return g;
}

const dot = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};
const numel = (shape: number[]): number => shape.reduce((p, d) => p * d, 1);

let e: Engine;
let fx: SafetensorsFile;
beforeAll(async () => {
  e = await Engine.create();
  fx = SafetensorsFile.open(path.join(FIXTURES, 'train/ops_grad.safetensors'));
});
afterAll(() => fx.close());

/** A fixture tensor uploaded as f32 (or i32 for integer tensors). */
function up(name: string): Tensor {
  const info = fx.info(name);
  if (info.dtype === 'I64') return e.upload(fx.readInt32(name), info.shape);
  return e.upload(fx.readF32(name), info.shape);
}
const ref = (name: string): Float32Array => fx.readF32(name);

describe('ops_grad fixture (PyTorch autograd)', () => {
  it.each([
    ['silu', 'silu', 0],
    ['gelu', 'gelu', 0],
    ['sigmoid', 'sigmoid', 0],
    ['relu', 'relu', 0],
    ['leaky_relu', 'leaky_relu', 0.01],
  ] as [string, Activation, number][])('%s: out and grad_x', async (c, act, alpha) => {
    const x = up(`${c}.x`);
    expectGrad(await e.read(unary(e, x, act, { alpha })), ref(`${c}.out`));
    expectGrad(await e.read(unaryBackward(e, act, x, up(`${c}.grad_out`), { alpha })), ref(`${c}.grad_x`));
  });

  it('geglu (projection, then a · gelu(gate)): out and grads of x, weight, bias', async () => {
    const [x, w, b, dy] = ['x', 'weight', 'bias', 'grad_out'].map((n) => up(`geglu.${n}`));
    const h = linear(e, x, w, b); // [2, 4, 10]
    expectGrad(await e.read(geglu(e, h)), ref('geglu.out'));
    const { dx, dw, dbias } = linearBackward(e, x, w, gegluBackward(e, h, dy), { x: true, weight: true, bias: true });
    expectGrad(await e.read(dx!), ref('geglu.grad_x'));
    expectGrad(await e.read(dw!), ref('geglu.grad_weight'));
    expectGrad(await e.read(dbias!), ref('geglu.grad_bias'));
  });

  it('modulation x · sigmoid(p·Wᵀ + b)[:, :, None, None]: out and grads of x, p, weight, bias', async () => {
    const [x, p, w, b, dy] = ['x', 'p', 'weight', 'bias', 'grad_out'].map((n) => up(`modulation.${n}`));
    const h = linear(e, p, w, b); // [2, 6]
    const gate = unary(e, h, 'sigmoid').reshape([2, 6, 1, 1]);
    expectGrad(await e.read(mul(e, x, gate)), ref('modulation.out'));
    const { da: dx, db: dgate } = binaryBackward(e, 'mul', x, gate, dy);
    expectGrad(await e.read(dx!), ref('modulation.grad_x'));
    const dh = unaryBackward(e, 'sigmoid', h, dgate!.reshape([2, 6]));
    const { dx: dp, dw, dbias } = linearBackward(e, p, w, dh, { x: true, weight: true, bias: true });
    expectGrad(await e.read(dp!), ref('modulation.grad_p'));
    expectGrad(await e.read(dw!), ref('modulation.grad_weight'));
    expectGrad(await e.read(dbias!), ref('modulation.grad_bias'));
  });

  it('upsample_nearest2x: grad_x is the sum of each 2×2 block', async () => {
    expectGrad(await e.read(upsampleNearest2xBackward(e, up('upsample_nearest2x.grad_out'))), ref('upsample_nearest2x.grad_x'));
  });

  it('concat (dim 1): grads of a and b are exact slices', async () => {
    const [da, db] = concatBackward(e, up('concat.grad_out'), [3, 5], 1);
    expect(await e.read(da)).toEqual(ref('concat.grad_a'));
    expect(await e.read(db)).toEqual(ref('concat.grad_b'));
  });

  it('maxpool2x2: out and grad_x (the gradient goes to the max element)', async () => {
    const x = up('maxpool2x2.x');
    expect(await e.read(pool2d(e, x, 'max', 2, 2))).toEqual(ref('maxpool2x2.out'));
    expect(await e.read(pool2dBackward(e, x, up('maxpool2x2.grad_out'), 'max', 2, 2))).toEqual(ref('maxpool2x2.grad_x'));
  });

  it('cross_entropy: out and grad_logits', async () => {
    const [logits, labels, dloss] = [up('cross_entropy.logits'), up('cross_entropy.labels'), up('cross_entropy.grad_out')];
    expectClose(await e.read(crossEntropy(e, logits, labels)), ref('cross_entropy.out'), 1e-4, 0);
    expectGrad(await e.read(crossEntropyBackward(e, logits, labels, dloss)), ref('cross_entropy.grad_logits'));
  });

  it('mse: out and grads of a and b', async () => {
    const [a, b, dloss] = [up('mse.a'), up('mse.b'), up('mse.grad_out')];
    expectClose(await e.read(mse(e, a, b)), ref('mse.out'), 1e-4, 0);
    const { da, db } = mseBackward(e, a, b, dloss);
    expectGrad(await e.read(da!), ref('mse.grad_a'));
    expectGrad(await e.read(db!), ref('mse.grad_b'));
  });
});

describe('activations by finite differences', () => {
  const n = 3 * 7 * 53; // odd, over four workgroups
  it.each([
    ['silu', siluRef, 0, 1],
    ['gelu', geluRef, 0, 1],
    ['quick_gelu', quickGeluRef, 0, 1],
    ['sigmoid', sigmoidRef, 0, 1],
    ['relu', reluRef, 0, 1],
    ['leaky_relu', leakyReluRef(0.2), 0.2, 1],
    ['none', (v: number) => v, 0, -2.5],
    ['sqrt', Math.sqrt, 0, 1],
    ['rsqrt', (v: number) => 1 / Math.sqrt(v), 0, 1],
  ] as [Activation, (v: number) => number, number, number][])('%s', async (act, f, alpha, s) => {
    // sqrt and rsqrt on [0.5, 4.5], the others on [-4, 4].
    const x = act.endsWith('sqrt') ? rand(n, 11).map((v) => 2.5 + 2 * v) : rand(n, 11, 4);
    const dy = rand(n, 12);
    const got = await e.read(unaryBackward(e, act, e.upload(x, [3, 7, 53]), e.upload(dy, [3, 7, 53]), { alpha, scale: s }));
    const want = new Float64Array(n);
    for (let i = 0; i < n; i++) want[i] = (dy[i] * s * (f(x[i] + 1e-6) - f(x[i] - 1e-6))) / 2e-6;
    expectGrad(got, want);
  });

  it('relu and leaky_relu at exactly 0 take the left slope, as PyTorch', async () => {
    const x = e.upload(new Float32Array([0, -1, 1]), [3]);
    const dy = e.upload(new Float32Array([2, 2, 2]), [3]);
    expect(Array.from(await e.read(unaryBackward(e, 'relu', x, dy)))).toEqual([0, 0, 2]);
    expect(Array.from(await e.read(unaryBackward(e, 'leaky_relu', x, dy, { alpha: 0.25 })))).toEqual([0.5, 0.5, 2]);
  });

  it('relu and leaky_relu backward from the output equal backward from x (fused epilogues keep only the output)', async () => {
    const x = e.upload(Float32Array.from(rand(301, 15), (v, i) => (i % 7 === 0 ? 0 : v)), [301]);
    const dy = e.upload(rand(301, 16), [301]);
    for (const [act, alpha] of [['relu', 0], ['leaky_relu', 0.2]] as [Activation, number][]) {
      const fromY = await e.read(unaryBackward(e, act, unary(e, x, act, { alpha }), dy, { alpha }));
      expect(fromY).toEqual(await e.read(unaryBackward(e, act, x, dy, { alpha })));
    }
  });

  it.each([[3, 5, 7], [2, 1, 150]])('geglu [%i, %i, 2·%i]', async (B, L, F) => {
    const rows = B * L;
    const x = rand(rows * 2 * F, 13, 3);
    const dy = rand(rows * F, 14);
    const got = await e.read(gegluBackward(e, e.upload(x, [B, L, 2 * F]), e.upload(dy, [B, L, F])));
    expectGrad(got, fdGrad((v) => dot(gegluRef(v, rows, F), dy), x));
  });
});

describe('broadcasting binary ops and sumTo by finite differences', () => {
  const cases: [number[], number[]][] = [
    [[3, 1, 5], [4, 1]], // both operands broadcast
    [[2, 3, 7, 9], [3, 1, 1]], // a bias/gate over channels, batch 2
    [[2, 5, 70], [5, 1]], // summed run of 140 ≥ 64: one workgroup per output
    [[1], [2, 300]], // a scalar against a matrix
    [[2, 3, 4], [2, 3, 4]], // no broadcast
  ];
  it.each(['add', 'sub', 'mul', 'div'] as BinaryOp[])('%s', async (op) => {
    for (const [i, [sa, sb]] of cases.entries()) {
      const a = rand(numel(sa), 20 + i);
      // Divisors kept in [1, 2]: the gradient of 1/b is smooth there.
      const b = op === 'div' ? rand(numel(sb), 30 + i).map((v) => 1.5 + 0.5 * v) : rand(numel(sb), 30 + i);
      const { shape } = binaryRef(op, a, sa, b, sb);
      const dy = rand(numel(shape), 40 + i);
      const { da, db } = binaryBackward(e, op, e.upload(a, sa), e.upload(b, sb), e.upload(dy, shape));
      expect(da!.shape).toEqual(sa);
      expect(db!.shape).toEqual(sb);
      expectGrad(await e.read(da!), fdGrad((v) => dot(binaryRef(op, v, sa, b, sb).out, dy), a));
      expectGrad(await e.read(db!), fdGrad((v) => dot(binaryRef(op, a, sa, v, sb).out, dy), b));
    }
  });

  it('computes only the gradients asked for', () => {
    const { da, db } = binaryBackward(e, 'mul', e.upload(rand(6, 1), [2, 3]), e.upload(rand(3, 2), [3]), e.upload(rand(6, 3), [2, 3]), { b: true });
    expect(da).toBeUndefined();
    expect(db!.shape).toEqual([3]);
  });

  it.each([
    [[2, 3, 5, 7], [3, 1, 1]],
    [[2, 3, 5, 7], [1, 5, 1]],
    [[4, 1, 6, 1, 3], [1, 1, 1]], // size-1 axes on both sides
    [[3, 1100], [1]], // 3300 summed by a 256-wide workgroup
    [[2, 3, 2, 2, 2, 3, 2, 2], [1, 3, 1, 2, 1, 3, 1, 2]], // rank 8, alternating: 4 kept and 4 summed groups
  ])('sumTo %j → %j', async (from, to) => {
    const t = rand(numel(from), 50);
    expectGrad(await e.read(sumTo(e, e.upload(t, from), to)), sumToRef(t, from, to));
  });

  it('rejects a shape that does not broadcast to the tensor', () => {
    expect(() => sumTo(e, e.upload(rand(6, 1), [2, 3]), [2])).toThrow(/sumTo/);
  });
});

describe('copies and pooling by finite differences', () => {
  it('slice: the gradient lands at the slice, zeros elsewhere', async () => {
    const shape = [2, 7, 3];
    const dy = rand(2 * 4 * 3, 60);
    const got = await e.read(sliceBackward(e, e.upload(dy, [2, 4, 3]), shape, 1, 2));
    expect(got).toEqual(Float32Array.from(fdGrad((v) => dot(sliceRef(v, shape, 1, 2, 6), dy), new Float64Array(numel(shape)))));
  });

  it('concat of three along the last axis: the gradient splits back', async () => {
    const dy = rand(2 * 3 * 10, 61);
    const parts = concatBackward(e, e.upload(dy, [2, 3, 10]), [3, 1, 6], -1);
    expect(parts.map((p) => p.shape)).toEqual([[2, 3, 3], [2, 3, 1], [2, 3, 6]]);
    let at = 0;
    for (const [i, d] of [3, 1, 6].entries()) {
      expect(await e.read(parts[i])).toEqual(Float32Array.from(sliceRef(dy, [2, 3, 10], 2, at, (at += d))));
    }
  });

  it('permute: the inverse permutation', async () => {
    const [shape, order] = [[2, 3, 4, 5], [2, 0, 3, 1]];
    const dy = rand(120, 62);
    const got = await e.read(permuteBackward(e, e.upload(dy, order.map((o) => shape[o])), order));
    expect(got).toEqual(Float32Array.from(fdGrad((v) => dot(permuteRef(v, shape, order), dy), new Float64Array(120))));
  });

  it('nearest ×2 upsampling, odd sides, batch 2', async () => {
    const shape = [2, 3, 5, 7];
    const dy = rand(4 * numel(shape), 63);
    const got = await e.read(upsampleNearest2xBackward(e, e.upload(dy, [2, 3, 10, 14])));
    expectGrad(got, fdGrad((v) => dot(upsampleNearest2xRef(v, shape), dy), new Float64Array(numel(shape))));
  });

  it.each([[5, 7, 9, 14], [5, 7, 10, 13], [5, 7, 9, 13]])('nearest upsampling of %i×%i to %i×%i (odd UNet levels)', async (H, W, Ho, Wo) => {
    const shape = [2, 3, H, W];
    const dy = rand(6 * Ho * Wo, 66);
    const crop = (v: ArrayLike<number>): Float64Array =>
      sliceRef(sliceRef(upsampleNearest2xRef(v, shape), [2, 3, 2 * H, 2 * W], 2, 0, Ho), [2, 3, Ho, 2 * W], 3, 0, Wo);
    const got = await e.read(upsampleNearestBackward(e, e.upload(dy, [2, 3, Ho, Wo]), H, W));
    expectGrad(got, fdGrad((v) => dot(crop(v), dy), new Float64Array(numel(shape))));
  });

  it.each([
    ['max', 2, 2, 0, [2, 3, 7, 9]], // odd sides: the last row and column get no gradient
    ['max', 3, 2, 1, [1, 2, 9, 8]], // overlapping windows with padding
    ['max', 3, 1, 1, [1, 1, 5, 6]],
    ['avg', 2, 2, 0, [2, 3, 7, 9]],
    ['avg', 3, 2, 1, [1, 2, 9, 8]], // border windows average fewer elements
  ] as ['max' | 'avg', number, number, number, number[]][])('%s pool, window %i, stride %i, padding %i, on %j', async (mode, K, S, P, shape) => {
    const x = rand(numel(shape), 64, 3);
    const [N, C, H, W] = shape;
    const yShape = [N, C, Math.floor((H + 2 * P - K) / S) + 1, Math.floor((W + 2 * P - K) / S) + 1];
    const dy = rand(numel(yShape), 65);
    const got = await e.read(pool2dBackward(e, e.upload(x, shape), e.upload(dy, yShape), mode, K, S, P));
    expectGrad(got, fdGrad((v) => dot(pool2dRef(v, shape, mode, K, S, P), dy), x));
  });

  it('max pool ties: the first maximum of each window in row-major order takes the gradient', async () => {
    // Two windows of a 2×4 plane: [5 5 / 5 5] and [1 7 / 7 7].
    const x = e.upload(new Float32Array([5, 5, 1, 7, 5, 5, 7, 7]), [1, 1, 2, 4]);
    const got = await e.read(pool2dBackward(e, x, e.upload(new Float32Array([2, 3]), [1, 1, 1, 2]), 'max', 2, 2));
    expect(Array.from(got)).toEqual([2, 0, 0, 3, 0, 0, 0, 0]);
  });
});

describe('f16 activations with f32 gradients (frozen f16 modules)', () => {
  it('unary, geglu and pool backward read f16 inputs and give f32 gradients equal to the f32 path on the same values', async () => {
    const x = Float32Array.from(rand(2 * 3 * 6 * 8, 90, 3), (v) => f16ToF32(f32ToF16Bits(v)));
    const dy = rand(x.length, 91);
    const [X16, X32] = [e.upload(x, [2, 3, 6, 8], 'f16'), e.upload(x, [2, 3, 6, 8])];
    const Dy = e.upload(dy, [2, 3, 6, 8]);
    const both = async (f: (xt: Tensor) => Tensor): Promise<void> => {
      const got = f(X16);
      expect(got.dtype).toBe('f32');
      expect(await e.read(got)).toEqual(await e.read(f(X32)));
    };
    await both((xt) => unaryBackward(e, 'silu', xt, Dy));
    await both((xt) => gegluBackward(e, xt, e.upload(dy.slice(0, 144), [2, 3, 6, 4])));
    await both((xt) => pool2dBackward(e, xt, e.upload(dy.slice(0, 72), [2, 3, 3, 4]), 'max', 2, 2));
  });
});

describe('DMB/DRB modulation composed by finite differences', () => {
  it('x [3, 5, 4, 7] · sigmoid(p·Wᵀ + b), p [3, 6]', async () => {
    const [B, C, H, W, D] = [3, 5, 4, 7, 6];
    const [x, p, w, b] = [rand(B * C * H * W, 70), rand(B * D, 71), rand(C * D, 72), rand(C, 73)];
    const dy = rand(B * C * H * W, 74);
    const L = (xv: ArrayLike<number>, pv: ArrayLike<number>, wv: ArrayLike<number>, bv: ArrayLike<number>): number => {
      let s = 0;
      for (let n = 0; n < B; n++) for (let c = 0; c < C; c++) {
        let h = bv[c];
        for (let k = 0; k < D; k++) h += pv[n * D + k] * wv[c * D + k];
        const g = sigmoidRef(h);
        for (let i = 0; i < H * W; i++) s += xv[(n * C + c) * H * W + i] * g * dy[(n * C + c) * H * W + i];
      }
      return s;
    };
    const [X, P, Wt, Bt] = [e.upload(x, [B, C, H, W]), e.upload(p, [B, D]), e.upload(w, [C, D]), e.upload(b, [C])];
    const h = linear(e, P, Wt, Bt);
    const { da: dx, db: dgate } = binaryBackward(e, 'mul', X, unary(e, h, 'sigmoid').reshape([B, C, 1, 1]), e.upload(dy, [B, C, H, W]));
    const dh = unaryBackward(e, 'sigmoid', h, dgate!.reshape([B, C]));
    const { dx: dp, dw, dbias } = linearBackward(e, P, Wt, dh, { x: true, weight: true, bias: true });
    expectGrad(await e.read(dx!), fdGrad((v) => L(v, p, w, b), x));
    expectGrad(await e.read(dp!), fdGrad((v) => L(x, v, w, b), p));
    expectGrad(await e.read(dw!), fdGrad((v) => L(x, p, v, b), w));
    expectGrad(await e.read(dbias!), fdGrad((v) => L(x, p, w, v), b));
  });
});

describe('losses by finite differences', () => {
  it('mse on [3, 5, 7], dloss 0.7', async () => {
    const [a, b] = [rand(105, 80), rand(105, 81)];
    const [A, Bt] = [e.upload(a, [3, 5, 7]), e.upload(b, [3, 5, 7])];
    expectClose(await e.read(mse(e, A, Bt)), [mseRef(a, b)], 1e-4, 0);
    const { da, db } = mseBackward(e, A, Bt, e.upload(new Float32Array([0.7]), []));
    expectGrad(await e.read(da!), fdGrad((v) => 0.7 * mseRef(v, b), a));
    expectGrad(await e.read(db!), fdGrad((v) => 0.7 * mseRef(a, v), b));
  });

  it('mse over 70001 elements (many per thread of the one workgroup)', async () => {
    const [a, b] = [rand(70001, 82), rand(70001, 83)];
    expectClose(await e.read(mse(e, e.upload(a, [70001]), e.upload(b, [70001]))), [mseRef(a, b)], 1e-4, 0);
  });

  it.each([
    [5, 9, 1], // labels include the first and last class
    [70, 3, 30], // more rows than a 64-thread workgroup; logits up to ±30 need the max subtracted
  ])('cross-entropy on [%i, %i] logits ×%i, dloss 0.7', async (B, C, s) => {
    const logits = rand(B * C, 84, s);
    const labels = Int32Array.from({ length: B }, (_, r) => (r * 7) % C);
    labels[0] = 0;
    labels[B - 1] = C - 1;
    const [Lg, Lb] = [e.upload(logits, [B, C]), e.upload(labels, [B])];
    expectClose(await e.read(crossEntropy(e, Lg, Lb)), [crossEntropyRef(logits, labels, B, C)], 1e-4, 0);
    const got = await e.read(crossEntropyBackward(e, Lg, Lb, e.upload(new Float32Array([0.7]), [])));
    expectGrad(got, fdGrad((v) => 0.7 * crossEntropyRef(v, labels, B, C), logits));
  });

  it('cross-entropy with a label outside [0, C) is NaN, not a read out of bounds', async () => {
    const [Lg, Lb] = [e.upload(rand(6, 85), [2, 3]), e.upload(new Int32Array([1, 3]), [2])];
    expect(Number.isNaN((await e.read(crossEntropy(e, Lg, Lb)))[0])).toBe(true);
    const got = await e.read(crossEntropyBackward(e, Lg, Lb, e.upload(new Float32Array([1]), [])));
    expect(Array.from(got.slice(0, 3)).every(Number.isFinite)).toBe(true);
    expect(Array.from(got.slice(3)).every(Number.isNaN)).toBe(true);
  });
});
