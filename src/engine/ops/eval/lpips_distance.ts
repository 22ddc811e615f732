import type { Engine } from '../../engine.js';
import type { Tensor } from '../../tensor.js';
import { assertShape, elementwiseGrid } from '../common.js';

/**
 * One LPIPS layer's distance map: features a, b [1, C, H, W] and lin weights (C values)
 * → [H, W] of Σ_c w_c (â − b̂)², â the feature divided by its channel L2 norm + 1e-10.
 */
export function lpipsDistance(e: Engine, a: Tensor, b: Tensor, lin: Tensor): Tensor {
  assertShape('lpipsDistance', a.shape.length === 4 && a.shape[0] === 1 && a.size === b.size, `features ${a} and ${b}`);
  const [, C, H, W] = a.shape;
  assertShape('lpipsDistance', lin.size === C, `lin weights ${lin} for ${C} channels`);
  const out = e.empty([H, W]);
  const { workgroups, groupsX } = elementwiseGrid(H * W);
  e.run({ kernel: 'lpips_distance', bindings: { a, b, w: lin, out }, params: { C, P: H * W, groupsX }, workgroups });
  return out;
}
