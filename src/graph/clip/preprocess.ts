import fs from 'node:fs';
import path from 'node:path';
import { DrError } from '../../errors.js';
import { loadRgb, type RgbImage } from '../../image/load.js';
import { resizeBicubicU8 } from '../../image/resize.js';

/** transformers' CLIPImageProcessor settings (preprocessor_config.json). */
export interface ClipImageConfig {
  shortestEdge: number;
  cropHeight: number;
  cropWidth: number;
  rescaleFactor: number;
  mean: number[];
  std: number[];
  doResize: boolean;
  doCenterCrop: boolean;
  doRescale: boolean;
  doNormalize: boolean;
}

const PIL_BICUBIC = 3;

/** Reads `<dir>/preprocessor_config.json`; absent keys take CLIPImageProcessor's defaults. */
export function readClipImageConfig(dir: string): ClipImageConfig {
  const file = path.join(dir, 'preprocessor_config.json');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new DrError(`${file}: missing (CLIP image preprocessing settings)`);
  }
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new DrError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  const bad = (key: string) => new DrError(`${file}: unsupported ${key} ${JSON.stringify(j[key])}`);
  const num = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
  const posInt = (v: unknown) => Number.isInteger(v) && (v as number) > 0;
  const flag = (key: string) => {
    const v = j[key] ?? true;
    if (typeof v !== 'boolean') throw bad(key);
    return v;
  };
  const triple = (key: string, dflt: number[]) => {
    const v = j[key] ?? dflt;
    if (!Array.isArray(v) || v.length !== 3 || !v.every(num)) throw bad(key);
    return v as number[];
  };

  if ((j.resample ?? PIL_BICUBIC) !== PIL_BICUBIC) {
    throw new DrError(`${file}: resample ${JSON.stringify(j.resample)} is not supported (only 3, bicubic)`);
  }
  const size = j.size ?? { shortest_edge: 224 };
  const shortestEdge = typeof size === 'number' ? size : (size as { shortest_edge?: unknown }).shortest_edge;
  if (!posInt(shortestEdge)) throw bad('size');
  const crop = j.crop_size ?? 224;
  const [cropHeight, cropWidth] = typeof crop === 'number' ? [crop, crop] : [(crop as { height?: unknown }).height, (crop as { width?: unknown }).width];
  if (!posInt(cropHeight) || !posInt(cropWidth)) throw bad('crop_size');
  const rescaleFactor = j.rescale_factor ?? 1 / 255;
  if (!num(rescaleFactor)) throw bad('rescale_factor');
  const std = triple('image_std', [0.26862954, 0.26130258, 0.27577711]);
  if (std.some((s) => s === 0)) throw bad('image_std');
  return {
    shortestEdge: shortestEdge as number,
    cropHeight: cropHeight as number,
    cropWidth: cropWidth as number,
    rescaleFactor: rescaleFactor as number,
    mean: triple('image_mean', [0.48145466, 0.4578275, 0.40821073]),
    std,
    doResize: flag('do_resize'),
    doCenterCrop: flag('do_center_crop'),
    doRescale: flag('do_rescale'),
    doNormalize: flag('do_normalize'),
  };
}

/** Output size (w, h) of transformers' shortest-edge resize: the long side is truncated, not rounded. */
export function shortestEdgeSize(width: number, height: number, shortestEdge: number): [number, number] {
  if (width <= height) return [shortestEdge, Math.trunc((shortestEdge * height) / width)];
  return [Math.trunc((shortestEdge * width) / height), shortestEdge];
}

/**
 * transformers' center_crop: top = floor((h - cropH) / 2), left likewise. An image smaller
 * than the crop is padded with zero pixels (transformers pads the same way: image placed at
 * ceil((crop - h) / 2), which is exactly -top), so padding becomes (0 - mean) / std after normalisation.
 */
export function centerCropU8(img: RgbImage, cropWidth: number, cropHeight: number): RgbImage {
  const top = Math.floor((img.height - cropHeight) / 2);
  const left = Math.floor((img.width - cropWidth) / 2);
  const data = new Uint8Array(cropWidth * cropHeight * 3);
  for (let y = 0; y < cropHeight; y++) {
    const sy = y + top;
    if (sy < 0 || sy >= img.height) continue;
    const x0 = Math.max(0, -left);
    const x1 = Math.min(cropWidth, img.width - left);
    if (x1 <= x0) continue;
    const src = (sy * img.width + x0 + left) * 3;
    data.set(img.data.subarray(src, src + (x1 - x0) * 3), (y * cropWidth + x0) * 3);
  }
  return { width: cropWidth, height: cropHeight, data };
}

/** CLIP pixel_values for one image: CHW float32 [3, H, W] (H, W = crop size when cropping). */
export function clipPixelValues(img: RgbImage, cfg: ClipImageConfig): Float32Array {
  if (cfg.doResize) {
    const [w, h] = shortestEdgeSize(img.width, img.height, cfg.shortestEdge);
    img = resizeBicubicU8(img, w, h);
  }
  if (cfg.doCenterCrop) img = centerCropU8(img, cfg.cropWidth, cfg.cropHeight);
  const n = img.width * img.height;
  const out = new Float32Array(3 * n);
  const f = Math.fround;
  // transformers rescales in float64 and casts to float32, then normalises in float32 with
  // float32 mean/std; emulating that with fround reproduces its values bit for bit.
  const scale = cfg.doRescale ? cfg.rescaleFactor : 1;
  for (let c = 0; c < 3; c++) {
    const mean = f(cfg.doNormalize ? cfg.mean[c] : 0);
    const std = f(cfg.doNormalize ? cfg.std[c] : 1);
    for (let i = 0; i < n; i++) out[c * n + i] = f(f(img.data[i * 3 + c] * scale) - mean) / std;
  }
  return out;
}

export async function loadClipPixelValues(file: string, cfg: ClipImageConfig): Promise<Float32Array> {
  return clipPixelValues(await loadRgb(file), cfg);
}
