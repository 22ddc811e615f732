// The VAE (and the full-resolution hint encoders) over overlapping tiles, for photos whose
// full-size activations would not fit in GPU memory (512 channels at 2048×2048 is 8 GB in f32).
// Tiles are planned on the latent grid, so pixel windows are whole latent cells,
// and blended with linear ramps over the overlap; as in diffusers' tiled VAE, group
// norms see one tile's statistics, which the overlap blending hides.
import type { Engine } from '../../engine/engine.js';
import { TileBlender, crop, planTiles, type Tile } from '../../engine/ops/eval/tiles.js';
import type { Tensor } from '../../engine/tensor.js';

export interface TileSize {
  /** Latent cells per tile side and overlap. */
  size: number;
  overlap: number;
}

/**
 * The tile for a full-resolution pass (VAE, hint encoders): `tile`, made smaller (its overlap in
 * proportion) where one tile's widest activation, `widest` f32 channels per pixel, would not fit
 * in one storage binding. Lavapipe binds 128 MiB; the SD VAE decoder's 256-channel layers take
 * 256 MiB at 512². Without a tile, one is made only if the whole image would not fit.
 */
export function fitBinding(e: Engine, tile: TileSize | undefined, f: number, widest: number): TileSize | undefined {
  const maxSide = Math.max(1, Math.floor(Math.sqrt(e.maxBinding / (widest * 4)) / f)); // latent cells
  if (!tile) return { size: maxSide, overlap: Math.floor(maxSide / 4) };
  if (tile.size <= maxSide) return tile;
  return { size: maxSide, overlap: Math.floor((tile.overlap * maxSide) / tile.size) };
}

/** A latent tile's window in pixels. */
const toPixels = (t: Tile, f: number): Tile => ({ ...t, y0: t.y0 * f, x0: t.x0 * f, h: t.h * f, w: t.w * f });

/**
 * latent [B, C, h, w] → image [B, outChannels, f·h, f·w] (f32 when tiled), decoding each
 * latent tile with `decodeTile(latentTile, pixelWindow)`.
 */
export function decodeTiled(
  e: Engine, latent: Tensor, f: number, outChannels: number, tile: TileSize | undefined,
  decodeTile: (z: Tensor, window: Tile) => Tensor,
): Tensor {
  const [B, , h, w] = latent.shape;
  const tiles = tile ? planTiles(h, w, tile.size, tile.overlap) : [];
  if (tiles.length <= 1) return decodeTile(latent, toPixels(planTiles(h, w, Math.max(h, w), 0)[0], f));
  const blender = new TileBlender(e, [B, outChannels, h * f, w * f], tile!.overlap * f);
  for (const t of tiles) {
    e.tidy(() => blender.add(decodeTile(crop(e, latent, t), toPixels(t, f)), toPixels(t, f)));
  }
  return blender.result();
}

/**
 * image [B, 3, H, W] → [B, C, H/f, W/f] (f32 when tiled), encoding the pixel window of each
 * latent tile with `encodeTile`: the VAE encoder, or a ControlNet's hint encoder.
 */
export function encodeTiled(
  e: Engine, image: Tensor, f: number, latentChannels: number, tile: TileSize | undefined,
  encodeTile: (x: Tensor) => Tensor,
): Tensor {
  const [B, , H, W] = image.shape;
  const [h, w] = [H / f, W / f];
  const tiles = tile ? planTiles(h, w, tile.size, tile.overlap) : [];
  if (tiles.length <= 1) return encodeTile(image);
  const blender = new TileBlender(e, [B, latentChannels, h, w], tile!.overlap);
  for (const t of tiles) {
    e.tidy(() => blender.add(encodeTile(crop(e, image, toPixels(t, f))), t));
  }
  return blender.result();
}
