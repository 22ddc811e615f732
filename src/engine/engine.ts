import { readFileSync } from 'node:fs';
import { DrError } from '../errors.js';
import type { Backward, Tape } from './autograd.js';
import { getGpu, type Gpu } from './device.js';
import { noteFirstRun } from './first_run.js';
import { expandIncludes, parseInterface, type KernelInterface } from './kernel_source.js';
import { adapterTraits, chooseKernels, type KernelChoice } from './kernels.js';
import { TexturePool, weightChanged, weightSource, weightTextureBytes } from './textures.js';
import { BufferPool } from './pool.js';
import { DTYPE_SIZE, Tensor, numel, type DType } from './tensor.js';
import { f16ToF32, f32ToF16Bits } from './half.js';
import { KernelProfiler } from './profiler.js';

// How an op runs a kernel (src/engine/wgsl/<kernel>.wgsl):
//
//   e.run({ kernel: 'matmul',
//     bindings: { a, b, bias: bias ?? a, c: out },          // by the kernel's own variable names
//     defines: { TRANS_B: transB },                        // only what changes the code's shape
//     params: { M, N, K, strideA: M * K, strideB: 0, strideC: M * N, alpha, hasBias: bias ? 1 : 0, act: ACT[act] }, // by struct Params field
//     workgroups: [...] });
//
// The engine parses each kernel once: every `@group(0) @binding(n) var<storage, …> name: array<E>`
// must be given under `name`, exactly once (order in the object does not matter); an element type
// E that is not a WGSL scalar (TX, TOut, …) becomes `alias E = <that tensor's dtype>;`, so one
// kernel serves f32 and f16 data. Every field of `struct Params` (binding 0) must be given by
// name; the engine packs it by its declared type (u32, i32, f32, array<vec4<u32>, n>) and rejects
// a non-integer or negative u32. A missing, extra or misnamed binding or field is an Error naming
// the kernel and the name. Texture bindings (`var name: texture_2d<f32>` or
// `texture_storage_2d<rgba32float, write>`, numbered after the storage buffers) are given under
// `textures` by name, checked the same way. `enable …;` lines of a kernel go first in the module.
//
// Memory rule: `tidy(fn)` is synchronous, so code without an `await` inside runs in a tidy and
// returns what outlives it; code that awaits (a read back) holds tensors with `keep` and
// releases them itself. A training step is one synchronous `grad` (forward and backward, which
// manage their own saved tensors: autograd.ts) and `AdamW.step`, then one `await` for the loss;
// the caller releases the loss and the gradients grad returns.

/** A `struct Params` field's value: a number for a scalar, an array for an `array<vec4<…>, n>`. */
export type Uniform = number | readonly number[];

export interface Dispatch {
  /** File name in src/engine/wgsl without `.wgsl`. */
  kernel: string;
  /** Storage buffers by the kernel's variable names (binding 0 is the uniform `Params`). */
  bindings: Record<string, Tensor>;
  /** Textures by the kernel's variable names (the CPU-adapter kernels read their operands from them). */
  textures?: Record<string, GPUTexture>;
  /**
   * Compile-time constants prepended as `const NAME = value;`: only what changes the code's shape
   * (layouts, workgroup and tile sizes). Each distinct set is a pipeline of its own, compiled by the
   * driver on a first run, so codes the code only branches on (activation, op, bias) are `params`.
   */
  defines?: Record<string, number | boolean>;
  /** The fields of the kernel's `struct Params`, by name. */
  params?: Record<string, Uniform>;
  workgroups: readonly [number, number?, number?];
}

export interface EngineOptions {
  /**
   * Caps the bytes one binding may cover below the adapter's limit, to exercise
   * the row-chunked path of large tables on small models (tests), or to mimic a
   * GPU with a lower limit.
   */
  maxBindingBytes?: number;
  /** Times every dispatch (profiler.ts) without DR_PROFILE's report at exit (bench/profile.ts reads it). */
  profile?: boolean;
  /** The kernel path to force, as DR_KERNELS (which it replaces): for an adapter a test makes itself. */
  kernels?: 'cpu' | 'gpu';
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
  /** Activation textures of the CPU-adapter kernels, pooled by size. */
  readonly texturePool: TexturePool;
  /** Which kernels ops run on this adapter (kernels.ts); benchmarks may switch it to compare. */
  kernels: KernelChoice;
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  private readonly sources = new Map<string, string>();
  private readonly interfaces = new Map<string, KernelInterface>();
  private encoder?: GPUCommandEncoder;
  private pass?: GPUComputePassEncoder;
  private readonly uniformCpu = new ArrayBuffer(UNIFORM_SLOT_BYTES * UNIFORM_ARENA_SLOTS);
  private readonly uniformGpu: GPUBuffer;
  private readonly uniformSlot: number;
  private uniformUsed = 0;
  private scopes: Set<Tensor>[] = [];
  /** Weight textures dropped by an in-place write, destroyed at the next submit. */
  private readonly retiredTextures: GPUTexture[] = [];
  /** Buffers of weights now held as their textures, destroyed at the next submit (their fill is recorded). */
  private readonly retiredBuffers: GPUBuffer[] = [];
  private retiredBufferBytes = 0;
  /** Bytes of weights created since the last submit (their staging copies are alive until one). */
  private unsubmittedWeightBytes = 0;
  /** The weight whose buffer from_texture is writing back (not an in-place write that stales its textures). */
  private restoring?: Tensor;
  /** A 16-byte tensor per dtype bound where a kernel's optional input is absent (hasBias 0). */
  private readonly placeholders = new Map<DType, Tensor>();
  private gpuError?: string;
  /** Per-kernel GPU times when DR_PROFILE is set (profiler.ts); each dispatch then gets a pass of its own. */
  readonly profiler?: KernelProfiler;
  /**
   * Dispatches and submits since creation, for benchmarks and tests of batching; the distinct
   * compute pipelines built (each from a shader module of its own: one per kernel, dtypes and
   * defines) and the milliseconds their creation took (DR_LOG_PIPELINES=1 lists them on stderr).
   * The driver compiles each one on a first run; lavapipe does so at its first dispatch, so most
   * of that cost shows in the run, not in pipelineMs.
   */
  readonly counters = { dispatches: 0, submits: 0, pipelines: 0, pipelineMs: 0 };

  private constructor(readonly gpu: Gpu, opts: EngineOptions) {
    const device = gpu.device;
    this.maxBinding = Math.min(device.limits.maxStorageBufferBindingSize, opts.maxBindingBytes ?? Infinity);
    this.pool = new BufferPool(device);
    this.texturePool = new TexturePool(device, (bytes) => this.pool.countTextures(bytes));
    this.kernels = chooseKernels(adapterTraits(gpu), opts.kernels ?? process.env.DR_KERNELS);
    const profile = process.env.DR_PROFILE;
    if (profile || opts.profile) {
      if (!gpu.hasTimestamps) throw new DrError(`DR_PROFILE: this adapter has no timestamp-query feature to time kernels with`);
      const profiler = (this.profiler = new KernelProfiler(device));
      if (profile) process.on('exit', () => profiler.report(profile));
    }
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
    const gpu = await getGpu();
    noteFirstRun(gpu.info); // here, not in getGpu: dr doctor compiles no kernel
    return new Engine(gpu, opts);
  }

  /** An engine on a device of the caller's (tests: Dawn's null backend, which compiles kernels but runs none). */
  static onGpu(gpu: Gpu, opts: EngineOptions = {}): Engine {
    return new Engine(gpu, opts);
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

  /**
   * Copies `rows` rows of `bytesPerRow` bytes (a multiple of 256) from t's buffer at `byteOffset`
   * into the first `width` texels of each row of a texture, in order with the recorded dispatches.
   */
  copyToTexture(t: Tensor, byteOffset: number, bytesPerRow: number, texture: GPUTexture, width: number, rows: number): void {
    if (t.released || t.base?.released) throw new Error(`copyToTexture: ${t} is released`);
    this.materialise(t);
    this.pass?.end();
    this.pass = undefined;
    (this.encoder ??= this.device.createCommandEncoder()).copyBufferToTexture(
      { buffer: t.buffer, offset: byteOffset, bytesPerRow, rowsPerImage: rows }, { texture }, [width, rows, 1]);
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
    // Dawn fills a storage buffer mapped at creation from a staging copy, freed only once a submit
    // carried the copy: without one, loading a model held every weight twice (measured: 3.0 GB of
    // RSS for 1.5 GB of weights; 1.85 GB with this).
    this.unsubmittedWeightBytes += buffer.size;
    if (this.unsubmittedWeightBytes >= 64 * 2 ** 20) {
      this.device.queue.submit([]);
      this.unsubmittedWeightBytes = 0;
    }
    return new Tensor(buffer, shape, dtype, false);
  }

  /**
   * Drops the buffer of weight `w`, whose values a texture now holds (textures.ts): destroyed after
   * the next submit, which holds the texture's fill. Weights that keep their buffer are left alone.
   * Buffers dropped during one forward are submitted every 64 MiB, so a first forward's peak is
   * not the weights twice.
   */
  dropWeightBuffer(w: Tensor): void {
    if (w.base || w.pooled || w.keepsBuffer || !w.hasBuffer) return;
    const buffer = w.swapBuffer(undefined)!;
    this.retiredBuffers.push(buffer);
    this.retiredBufferBytes += buffer.size;
    if (this.retiredBufferBytes >= 64 * 2 ** 20) this.flush();
  }

  /**
   * Gives a weight held only as its texture its buffer back (from_texture.wgsl, recorded in order)
   * and keeps it from then on: a buffer kernel reads it (a backward, a second texture layout) or
   * the optimizer writes it. Done for every tensor a dispatch binds, a copy or a read back reads.
   */
  materialise(t: Tensor): void {
    const w = t.base ?? t;
    if (w.pooled || w.hasBuffer) return;
    w.keepsBuffer = true;
    const source = weightSource(w);
    if (!source) throw new Error(`${w}: no buffer and no texture to restore it from`);
    const buffer = this.device.createBuffer({
      size: Math.max(16, align(w.byteLength, 16)),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    this.pool.countWeight(buffer.size);
    w.swapBuffer(buffer);
    const packed = source.texture.format === 'rgba32uint';
    const v = source.view;
    this.restoring = w;
    try {
      this.run({
        kernel: packed ? 'from_texture_h' : 'from_texture',
        bindings: { dst: w },
        textures: { src: source.texture },
        params: { ...v },
        workgroups: [Math.ceil((v.segs * Math.ceil(v.segCols / (packed ? 8 : 4))) / 64), v.rows],
      });
    } finally {
      this.restoring = undefined;
    }
  }

  /** A 16-byte tensor of `dtype` to bind in place of an absent optional input (never read). */
  placeholder(dtype: DType): Tensor {
    let t = this.placeholders.get(dtype);
    if (!t) this.placeholders.set(dtype, (t = this.createWeight(new Uint8Array(16), [16 / DTYPE_SIZE[dtype]], dtype)));
    return t;
  }

  /** Frees the pooled buffers and activation textures waiting for reuse (between phases or models). */
  trimPools(): void {
    this.flush(); // a recorded dispatch may still bind one of them
    this.pool.trim();
    this.texturePool.trim();
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
    } catch (err) {
      // Nothing is returned: everything the scope created goes back to the pool.
      for (const t of scope) this.release(t);
      throw err;
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
    this.takeFromScopes(t);
    this.tape?.disown(t);
    return t;
  }

  /**
   * Removes t from the tidy scopes from depth `from` inward (all by default); true if one of
   * them held it (it was theirs to release).
   */
  takeFromScopes(t: Tensor, from = 0): boolean {
    let held = false;
    for (let i = from; i < this.scopes.length; i++) held = this.scopes[i].delete(t.base ?? t) || held;
    return held;
  }

  /** How many tidy scopes are open. */
  get scopeDepth(): number {
    return this.scopes.length;
  }

  // ---- gradients (autograd.ts) -----------------------------------------------

  /** The tape while autograd's `grad` runs a forward pass. */
  tape?: Tape;

  /** True while taping and one of `inputs` requires a gradient: the op records a backward. */
  needsGrad(...inputs: (Tensor | undefined)[]): boolean {
    const tape = this.tape;
    return !!tape && inputs.some((t) => t && tape.requiresGrad(t));
  }

  /**
   * Records an op's backward on the tape (a no-op when not taping or when no input requires
   * a gradient). `saved`: every tensor `backward` reads, kept alive until it ran.
   */
  record(op: string, inputs: readonly (Tensor | undefined)[], output: Tensor, saved: readonly Tensor[], backward: Backward): void {
    this.tape?.record(op, inputs, output, saved, backward);
  }

  /** For ops without a backward: an Error when taping needs one, where a gradient would silently stop. */
  assertNoGrad(op: string, ...inputs: (Tensor | undefined)[]): void {
    if (this.needsGrad(...inputs)) throw new Error(`${op} has no backward: compute it outside grad(), or from tensors that need no gradient`);
  }

  // ---- dispatch ------------------------------------------------------------

  run(d: Dispatch): void {
    // First, as it records a dispatch of its own (before this one takes a uniform slot).
    for (const t of Object.values(d.bindings)) if (t) this.materialise(t);
    if (this.profiler?.full) this.flush(); // before this dispatch takes a uniform slot
    const iface = this.kernelInterface(d.kernel);
    const pipeline = this.pipeline(d, iface);
    const entries: GPUBindGroupEntry[] = [];
    if (iface.params) {
      if ((this.uniformUsed + 1) * this.uniformSlot > this.uniformCpu.byteLength) this.flush();
      const at = this.uniformUsed++ * this.uniformSlot;
      packParams(d.kernel, this.uniformCpu, at, iface, d.params ?? {});
      entries.push({ binding: 0, resource: { buffer: this.uniformGpu, offset: at, size: iface.paramBytes } });
    } else if (d.params && Object.keys(d.params).length) {
      throw new Error(`${d.kernel}: params given, but the kernel declares no struct Params`);
    }
    for (const { binding, name, write } of iface.bindings) {
      const t = d.bindings[name];
      if (t.released || t.base?.released) throw new Error(`${d.kernel}: binding ${name} is a released tensor`);
      // A weight written in place (optimizer step): its textures are stale.
      if (write && !(t.base ?? t).pooled && (t.base ?? t) !== this.restoring) this.retiredTextures.push(...weightChanged(t));
      entries.push({ binding, resource: { buffer: t.buffer, offset: 0, size: align(t.byteLength || 4, 4) } });
    }
    for (const { binding, name } of iface.textures) entries.push({ binding, resource: textureView(d.textures![name]) });
    const bindGroup = this.device.createBindGroup({ layout: bindGroupLayout(pipeline), entries });
    if (this.profiler) {
      this.pass?.end();
      const defines = Object.entries(d.defines ?? {}).map(([k, v]) => `${k}=${v}`).join(',');
      this.pass = this.profiler.pass((this.encoder ??= this.device.createCommandEncoder()), d.kernel, `${d.kernel}|${defines}`);
    }
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
    if (this.profiler) {
      this.pass.end();
      this.pass = undefined;
    }
  }

  /** Submits everything recorded so far. */
  flush(): void {
    if (!this.encoder) return;
    this.pass?.end();
    if (this.uniformUsed > 0) {
      this.device.queue.writeBuffer(this.uniformGpu, 0, this.uniformCpu, 0, this.uniformUsed * this.uniformSlot);
    }
    const stamped = this.profiler?.resolve(this.encoder);
    this.device.queue.submit([this.encoder.finish()]);
    this.unsubmittedWeightBytes = 0;
    stamped?.();
    this.counters.submits++;
    // Destroyed after the submit that holds their last reads: WebGPU frees them once that work is done.
    for (const b of this.retiredBuffers.splice(0)) {
      this.pool.uncountWeight(b.size);
      b.destroy();
    }
    this.retiredBufferBytes = 0;
    for (const t of this.retiredTextures.splice(0)) {
      this.pool.uncountWeight(weightTextureBytes(t));
      t.destroy();
    }
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
    this.materialise(t);
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

  /** Checks the dispatch's bindings against the kernel's and returns (cached) its pipeline. */
  private pipeline(d: Dispatch, iface: KernelInterface): GPUComputePipeline {
    const aliases = new Map<string, DType>();
    for (const { name, elem } of iface.bindings) {
      const t = d.bindings[name];
      if (!t) {
        throw new Error(`${d.kernel}: binding ${name} missing (the kernel binds ${iface.bindings.map((b) => b.name).join(', ')})`);
      }
      if (elem === 'f32' || elem === 'f16' || elem === 'i32' || elem === 'u32') {
        if (t.dtype !== elem) throw new Error(`${d.kernel}: binding ${name} is array<${elem}>, given ${t.dtype} ${t}`);
      } else if ((aliases.get(elem) ?? t.dtype) !== t.dtype) {
        throw new Error(`${d.kernel}: bindings sharing element type ${elem} are given ${aliases.get(elem)} and ${t.dtype}`);
      } else {
        aliases.set(elem, t.dtype);
      }
    }
    for (const name of Object.keys(d.bindings)) {
      if (!iface.bindings.some((b) => b.name === name)) {
        throw new Error(`${d.kernel}: no binding named ${name} (the kernel binds ${iface.bindings.map((b) => b.name).join(', ')})`);
      }
    }
    const textureNames = iface.textures.map((t) => t.name);
    for (const name of textureNames) {
      if (!d.textures?.[name]) throw new Error(`${d.kernel}: texture ${name} missing (the kernel binds textures ${textureNames.join(', ')})`);
    }
    for (const name of Object.keys(d.textures ?? {})) {
      if (!textureNames.includes(name)) throw new Error(`${d.kernel}: no texture named ${name} (the kernel binds textures ${textureNames.join(', ') || 'none'})`);
    }
    for (const k of Object.keys(d.defines ?? {})) {
      if (aliases.has(k)) throw new Error(`${d.kernel}: define ${k} collides with the element type alias ${k}`);
    }
    const types = iface.bindings.map(({ name }) => `${name}:${d.bindings[name].dtype}`).join(',');
    const defines = Object.entries(d.defines ?? {}).map(([k, v]) => `${k}=${v}`).join(',');
    const key = `${d.kernel}|${types}|${defines}`;
    let pipeline = this.pipelines.get(key);
    if (pipeline) return pipeline;
    const usesF16 = iface.bindings.some(({ name }) => d.bindings[name].dtype === 'f16');
    const enables = this.source(d.kernel).match(/^enable \w+;$/gm) ?? [];
    const header = [
      usesF16 ? 'enable f16;' : '',
      ...enables,
      ...[...aliases].map(([alias, dtype]) => `alias ${alias} = ${dtype};`),
      ...Object.entries(d.defines ?? {}).map(([k, v]) =>
        typeof v === 'boolean' ? `const ${k} = ${v};` : `const ${k} = ${Number.isInteger(v) ? `${v}u` : `${v}f`};`,
      ),
    ].join('\n');
    const code = `${header}\n${this.source(d.kernel).replace(/^enable \w+;$/gm, '')}`;
    const t0 = performance.now();
    const module = this.device.createShaderModule({ code, label: d.kernel });
    pipeline = this.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' }, label: key });
    const ms = performance.now() - t0;
    this.counters.pipelineMs += ms;
    if (process.env.DR_LOG_PIPELINES) process.stderr.write(`pipeline ${ms.toFixed(0)} ms ${key}\n`);
    this.counters.pipelines++;
    this.pipelines.set(key, pipeline);
    return pipeline;
  }

  private source(kernel: string): string {
    let src = this.sources.get(kernel);
    if (src === undefined) {
      // `//!include name.wgsl` pastes a shared helper file (activations, reductions), once.
      src = expandIncludes(kernel, (name) => readFileSync(new URL(`${name}.wgsl`, WGSL_DIR), 'utf8'));
      this.sources.set(kernel, src);
    }
    return src;
  }

  /** The kernel's storage bindings and `struct Params`, parsed once. */
  kernelInterface(kernel: string): KernelInterface {
    let iface = this.interfaces.get(kernel);
    if (!iface) {
      iface = parseInterface(kernel, this.source(kernel));
      if (iface.paramBytes > this.uniformSlot) throw new Error(`${kernel}: struct Params of ${iface.paramBytes} bytes exceeds a uniform slot`);
      this.interfaces.set(kernel, iface);
    }
    return iface;
  }
}

// One bind group layout per pipeline and one view per texture, made once: made per dispatch, they
// were two more GPU objects per dispatch for the garbage collector (whose time grew with them).
const layouts = new WeakMap<GPUComputePipeline, GPUBindGroupLayout>();
const views = new WeakMap<GPUTexture, GPUTextureView>();

function bindGroupLayout(pipeline: GPUComputePipeline): GPUBindGroupLayout {
  let layout = layouts.get(pipeline);
  if (!layout) layouts.set(pipeline, (layout = pipeline.getBindGroupLayout(0)));
  return layout;
}

function textureView(texture: GPUTexture): GPUTextureView {
  let view = views.get(texture);
  if (!view) views.set(texture, (view = texture.createView()));
  return view;
}

/** Writes the dispatch's named uniforms at `at` in the kernel's `struct Params` layout. */
function packParams(kernel: string, arena: ArrayBuffer, at: number, iface: KernelInterface, params: Record<string, Uniform>): void {
  const u = new Uint32Array(arena, at, iface.paramBytes / 4);
  const f = new Float32Array(arena, at, iface.paramBytes / 4);
  const s = new Int32Array(arena, at, iface.paramBytes / 4);
  for (const field of iface.params!) {
    const value = params[field.name];
    if (value === undefined) throw new Error(`${kernel}: param ${field.name} missing`);
    const values = typeof value === 'number' ? [value] : value;
    if ((typeof value === 'number') !== (field.count === 1) || values.length !== field.count) {
      throw new Error(`${kernel}: param ${field.name} holds ${field.count} value(s), given ${JSON.stringify(value)}`);
    }
    const i0 = field.offset / 4;
    values.forEach((v, i) => {
      if (field.kind === 'f32') f[i0 + i] = v;
      else if (field.kind === 'u32' && Number.isInteger(v) && v >= 0 && v < 2 ** 32) u[i0 + i] = v;
      else if (field.kind === 'i32' && Number.isInteger(v) && Math.abs(v) < 2 ** 31) s[i0 + i] = v;
      else throw new Error(`${kernel}: param ${field.name} = ${v} is not a ${field.kind}`);
    });
  }
  if (Object.keys(params).length !== iface.params!.length) {
    const extra = Object.keys(params).filter((k) => !iface.params!.some((p) => p.name === k));
    throw new Error(`${kernel}: no param named ${extra.join(', ')} in struct Params`);
  }
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
