// Attention on the CPU-adapter path (ops/attention_tex.ts: scores into a texture, row max, values
// with the softmax folded in), forced on with DR_KERNELS's value whatever the adapter, against the
// f64 reference on awkward shapes: odd and unequal lengths, 77 context tokens, head sizes 8/13/40/
// 64/512 (13: heads that do not start on a texel), causal masks, batches, fused-projection slices,
// f16 operands, and scores split into blocks of queries or of batch items (a binding cap below
// the block budget). The saved log-sum-exp (the backward's input) is checked too.
// Tolerances, from float32: a score s = scale·q·k of d products in (-1, 1) is off by at most about
// d·2⁻²⁴, which exp turns into the same relative error of its weight; the row sum and the
// weighted sum of Lk values in (-1, 1) add about Lk·2⁻²⁴ more. So outputs (|o| < 1) get
// atol = max(1e-5, 6e-8·(d + Lk)), rtol 1e-4 as the other f32 kernels; f16 outputs add one
// rounding, 2⁻¹¹ relative to |o| < 1.
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import { adapterTraits, chooseKernels } from '../src/engine/kernels.js';
import { attention } from '../src/engine/ops/attention.js';
import { f16ToF32, f32ToF16Bits } from '../src/engine/half.js';
import { expectClose, rand } from './helpers.js';
import { attentionRef } from './reference.js';

let e: Engine;
let kernelsRun: string[] = [];

async function cpuEngine(maxBindingBytes?: number): Promise<Engine> {
  const eng = await Engine.create({ maxBindingBytes });
  eng.kernels = chooseKernels(adapterTraits(eng.gpu), 'cpu');
  const run = eng.run.bind(eng);
  vi.spyOn(eng, 'run').mockImplementation((d) => {
    kernelsRun.push(d.kernel);
    run(d);
  });
  return eng;
}

beforeAll(async () => {
  e = await cpuEngine();
});

const atolFor = (d: number, Lk: number): number => Math.max(1e-5, 6e-8 * (d + Lk));

/** Each (item, head, query)'s log-sum-exp of its scaled scores, [B, H, Lq], in f64. */
function lseRef(q: ArrayLike<number>, k: ArrayLike<number>, B: number, Lq: number, Lk: number, H: number, d: number, causal: boolean): Float64Array {
  const W = H * d;
  const out = new Float64Array(B * H * Lq);
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < Lq; i++) {
    const s: number[] = [];
    for (let j = 0; j < (causal ? Math.min(Lk, i + 1) : Lk); j++) {
      let dot = 0;
      for (let t = 0; t < d; t++) dot += q[(b * Lq + i) * W + h * d + t] * k[(b * Lk + j) * W + h * d + t];
      s.push(dot / Math.sqrt(d));
    }
    const m = Math.max(...s);
    out[(b * H + h) * Lq + i] = m + Math.log(s.reduce((acc, x) => acc + Math.exp(x - m), 0));
  }
  return out;
}

/** Runs attention on dense operands and checks the output and the saved log-sum-exp. */
async function check(eng: Engine, B: number, Lq: number, Lk: number, H: number, d: number, causal: boolean): Promise<string[]> {
  const q = rand(B * Lq * H * d, 31);
  const k = rand(B * Lk * H * d, 32);
  const v = rand(B * Lk * H * d, 33);
  kernelsRun = [];
  const lse = eng.empty([B, H, Lq]);
  const got = await eng.read(attention(eng, eng.upload(q, [B, Lq, H * d]), eng.upload(k, [B, Lk, H * d]), eng.upload(v, [B, Lk, H * d]),
    { heads: H, causal }, lse));
  const kernels = kernelsRun;
  expectClose(got, attentionRef(q, k, v, B, Lq, Lk, H, d, causal), 1e-4, atolFor(d, Lk));
  // log-sum-exp values are O(1–10): the score error d·2⁻²⁴ is absolute, plus the log's rounding.
  expectClose(await eng.read(lse), lseRef(q, k, B, Lq, Lk, H, d, causal), 1e-6, atolFor(d, Lk));
  return kernels;
}

describe('attention on the CPU-adapter path', () => {
  it.each([
    // B, Lq, Lk, heads, head size, causal
    [1, 1, 1, 1, 8, false],
    [1, 67, 67, 2, 40, false], // odd L, SD's head size
    [2, 33, 77, 3, 40, false], // cross-attention to 77 tokens, batch 2
    [1, 130, 77, 2, 64, false],
    [2, 19, 23, 3, 13, true], // a head size that is not whole texels, causal with Lq ≠ Lk
    [2, 77, 77, 4, 8, true], // CLIP's text mask
    [1, 70, 70, 1, 512, false], // the SD VAE mid-block: one head of 512 (eight column groups)
  ])('B %i, Lq %i, Lk %i, heads %i, d %i, causal %s', async (B, Lq, Lk, H, d, causal) => {
    const kernels = await check(e, B, Lq, Lk, H, d, causal);
    expect(kernels).toEqual(expect.arrayContaining(['attention_scores_tex', 'attention_row_max_tex', 'attention_values_tex']));
    expect(kernels).not.toContain('attention');
  });

  it('scores in blocks of queries (causal across blocks) and in blocks of batch items', async () => {
    // A 64 KiB binding cap holds a block's scores to 64 KiB: 1216 B a query (2 heads × 38 texels)
    // → 32 queries a block, 5 blocks; 64 KiB a batch item (4 heads × 64 queries × 16 texels) → 5 blocks of one item.
    const small = await cpuEngine(64 * 1024);
    const count = (ks: string[]): number => ks.filter((k) => k === 'attention_scores_tex').length;
    expect(count(await check(small, 1, 150, 150, 2, 40, true))).toBe(5);
    expect(count(await check(small, 1, 200, 77, 2, 13, false))).toBe(3); // 640 B a query: 96 a block
    expect(count(await check(small, 5, 64, 64, 4, 8, false))).toBe(5);
    expect(count(await check(e, 5, 64, 64, 4, 8, false))).toBe(1);
  });

  it.each([8, 13])('q, k, v as column slices of one fused projection (d %i)', async (d) => {
    const [B, L, H] = [2, 9, 3];
    const W = H * d;
    const qkv = rand(B * L * 3 * W, 34);
    const part = (j: number): Float32Array => {
      const out = new Float32Array(B * L * W);
      for (let r = 0; r < B * L; r++) for (let c = 0; c < W; c++) out[r * W + c] = qkv[r * 3 * W + j * W + c];
      return out;
    };
    const t = e.upload(qkv, [B, L, 3 * W]);
    const got = await e.read(attention(e, { t, stride: 3 * W, offset: 0 }, { t, stride: 3 * W, offset: W }, { t, stride: 3 * W, offset: 2 * W },
      { heads: H, headDim: d }));
    expectClose(got, attentionRef(part(0), part(1), part(2), B, L, L, H, d, false), 1e-4, atolFor(d, L));
  });

  it('f16 operands: f32 texels and sums, f16 output', async () => {
    const [B, Lq, Lk, H, d] = [2, 45, 77, 2, 40];
    const [q, k, v] = [31, 32, 33].map((seed, i) => Uint16Array.from(rand(B * (i ? Lk : Lq) * H * d, seed), f32ToF16Bits));
    const o = attention(e, e.upload(q, [B, Lq, H * d]), e.upload(k, [B, Lk, H * d]), e.upload(v, [B, Lk, H * d]), { heads: H });
    expect(o.dtype).toBe('f16');
    const [qf, kf, vf] = [q, k, v].map((x) => Float32Array.from(x, f16ToF32));
    expectClose(await e.read(o), attentionRef(qf, kf, vf, B, Lq, Lk, H, d, false), 2 ** -11, atolFor(d, Lk));
  });
});
