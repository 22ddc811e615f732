// Markdown tables of benchmark results (run.ts prints them; report.ts renders saved --json runs).
import type { KernelResult } from './kernels.js';
import type { ModelResult } from './model.js';
import { fmt } from './timing.js';

export type Result = KernelResult | ModelResult;

export const KERNEL_SECTIONS = ['matmul', 'conv', 'attention'] as const;
export const MODEL_SECTIONS = ['clip', 'unet', 'vae'] as const;

export function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = (r: string[]): string => `| ${r.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
  return [line(rows[0]), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.slice(1).map(line)].join('\n');
}

export function kernelTable(rows: KernelResult[]): string {
  return table([
    ['case', 'shape', 'dtype', 'GFLOP', 'wall ms', 'GPU ms', 'GFLOP/s'],
    ...rows.map((r) => [r.name, r.shape, r.dtype, fmt(r.gflop, 3), fmt(r.bestMs, 2), fmt(r.gpuMs, 2), fmt(r.gflops, 2)]),
  ]);
}

export function modelTable(rows: ModelResult[]): string {
  return table([
    ['model', 'what', 'dtype', 'input', 'params M', 'load s', 'first ms', 'best ms', 'GPU ms', 'dispatches', 'weights MiB', 'peak GPU MiB', 'RSS MiB', 'max RSS MiB'],
    ...rows.map((r) => [r.model, r.what, r.dtype, r.input, fmt(r.paramsM, 2), fmt(r.loadSeconds, 1), fmt(r.firstMs, 0), fmt(r.bestMs, 0),
      fmt(r.gpuMs, 0), String(r.dispatches), fmt(r.weightMiB, 0), fmt(r.peakGpuMiB, 0), fmt(r.rssMiB, 0), fmt(r.maxRssMiB, 0)]),
  ]);
}

/** A table for one section's results. */
export function sectionTable(section: string, results: Result[]): string {
  return (KERNEL_SECTIONS as readonly string[]).includes(section) ? kernelTable(results as KernelResult[]) : modelTable(results as ModelResult[]);
}
