import type { Engine } from '../engine.js';
import type { Tensor } from '../tensor.js';
import { grid } from '../engine.js';
import { ACT, assertShape, rowWorkgroup, runRows, type Activation } from './common.js';
import { mul, scale as scaleBy, sub, sumTo } from './elementwise.js';

/**
 * LayerNorm over the last dimension with affine weight and bias. Given `stats`
 * (f32, 2 per row), it also saves each row's mean and 1/std for layerNormBackward.
 */
export function layerNorm(e: Engine, x: Tensor, weight: Tensor, bias: Tensor, eps: number, stats?: Tensor): Tensor {
  const D = x.shape.at(-1)!;
  const rows = x.size / D;
  assertShape('layerNorm', weight.size === D && bias.size === D, `weight ${weight}/bias ${bias} for ${x}`);
  if (stats) assertShape('layerNorm', stats.size === 2 * rows && stats.dtype === 'f32', `stats ${stats} for ${rows} rows`);
  const y = e.empty(x.shape, x.dtype);
  const workgroups = grid(rows);
  // The kernel always writes the statistics (2 floats a row): unasked, to a scratch buffer.
  const saved = stats ?? e.empty([rows, 2]);
  e.run({
    kernel: 'layer_norm',
    bindings: { x, gamma: weight, beta: bias, y, stats: saved },
    defines: { WG: rowWorkgroup(D, e.kernels.path) },
    params: { rows, D, eps, groupsX: workgroups[0] },
    workgroups,
  });
  if (e.needsGrad(x, weight, bias)) {
    e.record('layerNorm', [x, weight, bias], y, [x, weight, saved], (dy, [nx, nw, nb]) => {
      const g = layerNormBackward(e, x, weight, saved, dy, { dx: nx, dweight: nw, dbias: nb });
      return [g.dx, g.dweight, g.dbias];
    });
  } else if (!stats) e.release(saved);
  return y;
}

/**
 * GroupNorm on [N, C, ...spatial] with per-channel affine; `act` fuses e.g. SiLU.
 * Given `stats` (f32, [N, groups, 2]), it also saves each group's mean and 1/std for
 * groupNormBackward.
 */
export function groupNorm(
  e: Engine, x: Tensor, weight: Tensor, bias: Tensor, groups: number, eps: number, act: Activation = 'none',
  stats?: Tensor,
): Tensor {
  const [N, C] = x.shape;
  const S = x.size / (N * C);
  assertShape('groupNorm', C % groups === 0, `${C} channels do not split into ${groups} groups`);
  assertShape('groupNorm', weight.size === C && bias.size === C, `weight ${weight}/bias ${bias} for ${x}`);
  // The fused epilogue has no slope parameter.
  assertShape('groupNorm', act !== 'leaky_relu', 'a fused leaky_relu is not supported (use relu or a separate leakyRelu)');
  if (stats) assertShape('groupNorm', stats.size === 2 * N * groups && stats.dtype === 'f32', `stats ${stats} for ${N}x${groups} groups`);
  const y = e.empty(x.shape, x.dtype);
  // The kernel always writes the statistics (2 floats a group): unasked, to a scratch buffer.
  const saved = stats ?? e.empty([N, groups, 2]);
  e.run({
    kernel: 'group_norm',
    bindings: { x, gamma: weight, beta: bias, y, stats: saved },
    defines: { WG: rowWorkgroup((C / groups) * S, e.kernels.path) },
    params: { C, S, groups, eps, act: ACT[act] },
    workgroups: [groups, N],
  });
  if (e.needsGrad(x, weight, bias)) {
    e.record('groupNorm', [x, weight, bias], y, [x, weight, bias, saved], (dy, [nx, nw, nb]) => {
      const g = groupNormBackward(e, x, weight, bias, saved, dy, { groups, act }, { dx: nx, dweight: nw, dbias: nb });
      return [g.dx, g.dweight, g.dbias];
    });
  } else if (!stats) e.release(saved);
  return y;
}

/** softmax(scale · x) over the last dimension. */
export function softmax(e: Engine, x: Tensor, scale = 1): Tensor {
  const D = x.shape.at(-1)!;
  const y = e.empty(x.shape, x.dtype);
  runRows(e, 'softmax', { x, y }, x.size / D, D, { scale });
  e.record('softmax', [x], y, [y], (dy) => [softmaxBackward(e, y, dy, scale)]);
  return y;
}

/** Backward of `softmax` from its output y: dx = scale · y ⊙ (dy − Σ_row dy ⊙ y), composed. */
export function softmaxBackward(e: Engine, y: Tensor, dy: Tensor, scale = 1): Tensor {
  assertShape('softmaxBackward', dy.size === y.size, `gradient ${dy} for ${y}`);
  return e.tidy(() => {
    const dot = sumTo(e, mul(e, dy, y), [...y.shape.slice(0, -1), 1]);
    return scaleBy(e, mul(e, y, sub(e, dy, dot)), scale);
  });
}

/** x / max(‖x‖₂, eps) over the last dimension (torch.nn.functional.normalize). */
export function l2Normalize(e: Engine, x: Tensor, eps = 1e-12): Tensor {
  e.assertNoGrad('l2Normalize', x);
  const D = x.shape.at(-1)!;
  const y = e.empty(x.shape, x.dtype);
  runRows(e, 'l2_normalize', { x, y }, x.size / D, D, { eps });
  return y;
}

/** Which gradients a norm backward computes (the rest are skipped or not returned). */
export interface NormNeeds { dx?: boolean; dweight?: boolean; dbias?: boolean }
export interface NormGrads { dx?: Tensor; dweight?: Tensor; dbias?: Tensor }

/**
 * Gradients of layerNorm from its input, weight, saved `stats` and the upstream
 * gradient dy; each gradient has dy's dtype. Two passes without atomics: dx per row,
 * dweight/dbias per column (computed together when either is needed).
 */
export function layerNormBackward(e: Engine, x: Tensor, weight: Tensor, stats: Tensor, dy: Tensor, needs: NormNeeds): NormGrads {
  const D = x.shape.at(-1)!;
  const rows = x.size / D;
  assertShape('layerNormBackward', dy.size === x.size && weight.size === D && stats.size === 2 * rows,
    `x ${x}, weight ${weight}, stats ${stats}, dy ${dy}`);
  const grads: NormGrads = {};
  if (needs.dx) {
    grads.dx = e.empty(x.shape, dy.dtype);
    const workgroups = grid(rows);
    e.run({
      kernel: 'layer_norm_back',
      bindings: { x, gamma: weight, stats, dy, dx: grads.dx },
      defines: { WG: rowWorkgroup(D, e.kernels.path) },
      params: { rows, D, groupsX: workgroups[0] },
      workgroups,
    });
  }
  if (needs.dweight || needs.dbias) {
    const dgamma = e.empty([D], dy.dtype);
    const dbeta = e.empty([D], dy.dtype);
    e.run({
      kernel: 'layer_norm_back_affine',
      bindings: { x, stats, dy, dgamma, dbeta },
      defines: { WG: rowWorkgroup(rows, e.kernels.path) },
      params: { rows, D },
      workgroups: [D],
    });
    keepIfNeeded(e, grads, 'dweight', dgamma, needs.dweight);
    keepIfNeeded(e, grads, 'dbias', dbeta, needs.dbias);
  }
  return grads;
}

/**
 * Gradients of groupNorm (its fused activation recomputed from x and the saved
 * `stats`) given the upstream gradient dy; each gradient has dy's dtype. Two passes
 * without atomics: dx per (item, group), dweight/dbias per channel (together).
 */
export function groupNormBackward(
  e: Engine, x: Tensor, weight: Tensor, bias: Tensor, stats: Tensor, dy: Tensor,
  opts: { groups: number; act?: Activation }, needs: NormNeeds,
): NormGrads {
  const [N, C] = x.shape;
  const S = x.size / (N * C);
  const { groups, act = 'none' } = opts;
  assertShape('groupNormBackward', dy.size === x.size && weight.size === C && bias.size === C && stats.size === 2 * N * groups,
    `x ${x}, weight ${weight}, bias ${bias}, stats ${stats}, dy ${dy}`);
  const grads: NormGrads = {};
  const inputs = { x, gamma: weight, beta: bias, stats, dy };
  if (needs.dx) {
    grads.dx = e.empty(x.shape, dy.dtype);
    e.run({
      kernel: 'group_norm_back',
      bindings: { ...inputs, dx: grads.dx },
      defines: { WG: rowWorkgroup((C / groups) * S, e.kernels.path), ACT: ACT[act] },
      params: { C, S, groups },
      workgroups: [groups, N],
    });
  }
  if (needs.dweight || needs.dbias) {
    const dgamma = e.empty([C], dy.dtype);
    const dbeta = e.empty([C], dy.dtype);
    e.run({
      kernel: 'group_norm_back_affine',
      bindings: { ...inputs, dgamma, dbeta },
      defines: { WG: rowWorkgroup(N * S, e.kernels.path), ACT: ACT[act] },
      params: { N, C, S, groups },
      workgroups: [C],
    });
    keepIfNeeded(e, grads, 'dweight', dgamma, needs.dweight);
    keepIfNeeded(e, grads, 'dbias', dbeta, needs.dbias);
  }
  return grads;
}

/** One kernel writes dweight and dbias together; an unneeded one goes back to the pool. */
function keepIfNeeded(e: Engine, grads: NormGrads, key: 'dweight' | 'dbias', t: Tensor, needed?: boolean): void {
  if (needed) grads[key] = t;
  else e.release(t);
}
