// Model folders of the real sizes with seeded random weights, for end-to-end runs of `dr` itself
// (bench/restore.ts): SD 1.5 as a diffusers folder (configs, tokenizer and scheduler from
// src/graph/sd/sd15), a tile ControlNet of SD 1.5's size and CLIP-L/14 (both towers). Written once
// under a base folder and kept (about 6.5 GB of f32), so later runs only load them.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClipModel, ClipTextModel, readClipConfig, textConfig } from '../src/graph/clip/model.js';
import type { Module } from '../src/graph/module.js';
import { ControlNetModel, readControlNetConfig } from '../src/graph/sd/controlnet.js';
import { readUNetConfig, UNet2DConditionModel } from '../src/graph/sd/unet.js';
import { AutoencoderKL, readVaeConfig } from '../src/graph/sd/vae.js';
import { ConfigFile } from '../src/graph/config.js';
import { writeSafetensorsLazy, type LazyTensorToWrite } from '../src/weights/safetensors.js';
import { CLIP_L } from './clip.js';
import { randomCheckpoint } from './random.js';
import { progress } from './timing.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SD15_CONFIGS = path.join(REPO, 'src/graph/sd/sd15');

const writeJson = (file: string, value: unknown): void => {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(value, null, 2));
};

function writeRandom(file: string, root: Module, extra: LazyTensorToWrite[] = []): void {
  progress(`  writing ${file}`);
  writeSafetensorsLazy(file, [...randomCheckpoint(root), ...extra]);
}

/** lllyasviel/control_v11f1e_sd15_tile's config: SD 1.5's UNet encoder with a hint embedding. */
function controlNetConfig(unet: Record<string, unknown>): Record<string, unknown> {
  return {
    ...unet, _class_name: 'ControlNetModel', conditioning_channels: 3, conditioning_embedding_out_channels: [16, 32, 96, 256],
    controlnet_conditioning_channel_order: 'rgb', global_pool_conditions: false,
  };
}

export interface Sd15Folders {
  sd: string;
  controlnet: string;
  clip: string;
}

/** The folders under `base`, written the first time (a `complete` marker says they are whole). */
export function sd15Folders(base: string): Sd15Folders {
  const out = { sd: path.join(base, 'sd'), controlnet: path.join(base, 'controlnet'), clip: path.join(base, 'clip') };
  if (fs.existsSync(path.join(base, 'complete'))) return out;
  progress(`building SD 1.5-sized random-weight models in ${base} (once, ~6.5 GB)`);
  fs.rmSync(base, { recursive: true, force: true });
  fs.mkdirSync(base, { recursive: true });
  fs.cpSync(SD15_CONFIGS, out.sd, { recursive: true });
  const { sd, controlnet, clip } = out;
  writeRandom(path.join(sd, 'unet/diffusion_pytorch_model.safetensors'), new UNet2DConditionModel(readUNetConfig(path.join(sd, 'unet'))));
  writeRandom(path.join(sd, 'vae/diffusion_pytorch_model.safetensors'), new AutoencoderKL(readVaeConfig(path.join(sd, 'vae'))));
  const text = ConfigFile.inDir(path.join(sd, 'text_encoder'));
  writeRandom(path.join(sd, 'text_encoder/model.safetensors'), new ClipTextModel(textConfig(text, text.file)));
  writeJson(path.join(controlnet, 'config.json'), controlNetConfig(JSON.parse(fs.readFileSync(path.join(sd, 'unet/config.json'), 'utf8'))));
  writeRandom(path.join(controlnet, 'diffusion_pytorch_model.safetensors'), new ControlNetModel(readControlNetConfig(controlnet)));
  const { text: t, vision: v } = CLIP_L;
  const tower = (c: typeof t | typeof v) => ({
    hidden_size: c.hidden, intermediate_size: c.intermediate, num_hidden_layers: c.layers, num_attention_heads: c.heads, layer_norm_eps: c.eps, hidden_act: c.act,
  });
  writeJson(path.join(clip, 'config.json'), {
    projection_dim: CLIP_L.projectionDim,
    text_config: { ...tower(t), vocab_size: t.vocab, max_position_embeddings: t.maxPositions, eos_token_id: t.eosTokenId },
    vision_config: { ...tower(v), image_size: v.imageSize, patch_size: v.patchSize, num_channels: v.channels },
  });
  writeJson(path.join(clip, 'preprocessor_config.json'), {
    crop_size: { height: v.imageSize, width: v.imageSize }, do_center_crop: true, do_convert_rgb: true, do_normalize: true, do_rescale: true, do_resize: true,
    image_mean: [0.48145466, 0.4578275, 0.40821073], image_std: [0.26862954, 0.26130258, 0.27577711], resample: 3,
    rescale_factor: 1 / 255, size: { shortest_edge: v.imageSize },
  });
  for (const f of fs.readdirSync(path.join(SD15_CONFIGS, 'tokenizer'))) fs.copyFileSync(path.join(SD15_CONFIGS, 'tokenizer', f), path.join(clip, f));
  // logit_scale is a host-side parameter, which randomCheckpoint leaves out: CLIP's trained value, ln 100.
  const logitScale: LazyTensorToWrite = { name: 'logit_scale', dtype: 'F32', shape: [], read: () => Float32Array.of(Math.log(100)) };
  writeRandom(path.join(clip, 'model.safetensors'), new ClipModel(readClipConfig(clip)), [logitScale]);
  fs.writeFileSync(path.join(base, 'complete'), '');
  return out;
}
