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
  private own?: GPUBuffer;
  /**
   * A weight whose buffer a buffer kernel has needed: it keeps its buffer from then on (its
   * texture is not its only copy; training reads and writes weights through their buffers).
   */
  keepsBuffer = false;

  constructor(
    buffer: GPUBuffer | undefined,
    readonly shape: readonly number[],
    readonly dtype: DType,
    /** Pool-owned buffers return to the pool on release; weights own theirs. */
    readonly pooled: boolean,
  ) {
    this.own = buffer;
  }

  /** The GPU buffer (a view's is its base's). */
  get buffer(): GPUBuffer {
    if (this.base) return this.base.buffer;
    if (!this.own) throw new Error(`${this}: a weight held only as its texture; Engine.materialise gives it its buffer back`);
    return this.own;
  }

  /** False for a weight held only as its texture (textures.ts) until Engine.materialise. */
  get hasBuffer(): boolean {
    return this.base ? this.base.hasBuffer : !!this.own;
  }

  /** Sets (a weight's restored buffer) or takes away (a weight kept as its texture) the buffer; returns the old one. */
  swapBuffer(buffer: GPUBuffer | undefined): GPUBuffer | undefined {
    if (this.base || this.pooled) throw new Error(`${this}: only a weight's own buffer is swapped`);
    const old = this.own;
    this.own = buffer;
    return old;
  }

  get size(): number {
    return numel(this.shape);
  }

  get byteLength(): number {
    return this.size * DTYPE_SIZE[this.dtype];
  }

  /** The same buffer seen with another shape of equal size (no copy). */
  reshape(shape: readonly number[]): Tensor {
    const resolved = resolveShape(shape, this.size);
    const view = new Tensor(undefined, resolved, this.dtype, false);
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
