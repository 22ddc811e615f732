// The diffusers building blocks SD 1.5's UNet, VAE and ControlNet share. Attribute
// names are diffusers' module names, so each param's path is its checkpoint key.
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { attention } from '../../engine/ops/attention.js';
import { add, geglu, scale } from '../../engine/ops/elementwise.js';
import { permute, upsampleNearest, upsampleNearest2x } from '../../engine/ops/copy.js';
import { Module, ModuleList } from '../module.js';
import { Conv2d, GroupNorm, LayerNorm, Linear } from '../nn.js';

/** ResnetBlock2D: GN → SiLU → conv, + time embedding, GN → SiLU → conv, + shortcut. */
export class ResnetBlock2D extends Module {
  readonly norm1: GroupNorm;
  readonly conv1: Conv2d;
  readonly time_emb_proj?: Linear;
  readonly norm2: GroupNorm;
  readonly conv2: Conv2d;
  readonly conv_shortcut?: Conv2d;

  constructor(inCh: number, outCh: number, tembCh: number | undefined, groups: number, eps: number, readonly outputScale = 1) {
    super();
    this.norm1 = this.child('norm1', new GroupNorm(groups, inCh, eps));
    this.conv1 = this.child('conv1', new Conv2d(inCh, outCh, 3, 1, 1));
    if (tembCh !== undefined) this.time_emb_proj = this.child('time_emb_proj', new Linear(tembCh, outCh));
    this.norm2 = this.child('norm2', new GroupNorm(groups, outCh, eps));
    this.conv2 = this.child('conv2', new Conv2d(outCh, outCh, 3, 1, 1));
    if (inCh !== outCh) this.conv_shortcut = this.child('conv_shortcut', new Conv2d(inCh, outCh, 1));
  }

  /** x [B, Cin, H, W], silu(temb) [B, T] → [B, Cout, H, W] */
  forward(e: Engine, x: Tensor, tembAct?: Tensor): Tensor {
    return e.tidy(() => {
      let h = this.conv1.forward(e, this.norm1.forward(e, x, 'silu')); // [B, Cout, H, W]
      if (this.time_emb_proj && tembAct) {
        const t = this.time_emb_proj.forward(e, tembAct); // [B, Cout]
        h = add(e, h, t.reshape([t.shape[0], t.shape[1], 1, 1]));
      }
      h = this.conv2.forward(e, this.norm2.forward(e, h, 'silu'));
      const skip = this.conv_shortcut ? this.conv_shortcut.forward(e, x) : x;
      const out = add(e, skip, h);
      return e.trace(this.path, this.outputScale === 1 ? out : scale(e, out, 1 / this.outputScale));
    });
  }
}

/** diffusers' Attention with to_q/to_k/to_v and to_out.0 (self or cross). */
export class Attention extends Module {
  readonly to_q: Linear;
  readonly to_k: Linear;
  readonly to_v: Linear;
  readonly to_out: ModuleList<Linear>;

  constructor(queryDim: number, contextDim: number, readonly heads: number, headDim: number, qkvBias: boolean) {
    super();
    const inner = heads * headDim;
    this.to_q = this.child('to_q', new Linear(queryDim, inner, qkvBias));
    this.to_k = this.child('to_k', new Linear(contextDim, inner, qkvBias));
    this.to_v = this.child('to_v', new Linear(contextDim, inner, qkvBias));
    this.to_out = this.child('to_out', new ModuleList([new Linear(inner, queryDim)]));
  }

  /** x [B, L, C], context [B, Lc, Cc] (self-attention without) → [B, L, C] */
  forward(e: Engine, x: Tensor, context = x): Tensor {
    return e.tidy(() => {
      const q = this.to_q.forward(e, x); // [B, L, inner]
      const k = this.to_k.forward(e, context); // [B, Lc, inner]
      const v = this.to_v.forward(e, context); // [B, Lc, inner]
      const o = attention(e, q, k, v, { heads: this.heads }); // [B, L, inner]
      return e.trace(this.path, this.to_out.items[0].forward(e, o));
    });
  }
}

/** GEGLU feed-forward: net.0.proj (C → 2·inner), hidden·gelu(gate), net.2 (inner → C). */
class FeedForward extends Module {
  readonly net: ModuleList<Module>;
  private readonly proj: Linear;
  private readonly out: Linear;

  constructor(dim: number, mult = 4) {
    super();
    const inner = dim * mult;
    const gate = new GegluProjection(dim, inner);
    this.out = new Linear(inner, dim);
    // net.1 is dropout: no params, kept as an index gap like the checkpoint.
    this.net = this.child('net', new ModuleList<Module>([gate, new Dropout(), this.out]));
    this.proj = gate.proj;
  }

  forward(e: Engine, x: Tensor): Tensor {
    return e.tidy(() => e.trace(this.path, this.out.forward(e, geglu(e, this.proj.forward(e, x)))));
  }
}

class GegluProjection extends Module {
  readonly proj: Linear;
  constructor(dim: number, inner: number) {
    super();
    this.proj = this.child('proj', new Linear(dim, inner * 2));
  }
}

class Dropout extends Module {}

/** BasicTransformerBlock: self-attention, cross-attention, GEGLU MLP, each pre-norm + residual. */
export class BasicTransformerBlock extends Module {
  readonly norm1: LayerNorm;
  readonly attn1: Attention;
  readonly norm2: LayerNorm;
  readonly attn2: Attention;
  readonly norm3: LayerNorm;
  readonly ff: FeedForward;

  constructor(dim: number, heads: number, headDim: number, contextDim: number) {
    super();
    this.norm1 = this.child('norm1', new LayerNorm(dim, 1e-5));
    this.attn1 = this.child('attn1', new Attention(dim, dim, heads, headDim, false));
    this.norm2 = this.child('norm2', new LayerNorm(dim, 1e-5));
    this.attn2 = this.child('attn2', new Attention(dim, contextDim, heads, headDim, false));
    this.norm3 = this.child('norm3', new LayerNorm(dim, 1e-5));
    this.ff = this.child('ff', new FeedForward(dim));
  }

  /** x [B, L, C], context [B, 77, Cc] → [B, L, C] */
  forward(e: Engine, x: Tensor, context: Tensor): Tensor {
    return e.tidy(() => {
      let h = add(e, x, this.attn1.forward(e, e.trace(`${this.norm1.path}`, this.norm1.forward(e, x))));
      h = add(e, h, this.attn2.forward(e, this.norm2.forward(e, h), context));
      return e.trace(this.path, add(e, h, this.ff.forward(e, this.norm3.forward(e, h))));
    });
  }
}

/** Transformer2DModel: GN, proj_in, transformer blocks over H·W tokens, proj_out, + residual. */
export class Transformer2DModel extends Module {
  readonly norm: GroupNorm;
  readonly proj_in: Conv2d | Linear;
  readonly transformer_blocks: ModuleList<BasicTransformerBlock>;
  readonly proj_out: Conv2d | Linear;

  constructor(channels: number, heads: number, contextDim: number, groups: number, readonly linearProjection: boolean, layers = 1) {
    super();
    const headDim = channels / heads;
    this.norm = this.child('norm', new GroupNorm(groups, channels, 1e-6));
    this.proj_in = this.child('proj_in', linearProjection ? new Linear(channels, channels) : new Conv2d(channels, channels, 1));
    this.transformer_blocks = this.child('transformer_blocks', new ModuleList(
      Array.from({ length: layers }, () => new BasicTransformerBlock(channels, heads, headDim, contextDim))));
    this.proj_out = this.child('proj_out', linearProjection ? new Linear(channels, channels) : new Conv2d(channels, channels, 1));
  }

  /** x [B, C, H, W], context [B, 77, Cc] → [B, C, H, W] */
  forward(e: Engine, x: Tensor, context: Tensor): Tensor {
    const [B, C, H, W] = x.shape;
    return e.tidy(() => {
      const normed = e.trace(this.norm.path, this.norm.forward(e, x));
      let tokens: Tensor; // [B, H·W, C]
      if (this.proj_in instanceof Conv2d) {
        const p = e.trace(this.proj_in.path, this.proj_in.forward(e, normed));
        tokens = permute(e, p.reshape([B, C, H * W]), [0, 2, 1]);
      } else {
        tokens = this.proj_in.forward(e, permute(e, normed.reshape([B, C, H * W]), [0, 2, 1]));
      }
      for (const block of this.transformer_blocks.items) tokens = block.forward(e, tokens, context);
      let out: Tensor; // [B, C, H, W]
      if (this.proj_out instanceof Conv2d) {
        out = this.proj_out.forward(e, permute(e, tokens, [0, 2, 1]).reshape([B, C, H, W]));
      } else {
        out = permute(e, this.proj_out.forward(e, tokens), [0, 2, 1]).reshape([B, C, H, W]);
      }
      e.trace(this.proj_out.path, out);
      return e.trace(this.path, add(e, out, x));
    });
  }
}

/** Downsample2D: a stride-2 3×3 conv. */
export class Downsample2D extends Module {
  readonly conv: Conv2d;
  constructor(channels: number, padding: number) {
    super();
    this.conv = this.child('conv', new Conv2d(channels, channels, 3, 2, padding));
  }

  forward(e: Engine, x: Tensor): Tensor {
    return e.trace(this.path, this.conv.forward(e, x));
  }
}

/** Upsample2D: nearest ×2 (or to `size`, as diffusers' upsample_size), then a 3×3 conv. */
export class Upsample2D extends Module {
  readonly conv: Conv2d;
  constructor(channels: number) {
    super();
    this.conv = this.child('conv', new Conv2d(channels, channels, 3, 1, 1));
  }

  forward(e: Engine, x: Tensor, size?: readonly [number, number]): Tensor {
    return e.tidy(() => e.trace(this.path, this.conv.forward(e, size ? upsampleNearest(e, x, size[0], size[1]) : upsampleNearest2x(e, x))));
  }
}
