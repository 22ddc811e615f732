import type { Engine } from '../src/engine/engine.js';

/** Seconds per iteration over several timed repetitions. */
export interface Timing {
  best: number;
  median: number;
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
 * Times `step` (which records GPU work): one warm-up run (pipeline compilation, first
 * touch of the buffers), then `reps` repetitions of `iters` iterations recorded back to
 * back and one `e.sync()`, wall clock. Each iteration runs in its own tidy scope, so the
 * tensors it makes go back to the pool and memory stays flat.
 */
export async function measure(e: Engine, step: () => unknown, opts: MeasureOptions = {}): Promise<Timing> {
  const { minSeconds = 1, reps = 5, maxIters = 50 } = opts;
  const run = async (iters: number): Promise<number> => {
    const t0 = performance.now();
    for (let i = 0; i < iters; i++) e.tidy(() => void step());
    await e.sync();
    return (performance.now() - t0) / 1000 / iters;
  };
  await run(1); // warm-up
  const first = await run(1);
  const iters = Math.max(1, Math.min(maxIters, Math.round(minSeconds / first)));
  const samples = [first];
  for (let r = 1; r < reps; r++) samples.push(await run(iters));
  samples.sort((a, b) => a - b);
  return { best: samples[0], median: samples[Math.floor(samples.length / 2)], iters, reps };
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
