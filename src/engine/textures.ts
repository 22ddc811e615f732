// Textures for the CPU-adapter kernels (kernels.ts): a texel holds 4 consecutive values of a row
// (rgba32float) or 8 f16 values packed in pairs (rgba32uint, pack2x16float). Activations get pooled textures per call; a weight's texture is made once and
// lives as long as the weight tensor.
import type { Engine } from './engine.js';
import type { Tensor } from './tensor.js';

// A function: GPUTextureUsage exists only once device.ts has installed the WebGPU globals.
const usage = (): number => GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING | GPUTextureUsage.COPY_DST;

export type TexelFormat = 'rgba32float' | 'rgba32uint';

/** Values per texel: 4 f32, or 8 packed f16. */
export const perTexel = (format: TexelFormat): number => (format === 'rgba32uint' ? 8 : 4);

/**
 * Texels per row for `cols` values, plus 16 when the row pitch is a multiple of 4 KiB, where 8
 * lanes fetching one column of 8 rows would all hit one L1 set (measured: a third faster at K = 1024).
 */
export function texelsPerRow(cols: number, format: TexelFormat = 'rgba32float'): number {
  const texels = Math.ceil(cols / perTexel(format));
  return texels % 256 === 0 ? texels + 16 : texels;
}

/**
 * Pooled activation textures, keyed by width and a height class (powers of two and their 1.5×
 * midpoints, as the buffer pool): reuse in stream order is safe, like pooled buffers, so a texture
 * goes back as soon as its last dispatch is recorded.
 */
export class TexturePool {
  private readonly free = new Map<string, GPUTexture[]>();
  /** Bytes of the textures this pool made. */
  bytes = 0;
  /** Textures this pool made (in use or waiting). */
  count = 0;

  /** `counted` hears of every texture made or destroyed (the buffer pool's total and peak include them). */
  constructor(private readonly device: GPUDevice, private readonly counted: (bytes: number) => void = () => {}) {}

  acquire(width: number, rows: number, format: TexelFormat = 'rgba32float'): GPUTexture {
    const max = this.device.limits.maxTextureDimension2D;
    const height = Math.min(max, heightClass(rows));
    const texture = this.free.get(`${width}x${height}${format}`)?.pop();
    if (texture) return texture;
    this.bytes += width * height * 16;
    this.count++;
    this.counted(width * height * 16);
    return this.device.createTexture({ size: [width, height], format, usage: usage(), label: `act ${width}x${height}` });
  }

  release(texture: GPUTexture): void {
    const key = `${texture.width}x${texture.height}${texture.format}`;
    const list = this.free.get(key);
    if (list) list.push(texture);
    else this.free.set(key, [texture]);
  }

  /** Frees the waiting textures (between models or images of very different sizes). */
  trim(): void {
    for (const list of this.free.values()) for (const t of list) {
      this.bytes -= t.width * t.height * 16;
      this.count--;
      this.counted(-t.width * t.height * 16);
      t.destroy();
    }
    this.free.clear();
  }
}

function heightClass(rows: number): number {
  if (rows <= 16) return 16;
  const p = 2 ** Math.ceil(Math.log2(rows));
  return rows <= p * 0.75 ? p * 0.75 : p;
}

/** A strided view of a tensor as texture rows (to_texture.wgsl's Params). */
export interface TextureView {
  rows: number;
  rowsPerItem: number;
  segs: number;
  segCols: number;
  base: number;
  sItem: number;
  sRow: number;
  sSeg: number;
  sK: number;
}

// A weight's textures, made on first use, each with the view of the weight it holds (from which
// from_texture.wgsl writes the values back). Keyed by the weight tensor, so they are freed with it
// (no explicit destroy: a recorded dispatch may still hold them). An op that writes a weight in
// place (the optimizer step) drops them.
const weightTextures = new WeakMap<Tensor, Map<string, { texture: GPUTexture; view: TextureView }>>();

/**
 * The texture of weight `w` in a layout (`layout` names how `view` arranges it, `fill` writes it
 * from w's buffer), made once and counted with the weights' bytes. The weight's buffer is then
 * dropped (Engine.dropWeightBuffer), so a weight that only texture kernels read is held once;
 * `view` must then cover every element of w once, so that the buffer can be written back from
 * the texture (Engine.materialise) if a buffer kernel needs it later.
 */
export function weightTexture(e: Engine, w: Tensor, layout: string, width: number, rows: number, view: TextureView,
  fill: (t: GPUTexture) => void, format: TexelFormat = 'rgba32float'): GPUTexture {
  const key = w.base ?? w;
  let byLayout = weightTextures.get(key);
  if (!byLayout) weightTextures.set(key, (byLayout = new Map()));
  const made = byLayout.get(layout + format);
  if (made) return made.texture;
  e.materialise(w); // a second layout is made from the buffer (which then stays)
  const texture = e.device.createTexture({ size: [width, rows], format, usage: usage(), label: `weight ${w} ${layout}` });
  e.pool.countWeight(width * rows * 16);
  fill(texture);
  byLayout.set(layout + format, { texture, view });
  e.dropWeightBuffer(key);
  return texture;
}

/** A texture that holds every value of weight `w`, and its view (to write w's buffer back), if one was made. */
export function weightSource(w: Tensor): { texture: GPUTexture; view: TextureView } | undefined {
  return weightTextures.get(w.base ?? w)?.values().next().value;
}

/**
 * Forgets the textures made from a weight that has just been written in place and returns them:
 * the caller destroys them once the dispatches recorded so far are submitted (an optimizer step
 * would otherwise leave one stale texture per trainable weight per step to the garbage collector,
 * still counted as weight memory).
 */
export function weightChanged(w: Tensor): GPUTexture[] {
  const key = w.base ?? w;
  const byLayout = weightTextures.get(key);
  weightTextures.delete(key);
  return byLayout ? [...byLayout.values()].map((t) => t.texture) : [];
}

/** Bytes a weight texture was counted with (16 per texel, as weightTexture counts them). */
export const weightTextureBytes = (t: GPUTexture): number => t.width * t.height * 16;
