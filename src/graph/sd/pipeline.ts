// Stable Diffusion 1.x from a diffusers pipeline folder: tokenizer + text encoder,
// UNet (optionally steered by a ControlNet), UniPC, VAE — the denoising loop of
// diffusers' StableDiffusion(ControlNet)Pipeline with classifier-free guidance.
import fs from 'node:fs';
import path from 'node:path';
import { DrError } from '../../errors.js';
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { concat, expand, slice } from '../../engine/ops/copy.js';
import { linearCombination } from '../../engine/ops/linear_combination.js';
import { ClipTextModel } from '../clip/model.js';
import { ClipTokenizer } from '../clip/tokenizer.js';
import type { Precision } from '../module.js';
import type { ControlNetModel } from './controlnet.js';
import { UniPCScheduler, readUniPCConfig } from './unipc.js';
import { UNet2DConditionModel } from './unet.js';
import { AutoencoderKL } from './vae.js';

export interface Control {
  model: ControlNetModel;
  /** hint [1, 3, H, W] in [0, 1] (the ControlNet pipeline does not normalise it) */
  image: Tensor;
  scale: number;
}

export interface DenoiseOptions {
  /** Starting latent [1, 4, h, w] (already scaled by initNoiseSigma, which is 1 for UniPC). */
  latents: Tensor;
  /** [1, 77, D] each */
  promptEmbeds: Tensor;
  negativeEmbeds: Tensor;
  guidance: number;
  steps: number;
  control?: Control;
  /** img2img: start at this index of the schedule (diffusers' strength → t_start). */
  startIndex?: number;
  /** Called after each step with the new latent (progress bars, parity tests). */
  onStep?: (i: number, timestep: number, latent: Tensor) => void | Promise<void>;
}

export class StableDiffusion {
  private constructor(
    readonly tokenizer: ClipTokenizer,
    readonly textEncoder: ClipTextModel,
    readonly unet: UNet2DConditionModel,
    readonly vae: AutoencoderKL,
    readonly scheduler: UniPCScheduler,
  ) {}

  /** Loads `tokenizer/`, `text_encoder/`, `unet/`, `vae/`, `scheduler/` of a diffusers SD folder. */
  static load(e: Engine, dir: string, precision: Precision = 'auto'): StableDiffusion {
    for (const part of ['tokenizer', 'text_encoder', 'unet', 'vae', 'scheduler']) {
      if (!fs.existsSync(path.join(dir, part))) throw new DrError(`${dir}: missing ${part}/ (expected a diffusers Stable Diffusion folder)`);
    }
    return new StableDiffusion(
      ClipTokenizer.fromDir(path.join(dir, 'tokenizer')),
      ClipTextModel.load(e, path.join(dir, 'text_encoder'), precision),
      UNet2DConditionModel.load(e, path.join(dir, 'unet'), precision),
      AutoencoderKL.load(e, path.join(dir, 'vae'), precision),
      new UniPCScheduler(readUniPCConfig(path.join(dir, 'scheduler', 'scheduler_config.json'))),
    );
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

  /** The guided denoising loop; returns the final latent [1, 4, h, w]. */
  async denoise(e: Engine, o: DenoiseOptions): Promise<Tensor> {
    const { unet, scheduler } = this;
    scheduler.setTimesteps(o.steps);
    const start = o.startIndex ?? 0;
    scheduler.setBeginIndex(start);
    // [uncond, cond]: one UNet batch per step, as the pipelines run it.
    const context = e.keep(concat(e, [o.negativeEmbeds, o.promptEmbeds], 0));
    const hint = o.control && e.keep(expand(e, o.control.image, [2, ...o.control.image.shape.slice(1)]));
    let latent = o.latents;
    try {
      for (let i = start; i < scheduler.timesteps.length; i++) {
        const t = scheduler.timesteps[i];
        const next = e.tidy(() => {
          const input = concat(e, [latent, latent], 0); // [2, 4, h, w]
          const residuals = o.control && o.control.model.forward(e, input, t, context, hint!, o.control.scale);
          const noise = unet.forward(e, input, t, context, residuals); // [2, 4, h, w]
          const [uncond, cond] = [slice(e, noise, 0, 0, 1), slice(e, noise, 0, 1, 2)];
          const guided = linearCombination(e, [[1 - o.guidance, uncond], [o.guidance, cond]]);
          return scheduler.step(e, guided, t, latent);
        });
        if (latent !== o.latents) e.release(latent);
        latent = e.keep(next);
        await o.onStep?.(i, t, latent);
      }
    } finally {
      e.release(context);
      if (hint) e.release(hint);
    }
    return latent;
  }
}
