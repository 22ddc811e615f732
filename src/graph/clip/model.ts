// CLIP as transformers' CLIPModel lays it out: every attribute name below is the
// checkpoint key segment, so `vision_model.encoder.layers.3.mlp.fc1.weight` is
// this.vision_model.encoder.layers.items[3].mlp.fc1.weight.
import { DrError } from '../../errors.js';
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { attention } from '../../engine/ops/attention.js';
import { activationFromConfig, type Activation } from '../../engine/ops/common.js';
import { add, scale } from '../../engine/ops/elementwise.js';
import { cast, concat, expand, permute, slice } from '../../engine/ops/copy.js';
import { gather } from '../../engine/ops/gather.js';
import { matmul } from '../../engine/ops/matmul.js';
import { l2Normalize } from '../../engine/ops/norms.js';
import { Checkpoint } from '../../weights/checkpoint.js';
import { ConfigFile } from '../config.js';
import { Module, ModuleList, loadFromCheckpoint, loadModule, type Param, type Precision } from '../module.js';
import { Conv2d, Embedding, LayerNorm, Linear } from '../nn.js';

interface TowerConfig {
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  eps: number;
  act: Activation;
}

export interface ClipConfig {
  text: TowerConfig & { vocab: number; maxPositions: number; eosTokenId: number };
  vision: TowerConfig & { imageSize: number; patchSize: number; channels: number };
  projectionDim: number;
}

function towerConfig(c: ConfigFile, file: string): TowerConfig {
  const cfg: TowerConfig = {
    hidden: c.int('hidden_size'),
    intermediate: c.int('intermediate_size'),
    layers: c.int('num_hidden_layers'),
    heads: c.int('num_attention_heads'),
    eps: c.num('layer_norm_eps', 1e-5),
    act: activationOf(c, file),
  };
  if (cfg.hidden % cfg.heads) throw new DrError(`${file}: hidden_size ${cfg.hidden} is not divisible by num_attention_heads ${cfg.heads}`);
  return cfg;
}

export function textConfig(t: ConfigFile, file: string): ClipConfig['text'] {
  return { ...towerConfig(t, file), vocab: t.int('vocab_size'), maxPositions: t.int('max_position_embeddings'), eosTokenId: t.int('eos_token_id', 2) };
}

export function readClipConfig(dir: string): ClipConfig {
  const cfg = ConfigFile.inDir(dir);
  const v = cfg.section('vision_config');
  const config: ClipConfig = {
    text: textConfig(cfg.section('text_config'), cfg.file),
    vision: { ...towerConfig(v, cfg.file), imageSize: v.int('image_size'), patchSize: v.int('patch_size'), channels: v.int('num_channels', 3) },
    projectionDim: cfg.int('projection_dim'),
  };
  if (config.vision.imageSize % config.vision.patchSize) {
    throw new DrError(`${cfg.file}: vision_config.image_size ${config.vision.imageSize} is not a multiple of patch_size ${config.vision.patchSize}`);
  }
  return config;
}

function activationOf(c: ConfigFile, file: string): Activation {
  const name = c.str('hidden_act', 'quick_gelu');
  if (name !== 'quick_gelu' && name !== 'gelu') throw new DrError(`${file}: unsupported hidden_act "${name}" (quick_gelu, gelu)`);
  return activationFromConfig(name, file);
}

class ClipAttention extends Module {
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly out_proj: Linear;
  constructor(readonly cfg: TowerConfig) {
    super();
    const d = cfg.hidden;
    this.q_proj = this.child('q_proj', new Linear(d, d));
    this.k_proj = this.child('k_proj', new Linear(d, d));
    this.v_proj = this.child('v_proj', new Linear(d, d));
    this.out_proj = this.child('out_proj', new Linear(d, d));
  }

  /** x [B, L, D] → [B, L, D] */
  forward(e: Engine, x: Tensor, causal: boolean): Tensor {
    const q = this.q_proj.forward(e, x); // [B, L, D]
    const k = this.k_proj.forward(e, x); // [B, L, D]
    const v = this.v_proj.forward(e, x); // [B, L, D]
    const o = attention(e, q, k, v, { heads: this.cfg.heads, causal }); // [B, L, D]
    return this.out_proj.forward(e, o);
  }
}

class ClipMlp extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  constructor(readonly cfg: TowerConfig) {
    super();
    this.fc1 = this.child('fc1', new Linear(cfg.hidden, cfg.intermediate));
    this.fc2 = this.child('fc2', new Linear(cfg.intermediate, cfg.hidden));
  }

  forward(e: Engine, x: Tensor): Tensor {
    return this.fc2.forward(e, this.fc1.forward(e, x, this.cfg.act)); // activation fused into fc1
  }
}

class ClipEncoderLayer extends Module {
  readonly self_attn: ClipAttention;
  readonly layer_norm1: LayerNorm;
  readonly mlp: ClipMlp;
  readonly layer_norm2: LayerNorm;
  constructor(cfg: TowerConfig) {
    super();
    this.self_attn = this.child('self_attn', new ClipAttention(cfg));
    this.layer_norm1 = this.child('layer_norm1', new LayerNorm(cfg.hidden, cfg.eps));
    this.mlp = this.child('mlp', new ClipMlp(cfg));
    this.layer_norm2 = this.child('layer_norm2', new LayerNorm(cfg.hidden, cfg.eps));
  }

  /** Pre-norm residual block: x + attn(ln1(x)), then h + mlp(ln2(h)). */
  forward(e: Engine, x: Tensor, causal: boolean): Tensor {
    return e.tidy(() => {
      const h = add(e, x, this.self_attn.forward(e, this.layer_norm1.forward(e, x), causal));
      return add(e, h, this.mlp.forward(e, this.layer_norm2.forward(e, h)));
    });
  }
}

class ClipEncoder extends Module {
  readonly layers: ModuleList<ClipEncoderLayer>;
  constructor(cfg: TowerConfig) {
    super();
    this.layers = this.child('layers', new ModuleList(Array.from({ length: cfg.layers }, () => new ClipEncoderLayer(cfg))));
  }

  /** Returns the input and every layer's output (hidden_states in transformers). */
  forward(e: Engine, x: Tensor, causal: boolean, keepAll: boolean): Tensor[] {
    const states = [x];
    for (const layer of this.layers.items) {
      const next = layer.forward(e, states.at(-1)!, causal);
      if (!keepAll && states.length > 1) e.release(states.pop()!);
      states.push(next);
    }
    return states;
  }
}

class ClipVisionEmbeddings extends Module {
  readonly class_embedding: Param;
  readonly patch_embedding: Conv2d;
  readonly position_embedding: Embedding;
  constructor(readonly cfg: ClipConfig['vision']) {
    super();
    const patches = (cfg.imageSize / cfg.patchSize) ** 2;
    this.class_embedding = this.param('class_embedding', [cfg.hidden]);
    this.patch_embedding = this.child('patch_embedding', new Conv2d(cfg.channels, cfg.hidden, cfg.patchSize, cfg.patchSize, 0, false));
    this.position_embedding = this.child('position_embedding', new Embedding(patches + 1, cfg.hidden));
  }

  /** pixels [B, 3, S, S] → [B, 1 + P, D] */
  forward(e: Engine, pixels: Tensor): Tensor {
    const B = pixels.shape[0];
    const D = this.cfg.hidden;
    const patches = this.patch_embedding.forward(e, pixels); // [B, D, g, g]
    const tokens = permute(e, patches.reshape([B, D, -1]), [0, 2, 1]); // [B, P, D]
    const cls = expand(e, this.class_embedding.t.reshape([1, 1, D]), [B, 1, D]); // [B, 1, D]
    const seq = concat(e, [cls, tokens], 1); // [B, 1 + P, D]
    return add(e, seq, this.position_embedding.weight.t); // + [1 + P, D]
  }
}

export interface VisionOutput {
  lastHiddenState: Tensor; // [B, 1 + P, D]
  pooled: Tensor; // [B, D]: post_layernorm(class token)
  hiddenStates: Tensor[]; // only with keepHidden
}

class ClipVisionTransformer extends Module {
  readonly embeddings: ClipVisionEmbeddings;
  readonly pre_layrnorm: LayerNorm; // sic: the checkpoint's spelling
  readonly encoder: ClipEncoder;
  readonly post_layernorm: LayerNorm;
  constructor(readonly cfg: ClipConfig['vision']) {
    super();
    this.embeddings = this.child('embeddings', new ClipVisionEmbeddings(cfg));
    this.pre_layrnorm = this.child('pre_layrnorm', new LayerNorm(cfg.hidden, cfg.eps));
    this.encoder = this.child('encoder', new ClipEncoder(cfg));
    this.post_layernorm = this.child('post_layernorm', new LayerNorm(cfg.hidden, cfg.eps));
  }

  forward(e: Engine, pixels: Tensor, keepHidden = false): VisionOutput {
    return e.tidy(() => {
      const x = this.pre_layrnorm.forward(e, this.embeddings.forward(e, pixels)); // [B, 1 + P, D]
      const states = this.encoder.forward(e, x, false, keepHidden);
      const last = states.at(-1)!;
      const cls = slice(e, last, 1, 0, 1).reshape([last.shape[0], this.cfg.hidden]); // [B, D]
      return { lastHiddenState: last, pooled: this.post_layernorm.forward(e, cls), hiddenStates: keepHidden ? states : [] };
    });
  }
}

class ClipTextEmbeddings extends Module {
  readonly token_embedding: Embedding;
  readonly position_embedding: Embedding;
  constructor(cfg: ClipConfig['text']) {
    super();
    this.token_embedding = this.child('token_embedding', new Embedding(cfg.vocab, cfg.hidden));
    this.position_embedding = this.child('position_embedding', new Embedding(cfg.maxPositions, cfg.hidden));
  }

  /** ids [B, L] i32 → [B, L, D] */
  forward(e: Engine, ids: Tensor): Tensor {
    const L = ids.shape[1];
    const tokens = gather(e, this.token_embedding.weight.table, ids); // [B, L, D]
    return add(e, tokens, slice(e, this.position_embedding.weight.t, 0, 0, L)); // + [L, D]
  }
}

export interface TextOutput {
  lastHiddenState: Tensor; // [B, L, D] after final_layer_norm
  pooled: Tensor; // [B, D] at each row's end-of-text token
  hiddenStates: Tensor[];
}

class ClipTextTransformer extends Module {
  readonly embeddings: ClipTextEmbeddings;
  readonly encoder: ClipEncoder;
  readonly final_layer_norm: LayerNorm;
  constructor(readonly cfg: ClipConfig['text']) {
    super();
    this.embeddings = this.child('embeddings', new ClipTextEmbeddings(cfg));
    this.encoder = this.child('encoder', new ClipEncoder(cfg));
    this.final_layer_norm = this.child('final_layer_norm', new LayerNorm(cfg.hidden, cfg.eps));
  }

  /** ids: token ids [B, L] on the host (needed there to find each row's EOS). */
  forward(e: Engine, ids: Int32Array, L: number, dtype: Tensor['dtype'], keepHidden = false): TextOutput {
    const B = ids.length / L;
    if (L > this.cfg.maxPositions) throw new DrError(`text of ${L} tokens exceeds max_position_embeddings ${this.cfg.maxPositions}`);
    for (const id of ids) if (id < 0 || id >= this.cfg.vocab) throw new DrError(`token id ${id} outside the vocabulary (${this.cfg.vocab})`);
    return e.tidy(() => {
      const emb = this.embeddings.forward(e, e.upload(ids, [B, L]));
      const x = cast(e, emb, dtype);
      const states = this.encoder.forward(e, x, true, keepHidden);
      const last = this.final_layer_norm.forward(e, states.at(-1)!); // [B, L, D]
      const rows = Int32Array.from({ length: B }, (_, b) => b * L + eosPosition(ids.subarray(b * L, (b + 1) * L), this.cfg.eosTokenId));
      const pooled = gather(e, last.reshape([B * L, this.cfg.hidden]), e.upload(rows, [B])); // [B, D]
      return { lastHiddenState: last, pooled, hiddenStates: keepHidden ? states : [] };
    });
  }
}

/**
 * transformers' rule: with the legacy eos_token_id 2 (OpenAI CLIP configs) the
 * pooled token is the row's largest id (the first 49407); otherwise the first
 * occurrence of eos_token_id.
 */
export function eosPosition(row: Int32Array, eosTokenId: number): number {
  let best = 0;
  if (eosTokenId === 2) {
    for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
    return best;
  }
  const at = row.indexOf(eosTokenId);
  return at >= 0 ? at : row.length - 1;
}

export class ClipModel extends Module {
  readonly text_model: ClipTextTransformer;
  readonly vision_model: ClipVisionTransformer;
  readonly visual_projection: Linear;
  readonly text_projection: Linear;
  readonly logit_scale: Param;
  /** Activation precision: f16 when the weights were loaded as f16. */
  dtype: Tensor['dtype'] = 'f32';

  constructor(readonly config: ClipConfig) {
    super();
    this.text_model = this.child('text_model', new ClipTextTransformer(config.text));
    this.vision_model = this.child('vision_model', new ClipVisionTransformer(config.vision));
    this.visual_projection = this.child('visual_projection', new Linear(config.vision.hidden, config.projectionDim, false));
    this.text_projection = this.child('text_projection', new Linear(config.text.hidden, config.projectionDim, false));
    this.logit_scale = this.param('logit_scale', [1], true);
  }

  /** Reads `config.json` and the weights of a Hugging Face CLIPModel folder. */
  static load(e: Engine, dir: string, precision: Precision = 'auto', onTensor?: (bytes: number) => void): ClipModel {
    const model = new ClipModel(readClipConfig(dir));
    loadFromCheckpoint(e, model, dir, { precision, onTensor });
    model.dtype = model.visual_projection.weight.t.dtype;
    return model;
  }

  /** exp(logit_scale): the learned temperature of CLIP's logits. */
  get logitScale(): number {
    return Math.exp(this.logit_scale.hostValue[0]);
  }

  get imageSize(): number {
    return this.config.vision.imageSize;
  }

  /** pixels [B, 3, S, S] (normalised, f32) → vision outputs + image_embeds [B, E]. */
  encodeImage(e: Engine, pixels: Tensor, keepHidden = false): VisionOutput & { embeds: Tensor } {
    return encodeImage(e, this, pixels, keepHidden);
  }

  /** ids [B, L] (host) → text outputs + text_embeds [B, E]. */
  encodeText(e: Engine, ids: Int32Array, L: number, keepHidden = false): TextOutput & { embeds: Tensor } {
    return e.tidy(() => {
      const out = this.text_model.forward(e, ids, L, this.dtype, keepHidden);
      return { ...out, embeds: this.text_projection.forward(e, out.pooled) };
    });
  }

  /** Cosine similarities [N_image, N_text] of projected, L2-normalised embeddings. */
  cosine(e: Engine, imageEmbeds: Tensor, textEmbeds: Tensor): Tensor {
    return e.tidy(() => matmul(e, l2Normalize(e, imageEmbeds), l2Normalize(e, textEmbeds), { transB: true }));
  }

  /** logits_per_image = exp(logit_scale) · cosine. */
  logits(e: Engine, cosine: Tensor): Tensor {
    return scale(e, cosine, this.logitScale);
  }
}

/**
 * transformers' CLIPTextModel (SD's `text_encoder/`): the text tower alone. Its
 * last_hidden_state is the UNet's encoder_hidden_states.
 */
/**
 * The image half of a CLIPModel folder (transformers' CLIPVisionModelWithProjection: the same keys),
 * for callers that need image embeddings only: the text tower's weights (a third of CLIP-L) are
 * never loaded.
 */
export class ClipVisionModelWithProjection extends Module {
  readonly vision_model: ClipVisionTransformer;
  readonly visual_projection: Linear;
  dtype: Tensor['dtype'] = 'f32';

  constructor(readonly config: ClipConfig) {
    super();
    this.vision_model = this.child('vision_model', new ClipVisionTransformer(config.vision));
    this.visual_projection = this.child('visual_projection', new Linear(config.vision.hidden, config.projectionDim, false));
  }

  static load(e: Engine, dir: string, precision: Precision = 'auto'): ClipVisionModelWithProjection {
    const model = new ClipVisionModelWithProjection(readClipConfig(dir));
    loadFromCheckpoint(e, model, dir, { precision });
    model.dtype = model.visual_projection.weight.t.dtype;
    return model;
  }

  /** pixels [B, 3, S, S] (normalised, f32) → vision outputs + image_embeds [B, E]. */
  encodeImage(e: Engine, pixels: Tensor, keepHidden = false): VisionOutput & { embeds: Tensor } {
    return encodeImage(e, this, pixels, keepHidden);
  }
}

function encodeImage(
  e: Engine, m: ClipModel | ClipVisionModelWithProjection, pixels: Tensor, keepHidden: boolean,
): VisionOutput & { embeds: Tensor } {
  const { channels, imageSize } = m.config.vision;
  const [, c, h, w] = pixels.shape;
  if (c !== channels || h !== imageSize || w !== imageSize) {
    throw new DrError(`pixel_values must be [B, ${channels}, ${imageSize}, ${imageSize}], got [${pixels.shape}]`);
  }
  return e.tidy(() => {
    const x = cast(e, pixels, m.dtype);
    const out = m.vision_model.forward(e, x, keepHidden);
    return { ...out, embeds: m.visual_projection.forward(e, out.pooled) };
  });
}

export class ClipTextModel extends Module {
  readonly text_model: ClipTextTransformer;

  constructor(readonly config: ClipConfig['text']) {
    super();
    this.text_model = this.child('text_model', new ClipTextTransformer(config));
  }

  /** Config from `dir`; weights from `dir` too unless given (a single-file checkpoint's component, left open). */
  static load(e: Engine, dir: string, precision: Precision = 'auto', weights?: Checkpoint): ClipTextModel {
    const c = ConfigFile.inDir(dir);
    const model = new ClipTextModel(textConfig(c, c.file));
    const ckpt = weights ?? Checkpoint.open(dir);
    try {
      // transformers ≥ 5 saves CLIPTextModel without the `text_model.` prefix; older versions with it.
      const prefixed = ckpt.has('text_model.embeddings.token_embedding.weight');
      loadModule(e, prefixed ? model : model.text_model, ckpt, { precision });
    } finally {
      if (!weights) ckpt.close();
    }
    return model;
  }

  get dtype(): Tensor['dtype'] {
    return this.text_model.final_layer_norm.weight.t.dtype;
  }

  /** ids [B, L] (host, no attention mask, as SD pipelines call it) → last_hidden_state [B, L, D]. */
  encode(e: Engine, ids: Int32Array, L: number): Tensor {
    return e.tidy(() => this.text_model.forward(e, ids, L, this.dtype).lastHiddenState);
  }
}
