import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** ../shared beside the repository, as on developer machines and in CI. */
export const SHARED = path.resolve(REPO, '../shared');
export const FIXTURES = path.join(SHARED, 'fixtures');

/** Deterministic uniform(-1, 1) values (mulberry32). */
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

/**
 * |actual - expected| <= atol + rtol·|expected| elementwise, reporting the worst
 * element. f32 kernels against double references: rtol 1e-4 covers reordered
 * f32 sums of a few thousand terms; atol absorbs values that cancel to ~0.
 */
export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol = 1e-4, atol = 1e-5): void {
  expect(actual.length).toBe(expected.length);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < expected.length; i++) {
    const excess = Math.abs(actual[i] - expected[i]) - (atol + rtol * Math.abs(expected[i]));
    if (!(excess <= worstExcess)) {
      worstExcess = Number.isNaN(excess) ? Infinity : excess;
      worst = i;
    }
  }
  if (worst >= 0) {
    expect.fail(`element ${worst}: got ${actual[worst]}, expected ${expected[worst]} (rtol ${rtol}, atol ${atol})`);
  }
}

/** Largest absolute value, for tolerances scaled to a tensor's magnitude. */
export const absMax = (x: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]));
  return m;
};

/** What compareAdamwSteps found: the largest difference, and elements off by more than 1e-5. */
export interface StepDiff {
  worst: number;
  off: number;
  elements: number;
}

/**
 * Parameters after AdamW steps against the fixture's (its README's rule): an element whose gradient
 * is within f32 noise of zero may land anywhere in ±lr, so every element must be within 2·lr (fails
 * at the first that is not) and the caller bounds how many are off by more than 1e-5.
 */
export function compareAdamwSteps(
  got: { readF32(name: string): Float32Array },
  ref: { readF32(name: string): Float32Array },
  names: readonly string[],
  lr: number,
): StepDiff {
  const diff: StepDiff = { worst: 0, off: 0, elements: 0 };
  for (const name of names) {
    const [a, b] = [got.readF32(name), ref.readF32(name)];
    expect(a.length, name).toBe(b.length);
    a.forEach((v, i) => {
      const d = Math.abs(v - b[i]);
      diff.worst = Math.max(diff.worst, d);
      if (!(d <= 2 * lr)) expect.fail(`${name}[${i}]: ${v} vs ${b[i]}`);
      if (d > 1e-5) diff.off++;
    });
    diff.elements += b.length;
  }
  return diff;
}
