// OpenBLAS's sgemm as a reference beside our matmul (bench/ab_kernels.ts `openblas`): the C program
// bench/openblas_sgemm.c, compiled with gcc on first use into dist/bench/. Optional: where gcc or
// libopenblas-dev is missing the bench says how to install it and leaves the reference out.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url)); // dist/bench
const SOURCE = path.resolve(HERE, '../../bench/openblas_sgemm.c');
const BINARY = path.join(HERE, 'openblas_sgemm');

export const OPENBLAS_HINT = 'the OpenBLAS reference needs gcc and OpenBLAS\'s headers: apt-get install gcc libopenblas-dev (Debian/Ubuntu)';

/** The compiled program's path, built now if missing or older than its source; undefined (and why) if it cannot be. */
export function openblasBinary(): { binary?: string; why?: string } {
  try {
    if (!fs.existsSync(BINARY) || fs.statSync(BINARY).mtimeMs < fs.statSync(SOURCE).mtimeMs) {
      execFileSync('gcc', ['-O2', SOURCE, '-o', BINARY, '-lopenblas'], { stdio: ['ignore', 'ignore', 'pipe'] });
    }
    return { binary: BINARY };
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim().split('\n')[0];
    return { why: `${OPENBLAS_HINT} (${stderr || (err as Error).message})` };
  }
}

export interface BlasResult {
  /** GFLOP/s of the best repetition by the wall clock. */
  gflops: number;
  /** FLOP of every timed call ÷ (the child's CPU seconds ÷ cores) / 1e9. */
  cpuNormGflops: number;
}

/**
 * C[M, N] = A[M, K] · W[N, K]ᵀ with cblas_sgemm in a child process on `threads` threads
 * (OPENBLAS_NUM_THREADS), repetitions of at least `minSeconds` each.
 */
export function openblasSgemm(binary: string, M: number, K: number, N: number, threads: number, minSeconds = 0.5, reps = 2): BlasResult {
  const out = execFileSync(binary, [M, K, N, 't', minSeconds, reps, threads].map(String), {
    env: { ...process.env, OPENBLAS_NUM_THREADS: String(threads) }, encoding: 'utf8',
  });
  const r = JSON.parse(out) as BlasResult;
  return { gflops: r.gflops, cpuNormGflops: r.cpuNormGflops };
}
