import type { Engine } from '../../engine.js';
import type { Tensor } from '../../tensor.js';
import { assertShape, elementwiseGrid } from '../common.js';
import { div } from '../elementwise.js';
import { slice } from '../copy.js';

/** A window of a [B, C, H, W] tensor and which of its sides overlap a neighbour. */
export interface Tile {
  y0: number;
  x0: number;
  h: number;
  w: number;
  blendTop: boolean;
  blendBottom: boolean;
  blendLeft: boolean;
  blendRight: boolean;
}

/**
 * Covers H×W with tiles of at most `size` per side overlapping by at least
 * `overlap`, evenly spaced, so every pixel is in at least one tile.
 */
export function planTiles(H: number, W: number, size: number, overlap: number): Tile[] {
  const starts = (n: number): number[] => {
    if (n <= size) return [0];
    const count = Math.ceil((n - overlap) / (size - overlap));
    return Array.from({ length: count }, (_, i) => Math.round((i * (n - size)) / (count - 1)));
  };
  const ys = starts(H);
  const xs = starts(W);
  return ys.flatMap((y0, i) => xs.map((x0, j) => ({
    y0, x0, h: Math.min(size, H), w: Math.min(size, W),
    blendTop: i > 0, blendBottom: i < ys.length - 1, blendLeft: j > 0, blendRight: j < xs.length - 1,
  })));
}

/** x[:, :, y0:y0+h, x0:x0+w] */
export function crop(e: Engine, x: Tensor, t: Pick<Tile, 'y0' | 'x0' | 'h' | 'w'>): Tensor {
  return e.tidy(() => slice(e, slice(e, x, 2, t.y0, t.y0 + t.h), 3, t.x0, t.x0 + t.w));
}

/**
 * Accumulates feathered tiles into one [B, C, H, W] result. `ramp` is the blend
 * width in pixels of the tensor being blended (at most the tiles' overlap).
 */
export class TileBlender {
  private readonly acc: Tensor;
  private readonly weights: Tensor;

  constructor(private readonly e: Engine, readonly shape: readonly number[], private readonly ramp: number) {
    this.acc = e.keep(e.zeros(shape, 'f32'));
    this.weights = e.keep(e.zeros([shape[2], shape[3]], 'f32'));
  }

  /** tile [B, C, t.h, t.w], the window t of the result */
  add(tile: Tensor, t: Tile): void {
    const [B, C, H, W] = this.shape;
    const [th, tw] = [tile.shape[2], tile.shape[3]];
    assertShape('TileBlender', tile.shape[0] === B && tile.shape[1] === C && th === t.h && tw === t.w, `tile ${tile} for window ${t.h}x${t.w}`);
    const n = tile.size;
    const { workgroups, groupsX } = elementwiseGrid(n);
    this.e.run({
      kernel: 'tile_accumulate',
      bindings: { tile, acc: this.acc, weights: this.weights },
      params: { B, C, th, tw, H, W, y0: t.y0, x0: t.x0, ramp: this.ramp,
        rampTop: +t.blendTop, rampBottom: +t.blendBottom, rampLeft: +t.blendLeft, rampRight: +t.blendRight, n, groupsX },
      workgroups,
    });
  }

  /** acc / weights (f32), then frees the accumulators. */
  result(): Tensor {
    const { e } = this;
    const [, , H, W] = this.shape;
    const out = div(e, this.acc, this.weights.reshape([1, 1, H, W]));
    e.release(this.acc);
    e.release(this.weights);
    return out;
  }
}
