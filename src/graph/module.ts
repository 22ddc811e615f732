import { DrError } from '../errors.js';
import type { Engine } from '../engine/engine.js';
import { f32ToF16Bits } from '../engine/half.js';
import { RowChunkedTensor, Tensor, numel, type DType } from '../engine/tensor.js';
import { Checkpoint } from '../weights/checkpoint.js';

/** Weight precision on the GPU: `auto` keeps f16 checkpoints in f16 when the adapter can. */
export type Precision = 'auto' | 'f32' | 'f16';

/**
 * One checkpoint tensor. Its key is its module path (stable-diffusion.cpp style):
 * `text_model.encoder.layers.0.mlp.fc1.weight` is `fc1`'s `weight` param.
 */
export class Param {
  value?: Tensor | RowChunkedTensor | Float32Array;
  /** Optimised in training: gets a gradient (autograd's `grad`). Frozen params still pass gradients through. */
  trainable = false;

  constructor(
    readonly shape: readonly number[],
    /** Kept on the host (scalars such as CLIP's logit_scale). */
    readonly host = false,
  ) {}

  /** The GPU tensor (throws before load, or for a row-chunked table). */
  get t(): Tensor {
    if (this.value instanceof Tensor) return this.value;
    throw new Error('parameter not loaded as a single GPU tensor');
  }

  /** The GPU tensor, possibly split into row chunks (embedding tables). */
  get table(): Tensor | RowChunkedTensor {
    if (this.value instanceof Tensor || this.value instanceof RowChunkedTensor) return this.value;
    throw new Error('parameter not loaded on the GPU');
  }

  get hostValue(): Float32Array {
    if (this.value instanceof Float32Array) return this.value;
    throw new Error('parameter not loaded on the host');
  }
}

/** A module registers its params and children under their checkpoint names. */
export abstract class Module {
  private readonly params = new Map<string, Param>();
  private readonly children = new Map<string, Module>();
  private parent?: Module;
  private name = '';

  /** Dotted path from the root module, e.g. `down_blocks.0.resnets.1` (for traces). */
  get path(): string {
    const up = this.parent?.path;
    return up ? `${up}.${this.name}` : this.name;
  }

  protected param(name: string, shape: readonly number[], host = false): Param {
    const p = new Param(shape, host);
    this.params.set(name, p);
    return p;
  }

  protected child<M extends Module>(name: string, module: M): M {
    this.children.set(name, module);
    module.parent = this;
    module.name = name;
    return module;
  }

  /** Every module of the tree with its key prefix (this one first, as `prefix`). */
  *modules(prefix = ''): Generator<[string, Module]> {
    yield [prefix, this];
    for (const [name, m] of this.children) yield* m.modules(`${prefix}${name}.`);
  }

  /** This module's own params (not its children's), by local name. */
  ownParams(): [string, Param][] {
    return [...this.params];
  }

  *namedParams(prefix = ''): Generator<[string, Param]> {
    for (const [name, p] of this.params) yield [prefix + name, p];
    for (const [name, m] of this.children) yield* m.namedParams(`${prefix}${name}.`);
  }

  /** Marks every param of this subtree trainable (or frozen). */
  setTrainable(trainable: boolean): this {
    for (const [, p] of this.namedParams()) p.trainable = trainable;
    return this;
  }

  /** The subtree's trainable params by key: what `grad` differentiates and AdamW updates. */
  trainableParams(prefix = ''): [string, Param][] {
    return [...this.namedParams(prefix)].filter(([, p]) => p.trainable);
  }
}

/** `layers.0`, `layers.1`, …: children named by index. */
export class ModuleList<M extends Module> extends Module {
  readonly items: M[];
  constructor(items: M[]) {
    super();
    this.items = items.map((m, i) => this.child(String(i), m));
  }
}

export interface LoadOptions {
  /** Key prefix of this module inside the checkpoint. */
  prefix?: string;
  precision?: Precision;
  onTensor?: (bytes: number) => void;
}

/**
 * Fills every param of `root` from the checkpoint: one loop, one shape check per
 * key (the tinygrad way). Tensors larger than one storage binding are split into
 * row chunks. f16 stays f16 where the adapter has shader-f16 (unless f32 is asked),
 * bf16 becomes f32 (f16 cannot hold its range).
 */
export function loadModule(e: Engine, root: Module, ckpt: Checkpoint, opts: LoadOptions = {}): void {
  const { prefix = '', precision = 'auto' } = opts;
  for (const [name, p] of root.namedParams(prefix)) {
    const info = ckpt.info(name);
    const want = p.shape;
    const sameShape = info.shape.length === want.length && info.shape.every((d, i) => d === want[i]);
    const hostScalar = p.host && numel(info.shape) === 1 && numel(want) === 1; // [] vs [1]
    if (!sameShape && !hostScalar) {
      throw new DrError(`${ckpt.path}: tensor "${name}" has shape [${info.shape}], the config implies [${want}]`);
    }
    if (p.host) {
      p.value = ckpt.readF32(name);
      continue;
    }
    const dtype = weightDtype(e, info.dtype, precision, name, ckpt.path);
    p.value = upload(e, ckpt, name, want, info.dtype, dtype);
    opts.onTensor?.(info.byteLength);
  }
}

/** Opens the checkpoint in `dir` (or file), loads `root` from it, closes it; an open Checkpoint stays open. */
export function loadFromCheckpoint(e: Engine, root: Module, dir: string | Checkpoint, opts: LoadOptions = {}): void {
  if (dir instanceof Checkpoint) return loadModule(e, root, dir, opts);
  const ckpt = Checkpoint.open(dir);
  try {
    loadModule(e, root, ckpt, opts);
  } finally {
    ckpt.close();
  }
}

function weightDtype(e: Engine, stored: string, precision: Precision, name: string, file: string): DType {
  if (!['F32', 'F16', 'BF16', 'F64'].includes(stored)) {
    throw new DrError(`${file}: tensor "${name}" has dtype ${stored}, expected a floating-point weight`);
  }
  if (precision === 'f32' || !e.gpu.hasF16) return 'f32';
  if (precision === 'f16') return 'f16';
  return stored === 'F16' ? 'f16' : 'f32';
}

function upload(e: Engine, ckpt: Checkpoint, name: string, shape: readonly number[], stored: string, dtype: DType): Tensor | RowChunkedTensor {
  return uploadWeight(e, hostBytes(ckpt, name, stored, dtype), shape, dtype);
}

/** A weight's bytes (already in `dtype`) on the GPU: split into row chunks when larger than one binding. */
export function uploadWeight(e: Engine, bytes: Uint8Array, shape: readonly number[], dtype: DType): Tensor | RowChunkedTensor {
  if (bytes.byteLength <= e.maxBinding || shape.length < 2) return e.createWeight(bytes, shape, dtype);
  const rowBytes = bytes.byteLength / shape[0];
  const rowsPerChunk = Math.floor(e.maxBinding / rowBytes);
  const chunks = [];
  for (let first = 0; first < shape[0]; first += rowsPerChunk) {
    const rows = Math.min(rowsPerChunk, shape[0] - first);
    const part = bytes.subarray(first * rowBytes, (first + rows) * rowBytes);
    chunks.push({ firstRow: first, tensor: e.createWeight(part, [rows, ...shape.slice(1)], dtype) });
  }
  return new RowChunkedTensor(chunks, shape, dtype);
}

/** The checkpoint tensor's bytes in the GPU dtype (no conversion when they agree). */
function hostBytes(ckpt: Checkpoint, name: string, stored: string, dtype: DType): Uint8Array {
  if ((stored === 'F32' && dtype === 'f32') || (stored === 'F16' && dtype === 'f16')) return ckpt.readBytes(name);
  const values = ckpt.readF32(name); // converts F16, BF16 and F64
  return new Uint8Array(dtype === 'f32' ? values.buffer : halfBits(values).buffer);
}

function halfBits(x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = f32ToF16Bits(x[i]);
  return out;
}
