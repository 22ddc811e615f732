// A Diff-Restorer checkpoint folder (model_index.json, prompt_processor/,
// control/, decoder/) over its base models (SD 1.5, CLIP ViT-L/14), and the
// trained-mode restoration of one image.
import fs from 'node:fs';
import path from 'node:path';
import { DrError } from '../../errors.js';
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { ClipVisionModelWithProjection } from '../clip/model.js';
import { clipPixelValues, readClipImageConfig, type ClipImageConfig } from '../clip/preprocess.js';
import type { RgbImage } from '../../image/load.js';
import { ConfigFile } from '../config.js';
import { seededNormal } from '../init.js';
import { loadFromCheckpoint, type Precision } from '../module.js';
import { scale } from '../../engine/ops/elementwise.js';
import { denoise } from '../sd/denoise.js';
import { PhaseTimer } from '../phase_timer.js';
import { decodeTiled, encodeTiled, fitBinding, type TileSize } from '../sd/vae_tiles.js';
import { crop } from '../../engine/ops/eval/tiles.js';
import { SdBase } from '../sd/single_file.js';
import { UniPCScheduler, readUniPCConfig } from '../sd/unipc.js';
import { UNet2DConditionModel } from '../sd/unet.js';
import { AutoencoderKL } from '../sd/vae.js';
import { DiffRestorerControl } from './control.js';
import { DegradationAwareDecoder } from './decoder.js';
import { PromptProcessor, readPromptProcessorConfig } from './prompt_processor.js';

export interface DiffRestorerParts {
  sd: string;
  clip: string;
}

/**
 * A recorded base model: a relative path is relative to the checkpoint folder (dr init writes
 * them so, starting ./ or ../); a repo id or an absolute path is returned as it is. A relative
 * path found only from the working folder is taken from there (checkpoints written by hand or
 * by other tools, such as shared/fixtures/train/dr-random, record bases relative to the project).
 */
function basePath(dir: string, spec: string): string {
  if (path.isAbsolute(spec)) return spec;
  const local = path.resolve(dir, spec);
  if (!fs.existsSync(local) && fs.existsSync(spec)) return path.resolve(spec);
  return /^\.\.?\//.test(spec) || fs.existsSync(local) ? local : spec;
}

/** Reads model_index.json: the base model specs (folders or repo ids) it was made from. */
export function readModelIndex(dir: string): DiffRestorerParts {
  const c = ConfigFile.inDir(dir, 'model_index.json');
  if (c.str('_class_name', '') !== 'DiffRestorerPipeline') throw new DrError(`${c.file}: not a Diff-Restorer checkpoint (_class_name must be DiffRestorerPipeline)`);
  for (const part of ['prompt_processor', 'control', 'decoder']) {
    if (!fs.existsSync(path.join(dir, part))) throw new DrError(`${dir}: missing ${part}/ (a Diff-Restorer checkpoint has prompt_processor/, control/, decoder/)`);
  }
  const base = c.section('base');
  return { sd: basePath(dir, base.str('sd')), clip: basePath(dir, base.str('clip')) };
}

export interface RestoreOptions {
  steps: number;
  seed: number;
  guidance: number;
  /** Latent tile side and overlap for images larger than one tile (denoising and decoding). */
  tile?: TileSize;
  onStep?: (i: number, total: number) => void;
}

export interface Restored {
  /** [1, 3, H, W] in about [-1, 1], at the padded size */
  image: Tensor;
  /** The prompt processor's degradation-type probabilities, in config order. */
  degradations: { name: string; probability: number }[];
  /** Seconds per phase: clip (with the prompt processor), control (hint), denoise (UNet + control network, all steps), decode. */
  seconds: Record<string, number>;
  /** The process's CPU seconds in each phase (all threads; PhaseTimer). */
  cpuSeconds: Record<string, number>;
}

export class DiffRestorer {
  private constructor(
    readonly clip: ClipVisionModelWithProjection,
    readonly clipImage: ClipImageConfig,
    readonly promptProcessor: PromptProcessor,
    readonly control: DiffRestorerControl,
    readonly decoder: DegradationAwareDecoder,
    readonly unet: UNet2DConditionModel,
    readonly vae: AutoencoderKL,
    readonly scheduler: UniPCScheduler,
  ) {}

  /** `sd` and `clip` are resolved folders (from model_index.json or overridden by the user). */
  static load(e: Engine, dir: string, bases: DiffRestorerParts, precision: Precision, onPart?: (name: string) => void): DiffRestorer {
    const step = <T>(name: string, f: () => T): T => {
      onPart?.(name);
      return f();
    };
    const ppDir = path.join(dir, 'prompt_processor');
    const pp = step('prompt processor', () => {
      const m = new PromptProcessor(readPromptProcessorConfig(ppDir));
      loadFromCheckpoint(e, m, ppDir, { precision });
      return m;
    });
    const sd = SdBase.open(bases.sd);
    try {
      return new DiffRestorer(
        step('CLIP', () => ClipVisionModelWithProjection.load(e, bases.clip, precision)),
        readClipImageConfig(bases.clip),
        pp,
        step('control network', () => DiffRestorerControl.load(e, path.join(dir, 'control'), precision)),
        step('decoder', () => DegradationAwareDecoder.load(e, path.join(dir, 'decoder'), precision)),
        step('UNet', () => UNet2DConditionModel.load(e, sd.dir('unet'), precision, sd.weights('unet'))),
        step('VAE', () => AutoencoderKL.load(e, sd.dir('vae'), precision, sd.weights('vae'))),
        new UniPCScheduler(readUniPCConfig(path.join(sd.dir('scheduler'), 'scheduler_config.json'))),
      );
    } finally {
      sd.close();
    }
  }

  /**
   * lq: [1, 3, H, W] in [0, 1] with H, W multiples of 8 (pad first); rgb: the
   * unpadded 8-bit image for CLIP's own preprocessing.
   */
  async restore(e: Engine, lq: Tensor, rgb: RgbImage, o: RestoreOptions): Promise<Restored> {
    const [, , H, W] = lq.shape;
    const timer = new PhaseTimer(e);
    const pixels = e.upload(clipPixelValues(rgb, this.clipImage), [1, 3, this.clipImage.cropHeight, this.clipImage.cropWidth]);
    const { semantic, degradation, probs } = e.tidy(() => {
      const embeds = this.clip.encodeImage(e, pixels).embeds; // P_CLIP [1, E]
      const p = this.promptProcessor.forward(e, embeds);
      return { ...p, probs: this.promptProcessor.classify(e, p.degradation) };
    });
    const probabilities = await e.read(probs);
    const names = this.promptProcessor.cfg.degradations;
    for (const t of [pixels, probs]) e.release(t);
    await timer.end('clip');

    // c [1, C0, H/8, W/8]: the control encoder runs at full resolution, so it is tiled like the VAE.
    // The control encoder, VAE and decoder run at full resolution: the VAE's widest level bounds their tiles.
    const fullRes = fitBinding(e, o.tile, this.vae.downFactor, Math.max(...this.vae.config.blockOut));
    const hint = e.keep(e.tidy(() => encodeTiled(e, lq, this.vae.downFactor, this.unet.config.blockOut[0], fullRes,
      (x) => this.control.network.embedHint(e, x, degradation))));
    await timer.end('control');
    const noise = e.upload(seededNormal(4 * (H / 8) * (W / 8), o.seed), [1, 4, H / 8, W / 8]);
    // The paper samples without guidance; --guidance > 1 adds a zero-context branch.
    const uncond = o.guidance !== 1 ? e.keep(e.zeros(semantic.shape, semantic.dtype)) : undefined;
    let latent: Tensor;
    try {
      latent = await denoise(e, {
        unet: this.unet, scheduler: this.scheduler, latents: noise, context: semantic, uncondContext: uncond,
        guidance: o.guidance, steps: o.steps, tile: o.tile,
        control: { model: this.control.network, hintEmbedding: hint, scale: this.control.scale },
        onStep: async (i) => {
          await e.sync();
          o.onStep?.(i, o.steps);
        },
      });
    } finally {
      for (const t of [hint, noise, semantic, uncond]) if (t) e.release(t);
    }
    await timer.end('denoise');
    const image = e.tidy(() => decodeTiled(e, latent, this.vae.downFactor, 3, fullRes, (z, window) => {
      const { levels } = this.vae.encodeMoments(e, scaleTo11(e, crop(e, lq, window))); // z_lq skips of I_LQ
      return this.decoder.decode(e, z, levels, degradation);
    }));
    for (const t of [latent, degradation]) e.release(t);
    await timer.end('decode');
    return { image, degradations: names.map((name, i) => ({ name, probability: probabilities[i] })), seconds: timer.seconds, cpuSeconds: timer.cpuSeconds };
  }
}

/** [0, 1] → [-1, 1], the VAE's input range. */
export function scaleTo11(e: Engine, x: Tensor): Tensor {
  return scale(e, x, 2, -1);
}
