import type { Engine } from '../../engine.js';
import type { Tensor } from '../../tensor.js';
import { assertShape, elementwiseGrid } from '../common.js';

/**
 * DISTS' L2 pooling (Hénaff & Simoncelli): sqrt(depthwise_conv(x², filter, stride 2, pad 1) + 1e-12)
 * of [N, C, H, W] with one 3×3 filter (a [3, 3] tensor) shared by every channel → [N, C, ⌊(H−1)/2⌋+1, ⌊(W−1)/2⌋+1].
 */
export function l2Pool(e: Engine, x: Tensor, filter: Tensor): Tensor {
  assertShape('l2Pool', x.shape.length === 4, `need [N, C, H, W], got ${x}`);
  assertShape('l2Pool', filter.size === 9, `filter ${filter} is not 3x3`);
  const [N, C, H, W] = x.shape;
  const [Ho, Wo] = [Math.floor((H - 1) / 2) + 1, Math.floor((W - 1) / 2) + 1];
  const y = e.empty([N, C, Ho, Wo], x.dtype);
  const { workgroups, groupsX } = elementwiseGrid(y.size);
  e.run({ kernel: 'l2_pool', bindings: { x, f: filter, y }, params: { H, W, Ho, Wo, planes: N * C, groupsX }, workgroups });
  return y;
}
