// f16 matmuls and convolutions on subgroup matrices (matmul_subgroup_matrix.wgsl,
// conv2d_subgroup_matrix.wgsl; Dawn's chromium-experimental-subgroup-matrix: the GPU's matrix
// units, tensor cores on NVIDIA).
// 1. The choice from adapter traits (pure functions).
// 2. The kernel's wiring on Dawn's null backend, which has the feature and compiles and validates
//    every pipeline but runs nothing: each variant (layouts, bias, epilogue, output dtype, K split,
//    8×8 and 16×16 matrices) must build and dispatch without a validation error.
// 3. On this adapter, on the GPU path: f16 products of awkward shapes against the f64 reference,
//    through the subgroup-matrix kernel where the adapter has a usable configuration, and through
//    the tiled kernel otherwise (asserted, so the test says which one it checked).
// Tolerances: inputs are f16 values, so the products are exact and only the f32 accumulation
// errs: at most about K·2⁻²³ for sums of K terms in (-1, 1) (2⁻²³ rather than 2⁻²⁴ because tensor
// cores truncate when they add in f32; Fasi et al., "Numerical behavior of NVIDIA tensor cores",
// 2021). f16 outputs (a product has its operands' dtype) add their rounding, 2⁻¹¹ relative; the
// weight gradient is f32.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { create, globals } from 'webgpu';
import { Engine } from '../src/engine/engine.js';
import type { Gpu, SubgroupMatrixConfig } from '../src/engine/device.js';
import { adapterTraits, chooseKernels, matrixChoice, useSubgroupMatrix, type AdapterTraits, type KernelChoice } from '../src/engine/kernels.js';
import { linear, matmul, matmulBackward } from '../src/engine/ops/matmul.js';
import { conv2d } from '../src/engine/ops/conv2d.js';
import type { Tensor } from '../src/engine/tensor.js';
import { f16ToF32, f32ToF16Bits } from '../src/engine/half.js';
import { conv2dRef, erf, matmulRef } from './reference.js';
import { expectClose, rand } from './helpers.js';

const cfg = (componentType: string, resultComponentType: string, size: number): SubgroupMatrixConfig =>
  ({ componentType, resultComponentType, M: size, N: size, K: size });
// What Dawn's Vulkan backend reports on an NVIDIA GPU (VK_KHR_cooperative_matrix), in part.
const nvidia: AdapterTraits = {
  software: false, hasSubgroups: true, subgroupMinSize: 32, subgroupMaxSize: 32, maxWorkgroupInvocations: 1024,
  subgroupMatrixConfigs: [cfg('f16', 'f16', 16), cfg('f16', 'f32', 16), cfg('u8', 'u32', 16)],
};

/** f16 bits of rand values and the f32 values they round to. */
function half(n: number, seed: number, scale = 1): { bits: Uint16Array; values: Float32Array } {
  const bits = Uint16Array.from(rand(n, seed, scale), f32ToF16Bits);
  return { bits, values: Float32Array.from(bits, f16ToF32) };
}

const gelu = (x: number): number => 0.5 * x * (1 + erf(x / Math.SQRT2));

describe('choosing the subgroup-matrix kernel', () => {
  it('takes the f16→f32 16×16×16 configuration, 4 subgroups per workgroup', () => {
    const m = matrixChoice(nvidia);
    expect(m).toMatchObject({ tile: 16, workgroup: 128 });
    expect(m.reason).toContain('16×16×16 f16→f32');
    expect(chooseKernels(nvidia, undefined)).toMatchObject({ path: 'gpu', matrix: { tile: 16 } });
  });

  it('falls back to 8×8×8, and to none without an f16→f32 square configuration', () => {
    expect(matrixChoice({ ...nvidia, subgroupMatrixConfigs: [cfg('f16', 'f32', 8), cfg('f32', 'f32', 8)] }).tile).toBe(8);
    const f16Only = matrixChoice({ ...nvidia, subgroupMatrixConfigs: [cfg('f16', 'f16', 16), cfg('f16', 'f16', 8)] });
    expect(f16Only.tile).toBe(0);
    expect(f16Only.reason).toContain('no f16→f32');
    expect(matrixChoice({ ...nvidia, subgroupMatrixConfigs: [{ ...cfg('f16', 'f32', 16), K: 8 }] }).tile).toBe(0);
    expect(matrixChoice({ ...nvidia, subgroupMatrixConfigs: [] })).toMatchObject({ tile: 0, workgroup: 0 });
    expect(matrixChoice({ software: true, hasSubgroups: true, subgroupMinSize: 8 }).tile).toBe(0);
  });

  it('needs 4 subgroups of the largest size to fit a workgroup', () => {
    expect(matrixChoice({ ...nvidia, subgroupMaxSize: 128, maxWorkgroupInvocations: 256 }).tile).toBe(0);
    expect(matrixChoice({ ...nvidia, subgroupMaxSize: 64, maxWorkgroupInvocations: 256 })).toMatchObject({ tile: 16, workgroup: 256 });
    expect(matrixChoice({ ...nvidia, subgroupMaxSize: 0 }).tile).toBe(0);
  });

  it('uses it for f16 operands on the GPU path with every dimension at least a tile', () => {
    const k = chooseKernels(nvidia, undefined);
    const s = { M: 64, N: 40, K: 16, a: 'f16', b: 'f16' } as const;
    expect(useSubgroupMatrix(k, s)).toBe(true);
    expect(useSubgroupMatrix(k, { ...s, a: 'f32' })).toBe(false);
    expect(useSubgroupMatrix(k, { ...s, b: 'f32' })).toBe(false);
    expect(useSubgroupMatrix(k, { ...s, M: 15 })).toBe(false);
    expect(useSubgroupMatrix(k, { ...s, K: 1 })).toBe(false);
    expect(useSubgroupMatrix(chooseKernels(nvidia, 'cpu'), s)).toBe(false);
    expect(useSubgroupMatrix(chooseKernels({ ...nvidia, subgroupMatrixConfigs: [] }, undefined), s)).toBe(false);
  });
});

/** Records the kernels an engine dispatches. */
function recorder(e: Engine): { take(): string[] } {
  let names: string[] = [];
  const run = e.run.bind(e);
  vi.spyOn(e, 'run').mockImplementation((d) => {
    names.push(d.kernel);
    run(d);
  });
  return { take: () => { const out = names; names = []; return out; } };
}

describe('subgroup-matrix kernel on Dawn\'s null backend (compiles and validates, runs nothing)', () => {
  let instance: GPU;
  let e: Engine;
  let rec: { take(): string[] };

  beforeAll(async () => {
    Object.assign(globalThis, globals);
    instance = create(['backend=null', 'enable-dawn-features=allow_unsafe_apis']);
    const adapter = (await instance.requestAdapter())!;
    const features = ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'] as GPUFeatureName[];
    for (const f of features) expect(adapter.features.has(f)).toBe(true);
    const device = await adapter.requestDevice({ requiredFeatures: features });
    const gpu: Gpu = {
      device,
      info: { adapter: 'null', vendor: '', architecture: '', description: '', backend: 'null', software: false, features, limits: {}, subgroupMatrixConfigs: [] },
      hasF16: true, hasSubgroups: true, hasTimestamps: false, hasSubgroupMatrix: true,
    };
    e = Engine.onGpu(gpu, { kernels: 'gpu' }); // not DR_KERNELS: the null adapter's 4-lane subgroups cannot take the CPU path
    rec = recorder(e);
  });
  afterAll(() => e?.device.destroy());

  const useMatrix = (size: 8 | 16, subgroup: number): KernelChoice =>
    chooseKernels({ ...nvidia, subgroupMaxSize: subgroup, subgroupMatrixConfigs: [cfg('f16', 'f32', size)] }, 'gpu');

  it.each([[16, 32], [8, 32], [16, 64]] as const)('SM %i, %i-lane subgroups: every variant builds', async (size, subgroup) => {
    e.kernels = useMatrix(size, subgroup);
    expect(e.kernels.matrix.tile).toBe(size);
    const h = (shape: number[]): Tensor => e.upload(new Float32Array(shape.reduce((p, q) => p * q)), shape, 'f16');
    const x = h([2, 35, 40]);
    const w = h([24, 40]);
    linear(e, x, w);
    linear(e, x, w, h([24]), 'gelu');
    linear(e, x, w, e.upload(new Float32Array(24), [24]), 'silu');
    matmul(e, x, h([2, 40, 24])); // per-item B, [K, N]
    matmul(e, x, h([40, 24]), { act: 'leaky_relu', alpha: 0.2 });
    // Weight gradient: dcᵀ·x read transposed in place, K = 600 rows in 2 f32 splits.
    const g = matmulBackward(e, h([600, 24]), h([20, 24]), h([600, 20]), { transB: true }, { b: true });
    expect(g.db!.dtype).toBe('f32');
    await e.sync();
    expect(rec.take()).toEqual([...Array(5).fill('matmul_subgroup_matrix'), 'matmul_subgroup_matrix', 'sum_to']);
    // Convolutions: 3×3 padded, strided with F.pad-style padding, 1×1; f16 and f32 bias, an activation.
    const xc = h([2, 20, 9, 11]);
    conv2d(e, xc, h([24, 20, 3, 3]), { padding: 1, bias: h([24]) });
    conv2d(e, xc, h([17, 20, 3, 3]), { stride: 2, padding: [0, 1, 0, 1], act: 'silu' });
    conv2d(e, xc, h([40, 20, 1, 1]), { bias: e.upload(new Float32Array(40), [40]) });
    await e.sync();
    expect(rec.take()).toEqual(Array(3).fill('conv2d_subgroup_matrix'));
  });
});

describe('f16 matmul on this adapter\'s GPU path', async () => {
  const e = await Engine.create();
  e.kernels = chooseKernels(adapterTraits(e.gpu), 'gpu');
  const rec = recorder(e);
  const matrix = e.kernels.matrix.tile > 0;
  const kernel = matrix ? 'matmul_subgroup_matrix' : 'matmul';

  it(`runs ${kernel}: ${e.kernels.matrix.reason}`, () => {
    // Without a usable configuration the tiled kernel stays: then the feature must be absent or unusable.
    if (!matrix) expect(!e.gpu.hasSubgroupMatrix || matrixChoice(adapterTraits(e.gpu)).tile === 0).toBe(true);
  });

  const atol = (K: number): number => Math.max(1e-5, 1.2e-7 * K);

  it.each([
    // batch, M, K, N, transB: one exact tile; M, N past 64 by 1–3; K not a multiple of 32;
    // a shared [K, N] weight over a batch; N below a quadrant; a long K
    [1, 16, 16, 16, true],
    [1, 67, 33, 129, true],
    [3, 65, 17, 64, false],
    [2, 70, 300, 19, true],
    [1, 130, 1030, 70, true],
  ])('batch %i, %i×%i · %i (transB %s)', async (batch, M, K, N, transB) => {
    const a = half(batch * M * K, 1);
    const b = half(K * N, 2);
    const got = await e.read(matmul(e, e.upload(a.bits, [batch, M, K]), e.upload(b.bits, transB ? [N, K] : [K, N]), { transB }));
    expect(rec.take()).toEqual([kernel]);
    expectClose(got, matmulRef(a.values, b.values, batch, M, K, N, { transB }), 2 ** -11, atol(K));
  });

  it('linear with f16 bias and fused GELU, f16 out', async () => {
    const [rows, K, N] = [70, 45, 66];
    const x = half(rows * K, 5);
    const w = half(N * K, 6, 0.3);
    const bias = half(N, 7);
    const got = await e.read(linear(e, e.upload(x.bits, [2, 35, K]), e.upload(w.bits, [N, K]), e.upload(bias.bits, [N]), 'gelu'));
    expect(rec.take()).toEqual([kernel]);
    expectClose(got, matmulRef(x.values, w.values, 1, rows, K, N, { transB: true, bias: bias.values, act: gelu }), 2 ** -11, atol(K));
  });

  it('per-item B (batched A·Bᵀ), f16 out', async () => {
    const [batch, M, K, N] = [3, 19, 24, 23];
    const a = half(batch * M * K, 3);
    const b = half(batch * N * K, 4);
    const got = await e.read(matmul(e, e.upload(a.bits, [batch, M, K]), e.upload(b.bits, [batch, N, K]), { transB: true }));
    expect(rec.take()).toEqual([kernel]);
    expectClose(got, matmulRef(a.values, b.values, batch, M, K, N, { transB: true, bBatched: true }), 2 ** -11, atol(K));
  });

  it.each([
    // [B, Cin, H, W], [Cout, KH, KW], stride, padding: K = 9·Cin not a multiple of 32, Ho·Wo and
    // Cout past a 64 tile, F.pad-style asymmetric padding with stride 2 (the VAE's downsampler), 1×1
    [[2, 19, 9, 11], [70, 3, 3], 1, 1],
    [[1, 16, 17, 16], [20, 3, 3], 2, [0, 1, 0, 1]],
    [[1, 40, 12, 10], [33, 1, 1], 1, 0],
  ] as const)('conv2d input %j, kernel %j, stride %i, padding %j, f16 out', async (xs, [Cout, KH, KW], stride, pad) => {
    const [B, Cin, H, W] = xs;
    const x = half(B * Cin * H * W, 10);
    const w = half(Cout * Cin * KH * KW, 11, 0.3);
    const bias = half(Cout, 12);
    const padding = (typeof pad === 'number' ? pad : [...pad]) as number | [number, number, number, number];
    const got = await e.read(conv2d(e, e.upload(x.bits, [...xs]), e.upload(w.bits, [Cout, Cin, KH, KW]), { stride, padding, bias: e.upload(bias.bits, [Cout]) }));
    expect(rec.take()).toEqual([matrix ? 'conv2d_subgroup_matrix' : 'conv2d']);
    const ref = conv2dRef(x.values, w.values, bias.values, [...xs], [Cout, Cin, KH, KW], stride, padding);
    expectClose(got, ref.y, 2 ** -11, atol(Cin * KH * KW));
  });

  it('weight gradient dcᵀ·x: A read transposed, K = 600 in f32 splits', async () => {
    const [rows, n, k] = [600, 20, 24];
    const x = half(rows * k, 8);
    const dc = half(rows * n, 9);
    const g = matmulBackward(e, e.upload(x.bits, [rows, k]), e.upload(new Uint16Array(n * k), [n, k]), e.upload(dc.bits, [rows, n]),
      { transB: true }, { b: true });
    const got = await e.read(g.db!);
    expect(rec.take()).toEqual([kernel, 'sum_to']);
    const dcT = new Float32Array(n * rows);
    for (let r = 0; r < rows; r++) for (let j = 0; j < n; j++) dcT[j * rows + r] = dc.values[r * n + j];
    expectClose(got, matmulRef(dcT, x.values, 1, n, rows, k), 0, atol(rows));
  });
});
