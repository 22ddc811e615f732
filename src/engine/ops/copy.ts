import type { Engine } from '../engine.js';
import { numel, type DType, type Tensor } from '../tensor.js';
import { assertShape, elementwiseGrid, pad8, stridesOf } from './common.js';

interface StridedView {
  shape: readonly number[];
  strides: readonly number[];
  offset: number;
}

/** One strided copy from a view of src into a view of dst (copy_strided.wgsl). */
function copyInto(e: Engine, src: Tensor, from: StridedView, dst: Tensor, to: StridedView): void {
  const n = numel(from.shape);
  if (n === 0) return;
  const s = pad8(from.shape, from.strides);
  const d = pad8(to.shape, to.strides);
  const { workgroups, groupsX } = elementwiseGrid(n);
  e.run({
    kernel: 'copy_strided',
    bindings: { Src: src, Dst: dst },
    params: [...s.shape, ...s.strides, ...d.strides, n, from.offset, to.offset, groupsX],
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
  return out;
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
  return out;
}

/** Axis permutation, e.g. permute(x, [0, 2, 1]) transposes the last two axes. */
export function permute(e: Engine, x: Tensor, order: number[]): Tensor {
  assertShape('permute', order.length === x.shape.length && [...order].sort().every((v, i) => v === i), `order [${order}] for ${x}`);
  const src = stridesOf(x.shape);
  const shape = order.map((i) => x.shape[i]);
  const out = e.empty(shape, x.dtype);
  copyInto(e, x, { shape, strides: order.map((i) => src[i]), offset: 0 }, out, contiguous(shape));
  return out;
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
  return out;
}

/** The same values in another element type (f32 ↔ f16). */
export function cast(e: Engine, x: Tensor, dtype: DType): Tensor {
  const out = e.empty(x.shape, dtype);
  copyInto(e, x, contiguous(x.shape), out, contiguous(x.shape));
  return out;
}

/** Nearest-neighbour ×2 upsampling of [N, C, H, W] (a broadcast copy: no kernel of its own). */
export function upsampleNearest2x(e: Engine, x: Tensor): Tensor {
  assertShape('upsampleNearest2x', x.shape.length === 4, `need [N, C, H, W], got ${x}`);
  const [N, C, H, W] = x.shape;
  const out = e.empty([N, C, 2 * H, 2 * W], x.dtype);
  // out viewed as [N·C, H, 2, W, 2]; the two size-2 axes read the same source pixel.
  const shape = [N * C, H, 2, W, 2];
  copyInto(e, x, { shape, strides: [H * W, W, 0, 1, 0], offset: 0 }, out, contiguous(shape));
  return out;
}
