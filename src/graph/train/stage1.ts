// Stage 1 of Diff-Restorer training (design: shared/design/diff-restorer.md, Training; the
// conventions of shared/fixtures/train/README.md): L = L_diff + L_deg + L_rec, training the
// prompt processor (with its classifier) and all of control/ (control network, control
// encoder, control decoder) while CLIP, the UNet and the VAE stay frozen. Gradients still flow
// through the frozen UNet into the control residuals and its cross-attention context P_S.
import path from 'node:path';
import { DrError } from '../../errors.js';
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { add, mul, scale } from '../../engine/ops/elementwise.js';
import { cast } from '../../engine/ops/copy.js';
import { crossEntropy, mse } from '../../engine/ops/losses.js';
import { ClipVisionModelWithProjection } from '../clip/model.js';
import { DiffRestorerControl } from '../diffrestorer/control.js';
import type { DiffRestorerParts } from '../diffrestorer/model.js';
import { PromptProcessor, readPromptProcessorConfig } from '../diffrestorer/prompt_processor.js';
import { loadFromCheckpoint, type Param, type Precision } from '../module.js';
import { SdBase } from '../sd/single_file.js';
import { readUniPCConfig, type UniPCConfig } from '../sd/unipc.js';
import { UNet2DConditionModel } from '../sd/unet.js';
import { AutoencoderKL } from '../sd/vae.js';
import type { BatchReader } from './data.js';
import { batchIndices, batchTensor, named, type Stage } from './stage.js';

/**
 * ᾱ_t = ∏_{s≤t} (1 − β_s) for every training timestep, in float64 from the scheduler config
 * (diffusers' DDPM schedules; the betas themselves in float64 too, as the fixtures define them).
 */
export function alphasCumprod(cfg: UniPCConfig): Float64Array {
  const N = cfg.numTrainTimesteps;
  const linspace = (a: number, b: number): Float64Array => Float64Array.from({ length: N }, (_, i) => a + ((b - a) * i) / (N - 1));
  let betas: Float64Array;
  if (cfg.trainedBetas) betas = Float64Array.from(cfg.trainedBetas);
  else if (cfg.betaSchedule === 'linear') betas = linspace(cfg.betaStart, cfg.betaEnd);
  else if (cfg.betaSchedule === 'scaled_linear') betas = linspace(Math.sqrt(cfg.betaStart), Math.sqrt(cfg.betaEnd)).map((b) => b * b);
  else {
    const alphaBar = (t: number): number => Math.cos((((t + 0.008) / 1.008) * Math.PI) / 2) ** 2;
    betas = Float64Array.from({ length: N }, (_, i) => Math.min(1 - alphaBar((i + 1) / N) / alphaBar(i / N), 0.999));
  }
  let prod = 1;
  return betas.map((b) => (prod *= 1 - b));
}

export interface Stage1Options {
  /** The Diff-Restorer checkpoint folder (prompt_processor/, control/). */
  dir: string;
  /** Resolved base model folders. */
  bases: DiffRestorerParts;
  /** Weights of the frozen modules (CLIP, UNet, VAE); the trained ones are always f32. */
  precision: Precision;
  /** Activation checkpointing of the control network (memory for a second forward of it). */
  checkpointing?: boolean;
}

export class Stage1 implements Stage {
  readonly params: [string, Param][];
  /** Batch tensors, fixed over the steps: P_CLIP, I_LQ, I_HQ in [0, 1], z_t, ε and the labels. */
  private data?: { pClip: Tensor; lq: Tensor; hq: Tensor; zt: Tensor; noise: Tensor; labels: Tensor };
  private timesteps: Int32Array = new Int32Array();

  private constructor(
    readonly promptProcessor: PromptProcessor,
    readonly control: DiffRestorerControl,
    readonly unet: UNet2DConditionModel,
    private readonly frozen: { clip: ClipVisionModelWithProjection; vae: AutoencoderKL; abar: Float64Array; numTrainTimesteps: number },
  ) {
    this.params = [
      ...named('prompt_processor', promptProcessor.setTrainable(true).trainableParams()),
      ...named('control', control.network.setTrainable(true).trainableParams()),
      ...named('control', control.decoder.setTrainable(true).trainableParams('control_decoder.')),
    ];
  }

  /** Loads the models and prepares the batch (see setBatch). */
  static load(e: Engine, batch: BatchReader, o: Stage1Options): Stage1 {
    const s = Stage1.open(e, o);
    s.setBatch(e, batch);
    return s;
  }

  /** Loads the models, with no batch yet. */
  static open(e: Engine, o: Stage1Options): Stage1 {
    const ppDir = path.join(o.dir, 'prompt_processor');
    const pp = new PromptProcessor(readPromptProcessorConfig(ppDir));
    loadFromCheckpoint(e, pp, ppDir, { precision: 'f32' });
    const control = DiffRestorerControl.load(e, path.join(o.dir, 'control'), 'f32');
    control.network.checkpointing = !!o.checkpointing;
    const clip = ClipVisionModelWithProjection.load(e, o.bases.clip, o.precision);
    const sd = SdBase.open(o.bases.sd);
    let unet: UNet2DConditionModel;
    let vae: AutoencoderKL;
    let schedule: UniPCConfig;
    try {
      unet = UNet2DConditionModel.load(e, sd.dir('unet'), o.precision, sd.weights('unet'));
      vae = AutoencoderKL.load(e, sd.dir('vae'), o.precision, sd.weights('vae'));
      schedule = readUniPCConfig(path.join(sd.dir('scheduler'), 'scheduler_config.json'));
    } finally {
      sd.close();
    }
    if (schedule.predictionType !== 'epsilon') {
      throw new DrError(`${sd.dir('scheduler')}: prediction_type "${schedule.predictionType}": stage 1 trains epsilon prediction only`);
    }
    return new Stage1(pp, control, unet, { clip, vae, abar: alphasCumprod(schedule), numTrainTimesteps: schedule.numTrainTimesteps });
  }

  /**
   * Prepares a batch, replacing the last: CLIP embeds `clip_pixel_values`, the VAE encodes
   * z_0 (posterior mean × scaling_factor) of 2·`pixels_hq`−1 and z_t = √ᾱ_t·z_0 + √(1−ᾱ_t)·`noise`
   * at `timesteps`, once per batch: none of it depends on a trained weight.
   */
  setBatch(e: Engine, batch: BatchReader): void {
    const { clip, vae, abar, numTrainTimesteps } = this.frozen;
    const pp = this.promptProcessor;

    const hqIn = batchTensor(batch, 'pixels_hq', [undefined, 3, undefined, undefined], 'I_HQ, RGB in [0, 1]');
    const [B, , H, W] = hqIn.shape;
    const f = vae.downFactor;
    if (H % f || W % f) throw new DrError(`${batch.path}: pixels_hq is ${W}×${H}: each side must be a multiple of ${f} (the VAE's downsampling)`);
    const lqIn = batchTensor(batch, 'pixels_lq', [B, 3, H, W], 'I_LQ, RGB in [0, 1], the size of pixels_hq');
    const lc = vae.config.latentChannels;
    const noiseIn = batchTensor(batch, 'noise', [B, lc, H / f, W / f], 'epsilon, the latent shape');
    const { channels, imageSize: S } = clip.config.vision;
    const clipIn = batchTensor(batch, 'clip_pixel_values', [B, channels, S, S], "CLIP's preprocessed input");
    const labels = batchIndices(batch, 'labels', B, pp.cfg.degradations.length, 'degradation classes');
    const timesteps = batchIndices(batch, 'timesteps', B, numTrainTimesteps, 'training timesteps');
    const coef = (g: (a: number) => number): Tensor => e.upload(Float32Array.from(timesteps, (t) => g(abar[t])), [B, 1, 1, 1]);
    const data = e.tidy(() => {
      const up = (x: { shape: number[]; data: Float32Array }): Tensor => e.upload(x.data, x.shape);
      const hq = up(hqIn);
      const noise = up(noiseIn);
      const pClip = cast(e, clip.encodeImage(e, up(clipIn)).embeds, 'f32');
      const z0 = cast(e, vae.encode(e, scale(e, hq, 2, -1)), 'f32');
      const zt = add(e, mul(e, z0, coef(Math.sqrt)), mul(e, noise, coef((a) => Math.sqrt(1 - a))));
      return { pClip, lq: up(lqIn), hq, zt, noise, labels: e.upload(labels, [B]) };
    });
    this.dispose(e);
    this.data = data;
    this.timesteps = timesteps;
  }

  losses(e: Engine): Record<string, Tensor> {
    if (!this.data) throw new Error('Stage1.losses before setBatch');
    const { pClip, lq, hq, zt, noise, labels } = this.data;
    const { promptProcessor: pp, control, unet } = this;
    const { semantic, degradation } = pp.forward(e, pClip); // P_S [B, tokens, D], P_D [B, d]
    const features = control.encoder.features(e, lq, degradation);
    const hint = control.encoder.conv_out.forward(e, features); // c
    const t = Array.from(this.timesteps);
    const res = control.network.forward(e, zt, t, semantic, hint, control.scale);
    const toUnet = (r: Tensor): Tensor => cast(e, r, unet.dtype);
    const eps = unet.forward(e, zt, t, semantic, { down: res.down.map(toUnet), mid: toUnet(res.mid) });
    const terms = {
      loss_diff: mse(e, eps, noise),
      loss_deg: crossEntropy(e, pp.classifier.forward(e, degradation), labels),
      loss_rec: mse(e, control.decoder.forward(e, features), hq),
    };
    return { loss: add(e, add(e, terms.loss_diff, terms.loss_deg), terms.loss_rec), ...terms };
  }

  dispose(e: Engine): void {
    for (const t of Object.values(this.data ?? {})) e.release(t);
    this.data = undefined;
  }
}
