// Prompt Processor: CLIP image embedding → semantic prompt P_S (the UNet's and
// control network's cross-attention context) and degradation embedding P_D.
import { DrError } from '../../errors.js';
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { leakyRelu } from '../../engine/ops/elementwise.js';
import { softmax } from '../../engine/ops/norms.js';
import { ConfigFile } from '../config.js';
import { Module, ModuleList } from '../module.js';
import { LayerNorm, Linear } from '../nn.js';

export interface PromptProcessorConfig {
  clipDim: number;
  hiddenDim: number;
  semanticDim: number;
  contextTokens: number;
  degradationDim: number;
  degradations: string[];
  leakySlope: number;
  eps: number;
}

export const DEGRADATIONS = ['noise', 'low-light', 'haze', 'rain', 'raindrop', 'snow', 'blur', 'jpeg'];

export function readPromptProcessorConfig(dir: string): PromptProcessorConfig {
  const c = ConfigFile.inDir(dir);
  const degradations = c.raw.degradations ?? DEGRADATIONS;
  if (!Array.isArray(degradations) || !degradations.every((d) => typeof d === 'string') || degradations.length === 0) {
    throw new DrError(`${c.file}: "degradations" must be a non-empty list of names`);
  }
  return {
    clipDim: c.int('clip_dim'),
    hiddenDim: c.int('hidden_dim', 768),
    semanticDim: c.int('semantic_dim'),
    contextTokens: c.int('context_tokens', 1),
    degradationDim: c.int('degradation_dim', 256),
    degradations: degradations as string[],
    leakySlope: c.num('leaky_relu_slope', 0.01),
    eps: c.num('layer_norm_eps', 1e-5),
  };
}

export function promptProcessorConfigJson(cfg: PromptProcessorConfig): Record<string, unknown> {
  return {
    _class_name: 'DiffRestorerPromptProcessor',
    clip_dim: cfg.clipDim,
    hidden_dim: cfg.hiddenDim,
    semantic_dim: cfg.semanticDim,
    context_tokens: cfg.contextTokens,
    degradation_dim: cfg.degradationDim,
    degradations: cfg.degradations,
    leaky_relu_slope: cfg.leakySlope,
    layer_norm_eps: cfg.eps,
  };
}

/** Parameter-free layers keep their index in the Sequential, as in the checkpoint. */
class Activation extends Module {}

export class PromptProcessor extends Module {
  /** B_s: Linear → LN → LeakyReLU → Linear → LN → LeakyReLU → Linear */
  readonly semantic_branch: ModuleList<Module>;
  /** B_d: Linear → LN → LeakyReLU → Linear */
  readonly degradation_branch: ModuleList<Module>;
  /** C (training only): Linear(P_D → N degradation logits) */
  readonly classifier: Linear;

  constructor(readonly cfg: PromptProcessorConfig) {
    super();
    const { clipDim: c, hiddenDim: h, degradationDim: d } = cfg;
    this.semantic_branch = this.child('semantic_branch', new ModuleList<Module>([
      new Linear(c, h), new LayerNorm(h, cfg.eps), new Activation(),
      new Linear(h, h), new LayerNorm(h, cfg.eps), new Activation(),
      new Linear(h, cfg.semanticDim * cfg.contextTokens),
    ]));
    this.degradation_branch = this.child('degradation_branch', new ModuleList<Module>([
      new Linear(c, d), new LayerNorm(d, cfg.eps), new Activation(), new Linear(d, d),
    ]));
    this.classifier = this.child('classifier', new Linear(d, cfg.degradations.length));
  }

  /** P_CLIP [B, clipDim] → P_S [B, tokens, semanticDim], P_D [B, degradationDim]. */
  forward(e: Engine, clipEmbeds: Tensor): { semantic: Tensor; degradation: Tensor } {
    const B = clipEmbeds.shape[0];
    return e.tidy(() => ({
      semantic: this.run(e, this.semantic_branch, clipEmbeds).reshape([B, this.cfg.contextTokens, this.cfg.semanticDim]),
      degradation: this.run(e, this.degradation_branch, clipEmbeds),
    }));
  }

  /** Degradation-type probabilities softmax(C(P_D)) [B, N], in config order. */
  classify(e: Engine, degradation: Tensor): Tensor {
    return e.tidy(() => softmax(e, this.classifier.forward(e, degradation)));
  }

  private run(e: Engine, seq: ModuleList<Module>, x: Tensor): Tensor {
    let h = x;
    for (const layer of seq.items) {
      if (layer instanceof Linear) h = layer.forward(e, h);
      else if (layer instanceof LayerNorm) h = layer.forward(e, h);
      else h = leakyRelu(e, h, this.cfg.leakySlope);
    }
    return h;
  }
}
