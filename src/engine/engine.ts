import { readFileSync } from 'node:fs';
import { DrError } from '../errors.js';
import { getGpu, type Gpu } from './device.js';
import { BufferPool } from './pool.js';
import { DTYPE_SIZE, Tensor, numel, type DType } from './tensor.js';
import { f16ToF32, f32ToF16Bits } from './half.js';

/** A uniform value: plain numbers are u32; wrap floats and signed ints. */
export type Param = number | { f32: number } | { i32: number };
export const f32 = (x: number): Param => ({ f32: x });
export const i32 = (x: number): Param => ({ i32: x });

export interface Dispatch {
  /** File name in src/engine/wgsl without `.wgsl`. */
  kernel: string;
  /**
   * Storage buffers in binding order 1..n (binding 0 is the uniform `params`). Each
   * name N also defines `alias TN = <dtype>;` so one kernel serves f32 and f16 data.
   */
  bindings: Record<string, Tensor>;
  /** Compile-time constants prepended as `const NAME = value;` (tile sizes, op codes). */
  defines?: Record<string, number | boolean>;
  params?: Param[];
  workgroups: readonly [number, number?, number?];
}

export interface EngineOptions {
  /**
   * Caps the bytes one binding may cover below the adapter's limit, to exercise
   * the row-chunked path of large tables on small models (tests), or to mimic a
   * GPU with a lower limit.
   */
  maxBindingBytes?: number;
}

const WGSL_DIR = new URL('./wgsl/', import.meta.url);
const UNIFORM_SLOT_BYTES = 256;
const UNIFORM_ARENA_SLOTS = 2048;

/**
 * Owns the device and everything that outlives one op: buffer pool, pipeline cache,
 * and the open command encoder. Ops record dispatches into one compute pass; the
 * work is submitted only when results are read, an upload needs ordering, or the
 * uniform arena is full, so a forward pass is a handful of submits.
 */
export class Engine {
  readonly pool: BufferPool;
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  private readonly sources = new Map<string, string>();
  private encoder?: GPUCommandEncoder;
  private pass?: GPUComputePassEncoder;
  private readonly uniformCpu = new ArrayBuffer(UNIFORM_SLOT_BYTES * UNIFORM_ARENA_SLOTS);
  private readonly uniformGpu: GPUBuffer;
  private readonly uniformSlot: number;
  private uniformUsed = 0;
  private scopes: Set<Tensor>[] = [];
  private gpuError?: string;
  /** Dispatches and submits since creation, for benchmarks and tests of batching. */
  readonly counters = { dispatches: 0, submits: 0 };

  private constructor(readonly gpu: Gpu, opts: EngineOptions) {
    const device = gpu.device;
    this.maxBinding = Math.min(device.limits.maxStorageBufferBindingSize, opts.maxBindingBytes ?? Infinity);
    this.pool = new BufferPool(device);
    this.uniformSlot = Math.max(UNIFORM_SLOT_BYTES, gpu.device.limits.minUniformBufferOffsetAlignment);
    this.uniformGpu = device.createBuffer({
      size: this.uniformCpu.byteLength,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    device.addEventListener('uncapturederror', (event) => {
      this.gpuError ??= (event as GPUUncapturedErrorEvent).error.message;
    });
  }

  static async create(opts: EngineOptions = {}): Promise<Engine> {
    return new Engine(await getGpu(), opts);
  }

  get device(): GPUDevice {
    return this.gpu.device;
  }

  /** Largest buffer one binding may cover: the adapter's limit, or a lower cap. */
  readonly maxBinding: number;

  // ---- tensors -------------------------------------------------------------

  /** An uninitialised pooled tensor, owned by the innermost tidy scope. */
  empty(shape: readonly number[], dtype: DType = 'f32'): Tensor {
    const bytes = numel(shape) * DTYPE_SIZE[dtype];
    if (bytes > this.maxBinding) {
      throw new DrError(
        `a ${shape.join('x')} ${dtype} activation needs ${mib(bytes)} MiB, more than this GPU binds at once ` +
          `(${mib(this.maxBinding)} MiB): use a smaller batch or image size`,
      );
    }
    const t = new Tensor(this.pool.acquire(bytes), shape, dtype, true);
    this.scopes.at(-1)?.add(t);
    return t;
  }

  /** A pooled tensor filled with zeros (a clear recorded in order with the dispatches). */
  zeros(shape: readonly number[], dtype: DType = 'f32'): Tensor {
    const t = this.empty(shape, dtype);
    this.pass?.end();
    this.pass = undefined;
    (this.encoder ??= this.device.createCommandEncoder()).clearBuffer(t.buffer);
    return t;
  }

  /** Uploads host data into a new pooled tensor (f32 data is converted to f16 if asked). */
  upload(data: Float32Array | Int32Array | Uint16Array, shape: readonly number[], dtype?: DType): Tensor {
    const type: DType = dtype ?? (data instanceof Int32Array ? 'i32' : data instanceof Uint16Array ? 'f16' : 'f32');
    if (data.length !== numel(shape)) throw new Error(`upload: ${data.length} values for shape [${shape}]`);
    let bytes: ArrayBufferView = type === 'f16' && data instanceof Float32Array ? toF16(data) : data;
    // writeBuffer copies whole 4-byte words: an odd number of f16 values needs a pad.
    if (bytes.byteLength % 4) {
      const padded = new Uint8Array(align(bytes.byteLength, 4));
      padded.set(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      bytes = padded;
    }
    const t = this.empty(shape, type);
    // queue.writeBuffer runs before any recorded-but-unsubmitted dispatch, and the
    // pooled buffer may still be read by one of those: submit them first.
    this.flush();
    this.device.queue.writeBuffer(t.buffer, 0, bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return t;
  }

  /** A weight: its own buffer, filled at creation, never pooled or tracked by scopes. */
  createWeight(bytes: Uint8Array, shape: readonly number[], dtype: DType): Tensor {
    const buffer = this.device.createBuffer({
      size: Math.max(16, align(bytes.byteLength, 16)),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      mappedAtCreation: true,
    });
    new Uint8Array(buffer.getMappedRange()).set(bytes);
    buffer.unmap();
    this.pool.countWeight(buffer.size);
    return new Tensor(buffer, shape, dtype, false);
  }

  /** Returns a pooled tensor's buffer to the pool (views release nothing). */
  release(t: Tensor): void {
    if (!t.pooled || t.released) return;
    t.released = true;
    this.pool.release(t.buffer);
  }

  /**
   * Runs `fn` and releases every tensor it created except those in its result
   * (a Tensor, or arrays/objects of them), which move to the enclosing scope.
   */
  tidy<T>(fn: () => T): T {
    const scope = new Set<Tensor>();
    this.scopes.push(scope);
    let result: T;
    try {
      result = fn();
    } finally {
      this.scopes.pop();
    }
    const kept = new Set<Tensor>();
    collectTensors(result, kept);
    const parent = this.scopes.at(-1);
    for (const t of scope) {
      if (kept.has(t)) parent?.add(t);
      else this.release(t);
    }
    return result;
  }

  /**
   * Debugging hook: when set, models report intermediate outputs by module path
   * (`dr forward --trace`, parity tests). Reported tensors are kept alive.
   */
  tracer?: (name: string, t: Tensor) => void;

  trace(name: string, t: Tensor): Tensor {
    if (this.tracer) this.tracer(name, this.keep(t));
    return t;
  }

  /** Marks a tensor as outliving every scope (the caller releases it). */
  keep(t: Tensor): Tensor {
    for (const s of this.scopes) s.delete(t.base ?? t);
    return t;
  }

  // ---- dispatch ------------------------------------------------------------

  run(d: Dispatch): void {
    const pipeline = this.pipeline(d);
    const entries: GPUBindGroupEntry[] = [];
    if (d.params?.length) {
      if (this.uniformUsed === UNIFORM_ARENA_SLOTS) this.flush();
      const offset = this.uniformUsed * this.uniformSlot;
      if (offset + this.uniformSlot > this.uniformCpu.byteLength) this.flush();
      const at = this.uniformUsed++ * this.uniformSlot;
      const bytes = packParams(this.uniformCpu, at, d.params);
      entries.push({ binding: 0, resource: { buffer: this.uniformGpu, offset: at, size: align(bytes, 16) } });
    }
    let binding = 1;
    for (const t of Object.values(d.bindings)) {
      if (t.released || t.base?.released) throw new Error(`${d.kernel}: binding a released tensor`);
      entries.push({ binding: binding++, resource: { buffer: t.buffer, offset: 0, size: align(t.byteLength || 4, 4) } });
    }
    const bindGroup = this.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    this.pass ??= (this.encoder ??= this.device.createCommandEncoder()).beginComputePass();
    this.pass.setPipeline(pipeline);
    this.pass.setBindGroup(0, bindGroup);
    const [x, y = 1, z = 1] = d.workgroups;
    const maxGroups = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (x > maxGroups || y > maxGroups || z > maxGroups) {
      throw new Error(`${d.kernel}: ${x}x${y}x${z} workgroups exceed the limit ${maxGroups}`);
    }
    if (x > 0 && y > 0 && z > 0) this.pass.dispatchWorkgroups(x, y, z);
    this.counters.dispatches++;
  }

  /** Submits everything recorded so far. */
  flush(): void {
    if (!this.encoder) return;
    this.pass?.end();
    if (this.uniformUsed > 0) {
      this.device.queue.writeBuffer(this.uniformGpu, 0, this.uniformCpu, 0, this.uniformUsed * this.uniformSlot);
    }
    this.device.queue.submit([this.encoder.finish()]);
    this.counters.submits++;
    this.encoder = undefined;
    this.pass = undefined;
    this.uniformUsed = 0;
  }

  /** Copies a tensor to the host as f32 (or i32): the only way data leaves the GPU. */
  async read(t: Tensor): Promise<Float32Array> {
    const raw = await this.readRaw(t);
    if (t.dtype === 'f16') {
      const bits = new Uint16Array(raw.buffer, raw.byteOffset, t.size);
      const out = new Float32Array(t.size);
      for (let i = 0; i < out.length; i++) out[i] = f16ToF32(bits[i]);
      return out;
    }
    if (t.dtype === 'i32') return Float32Array.from(new Int32Array(raw.buffer, raw.byteOffset, t.size));
    return new Float32Array(raw.buffer, raw.byteOffset, t.size);
  }

  async readRaw(t: Tensor): Promise<Uint8Array> {
    const size = align(Math.max(t.byteLength, 4), 4);
    const staging = this.device.createBuffer({ size, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
    this.pass?.end();
    this.pass = undefined;
    (this.encoder ??= this.device.createCommandEncoder()).copyBufferToBuffer(t.buffer, 0, staging, 0, size);
    this.flush();
    await staging.mapAsync(GPUMapMode.READ);
    const out = new Uint8Array(staging.getMappedRange().slice(0));
    staging.unmap();
    staging.destroy();
    this.throwIfGpuError();
    return out;
  }

  /** Waits until the GPU has finished all submitted work (benchmarks). */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.throwIfGpuError();
  }

  private throwIfGpuError(): void {
    if (!this.gpuError) return;
    const message = this.gpuError;
    this.gpuError = undefined;
    if (/out of memory|OOM|allocation/i.test(message)) {
      throw new DrError(`the GPU ran out of memory (${message}): use a smaller batch or image size`);
    }
    throw new Error(`GPU error: ${message}`);
  }

  // ---- pipelines -----------------------------------------------------------

  private pipeline(d: Dispatch): GPUComputePipeline {
    const types = Object.entries(d.bindings).map(([name, t]) => `${name}:${t.dtype}`).join(',');
    const defines = Object.entries(d.defines ?? {}).map(([k, v]) => `${k}=${v}`).join(',');
    const key = `${d.kernel}|${types}|${defines}`;
    let pipeline = this.pipelines.get(key);
    if (pipeline) return pipeline;
    const usesF16 = Object.values(d.bindings).some((t) => t.dtype === 'f16');
    const header = [
      usesF16 ? 'enable f16;' : '',
      ...Object.entries(d.bindings).map(([name, t]) => `alias T${name} = ${t.dtype};`),
      ...Object.entries(d.defines ?? {}).map(([k, v]) =>
        typeof v === 'boolean' ? `const ${k} = ${v};` : `const ${k} = ${Number.isInteger(v) ? `${v}u` : `${v}f`};`,
      ),
    ].join('\n');
    const code = `${header}\n${this.source(d.kernel)}`;
    const module = this.device.createShaderModule({ code, label: d.kernel });
    pipeline = this.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' }, label: key });
    this.pipelines.set(key, pipeline);
    return pipeline;
  }

  private source(kernel: string): string {
    let src = this.sources.get(kernel);
    if (src === undefined) {
      // `//!include name.wgsl` pastes a shared helper file (activations, reductions).
      src = readFileSync(new URL(`${kernel}.wgsl`, WGSL_DIR), 'utf8').replace(
        /^\/\/!include (\S+)\.wgsl$/gm,
        (_, name: string) => this.source(name),
      );
      this.sources.set(kernel, src);
    }
    return src;
  }
}

function packParams(arena: ArrayBuffer, at: number, params: Param[]): number {
  const u = new Uint32Array(arena, at, params.length);
  const f = new Float32Array(arena, at, params.length);
  const s = new Int32Array(arena, at, params.length);
  params.forEach((p, i) => {
    if (typeof p === 'number') u[i] = p;
    else if ('f32' in p) f[i] = p.f32;
    else s[i] = p.i32;
  });
  return params.length * 4;
}

function collectTensors(value: unknown, into: Set<Tensor>): void {
  if (value instanceof Tensor) into.add(value.base ?? value);
  else if (Array.isArray(value)) for (const v of value) collectTensors(v, into);
  else if (value && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) collectTensors(v, into);
  }
}

function toF16(data: Float32Array): Uint16Array {
  const out = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = f32ToF16Bits(data[i]);
  return out;
}

export const align = (n: number, a: number): number => Math.ceil(n / a) * a;
const mib = (b: number): string => (b / 2 ** 20).toFixed(0);

/** Splits a 1-D count of workgroups over x and y so neither exceeds the 65535 limit. */
export function grid(groups: number): [number, number] {
  if (groups <= 65535) return [groups, 1];
  const y = Math.ceil(groups / 65535);
  return [Math.ceil(groups / y), y];
}
