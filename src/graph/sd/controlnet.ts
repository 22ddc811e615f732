// ControlNetModel (diffusers): a trainable copy of the UNet encoder + mid block,
// fed the latent plus an embedded hint image, emitting one zero-conv residual per
// UNet skip tensor and one for the mid block.
import { DrError } from '../../errors.js';
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { add, scale, silu } from '../../engine/ops/elementwise.js';
import { ConfigFile } from '../config.js';
import { Module, ModuleList, loadFromCheckpoint, type Precision } from '../module.js';
import { Conv2d } from '../nn.js';
import { cast } from '../../engine/ops/copy.js';
import {
  DownBlock, MidBlock, TimestepEmbedding, readUNetConfig, timestepFeatures, timestepsPerSample,
  type ControlResiduals, type StepContext, type Timesteps, type UNetConfig,
} from './unet.js';

/** Turns the hint image into a feature map the size of conv_in's output. */
export interface HintEncoder extends Module {
  /** hint [B, 3, 8h, 8w] (+ a per-image condition such as P_D) → [B, C0, h, w] */
  forward(e: Engine, hint: Tensor, condition?: Tensor): Tensor;
}

/** ControlNetConditioningEmbedding: conv_in, stride-2 conv pairs with SiLU, zero conv_out. */
export class ControlNetConditioningEmbedding extends Module implements HintEncoder {
  readonly conv_in: Conv2d;
  readonly blocks: ModuleList<Conv2d>;
  readonly conv_out: Conv2d;

  constructor(hintChannels: number, channels: number[], outChannels: number) {
    super();
    this.conv_in = this.child('conv_in', new Conv2d(hintChannels, channels[0], 3, 1, 1));
    const blocks: Conv2d[] = [];
    for (let i = 0; i < channels.length - 1; i++) {
      blocks.push(new Conv2d(channels[i], channels[i], 3, 1, 1), new Conv2d(channels[i], channels[i + 1], 3, 2, 1));
    }
    this.blocks = this.child('blocks', new ModuleList(blocks));
    this.conv_out = this.child('conv_out', new Conv2d(channels.at(-1)!, outChannels, 3, 1, 1));
  }

  forward(e: Engine, hint: Tensor): Tensor {
    return e.tidy(() => {
      let h = this.conv_in.forward(e, hint, 'silu');
      for (const conv of this.blocks.items) h = conv.forward(e, h, 'silu');
      return e.trace(this.path, this.conv_out.forward(e, h));
    });
  }
}

export interface ControlNetConfig extends UNetConfig {
  hintChannels: number;
  hintEmbeddingChannels: number[];
  bgr: boolean;
}

export function readControlNetConfig(dir: string): ControlNetConfig {
  const unet = readUNetConfig(dir);
  const c = ConfigFile.inDir(dir);
  const channels = c.raw.conditioning_embedding_out_channels ?? [16, 32, 96, 256];
  if (!Array.isArray(channels) || !channels.every((x) => Number.isInteger(x) && x > 0)) {
    throw new DrError(`${c.file}: "conditioning_embedding_out_channels" must be a list of positive integers`);
  }
  if (c.raw.global_pool_conditions === true) throw new DrError(`${c.file}: global_pool_conditions true is not supported`);
  const order = c.str('controlnet_conditioning_channel_order', 'rgb');
  if (order !== 'rgb' && order !== 'bgr') throw new DrError(`${c.file}: controlnet_conditioning_channel_order "${order}" (rgb or bgr)`);
  return { ...unet, hintChannels: c.int('conditioning_channels', 3), hintEmbeddingChannels: channels as number[], bgr: order === 'bgr' };
}

export class ControlNetModel extends Module {
  readonly time_embedding: TimestepEmbedding;
  readonly conv_in: Conv2d;
  readonly controlnet_cond_embedding: HintEncoder;
  readonly down_blocks: ModuleList<DownBlock>;
  readonly controlnet_down_blocks: ModuleList<Conv2d>;
  readonly mid_block: MidBlock;
  readonly controlnet_mid_block: Conv2d;
  /** Activation checkpointing of each resnet and transformer while training (dr train --checkpointing). */
  checkpointing = false;

  /** `hintEncoder` replaces the standard conditioning embedding (Diff-Restorer's control encoder). */
  constructor(readonly config: ControlNetConfig, hintEncoder?: HintEncoder) {
    super();
    const c0 = config.blockOut[0];
    this.conv_in = this.child('conv_in', new Conv2d(config.inChannels, c0, 3, 1, 1));
    this.time_embedding = this.child('time_embedding', new TimestepEmbedding(c0, c0 * 4));
    this.controlnet_cond_embedding = this.child('controlnet_cond_embedding',
      hintEncoder ?? new ControlNetConditioningEmbedding(config.hintChannels, config.hintEmbeddingChannels, c0));
    this.down_blocks = this.child('down_blocks', new ModuleList(config.blockOut.map((_, i) => new DownBlock(config, i))));
    // One 1×1 zero conv per skip tensor: conv_in's, each layer's, each downsampler's.
    const skipChannels = [c0, ...config.blockOut.flatMap((ch, i) =>
      Array(config.layersPerBlock + (i < config.blockOut.length - 1 ? 1 : 0)).fill(ch))];
    this.controlnet_down_blocks = this.child('controlnet_down_blocks', new ModuleList(skipChannels.map((ch) => new Conv2d(ch, ch, 1))));
    this.mid_block = this.child('mid_block', new MidBlock(config));
    const mid = config.blockOut.at(-1)!;
    this.controlnet_mid_block = this.child('controlnet_mid_block', new Conv2d(mid, mid, 1));
  }

  static load(e: Engine, dir: string, precision: Precision = 'auto'): ControlNetModel {
    const model = new ControlNetModel(readControlNetConfig(dir));
    loadFromCheckpoint(e, model, dir, { precision });
    return model;
  }

  get dtype(): Tensor['dtype'] {
    return this.conv_in.weight.t.dtype;
  }

  /**
   * Embeds the hint image once per image (it does not depend on the timestep):
   * hint [B, 3, H, W] in [0, 1] → [B, C0, H/8, W/8].
   */
  embedHint(e: Engine, hint: Tensor, condition?: Tensor): Tensor {
    if (hint.shape[1] !== this.config.hintChannels) {
      throw new DrError(`control hint must have ${this.config.hintChannels} channels, got [${hint.shape}]`);
    }
    if (this.config.bgr) throw new DrError('BGR-ordered ControlNets are not supported yet');
    return e.tidy(() => this.controlnet_cond_embedding.forward(e, cast(e, hint, this.dtype), condition));
  }

  /**
   * sample [B, 4, h, w] at timestep(s) + embedded hint [B, C0, h, w] → residuals for the
   * UNet's skips and mid block, multiplied by conditioningScale.
   */
  forward(e: Engine, sample: Tensor, timestep: Timesteps, context: Tensor, hintEmbedding: Tensor, conditioningScale = 1): ControlResiduals {
    const [B, , h, w] = sample.shape;
    const [hb, hc, hh, hw] = hintEmbedding.shape;
    const c0 = this.config.blockOut[0];
    if (hb !== B || hc !== c0 || hh !== h || hw !== w) {
      throw new DrError(`control hint embeds to [${hintEmbedding.shape}], the latent needs [${B}, ${c0}, ${h}, ${w}] (hint image 8× the latent size)`);
    }
    return e.tidy(() => {
      const feats = timestepFeatures(timestepsPerSample(timestep, B), c0, this.config.flipSinToCos, this.config.freqShift);
      const temb = this.time_embedding.forward(e, e.upload(feats, [B, c0], this.dtype));
      const dt = this.dtype;
      const as = (t: Tensor): Tensor => cast(e, t, dt);
      const ctx: StepContext = { tembAct: silu(e, temb), context: as(context), checkpoint: this.checkpointing };
      const x0 = e.trace('conv_in', this.conv_in.forward(e, as(sample)));
      let x = add(e, x0, hintEmbedding);
      const skips: Tensor[] = [x];
      for (const block of this.down_blocks.items) {
        const r = block.forward(e, x, ctx);
        x = r.out;
        skips.push(...r.skips);
      }
      x = this.mid_block.forward(e, x, ctx);
      const scaled = (t: Tensor): Tensor => (conditioningScale === 1 ? t : scale(e, t, conditioningScale));
      return {
        down: skips.map((s, i) => scaled(this.controlnet_down_blocks.items[i].forward(e, s))),
        mid: scaled(this.controlnet_mid_block.forward(e, x)),
      };
    });
  }
}
