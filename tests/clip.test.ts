// CLIP against transformers' CLIPModel outputs on the tiny fixture
// (../shared/fixtures/clip-tiny/io.safetensors), every tower output and every
// layer's hidden state.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import type { Tensor } from '../src/engine/tensor.js';
import { ClipModel, ClipVisionModelWithProjection } from '../src/graph/clip/model.js';
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

  it('the vision-only model reads the same folder without the text tower and embeds images identically', async () => {
    const info = io.tensors.get('pixel_values')!;
    const pixels = e.upload(io.readF32('pixel_values'), info.shape);
    const vision = ClipVisionModelWithProjection.load(e, DIR, 'f32');
    expect([...vision.namedParams()].some(([name]) => name.startsWith('text_model.'))).toBe(false);
    expect(await e.read(vision.encodeImage(e, pixels).embeds)).toEqual(await e.read(model.encodeImage(e, pixels).embeds));
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

describe('clip-tiny under other memory layouts and precisions', () => {
  it('a token embedding split into row chunks (binding limit 1 MiB) gives the same text outputs', async () => {
    const small = await Engine.create({ maxBindingBytes: 1 << 20 });
    const chunked = ClipModel.load(small, DIR, 'f32');
    const table = chunked.text_model.embeddings.token_embedding.weight.table;
    expect('chunks' in table && table.chunks.length).toBe(7); // 49408×32 f32 = 6.03 MiB
    const out = chunked.encodeText(small, io.readInt32('input_ids'), 77);
    const ref = io.readF32('text_embeds');
    expectClose(await small.read(out.embeds), ref, 0, 1e-4 * Math.max(1, absMax(ref)));
  });

  it('f16 weights and activations stay within f16 rounding of the f32 reference', async () => {
    if (!e.gpu.hasF16) return; // adapter without shader-f16: f16 is never chosen
    const half = ClipModel.load(e, DIR, 'f16');
    expect(half.dtype).toBe('f16');
    const pixels = e.upload(io.readF32('pixel_values'), io.tensors.get('pixel_values')!.shape);
    const image = half.encodeImage(e, pixels);
    const text = half.encodeText(e, io.readInt32('input_ids'), 77);
    // f16 keeps 11 significant bits (relative step 4.9e-4). Measured on lavapipe:
    // worst error 7.2e-4 (image_embeds) to 1.2e-3 (text states) of the tensor's
    // absmax, against 5e-7 for the f32 path. Bound: 5e-3 of absmax, ~10 f16 steps.
    for (const [t, name] of [[image.embeds, 'image_embeds'], [text.embeds, 'text_embeds'], [text.lastHiddenState, 'text_last_hidden_state']] as const) {
      const ref = io.readF32(name);
      expectClose(await e.read(t), ref, 0, 5e-3 * absMax(ref));
    }
  });
});
