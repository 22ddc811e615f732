// attention on the CPU-adapter path (kernels.ts): the shape ../shared/design/lavapipe-kernels.md
// measured ×17 the flash kernel on lavapipe. Per block of queries, every head at once:
//   attention_scores_tex   S = scale·Q·Kᵀ into a texture (masked keys −3e38),
//   attention_row_max_tex  each score row's maximum,
//   attention_values_tex   O = exp(S − max)·V / Σ exp(S − max), and the rows' log-sum-exp.
// Q, K and Vᵀ are copied into textures once per block of batch items. The score block is the only
// Lq×Lk-shaped memory; it is held to SCORE_BLOCK_BYTES (and to a binding's size, so that
// EngineOptions.maxBindingBytes exercises the blocking) by taking fewer queries per block.
import type { Engine } from '../engine.js';
import type { Tensor } from '../tensor.js';
import { texelsPerRow } from '../textures.js';
import { toTexture, type TextureView } from './matmul_tex.js';
import type { AttentionOperand } from './attention.js';

/** Score-texture budget: all 8 heads of L = 1024 in one block, 256 queries a block at L = 4096. */
const SCORE_BLOCK_BYTES = 32 * 2 ** 20;

/** What attention's plan hands over. */
export interface TextureAttention {
  Q: AttentionOperand;
  K: AttentionOperand;
  V: AttentionOperand;
  B: number;
  Lq: number;
  Lk: number;
  heads: number;
  headDim: number;
  causal: boolean;
  scale: number;
}

/** Score tile: 4 query rows per lane × 32 keys per subgroup (the study's best for QKᵀ). */
const SCORES = { R: 4, J: 4 };

/**
 * Value tile: 8J of the head's columns per subgroup (the head in as few even groups as fit 64
 * columns: d = 40 in one group of 40, 80 in two of 40), R rows per lane keeping the accumulators
 * near 32 vec4 (the study's 2×40 tile; R·2J of them).
 */
function valueTile(d: number): { R: number; J: number } {
  const sets = Math.ceil(d / 8);
  const J = Math.ceil(sets / Math.ceil(sets / 8));
  return { R: Math.max(2, Math.min(8, Math.floor(32 / (2 * J)))), J };
}

/** Whether one batch item's Q, K and Vᵀ fit a texture's height (else the flash kernel runs). */
export function textureAttentionFits(e: Engine, Lq: number, Lk: number, heads: number, headDim: number): boolean {
  const max = e.device.limits.maxTextureDimension2D;
  return Lq <= max && Lk <= max && heads * headDim <= max && texelsPerRow(Lk) <= max && texelsPerRow(heads * 4 * Math.ceil(headDim / 4)) <= max;
}

/** out [B, Lq, heads·d] and lse [B, heads, Lq] from a.Q/K/V, recorded as copies and dispatches. */
export function textureAttention(e: Engine, a: TextureAttention, out: Tensor, lse: Tensor): void {
  const { B, Lq, Lk, heads, headDim: d } = a;
  const max = e.device.limits.maxTextureDimension2D;
  const dT = Math.ceil(d / 4);
  const qkWidth = texelsPerRow(heads * dT * 4);
  const sWidth = texelsPerRow(Lk);
  const K4 = Math.ceil(Lk / 4);
  const budget = Math.min(SCORE_BLOCK_BYTES, e.maxBinding);
  const rowBytes = heads * sWidth * 16; // one query's scores, all heads
  // Whole batch items per block while their scores fit; else one item in blocks of nq queries.
  const fitItems = Math.min(Math.floor(budget / (rowBytes * Lq)), Math.floor(max / Math.max(Lq, Lk, heads * d, heads * Lq)));
  const items = Math.max(1, Math.min(B, fitItems));
  const nqMax = fitItems >= 1 ? Lq : Math.max(8 * SCORES.R, Math.min(Math.floor(max / heads), Math.floor(budget / rowBytes)) & ~(8 * SCORES.R - 1));
  const vTile = valueTile(d);
  // A head's Q/K columns start at a texel (segments of dT texels), unless heads split on texels anyway.
  const segs = d % 4 === 0 ? 1 : heads;
  const segCols = d % 4 === 0 ? heads * d : d;
  const view = (o: AttentionOperand, L: number, b0: number, n: number): TextureView => {
    const stride = o.stride ?? heads * d;
    return { rows: n * L, rowsPerItem: L, segs, segCols, base: (o.offset ?? 0) + b0 * L * stride, sItem: L * stride, sRow: stride, sSeg: d, sK: 1 };
  };
  const rowMax = e.empty([items * heads * Math.min(nqMax, Lq)]);
  for (let b0 = 0; b0 < B; b0 += items) {
    const n = Math.min(items, B - b0);
    const qt = e.texturePool.acquire(qkWidth, n * Lq);
    toTexture(e, a.Q.t, qt, view(a.Q, Lq, b0, n), true);
    const kt = e.texturePool.acquire(qkWidth, n * Lk);
    toTexture(e, a.K.t, kt, view(a.K, Lk, b0, n), true);
    // Vᵀ: row z·d + c holds column c of head z's values over the keys.
    const vStride = a.V.stride ?? heads * d;
    const vt = e.texturePool.acquire(sWidth, n * heads * d);
    toTexture(e, a.V.t, vt, {
      rows: n * heads * d, rowsPerItem: heads * d, segs: 1, segCols: Lk, base: (a.V.offset ?? 0) + b0 * Lk * vStride,
      sItem: Lk * vStride, sRow: 1, sSeg: 0, sK: vStride,
    });
    const st = e.texturePool.acquire(sWidth, n * heads * Math.min(nqMax, Lq));
    for (let q0 = 0; q0 < Lq; q0 += nqMax) {
      const nq = Math.min(nqMax, Lq - q0);
      e.run({
        kernel: 'attention_scores_tex',
        bindings: {},
        textures: { qt, kt, s: st },
        defines: { ...SCORES, CAUSAL: a.causal },
        params: { heads, Lq, Lk, nq, q0, dT, scale: a.scale },
        workgroups: [Math.ceil(Lk / (8 * SCORES.J)), Math.ceil(nq / (8 * SCORES.R)), n * heads],
      });
      e.run({
        kernel: 'attention_row_max_tex',
        bindings: { rowMax },
        textures: { s: st },
        params: { rows: n * heads * nq, K4 },
        workgroups: [Math.ceil((n * heads * nq) / 64)],
      });
      e.run({
        kernel: 'attention_values_tex',
        bindings: { rowMax, o: out, lse },
        textures: { s: st, vt },
        defines: vTile,
        params: { heads, Lq, d, nq, q0, b0, K4 },
        workgroups: [Math.ceil(d / (8 * vTile.J)), Math.ceil(nq / (8 * vTile.R)), n * heads],
      });
    }
    for (const t of [qt, kt, vt, st]) e.texturePool.release(t);
  }
  e.release(rowMax);
}
