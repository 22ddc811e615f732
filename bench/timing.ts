// Timing, machine description and seeded data shared by every benchmark.
import os from 'node:os';
import type { Engine } from '../src/engine/engine.js';

/** Seconds per iteration over several timed repetitions. */
export interface Timing {
  /** Wall clock per iteration: recording + submit + GPU work + sync (what a user waits). */
  best: number;
  median: number;
  /**
   * GPU time per iteration from timestamp queries around the submitted work, when the
   * adapter has `timestamp-query`; undefined otherwise.
   */
  gpuBest?: number;
  gpuMedian?: number;
  /**
   * How the GPU time was bracketed: `work` (stamps after recording, around the work
   * only) or `step` (the step flushed part of its work while recording, so the first
   * stamp precedes recording and the time includes recording that overlaps the GPU).
   */
  gpuMethod?: 'work' | 'step';
  /** The first run, warm-up included (shader compilation, first touch of buffers). */
  first: number;
  /** Iterations recorded back to back in each repetition. */
  iters: number;
  reps: number;
}

export interface MeasureOptions {
  /** Aim for repetitions of about this many seconds (more iterations when one is fast). */
  minSeconds?: number;
  reps?: number;
  maxIters?: number;
}

/**
 * Brackets submitted work with two timestamp writes, each from an empty compute
 * pass in a submit of its own: the queue runs submits in order, so the difference
 * is the GPU time of what was submitted in between (no engine changes needed).
 */
class GpuTimer {
  private readonly set: GPUQuerySet;
  private readonly resolved: GPUBuffer;
  private readonly staging: GPUBuffer;

  constructor(private readonly device: GPUDevice) {
    this.set = device.createQuerySet({ type: 'timestamp', count: 2 });
    this.resolved = device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    this.staging = device.createBuffer({ size: 16, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
  }

  stamp(index: 0 | 1): void {
    const enc = this.device.createCommandEncoder();
    enc.beginComputePass({ timestampWrites: { querySet: this.set, beginningOfPassWriteIndex: index } }).end();
    if (index === 1) {
      enc.resolveQuerySet(this.set, 0, 2, this.resolved, 0);
      enc.copyBufferToBuffer(this.resolved, 0, this.staging, 0, 16);
    }
    this.device.queue.submit([enc.finish()]);
  }

  /** Seconds between the two stamps. */
  async seconds(): Promise<number> {
    await this.staging.mapAsync(GPUMapMode.READ);
    const t = new BigUint64Array(this.staging.getMappedRange().slice(0));
    this.staging.unmap();
    return Number(t[1] - t[0]) / 1e9;
  }
}

const timers = new WeakMap<Engine, GpuTimer>();

/**
 * Times `step` (which records GPU work): one warm-up run (pipeline compilation, first
 * touch of the buffers), then `reps` repetitions of `iters` iterations recorded back to
 * back and one `e.sync()`. Each iteration runs in its own tidy scope, so the tensors
 * it makes go back to the pool and memory stays flat. Wall clock always; GPU time
 * from timestamp queries too when the adapter has them.
 */
export async function measure(e: Engine, step: () => unknown, opts: MeasureOptions = {}): Promise<Timing> {
  const { minSeconds = 1, reps = 5, maxIters = 50 } = opts;
  let timer: GpuTimer | undefined;
  if (e.gpu.hasTimestamps) {
    timer = timers.get(e) ?? new GpuTimer(e.device);
    timers.set(e, timer);
  }
  let method: 'work' | 'step' = 'work';
  const run = async (iters: number): Promise<{ wall: number; gpu?: number; flushed: boolean }> => {
    e.flush();
    await e.sync();
    const t0 = performance.now();
    if (timer && method === 'step') timer.stamp(0);
    const submits = e.counters.submits;
    for (let i = 0; i < iters; i++) e.tidy(() => void step());
    const flushed = e.counters.submits !== submits;
    if (timer && method === 'work') timer.stamp(0);
    e.flush();
    timer?.stamp(1);
    await e.sync();
    const wall = (performance.now() - t0) / 1000 / iters;
    const gpu = timer ? (await timer.seconds()) / iters : undefined;
    return { wall, gpu, flushed };
  };
  const warm = await run(1);
  if (warm.flushed) method = 'step';
  const first = await run(1);
  const iters = Math.max(1, Math.min(maxIters, Math.round(minSeconds / first.wall)));
  const samples = [first];
  for (let r = 1; r < reps; r++) samples.push(await run(iters));
  const walls = samples.map((s) => s.wall).sort((a, b) => a - b);
  const gpus = samples.map((s) => s.gpu).filter((g): g is number => g !== undefined).sort((a, b) => a - b);
  return {
    best: walls[0],
    median: walls[Math.floor(walls.length / 2)],
    gpuBest: gpus.length ? gpus[0] : undefined,
    gpuMedian: gpus.length ? gpus[Math.floor(gpus.length / 2)] : undefined,
    gpuMethod: timer ? method : undefined,
    first: warm.wall,
    iters,
    reps,
  };
}

/** Deterministic uniform(-scale, scale) values (mulberry32), as the tests use. */
export function rand(n: number, seed = 1, scale = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

export interface MachineInfo {
  os: string;
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  /** 1-, 5- and 15-minute load averages when the run started (other work on the machine skews timings). */
  loadavg: number[];
}

export interface AdapterInfo {
  name: string;
  vendor: string;
  architecture: string;
  description: string;
  backend: string;
  software: boolean;
  shaderF16: boolean;
  timestampQuery: boolean;
  maxStorageBufferBindingMiB: number;
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

export function adapterInfo(e: Engine): AdapterInfo {
  const info = e.gpu.info;
  return {
    name: info.adapter,
    vendor: info.vendor,
    architecture: info.architecture,
    description: info.description,
    backend: info.backend,
    software: info.software,
    shaderF16: e.gpu.hasF16,
    timestampQuery: e.gpu.hasTimestamps,
    maxStorageBufferBindingMiB: info.limits.maxStorageBufferBindingSize / 2 ** 20,
  };
}

export const MiB = 2 ** 20;
export const fmt = (x: number | undefined, digits: number): string => (x === undefined || !Number.isFinite(x) ? '—' : x.toFixed(digits));

/** Host memory: resident now and the process's peak (MiB). On a software adapter GPU buffers live here too. */
export function hostMemory(): { rssMiB: number; maxRssMiB: number } {
  return { rssMiB: process.memoryUsage.rss() / MiB, maxRssMiB: (process.resourceUsage().maxRSS * 1024) / MiB };
}

/** Progress lines: stderr, so stdout carries only the tables or the JSON document. */
export const progress = (line: string): void => void process.stderr.write(`${line}\n`);
