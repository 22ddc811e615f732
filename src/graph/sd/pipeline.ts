// Stable Diffusion 1.x from a diffusers pipeline folder: tokenizer + text encoder,
// UNet, UniPC, VAE. The sampling loop itself is denoise.ts.
import fs from 'node:fs';
import path from 'node:path';
import { DrError } from '../../errors.js';
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { ClipTextModel } from '../clip/model.js';
import { ClipTokenizer } from '../clip/tokenizer.js';
import type { Precision } from '../module.js';
import { SdBase } from './single_file.js';
import { UniPCScheduler, readUniPCConfig } from './unipc.js';
import { UNet2DConditionModel } from './unet.js';
import { AutoencoderKL } from './vae.js';

export class StableDiffusion {
  private constructor(
    readonly tokenizer: ClipTokenizer,
    readonly textEncoder: ClipTextModel,
    readonly unet: UNet2DConditionModel,
    readonly vae: AutoencoderKL,
    readonly scheduler: UniPCScheduler,
  ) {}

  /**
   * Loads `tokenizer/`, `text_encoder/`, `unet/`, `vae/`, `scheduler/` of a diffusers SD folder,
   * or a single-file checkpoint (original layout) whose configs, tokenizer and scheduler come
   * from `configDir` (SD 1.5's by default).
   */
  static load(e: Engine, dir: string, precision: Precision = 'auto', configDir?: string): StableDiffusion {
    const base = SdBase.open(dir, configDir);
    try {
      for (const part of ['tokenizer', 'text_encoder', 'unet', 'vae', 'scheduler']) {
        if (!fs.existsSync(path.join(base.root, part))) throw new DrError(`${base.root}: missing ${part}/ (expected a diffusers Stable Diffusion folder)`);
      }
      return new StableDiffusion(
        ClipTokenizer.fromDir(base.dir('tokenizer')),
        ClipTextModel.load(e, base.dir('text_encoder'), precision, base.weights('text_encoder')),
        UNet2DConditionModel.load(e, base.dir('unet'), precision, base.weights('unet')),
        AutoencoderKL.load(e, base.dir('vae'), precision, base.weights('vae')),
        new UniPCScheduler(readUniPCConfig(path.join(base.dir('scheduler'), 'scheduler_config.json'))),
      );
    } finally {
      base.close();
    }
  }

  /** Token ids as the pipelines make them: padded to 77 with the end token. */
  tokenize(prompt: string): Int32Array {
    return this.tokenizer.tokenize(prompt);
  }

  /** prompt → text encoder last_hidden_state [1, 77, D] (no attention mask, like the pipelines). */
  encodePrompt(e: Engine, prompt: string): Tensor {
    const ids = this.tokenize(prompt);
    return this.textEncoder.encode(e, ids, ids.length);
  }
}
