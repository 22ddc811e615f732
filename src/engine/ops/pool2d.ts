import type { Engine } from '../engine.js';
import type { Tensor } from '../tensor.js';
import { assertShape, elementwiseGrid } from './common.js';

/**
 * Pooling of [N, C, H, W], floor mode: 'avg' is avg_pool2d(count_include_pad=False), 'max' is
 * max_pool2d; window K, stride S, padding P (P ≤ K/2, so every window holds an element).
 */
export function pool2d(e: Engine, x: Tensor, mode: 'avg' | 'max', K: number, S: number, P = 0): Tensor {
  assertShape('pool2d', x.shape.length === 4, `need [N, C, H, W], got ${x}`);
  assertShape('pool2d', 2 * P <= K, `padding ${P} is more than half the ${K}x${K} window`);
  const [N, C, H, W] = x.shape;
  const [Ho, Wo] = [Math.floor((H + 2 * P - K) / S) + 1, Math.floor((W + 2 * P - K) / S) + 1];
  assertShape('pool2d', Ho > 0 && Wo > 0, `${H}x${W} input smaller than the ${K}x${K} window`);
  const y = e.empty([N, C, Ho, Wo], x.dtype);
  const { workgroups, groupsX } = elementwiseGrid(y.size);
  e.run({
    kernel: 'pool2d',
    bindings: { x, y },
    defines: { MODE: mode === 'avg' ? 0 : 1 },
    params: { H, W, Ho, Wo, planes: N * C, K, S, pad: P, groupsX },
    workgroups,
  });
  e.record('pool2d', [x], y, [x], (dy) => [pool2dBackward(e, x, dy, mode, K, S, P)]);
  return y;
}

/**
 * Backward of `pool2d` (same mode, K, S, P) given x and dy: avg spreads dy evenly over each
 * window's in-bounds elements; max sends it to the window's first maximum (PyTorch's tie rule).
 */
export function pool2dBackward(e: Engine, x: Tensor, dy: Tensor, mode: 'avg' | 'max', K: number, S: number, P = 0): Tensor {
  assertShape('pool2dBackward', x.shape.length === 4 && dy.shape.length === 4, `need [N, C, H, W], got ${x} and ${dy}`);
  const [N, C, H, W] = x.shape;
  const [Ho, Wo] = [Math.floor((H + 2 * P - K) / S) + 1, Math.floor((W + 2 * P - K) / S) + 1];
  assertShape('pool2dBackward', dy.shape.join() === [N, C, Ho, Wo].join(), `gradient ${dy} for pooling ${x}`);
  const dx = e.empty(x.shape, dy.dtype);
  const { workgroups, groupsX } = elementwiseGrid(x.size);
  e.run({
    kernel: 'pool2d_back',
    bindings: { x, dy, dx },
    defines: { MODE: mode === 'avg' ? 0 : 1 },
    params: { H, W, Ho, Wo, planes: N * C, K, S, pad: P, groupsX },
    workgroups,
  });
  return dx;
}

/** nn.MaxPool2d(K, S, P). */
export const maxPool2d = (e: Engine, x: Tensor, K: number, S: number, P = 0): Tensor => pool2d(e, x, 'max', K, S, P);

/** nn.AvgPool2d(K, S, P, count_include_pad=False); without padding that is the plain window mean. */
export const avgPool2d = (e: Engine, x: Tensor, K: number, S = K, P = 0): Tensor => pool2d(e, x, 'avg', K, S, P);
