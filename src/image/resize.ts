import type { RgbImage } from './load.js';

// Bit-exact port of Pillow's Image.resize(size, Image.BICUBIC) for 8-bit RGB
// (libImaging/Resample.c): CLIP's preprocessing is defined by it, so any other
// bicubic (sharp, browsers) shifts pixel values and the embeddings with them.

const SUPPORT = 2.0;
const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);

function bicubic(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

interface Coeffs {
  ksize: number;
  bounds: Int32Array; // per output: first input index, count
  kk: Int32Array; // outSize * ksize fixed-point weights
  kd: Float64Array; // the same weights before fixed point (Pillow's float-image path)
}

/** precompute_coeffs + normalize_coeffs_8bpc, same double arithmetic and same operation order. */
function coeffs(inSize: number, outSize: number): Coeffs {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = SUPPORT * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const ss = 1 / filterscale; // Pillow multiplies by the reciprocal; dividing can differ in the last bit
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const kd = new Float64Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      k[x] = bicubic((x + xmin - center + 0.5) * ss);
      ww += k[x];
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0 ? k[x] / ww : k[x];
      kd[xx * ksize + x] = w;
      kk[xx * ksize + x] = Math.trunc(w < 0 ? -0.5 + w * ONE : 0.5 + w * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk, kd };
}

// Sums are integers below 2^31 (|Σ coef| ≤ ~1.3·2^22, samples ≤ 255), so doubles hold them exactly.
function clip8(v: number): number {
  if (v >= ONE * 256) return 255;
  if (v <= 0) return 0;
  return Math.floor(v / ONE);
}

/** One pass over a w-wide HWC buffer: along x (`horizontal`) or along y, to outW×outH. */
function pass(src: Uint8Array, w: number, outW: number, outH: number, c: Coeffs, horizontal: boolean): Uint8Array {
  const out = new Uint8Array(outW * outH * 3);
  const { ksize, bounds, kk } = c;
  const step = horizontal ? 3 : w * 3; // distance between successive taps
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const o = horizontal ? x : y;
      const min = bounds[o * 2];
      const n = bounds[o * 2 + 1];
      const base = horizontal ? (y * w + min) * 3 : (min * w + x) * 3;
      for (let ch = 0; ch < 3; ch++) {
        let ss = HALF;
        for (let i = 0, p = base + ch; i < n; i++, p += step) ss += src[p] * kk[o * ksize + i];
        out[(y * outW + x) * 3 + ch] = clip8(ss);
      }
    }
  }
  return out;
}

/**
 * Pillow's bicubic resize, bit-exact: horizontal pass into an 8-bit intermediate, then
 * vertical; a pass whose dimension is unchanged is skipped. (Pillow runs the horizontal pass
 * only over the rows the vertical one reads; that changes no values, so all rows are done.)
 */
export function resizeBicubicU8(img: RgbImage, width: number, height: number): RgbImage {
  let data = img.data;
  if (width !== img.width) data = pass(data, img.width, width, img.height, coeffs(img.width, width), true);
  if (height !== img.height) data = pass(data, width, width, height, coeffs(img.height, height), false);
  return { width, height, data: data === img.data ? data.slice() : data };
}

/**
 * The same bicubic on float planes [C, H, W] in [0, 1]: the normalised weights in double, float32
 * between the passes and no 8-bit rounding, so 16-bit photos and alpha keep their precision. Each
 * pass clamps to [0, 1] as Pillow's integer-image passes clamp to their range.
 */
export function resizeBicubicPlanes(planes: Float32Array, channels: number, width: number, height: number, outW: number, outH: number): Float32Array {
  const horizontal = coeffs(width, outW);
  const vertical = coeffs(height, outH);
  const tmp = new Float32Array(height * outW);
  const out = new Float32Array(channels * outH * outW);
  for (let c = 0; c < channels; c++) {
    const src = planes.subarray(c * width * height, (c + 1) * width * height);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < outW; x++) tmp[y * outW + x] = Math.min(Math.max(tap(src, y * width, 1, horizontal, x), 0), 1);
    }
    for (let y = 0; y < outH; y++) {
      for (let x = 0; x < outW; x++) out[(c * outH + y) * outW + x] = Math.min(Math.max(tap(tmp, x, outW, vertical, y), 0), 1);
    }
  }
  return out;
}

/** Σ src[base + (min + i)·step] · weight_i for output `o`. */
function tap(src: Float32Array, base: number, step: number, c: Coeffs, o: number): number {
  const min = c.bounds[o * 2];
  const n = c.bounds[o * 2 + 1];
  let ss = 0;
  for (let i = 0; i < n; i++) ss += src[base + (min + i) * step] * c.kd[o * c.ksize + i];
  return ss;
}
