/**
 * The paper's synthetic degradations (Diff-Restorer §IV-A: noise, JPEG, blur, low light,
 * haze, rain, snow, raindrops), each a function of an 8-bit-range float image and a
 * seeded random stream, chained left to right. Values are clipped to 0..255 after every
 * step; the result is rounded to 8 bits once, at the end (and before JPEG, which
 * encodes 8-bit samples).
 */
import sharp from 'sharp';
import { DrError } from '../errors.js';
import type { RgbImage } from '../image/load.js';
import { resizeBicubicU8 } from '../image/resize.js';
import { Rng } from './prng.js';

/** HWC interleaved RGB, values on the 0..255 scale (not rounded). */
export interface FloatImage {
  width: number;
  height: number;
  data: Float32Array;
}

interface ParamSpec {
  name: string;
  default?: number;
  /** Left out: drawn from the seeded stream in this range (recorded in the recipe). */
  random?: [number, number];
  min: number;
  max: number;
}

interface TypeSpec {
  help: string;
  params: ParamSpec[];
  apply: (img: FloatImage, p: Record<string, number>, rng: Rng) => FloatImage | Promise<FloatImage>;
}

/** One resolved step of a recipe: its type and every parameter's concrete value. */
export interface Step {
  type: string;
  params: Record<string, number>;
}

const TYPES: Record<string, TypeSpec> = {
  noise: {
    help: 'additive Gaussian noise, sigma on the 0-255 scale (paper: 50)',
    params: [{ name: 'sigma', default: 50, min: 0, max: 255 }],
    apply: (img, p, rng) => addNoise(img, p.sigma, rng),
  },
  jpeg: {
    help: 'JPEG compression at quality q (libjpeg scale 1-100, 4:2:0 chroma; paper: 10)',
    params: [{ name: 'quality', default: 10, min: 1, max: 100 }],
    apply: (img, p) => jpeg(img, Math.round(p.quality)),
  },
  blur: {
    help: 'Gaussian blur with standard deviation sigma in pixels (kernel radius ceil(3 sigma), mirrored edges)',
    params: [{ name: 'sigma', default: 2, min: 0.1, max: 50 }],
    apply: (img, p) => gaussianBlur(img, p.sigma),
  },
  motion: {
    help: 'linear motion blur of length L pixels at angle degrees (0 = horizontal; random if left out)',
    params: [
      { name: 'length', default: 15, min: 1, max: 200 },
      { name: 'angle', random: [0, 180], min: -360, max: 360 },
    ],
    apply: (img, p) => convolve(img, motionKernel(p.length, p.angle)),
  },
  lowlight: {
    help: 'low light: 255*gain*(x/255)^gamma, then Gaussian noise sigma (sensor noise in the dark)',
    params: [
      { name: 'gamma', default: 2.5, min: 0.1, max: 10 },
      { name: 'gain', default: 0.6, min: 0, max: 1 },
      { name: 'sigma', default: 5, min: 0, max: 255 },
    ],
    apply: (img, p, rng) => addNoise(gammaCurve(img, p.gamma, p.gain), p.sigma, rng),
  },
  haze: {
    help: 'haze by the atmospheric scattering model I = J t + A (1 - t), t = exp(-beta d), d a depth proxy; A the airlight in 0..1',
    params: [
      { name: 'beta', default: 1.5, min: 0, max: 20 },
      { name: 'airlight', default: 0.85, min: 0, max: 1 },
    ],
    apply: (img, p) => haze(img, p.beta, p.airlight),
  },
  rain: {
    help: 'rain streaks: density per 1000 pixels, length in pixels, angle in degrees from vertical (random if left out)',
    params: [
      { name: 'density', default: 2, min: 0, max: 50 },
      { name: 'length', default: 20, min: 1, max: 200 },
      { name: 'angle', random: [-20, 20], min: -80, max: 80 },
    ],
    apply: (img, p, rng) => rain(img, p.density, p.length, p.angle, rng),
  },
  snow: {
    help: 'snow flakes: density per 1000 pixels, mean flake radius in pixels',
    params: [
      { name: 'density', default: 1.5, min: 0, max: 50 },
      { name: 'size', default: 1.2, min: 0.2, max: 20 },
    ],
    apply: (img, p, rng) => snow(img, p.density, p.size, rng),
  },
  raindrop: {
    help: 'raindrops on the lens (best effort): drops per 512x512 area, mean radius as a fraction of the short side',
    params: [
      { name: 'count', default: 12, min: 0, max: 500 },
      { name: 'radius', default: 0.04, min: 0.005, max: 0.3 },
    ],
    apply: (img, p, rng) => raindrops(img, p.count, p.radius, rng),
  },
  downup: {
    help: 'Pillow bicubic down-scaling by factor k (sizes rounded down), then bicubic back to the original size',
    params: [{ name: 'factor', default: 4, min: 1, max: 64 }],
    apply: (img, p) => downUp(img, p.factor),
  },
};

export const DEGRADATION_TYPES = Object.keys(TYPES);

export function degradationHelp(): string {
  return Object.entries(TYPES)
    .map(([name, t]) => `  ${name}:${t.params.map((p) => p.name).join(':')}  ${t.help}` +
      ` (defaults: ${t.params.map((p) => (p.default !== undefined ? p.default : `random ${p.random![0]}..${p.random![1]}`)).join(', ')})`)
    .join('\n');
}

/** A parsed `--type` spec: steps whose random parameters are still unresolved (NaN). */
export function parseSpec(spec: string): Step[] {
  const parts = spec.split(',').map((s) => s.trim()).filter(Boolean);
  if (parts.length === 0) throw new DrError(`--type: no degradation given (e.g. noise:50,jpeg:10; known: ${DEGRADATION_TYPES.join(', ')})`);
  return parts.map((part) => {
    const [type, ...args] = part.split(':');
    const t = TYPES[type];
    if (!t) throw new DrError(`--type: unknown degradation "${type}" (known: ${DEGRADATION_TYPES.join(', ')})`);
    if (args.length > t.params.length) {
      throw new DrError(`--type: "${part}" has ${args.length} parameters, ${type} takes at most ${t.params.length} (${t.params.map((p) => p.name).join(':')})`);
    }
    const params: Record<string, number> = {};
    t.params.forEach((p, i) => {
      const raw = args[i];
      if (raw === undefined || raw === '') {
        params[p.name] = p.default ?? Number.NaN;
        return;
      }
      const v = Number(raw);
      if (!Number.isFinite(v) || v < p.min || v > p.max) {
        throw new DrError(`--type: ${type} ${p.name} must be a number in ${p.min}..${p.max}, got "${raw}"`);
      }
      params[p.name] = v;
    });
    return { type, params };
  });
}

/**
 * Applies the steps in order. Step k draws from the stream (seed, `${name}#k`), so an
 * image's result depends only on the seed, its name and the recipe, not on the other
 * inputs. Returns the 8-bit image and the steps with every random parameter resolved.
 */
export async function degrade(img: RgbImage, steps: Step[], seed: number, name: string): Promise<{ image: RgbImage; steps: Step[] }> {
  let cur: FloatImage = { width: img.width, height: img.height, data: Float32Array.from(img.data) };
  const resolved: Step[] = [];
  for (const [k, step] of steps.entries()) {
    const rng = new Rng(seed, `${name}#${k}`);
    const t = TYPES[step.type];
    const params: Record<string, number> = {};
    for (const p of t.params) {
      // A randomisable parameter always consumes its draw, so replaying a recipe with the
      // resolved value given explicitly leaves the rest of the stream unchanged.
      const drawn = p.random ? rng.range(p.random[0], p.random[1]) : Number.NaN;
      const v = step.params[p.name];
      params[p.name] = Number.isNaN(v) ? drawn : v;
    }
    cur = await t.apply(cur, params, rng);
    clip(cur.data);
    resolved.push({ type: step.type, params });
  }
  return { image: toU8(cur), steps: resolved };
}

// ---- the degradations -------------------------------------------------------

function clip(d: Float32Array): void {
  for (let i = 0; i < d.length; i++) d[i] = d[i] < 0 ? 0 : d[i] > 255 ? 255 : d[i];
}

export function toU8(img: FloatImage): RgbImage {
  const out = new Uint8Array(img.data.length);
  for (let i = 0; i < out.length; i++) out[i] = Math.min(255, Math.max(0, Math.round(img.data[i])));
  return { width: img.width, height: img.height, data: out };
}

const fromU8 = (img: RgbImage): FloatImage => ({ width: img.width, height: img.height, data: Float32Array.from(img.data) });

function addNoise(img: FloatImage, sigma: number, rng: Rng): FloatImage {
  const d = img.data.slice();
  if (sigma > 0) for (let i = 0; i < d.length; i++) d[i] += sigma * rng.normal();
  return { ...img, data: d };
}

async function jpeg(img: FloatImage, quality: number): Promise<FloatImage> {
  const u8 = toU8(img);
  const raw = { width: u8.width, height: u8.height, channels: 3 as const };
  const encoded = await sharp(Buffer.from(u8.data.buffer, u8.data.byteOffset, u8.data.length), { raw })
    .jpeg({ quality, chromaSubsampling: '4:2:0' })
    .toBuffer();
  const decoded = await sharp(encoded).raw().toBuffer();
  return { width: img.width, height: img.height, data: Float32Array.from(decoded) };
}

function gammaCurve(img: FloatImage, gamma: number, gain: number): FloatImage {
  return { ...img, data: img.data.map((v) => 255 * gain * Math.pow(Math.max(v, 0) / 255, gamma)) };
}

/** Mirror index (edge pixel repeated: …b a | a b c… | c b…), any distance. */
function mirror(i: number, n: number): number {
  if (n === 1) return 0;
  const period = 2 * n;
  let m = ((i % period) + period) % period;
  if (m >= n) m = period - 1 - m;
  return m;
}

export function gaussianKernel1d(sigma: number): Float64Array {
  const r = Math.max(1, Math.ceil(3 * sigma));
  const k = new Float64Array(2 * r + 1);
  let s = 0;
  for (let i = -r; i <= r; i++) s += (k[i + r] = Math.exp(-(i * i) / (2 * sigma * sigma)));
  for (let i = 0; i < k.length; i++) k[i] /= s;
  return k;
}

/** Separable filtering of every channel, mirrored edges. */
function separable(img: FloatImage, kx: Float64Array, ky: Float64Array, channels = 3): FloatImage {
  const { width: W, height: H } = img;
  const rx = (kx.length - 1) / 2;
  const ry = (ky.length - 1) / 2;
  const tmp = new Float32Array(img.data.length);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      for (let c = 0; c < channels; c++) {
        let s = 0;
        for (let t = -rx; t <= rx; t++) s += kx[t + rx] * img.data[(y * W + mirror(x + t, W)) * channels + c];
        tmp[(y * W + x) * channels + c] = s;
      }
    }
  }
  const out = new Float32Array(img.data.length);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      for (let c = 0; c < channels; c++) {
        let s = 0;
        for (let t = -ry; t <= ry; t++) s += ky[t + ry] * tmp[(mirror(y + t, H) * W + x) * channels + c];
        out[(y * W + x) * channels + c] = s;
      }
    }
  }
  return { width: W, height: H, data: out };
}

function gaussianBlur(img: FloatImage, sigma: number, channels = 3): FloatImage {
  const k = gaussianKernel1d(sigma);
  return separable(img, k, k, channels);
}

interface Kernel2d {
  size: number;
  w: Float64Array;
}

/** A line of the given length through the centre, drawn with bilinear splats every 0.05 px, normalised. */
export function motionKernel(length: number, angleDeg: number): Kernel2d {
  const half = Math.ceil(length / 2) + 1;
  const size = 2 * half + 1;
  const w = new Float64Array(size * size);
  const a = (angleDeg * Math.PI) / 180;
  const [dx, dy] = [Math.cos(a), -Math.sin(a)];
  const steps = Math.max(2, Math.ceil(length / 0.05));
  for (let i = 0; i <= steps; i++) {
    const t = -length / 2 + (length * i) / steps;
    const x = half + t * dx;
    const y = half + t * dy;
    const x0 = Math.floor(x);
    const y0 = Math.floor(y);
    const fx = x - x0;
    const fy = y - y0;
    w[y0 * size + x0] += (1 - fx) * (1 - fy);
    w[y0 * size + x0 + 1] += fx * (1 - fy);
    w[(y0 + 1) * size + x0] += (1 - fx) * fy;
    w[(y0 + 1) * size + x0 + 1] += fx * fy;
  }
  const s = w.reduce((p, v) => p + v, 0);
  for (let i = 0; i < w.length; i++) w[i] /= s;
  return { size, w };
}

function convolve(img: FloatImage, k: Kernel2d): FloatImage {
  const { width: W, height: H } = img;
  const r = (k.size - 1) / 2;
  const taps: [number, number, number][] = [];
  for (let j = 0; j < k.size; j++) for (let i = 0; i < k.size; i++) if (k.w[j * k.size + i] > 0) taps.push([j - r, i - r, k.w[j * k.size + i]]);
  const out = new Float32Array(img.data.length);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      let [s0, s1, s2] = [0, 0, 0];
      for (const [dy, dx, w] of taps) {
        const o = (mirror(y + dy, H) * W + mirror(x + dx, W)) * 3;
        s0 += w * img.data[o];
        s1 += w * img.data[o + 1];
        s2 += w * img.data[o + 2];
      }
      const o = (y * W + x) * 3;
      out[o] = s0;
      out[o + 1] = s1;
      out[o + 2] = s2;
    }
  }
  return { width: W, height: H, data: out };
}

/**
 * Depth proxy for haze, in 0..1 (1 = far): 70% vertical position (the top of a photo is
 * usually farther away) and 30% heavily smoothed brightness (sky and distant scenery are
 * bright and flat). A proxy, not an estimate: it makes haze thicken towards the horizon.
 */
export function depthProxy(img: FloatImage): Float32Array {
  const { width: W, height: H } = img;
  const lum: FloatImage = { width: W, height: H, data: new Float32Array(W * H) };
  for (let i = 0; i < W * H; i++) {
    lum.data[i] = (0.299 * img.data[3 * i] + 0.587 * img.data[3 * i + 1] + 0.114 * img.data[3 * i + 2]) / 255;
  }
  const smooth = gaussianBlur(lum, Math.max(W, H) / 30, 1).data;
  const d = new Float32Array(W * H);
  for (let y = 0; y < H; y++) {
    const v = H > 1 ? 1 - y / (H - 1) : 0.5;
    for (let x = 0; x < W; x++) d[y * W + x] = 0.7 * v + 0.3 * smooth[y * W + x];
  }
  return d;
}

function haze(img: FloatImage, beta: number, airlight: number): FloatImage {
  const d = depthProxy(img);
  const A = 255 * airlight;
  const out = new Float32Array(img.data.length);
  for (let i = 0; i < d.length; i++) {
    const t = Math.exp(-beta * d[i]);
    for (let c = 0; c < 3; c++) out[3 * i + c] = img.data[3 * i + c] * t + A * (1 - t);
  }
  return { ...img, data: out };
}

/** Screen-blends a one-channel 0..1 layer of white onto the image: x + (255 - x)·m. */
function screen(img: FloatImage, m: Float32Array, opacity: number): FloatImage {
  const out = img.data.slice();
  for (let i = 0; i < m.length; i++) {
    const a = Math.min(1, m[i] * opacity);
    for (let c = 0; c < 3; c++) out[3 * i + c] += (255 - out[3 * i + c]) * a;
  }
  return { ...img, data: out };
}

/** Adds an anti-aliased segment of the given intensity to a one-channel layer. */
function drawSegment(m: Float32Array, W: number, H: number, x0: number, y0: number, x1: number, y1: number, v: number): void {
  const len = Math.hypot(x1 - x0, y1 - y0);
  const n = Math.max(1, Math.ceil(len / 0.5));
  for (let i = 0; i <= n; i++) {
    const x = x0 + ((x1 - x0) * i) / n;
    const y = y0 + ((y1 - y0) * i) / n;
    const xi = Math.floor(x);
    const yi = Math.floor(y);
    const fx = x - xi;
    const fy = y - yi;
    for (const [dx, dy, w] of [[0, 0, (1 - fx) * (1 - fy)], [1, 0, fx * (1 - fy)], [0, 1, (1 - fx) * fy], [1, 1, fx * fy]] as const) {
      const xx = xi + dx;
      const yy = yi + dy;
      if (xx >= 0 && xx < W && yy >= 0 && yy < H) m[yy * W + xx] = Math.max(m[yy * W + xx], v * w * 1.6);
    }
  }
}

function rain(img: FloatImage, density: number, length: number, angle: number, rng: Rng): FloatImage {
  const { width: W, height: H } = img;
  const m = new Float32Array(W * H);
  const count = Math.round((density * W * H) / 1000);
  for (let i = 0; i < count; i++) {
    const a = ((angle + rng.range(-3, 3)) * Math.PI) / 180;
    const len = length * rng.range(0.6, 1.2);
    const x = rng.range(-len, W + len);
    const y = rng.range(-len, H + len);
    const dx = Math.sin(a) * len;
    const dy = Math.cos(a) * len;
    drawSegment(m, W, H, x, y, x + dx, y + dy, rng.range(0.4, 1));
  }
  const soft = gaussianBlur({ width: W, height: H, data: m }, 0.6, 1).data;
  return screen(img, soft, 0.8);
}

function snow(img: FloatImage, density: number, size: number, rng: Rng): FloatImage {
  const { width: W, height: H } = img;
  const m = new Float32Array(W * H);
  const count = Math.round((density * W * H) / 1000);
  for (let i = 0; i < count; i++) {
    const r = Math.min(4 * size, -size * Math.log(1 - rng.uniform()) + 0.3);
    const cx = rng.range(0, W);
    const cy = rng.range(0, H);
    const peak = rng.range(0.6, 1);
    const R = Math.ceil(2 * r);
    for (let y = Math.max(0, Math.floor(cy - R)); y <= Math.min(H - 1, Math.ceil(cy + R)); y++) {
      for (let x = Math.max(0, Math.floor(cx - R)); x <= Math.min(W - 1, Math.ceil(cx + R)); x++) {
        const d2 = (x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2;
        const v = peak * Math.exp(-d2 / (2 * r * r));
        m[y * W + x] = Math.max(m[y * W + x], v);
      }
    }
  }
  // A faint veil: falling snow lowers contrast as well as adding flakes.
  const veiled = img.data.map((v) => v * 0.92 + 255 * 0.08 * 0.6);
  return screen({ ...img, data: veiled }, m, 1);
}

/**
 * Raindrops on the lens, best effort: each drop is a disc that shows a blurred,
 * inverted and magnified view of the scene around it (a water lens), slightly darker,
 * with a soft edge and a dark rim. Not a physical renderer.
 */
function raindrops(img: FloatImage, count: number, radius: number, rng: Rng): FloatImage {
  const { width: W, height: H } = img;
  const blurred = gaussianBlur(img, 2);
  const out = img.data.slice();
  const n = Math.round((count * W * H) / (512 * 512));
  const short = Math.min(W, H);
  for (let i = 0; i < n; i++) {
    const r = Math.max(2, short * radius * rng.range(0.5, 1.5));
    const cx = rng.range(0, W);
    const cy = rng.range(0, H);
    const squash = rng.range(0.8, 1.2); // drops are rarely round
    for (let y = Math.max(0, Math.floor(cy - r * 1.3)); y <= Math.min(H - 1, Math.ceil(cy + r * 1.3)); y++) {
      for (let x = Math.max(0, Math.floor(cx - r)); x <= Math.min(W - 1, Math.ceil(cx + r)); x++) {
        const u = (x + 0.5 - cx) / r;
        const v = (y + 0.5 - cy) / (r * squash);
        const d = Math.hypot(u, v);
        if (d >= 1) continue;
        const sx = Math.min(W - 1, Math.max(0, Math.round(cx - u * r * 0.5)));
        const sy = Math.min(H - 1, Math.max(0, Math.round(cy - v * r * squash * 0.5)));
        const alpha = d > 0.85 ? (1 - d) / 0.15 : 1;
        const shade = 0.9 - (d > 0.8 ? 0.25 * (d - 0.8) / 0.2 : 0) + 0.1 * Math.max(0, -u - v) * (1 - d);
        const o = (y * W + x) * 3;
        const s = (sy * W + sx) * 3;
        for (let c = 0; c < 3; c++) out[o + c] = out[o + c] * (1 - alpha) + blurred.data[s + c] * shade * alpha;
      }
    }
  }
  return { ...img, data: out };
}

function downUp(img: FloatImage, factor: number): FloatImage {
  const u8 = toU8(img);
  const w = Math.max(1, Math.floor(img.width / factor));
  const h = Math.max(1, Math.floor(img.height / factor));
  return fromU8(resizeBicubicU8(resizeBicubicU8(u8, w, h), img.width, img.height));
}
