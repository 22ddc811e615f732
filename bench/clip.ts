// A CLIP model with seeded random weights, for timing forward passes without a checkpoint.
import type { Engine } from '../src/engine/engine.js';
import { f32ToF16Bits } from '../src/engine/half.js';
import { RowChunkedTensor, Tensor, type DType } from '../src/engine/tensor.js';
import { ClipModel, type ClipConfig } from '../src/graph/clip/model.js';
import { rand } from './timing.js';

/** openai/clip-vit-large-patch14. */
export const CLIP_L: ClipConfig = {
  text: { hidden: 768, intermediate: 3072, layers: 12, heads: 12, eps: 1e-5, act: 'quick_gelu', vocab: 49408, maxPositions: 77, eosTokenId: 2 },
  vision: { hidden: 1024, intermediate: 4096, layers: 24, heads: 16, eps: 1e-5, act: 'quick_gelu', imageSize: 224, patchSize: 14, channels: 3 },
  projectionDim: 768,
};

/** A few-layer, narrow CLIP for smoke tests (--quick). */
export const CLIP_TINY: ClipConfig = {
  text: { hidden: 64, intermediate: 256, layers: 2, heads: 2, eps: 1e-5, act: 'quick_gelu', vocab: 1000, maxPositions: 77, eosTokenId: 2 },
  vision: { hidden: 64, intermediate: 256, layers: 2, heads: 2, eps: 1e-5, act: 'quick_gelu', imageSize: 56, patchSize: 14, channels: 3 },
  projectionDim: 32,
};

export type Tower = 'vision' | 'text';

const TOWER_PREFIX: Record<Tower, string[]> = {
  vision: ['vision_model.', 'visual_projection.'],
  text: ['text_model.', 'text_projection.'],
};

/**
 * Fills the params of one tower (and the host logit_scale) with small seeded random
 * values: LayerNorm gains near 1, everything else uniform(±0.02). Tables larger than
 * one storage binding (the 49408×768 f32 token embedding is 152 MB) become row chunks.
 */
export function randomizeTower(e: Engine, model: ClipModel, tower: Tower, dtype: DType = 'f32'): void {
  let seed = tower === 'vision' ? 1000 : 2000;
  for (const [name, p] of model.namedParams()) {
    if (p.host) {
      p.value = Float32Array.of(4.6);
      continue;
    }
    if (!TOWER_PREFIX[tower].some((prefix) => name.startsWith(prefix))) continue;
    const n = p.shape.reduce((a, b) => a * b, 1);
    const isNormGain = /(layer_?norm\d?|layrnorm)\.weight$/.test(name);
    const values = rand(n, seed++, 0.02);
    if (isNormGain) for (let i = 0; i < n; i++) values[i] += 1;
    p.value = weight(e, values, p.shape, dtype);
  }
  if (tower === 'vision') model.dtype = dtype;
}

/** Destroys the GPU buffers of one tower's weights (between benchmarks). */
export function freeTower(model: ClipModel, tower: Tower): void {
  for (const [name, p] of model.namedParams()) {
    if (!TOWER_PREFIX[tower].some((prefix) => name.startsWith(prefix))) continue;
    const v = p.value;
    if (v instanceof Tensor) v.buffer.destroy();
    else if (v instanceof RowChunkedTensor) for (const c of v.chunks) c.tensor.buffer.destroy();
    p.value = undefined;
  }
}

function weight(e: Engine, values: Float32Array, shape: readonly number[], dtype: DType): Tensor | RowChunkedTensor {
  const bytes = dtype === 'f16' ? new Uint8Array(Uint16Array.from(values, f32ToF16Bits).buffer) : new Uint8Array(values.buffer);
  if (bytes.byteLength <= e.maxBinding || shape.length < 2) return e.createWeight(bytes, shape, dtype);
  const rowBytes = bytes.byteLength / shape[0];
  const rowsPerChunk = Math.floor(e.maxBinding / rowBytes);
  const chunks = [];
  for (let first = 0; first < shape[0]; first += rowsPerChunk) {
    const rows = Math.min(rowsPerChunk, shape[0] - first);
    const part = bytes.subarray(first * rowBytes, (first + rows) * rowBytes);
    chunks.push({ firstRow: first, tensor: e.createWeight(part, [rows, ...shape.slice(1)], dtype) });
  }
  return new RowChunkedTensor(chunks, shape, dtype);
}

/** B prompts of L tokens: BOS, some random ids, EOS (the largest id), padding. */
export function randomTokens(B: number, L: number, vocab: number): Int32Array {
  const ids = new Int32Array(B * L);
  const r = rand(B * L, 77);
  for (let b = 0; b < B; b++) {
    const len = 5 + ((b * 7) % Math.max(1, L - 6));
    ids[b * L] = vocab - 2;
    for (let i = 1; i < L; i++) {
      ids[b * L + i] = i < len ? Math.floor(Math.abs(r[b * L + i]) * (vocab - 2)) : i === len ? vocab - 1 : 0;
    }
  }
  return ids;
}
