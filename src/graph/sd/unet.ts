// UNet2DConditionModel as diffusers builds it for SD 1.x/2.x, from unet/config.json.
import { DrError } from '../../errors.js';
import { checkpoint } from '../../engine/autograd.js';
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { add, silu } from '../../engine/ops/elementwise.js';
import { cast, concat } from '../../engine/ops/copy.js';
import { ConfigFile } from '../config.js';
import { Module, ModuleList, loadFromCheckpoint, type Precision } from '../module.js';
import type { Checkpoint } from '../../weights/checkpoint.js';
import { Conv2d, GroupNorm, Linear } from '../nn.js';
import { Downsample2D, ResnetBlock2D, Transformer2DModel, Upsample2D } from './blocks.js';

const DOWN_TYPES = ['CrossAttnDownBlock2D', 'DownBlock2D'];
const UP_TYPES = ['CrossAttnUpBlock2D', 'UpBlock2D'];

export interface UNetConfig {
  inChannels: number;
  outChannels: number;
  blockOut: number[];
  downTypes: string[];
  upTypes: string[];
  layersPerBlock: number;
  groups: number;
  eps: number;
  crossAttentionDim: number;
  /** Attention heads per block (diffusers' `attention_head_dim` in SD 1.5 is really this). */
  heads: number[];
  linearProjection: boolean;
  flipSinToCos: boolean;
  freqShift: number;
  downsamplePadding: number;
  transformerLayers: number;
}

/** Reads and validates unet/config.json (or a ControlNet's config.json); stops before any GPU work. */
export function readUNetConfig(dir: string): UNetConfig {
  const c = ConfigFile.inDir(dir);
  const raw = c.raw;
  const blockOut = intList(c, 'block_out_channels');
  const downTypes = strList(c, 'down_block_types');
  const upTypes = raw.up_block_types === undefined ? [] : strList(c, 'up_block_types');
  for (const t of downTypes) if (!DOWN_TYPES.includes(t)) throw new DrError(`${c.file}: down block type "${t}" is not supported (supported: ${DOWN_TYPES.join(', ')})`);
  for (const t of upTypes) if (!UP_TYPES.includes(t)) throw new DrError(`${c.file}: up block type "${t}" is not supported (supported: ${UP_TYPES.join(', ')})`);
  const mid = c.str('mid_block_type', 'UNetMidBlock2DCrossAttn');
  if (mid !== 'UNetMidBlock2DCrossAttn') throw new DrError(`${c.file}: mid block type "${mid}" is not supported (supported: UNetMidBlock2DCrossAttn)`);
  if (downTypes.length !== blockOut.length) throw new DrError(`${c.file}: ${downTypes.length} down_block_types for ${blockOut.length} block_out_channels`);
  for (const key of ['class_embed_type', 'addition_embed_type', 'encoder_hid_dim_type', 'time_cond_proj_dim']) {
    if (raw[key] !== undefined && raw[key] !== null) throw new DrError(`${c.file}: "${key}" is not supported (SD 1.x/2.x UNets have none)`);
  }
  if (c.str('act_fn', 'silu') !== 'silu') throw new DrError(`${c.file}: act_fn "${raw.act_fn}" is not supported (silu)`);
  if (c.str('resnet_time_scale_shift', 'default') !== 'default') throw new DrError(`${c.file}: resnet_time_scale_shift "${raw.resnet_time_scale_shift}" is not supported (default)`);
  const headsRaw = raw.num_attention_heads ?? raw.attention_head_dim ?? 8;
  const heads = Array.isArray(headsRaw) ? intList(c, raw.num_attention_heads != null ? 'num_attention_heads' : 'attention_head_dim') : blockOut.map(() => headsRaw as number);
  blockOut.forEach((ch, i) => {
    if (ch % heads[i]) throw new DrError(`${c.file}: block ${i} has ${ch} channels, not divisible by ${heads[i]} attention heads`);
  });
  const transformerLayers = c.int('transformer_layers_per_block', 1);
  return {
    inChannels: c.int('in_channels', 4),
    outChannels: c.has('out_channels') ? c.int('out_channels') : 4,
    blockOut,
    downTypes,
    upTypes,
    layersPerBlock: c.int('layers_per_block', 2),
    groups: c.int('norm_num_groups', 32),
    eps: c.num('norm_eps', 1e-5),
    crossAttentionDim: c.int('cross_attention_dim', 768),
    heads,
    linearProjection: raw.use_linear_projection === true,
    flipSinToCos: raw.flip_sin_to_cos !== false,
    freqShift: c.num('freq_shift', 0),
    downsamplePadding: c.int('downsample_padding', 1),
    transformerLayers,
  };
}

function intList(c: ConfigFile, key: string): number[] {
  const v = c.raw[key];
  if (!Array.isArray(v) || !v.every((x) => Number.isInteger(x) && x > 0)) throw new DrError(`${c.file}: "${key}" must be a list of positive integers`);
  return v as number[];
}

function strList(c: ConfigFile, key: string): string[] {
  const v = c.raw[key];
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new DrError(`${c.file}: "${key}" must be a list of block type names`);
  return v as string[];
}

/** One timestep for the whole batch, or one per sample (training draws a timestep per sample). */
export type Timesteps = number | ArrayLike<number>;

/** One timestep per sample: a single one is broadcast to the batch, as diffusers expands `timesteps`. */
export function timestepsPerSample(t: Timesteps, batch: number): number[] {
  if (typeof t === 'number') return Array(batch).fill(t);
  if (t.length === 1) return Array(batch).fill(t[0]);
  if (t.length !== batch) throw new DrError(`${t.length} timesteps for a batch of ${batch} (give one, or one per sample)`);
  return Array.from(t);
}

/**
 * Sinusoidal timestep features as diffusers' get_timestep_embedding computes them
 * in float32: [B, dim], cos half first when flipSinToCos.
 */
export function timestepFeatures(timesteps: number[], dim: number, flipSinToCos: boolean, freqShift: number): Float32Array {
  const half = dim / 2;
  const out = new Float32Array(timesteps.length * dim);
  const f = Math.fround;
  timesteps.forEach((t, b) => {
    for (let i = 0; i < half; i++) {
      const freq = f(Math.exp(f(f(-Math.log(10000) * i) / (half - freqShift))));
      const arg = f(f(t) * freq);
      const [first, second] = flipSinToCos ? [Math.cos(arg), Math.sin(arg)] : [Math.sin(arg), Math.cos(arg)];
      out[b * dim + i] = first;
      out[b * dim + half + i] = second;
    }
  });
  return out;
}

/** TimestepEmbedding: linear_1 → SiLU → linear_2. */
export class TimestepEmbedding extends Module {
  readonly linear_1: Linear;
  readonly linear_2: Linear;
  constructor(inCh: number, dim: number) {
    super();
    this.linear_1 = this.child('linear_1', new Linear(inCh, dim));
    this.linear_2 = this.child('linear_2', new Linear(dim, dim));
  }

  forward(e: Engine, x: Tensor): Tensor {
    return e.tidy(() => e.trace(this.path, this.linear_2.forward(e, this.linear_1.forward(e, x, 'silu'))));
  }
}

/** Shared context of one UNet (or ControlNet) evaluation. */
export interface StepContext {
  tembAct: Tensor; // silu(time embedding) [B, 4·C0]: every resnet's time input
  context: Tensor; // encoder_hidden_states [B, 77, Cc]
  /** Training: each resnet and transformer keeps only its inputs for the backward (autograd's checkpoint). */
  checkpoint?: boolean;
}

/** `m(x, cond)`, under activation checkpointing when the context asks for it. */
function layer(e: Engine, ctx: StepContext, m: Module, x: Tensor, cond: Tensor, f: (x: Tensor, cond: Tensor) => Tensor): Tensor {
  if (!ctx.checkpoint) return f(x, cond);
  return checkpoint(e, (xi, ci) => f(xi, ci), [x, cond, ...m.trainableParams().map(([, p]) => p.t)]);
}

/** CrossAttnDownBlock2D / DownBlock2D: resnets (+ transformers), then a downsampler. */
export class DownBlock extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly attentions?: ModuleList<Transformer2DModel>;
  readonly downsamplers?: ModuleList<Downsample2D>;

  constructor(cfg: UNetConfig, i: number) {
    super();
    const out = cfg.blockOut[i];
    const inCh = i === 0 ? cfg.blockOut[0] : cfg.blockOut[i - 1];
    const temb = cfg.blockOut[0] * 4;
    this.resnets = this.child('resnets', new ModuleList(Array.from({ length: cfg.layersPerBlock }, (_, j) =>
      new ResnetBlock2D(j === 0 ? inCh : out, out, temb, cfg.groups, cfg.eps))));
    if (cfg.downTypes[i] === 'CrossAttnDownBlock2D') {
      this.attentions = this.child('attentions', new ModuleList(Array.from({ length: cfg.layersPerBlock }, () =>
        new Transformer2DModel(out, cfg.heads[i], cfg.crossAttentionDim, cfg.groups, cfg.linearProjection, cfg.transformerLayers))));
    }
    if (i < cfg.blockOut.length - 1) this.downsamplers = this.child('downsamplers', new ModuleList([new Downsample2D(out, cfg.downsamplePadding)]));
  }

  /** Returns the block output and the skip tensors it hands to the up path. */
  forward(e: Engine, x: Tensor, ctx: StepContext): { out: Tensor; skips: Tensor[] } {
    const skips: Tensor[] = [];
    let h = x;
    this.resnets.items.forEach((resnet, j) => {
      h = layer(e, ctx, resnet, h, ctx.tembAct, (x, t) => resnet.forward(e, x, t));
      const attn = this.attentions?.items[j];
      if (attn) h = layer(e, ctx, attn, h, ctx.context, (x, c) => attn.forward(e, x, c));
      skips.push(h);
    });
    if (this.downsamplers) skips.push((h = this.downsamplers.items[0].forward(e, h)));
    skips.forEach((s, j) => e.trace(`${this.path}.res.${j}`, s));
    return { out: e.trace(this.path, h), skips };
  }
}

/** UNetMidBlock2DCrossAttn: resnet, then (transformer, resnet) pairs. */
export class MidBlock extends Module {
  readonly attentions: ModuleList<Transformer2DModel>;
  readonly resnets: ModuleList<ResnetBlock2D>;

  constructor(cfg: UNetConfig) {
    super();
    const ch = cfg.blockOut.at(-1)!;
    const temb = cfg.blockOut[0] * 4;
    this.attentions = this.child('attentions', new ModuleList([
      new Transformer2DModel(ch, cfg.heads.at(-1)!, cfg.crossAttentionDim, cfg.groups, cfg.linearProjection, cfg.transformerLayers)]));
    this.resnets = this.child('resnets', new ModuleList([0, 1].map(() => new ResnetBlock2D(ch, ch, temb, cfg.groups, cfg.eps))));
  }

  forward(e: Engine, x: Tensor, ctx: StepContext): Tensor {
    return e.tidy(() => {
      const [first, ...rest] = this.resnets.items;
      let h = layer(e, ctx, first, x, ctx.tembAct, (xi, t) => first.forward(e, xi, t));
      this.attentions.items.forEach((attn, j) => {
        h = layer(e, ctx, attn, h, ctx.context, (xi, c) => attn.forward(e, xi, c));
        h = layer(e, ctx, rest[j], h, ctx.tembAct, (xi, t) => rest[j].forward(e, xi, t));
      });
      return e.trace(this.path, h);
    });
  }
}

/** CrossAttnUpBlock2D / UpBlock2D: each resnet eats one skip (channel concat), then an upsampler. */
class UpBlock extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly attentions?: ModuleList<Transformer2DModel>;
  readonly upsamplers?: ModuleList<Upsample2D>;

  constructor(cfg: UNetConfig, i: number) {
    super();
    const rev = [...cfg.blockOut].reverse();
    const out = rev[i];
    const prevOut = i === 0 ? rev[0] : rev[i - 1];
    const inCh = rev[Math.min(i + 1, rev.length - 1)];
    const layers = cfg.layersPerBlock + 1;
    const temb = cfg.blockOut[0] * 4;
    const heads = [...cfg.heads].reverse()[i];
    this.resnets = this.child('resnets', new ModuleList(Array.from({ length: layers }, (_, j) => {
      const skipCh = j === layers - 1 ? inCh : out;
      return new ResnetBlock2D((j === 0 ? prevOut : out) + skipCh, out, temb, cfg.groups, cfg.eps);
    })));
    if (cfg.upTypes[i] === 'CrossAttnUpBlock2D') {
      this.attentions = this.child('attentions', new ModuleList(Array.from({ length: layers }, () =>
        new Transformer2DModel(out, heads, cfg.crossAttentionDim, cfg.groups, cfg.linearProjection, cfg.transformerLayers))));
    }
    if (i < cfg.blockOut.length - 1) this.upsamplers = this.child('upsamplers', new ModuleList([new Upsample2D(out)]));
  }

  get skipCount(): number {
    return this.resnets.items.length;
  }

  /** skips: this block's skip tensors, the last one consumed first; upsampleSize: the next block's last skip's [h, w]. */
  forward(e: Engine, x: Tensor, skips: Tensor[], ctx: StepContext, upsampleSize?: readonly [number, number]): Tensor {
    return e.tidy(() => {
      let h = x;
      this.resnets.items.forEach((resnet, j) => {
        h = resnet.forward(e, concat(e, [h, skips[skips.length - 1 - j]], 1), ctx.tembAct);
        if (this.attentions) h = this.attentions.items[j].forward(e, h, ctx.context);
      });
      if (this.upsamplers) h = this.upsamplers.items[0].forward(e, h, upsampleSize);
      return e.trace(this.path, h);
    });
  }
}

/** What a ControlNet adds: one residual per skip tensor and one for the mid block. */
export interface ControlResiduals {
  down: Tensor[];
  mid: Tensor;
}

export class UNet2DConditionModel extends Module {
  readonly time_embedding: TimestepEmbedding;
  readonly conv_in: Conv2d;
  readonly down_blocks: ModuleList<DownBlock>;
  readonly mid_block: MidBlock;
  readonly up_blocks: ModuleList<UpBlock>;
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;

  constructor(readonly config: UNetConfig) {
    super();
    const c0 = config.blockOut[0];
    if (config.upTypes.length !== config.blockOut.length) throw new DrError(`unet config: ${config.upTypes.length} up_block_types for ${config.blockOut.length} blocks`);
    this.conv_in = this.child('conv_in', new Conv2d(config.inChannels, c0, 3, 1, 1));
    this.time_embedding = this.child('time_embedding', new TimestepEmbedding(c0, c0 * 4));
    this.down_blocks = this.child('down_blocks', new ModuleList(config.blockOut.map((_, i) => new DownBlock(config, i))));
    this.mid_block = this.child('mid_block', new MidBlock(config));
    this.up_blocks = this.child('up_blocks', new ModuleList(config.blockOut.map((_, i) => new UpBlock(config, i))));
    this.conv_norm_out = this.child('conv_norm_out', new GroupNorm(config.groups, c0, config.eps));
    this.conv_out = this.child('conv_out', new Conv2d(c0, config.outChannels, 3, 1, 1));
  }

  /** Config from `dir`; weights from `dir` too unless given (a single-file checkpoint's component). */
  static load(e: Engine, dir: string, precision: Precision = 'auto', weights?: Checkpoint): UNet2DConditionModel {
    const unet = new UNet2DConditionModel(readUNetConfig(dir));
    loadFromCheckpoint(e, unet, weights ?? dir, { precision });
    return unet;
  }

  /** Activation dtype: that of the weights (f16 weights run f16 activations, f32 sums). */
  get dtype(): Tensor['dtype'] {
    return this.conv_in.weight.t.dtype;
  }

  /** silu(time_embedding(sinusoid(t))) for a batch: [B, 4·C0]. */
  timeEmbedding(e: Engine, timestep: Timesteps, batch: number): Tensor {
    const c0 = this.config.blockOut[0];
    const feats = timestepFeatures(timestepsPerSample(timestep, batch), c0, this.config.flipSinToCos, this.config.freqShift);
    return e.tidy(() => {
      const proj = e.trace('time_proj', e.upload(feats, [batch, c0], this.dtype));
      return this.time_embedding.forward(e, proj);
    });
  }

  /** sample [B, 4, h, w], timestep(s), encoder_hidden_states [B, 77, Cc] → noise prediction [B, 4, h, w]. */
  forward(e: Engine, sample: Tensor, timestep: Timesteps, context: Tensor, control?: ControlResiduals): Tensor {
    const B = sample.shape[0];
    return e.tidy(() => {
      // Activations run in the weights' precision; the result returns in the sample's.
      const dt = this.dtype;
      const temb = this.timeEmbedding(e, timestep, B);
      const ctx: StepContext = { tembAct: silu(e, temb), context: cast(e, context, dt) };
      let x = e.trace('conv_in', this.conv_in.forward(e, cast(e, sample, dt)));
      let skips: Tensor[] = [x];
      for (const block of this.down_blocks.items) {
        const r = block.forward(e, x, ctx);
        x = r.out;
        skips.push(...r.skips);
      }
      if (control) {
        if (control.down.length !== skips.length) throw new Error(`control: ${control.down.length} residuals for ${skips.length} skips`);
        skips = skips.map((s, i) => add(e, s, control.down[i]));
      }
      x = this.mid_block.forward(e, x, ctx);
      if (control) x = add(e, x, control.mid);
      // Any latent size runs, as in diffusers: a side that is odd at some level comes back from
      // the upsampler at its skip's size (the stride-2 convs round up, ×2 would overshoot by one).
      for (const block of this.up_blocks.items) {
        const mine = skips.splice(skips.length - block.skipCount);
        const next = skips.at(-1);
        x = block.forward(e, x, mine, ctx, next && [next.shape[2], next.shape[3]]);
      }
      const out = e.trace('conv_out', this.conv_out.forward(e, this.conv_norm_out.forward(e, x, 'silu')));
      return cast(e, out, sample.dtype);
    });
  }
}
