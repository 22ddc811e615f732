// Diff-Restorer modules on a checkpoint made by `dr init` from sd-tiny + clip-tiny.
// A fresh checkpoint must restore exactly like its base models: the zero
// convolutions make the control residuals zero (UNet unchanged) and the DRBs start
// as the identity (decoder = SD VAE decoder). These are exact properties (x + 0 = x),
// so they are asserted bit for bit.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import { DiffRestorerControl } from '../src/graph/diffrestorer/control.js';
import { DegradationAwareDecoder } from '../src/graph/diffrestorer/decoder.js';
import { initDiffRestorer } from '../src/graph/diffrestorer/init.js';
import { readModelIndex } from '../src/graph/diffrestorer/model.js';
import { PromptProcessor, readPromptProcessorConfig } from '../src/graph/diffrestorer/prompt_processor.js';
import { loadFromCheckpoint } from '../src/graph/module.js';
import { UNet2DConditionModel } from '../src/graph/sd/unet.js';
import { AutoencoderKL } from '../src/graph/sd/vae.js';
import { DrError } from '../src/errors.js';
import { rand, FIXTURES } from './helpers.js';

const SD = path.join(FIXTURES, 'sd-tiny');
const CLIP = path.join(FIXTURES, 'clip-tiny');
const CHANNELS = [32, 32, 32, 32]; // the smallest widths the 32-group norms allow
let e: Engine;
let tmp: string;
let dir: string;

const init = (out: string, seed = 0) => initDiffRestorer({ sd: SD, clip: CLIP, out, seed, controlChannels: CHANNELS });
const bytes = (d: string, f: string) => fs.readFileSync(path.join(d, f));

beforeAll(async () => {
  e = await Engine.create();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-init-'));
  dir = path.join(tmp, 'fresh');
  await init(dir);
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('dr init checkpoint', () => {
  it('has the design layout and records its base models', () => {
    expect(readModelIndex(dir)).toEqual({ sd: SD, clip: CLIP });
    for (const f of ['prompt_processor/config.json', 'prompt_processor/model.safetensors', 'control/config.json',
      'control/model.safetensors', 'decoder/config.json', 'decoder/model.safetensors']) {
      expect(fs.existsSync(path.join(dir, f)), f).toBe(true);
    }
    expect(fs.readdirSync(tmp)).toEqual(['fresh']); // no temporary folder left behind
  });

  it('is reproducible from its seed, and the seed matters', async () => {
    const again = path.join(tmp, 'again');
    const other = path.join(tmp, 'other');
    await init(again, 0);
    await init(other, 1);
    for (const f of ['prompt_processor/model.safetensors', 'control/model.safetensors', 'decoder/model.safetensors']) {
      expect(bytes(again, f).equals(bytes(dir, f)), f).toBe(true);
    }
    expect(bytes(other, 'prompt_processor/model.safetensors').equals(bytes(dir, 'prompt_processor/model.safetensors'))).toBe(false);
  });

  it('refuses a non-empty output folder', async () => {
    await expect(init(dir)).rejects.toThrow(DrError);
    await expect(init(dir)).rejects.toThrow(/exists and is not empty/);
  });
});

describe('fresh Diff-Restorer modules', () => {
  it('prompt processor: P_S [B, 4 tokens, cross-attention dim] with distinct tokens, P_D, class probabilities summing to 1', async () => {
    const ppDir = path.join(dir, 'prompt_processor');
    const pp = new PromptProcessor(readPromptProcessorConfig(ppDir));
    loadFromCheckpoint(e, pp, ppDir, { precision: 'f32' });
    const clipEmbeds = e.upload(rand(2 * pp.cfg.clipDim, 3), [2, pp.cfg.clipDim]);
    const { semantic, degradation } = pp.forward(e, clipEmbeds);
    expect(semantic.shape).toEqual([2, 4, 32]); // dr init's default: keys that differ, so attention has something to choose
    const ps = await e.read(semantic);
    for (let k = 1; k < 4; k++) expect(ps.slice(k * 32, (k + 1) * 32)).not.toEqual(ps.slice(0, 32));
    expect(degradation.shape).toEqual([2, pp.cfg.degradationDim]);
    const probs = await e.read(pp.classify(e, degradation));
    const n = pp.cfg.degradations.length;
    for (let b = 0; b < 2; b++) expect(probs.slice(b * n, (b + 1) * n).reduce((s, p) => s + p, 0)).toBeCloseTo(1, 5);
  });

  it('control network: zero residuals, so the UNet output is unchanged; the control decoder maps back to image size', async () => {
    const control = DiffRestorerControl.load(e, path.join(dir, 'control'), 'f32');
    const unet = UNet2DConditionModel.load(e, path.join(SD, 'unet'), 'f32');
    const image = e.upload(rand(3 * 64 * 128, 5), [1, 3, 64, 128]); // [1, 3, H, W]
    const pd = e.upload(rand(256, 6), [1, 256]);
    const sample = e.upload(rand(4 * 8 * 16, 7), [1, 4, 8, 16]);
    const ctx = e.upload(rand(2 * 32, 8), [1, 2, 32]);
    const hint = control.network.embedHint(e, image, pd); // [1, C0, 8, 16]
    expect(hint.shape).toEqual([1, 32, 8, 16]);
    const residuals = control.network.forward(e, sample, 500, ctx, hint, control.scale);
    for (const r of [...residuals.down, residuals.mid]) expect(Math.max(...(await e.read(r)).map(Math.abs))).toBe(0);
    const plain = await e.read(unet.forward(e, sample, 500, ctx));
    const controlled = await e.read(unet.forward(e, sample, 500, ctx, residuals));
    expect(controlled).toEqual(plain);
    expect(control.decoder.forward(e, control.encoder.features(e, image, pd)).shape).toEqual([1, 3, 64, 128]);
  });

  it('degradation-aware decoder: the DRBs start as the identity, so it decodes exactly as the SD VAE', async () => {
    const decoder = DegradationAwareDecoder.load(e, path.join(dir, 'decoder'), 'f32');
    const vae = AutoencoderKL.load(e, path.join(SD, 'vae'), 'f32');
    const lq = e.upload(rand(3 * 64 * 48, 9), [1, 3, 64, 48]);
    const { levels } = vae.encodeMoments(e, lq);
    const latent = e.upload(rand(4 * 8 * 6, 10), [1, 4, 8, 6]);
    const pd = e.upload(rand(256, 11), [1, 256]);
    const ours = await e.read(decoder.decode(e, latent, levels, pd));
    expect(ours).toEqual(await e.read(vae.decode(e, latent)));
    expect(decoder.drbs?.items.length).toBe(3);
  });
});
