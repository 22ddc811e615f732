// CLIP forward passes: the tiny fixture (real checkpoint loading) and a CLIP-L/14
// vision tower with seeded random weights (real shapes, no download).
import path from 'node:path';
import { Engine } from '../src/engine/engine.js';
import type { DType } from '../src/engine/tensor.js';
import { ClipModel, type ClipConfig } from '../src/graph/clip/model.js';
import type { Precision } from '../src/graph/module.js';
import { benchModel, paramCount, type ModelResult } from './model.js';
import { freeParams, randomizeParams } from './random.js';
import { rand } from './timing.js';

/** openai/clip-vit-large-patch14 (its config.json, as ClipConfig). */
export const CLIP_L: ClipConfig = {
  text: { hidden: 768, intermediate: 3072, layers: 12, heads: 12, eps: 1e-5, act: 'quick_gelu', vocab: 49408, maxPositions: 77, eosTokenId: 2 },
  vision: { hidden: 1024, intermediate: 4096, layers: 24, heads: 16, eps: 1e-5, act: 'quick_gelu', imageSize: 224, patchSize: 14, channels: 3 },
  projectionDim: 768,
};

export const CLIP_TINY_DIR = path.resolve(import.meta.dirname, '../../../shared/fixtures/clip-tiny');

const isVision = (name: string): boolean => name.startsWith('vision_model.') || name.startsWith('visual_projection.');
const isText = (name: string): boolean => name.startsWith('text_model.') || name.startsWith('text_projection.');

export interface ClipCase {
  model: 'tiny' | 'large';
  tower: 'vision' | 'text';
  dtype: DType;
  batch: number;
}

export function clipCases(o: { quick: boolean; text: boolean; f16: boolean; f32: boolean }): ClipCase[] {
  const dtypes: DType[] = [...(o.f32 ? ['f32' as DType] : []), ...(o.f16 ? ['f16' as DType] : [])];
  const cases: ClipCase[] = [];
  for (const dtype of dtypes) {
    cases.push({ model: 'tiny', tower: 'vision', dtype, batch: 1 }, { model: 'tiny', tower: 'text', dtype, batch: 8 });
    if (!o.quick) cases.push({ model: 'large', tower: 'vision', dtype, batch: 1 });
    if (!o.quick && o.text) cases.push({ model: 'large', tower: 'text', dtype, batch: 8 });
  }
  return cases;
}

export const clipCaseId = (c: ClipCase): string => `clip:${c.model}:${c.tower}:${c.dtype}:${c.batch}`;

export function parseClipCase(id: string): ClipCase {
  const [, model, tower, dtype, batch] = id.split(':');
  return { model: model as ClipCase['model'], tower: tower as ClipCase['tower'], dtype: dtype as DType, batch: Number(batch) };
}

/** One CLIP case on a fresh engine (its pool's peak is this forward's). */
export async function benchClipCase(c: ClipCase): Promise<ModelResult> {
  const e = await Engine.create();
  const want = c.tower === 'vision' ? isVision : isText;
  const t0 = performance.now();
  let model: ClipModel;
  if (c.model === 'tiny') {
    model = ClipModel.load(e, CLIP_TINY_DIR, c.dtype as Precision);
  } else {
    model = new ClipModel(CLIP_L);
    randomizeParams(e, model, c.dtype, want);
    model.dtype = c.dtype;
  }
  const loadSeconds = (performance.now() - t0) / 1e3;
  const cfg = model.config;
  const name = c.model === 'tiny' ? 'clip-tiny (fixture)' : 'CLIP-L/14 (random weights)';
  let result: ModelResult;
  if (c.tower === 'vision') {
    const S = cfg.vision.imageSize;
    const pixels = e.keep(e.upload(rand(c.batch * 3 * S * S, 6), [c.batch, 3, S, S]));
    result = await benchModel(e, { section: 'clip', model: name, what: 'vision forward', dtype: c.dtype, input: `pixels ${c.batch}×3×${S}×${S}` },
      paramCount(model, isVision), loadSeconds, () => model.encodeImage(e, pixels), c.model === 'tiny' ? 3 : 0);
  } else {
    const L = cfg.text.maxPositions;
    const ids = randomTokens(c.batch, L, cfg.text.vocab);
    result = await benchModel(e, { section: 'clip', model: name, what: 'text forward', dtype: c.dtype, input: `tokens ${c.batch}×${L}` },
      paramCount(model, isText), loadSeconds, () => model.encodeText(e, ids, L), c.model === 'tiny' ? 3 : 0);
  }
  freeParams(model);
  return result;
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
