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
import { SingleFileSd } from './single_file.js';
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
    const single = fs.statSync(dir, { throwIfNoEntry: false })?.isFile() ? SingleFileSd.open(dir, configDir) : undefined;
    const root = single?.configDir ?? dir;
    try {
      for (const part of ['tokenizer', 'text_encoder', 'unet', 'vae', 'scheduler']) {
        if (!fs.existsSync(path.join(root, part))) throw new DrError(`${root}: missing ${part}/ (expected a diffusers Stable Diffusion folder)`);
      }
      return new StableDiffusion(
        ClipTokenizer.fromDir(path.join(root, 'tokenizer')),
        ClipTextModel.load(e, path.join(root, 'text_encoder'), precision, single?.component('text_encoder')),
        UNet2DConditionModel.load(e, path.join(root, 'unet'), precision, single?.component('unet')),
        AutoencoderKL.load(e, path.join(root, 'vae'), precision, single?.component('vae')),
        new UniPCScheduler(readUniPCConfig(path.join(root, 'scheduler', 'scheduler_config.json'))),
      );
    } finally {
      single?.close();
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
