// Building blocks whose params carry PyTorch's names and layouts.
import type { Engine } from '../engine/engine.js';
import type { Tensor } from '../engine/tensor.js';
import { conv2d, type Conv2dOptions } from '../engine/ops/conv2d.js';
import { linear } from '../engine/ops/matmul.js';
import { groupNorm, layerNorm } from '../engine/ops/norms.js';
import type { Activation } from '../engine/ops/common.js';
import { Module, type Param } from './module.js';

/** nn.Linear: weight [out, in], bias [out]. */
export class Linear extends Module {
  readonly weight: Param;
  readonly bias?: Param;
  constructor(readonly inFeatures: number, readonly outFeatures: number, bias = true) {
    super();
    this.weight = this.param('weight', [outFeatures, inFeatures]);
    if (bias) this.bias = this.param('bias', [outFeatures]);
  }

  /** [..., in] → [..., out], with an optional fused activation. */
  forward(e: Engine, x: Tensor, act: Activation = 'none'): Tensor {
    return linear(e, x, this.weight.t, this.bias?.t, act);
  }
}

/** nn.LayerNorm over the last dimension. */
export class LayerNorm extends Module {
  readonly weight: Param;
  readonly bias: Param;
  constructor(dim: number, readonly eps: number) {
    super();
    this.weight = this.param('weight', [dim]);
    this.bias = this.param('bias', [dim]);
  }

  forward(e: Engine, x: Tensor): Tensor {
    return layerNorm(e, x, this.weight.t, this.bias.t, this.eps);
  }
}

/** nn.Embedding: weight [num, dim] (may be row-chunked when huge). */
export class Embedding extends Module {
  readonly weight: Param;
  constructor(num: number, dim: number) {
    super();
    this.weight = this.param('weight', [num, dim]);
  }
}

/** nn.Conv2d (groups 1): weight [out, in, k, k]. */
export class Conv2d extends Module {
  readonly weight: Param;
  readonly bias?: Param;
  constructor(inCh: number, outCh: number, kernel: number, readonly stride = 1, readonly padding: Conv2dOptions['padding'] = 0, bias = true) {
    super();
    this.weight = this.param('weight', [outCh, inCh, kernel, kernel]);
    if (bias) this.bias = this.param('bias', [outCh]);
  }

  forward(e: Engine, x: Tensor, act: Activation = 'none'): Tensor {
    return conv2d(e, x, this.weight.t, { stride: this.stride, padding: this.padding, bias: this.bias?.t, act });
  }
}

/** nn.GroupNorm with affine params; `act` fuses the activation that usually follows. */
export class GroupNorm extends Module {
  readonly weight: Param;
  readonly bias: Param;
  constructor(readonly groups: number, channels: number, readonly eps: number) {
    super();
    this.weight = this.param('weight', [channels]);
    this.bias = this.param('bias', [channels]);
  }

  forward(e: Engine, x: Tensor, act: Activation = 'none'): Tensor {
    return groupNorm(e, x, this.weight.t, this.bias.t, this.groups, this.eps, act);
  }
}
