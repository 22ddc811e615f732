import type { Engine } from '../../engine.js';
import type { Tensor } from '../../tensor.js';
import { assertShape } from '../common.js';

/**
 * SSIM map of two [.., H, W] stacks of planes with a K×K window (a [K, K] tensor),
 * 'valid' filtering: [planes, H−K+1, W−K+1], each l · relu(cs) (pyiqa's ssim).
 */
export function ssimMap(e: Engine, x: Tensor, y: Tensor, window: Tensor, c1: number, c2: number): Tensor {
  assertShape('ssimMap', x.size === y.size && x.shape.length >= 2, `${x} and ${y} differ`);
  const K = window.shape[0];
  assertShape('ssimMap', window.shape.length === 2 && window.shape[1] === K, `window ${window} is not square`);
  const [H, W] = x.shape.slice(-2);
  const planes = x.size / (H * W);
  const [Ho, Wo] = [H - K + 1, W - K + 1];
  assertShape('ssimMap', Ho > 0 && Wo > 0, `${H}x${W} planes are smaller than the ${K}x${K} window`);
  const out = e.empty([planes, Ho, Wo]);
  e.run({
    kernel: 'ssim_map',
    bindings: { x, y, w: window, out },
    defines: { K },
    params: { H, W, Ho, Wo, planes, c1, c2 },
    workgroups: [Math.ceil(Wo / 16), Math.ceil(Ho / 16), planes],
  });
  return out;
}
