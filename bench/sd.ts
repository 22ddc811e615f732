// Stable Diffusion 1.5 UNet step and VAE decode: the sd-tiny fixture (real
// checkpoint loading) and SD 1.5-sized models with seeded random weights, built
// from the real diffusers configs below through the same config readers.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Engine } from '../src/engine/engine.js';
import type { DType } from '../src/engine/tensor.js';
import type { Precision } from '../src/graph/module.js';
import { AutoencoderKL, readVaeConfig } from '../src/graph/sd/vae.js';
import { UNet2DConditionModel, readUNetConfig } from '../src/graph/sd/unet.js';
import { benchModel, paramCount, type ModelResult } from './model.js';
import { freeParams, randomizeParams } from './random.js';
import { rand } from './timing.js';

/** runwayml/stable-diffusion-v1-5 unet/config.json. */
export const SD15_UNET_CONFIG = {
  _class_name: 'UNet2DConditionModel',
  _diffusers_version: '0.6.0',
  act_fn: 'silu',
  attention_head_dim: 8,
  block_out_channels: [320, 640, 1280, 1280],
  center_input_sample: false,
  cross_attention_dim: 768,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  downsample_padding: 1,
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 4,
  layers_per_block: 2,
  mid_block_scale_factor: 1,
  norm_eps: 1e-5,
  norm_num_groups: 32,
  out_channels: 4,
  sample_size: 64,
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
};

/** runwayml/stable-diffusion-v1-5 vae/config.json. */
export const SD15_VAE_CONFIG = {
  _class_name: 'AutoencoderKL',
  _diffusers_version: '0.6.0',
  act_fn: 'silu',
  block_out_channels: [128, 256, 512, 512],
  down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'],
  in_channels: 3,
  latent_channels: 4,
  layers_per_block: 2,
  norm_num_groups: 32,
  out_channels: 3,
  sample_size: 512,
  up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
};

export const SD_TINY_DIR = path.resolve(import.meta.dirname, '../../../shared/fixtures/sd-tiny');

/** Writes a config.json into a temporary folder and reads it back with `read`. */
export function viaConfigFile<T>(config: object, read: (dir: string) => T): T {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dr-bench-'));
  try {
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
    return read(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface SdCase {
  part: 'unet' | 'vae';
  model: 'tiny' | 'sd15';
  dtype: DType;
  /** Latent side (the image is 8× that). */
  latent: number;
  batch: number;
}

export const sdCaseId = (c: SdCase): string => `${c.part}:${c.model}:${c.dtype}:${c.latent}:${c.batch}`;

export function parseSdCase(id: string): SdCase {
  const [part, model, dtype, latent, batch] = id.split(':');
  return { part: part as SdCase['part'], model: model as SdCase['model'], dtype: dtype as DType, latent: Number(latent), batch: Number(batch) };
}

export interface SdOptions {
  quick: boolean;
  f32: boolean;
  f16: boolean;
  /** Latent sides for the SD 1.5-sized models. */
  latents: number[];
  batch: number;
}

export function sdCases(part: SdCase['part'], o: SdOptions): SdCase[] {
  const dtypes: DType[] = [...(o.f32 ? ['f32' as DType] : []), ...(o.f16 ? ['f16' as DType] : [])];
  const cases: SdCase[] = [];
  for (const dtype of dtypes) {
    for (const latent of o.quick ? [8] : [8, 32]) cases.push({ part, model: 'tiny', dtype, latent, batch: o.batch });
    if (!o.quick) for (const latent of o.latents) cases.push({ part, model: 'sd15', dtype, latent, batch: o.batch });
  }
  return cases;
}

const isDecoder = (name: string): boolean => name.startsWith('decoder.') || name.startsWith('post_quant_conv.');

/** One UNet step or VAE decode on a fresh engine (its pool's peak is this model's). */
export async function benchSdCase(c: SdCase): Promise<ModelResult> {
  const e = await Engine.create();
  const name = c.model === 'tiny' ? 'sd-tiny (fixture)' : 'SD 1.5 (random weights)';
  const heavy = c.model === 'sd15';
  const { batch: B, latent: h } = c;
  const t0 = performance.now();
  if (c.part === 'unet') {
    let unet: UNet2DConditionModel;
    if (c.model === 'tiny') unet = UNet2DConditionModel.load(e, path.join(SD_TINY_DIR, 'unet'), c.dtype as Precision);
    else {
      unet = new UNet2DConditionModel(viaConfigFile(SD15_UNET_CONFIG, readUNetConfig));
      randomizeParams(e, unet, c.dtype);
    }
    const loadSeconds = (performance.now() - t0) / 1e3;
    const C = unet.config.inChannels;
    const Cc = unet.config.crossAttentionDim;
    const sample = e.keep(e.upload(rand(B * C * h * h, 11), [B, C, h, h]));
    const context = e.keep(e.upload(rand(B * 77 * Cc, 12), [B, 77, Cc]));
    const r = await benchModel(e, { section: 'unet', model: name, what: 'UNet step', dtype: c.dtype, input: `latent ${B}×${C}×${h}×${h} (${8 * h}² px), context ${B}×77×${Cc}` },
      paramCount(unet), loadSeconds, () => unet.forward(e, sample, 500, context), heavy ? 0 : 3);
    freeParams(unet);
    return r;
  }
  let vae: AutoencoderKL;
  if (c.model === 'tiny') vae = AutoencoderKL.load(e, path.join(SD_TINY_DIR, 'vae'), c.dtype as Precision);
  else {
    vae = new AutoencoderKL(viaConfigFile(SD15_VAE_CONFIG, readVaeConfig));
    // The encoder's conv_in too: the VAE takes its activation dtype from it.
    randomizeParams(e, vae, c.dtype, (n) => isDecoder(n) || n.startsWith('encoder.conv_in.'));
  }
  const loadSeconds = (performance.now() - t0) / 1e3;
  const C = vae.config.latentChannels;
  const f = vae.downFactor;
  const latent = e.keep(e.upload(rand(B * C * h * h, 13), [B, C, h, h]));
  const r = await benchModel(e, { section: 'vae', model: name, what: 'VAE decode', dtype: c.dtype, input: `latent ${B}×${C}×${h}×${h} → ${B}×3×${f * h}×${f * h}` },
    paramCount(vae, isDecoder), loadSeconds, () => vae.decode(e, latent), heavy ? 0 : 3);
  freeParams(vae);
  return r;
}
