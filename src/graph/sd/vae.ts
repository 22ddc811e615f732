// AutoencoderKL (diffusers) from vae/config.json: encoder → quant_conv → moments →
// latent; post_quant_conv → decoder. The encoder's per-level features are exposed
// for Diff-Restorer's degradation-aware decoder.
import { DrError } from '../../errors.js';
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { attention } from '../../engine/ops/attention.js';
import { add, scale } from '../../engine/ops/elementwise.js';
import { elementwiseGrid } from '../../engine/ops/common.js';
import { cast, permute } from '../../engine/ops/copy.js';
import { ConfigFile } from '../config.js';
import { Module, ModuleList, loadFromCheckpoint, type Precision } from '../module.js';
import type { Checkpoint } from '../../weights/checkpoint.js';
import { Conv2d, GroupNorm, Linear } from '../nn.js';
import { ResnetBlock2D, Upsample2D } from './blocks.js';

export interface VaeConfig {
  inChannels: number;
  outChannels: number;
  latentChannels: number;
  blockOut: number[];
  layersPerBlock: number;
  groups: number;
  scalingFactor: number;
  midAttention: boolean;
  quantConv: boolean;
  postQuantConv: boolean;
}

export function readVaeConfig(dir: string): VaeConfig {
  const c = ConfigFile.inDir(dir);
  const blockOut = c.raw.block_out_channels;
  if (!Array.isArray(blockOut) || !blockOut.every((x) => Number.isInteger(x) && x > 0)) {
    throw new DrError(`${c.file}: "block_out_channels" must be a list of positive integers`);
  }
  for (const [key, want] of [['down_block_types', 'DownEncoderBlock2D'], ['up_block_types', 'UpDecoderBlock2D']] as const) {
    const types = c.raw[key];
    if (!Array.isArray(types) || types.length !== blockOut.length) throw new DrError(`${c.file}: "${key}" must list ${blockOut.length} block types`);
    for (const t of types) if (t !== want) throw new DrError(`${c.file}: ${key} entry "${t}" is not supported (supported: ${want})`);
  }
  if (c.str('act_fn', 'silu') !== 'silu') throw new DrError(`${c.file}: act_fn "${c.raw.act_fn}" is not supported (silu)`);
  if (c.raw.shift_factor != null || c.raw.latents_mean != null) throw new DrError(`${c.file}: shift_factor / latents_mean (SD3/SDXL-style VAEs) are not supported`);
  return {
    inChannels: c.int('in_channels', 3),
    outChannels: c.int('out_channels', 3),
    latentChannels: c.int('latent_channels', 4),
    blockOut: blockOut as number[],
    layersPerBlock: c.int('layers_per_block', 2),
    groups: c.int('norm_num_groups', 32),
    scalingFactor: c.num('scaling_factor', 0.18215),
    midAttention: c.raw.mid_block_add_attention !== false,
    quantConv: c.raw.use_quant_conv !== false,
    postQuantConv: c.raw.use_post_quant_conv !== false,
  };
}

const VAE_EPS = 1e-6;

/** Single-head spatial self-attention with its own GroupNorm and a residual (VAE mid block). */
class SpatialAttention extends Module {
  readonly group_norm: GroupNorm;
  readonly to_q: Linear;
  readonly to_k: Linear;
  readonly to_v: Linear;
  readonly to_out: ModuleList<Linear>;

  constructor(channels: number, groups: number) {
    super();
    this.group_norm = this.child('group_norm', new GroupNorm(groups, channels, VAE_EPS));
    this.to_q = this.child('to_q', new Linear(channels, channels));
    this.to_k = this.child('to_k', new Linear(channels, channels));
    this.to_v = this.child('to_v', new Linear(channels, channels));
    this.to_out = this.child('to_out', new ModuleList([new Linear(channels, channels)]));
  }

  /** x [B, C, H, W] → x + attn(GN(x)) */
  forward(e: Engine, x: Tensor): Tensor {
    const [B, C, H, W] = x.shape;
    return e.tidy(() => {
      const tokens = permute(e, this.group_norm.forward(e, x).reshape([B, C, H * W]), [0, 2, 1]); // [B, HW, C]
      const o = attention(e, this.to_q.forward(e, tokens), this.to_k.forward(e, tokens), this.to_v.forward(e, tokens), { heads: 1 });
      const out = permute(e, this.to_out.items[0].forward(e, o), [0, 2, 1]).reshape([B, C, H, W]);
      return e.trace(this.path, add(e, out, x));
    });
  }
}

/** UNetMidBlock2D without time embedding: resnet, [attention], resnet. */
class VaeMidBlock extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly attentions?: ModuleList<SpatialAttention>;

  constructor(channels: number, groups: number, withAttention: boolean) {
    super();
    this.resnets = this.child('resnets', new ModuleList([0, 1].map(() => new ResnetBlock2D(channels, channels, undefined, groups, VAE_EPS))));
    if (withAttention) this.attentions = this.child('attentions', new ModuleList([new SpatialAttention(channels, groups)]));
  }

  forward(e: Engine, x: Tensor): Tensor {
    return e.tidy(() => {
      let h = this.resnets.items[0].forward(e, x);
      if (this.attentions) h = this.attentions.items[0].forward(e, h);
      return e.trace(this.path, this.resnets.items[1].forward(e, h));
    });
  }
}

/** Downsample2D with padding 0: F.pad (0, 1, 0, 1), then a stride-2 3×3 conv. */
class AsymmetricDownsample extends Module {
  readonly conv: Conv2d;
  constructor(channels: number) {
    super();
    this.conv = this.child('conv', new Conv2d(channels, channels, 3, 2, [0, 1, 0, 1]));
  }

  forward(e: Engine, x: Tensor): Tensor {
    return this.conv.forward(e, x);
  }
}

class DownEncoderBlock2D extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly downsamplers?: ModuleList<AsymmetricDownsample>;

  constructor(inCh: number, out: number, layers: number, groups: number, downsample: boolean) {
    super();
    this.resnets = this.child('resnets', new ModuleList(Array.from({ length: layers }, (_, j) =>
      new ResnetBlock2D(j === 0 ? inCh : out, out, undefined, groups, VAE_EPS))));
    if (downsample) this.downsamplers = this.child('downsamplers', new ModuleList([new AsymmetricDownsample(out)]));
  }

  /** Returns the block output and, with a downsampler, the state entering it (a skip feature). */
  forward(e: Engine, x: Tensor): { out: Tensor; beforeDownsample?: Tensor } {
    return e.tidy(() => {
      let h = x;
      for (const r of this.resnets.items) h = r.forward(e, h);
      if (!this.downsamplers) return { out: e.trace(this.path, h) };
      return { out: e.trace(this.path, this.downsamplers.items[0].forward(e, h)), beforeDownsample: h };
    });
  }
}

class UpDecoderBlock2D extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly upsamplers?: ModuleList<Upsample2D>;

  constructor(inCh: number, out: number, layers: number, groups: number, upsample: boolean) {
    super();
    this.resnets = this.child('resnets', new ModuleList(Array.from({ length: layers }, (_, j) =>
      new ResnetBlock2D(j === 0 ? inCh : out, out, undefined, groups, VAE_EPS))));
    if (upsample) this.upsamplers = this.child('upsamplers', new ModuleList([new Upsample2D(out)]));
  }

  forward(e: Engine, x: Tensor): Tensor {
    return e.tidy(() => {
      let h = x;
      for (const r of this.resnets.items) h = r.forward(e, h);
      if (this.upsamplers) h = this.upsamplers.items[0].forward(e, h);
      return e.trace(this.path, h);
    });
  }
}

export class VaeEncoder extends Module {
  readonly conv_in: Conv2d;
  readonly down_blocks: ModuleList<DownEncoderBlock2D>;
  readonly mid_block: VaeMidBlock;
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;

  constructor(cfg: VaeConfig) {
    super();
    const b = cfg.blockOut;
    this.conv_in = this.child('conv_in', new Conv2d(cfg.inChannels, b[0], 3, 1, 1));
    this.down_blocks = this.child('down_blocks', new ModuleList(b.map((out, i) =>
      new DownEncoderBlock2D(i === 0 ? b[0] : b[i - 1], out, cfg.layersPerBlock, cfg.groups, i < b.length - 1))));
    this.mid_block = this.child('mid_block', new VaeMidBlock(b.at(-1)!, cfg.groups, cfg.midAttention));
    this.conv_norm_out = this.child('conv_norm_out', new GroupNorm(cfg.groups, b.at(-1)!, VAE_EPS));
    this.conv_out = this.child('conv_out', new Conv2d(b.at(-1)!, 2 * cfg.latentChannels, 3, 1, 1));
  }

  /**
   * image [B, 3, H, W] → moments before quant_conv [B, 2C, H/f, W/f], and the
   * state entering each downsampler (at H, H/2, H/4 …: Diff-Restorer's skips).
   */
  forward(e: Engine, image: Tensor): { out: Tensor; levels: Tensor[] } {
    return e.tidy(() => {
      let h = e.trace(this.conv_in.path, this.conv_in.forward(e, image));
      const levels: Tensor[] = [];
      for (const block of this.down_blocks.items) {
        const r = block.forward(e, h);
        if (r.beforeDownsample) levels.push(r.beforeDownsample);
        h = r.out;
      }
      h = this.mid_block.forward(e, h);
      return { out: e.trace(this.conv_out.path, this.conv_out.forward(e, this.conv_norm_out.forward(e, h, 'silu'))), levels };
    });
  }
}

export class VaeDecoder extends Module {
  readonly conv_in: Conv2d;
  readonly mid_block: VaeMidBlock;
  readonly up_blocks: ModuleList<UpDecoderBlock2D>;
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;

  constructor(cfg: VaeConfig) {
    super();
    const rev = [...cfg.blockOut].reverse();
    this.conv_in = this.child('conv_in', new Conv2d(cfg.latentChannels, rev[0], 3, 1, 1));
    this.mid_block = this.child('mid_block', new VaeMidBlock(rev[0], cfg.groups, cfg.midAttention));
    this.up_blocks = this.child('up_blocks', new ModuleList(rev.map((out, i) =>
      new UpDecoderBlock2D(i === 0 ? rev[0] : rev[i - 1], out, cfg.layersPerBlock + 1, cfg.groups, i < rev.length - 1))));
    this.conv_norm_out = this.child('conv_norm_out', new GroupNorm(cfg.groups, cfg.blockOut[0], VAE_EPS));
    this.conv_out = this.child('conv_out', new Conv2d(cfg.blockOut[0], cfg.outChannels, 3, 1, 1));
  }

  /**
   * z [B, C, h, w] (after post_quant_conv) → image [B, 3, 8h, 8w] in about [-1, 1].
   * `afterUpsample(i, h)` may replace the hidden state leaving up block i when that
   * block ends with an upsampler (Diff-Restorer's DRBs hook in there).
   */
  forward(e: Engine, z: Tensor, afterUpsample?: (i: number, h: Tensor) => Tensor): Tensor {
    return e.tidy(() => {
      let h = e.trace(this.conv_in.path, this.conv_in.forward(e, z));
      h = this.mid_block.forward(e, h);
      this.up_blocks.items.forEach((block, i) => {
        h = block.forward(e, h);
        if (afterUpsample && block.upsamplers) h = afterUpsample(i, h);
      });
      return e.trace(this.conv_out.path, this.conv_out.forward(e, this.conv_norm_out.forward(e, h, 'silu')));
    });
  }
}

export class AutoencoderKL extends Module {
  readonly encoder: VaeEncoder;
  readonly decoder: VaeDecoder;
  readonly quant_conv?: Conv2d;
  readonly post_quant_conv?: Conv2d;

  constructor(readonly config: VaeConfig) {
    super();
    const lc = config.latentChannels;
    this.encoder = this.child('encoder', new VaeEncoder(config));
    this.decoder = this.child('decoder', new VaeDecoder(config));
    if (config.quantConv) this.quant_conv = this.child('quant_conv', new Conv2d(2 * lc, 2 * lc, 1));
    if (config.postQuantConv) this.post_quant_conv = this.child('post_quant_conv', new Conv2d(lc, lc, 1));
  }

  /** Config from `dir`; weights from `dir` too unless given (a single-file checkpoint's component). */
  static load(e: Engine, dir: string, precision: Precision = 'auto', weights?: Checkpoint): AutoencoderKL {
    const vae = new AutoencoderKL(readVaeConfig(dir));
    loadFromCheckpoint(e, vae, weights ?? dir, { precision });
    return vae;
  }

  get dtype(): Tensor['dtype'] {
    return this.encoder.conv_in.weight.t.dtype;
  }

  /** Pixel sides must be a multiple of 2^(levels-1). */
  get downFactor(): number {
    return 2 ** (this.config.blockOut.length - 1);
  }

  /** image [B, 3, H, W] in [-1, 1] → moments [B, 2C, H/f, W/f] and the encoder's per-level features. */
  encodeMoments(e: Engine, image: Tensor): { moments: Tensor; levels: Tensor[] } {
    const [, c, H, W] = image.shape;
    const f = this.downFactor;
    if (c !== this.config.inChannels) throw new DrError(`VAE input must have ${this.config.inChannels} channels, got [${image.shape}]`);
    if (H % f || W % f) throw new DrError(`image ${W}×${H}: each side must be a multiple of ${f} for this VAE`);
    return e.tidy(() => {
      const x = cast(e, image, this.dtype);
      const { out, levels } = this.encoder.forward(e, x);
      const moments = this.quant_conv ? e.trace(this.quant_conv.path, this.quant_conv.forward(e, out)) : out;
      return { moments, levels };
    });
  }

  /**
   * moments → scaled latent: the posterior mean (mode), or mean + std·noise with
   * `noise` [B, C, h, w] (a seeded sample); times scaling_factor.
   */
  latent(e: Engine, moments: Tensor, noise?: Tensor): Tensor {
    const [B, C2, h, w] = moments.shape;
    const C = C2 / 2;
    e.assertNoGrad('DiagonalGaussian latent', moments);
    const z = e.empty([B, C, h, w], moments.dtype);
    const { workgroups, groupsX } = elementwiseGrid(z.size);
    e.run({
      kernel: 'diagonal_gaussian',
      bindings: { moments, noise: noise ?? moments, z },
      defines: { HAS_NOISE: !!noise },
      params: { C, S: h * w, n: z.size, scale: this.config.scalingFactor, groupsX },
      workgroups,
    });
    return z;
  }

  /** image [B, 3, H, W] in [-1, 1] → scaled latent [B, C, H/8, W/8] (mean, or sampled with noise). */
  encode(e: Engine, image: Tensor, noise?: Tensor): Tensor {
    return e.tidy(() => this.latent(e, this.encodeMoments(e, image).moments, noise));
  }

  /** scaled latent [B, C, h, w] → image [B, 3, 8h, 8w] in about [-1, 1] */
  decode(e: Engine, latent: Tensor, afterUpsample?: (i: number, h: Tensor) => Tensor): Tensor {
    return e.tidy(() => {
      let z = scale(e, cast(e, latent, this.dtype), 1 / this.config.scalingFactor);
      if (this.post_quant_conv) z = e.trace(this.post_quant_conv.path, this.post_quant_conv.forward(e, z));
      return this.decoder.forward(e, z, afterUpsample);
    });
  }
}
