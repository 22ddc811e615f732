import type { Engine } from '../engine.js';
import type { Tensor } from '../tensor.js';
import { assertShape, elementwiseGrid } from './common.js';

/**
 * Padded pooling of [N, C, H, W]: 'avg' is avg_pool2d(count_include_pad=False), 'max' is
 * max_pool2d; window K, stride S, padding P (P ≤ K/2, so every window holds an element).
 */
export function pool2dPad(e: Engine, x: Tensor, mode: 'avg' | 'max', K: number, S: number, P: number): Tensor {
  assertShape('pool2dPad', x.shape.length === 4, `need [N, C, H, W], got ${x}`);
  assertShape('pool2dPad', 2 * P <= K, `padding ${P} is more than half the ${K}x${K} window`);
  const [N, C, H, W] = x.shape;
  const [Ho, Wo] = [Math.floor((H + 2 * P - K) / S) + 1, Math.floor((W + 2 * P - K) / S) + 1];
  assertShape('pool2dPad', Ho > 0 && Wo > 0, `${H}x${W} input smaller than the ${K}x${K} window`);
  const y = e.empty([N, C, Ho, Wo], x.dtype);
  const { workgroups, groupsX } = elementwiseGrid(y.size);
  e.run({
    kernel: 'pool2d_pad',
    bindings: { X: x, Y: y },
    defines: { MODE: mode === 'avg' ? 0 : 1 },
    params: [H, W, Ho, Wo, N * C, K, S, P, groupsX],
    workgroups,
  });
  return y;
}
