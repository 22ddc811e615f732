// Training-free restoration on public weights, built on the paper's own
// observations: CLIP (Eq. 1) finds which degradations are present, and removing
// their words from the prompt removes them (Fig. 2). SD 1.5 + a tile ControlNet
// conditioned on the input denoise from the input's noised latent (img2img), with
// classifier-free guidance toward a clean photo and away from the detected
// degradations.
import type { Engine } from '../engine/engine.js';
import type { Tensor } from '../engine/tensor.js';
import { ClipModel } from './clip/model.js';
import { clipPixelValues, readClipImageConfig, type ClipImageConfig } from './clip/preprocess.js';
import { DEGRADATION_TEXTS, DegradationProbe } from './clip/probe.js';
import { ClipTokenizer } from './clip/tokenizer.js';
import type { RgbImage } from '../image/load.js';
import { seededNormal } from './init.js';
import type { Precision } from './module.js';
import { ControlNetModel } from './sd/controlnet.js';
import { denoise } from './sd/denoise.js';
import { PhaseTimer } from './phase_timer.js';
import { StableDiffusion } from './sd/pipeline.js';
import { decodeTiled, encodeTiled, fitBinding, type TileSize } from './sd/vae_tiles.js';
import { scale } from '../engine/ops/elementwise.js';

export const CLEAN_TEXT = 'a clean, sharp, high-quality photo';

/** The positive prompt: the clean-photo text, then the user's words. */
export const positivePrompt = (prompt?: string): string => (prompt ? `${CLEAN_TEXT}, ${prompt}` : CLEAN_TEXT);

export interface TrainingFreeOptions {
  steps: number;
  seed: number;
  guidance: number;
  /** Fraction of the schedule re-run from the noised input latent (diffusers' img2img strength). */
  strength: number;
  /** Extra words for the positive prompt (e.g. what the photo shows). */
  prompt?: string;
  /** Degradations whose probe probability reaches this are put in the negative prompt. */
  threshold: number;
  controlScale: number;
  /** Latent tile side and overlap for images larger than one tile (VAE and denoising). */
  tile?: TileSize;
  onStep?: (i: number, total: number) => void;
}

export interface Detection {
  text: string;
  probability: number;
}

export class TrainingFreeRestorer {
  private constructor(
    readonly sd: StableDiffusion,
    readonly controlnet: ControlNetModel,
    readonly clip: ClipModel,
    readonly clipImage: ClipImageConfig,
    readonly probe: DegradationProbe,
  ) {}

  static load(e: Engine, dirs: { sd: string; clip: string; controlnet: string }, precision: Precision, onPart?: (name: string) => void): TrainingFreeRestorer {
    onPart?.('CLIP');
    const clip = ClipModel.load(e, dirs.clip, precision);
    const probe = new DegradationProbe(e, clip, ClipTokenizer.fromDir(dirs.clip), [...DEGRADATION_TEXTS, CLEAN_TEXT]);
    onPart?.('Stable Diffusion');
    const sd = StableDiffusion.load(e, dirs.sd, precision);
    onPart?.('ControlNet');
    return new TrainingFreeRestorer(sd, ControlNetModel.load(e, dirs.controlnet, precision), clip, readClipImageConfig(dirs.clip), probe);
  }

  /** Eq. 1 over the eight degradations and a clean photo, with CLIP's learned scale. */
  async detect(e: Engine, rgb: RgbImage, threshold: number): Promise<{ detected: Detection[]; scores: Detection[] }> {
    const { cropHeight: h, cropWidth: w } = this.clipImage;
    const scores = (await e.tidy(() => this.probe.score(e.upload(clipPixelValues(rgb, this.clipImage), [1, 3, h, w]), this.clip.logitScale)))[0]
      .map((s) => ({ text: s.text, probability: s.probability }));
    const detected = scores.filter((s) => s.text !== CLEAN_TEXT && s.probability >= threshold).sort((a, b) => b.probability - a.probability);
    return { detected, scores };
  }

  /**
   * lq [1, 3, H, W] in [0, 1], H and W multiples of 8 → restored [1, 3, H, W] in about [-1, 1],
   * with seconds per phase: clip (probe), prompts, encode, control (hint), denoise, decode.
   */
  async restore(e: Engine, lq: Tensor, rgb: RgbImage, o: TrainingFreeOptions): Promise<{ image: Tensor; detected: Detection[]; scores: Detection[]; seconds: Record<string, number>; cpuSeconds: Record<string, number> }> {
    const { sd } = this;
    const timer = new PhaseTimer(e);
    const { detected, scores } = await this.detect(e, rgb, o.threshold);
    await timer.end('clip');
    const positive = positivePrompt(o.prompt);
    const negative = detected.map((d) => d.text).join(', ');
    const context = e.keep(sd.encodePrompt(e, positive));
    const uncond = e.keep(sd.encodePrompt(e, negative));
    await timer.end('prompts');

    // img2img: diffusers' strength → the first step run, and the input noised to it.
    sd.scheduler.setTimesteps(o.steps);
    const start = o.steps - Math.min(Math.floor(o.steps * o.strength), o.steps);
    const { downFactor: f, config } = sd.vae;
    // The VAE and the hint embedding run at full resolution: the VAE's widest level bounds their tiles.
    const fullRes = fitBinding(e, o.tile, f, Math.max(...config.blockOut));
    const x0 = e.keep(e.tidy(() => encodeTiled(e, scale(e, lq, 2, -1), f, config.latentChannels, fullRes, (x) => sd.vae.encode(e, x)))); // [1, 4, H/8, W/8]
    const noised = e.keep(e.tidy(() => sd.scheduler.addNoise(e, x0, e.upload(seededNormal(x0.size, o.seed), x0.shape), sd.scheduler.timesteps[start])));
    await timer.end('encode');
    // [1, C0, H/8, W/8]: the conditioning embedding runs at full resolution, so it is tiled like the VAE.
    const hint = e.keep(e.tidy(() => encodeTiled(e, lq, f, sd.unet.config.blockOut[0], fullRes, (x) => this.controlnet.embedHint(e, x))));
    await timer.end('control');
    let latent: Tensor;
    try {
      latent = await denoise(e, {
        unet: sd.unet, scheduler: sd.scheduler, latents: noised, context, uncondContext: uncond,
        guidance: o.guidance, steps: o.steps, startIndex: start, tile: o.tile,
        control: { model: this.controlnet, hintEmbedding: hint, scale: o.controlScale },
        onStep: async (i) => {
          await e.sync();
          o.onStep?.(i - start, o.steps - start);
        },
      });
    } finally {
      for (const t of [context, uncond, hint, x0]) e.release(t);
    }
    e.release(noised);
    await timer.end('denoise');
    const image = this.decode(e, latent, fullRes);
    e.release(latent);
    await timer.end('decode');
    return { image, detected, scores, seconds: timer.seconds, cpuSeconds: timer.cpuSeconds };
  }

  private decode(e: Engine, latent: Tensor, tile: TileSize | undefined): Tensor {
    const { vae } = this.sd;
    return e.tidy(() => decodeTiled(e, latent, vae.downFactor, vae.config.outChannels, tile, (z) => vae.decode(e, z)));
  }
}
