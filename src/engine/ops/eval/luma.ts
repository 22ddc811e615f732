import type { Engine } from '../../engine.js';
import type { Tensor } from '../../tensor.js';
import { assertShape, elementwiseGrid } from '../common.js';

/** Y = (0.299 R + 0.587 G + 0.114 B) · scale of [N, 3, H, W] → [N, 1, H, W], rounded half to even if asked. */
export function rgbToY(e: Engine, x: Tensor, scale = 1, round = false): Tensor {
  assertShape('rgbToY', x.shape.length === 4 && x.shape[1] === 3, `need [N, 3, H, W], got ${x}`);
  const [N, , H, W] = x.shape;
  const y = e.empty([N, 1, H, W], x.dtype);
  const { workgroups, groupsX } = elementwiseGrid(y.size);
  e.run({ kernel: 'rgb_to_y', bindings: { x, y }, defines: { ROUND: round }, params: { plane: H * W, n: y.size, scale, groupsX }, workgroups });
  return y;
}

/** round(x · scale) elementwise, half to even: 8-bit sample values from [0, 1] data. */
export function roundScaled(e: Engine, x: Tensor, scale: number): Tensor {
  const y = e.empty(x.shape, x.dtype);
  const { workgroups, groupsX } = elementwiseGrid(x.size);
  e.run({ kernel: 'round_scaled', bindings: { x, y }, params: { n: x.size, scale, groupsX }, workgroups });
  return y;
}
