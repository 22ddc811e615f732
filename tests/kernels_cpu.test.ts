// The CPU-adapter kernels (src/engine/kernels.ts), forced on with the DR_KERNELS override's value
// whatever the adapter: the texture matmul (matmul_tex.wgsl) against the f64 reference on awkward
// shapes and every epilogue, the blocks it splits large operands into, the weight-texture cache,
// and the choice itself. Tolerances: f32 products of K terms in (-1, 1) accumulate a rounding
// error of at most about K·2⁻²⁴ ≈ 6e-8·K (helpers' default atol 1e-5 covers K ≤ 160; larger K
// state theirs); f16 outputs add their own rounding, 2⁻¹¹ relative.
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import { adapterTraits, autoPrecision, chooseKernels } from '../src/engine/kernels.js';
import { linear, matmul, matmulBackward } from '../src/engine/ops/matmul.js';
import { conv2d } from '../src/engine/ops/conv2d.js';
import { addInto } from '../src/engine/ops/adamw.js';
import { f16ToF32, f32ToF16Bits } from '../src/engine/half.js';
import { weightSource, weightTextureBytes } from '../src/engine/textures.js';
import type { Activation } from '../src/engine/ops/common.js';
import { DrError } from '../src/errors.js';
import { expectClose, rand } from './helpers.js';
import { conv2dRef, erf, matmulRef } from './reference.js';

let e: Engine;
let kernelsRun: string[] = [];

beforeAll(async () => {
  e = await Engine.create();
  e.kernels = chooseKernels(adapterTraits(e.gpu), 'cpu');
  const run = e.run.bind(e);
  vi.spyOn(e, 'run').mockImplementation((d) => {
    kernelsRun.push(d.kernel);
    run(d);
  });
});

/** Runs fn and returns the kernels it dispatched. */
async function dispatched(fn: () => Promise<unknown>): Promise<string[]> {
  kernelsRun = [];
  await fn();
  return kernelsRun;
}

const atolFor = (K: number): number => Math.max(1e-5, 6e-8 * K);

describe('texture matmul (CPU-adapter path)', () => {
  it.each([
    // batch, M, K, N, transB: K not a multiple of 4, M/N not multiples of the 64×16 tile,
    // K % 64 == 0 (copyBufferToTexture), K = 1024 (rows padded by 16 texels), [K, N] weights
    [1, 1, 1, 1, true],
    [1, 67, 33, 129, true],
    [3, 65, 17, 64, false],
    [2, 5, 300, 7, true],
    [2, 70, 128, 19, true],
    [1, 9, 1024, 17, true],
    [1, 33, 1023, 18, false],
  ])('batch %i, %i×%i · %i (transB %s), shared weight', async (batch, M, K, N, transB) => {
    const a = rand(batch * M * K, 1);
    const b = rand(K * N, 2);
    let got = new Float32Array();
    const kernels = await dispatched(async () => {
      got = await e.read(matmul(e, e.upload(a, [batch, M, K]), e.upload(b, transB ? [N, K] : [K, N]), { transB }));
    });
    expect(kernels).toContain('matmul_tex');
    expect(kernels).not.toContain('matmul');
    // Rows of 64·k f32 values go by copyBufferToTexture, the rest (and [K, N] weights) by to_texture.
    const copies = (K % 64 === 0 ? 0 : 1) + (transB && K % 64 === 0 ? 0 : 1);
    expect(kernels.filter((k) => k === 'to_texture')).toHaveLength(copies);
    expectClose(got, matmulRef(a, b, batch, M, K, N, { transB }), 1e-4, atolFor(K));
  });

  it.each([true, false])('per-item B operands (transB %s)', async (transB) => {
    const [batch, M, K, N] = [3, 19, 10, 23];
    const a = rand(batch * M * K, 3);
    const b = rand(batch * N * K, 4);
    const got = await e.read(matmul(e, e.upload(a, [batch, M, K]), e.upload(b, transB ? [batch, N, K] : [batch, K, N]), { transB }));
    expectClose(got, matmulRef(a, b, batch, M, K, N, { transB, bBatched: true }));
  });

  const sig = (x: number): number => 1 / (1 + Math.exp(-x));
  const acts: [Activation, (x: number) => number][] = [
    ['none', (x) => x],
    ['gelu', (x) => 0.5 * x * (1 + erf(x / Math.SQRT2))],
    ['quick_gelu', (x) => x * sig(1.702 * x)],
    ['silu', (x) => x * sig(x)],
    ['sigmoid', sig],
    ['relu', (x) => Math.max(x, 0)],
    ['leaky_relu', (x) => (x >= 0 ? x : 0.2 * x)],
  ];
  it.each(acts)('bias and fused %s (leaky_relu with alpha 0.2)', async (act, ref) => {
    const [M, K, N] = [70, 45, 66];
    const x = rand(M * K, 5);
    const w = rand(N * K, 6, 0.3);
    const bias = rand(N, 7);
    const got = await e.read(matmul(e, e.upload(x, [M, K]), e.upload(w, [N, K]), { transB: true, bias: e.upload(bias, [N]), act, alpha: 0.2 }));
    expectClose(got, matmulRef(x, w, 1, M, K, N, { transB: true, bias, act: ref }));
  });

  it('f16 weights with f32 activations: f32 texels, f32 accumulation', async () => {
    const [M, K, N] = [33, 130, 20];
    const x = rand(M * K, 8);
    const wBits = Uint16Array.from(rand(N * K, 9), f32ToF16Bits);
    const ref = matmulRef(x, Float32Array.from(wBits, f16ToF32), 1, M, K, N, { transB: true });
    expectClose(await e.read(linear(e, e.upload(x, [M, K]), e.upload(wBits, [N, K]))), ref);
  });

  it.each([
    // batch, M, K, N, per-item B: K not a multiple of 8 (zero-padded pairs), K % 128 == 0
    // (f16 rows copied by copyBufferToTexture), [K, N] and per-item operands
    [1, 33, 130, 20, false, true],
    [2, 17, 128, 9, false, true],
    [1, 12, 21, 35, false, false],
    [3, 19, 10, 23, true, true],
  ])('packed f16 texels: batch %i, %i×%i · %i (per-item %s, transB %s), f16 output', async (batch, M, K, N, perItem, transB) => {
    const xBits = Uint16Array.from(rand(batch * M * K, 8), f32ToF16Bits);
    const wBits = Uint16Array.from(rand((perItem ? batch : 1) * N * K, 9), f32ToF16Bits);
    const bias = rand(N, 10);
    let y = e.upload(bias, [N]);
    const kernels = await dispatched(async () => {
      y = matmul(e, e.upload(xBits, [batch, M, K]), e.upload(wBits, [...(perItem ? [batch] : []), ...(transB ? [N, K] : [K, N])]),
        { transB, bias: e.upload(bias, [N]), act: 'gelu' });
      await e.read(y);
    });
    expect(kernels).toContain('matmul_tex_h');
    expect(y.dtype).toBe('f16');
    const ref = matmulRef(Float32Array.from(xBits, f16ToF32), Float32Array.from(wBits, f16ToF32), batch, M, K, N,
      { transB, bBatched: perItem, bias, act: (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)) });
    // f32 sums of exact f16 products, fused gelu, then one f16 rounding of the output (2⁻¹¹ relative).
    expectClose(await e.read(y), ref, 2 ** -11, 1e-5);
  });

  it('a weight is uploaded once as a texture, and again after it is written in place', async () => {
    const [M, K, N] = [12, 60, 9];
    const x = rand(M * K, 10);
    const w = rand(N * K, 11);
    const delta = rand(N * K, 12);
    const weight = e.createWeight(new Uint8Array(w.buffer.slice(0)), [N, K], 'f32');
    const xt = e.upload(x, [M, K]);
    const copies = async (): Promise<number> => (await dispatched(async () => expectClose(
      await e.read(linear(e, xt, weight)), matmulRef(x, w, 1, M, K, N, { transB: true })))).filter((k) => k === 'to_texture').length;
    expect(await copies()).toBe(2); // K % 64 != 0: x and the weight through to_texture
    expect(await copies()).toBe(1); // the weight's texture is reused
    const weightBytes = e.pool.stats.weightBytes;
    addInto(e, weight, e.upload(delta, [N, K]));
    for (let i = 0; i < w.length; i++) w[i] += delta[i];
    expect(await copies()).toBe(2); // written in place: uploaded again, with the new values
    // The stale texture was destroyed and uncounted: the weight memory is one texture again, plus the
    // buffer the in-place write restored (a trained weight keeps its buffer).
    expect(e.pool.stats.weightBytes).toBe(weightBytes + weight.buffer.size);
  });

  // A weight only texture kernels read is held once (issue 12, 6c): its buffer is dropped once its
  // texture is made, and written back from the texture (from_texture.wgsl) when something reads it.
  // Every layout: Linear [N, K] ('nk', K not a multiple of 4 or 8), a [K, N] operand ('kn'), conv
  // (one segment per tap), f16 weights in f32 texels, f16 in packed texels.
  it.each([
    ['linear f32', 'f32', 'f32', false],
    ['[K, N] f32', 'f32', 'f32', true],
    ['conv f32', 'f32', 'f32', false],
    ['linear, f16 weight, f32 activations', 'f16', 'f32', false],
    ['linear, f16 weight and activations (packed texels)', 'f16', 'f16', false],
    ['conv, f16 weight and activations', 'f16', 'f16', false],
  ] as const)('%s: the weight is held once, and its buffer comes back bit for bit', async (what, wType, xType, kn) => {
    const conv = what.startsWith('conv');
    const [M, K, N] = [7, 37, 11];
    const wShape = conv ? [N, 5, 3, 3] : kn ? [K, N] : [N, K];
    const values = rand(wShape.reduce((p, d) => p * d), 31);
    const bits = wType === 'f16' ? Uint16Array.from(values, f32ToF16Bits) : values;
    const weight = e.createWeight(new Uint8Array(bits.buffer.slice(0)), wShape, wType);
    const bufferBytes = weight.buffer.size;
    const before = e.pool.stats.weightBytes;
    const xValues = rand(conv ? 5 * 36 : M * K, 32);
    const x = xType === 'f16' ? e.upload(Uint16Array.from(xValues, f32ToF16Bits), conv ? [1, 5, 6, 6] : [M, K]) : e.upload(xValues, conv ? [1, 5, 6, 6] : [M, K]);
    await e.read(conv ? conv2d(e, x, weight, { padding: 1 }) : matmul(e, x, weight, { transB: !kn }));
    await e.sync();
    expect(weight.hasBuffer).toBe(false);
    const textureBytes = weightTextureBytes(weightSource(weight)!.texture);
    expect(e.pool.stats.weightBytes - before).toBe(textureBytes - bufferBytes); // the texture instead of the buffer
    const back = await e.readRaw(weight);
    expect([...back.subarray(0, bits.byteLength)]).toEqual([...new Uint8Array(bits.buffer)]);
    expect(e.pool.stats.weightBytes - before).toBe(textureBytes); // kept from now on: the buffer and the texture
    expect(weight.hasBuffer).toBe(true);
  });

  it('splits operands taller than a texture into blocks', async () => {
    const max = e.device.limits.maxTextureDimension2D;
    // A with more rows than a texture holds (one item), shared B over several A blocks, per-item B stacked.
    const cases: [number, number, number, number, boolean][] = [
      [1, max + 37, 5, 3, false],
      [3, Math.ceil(max / 2) + 1, 4, 3, false],
      [3, 2, 4, Math.ceil(max / 2) + 5, true],
    ];
    for (const [batch, M, K, N, perItem] of cases) {
      const a = rand(batch * M * K, 13);
      const b = rand((perItem ? batch : 1) * N * K, 14);
      const got = await e.read(matmul(e, e.upload(a, [batch, M, K]), e.upload(b, perItem ? [batch, N, K] : [N, K]), { transB: true }));
      expectClose(got, matmulRef(a, b, batch, M, K, N, { transB: true, bBatched: perItem }));
    }
  });

  it('falls back to the tiled kernel when K/4 texels do not fit a texture row', async () => {
    const K = 4 * e.device.limits.maxTextureDimension2D + 8;
    const a = rand(2 * K, 15);
    const b = rand(K * 3, 16);
    let got = new Float32Array();
    const kernels = await dispatched(async () => {
      got = await e.read(matmul(e, e.upload(a, [2, K]), e.upload(b, [3, K]), { transB: true }));
    });
    expect(kernels).toEqual(['matmul']);
    expectClose(got, matmulRef(a, b, 1, 2, K, 3, { transB: true }), 1e-4, atolFor(K));
  });

  it('matmulBackward on the CPU path: da through the texture kernel, db through the tiled one', async () => {
    const [M, K, N] = [21, 13, 11];
    const a = rand(M * K, 17);
    const w = rand(N * K, 18);
    const dc = rand(M * N, 19);
    const g = matmulBackward(e, e.upload(a, [M, K]), e.upload(w, [N, K]), e.upload(dc, [M, N]), { transB: true }, { a: true, b: true });
    expectClose(await e.read(g.da!), matmulRef(dc, w, 1, M, N, K, {}));
    const dcT = new Float32Array(N * M);
    for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) dcT[n * M + m] = dc[m * N + n];
    expectClose(await e.read(g.db!), matmulRef(dcT, a, 1, N, M, K, {}));
  });
});

describe('texture conv2d (CPU-adapter path)', () => {
  it.each([
    // [B, Cin, H, W], [Cout, KH, KW], stride, padding: Cin not a multiple of 4, taps in the padding
    // on every side, stride 2 on odd sides, asymmetric padding (VAE downsampler), 1×1, more than 64 channels
    [[1, 1, 1, 1], [1, 1, 1], 1, 0],
    [[2, 3, 9, 11], [5, 3, 3], 1, 1],
    [[1, 4, 13, 10], [70, 3, 3], 2, 1],
    [[1, 6, 9, 7], [3, 3, 3], 2, [0, 1, 0, 1]],
    [[3, 3, 16, 16], [17, 8, 8], 8, 0],
    [[1, 33, 5, 7], [9, 1, 1], 1, 0],
  ])('input %j, kernel %j, stride %i, padding %j, bias, silu', async (xs, [Cout, KH, KW], stride, pad) => {
    const [B, Cin, H, W] = xs as number[];
    const x = rand(B * Cin * H * W, 21);
    const w = rand(Cout * Cin * KH * KW, 22);
    const bias = rand(Cout, 23);
    const weight = e.createWeight(new Uint8Array(w.buffer.slice(0)), [Cout, Cin, KH, KW], 'f32');
    let got = new Float32Array();
    const kernels = await dispatched(async () => {
      got = await e.read(conv2d(e, e.upload(x, [B, Cin, H, W]), weight, { stride, padding: pad as number, bias: e.upload(bias, [Cout]), act: 'silu' }));
    });
    expect(kernels).toContain('conv2d_tex');
    expect(kernels).not.toContain('conv2d');
    const ref = conv2dRef(x, w, bias, [B, Cin, H, W], [Cout, Cin, KH, KW], stride, pad);
    expectClose(got, ref.y.map((v) => v / (1 + Math.exp(-v))), 1e-4, atolFor(Cin * KH * KW));
  });

  it('f16 input and weights: f32 accumulation, f16 output; a pooled weight is copied per call', async () => {
    const [B, Cin, H, W, Cout] = [1, 5, 6, 6, 7];
    const xBits = Uint16Array.from(rand(B * Cin * H * W, 24), f32ToF16Bits);
    const wBits = Uint16Array.from(rand(Cout * Cin * 9, 25), f32ToF16Bits);
    const y = conv2d(e, e.upload(xBits, [B, Cin, H, W]), e.upload(wBits, [Cout, Cin, 3, 3]), { padding: 1 });
    expect(y.dtype).toBe('f16');
    const ref = conv2dRef(Float32Array.from(xBits, f16ToF32), Float32Array.from(wBits, f16ToF32), undefined, [B, Cin, H, W], [Cout, Cin, 3, 3], 1, 1);
    expectClose(await e.read(y), ref.y, 2 ** -11, 1e-5);
  });

  it('falls back to the tiled kernel when an input row does not fit a texture', async () => {
    const W = e.device.limits.maxTextureDimension2D + 3;
    const x = rand(W, 26);
    const w = rand(2, 27);
    let got = new Float32Array();
    const kernels = await dispatched(async () => { got = await e.read(conv2d(e, e.upload(x, [1, 1, 1, W]), e.upload(w, [2, 1, 1, 1]))); });
    expect(kernels).toEqual(['conv2d']);
    expectClose(got, conv2dRef(x, w, undefined, [1, 1, 1, W], [2, 1, 1, 1], 1, 0).y);
  });
});

describe('kernel choice', () => {
  const lavapipe = { software: true, hasSubgroups: true, subgroupMinSize: 8 };
  it('software adapters with 8-lane subgroups get the CPU path, others the GPU path', () => {
    expect(chooseKernels(lavapipe, undefined).path).toBe('cpu');
    expect(chooseKernels({ ...lavapipe, software: false }, undefined).path).toBe('gpu');
    expect(chooseKernels({ ...lavapipe, subgroupMinSize: 4 }, undefined).path).toBe('gpu');
    expect(chooseKernels({ ...lavapipe, hasSubgroups: false }, undefined).path).toBe('gpu');
  });

  it('DR_KERNELS overrides; an unknown value or an impossible cpu is a DrError', () => {
    expect(chooseKernels(lavapipe, 'gpu').path).toBe('gpu');
    expect(chooseKernels({ ...lavapipe, software: false }, 'cpu').path).toBe('cpu');
    expect(() => chooseKernels(lavapipe, 'fast')).toThrow(DrError);
    expect(() => chooseKernels(lavapipe, 'fast')).toThrow('DR_KERNELS=fast: expected cpu or gpu');
    expect(() => chooseKernels({ ...lavapipe, hasSubgroups: false }, 'cpu')).toThrow(DrError);
  });

  it('--precision auto: f32 on a CPU adapter (f16 is emulated there), f16 on a GPU with shader-f16', () => {
    expect(autoPrecision('cpu', true, true)).toBe('f32');
    expect(autoPrecision('gpu', true, true)).toBe('f32');
    expect(autoPrecision('gpu', true, false)).toBe('f16');
    expect(autoPrecision('gpu', false, false)).toBe('f32');
  });

  it('textures are bound by name and checked against the kernel', () => {
    const src = e.upload(rand(4, 20), [1, 4]);
    const params = { rows: 1, rowsPerItem: 1, segs: 1, segCols: 4, base: 0, sItem: 0, sRow: 4, sSeg: 0, sK: 1 };
    expect(() => e.run({ kernel: 'to_texture', bindings: { src }, params, workgroups: [1, 1] })).toThrow('texture dst missing');
    const dst = e.texturePool.acquire(1, 1);
    expect(() => e.run({ kernel: 'to_texture', bindings: { src }, textures: { dst, extra: dst }, params, workgroups: [1, 1] }))
      .toThrow('no texture named extra');
    e.texturePool.release(dst);
  });
});
