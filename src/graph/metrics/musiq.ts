/**
 * MUSIQ (Ke et al. 2021) as pyiqa's `MUSIQ` class computes it with one output class (the KonIQ
 * head): multi-scale 32×32 patches, a per-patch ResNet stem (weight-standardised convs with
 * GroupNorm, one bottleneck), a Linear patch embedding, hash-based 2-D spatial and scale
 * embeddings, a CLS token, 14 pre-norm transformer blocks, and the head on the CLS output.
 * Module paths are pyiqa's state-dict keys (`conv_root.weight`, `block1.conv1.weight`,
 * `transformer_encoder.transformer.encoderblock_0.attention.query.weight`, `head.weight`, ...).
 *
 * Preprocessing (pyiqa `get_multiscale_patches`, on the host): x = 2x − 1; for each longer side
 * L in 224, 384: aspect-preserving size (round half to even), torch bicubic (a = −0.75, no
 * antialias); zero padding to multiples of 32 (half before); patches in (C, 32, 32) order with
 * hashed grid index, scale index and mask 1; then the original image's patches (scale 2).
 * pyiqa pads each resized scale to ceil(L/32)² rows with mask-0 rows whose attention logits are
 * set to −1000: exp(−1000 − max) underflows to exactly 0 in float32, so those rows never reach
 * a real token or the CLS, and they are left out here rather than computed and masked.
 */
import { DrError } from '../../errors.js';
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { attention } from '../../engine/ops/attention.js';
import { conv2d } from '../../engine/ops/conv2d.js';
import { concat, permute, slice } from '../../engine/ops/copy.js';
import { add, relu } from '../../engine/ops/elementwise.js';
import { gather } from '../../engine/ops/gather.js';
import { groupNorm } from '../../engine/ops/norms.js';
import { maxPool2d } from '../../engine/ops/pool2d.js';
import { Module, loadFromCheckpoint, type Param } from '../module.js';
import { LayerNorm, Linear } from '../nn.js';

const PATCH = 32;
const GRID = 10;
const LONGER_SIDES = [224, 384];
/** Patches run through the patch network at once (bounds the 64×16×16 activations). */
const PATCH_CHUNK = 256;

/** Weight-standardised conv (no bias): (w − mean) / (unbiased std + 1e-5) per output channel, done once at load. */
class StdConv extends Module {
  readonly weight: Param;
  private w?: Tensor;
  constructor(readonly inCh: number, readonly outCh: number, readonly kernel: number) {
    super();
    this.weight = this.param('weight', [outCh, inCh, kernel, kernel], true);
  }

  standardise(e: Engine): void {
    const w = this.weight.hostValue;
    const n = w.length / this.outCh;
    const out = new Float32Array(w.length);
    for (let o = 0; o < this.outCh; o++) {
      const row = w.subarray(o * n, (o + 1) * n);
      let m = 0;
      for (const v of row) m += v;
      m /= n;
      let ss = 0;
      for (const v of row) ss += (v - m) ** 2;
      const sd = Math.sqrt(ss / (n - 1)) + 1e-5;
      for (let i = 0; i < n; i++) out[o * n + i] = (row[i] - m) / sd;
    }
    this.w = e.createWeight(new Uint8Array(out.buffer), [this.outCh, this.inCh, this.kernel, this.kernel], 'f32');
  }

  /** TF 'same' padding at stride 1 (k // 2 each side for these odd kernels), else the explicit [top, bottom, left, right]. */
  forward(e: Engine, x: Tensor, stride = 1, padding?: [number, number, number, number]): Tensor {
    if (!this.w) throw new Error('StdConv used before standardise()');
    return conv2d(e, x, this.w, { stride, padding: padding ?? (this.kernel - 1) / 2 });
  }
}

class GroupNorm32 extends Module {
  readonly weight: Param;
  readonly bias: Param;
  constructor(ch: number, readonly eps: number) {
    super();
    this.weight = this.param('weight', [ch]);
    this.bias = this.param('bias', [ch]);
  }

  forward(e: Engine, x: Tensor, relu: boolean): Tensor {
    return groupNorm(e, x, this.weight.t, this.bias.t, 32, this.eps, relu ? 'relu' : 'none');
  }
}

class Bottleneck extends Module {
  readonly conv1: StdConv;
  readonly gn1: GroupNorm32;
  readonly conv2: StdConv;
  readonly gn2: GroupNorm32;
  readonly conv3: StdConv;
  readonly gn3: GroupNorm32;
  readonly conv_proj: StdConv;
  readonly gn_proj: GroupNorm32;
  constructor(inCh: number, outCh: number) {
    super();
    this.conv1 = this.child('conv1', new StdConv(inCh, inCh, 1));
    this.gn1 = this.child('gn1', new GroupNorm32(inCh, 1e-4));
    this.conv2 = this.child('conv2', new StdConv(inCh, inCh, 3));
    this.gn2 = this.child('gn2', new GroupNorm32(inCh, 1e-4));
    this.conv3 = this.child('conv3', new StdConv(inCh, outCh, 1));
    this.gn3 = this.child('gn3', new GroupNorm32(outCh, 1e-4));
    this.conv_proj = this.child('conv_proj', new StdConv(inCh, outCh, 1));
    this.gn_proj = this.child('gn_proj', new GroupNorm32(outCh, 1e-4));
  }

  convs(): StdConv[] {
    return [this.conv1, this.conv2, this.conv3, this.conv_proj];
  }

  forward(e: Engine, x: Tensor): Tensor {
    const id = this.gn_proj.forward(e, this.conv_proj.forward(e, x), false);
    let h = this.gn1.forward(e, this.conv1.forward(e, x), true);
    h = this.gn2.forward(e, this.conv2.forward(e, h), true);
    h = this.gn3.forward(e, this.conv3.forward(e, h), false);
    return relu(e, add(e, h, id));
  }
}

class Attention extends Module {
  readonly query: Linear;
  readonly key: Linear;
  readonly value: Linear;
  readonly out: Linear;
  constructor(d: number, readonly heads: number) {
    super();
    this.query = this.child('query', new Linear(d, d));
    this.key = this.child('key', new Linear(d, d));
    this.value = this.child('value', new Linear(d, d));
    this.out = this.child('out', new Linear(d, d));
  }

  forward(e: Engine, x: Tensor): Tensor {
    const o = attention(e, this.query.forward(e, x), this.key.forward(e, x), this.value.forward(e, x), { heads: this.heads });
    return this.out.forward(e, o);
  }
}

class Mlp extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  constructor(d: number, hidden: number) {
    super();
    this.fc1 = this.child('fc1', new Linear(d, hidden));
    this.fc2 = this.child('fc2', new Linear(hidden, d));
  }
}

class EncoderBlock extends Module {
  readonly norm1: LayerNorm;
  readonly attention: Attention;
  readonly norm2: LayerNorm;
  readonly mlp: Mlp;
  constructor(d: number, mlp: number, heads: number) {
    super();
    this.norm1 = this.child('norm1', new LayerNorm(d, 1e-6));
    this.attention = this.child('attention', new Attention(d, heads));
    this.norm2 = this.child('norm2', new LayerNorm(d, 1e-6));
    this.mlp = this.child('mlp', new Mlp(d, mlp));
  }

  forward(e: Engine, x: Tensor): Tensor {
    return e.tidy(() => {
      const h = add(e, x, this.attention.forward(e, this.norm1.forward(e, x)));
      return add(e, h, this.mlp.fc2.forward(e, this.mlp.fc1.forward(e, this.norm2.forward(e, h), 'gelu')));
    });
  }
}

class Blocks extends Module {
  readonly items: EncoderBlock[];
  constructor(layers: number, d: number, mlp: number, heads: number) {
    super();
    this.items = Array.from({ length: layers }, (_, i) => this.child(`encoderblock_${i}`, new EncoderBlock(d, mlp, heads)));
  }
}

class PosEmbed extends Module {
  readonly position_emb: Param;
  constructor(d: number) {
    super();
    this.position_emb = this.param('position_emb', [1, GRID * GRID, d]);
  }
}

class ScaleEmbed extends Module {
  readonly scale_emb: Param;
  constructor(scales: number, d: number) {
    super();
    this.scale_emb = this.param('scale_emb', [scales, d]);
  }
}

class TransformerEncoder extends Module {
  readonly posembed_input: PosEmbed;
  readonly scaleembed_input: ScaleEmbed;
  readonly cls: Param;
  readonly encoder_norm: LayerNorm;
  readonly transformer: Blocks;
  constructor(readonly d: number, mlp = 1152, heads = 6, layers = 14, scales = 3) {
    super();
    this.posembed_input = this.child('posembed_input', new PosEmbed(d));
    this.scaleembed_input = this.child('scaleembed_input', new ScaleEmbed(scales, d));
    this.cls = this.param('cls', [1, 1, d]);
    this.encoder_norm = this.child('encoder_norm', new LayerNorm(d, 1e-6));
    this.transformer = this.child('transformer', new Blocks(layers, d, mlp, heads));
  }

  /** tokens [N, d], spatial and scale indices [N] (i32) → CLS after the final LayerNorm [1, d]. */
  forward(e: Engine, tokens: Tensor, spatial: Tensor, scale: Tensor): Tensor {
    return e.tidy(() => {
      const { d } = this;
      let x = add(e, tokens, gather(e, this.posembed_input.position_emb.t.reshape([GRID * GRID, d]), spatial));
      x = add(e, x, gather(e, this.scaleembed_input.scale_emb.t, scale));
      x = concat(e, [this.cls.t.reshape([1, d]), x], 0).reshape([1, -1, d]);
      for (const b of this.transformer.items) x = b.forward(e, x);
      return this.encoder_norm.forward(e, slice(e, x, 1, 0, 1).reshape([1, d]));
    });
  }
}

/** Patches of one image on the host: pixel rows [n, 3·32·32] and their hashed position and scale indices. */
export interface MusiqPatches {
  pixels: Float32Array;
  spatial: Int32Array;
  scale: Int32Array;
  count: number;
}

export class Musiq extends Module {
  readonly conv_root: StdConv;
  readonly gn_root: GroupNorm32;
  readonly block1: Bottleneck;
  readonly embedding: Linear;
  readonly transformer_encoder: TransformerEncoder;
  readonly head: Linear;

  constructor(readonly hidden = 384) {
    super();
    this.conv_root = this.child('conv_root', new StdConv(3, 64, 7));
    this.gn_root = this.child('gn_root', new GroupNorm32(64, 1e-6));
    this.block1 = this.child('block1', new Bottleneck(64, 256));
    this.embedding = this.child('embedding', new Linear(256 * (PATCH / 4) ** 2, hidden));
    this.transformer_encoder = this.child('transformer_encoder', new TransformerEncoder(hidden));
    this.head = this.child('head', new Linear(hidden, 1));
  }

  /** Loads pyiqa's MUSIQ state dict (safetensors, keys unchanged; one-output head) and standardises the conv weights. */
  load(e: Engine, file: string): void {
    loadFromCheckpoint(e, this, file, { precision: 'f32' });
    for (const c of [this.conv_root, ...this.block1.convs()]) c.standardise(e);
  }

  /** Patch rows [n, 3072] → patch embeddings [n, hidden], PATCH_CHUNK patches per pass. */
  embedPatches(e: Engine, pixels: Tensor): Tensor {
    const n = pixels.shape[0];
    const parts: Tensor[] = [];
    for (let first = 0; first < n; first += PATCH_CHUNK) {
      const m = Math.min(PATCH_CHUNK, n - first);
      parts.push(e.tidy(() => {
        const x = slice(e, pixels, 0, first, first + m).reshape([m, 3, PATCH, PATCH]);
        // conv 7×7 stride 2, TF 'same' on 32: pad 2 before, 3 after → 16×16
        let h = this.gn_root.forward(e, this.conv_root.forward(e, x, 2, [2, 3, 2, 3]), true);
        // max pool 3×3 stride 2, TF 'same' on 16: pad 0 before, 1 after with zeros (pyiqa's
        // ExactPadding2d); the input is ≥ 0 after the ReLU, so zeros never win a window.
        h = concat(e, [h, e.zeros([m, 64, 16, 1])], 3);
        h = maxPool2d(e, concat(e, [h, e.zeros([m, 64, 1, 17])], 2), 3, 2);
        h = this.block1.forward(e, h); // [m, 256, 8, 8]
        return this.embedding.forward(e, permute(e, h, [0, 2, 3, 1]).reshape([m, -1]));
      }));
    }
    return parts.length === 1 ? parts[0] : e.tidy(() => concat(e, parts, 0));
  }

  /** The score for the patches of one image (the head on the CLS output). */
  async scorePatches(e: Engine, p: MusiqPatches): Promise<number> {
    const out = e.tidy(() => {
      const tokens = this.embedPatches(e, e.upload(p.pixels, [p.count, 3 * PATCH * PATCH]));
      const cls = e.trace('encoder_out_cls', this.transformer_encoder.forward(e, tokens, e.upload(p.spatial, [p.count]), e.upload(p.scale, [p.count])));
      return this.head.forward(e, cls);
    });
    const v = await e.read(out);
    e.release(out);
    return v[0];
  }

  /** Image [3, H, W] in [0, 1] (planar, host) → score. */
  async score(e: Engine, planar01: Float32Array, H: number, W: number): Promise<number> {
    return this.scorePatches(e, musiqPatches(planar01, H, W));
  }
}

/** Python's round(): half to even. */
const roundHalfEven = (x: number): number => {
  const f = Math.floor(x);
  const d = x - f;
  return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
};

/** torch's cubic convolution weights (a = −0.75) for fraction t, in float32 like its CPU kernel. */
function cubicWeights(t: number): number[] {
  const A = -0.75;
  const c1 = (x: number) => ((A + 2) * x - (A + 3)) * x * x + 1;
  const c2 = (x: number) => ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  return [c2(t + 1), c1(t), c1(1 - t), c2(2 - t)].map(Math.fround);
}

/** Source taps (clamped) and weights per output index of F.interpolate(bicubic, align_corners=False). */
function cubicTaps(inSize: number, outSize: number): { idx: Int32Array; w: Float32Array } {
  const scale = Math.fround(inSize / outSize);
  const idx = new Int32Array(outSize * 4);
  const w = new Float32Array(outSize * 4);
  for (let o = 0; o < outSize; o++) {
    const real = Math.fround(Math.fround(scale * (o + 0.5)) - 0.5);
    const i0 = Math.floor(real);
    const ws = cubicWeights(Math.fround(real - i0));
    for (let k = 0; k < 4; k++) {
      idx[o * 4 + k] = Math.min(Math.max(i0 - 1 + k, 0), inSize - 1);
      w[o * 4 + k] = ws[k];
    }
  }
  return { idx, w };
}

/** torch bicubic resize of planar [3, H, W] to [3, oh, ow] (no antialias, no clamping). */
export function resizeBicubicTorch(x: Float32Array, H: number, W: number, oh: number, ow: number): Float32Array {
  const ty = cubicTaps(H, oh);
  const tx = cubicTaps(W, ow);
  const out = new Float32Array(3 * oh * ow);
  const row = new Float64Array(4);
  for (let c = 0; c < 3; c++) {
    const plane = c * H * W;
    for (let y = 0; y < oh; y++) {
      for (let xo = 0; xo < ow; xo++) {
        for (let k = 0; k < 4; k++) {
          const r = plane + ty.idx[y * 4 + k] * W;
          let s = 0;
          for (let j = 0; j < 4; j++) s += tx.w[xo * 4 + j] * x[r + tx.idx[xo * 4 + j]];
          row[k] = s;
        }
        out[(c * oh + y) * ow + xo] = ty.w[y * 4] * row[0] + ty.w[y * 4 + 1] * row[1] + ty.w[y * 4 + 2] * row[2] + ty.w[y * 4 + 3] * row[3];
      }
    }
  }
  return out;
}

/** torch nearest resize of 0..GRID−1 to `count` positions (float32 scale, as F.interpolate). */
function hashGrid(count: number): number[] {
  const scale = Math.fround(GRID / count);
  return Array.from({ length: count }, (_, i) => Math.min(Math.floor(Math.fround(i * scale)), GRID - 1));
}

/** Appends the 32×32 patches of planar [3, h, w] (zero-padded to multiples of 32, half before) with their indices. */
function addPatches(rows: Float32Array[], meta: [number, number][], x: Float32Array, h: number, w: number, scaleId: number): void {
  const [ch, cw] = [Math.ceil(h / PATCH), Math.ceil(w / PATCH)];
  const top = (ch * PATCH - h) >> 1;
  const left = (cw * PATCH - w) >> 1;
  const [gh, gw] = [hashGrid(ch), hashGrid(cw)];
  for (let py = 0; py < ch; py++) {
    for (let px = 0; px < cw; px++) {
      const patch = new Float32Array(3 * PATCH * PATCH);
      for (let c = 0; c < 3; c++) {
        for (let i = 0; i < PATCH; i++) {
          const y = py * PATCH + i - top;
          if (y < 0 || y >= h) continue;
          for (let j = 0; j < PATCH; j++) {
            const xx = px * PATCH + j - left;
            if (xx >= 0 && xx < w) patch[(c * PATCH + i) * PATCH + j] = x[(c * h + y) * w + xx];
          }
        }
      }
      rows.push(patch);
      meta.push([GRID * gh[py] + gw[px], scaleId]);
    }
  }
}

/** pyiqa's multi-scale patches of planar [3, H, W] in [0, 1], without the mask-0 padding rows. */
export function musiqPatches(planar01: Float32Array, H: number, W: number): MusiqPatches {
  if (H < 1 || W < 1) throw new DrError(`musiq: empty ${W}x${H} image`);
  const x = planar01.map((v) => Math.fround((v - 0.5) * 2));
  const rows: Float32Array[] = [];
  const meta: [number, number][] = [];
  for (const [s, L] of LONGER_SIDES.entries()) {
    const ratio = L / Math.max(H, W);
    const [rh, rw] = [roundHalfEven(H * ratio), roundHalfEven(W * ratio)];
    addPatches(rows, meta, resizeBicubicTorch(x, H, W, rh, rw), rh, rw, s);
  }
  addPatches(rows, meta, x, H, W, LONGER_SIDES.length);
  const pixels = new Float32Array(rows.length * 3 * PATCH * PATCH);
  rows.forEach((r, i) => pixels.set(r, i * r.length));
  return { pixels, spatial: Int32Array.from(meta, (m) => m[0]), scale: Int32Array.from(meta, (m) => m[1]), count: rows.length };
}
