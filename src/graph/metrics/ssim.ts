import { NoScore } from '../../errors.js';
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { rgbToY, roundScaled } from '../../engine/ops/eval/luma.js';
import { ssimMap } from '../../engine/ops/eval/ssim_map.js';
import type { ColorMode } from './psnr.js';

const WINDOW = 11;

/** MATLAB fspecial('gaussian', size, sigma): normalised in f64, then float32 as pyiqa stores it. */
export function gaussianWindow(size: number, sigma: number): Float32Array {
  const m = (size - 1) / 2;
  const h = new Float64Array(size * size);
  let max = 0;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const v = Math.exp(-((x - m) ** 2 + (y - m) ** 2) / (2 * sigma * sigma));
      h[y * size + x] = v;
      max = Math.max(max, v);
    }
  }
  let sum = 0;
  for (let i = 0; i < h.length; i++) {
    if (h[i] < 2.220446049250313e-16 * max) h[i] = 0;
    sum += h[i];
  }
  return Float32Array.from(h, (v) => v / sum);
}

/**
 * pyiqa's ssim (color y, its default) and ssimc (color rgb): 8-bit values (Y of YIQ, or
 * each channel, times 255 and rounded half to even), data range 255, 11×11 Gaussian window
 * σ 1.5, 'valid' filtering, C1 = (0.01·255)², C2 = (0.03·255)², cs clamped at 0, no
 * downsampling, no border crop; the mean of the map (over channels too). The map is
 * computed on the GPU in f32 and averaged here in f64.
 */
export async function ssim(e: Engine, ref: Tensor, dist: Tensor, color: ColorMode = 'y'): Promise<number> {
  // pyiqa's 'valid' conv2d refuses a plane smaller than the window: no value, not an error of ours.
  const [H, W] = dist.shape.slice(-2);
  if (H < WINDOW || W < WINDOW) throw new NoScore(`${W}x${H} is smaller than SSIM's ${WINDOW}x${WINDOW} window (pyiqa filters without padding, so it defines no value below ${WINDOW}x${WINDOW})`);
  const prep = (t: Tensor): Tensor => (color === 'y' ? rgbToY(e, t, 255, true) : roundScaled(e, t, 255));
  const map = e.tidy(() => {
    const window = e.upload(gaussianWindow(WINDOW, 1.5), [WINDOW, WINDOW]);
    return ssimMap(e, prep(ref), prep(dist), window, (0.01 * 255) ** 2, (0.03 * 255) ** 2);
  });
  const host = await e.read(map);
  e.release(map);
  let s = 0;
  for (const v of host) s += v;
  return s / host.length;
}
