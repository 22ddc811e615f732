import type { Engine } from '../../engine.js';
import type { Tensor } from '../../tensor.js';
import { assertShape, elementwiseGrid } from '../common.js';

/** F.interpolate(x, size=(Ho, Wo), mode='bilinear', align_corners=False) of [N, C, H, W] (no antialias). */
export function resizeBilinear(e: Engine, x: Tensor, Ho: number, Wo: number): Tensor {
  assertShape('resizeBilinear', x.shape.length === 4 && Ho > 0 && Wo > 0, `need [N, C, H, W] and a positive size, got ${x} to ${Ho}x${Wo}`);
  const [N, C, H, W] = x.shape;
  const y = e.empty([N, C, Ho, Wo], x.dtype);
  const { workgroups, groupsX } = elementwiseGrid(y.size);
  e.run({
    kernel: 'resize_bilinear',
    bindings: { x, y },
    params: { H, W, Ho, Wo, planes: N * C, sh: Math.fround(H / Ho), sw: Math.fround(W / Wo), groupsX },
    workgroups,
  });
  return y;
}
