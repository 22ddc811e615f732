import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { rgbToY } from '../../engine/ops/eval/luma.js';
import { sumSquaredDiff } from '../../engine/ops/sq_diff.js';

export type ColorMode = 'rgb' | 'y';

/**
 * pyiqa's psnr (color rgb, its default) and psnry (color y): images in [0, 1], data
 * range 1, no border crop, Y = 0.299 R + 0.587 G + 0.114 B not rounded;
 * PSNR = 10 log10(1 / (MSE + 1e-8)), MSE over C·H·W.
 */
export async function psnr(e: Engine, ref: Tensor, dist: Tensor, color: ColorMode = 'rgb'): Promise<number> {
  const [a, b] = color === 'y' ? [rgbToY(e, ref), rgbToY(e, dist)] : [ref, dist];
  const mse = (await sumSquaredDiff(e, a, b)) / a.size;
  if (color === 'y') {
    e.release(a);
    e.release(b);
  }
  return 10 * Math.log10(1 / (mse + 1e-8));
}
