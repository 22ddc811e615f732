import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import type { RgbImage } from '../../image/load.js';

/** torchvision to_tensor: 8-bit HWC RGB → planar [3, H, W] float32 u8 / 255 (what pyiqa feeds every metric). */
export function toPlanar01(img: RgbImage): Float32Array {
  const { width: W, height: H, data } = img;
  const n = W * H;
  const out = new Float32Array(3 * n);
  for (let i = 0; i < n; i++) {
    out[i] = data[3 * i] / 255;
    out[n + i] = data[3 * i + 1] / 255;
    out[2 * n + i] = data[3 * i + 2] / 255;
  }
  return out;
}

/** The image on the GPU as [1, 3, H, W] in [0, 1]. */
export function uploadImage(e: Engine, img: RgbImage): Tensor {
  return e.upload(toPlanar01(img), [1, 3, img.height, img.width]);
}
