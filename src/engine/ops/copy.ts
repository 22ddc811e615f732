import type { Engine } from '../engine.js';
import { grid } from '../engine.js';
import { numel, type DType, type Tensor } from '../tensor.js';
import { LOOP_ELEMENTS, assertShape, collapseAxes, elementwiseGrid, indexRank, pad8, stridesOf } from './common.js';
import { sumTo } from './elementwise.js';

interface StridedView {
  shape: readonly number[];
  strides: readonly number[];
  offset: number;
}

/** One strided copy from a view of src into a view of dst (copy_strided.wgsl). */
function copyInto(e: Engine, src: Tensor, from: StridedView, dst: Tensor, to: StridedView): void {
  const n = numel(from.shape);
  if (n === 0) return;
  const axes = collapseAxes(from.shape, [from.strides, to.strides]);
  const s = pad8(axes.shape, axes.strides[0]);
  const d = pad8(axes.shape, axes.strides[1]);
  const { workgroups, groupsX } = elementwiseGrid(n, LOOP_ELEMENTS);
  e.run({
    kernel: 'copy_strided',
    bindings: { src, dst },
    defines: { RANK: indexRank(axes.shape.length) },
    params: { shape: s.shape, srcStride: s.strides, dstStride: d.strides, n, srcOff: from.offset, dstOff: to.offset, groupsX },
    workgroups,
  });
}

const contiguous = (shape: readonly number[], offset = 0): StridedView => ({ shape, strides: stridesOf(shape), offset });

/** x[..., start:end, ...] along `axis`. */
export function slice(e: Engine, x: Tensor, axis: number, start: number, end: number): Tensor {
  const ax = axis < 0 ? x.shape.length + axis : axis;
  assertShape('slice', start >= 0 && end <= x.shape[ax] && start <= end, `[${start}:${end}] on axis ${ax} of ${x}`);
  const shape = x.shape.map((d, i) => (i === ax ? end - start : d));
  const strides = stridesOf(x.shape);
  const out = e.empty(shape, x.dtype);
  copyInto(e, x, { shape, strides, offset: start * strides[ax] }, out, contiguous(shape));
  e.record('slice', [x], out, [], (dy) => [sliceBackward(e, dy, x.shape, ax, start)]);
  return out;
}

/** Backward of `slice`: dy copied into a zero gradient of x's shape at `start` along `axis`. */
export function sliceBackward(e: Engine, dy: Tensor, xShape: readonly number[], axis: number, start: number): Tensor {
  const ax = axis < 0 ? xShape.length + axis : axis;
  assertShape('sliceBackward', dy.shape.length === xShape.length && dy.shape.every((d, i) => (i === ax ? start + d <= xShape[i] : d === xShape[i])), `gradient ${dy} at ${start} on axis ${ax} of [${xShape}]`);
  const dx = e.zeros(xShape, dy.dtype);
  const strides = stridesOf(xShape);
  copyInto(e, dy, contiguous(dy.shape), dx, { shape: dy.shape, strides, offset: start * strides[ax] });
  return dx;
}

/** Concatenation along `axis`; all other dimensions must agree. */
export function concat(e: Engine, xs: Tensor[], axis: number): Tensor {
  const rank = xs[0].shape.length;
  const ax = axis < 0 ? rank + axis : axis;
  for (const x of xs) {
    assertShape('concat', x.shape.length === rank && x.shape.every((d, i) => i === ax || d === xs[0].shape[i]), `${x} vs ${xs[0]}`);
  }
  const shape = xs[0].shape.map((d, i) => (i === ax ? xs.reduce((s, x) => s + x.shape[ax], 0) : d));
  const out = e.empty(shape, xs[0].dtype);
  const outStrides = stridesOf(shape);
  let at = 0;
  for (const x of xs) {
    copyInto(e, x, contiguous(x.shape), out, { shape: x.shape, strides: outStrides, offset: at * outStrides[ax] });
    at += x.shape[ax];
  }
  e.record('concat', xs, out, [], (dy, needs) => {
    let from = 0;
    return xs.map((x, i) => {
      const start = from;
      from += x.shape[ax];
      return needs[i] ? slice(e, dy, ax, start, from) : undefined;
    });
  });
  return out;
}

/** Backward of `concat`: dy split back into the inputs' `sizes` along `axis`. */
export function concatBackward(e: Engine, dy: Tensor, sizes: readonly number[], axis: number): Tensor[] {
  const ax = axis < 0 ? dy.shape.length + axis : axis;
  assertShape('concatBackward', sizes.reduce((s, d) => s + d, 0) === dy.shape[ax], `sizes [${sizes}] on axis ${ax} of ${dy}`);
  let at = 0;
  return sizes.map((d) => slice(e, dy, ax, at, (at += d)));
}

/** Axis permutation, e.g. permute(x, [0, 2, 1]) transposes the last two axes. */
export function permute(e: Engine, x: Tensor, order: number[]): Tensor {
  assertShape('permute', order.length === x.shape.length && [...order].sort().every((v, i) => v === i), `order [${order}] for ${x}`);
  const src = stridesOf(x.shape);
  const shape = order.map((i) => x.shape[i]);
  const out = e.empty(shape, x.dtype);
  copyInto(e, x, { shape, strides: order.map((i) => src[i]), offset: 0 }, out, contiguous(shape));
  e.record('permute', [x], out, [], (dy) => [permuteBackward(e, dy, order)]);
  return out;
}

/** Backward of `permute`: the inverse permutation of dy. */
export function permuteBackward(e: Engine, dy: Tensor, order: readonly number[]): Tensor {
  const inverse = new Array<number>(order.length);
  order.forEach((o, i) => (inverse[o] = i));
  return permute(e, dy, inverse);
}

/** Repeats x along broadcast (size-1 or missing leading) axes to `shape`. */
export function expand(e: Engine, x: Tensor, shape: number[]): Tensor {
  const lead = shape.length - x.shape.length;
  const src = stridesOf(x.shape);
  const strides = shape.map((d, i) => {
    const xi = i - lead;
    if (xi < 0) return 0;
    assertShape('expand', x.shape[xi] === d || x.shape[xi] === 1, `${x} to [${shape}]`);
    return x.shape[xi] === 1 ? 0 : src[xi];
  });
  const out = e.empty(shape, x.dtype);
  copyInto(e, x, { shape, strides, offset: 0 }, out, contiguous(shape));
  e.record('expand', [x], out, [], (dy) => [expandBackward(e, dy, x.shape)]);
  return out;
}

/** Backward of `expand`: dy summed over the expanded axes. */
export const expandBackward = (e: Engine, dy: Tensor, xShape: readonly number[]): Tensor => sumTo(e, dy, xShape);

/** The same values in another element type (f32 ↔ f16); x itself when it already has that type. */
export function cast(e: Engine, x: Tensor, dtype: DType): Tensor {
  if (x.dtype === dtype) return x;
  const out = e.empty(x.shape, dtype);
  copyInto(e, x, contiguous(x.shape), out, contiguous(x.shape));
  // The gradient returns in x's dtype (f16 activations, f32 trainable layers).
  e.record('cast', [x], out, [], (dy) => [cast(e, dy, x.dtype)]);
  return out;
}

/** Nearest-neighbour ×2 upsampling of [N, C, H, W] (upsample_nearest2x.wgsl). */
export function upsampleNearest2x(e: Engine, x: Tensor): Tensor {
  assertShape('upsampleNearest2x', x.shape.length === 4, `need [N, C, H, W], got ${x}`);
  const [N, C, H, W] = x.shape;
  const out = e.empty([N, C, 2 * H, 2 * W], x.dtype);
  const workgroups = grid(N * C * H);
  e.run({ kernel: 'upsample_nearest2x', bindings: { x, y: out }, params: { rows: N * C * H, W, groupsX: workgroups[0] }, workgroups });
  e.record('upsampleNearest2x', [x], out, [], (dy) => [upsampleNearest2xBackward(e, dy)]);
  return out;
}

/** Backward of `upsampleNearest2x`: dy [N, C, 2H, 2W] → the sum of each 2×2 block [N, C, H, W]. */
export function upsampleNearest2xBackward(e: Engine, dy: Tensor): Tensor {
  assertShape('upsampleNearest2xBackward', dy.shape.length === 4 && dy.shape[2] % 2 === 0 && dy.shape[3] % 2 === 0, `need [N, C, 2H, 2W], got ${dy}`);
  const [N, C, H2, W2] = dy.shape;
  const [H, W] = [H2 / 2, W2 / 2];
  return sumTo(e, dy.reshape([N * C, H, 2, W, 2]), [N * C, H, 1, W, 1]).reshape([N, C, H, W]);
}

/**
 * F.interpolate(x, size=(Ho, Wo), mode='nearest') of [N, C, H, W] where each side doubles or
 * doubles less one: the up path of a UNet on a latent side that is odd at some level (diffusers
 * passes the skip's size). PyTorch takes source floor(o·H/Ho); for Ho = 2H − 1 and o < Ho that is
 * floor(o/2), so the result is the ×2 upsampling cropped to Ho×Wo.
 */
export function upsampleNearest(e: Engine, x: Tensor, Ho: number, Wo: number): Tensor {
  assertShape('upsampleNearest', x.shape.length === 4, `need [N, C, H, W], got ${x}`);
  const [N, C, H, W] = x.shape;
  assertShape('upsampleNearest', (Ho === 2 * H || Ho === 2 * H - 1) && (Wo === 2 * W || Wo === 2 * W - 1), `${x} to ${Ho}×${Wo}: each side must double, or double less one`);
  if (Ho === 2 * H && Wo === 2 * W) return upsampleNearest2x(e, x);
  return e.tidy(() => {
    const up = upsampleNearest2x(e, x);
    const out = e.empty([N, C, Ho, Wo], x.dtype);
    const shape = [N * C, Ho, Wo];
    copyInto(e, up, { shape, strides: [4 * H * W, 2 * W, 1], offset: 0 }, out, contiguous(shape));
    e.record('upsampleNearest', [x], out, [], (dy) => [upsampleNearestBackward(e, dy, H, W)]);
    return out;
  });
}

/** Backward of `upsampleNearest` to x's H×W: dy zero-padded back to 2H×2W, then each 2×2 block summed. */
export function upsampleNearestBackward(e: Engine, dy: Tensor, H: number, W: number): Tensor {
  assertShape('upsampleNearestBackward', dy.shape.length === 4, `need [N, C, Ho, Wo], got ${dy}`);
  const [N, C, Ho, Wo] = dy.shape;
  assertShape('upsampleNearestBackward', (Ho === 2 * H || Ho === 2 * H - 1) && (Wo === 2 * W || Wo === 2 * W - 1), `gradient ${dy} for a ${H}×${W} input`);
  if (Ho === 2 * H && Wo === 2 * W) return upsampleNearest2xBackward(e, dy);
  return e.tidy(() => {
    const full = e.zeros([N, C, 2 * H, 2 * W], dy.dtype);
    const shape = [N * C, Ho, Wo];
    copyInto(e, dy, contiguous(shape), full, { shape, strides: [4 * H * W, 2 * W, 1], offset: 0 });
    return upsampleNearest2xBackward(e, full);
  });
}
