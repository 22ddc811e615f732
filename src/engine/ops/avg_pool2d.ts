import type { Engine } from '../engine.js';
import type { Tensor } from '../tensor.js';
import { assertShape, elementwiseGrid } from './common.js';

/** nn.AvgPool2d(kernel, stride), no padding, floor mode: [N, C, H, W] → [N, C, Ho, Wo]. */
export function avgPool2d(e: Engine, x: Tensor, kernel: number, stride = kernel): Tensor {
  assertShape('avgPool2d', x.shape.length === 4, `need [N, C, H, W], got ${x}`);
  const [N, C, H, W] = x.shape;
  const Ho = Math.floor((H - kernel) / stride) + 1;
  const Wo = Math.floor((W - kernel) / stride) + 1;
  assertShape('avgPool2d', Ho > 0 && Wo > 0, `${H}x${W} input smaller than the ${kernel}x${kernel} window`);
  const y = e.empty([N, C, Ho, Wo], x.dtype);
  const { workgroups, groupsX } = elementwiseGrid(y.size);
  e.run({ kernel: 'avg_pool2d', bindings: { X: x, Y: y }, params: [H, W, Ho, Wo, N * C, kernel, stride, groupsX], workgroups });
  return y;
}
