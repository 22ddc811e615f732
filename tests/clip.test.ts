// CLIP against transformers' CLIPModel outputs on the tiny fixture
// (../shared/fixtures/clip-tiny/io.safetensors), every tower output and every
// layer's hidden state.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import type { Tensor } from '../src/engine/tensor.js';
import { ClipModel } from '../src/graph/clip/model.js';
import { SafetensorsFile } from '../src/weights/safetensors.js';
import { absMax, expectClose, FIXTURES } from './helpers.js';

const DIR = path.join(FIXTURES, 'clip-tiny');
let e: Engine;
let io: SafetensorsFile;
let model: ClipModel;

beforeAll(async () => {
  e = await Engine.create();
  io = SafetensorsFile.open(path.join(DIR, 'io.safetensors'));
  model = ClipModel.load(e, DIR, 'f32');
});
afterAll(() => io.close());

/**
 * f32 against f32: differences come from summation order only. Compared with an
 * absolute tolerance of 1e-4 · max(1, absmax of the reference), the fixture
 * README's rule (absmax is what the errors scale with after layer norms).
 */
async function expectFixture(t: Tensor, name: string): Promise<void> {
  const ref = io.readF32(name);
  expect(t.shape).toEqual(io.tensors.get(name)!.shape);
  expectClose(await e.read(t), ref, 0, 1e-4 * Math.max(1, absMax(ref)));
}

describe('clip-tiny parity with transformers', () => {
  it('vision tower: hidden states, last hidden state, pooled, embeddings', async () => {
    const info = io.tensors.get('pixel_values')!;
    const pixels = e.upload(io.readF32('pixel_values'), info.shape);
    const out = model.encodeImage(e, pixels, true);
    for (const [i, h] of out.hiddenStates.entries()) await expectFixture(h, `vision_hidden_states.${i}`);
    await expectFixture(out.lastHiddenState, 'vision_last_hidden_state');
    await expectFixture(out.pooled, 'vision_pooler_output');
    await expectFixture(out.embeds, 'image_embeds');
  });

  it('text tower: hidden states, final layer norm, EOS pooling, embeddings', async () => {
    const info = io.tensors.get('input_ids')!;
    const out = model.encodeText(e, io.readInt32('input_ids'), info.shape[1], true);
    for (const [i, h] of out.hiddenStates.entries()) await expectFixture(h, `text_hidden_states.${i}`);
    await expectFixture(out.lastHiddenState, 'text_last_hidden_state');
    await expectFixture(out.pooled, 'text_pooler_output');
    await expectFixture(out.embeds, 'text_embeds');
  });

  it('logits: exp(logit_scale) · cosine of normalised embeddings', async () => {
    expect(Math.log(model.logitScale)).toBeCloseTo(io.readF32('logit_scale')[0], 6);
    const pixels = e.upload(io.readF32('pixel_values'), io.tensors.get('pixel_values')!.shape);
    const image = model.encodeImage(e, pixels);
    const text = model.encodeText(e, io.readInt32('input_ids'), 77);
    await expectFixture(model.logits(e, model.cosine(e, image.embeds, text.embeds)), 'logits_per_image');
    await expectFixture(model.logits(e, model.cosine(e, text.embeds, image.embeds)), 'logits_per_text');
  });
});
