// Stage 2 of Diff-Restorer training (design: shared/design/diff-restorer.md, Training; the
// conventions of shared/fixtures/train/README.md): the degradation-aware decoder (post_quant_conv,
// the VAE decoder, the DRBs) learns to decode z_0 of I_HQ, given the VAE encoder's skips of I_LQ
// and P_D, while the VAE encoder, CLIP and the prompt processor stay frozen:
//   L = mean((x̂ − x)²) + 0.1·L_per(x̂, x) + 0.001·L_adv(x̂),  x = 2·I_HQ − 1, x̂ = decoder(z_0, skips, P_D).
// L_adv is the non-saturating GAN loss −log σ(D(x̂)) of a PatchGAN critic D trained alternately:
// after each generator step, one critic step on x and the same x̂ (detached), with its own AdamW.
import path from 'node:path';
import { DrError } from '../../errors.js';
import { grad } from '../../engine/autograd.js';
import type { Engine } from '../../engine/engine.js';
import { AdamW, type AdamWOptions } from '../../engine/ops/adamw.js';
import { cast } from '../../engine/ops/copy.js';
import { add, scale } from '../../engine/ops/elementwise.js';
import { bceWithLogits, mse } from '../../engine/ops/losses.js';
import type { Tensor } from '../../engine/tensor.js';
import { ClipVisionModelWithProjection } from '../clip/model.js';
import { DegradationAwareDecoder } from '../diffrestorer/decoder.js';
import { scaleTo11, type DiffRestorerParts } from '../diffrestorer/model.js';
import { PromptProcessor, readPromptProcessorConfig } from '../diffrestorer/prompt_processor.js';
import { loadFromCheckpoint, type Param, type Precision } from '../module.js';
import { SdBase } from '../sd/single_file.js';
import { AutoencoderKL } from '../sd/vae.js';
import type { NLayerDiscriminator } from './discriminator.js';
import type { BatchReader } from './data.js';
import { batchTensor, named, type Stage } from './stage.js';
import { perceptualLoss, Vgg19Features } from './vgg19.js';

/** The paper's weights of L_per and L_adv (III-E). */
export const STAGE2_WEIGHTS = { perceptual: 0.1, adversarial: 0.001 };

/** The adversarial term: its weight and the critic, trained alongside with its own AdamW. */
export interface Stage2Critic {
  weight: number;
  discriminator: NLayerDiscriminator;
  optimizer: AdamWOptions;
}

export interface Stage2Options {
  /** The Diff-Restorer checkpoint folder (prompt_processor/, decoder/). */
  dir: string;
  /** Resolved base model folders. */
  bases: DiffRestorerParts;
  /** Weights of the frozen modules (CLIP, prompt processor, VAE); the decoder is always f32. */
  precision: Precision;
  /** VGG-19 features weights for L_per. */
  vgg: string;
  /** Without one, L has no adversarial term (as the fixture). */
  critic?: Stage2Critic;
}

/** What the frozen parts give for the batch: none of it depends on a trained weight. */
export interface Stage2Inputs {
  /** x = 2·I_HQ − 1, the target, f32 */
  target: Tensor;
  /** z_0: the VAE posterior mean of x times scaling_factor */
  z0: Tensor;
  /** the VAE encoder's states of 2·I_LQ − 1 entering each downsampler (H, H/2, H/4) */
  skips: Tensor[];
  /** P_D [B, degradation_dim], f32 */
  pd: Tensor;
}

export class Stage2 implements Stage {
  readonly params: [string, Param][];
  /** The critic and its optimizer (public for checkpoints). */
  readonly critic?: { weight: number; d: NLayerDiscriminator; params: Tensor[]; optimizer: AdamW };
  /** x̂ of the last forward, kept for the critic's step. */
  private xhat?: Tensor;
  private batchInputs?: Stage2Inputs;

  constructor(
    e: Engine,
    readonly decoder: DegradationAwareDecoder,
    readonly vgg: Vgg19Features,
    private readonly frozen: { vae: AutoencoderKL; clip: ClipVisionModelWithProjection; promptProcessor: PromptProcessor },
    critic?: Stage2Critic,
  ) {
    this.params = named('decoder', decoder.setTrainable(true).trainableParams());
    if (critic && critic.weight > 0) {
      const d = critic.discriminator.setTrainable(true);
      this.critic = { weight: critic.weight, d, params: d.trainableParams().map(([, p]) => p.t), optimizer: new AdamW(e, critic.optimizer) };
    }
  }

  /** What the frozen parts gave for the batch. */
  get inputs(): Stage2Inputs {
    if (!this.batchInputs) throw new Error('Stage2 used before setBatch');
    return this.batchInputs;
  }

  /** Loads the models and runs the frozen parts on the batch (see setBatch). */
  static load(e: Engine, batch: BatchReader, o: Stage2Options): Stage2 {
    const s = Stage2.open(e, o);
    s.setBatch(e, batch);
    return s;
  }

  /** Loads the models, with no batch yet. */
  static open(e: Engine, o: Stage2Options): Stage2 {
    const vgg = Vgg19Features.load(e, o.vgg, o.precision);
    const ppDir = path.join(o.dir, 'prompt_processor');
    const pp = new PromptProcessor(readPromptProcessorConfig(ppDir));
    loadFromCheckpoint(e, pp, ppDir, { precision: o.precision });
    const decoder = DegradationAwareDecoder.load(e, path.join(o.dir, 'decoder'), 'f32');
    const clip = ClipVisionModelWithProjection.load(e, o.bases.clip, o.precision);
    const sd = SdBase.open(o.bases.sd);
    let vae: AutoencoderKL;
    try {
      vae = AutoencoderKL.load(e, sd.dir('vae'), o.precision, sd.weights('vae'));
    } finally {
      sd.close();
    }
    return new Stage2(e, decoder, vgg, { vae, clip, promptProcessor: pp }, o.critic);
  }

  /** Replaces the batch (pixels_hq, pixels_lq, clip_pixel_values): runs the frozen parts on it, once. */
  setBatch(e: Engine, batch: BatchReader): void {
    const { vae, clip } = this.frozen;
    const hqIn = batchTensor(batch, 'pixels_hq', [undefined, 3, undefined, undefined], 'I_HQ, RGB in [0, 1]');
    const [B, , H, W] = hqIn.shape;
    const f = vae.downFactor;
    if (H % f || W % f) throw new DrError(`${batch.path}: pixels_hq is ${W}×${H}: each side must be a multiple of ${f} (the VAE's downsampling)`);
    const lqIn = batchTensor(batch, 'pixels_lq', [B, 3, H, W], 'I_LQ, RGB in [0, 1], the size of pixels_hq');
    const { channels, imageSize: S } = clip.config.vision;
    const clipIn = batchTensor(batch, 'clip_pixel_values', [B, channels, S, S], "CLIP's preprocessed input");
    const up = (x: { shape: number[]; data: Float32Array }): Tensor => e.upload(x.data, x.shape);
    const inputs = e.tidy(() => frozenInputs(e, this.frozen, up(hqIn), up(lqIn), up(clipIn)));
    this.dispose(e);
    this.batchInputs = inputs;
  }

  /** x̂ = decoder(z_0, skips, P_D) in about [-1, 1], f32. */
  decode(e: Engine): Tensor {
    const x = this.inputs;
    return e.tidy(() => cast(e, this.decoder.decode(e, x.z0, x.skips, x.pd), 'f32'));
  }

  losses(e: Engine): Record<string, Tensor> {
    const x = this.inputs;
    const xhat = this.decode(e);
    const terms: Record<string, Tensor> = { loss_mse: mse(e, xhat, x.target), loss_per: perceptualLoss(e, this.vgg, xhat, x.target) };
    let loss = add(e, terms.loss_mse, scale(e, terms.loss_per, STAGE2_WEIGHTS.perceptual));
    if (this.critic) {
      // Kept for the critic's step (the tape borrows it: it stays after the backward).
      if (this.xhat) e.release(this.xhat);
      this.xhat = e.keep(xhat);
      terms.loss_adv = bceWithLogits(e, this.critic.d.forward(e, xhat), 1);
      loss = add(e, loss, scale(e, terms.loss_adv, this.critic.weight));
    }
    return { loss, ...terms };
  }

  /**
   * The critic's step after each generator step: the gradient of ½(BCE(D(x), 1) + BCE(D(x̂), 0))
   * (pix2pix's D loss) on the last forward's x̂, which needs no gradient here (detached).
   */
  afterStep(e: Engine): Record<string, Tensor> | void {
    const c = this.critic;
    if (!c || !this.xhat) return;
    const { target } = this.inputs;
    const xhat = this.xhat;
    const { loss, grads } = grad(e, () => criticLoss(e, c.d, target, xhat), c.params);
    c.optimizer.step(c.params.map((param, i) => ({ param, grad: grads[i] })));
    for (const t of [...grads, xhat]) if (t) e.release(t);
    this.xhat = undefined;
    return { loss_disc: loss };
  }

  dispose(e: Engine): void {
    const x = this.batchInputs;
    for (const t of [x?.target, x?.z0, ...(x?.skips ?? []), x?.pd, this.xhat]) if (t) e.release(t);
    this.xhat = undefined;
    this.batchInputs = undefined;
  }
}

/** pix2pix's critic loss: ½(BCE(D(real), 1) + BCE(D(fake), 0)), logits per patch. */
export function criticLoss(e: Engine, d: NLayerDiscriminator, real: Tensor, fake: Tensor): Tensor {
  return e.tidy(() => scale(e, add(e, bceWithLogits(e, d.forward(e, real), 1), bceWithLogits(e, d.forward(e, fake), 0)), 0.5));
}

/**
 * The frozen parts on one batch (I_HQ, I_LQ in [0, 1], CLIP's input): x, z_0, the skips and P_D,
 * as the inference path computes them (DiffRestorer.restore); outside every scope.
 */
export function frozenInputs(
  e: Engine, m: { vae: AutoencoderKL; clip: ClipVisionModelWithProjection; promptProcessor: PromptProcessor },
  hq: Tensor, lq: Tensor, clipPixels: Tensor,
): Stage2Inputs {
  const out = e.tidy(() => {
    const target = cast(e, scaleTo11(e, hq), 'f32');
    const z0 = m.vae.latent(e, m.vae.encodeMoments(e, target).moments);
    const skips = m.vae.encodeMoments(e, scaleTo11(e, lq)).levels;
    const pd = cast(e, m.promptProcessor.forward(e, m.clip.encodeImage(e, clipPixels).embeds).degradation, 'f32');
    return { target, z0, skips, pd };
  });
  for (const t of [out.target, out.z0, ...out.skips, out.pd]) e.keep(t);
  return out;
}
