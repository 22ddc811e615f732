/** Element types a tensor can hold on the GPU. i32 is for indices (token ids, rows). */
export type DType = 'f32' | 'f16' | 'i32';

export const DTYPE_SIZE: Record<DType, number> = { f32: 4, f16: 2, i32: 4 };

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * A dense, row-major tensor living in one GPU buffer (from the engine's pool, or a
 * weight buffer of its own). Tensors are immutable views: ops return new tensors.
 */
export class Tensor {
  /** Set when the buffer went back to the pool; using the tensor after that is a bug. */
  released = false;

  constructor(
    readonly buffer: GPUBuffer,
    readonly shape: readonly number[],
    readonly dtype: DType,
    /** Pool-owned buffers return to the pool on release; weights own theirs. */
    readonly pooled: boolean,
  ) {}

  get size(): number {
    return numel(this.shape);
  }

  get byteLength(): number {
    return this.size * DTYPE_SIZE[this.dtype];
  }

  /** The same buffer seen with another shape of equal size (no copy). */
  reshape(shape: readonly number[]): Tensor {
    const resolved = resolveShape(shape, this.size);
    const view = new Tensor(this.buffer, resolved, this.dtype, false);
    view.base = this.base ?? this;
    return view;
  }

  /** For views: the tensor that owns the buffer (release goes through it). */
  base?: Tensor;

  toString(): string {
    return `Tensor[${this.shape.join('x')} ${this.dtype}]`;
  }
}

/** Fills in one -1 dimension and checks the element count. */
function resolveShape(shape: readonly number[], size: number): number[] {
  const out = [...shape];
  const free = out.indexOf(-1);
  if (free >= 0) {
    const rest = numel(out.filter((_, i) => i !== free));
    out[free] = rest === 0 ? 0 : size / rest;
  }
  if (numel(out) !== size || out.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`cannot reshape ${size} elements to [${shape.join(', ')}]`);
  }
  return out;
}

/**
 * A table too large for one storage binding (e.g. CLIP-L's 49408×768 f32 token
 * embedding is 152 MB, lavapipe binds at most 128 MiB): split into row chunks that
 * ops which support it (gather) address by row range.
 */
export class RowChunkedTensor {
  constructor(
    readonly chunks: readonly { firstRow: number; tensor: Tensor }[],
    readonly shape: readonly number[],
    readonly dtype: DType,
  ) {}
}
