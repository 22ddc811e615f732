import type { Engine } from '../engine.js';
import { f32 } from '../engine.js';
import type { Tensor } from '../tensor.js';
import { ACT, assertShape, rowWorkgroup, runRows, type Activation } from './common.js';

/** LayerNorm over the last dimension with affine weight and bias. */
export function layerNorm(e: Engine, x: Tensor, weight: Tensor, bias: Tensor, eps: number): Tensor {
  const D = x.shape.at(-1)!;
  assertShape('layerNorm', weight.size === D && bias.size === D, `weight ${weight}/bias ${bias} for ${x}`);
  const y = e.empty(x.shape, x.dtype);
  runRows(e, 'layer_norm', { X: x, Gamma: weight, Beta: bias, Y: y }, x.size / D, D, eps);
  return y;
}

/** GroupNorm on [N, C, ...spatial] with per-channel affine; `act` fuses e.g. SiLU. */
export function groupNorm(
  e: Engine, x: Tensor, weight: Tensor, bias: Tensor, groups: number, eps: number, act: Activation = 'none',
): Tensor {
  const [N, C] = x.shape;
  const S = x.size / (N * C);
  assertShape('groupNorm', C % groups === 0, `${C} channels do not split into ${groups} groups`);
  assertShape('groupNorm', weight.size === C && bias.size === C, `weight ${weight}/bias ${bias} for ${x}`);
  const y = e.empty(x.shape, x.dtype);
  e.run({
    kernel: 'group_norm',
    bindings: { X: x, Gamma: weight, Beta: bias, Y: y },
    defines: { WG: rowWorkgroup((C / groups) * S), ACT: ACT[act] },
    params: [C, S, groups, f32(eps)],
    workgroups: [groups, N],
  });
  return y;
}

/** softmax(scale · x) over the last dimension. */
export function softmax(e: Engine, x: Tensor, scale = 1): Tensor {
  const D = x.shape.at(-1)!;
  const y = e.empty(x.shape, x.dtype);
  runRows(e, 'softmax', { X: x, Y: y }, x.size / D, D, scale);
  return y;
}

/** x / max(‖x‖₂, eps) over the last dimension (torch.nn.functional.normalize). */
export function l2Normalize(e: Engine, x: Tensor, eps = 1e-12): Tensor {
  const D = x.shape.at(-1)!;
  const y = e.empty(x.shape, x.dtype);
  runRows(e, 'l2_normalize', { X: x, Y: y }, x.size / D, D, eps);
  return y;
}
