// One timed model forward (CLIP tower, UNet step, VAE decode) and what it reports.
import type { Engine } from '../src/engine/engine.js';
import type { DType } from '../src/engine/tensor.js';
import type { Module } from '../src/graph/module.js';
import { fmt, hostMemory, measure, MiB, progress } from './timing.js';

export interface ModelResult {
  section: 'clip' | 'unet' | 'vae';
  /** e.g. `sd-tiny (fixture)`, `SD 1.5 (random weights)`. */
  model: string;
  /** e.g. `UNet step`, `VAE decode`, `vision forward`. */
  what: string;
  dtype: DType;
  /** The input, e.g. `latent 1×4×16×16 (128×128 px)`. */
  input: string;
  /** Parameters the timed forward uses, millions. */
  paramsM: number;
  loadSeconds: number;
  /** First forward: shader compilation and first use of every buffer included. */
  firstMs: number;
  bestMs: number;
  medianMs: number;
  /** GPU time from timestamp queries (see Timing.gpuMethod). */
  gpuMs?: number;
  gpuMethod?: string;
  runs: number;
  dispatches: number;
  submits: number;
  weightMiB: number;
  /** Pool peak: weights + every activation buffer the pool held at once. */
  peakGpuMiB: number;
  rssMiB: number;
  maxRssMiB: number;
}

export interface ModelCase {
  section: ModelResult['section'];
  model: string;
  what: string;
  dtype: DType;
  input: string;
}

/** Millions of parameters of `root` whose names pass `want`. */
export function paramCount(root: Module, want: (name: string) => boolean = () => true): number {
  let n = 0;
  for (const [name, p] of root.namedParams()) if (want(name) && !p.host) n += p.shape.reduce((a, b) => a * b, 1);
  return n / 1e6;
}

/**
 * Times `step` as measure() does with one warm-up forward and `reps` timed ones
 * (models take seconds to minutes on a software adapter). The engine should be
 * fresh (its pool's peak is then this model's).
 */
export async function benchModel(
  e: Engine,
  c: ModelCase,
  paramsM: number,
  loadSeconds: number,
  step: () => unknown,
  reps = 1,
): Promise<ModelResult> {
  progress(`  ${c.model} ${c.what} ${c.dtype} ${c.input}: ${fmt(paramsM, 1)} M params, loaded in ${fmt(loadSeconds, 1)} s; running…`);
  const before = { ...e.counters };
  const t = await measure(e, step, { minSeconds: 0, reps: reps + 1, maxIters: 1 });
  const runs = 1 + (reps + 1) * t.iters; // warm-up + first + timed
  const mem = hostMemory();
  const r: ModelResult = {
    ...c,
    paramsM,
    loadSeconds,
    firstMs: t.first * 1e3,
    bestMs: t.best * 1e3,
    medianMs: t.median * 1e3,
    gpuMs: t.gpuBest === undefined ? undefined : t.gpuBest * 1e3,
    gpuMethod: t.gpuMethod,
    runs,
    dispatches: Math.round((e.counters.dispatches - before.dispatches) / runs),
    submits: Math.round((e.counters.submits - before.submits) / runs),
    weightMiB: e.pool.stats.weightBytes / MiB,
    peakGpuMiB: e.pool.stats.peakBytes / MiB,
    ...mem,
  };
  progress(`  → ${fmt(r.bestMs, 0)} ms (first ${fmt(r.firstMs, 0)} ms, GPU ${fmt(r.gpuMs, 0)} ms), peak GPU ${fmt(r.peakGpuMiB, 0)} MiB, RSS ${fmt(r.rssMiB, 0)} MiB`);
  return r;
}
