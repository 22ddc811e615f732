/**
 * CLIP-IQA as pyiqa's default `clipiqa` computes it (Wang et al. 2023, pyiqa's five antonym
 * prompt pairs): OpenAI CLIP RN50, image at its own size (no resize, no positional embedding
 * in the attention pool), (x − mean) / std with OpenAI's CLIP constants; image and prompt
 * features L2-normalised; logits = exp(logit_scale) · cosine; softmax within each pair; the
 * score is the mean probability of the positive prompts.
 *
 * Module paths are the OpenAI CLIP state-dict keys (`visual.layer1.0.conv1.weight`,
 * `transformer.resblocks.0.attn.in_proj_weight`, `text_projection`, ...), so the RN50 state dict
 * loads as it is once converted to safetensors. BatchNorm (eval) is an affine map per channel:
 * it is folded into the preceding bias-free convolution at load time.
 */
import { NoScore } from '../../errors.js';
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { attention } from '../../engine/ops/attention.js';
import { avgPool2d } from '../../engine/ops/pool2d.js';
import { conv2d } from '../../engine/ops/conv2d.js';
import { concat, permute, slice } from '../../engine/ops/copy.js';
import { add, div, mean, relu, sub } from '../../engine/ops/elementwise.js';
import { gather } from '../../engine/ops/gather.js';
import { matmul } from '../../engine/ops/matmul.js';
import { Module, ModuleList, loadFromCheckpoint, type Param } from '../module.js';
import { Embedding, LayerNorm, Linear } from '../nn.js';
import { BatchNorm2d, HostConv, foldBatchNorm } from './conv_bn.js';

export const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_STD = [0.26862954, 0.26130258, 0.27577711];

/** pyiqa's prompt pairs (positive first), in order. */
export const CLIPIQA_PROMPTS = [
  'Good image', 'bad image', 'Sharp image', 'blurry image', 'sharp edges', 'blurry edges',
  'High resolution image', 'low resolution image', 'Noise-free image', 'noisy image',
];
/** Their CLIP BPE tokens (start 49406 … end 49407; the rest of the 77 positions are 0). */
export const CLIPIQA_TOKENS = [
  [49406, 886, 2867, 49407], [49406, 2103, 2867, 49407],
  [49406, 8157, 2867, 49407], [49406, 21977, 2867, 49407],
  [49406, 8157, 20938, 49407], [49406, 21977, 20938, 49407],
  [49406, 1400, 9977, 2867, 49407], [49406, 1042, 9977, 2867, 49407],
  [49406, 9307, 268, 1139, 2867, 49407], [49406, 33495, 2867, 49407],
];

const BN_EPS = 1e-5;

/** conv (no bias) → BatchNorm (eval), folded into one conv at load. */
class ConvBn {
  private w?: Tensor;
  private b?: Tensor;
  constructor(readonly conv: HostConv, readonly bn: BatchNorm2d, readonly stride = 1, readonly padding = 0) {}

  fold(e: Engine): void {
    ({ weight: this.w, bias: this.b } = foldBatchNorm(e, this.conv, this.bn, BN_EPS));
  }

  forward(e: Engine, x: Tensor, relu: boolean): Tensor {
    if (!this.w || !this.b) throw new Error('ConvBn used before fold()');
    return conv2d(e, x, this.w, { stride: this.stride, padding: this.padding, bias: this.b, act: relu ? 'relu' : 'none' });
  }
}

/** The downsample branch: `-1` AvgPool2d (no params), `0` conv 1×1, `1` BatchNorm. */
class Downsample extends Module {
  readonly convBn: ConvBn;
  constructor(inCh: number, outCh: number) {
    super();
    this.convBn = new ConvBn(this.child('0', new HostConv(inCh, outCh, 1)), this.child('1', new BatchNorm2d(outCh)));
  }
}

class Bottleneck extends Module {
  readonly c1: ConvBn;
  readonly c2: ConvBn;
  readonly c3: ConvBn;
  readonly downsample?: Downsample;
  constructor(inCh: number, planes: number, readonly stride: number) {
    super();
    const out = planes * 4;
    this.c1 = new ConvBn(this.child('conv1', new HostConv(inCh, planes, 1)), this.child('bn1', new BatchNorm2d(planes)));
    this.c2 = new ConvBn(this.child('conv2', new HostConv(planes, planes, 3)), this.child('bn2', new BatchNorm2d(planes)), 1, 1);
    this.c3 = new ConvBn(this.child('conv3', new HostConv(planes, out, 1)), this.child('bn3', new BatchNorm2d(out)));
    if (stride > 1 || inCh !== out) this.downsample = this.child('downsample', new Downsample(inCh, out));
  }

  convs(): ConvBn[] {
    return [this.c1, this.c2, this.c3, ...(this.downsample ? [this.downsample.convBn] : [])];
  }

  forward(e: Engine, x: Tensor): Tensor {
    return e.tidy(() => {
      let h = this.c2.forward(e, this.c1.forward(e, x, true), true);
      if (this.stride > 1) h = avgPool2d(e, h, this.stride);
      h = this.c3.forward(e, h, false);
      let id = x;
      if (this.downsample) id = this.downsample.convBn.forward(e, this.stride > 1 ? avgPool2d(e, x, this.stride) : x, false);
      return relu(e, add(e, h, id));
    });
  }
}

/** Attention pooling: the mean token attends to [mean, tokens] (no positional embedding). */
class AttentionPool2d extends Module {
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly c_proj: Linear;
  constructor(dim: number, out: number, readonly heads: number) {
    super();
    this.k_proj = this.child('k_proj', new Linear(dim, dim));
    this.q_proj = this.child('q_proj', new Linear(dim, dim));
    this.v_proj = this.child('v_proj', new Linear(dim, dim));
    this.c_proj = this.child('c_proj', new Linear(dim, out));
  }

  /** x [1, C, H, W] → [1, out] */
  forward(e: Engine, x: Tensor): Tensor {
    return e.tidy(() => {
      const [N, C, H, W] = x.shape;
      const flat = x.reshape([N, C, H * W]);
      const meanTok = mean(e, flat, 2).reshape([N, 1, C]);
      const seq = concat(e, [meanTok, permute(e, flat, [0, 2, 1])], 1); // [N, 1 + HW, C]
      const q = this.q_proj.forward(e, meanTok);
      const o = attention(e, q, this.k_proj.forward(e, seq), this.v_proj.forward(e, seq), { heads: this.heads });
      return this.c_proj.forward(e, o).reshape([N, -1]);
    });
  }
}

/** CLIP's ModifiedResNet (RN50: layers 3, 4, 6, 3; width 64; 32 heads; output 1024). */
class ModifiedResNet extends Module {
  readonly stem: ConvBn[];
  readonly layers: ModuleList<Bottleneck>[];
  readonly attnpool: AttentionPool2d;
  constructor(blocks = [3, 4, 6, 3], width = 64, out = 1024) {
    super();
    const half = width / 2;
    this.stem = [
      new ConvBn(this.child('conv1', new HostConv(3, half, 3)), this.child('bn1', new BatchNorm2d(half)), 2, 1),
      new ConvBn(this.child('conv2', new HostConv(half, half, 3)), this.child('bn2', new BatchNorm2d(half)), 1, 1),
      new ConvBn(this.child('conv3', new HostConv(half, width, 3)), this.child('bn3', new BatchNorm2d(width)), 1, 1),
    ];
    let inCh = width;
    this.layers = blocks.map((n, i) => {
      const planes = width * 2 ** i;
      const list = Array.from({ length: n }, (_, j) => new Bottleneck(j === 0 ? inCh : planes * 4, planes, j === 0 && i > 0 ? 2 : 1));
      inCh = planes * 4;
      return this.child(`layer${i + 1}`, new ModuleList(list));
    });
    this.attnpool = this.child('attnpool', new AttentionPool2d(width * 32, out, (width * 32) / 64));
  }

  fold(e: Engine): void {
    for (const c of this.stem) c.fold(e);
    for (const l of this.layers) for (const b of l.items) for (const c of b.convs()) c.fold(e);
  }

  /** Normalised pixels [1, 3, H, W] → stem and layer outputs (traced), then the pooled feature [1, out]. */
  forward(e: Engine, x: Tensor): Tensor {
    return e.tidy(() => {
      for (const c of this.stem) x = c.forward(e, x, true);
      x = e.trace('stem', avgPool2d(e, x, 2));
      for (const [i, l] of this.layers.entries()) {
        for (const b of l.items) x = b.forward(e, x);
        e.trace(`layer${i + 1}`, x);
      }
      return this.attnpool.forward(e, x);
    });
  }
}

class TextMlp extends Module {
  readonly c_fc: Linear;
  readonly c_proj: Linear;
  constructor(d: number) {
    super();
    this.c_fc = this.child('c_fc', new Linear(d, 4 * d));
    this.c_proj = this.child('c_proj', new Linear(4 * d, d));
  }
}

/** nn.MultiheadAttention's params: fused in_proj [3d, d] and out_proj. */
class MultiheadAttention extends Module {
  readonly in_proj_weight: Param;
  readonly in_proj_bias: Param;
  readonly out_proj: Linear;
  constructor(readonly d: number, readonly heads: number) {
    super();
    this.in_proj_weight = this.param('in_proj_weight', [3 * d, d]);
    this.in_proj_bias = this.param('in_proj_bias', [3 * d]);
    this.out_proj = this.child('out_proj', new Linear(d, d));
  }

  /** Causal self-attention of x [B, L, d]. */
  forward(e: Engine, x: Tensor): Tensor {
    const { d } = this;
    const qkv = matmul(e, x, this.in_proj_weight.t, { transB: true, bias: this.in_proj_bias.t }); // [B, L, 3d]
    const op = (offset: number) => ({ t: qkv, stride: 3 * d, offset });
    const o = attention(e, op(0), op(d), op(2 * d), { heads: this.heads, headDim: d / this.heads, causal: true });
    return this.out_proj.forward(e, o);
  }
}

class ResidualAttentionBlock extends Module {
  readonly attn: MultiheadAttention;
  readonly ln_1: LayerNorm;
  readonly mlp: TextMlp;
  readonly ln_2: LayerNorm;
  constructor(d: number, heads: number) {
    super();
    this.attn = this.child('attn', new MultiheadAttention(d, heads));
    this.ln_1 = this.child('ln_1', new LayerNorm(d, 1e-5));
    this.mlp = this.child('mlp', new TextMlp(d));
    this.ln_2 = this.child('ln_2', new LayerNorm(d, 1e-5));
  }

  forward(e: Engine, x: Tensor): Tensor {
    return e.tidy(() => {
      const h = add(e, x, this.attn.forward(e, this.ln_1.forward(e, x)));
      return add(e, h, this.mlp.c_proj.forward(e, this.mlp.c_fc.forward(e, this.ln_2.forward(e, h), 'quick_gelu')));
    });
  }
}

class TextTransformer extends Module {
  readonly resblocks: ModuleList<ResidualAttentionBlock>;
  constructor(d: number, layers: number, heads: number) {
    super();
    this.resblocks = this.child('resblocks', new ModuleList(Array.from({ length: layers }, () => new ResidualAttentionBlock(d, heads))));
  }
}

/** OpenAI CLIP RN50 (image tower and text tower) under the OpenAI state-dict key names. */
export class ClipRn50 extends Module {
  readonly visual: ModifiedResNet;
  readonly transformer: TextTransformer;
  readonly token_embedding: Embedding;
  readonly positional_embedding: Param;
  readonly ln_final: LayerNorm;
  readonly text_projection: Param;
  readonly logit_scale: Param;

  constructor(readonly textWidth = 512, textLayers = 12, readonly context = 77, vocab = 49408, embed = 1024) {
    super();
    this.visual = this.child('visual', new ModifiedResNet([3, 4, 6, 3], 64, embed));
    this.transformer = this.child('transformer', new TextTransformer(textWidth, textLayers, textWidth / 64));
    this.token_embedding = this.child('token_embedding', new Embedding(vocab, textWidth));
    this.positional_embedding = this.param('positional_embedding', [context, textWidth]);
    this.ln_final = this.child('ln_final', new LayerNorm(textWidth, 1e-5));
    this.text_projection = this.param('text_projection', [textWidth, embed]);
    this.logit_scale = this.param('logit_scale', [1], true);
  }

  /**
   * Text features [B, embed] of token rows (each start … 49407, zero-padded): the output at the
   * end token (the row's largest id), projected. Attention is causal, so the positions after the
   * last end token cannot change it: the sequence is cut there.
   */
  encodeText(e: Engine, rows: number[][]): Tensor {
    return e.tidy(() => {
      const eos = rows.map((r) => r.indexOf(Math.max(...r)));
      const L = Math.max(...eos) + 1;
      const B = rows.length;
      const ids = Int32Array.from({ length: B * L }, (_, i) => rows[Math.floor(i / L)][i % L] ?? 0);
      let x = add(e, gather(e, this.token_embedding.weight.table, e.upload(ids, [B, L])), slice(e, this.positional_embedding.t, 0, 0, L));
      for (const block of this.transformer.resblocks.items) x = block.forward(e, x);
      const last = this.ln_final.forward(e, x).reshape([B * L, this.textWidth]);
      const pooled = gather(e, last, e.upload(Int32Array.from(eos, (p, b) => b * L + p), [B]));
      return matmul(e, pooled, this.text_projection.t);
    });
  }

  /** Normalised pixels [1, 3, H, W] → image feature [1, embed]. */
  encodeImage(e: Engine, pixels: Tensor): Tensor {
    return this.visual.forward(e, pixels);
  }
}

/** The CLIP-IQA metric: the model, the prompt features (encoded on first use) and the score. */
export class ClipIqa {
  readonly model = new ClipRn50();
  private textFeatures?: Float32Array;
  private mean?: Tensor;
  private std?: Tensor;

  /** Loads the RN50 state dict (safetensors, OpenAI key names) and folds BatchNorm. */
  load(e: Engine, file: string): void {
    loadFromCheckpoint(e, this.model, file, { precision: 'f32' });
    this.model.visual.fold(e);
    this.mean = e.keep(e.upload(Float32Array.from(CLIP_MEAN), [1, 3, 1, 1]));
    this.std = e.keep(e.upload(Float32Array.from(CLIP_STD), [1, 3, 1, 1]));
  }

  /** The 10 prompt features [10 × embed] (host), encoded once. */
  async promptFeatures(e: Engine): Promise<Float32Array> {
    if (!this.textFeatures) {
      const t = this.model.encodeText(e, CLIPIQA_TOKENS);
      this.textFeatures = await e.read(t);
      e.release(t);
    }
    return this.textFeatures;
  }

  /** Image [1, 3, H, W] in [0, 1] → the pooled image feature [embed] (host). */
  async imageFeature(e: Engine, x01: Tensor): Promise<Float32Array> {
    if (!this.mean || !this.std) throw new Error('ClipIqa used before load()');
    const [, , H, W] = x01.shape;
    if (H < 32 || W < 32) throw new NoScore(`${W}x${H} is smaller than the 32x32 that CLIP RN50 needs (it downsamples by 32)`);
    const f = e.tidy(() => this.model.encodeImage(e, div(e, sub(e, x01, this.mean!), this.std!)));
    const out = await e.read(f);
    e.release(f);
    return out;
  }

  /** The 10 logits and the score of an image feature, each step rounded to float32 as pyiqa's are. */
  async scoreFeature(e: Engine, feature: Float32Array): Promise<{ logits: number[]; score: number }> {
    const text = await this.promptFeatures(e);
    const D = feature.length;
    const norm = (v: Float32Array) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
    const fi = norm(feature);
    const scale = Math.fround(Math.exp(this.model.logit_scale.hostValue[0]));
    const logits = CLIPIQA_TOKENS.map((_, k) => {
      const t = text.subarray(k * D, (k + 1) * D);
      let dot = 0;
      for (let i = 0; i < D; i++) dot += feature[i] * t[i];
      return Math.fround(scale * Math.fround(dot / (fi * norm(t))));
    });
    let sum = 0; // softmax within each pair: p(positive) = 1 / (1 + exp(l_neg − l_pos))
    for (let k = 0; k < logits.length; k += 2) sum += 1 / (1 + Math.exp(logits[k + 1] - logits[k]));
    return { logits, score: sum / (logits.length / 2) };
  }

  async score(e: Engine, x01: Tensor): Promise<number> {
    return (await this.scoreFeature(e, await this.imageFeature(e, x01))).score;
  }
}
