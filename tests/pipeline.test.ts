// End to end against diffusers' StableDiffusionPipeline and
// StableDiffusionControlNetPipeline on sd-tiny: token ids, prompt embeddings,
// the latent after every guided UniPC step, and the decoded image.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import type { Tensor } from '../src/engine/tensor.js';
import { ControlNetModel } from '../src/graph/sd/controlnet.js';
import { StableDiffusion } from '../src/graph/sd/pipeline.js';
import { denoise } from '../src/graph/sd/denoise.js';
import { SafetensorsFile } from '../src/weights/safetensors.js';
import { absMax, expectClose, FIXTURES } from './helpers.js';

const SD = path.join(FIXTURES, 'sd-tiny');
let e: Engine;
let sd: StableDiffusion;
const files: SafetensorsFile[] = [];

beforeAll(async () => {
  e = await Engine.create();
  sd = StableDiffusion.load(e, SD, 'f32');
});
afterAll(() => files.forEach((f) => f.close()));

function open(name: string): SafetensorsFile {
  const f = SafetensorsFile.open(path.join(SD, 'io', name));
  files.push(f);
  return f;
}

/**
 * f32 vs f32 through a whole pipeline: 1e-4 · max(1, absmax). With random weights
 * guidance makes the latents grow (absmax in the hundreds), and every step feeds
 * the last, so the bound scales with the tensor as the README's rule says.
 */
async function expectFixture(io: SafetensorsFile, t: Tensor, name: string): Promise<void> {
  const ref = io.readF32(name);
  expectClose(await e.read(t), ref, 0, 1e-4 * Math.max(1, absMax(ref)));
}

/** The pipelines' np output: (x / 2 + 0.5) clamped to [0, 1], HWC. */
async function toHwc(image: Tensor): Promise<Float32Array> {
  const [, C, H, W] = image.shape;
  const x = await e.read(image);
  const out = new Float32Array(H * W * C);
  for (let c = 0; c < C; c++) for (let i = 0; i < H * W; i++) out[i * C + c] = Math.min(1, Math.max(0, x[c * H * W + i] / 2 + 0.5));
  return out;
}

async function runPipeline(io: SafetensorsFile, control?: ControlNetModel): Promise<void> {
  const meta = io.metadata;
  expect(Array.from(sd.tokenize(meta.prompt))).toEqual(Array.from(io.readInt32('prompt_input_ids')));
  expect(Array.from(sd.tokenize(meta.negative_prompt_effective))).toEqual(Array.from(io.readInt32('negative_prompt_input_ids')));
  const prompt = sd.encodePrompt(e, meta.prompt);
  const negative = sd.encodePrompt(e, meta.negative_prompt_effective);
  await expectFixture(io, prompt, 'prompt_embeds');
  await expectFixture(io, negative, 'negative_prompt_embeds');

  const steps = Number(meta.steps);
  let hint: Tensor | undefined;
  if (control) {
    const [H, W, C] = io.info('control_image_uint8_hwc').shape;
    const u8 = io.readBytes('control_image_uint8_hwc');
    const chw = new Float32Array(C * H * W);
    for (let c = 0; c < C; c++) for (let i = 0; i < H * W; i++) chw[c * H * W + i] = u8[i * C + c] / 255;
    hint = e.upload(chw, [1, C, H, W]);
  }
  const seen: number[] = [];
  const latent = await denoise(e, {
    unet: sd.unet,
    scheduler: sd.scheduler,
    latents: e.upload(io.readF32('initial_latents'), io.info('initial_latents').shape),
    context: prompt,
    uncondContext: negative,
    guidance: Number(meta.guidance),
    steps,
    control: control && { model: control, hintEmbedding: control.embedHint(e, hint!), scale: Number(meta.scale) },
    onStep: async (i, t, l) => {
      seen.push(t);
      expect(t).toBe(io.readInt32(`timestep.${i}`)[0]);
      await expectFixture(io, l, `latents_after_step.${i}`);
    },
  });
  expect(seen).toHaveLength(steps);
  const image = sd.vae.decode(e, latent);
  expectClose(await toHwc(image), io.readF32('image_float_hwc'), 0, 1e-4);
}

describe('sd-tiny pipelines, end to end', () => {
  it('txt2img: "a photo of a cat", 5 UniPC steps, guidance 7.5', async () => {
    await runPipeline(open('pipeline_txt2img.safetensors'));
  });

  it('ControlNet: "blurry photo" vs "low-light photo", 4 steps, guidance 5', async () => {
    await runPipeline(open('pipeline_controlnet.safetensors'), ControlNetModel.load(e, path.join(SD, 'controlnet'), 'f32'));
  });
});
