// Every kernel against its plain-TypeScript reference (tests/reference.ts) on
// awkward shapes: sizes of 1, odd sizes, sizes that are not multiples of the
// 64-wide tiles or 256-wide workgroups, batch > 1.
import { beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import { RowChunkedTensor } from '../src/engine/tensor.js';
import { matmul, linear } from '../src/engine/ops/matmul.js';
import { conv2d } from '../src/engine/ops/conv2d.js';
import { attention } from '../src/engine/ops/attention.js';
import { groupNorm, l2Normalize, layerNorm, softmax } from '../src/engine/ops/norms.js';
import { add, div, geglu, gelu, leakyRelu, mean, mul, quickGelu, scale, sigmoid, silu, sub } from '../src/engine/ops/elementwise.js';
import { cast, concat, expand, permute, slice, upsampleNearest2x } from '../src/engine/ops/copy.js';
import { gather } from '../src/engine/ops/gather.js';
import { collapseAxes } from '../src/engine/ops/common.js';
import { TileBlender, crop, planTiles } from '../src/engine/ops/eval/tiles.js';
import { f32ToF16Bits, f16ToF32 } from '../src/engine/half.js';
import { absMax, expectClose, rand } from './helpers.js';
import {
  attentionRef, conv2dRef, geluRef, groupNormRef, layerNormRef, leakyReluRef, matmulRef, quickGeluRef, sigmoidRef,
  siluRef, softmaxRef,
} from './reference.js';

let e: Engine;
beforeAll(async () => {
  e = await Engine.create();
});

describe('matmul', () => {
  it.each([
    [1, 1, 1, 1, true],
    [1, 67, 33, 129, true],
    [3, 65, 17, 64, false],
    [2, 5, 300, 7, true],
  ])('batch %i, %i×%i · %i (transB %s), shared weight', async (batch, M, K, N, transB) => {
    const a = rand(batch * M * K, 1);
    const b = rand(K * N, 2);
    const got = await e.read(matmul(e, e.upload(a, [batch, M, K]), e.upload(b, transB ? [N, K] : [K, N]), { transB }));
    expectClose(got, matmulRef(a, b, batch, M, K, N, { transB }));
  });

  it('per-item B operands (batched A·Bᵀ, as in attention scores)', async () => {
    const [batch, M, K, N] = [3, 19, 8, 23];
    const a = rand(batch * M * K, 3);
    const b = rand(batch * N * K, 4);
    const got = await e.read(matmul(e, e.upload(a, [batch, M, K]), e.upload(b, [batch, N, K]), { transB: true }));
    expectClose(got, matmulRef(a, b, batch, M, K, N, { transB: true, bBatched: true }));
  });

  it.each([['gelu', geluRef], ['quick_gelu', quickGeluRef], ['silu', siluRef]] as const)(
    'linear with bias and fused %s', async (act, ref) => {
      const [rows, K, N] = [70, 45, 66];
      const x = rand(rows * K, 5);
      const w = rand(N * K, 6, 0.3);
      const bias = rand(N, 7);
      const got = await e.read(linear(e, e.upload(x, [2, 35, K]), e.upload(w, [N, K]), e.upload(bias, [N]), act));
      expectClose(got, matmulRef(x, w, 1, rows, K, N, { transB: true, bias, act: ref }));
    });

  it('f16 weights with f32 activations accumulate in f32', async () => {
    const [M, K, N] = [33, 130, 20];
    const x = rand(M * K, 8);
    const w = rand(N * K, 9);
    const bits = Uint16Array.from(w, f32ToF16Bits);
    const wRounded = Float32Array.from(bits, f16ToF32);
    const got = await e.read(linear(e, e.upload(x, [M, K]), e.upload(bits, [N, K])));
    // Against the same f16-rounded weights: only f32 accumulation error remains.
    expectClose(got, matmulRef(x, wRounded, 1, M, K, N, { transB: true }));
  });
});

describe('conv2d', () => {
  it.each([
    // [B, Cin, H, W], [Cout, KH, KW], stride, pad
    [[1, 1, 1, 1], [1, 1, 1], 1, 0],
    [[2, 3, 9, 11], [5, 3, 3], 1, 1],
    [[1, 4, 13, 10], [70, 3, 3], 2, 1],
    [[3, 3, 16, 16], [17, 8, 8], 8, 0], // CLIP's patch embedding shape
    [[1, 33, 5, 7], [9, 1, 1], 1, 0],
  ])('input %j, kernel %j, stride %i, pad %i', async (xs, [Cout, KH, KW], stride, pad) => {
    const [B, Cin, H, W] = xs as number[];
    const x = rand(B * Cin * H * W, 10);
    const w = rand(Cout * Cin * KH * KW, 11);
    const bias = rand(Cout, 12);
    const got = e.tidy(() =>
      conv2d(e, e.upload(x, [B, Cin, H, W]), e.upload(w, [Cout, Cin, KH, KW]), { stride, padding: pad, bias: e.upload(bias, [Cout]) }));
    const ref = conv2dRef(x, w, bias, [B, Cin, H, W], [Cout, Cin, KH, KW], stride, pad);
    expect(got.shape).toEqual([B, Cout, ref.Ho, ref.Wo]);
    expectClose(await e.read(got), ref.y);
  });
});

describe('attention', () => {
  it.each([
    // B, Lq, Lk, heads, headDim, causal
    [1, 1, 1, 1, 8, false],
    [2, 77, 77, 4, 8, true],
    [3, 17, 17, 2, 40, false],
    [1, 130, 77, 8, 64, false],
    [2, 65, 65, 1, 64, true],
    [1, 70, 70, 1, 512, false], // the SD VAE mid-block: one head of 512 channels
  ])('B %i, Lq %i, Lk %i, heads %i, d %i, causal %s', async (B, Lq, Lk, H, d, causal) => {
    const q = rand(B * Lq * H * d, 13);
    const k = rand(B * Lk * H * d, 14);
    const v = rand(B * Lk * H * d, 15);
    const got = await e.read(attention(e, e.upload(q, [B, Lq, H * d]), e.upload(k, [B, Lk, H * d]), e.upload(v, [B, Lk, H * d]), { heads: H, causal }));
    expectClose(got, attentionRef(q, k, v, B, Lq, Lk, H, d, causal));
  });

  it('reads q, k, v as column slices of one fused projection', async () => {
    const [B, L, H, d] = [2, 9, 3, 8];
    const W = H * d;
    const qkv = rand(B * L * 3 * W, 16);
    const part = (j: number): Float32Array => {
      const out = new Float32Array(B * L * W);
      for (let r = 0; r < B * L; r++) for (let c = 0; c < W; c++) out[r * W + c] = qkv[r * 3 * W + j * W + c];
      return out;
    };
    const t = e.upload(qkv, [B, L, 3 * W]);
    const got = await e.read(attention(e, { t, stride: 3 * W, offset: 0 }, { t, stride: 3 * W, offset: W }, { t, stride: 3 * W, offset: 2 * W }, { heads: H, headDim: d }));
    expectClose(got, attentionRef(part(0), part(1), part(2), B, L, L, H, d, false));
  });
});

describe('normalisation', () => {
  it.each([1, 7, 300, 1025])('layerNorm over D = %i', async (D) => {
    const rows = 5;
    const x = rand(rows * D, 17, 3);
    const g = rand(D, 18);
    const b = rand(D, 19);
    const got = await e.read(layerNorm(e, e.upload(x, [rows, D]), e.upload(g, [D]), e.upload(b, [D]), 1e-5));
    expectClose(got, layerNormRef(x, D, g, b, 1e-5));
  });

  // [2, 15, 70, 5]: channels not a multiple of 4, 3 channels a group, rows longer than a workgroup (64 and 8 threads).
  it.each([[2, 6, 35, 3, false], [1, 32, 64, 8, true], [3, 4, 1, 2, true], [2, 15, 70, 5, true], [1, 9, 3, 9, false]] as const)(
    'groupNorm N %i C %i S %i groups %i silu %s', async (N, C, S, G, withSilu) => {
      const x = rand(N * C * S, 20, 2);
      const g = rand(C, 21);
      const b = rand(C, 22);
      const got = await e.read(groupNorm(e, e.upload(x, [N, C, S]), e.upload(g, [C]), e.upload(b, [C]), G, 1e-6, withSilu ? 'silu' : 'none'));
      expectClose(got, groupNormRef(x, N, C, S, G, g, b, 1e-6, withSilu ? siluRef : undefined));
    });

  it.each([1, 3, 77, 1000])('softmax over D = %i with scale', async (D) => {
    const x = rand(4 * D, 23, 5);
    expectClose(await e.read(softmax(e, e.upload(x, [4, D]), 2.5)), softmaxRef(x, D, 2.5), 1e-4, 1e-7);
  });

  it('l2Normalize rows', async () => {
    const D = 37;
    const x = rand(3 * D, 24);
    const ref = new Float64Array(x.length);
    for (let r = 0; r < 3; r++) {
      let s = 0;
      for (let i = 0; i < D; i++) s += x[r * D + i] ** 2;
      for (let i = 0; i < D; i++) ref[r * D + i] = x[r * D + i] / Math.sqrt(s);
    }
    expectClose(await e.read(l2Normalize(e, e.upload(x, [3, D]))), ref);
  });
});

describe('elementwise', () => {
  const n = 1000; // not a multiple of the 256-wide workgroup
  const x = rand(n, 25, 6);
  it.each([
    ['gelu', gelu, geluRef],
    ['quick_gelu', quickGelu, quickGeluRef],
    ['silu', silu, siluRef],
    ['sigmoid', sigmoid, sigmoidRef],
  ] as const)('%s', async (_, op, ref) => {
    // 1e-6 absolute: the erf fit's error (1.2e-7 relative) times |x| <= 6.
    expectClose(await e.read(op(e, e.upload(x, [n]))), Array.from(x, ref), 1e-5, 1e-6);
  });
  it('leaky ReLU and affine scale', async () => {
    expectClose(await e.read(leakyRelu(e, e.upload(x, [n]), 0.2)), Array.from(x, leakyReluRef(0.2)));
    expectClose(await e.read(scale(e, e.upload(x, [n]), -3, 0.5)), Array.from(x, (v) => v * -3 + 0.5));
  });

  it('add/sub/mul/div broadcast like NumPy', async () => {
    const a = rand(2 * 3 * 5, 26);
    const b = rand(3 * 1, 27);
    const ta = e.upload(a, [2, 3, 5]);
    const tb = e.upload(b, [3, 1]);
    const ref = (f: (p: number, q: number) => number): number[] =>
      Array.from(a, (v, i) => f(v, b[Math.floor(i / 5) % 3]));
    expectClose(await e.read(add(e, ta, tb)), ref((p, q) => p + q));
    expectClose(await e.read(sub(e, ta, tb)), ref((p, q) => p - q));
    expectClose(await e.read(mul(e, ta, tb)), ref((p, q) => p * q));
    expectClose(await e.read(div(e, ta, tb)), ref((p, q) => p / q));
    // Broadcasting the left operand too: [4,1] + [3] → [4,3]
    const c = rand(4, 28);
    const d = rand(3, 29);
    const got = await e.read(add(e, e.upload(c, [4, 1]), e.upload(d, [3])));
    expectClose(got, Array.from({ length: 12 }, (_, i) => c[Math.floor(i / 3)] + d[i % 3]));
  });

  // The looping kernels take LOOP_ELEMENTS (2048) values a workgroup: several workgroups and a partial last one.
  it('add/mul over several workgroups: same shape, and broadcasts that merge to 2 or 4 axes', async () => {
    const [A, B, C, D] = [3, 5, 14, 11];
    const a = rand(A * B * C * D, 42);
    const b = rand(B * D, 43);
    const c = rand(A * B * C * D, 44);
    const ta = e.upload(a, [A, B, C, D]);
    // [A, B, C, D] · [B, 1, D]: the broadcast axes alternate, nothing merges.
    expectClose(await e.read(mul(e, ta, e.upload(b, [B, 1, D]))),
      Array.from(a, (v, i) => v * b[(Math.floor(i / (C * D)) % B) * D + (i % D)]));
    expectClose(await e.read(add(e, ta, e.upload(c, [A, B, C, D]))), Array.from(a, (v, i) => v + c[i]));
    // [A, B, C·D] + [A, B, 1]: one bias per (item, channel), as a timestep embedding.
    const t = rand(A * B, 45);
    expectClose(await e.read(add(e, ta.reshape([A, B, C * D]), e.upload(t, [A, B, 1]))), Array.from(a, (v, i) => v + t[Math.floor(i / (C * D))]));
  });

  it('unary over several workgroups', async () => {
    const x2 = rand(5003, 46, 4);
    expectClose(await e.read(silu(e, e.upload(x2, [5003]))), Array.from(x2, siluRef), 1e-5, 1e-6);
  });

  it('mean over an inner axis', async () => {
    const [o, R, i] = [3, 7, 5];
    const x2 = rand(o * R * i, 30);
    const ref = Array.from({ length: o * i }, (_, k) => {
      let s = 0;
      for (let r = 0; r < R; r++) s += x2[Math.floor(k / i) * R * i + r * i + (k % i)];
      return s / R;
    });
    expectClose(await e.read(mean(e, e.upload(x2, [o, R, i]), 1)), ref);
  });
});

describe('layout', () => {
  const x = rand(2 * 3 * 4, 31);
  const at = (i: number, j: number, k: number): number => x[(i * 3 + j) * 4 + k];

  it('slice, concat, permute, expand are exact copies', async () => {
    const t = e.upload(x, [2, 3, 4]);
    const s = slice(e, t, 1, 1, 3);
    expect(s.shape).toEqual([2, 2, 4]);
    expect(Array.from(await e.read(s))).toEqual([0, 1].flatMap((i) => [1, 2].flatMap((j) => [0, 1, 2, 3].map((k) => at(i, j, k)))));
    const c = concat(e, [slice(e, t, 2, 0, 1), slice(e, t, 2, 1, 4)], 2);
    expect(Array.from(await e.read(c))).toEqual(Array.from(x));
    const p = permute(e, t, [2, 0, 1]);
    expect(p.shape).toEqual([4, 2, 3]);
    expect(Array.from(await e.read(p))).toEqual([0, 1, 2, 3].flatMap((k) => [0, 1].flatMap((i) => [0, 1, 2].map((j) => at(i, j, k)))));
    const ex = expand(e, e.upload(x.subarray(0, 4), [1, 4]), [3, 2, 4]);
    expect(Array.from(await e.read(ex))).toEqual(Array.from({ length: 24 }, (_, i) => x[i % 4]));
  });

  it('collapseAxes merges what every view walks as one axis and drops size-1 axes', () => {
    // Contiguous and a [C] bias broadcast over [N, C, H·W]: N merges with nothing, H and W merge.
    expect(collapseAxes([2, 3, 4, 5], [[60, 20, 5, 1], [0, 1, 0, 0]])).toEqual({ shape: [2, 3, 20], strides: [[60, 20, 1], [0, 1, 0]] });
    expect(collapseAxes([2, 3, 4], [[12, 4, 1], [12, 4, 1]])).toEqual({ shape: [24], strides: [[1], [1]] });
    expect(collapseAxes([1, 6, 1], [[6, 1, 1], [0, 0, 0]])).toEqual({ shape: [6], strides: [[1], [0]] });
    expect(collapseAxes([1, 1], [[1, 1]])).toEqual({ shape: [1], strides: [[0]] });
    // A transpose merges nothing.
    expect(collapseAxes([3, 4], [[1, 3], [4, 1]])).toEqual({ shape: [3, 4], strides: [[1, 3], [4, 1]] });
  });

  it('permute and slice over several workgroups', async () => {
    const [A, B, C] = [3, 70, 23];
    const y = rand(A * B * C, 47);
    const t = e.upload(y, [A, B, C]);
    const p = await e.read(permute(e, t, [2, 0, 1]));
    expect(Array.from(p)).toEqual(Array.from({ length: A * B * C }, (_, i) => {
      const [k, rest] = [Math.floor(i / (A * B)), i % (A * B)];
      return y[(Math.floor(rest / B) * B + (rest % B)) * C + k];
    }));
    const s = await e.read(slice(e, t, 1, 5, 69));
    expect(Array.from(s)).toEqual(Array.from({ length: A * 64 * C }, (_, i) => y[(Math.floor(i / (64 * C)) * B + 5 + Math.floor(i / C) % 64) * C + (i % C)]));
  });

  it('cast f32 → f16 → f32 rounds to nearest half', async () => {
    const back = await e.read(cast(e, cast(e, e.upload(x, [24]), 'f16'), 'f32'));
    expect(Array.from(back)).toEqual(Array.from(x, (v) => f16ToF32(f32ToF16Bits(v))));
  });

  it('gather rows, also from a table split into row chunks', async () => {
    const [rows, D] = [10, 3];
    const table = rand(rows * D, 32);
    const ids = Int32Array.from([9, 0, 4, 4, 7, 2, 5]);
    const ref = Array.from(ids).flatMap((id) => Array.from(table.subarray(id * D, id * D + D)));
    expect(Array.from(await e.read(gather(e, e.upload(table, [rows, D]), e.upload(ids, [7]))))).toEqual(ref);
    const chunked = new RowChunkedTensor(
      [0, 4, 8].map((first) => ({ firstRow: first, tensor: e.upload(table.subarray(first * D, Math.min(rows, first + 4) * D), [Math.min(4, rows - first), D]) })),
      [rows, D], 'f32');
    expect(Array.from(await e.read(gather(e, chunked, e.upload(ids, [7]))))).toEqual(ref);
  });
});

describe('engine', () => {
  it('records a chain of ops into one submit and reuses released buffers', async () => {
    const x = e.upload(rand(4096, 33), [64, 64]);
    const before = { ...e.counters };
    const y = e.tidy(() => {
      let h = x;
      for (let i = 0; i < 20; i++) h = scale(e, h, 1.01);
      return h;
    });
    const stats = e.pool.stats;
    await e.read(y);
    expect(e.counters.dispatches - before.dispatches).toBe(20);
    expect(e.counters.submits - before.submits).toBe(1); // the read's submit only
    // 19 intermediates went back to the pool: a second chain allocates nothing new.
    e.tidy(() => {
      let h = x;
      for (let i = 0; i < 19; i++) h = scale(e, h, 1.01);
    });
    expect(e.pool.stats.activationBytes).toBe(stats.activationBytes);
    expect(absMax(await e.read(y))).toBeGreaterThan(0);
  });
});

describe('diffusion helpers', () => {
  // F = 150: rows longer than the 64 threads that loop over them; 21 rows: 8 a workgroup and a partial one.
  it.each([[7, 45], [3, 150], [21, 70]])('geglu: hidden · gelu(gate), %i rows of odd width %i', async (rows, F) => {
    const x = rand(rows * 2 * F, 40, 3);
    const ref = Array.from({ length: rows * F }, (_, i) => {
      const r = Math.floor(i / F);
      const c = i % F;
      return x[r * 2 * F + c] * geluRef(x[r * 2 * F + F + c]);
    });
    expectClose(await e.read(geglu(e, e.upload(x, [rows, 2 * F]))), ref, 1e-5, 1e-6);
  });

  // W = 70: rows longer than the 64 threads that loop over them.
  it.each([[2, 3, 3, 5], [1, 2, 3, 70]])('upsampleNearest2x repeats each pixel into a 2×2 block: [%i, %i, %i, %i]', async (N, C, H, W) => {
    const x = rand(N * C * H * W, 41);
    const got = upsampleNearest2x(e, e.upload(x, [N, C, H, W]));
    expect(got.shape).toEqual([N, C, 2 * H, 2 * W]);
    const ref = Array.from({ length: N * C * 4 * H * W }, (_, i) => {
      const w = i % (2 * W);
      const h = Math.floor(i / (2 * W)) % (2 * H);
      const nc = Math.floor(i / (4 * H * W));
      return x[(nc * H + Math.floor(h / 2)) * W + Math.floor(w / 2)];
    });
    expect(Array.from(await e.read(got))).toEqual(ref);
  });
});

describe('conv2d with asymmetric padding', () => {
  it('pads (top 0, bottom 1, left 0, right 1) like the VAE downsampler\'s F.pad', async () => {
    const [B, Cin, H, W, Cout] = [2, 3, 9, 8, 5];
    const x = rand(B * Cin * H * W, 42);
    const w = rand(Cout * Cin * 9, 43);
    const got = conv2d(e, e.upload(x, [B, Cin, H, W]), e.upload(w, [Cout, Cin, 3, 3]), { stride: 2, padding: [0, 1, 0, 1] });
    const ref = conv2dRef(x, w, undefined, [B, Cin, H, W], [Cout, Cin, 3, 3], 2, [0, 1, 0, 1]);
    expect(got.shape).toEqual([B, Cout, ref.Ho, ref.Wo]);
    expectClose(await e.read(got), ref.y);
  });
});

describe('tiles', () => {
  it('planTiles covers every pixel with the requested overlap', () => {
    for (const [H, W, size, overlap] of [[64, 64, 64, 8], [100, 37, 32, 8], [33, 200, 32, 16]]) {
      const tiles = planTiles(H, W, size, overlap);
      const hits = new Uint8Array(H * W);
      for (const t of tiles) {
        expect(t.h).toBeLessThanOrEqual(size);
        for (let y = t.y0; y < t.y0 + t.h; y++) for (let x = t.x0; x < t.x0 + t.w; x++) hits[y * W + x]++;
      }
      expect(hits.every((v) => v > 0)).toBe(true);
      const ys = [...new Set(tiles.map((t) => t.y0))];
      for (let i = 1; i < ys.length; i++) expect(ys[i - 1] + Math.min(size, H) - ys[i]).toBeGreaterThanOrEqual(overlap);
    }
  });

  it('blending tiles cut from one tensor gives that tensor back exactly', async () => {
    const [B, C, H, W] = [1, 3, 37, 50];
    const x = rand(B * C * H * W, 44);
    const t = e.upload(x, [B, C, H, W]);
    const blender = new TileBlender(e, [B, C, H, W], 6);
    for (const tile of planTiles(H, W, 16, 6)) blender.add(crop(e, t, tile), tile);
    // Weighted mean of identical values: equal up to f32 rounding of w·x / Σw.
    expectClose(await e.read(blender.result()), x, 1e-6, 1e-7);
  });
});
