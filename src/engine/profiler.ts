// Opt-in per-kernel GPU time (DR_PROFILE=1, or DR_PROFILE=FILE.json): every dispatch runs in a compute
// pass of its own whose beginning and end write timestamps; the engine resolves them at each submit and
// the times are summed per kernel (file name) and per kernel with its defines. On lavapipe the timestamps
// are the CPU clock, so a kernel's share of the sum is its share of the step. Off (the default), the engine
// records all dispatches into one pass and this file costs nothing.
import { writeFileSync } from 'node:fs';

/** Queries in one set: a begin and an end stamp per dispatch (4096 is WebGPU's largest query set). */
const QUERIES = 4096;

export interface ProfileRow {
  /** Kernel file name, or `kernel|DEFINE=v,…` in the per-variant list. */
  kernel: string;
  calls: number;
  ms: number;
}

export class KernelProfiler {
  private readonly set: GPUQuerySet;
  private readonly resolved: GPUBuffer;
  /** Labels of this batch's dispatches, by query pair. */
  private labels: [string, string][] = [];
  private readonly pending = new Set<Promise<void>>();
  private readonly byKernel = new Map<string, ProfileRow>();
  private readonly byVariant = new Map<string, ProfileRow>();

  constructor(private readonly device: GPUDevice) {
    this.set = device.createQuerySet({ type: 'timestamp', count: QUERIES });
    this.resolved = device.createBuffer({ size: QUERIES * 8, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  }

  /** True when the query set has no pair left: the engine submits before the next dispatch. */
  get full(): boolean {
    return this.labels.length * 2 >= QUERIES;
  }

  /** A compute pass that times exactly one dispatch (the caller dispatches and ends it). */
  pass(encoder: GPUCommandEncoder, kernel: string, variant: string): GPUComputePassEncoder {
    const i = this.labels.length;
    this.labels.push([kernel, variant]);
    return encoder.beginComputePass({
      timestampWrites: { querySet: this.set, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
    });
  }

  /** Before the encoder finishes: copies this batch's stamps out; `after` is called once it was submitted. */
  resolve(encoder: GPUCommandEncoder): (() => void) | undefined {
    const labels = this.labels;
    if (!labels.length) return undefined;
    this.labels = [];
    const bytes = labels.length * 16;
    const staging = this.device.createBuffer({ size: bytes, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
    encoder.resolveQuerySet(this.set, 0, labels.length * 2, this.resolved, 0);
    encoder.copyBufferToBuffer(this.resolved, 0, staging, 0, bytes);
    return () => {
      const done = staging.mapAsync(GPUMapMode.READ).then(() => {
        const t = new BigUint64Array(staging.getMappedRange());
        labels.forEach(([kernel, variant], i) => {
          const ms = Number(t[2 * i + 1] - t[2 * i]) / 1e6;
          add(this.byKernel, kernel, ms);
          add(this.byVariant, variant, ms);
        });
        staging.unmap();
        staging.destroy();
      });
      this.pending.add(done);
      void done.finally(() => this.pending.delete(done));
    };
  }

  /** Waits for every submitted batch's stamps. */
  async settle(): Promise<void> {
    while (this.pending.size) await Promise.all(this.pending);
  }

  /** Sums so far, largest first; batches whose stamps are not read back yet are missing. */
  rows(): { kernels: ProfileRow[]; variants: ProfileRow[]; unread: number } {
    const sorted = (m: Map<string, ProfileRow>) => [...m.values()].sort((a, b) => b.ms - a.ms);
    return { kernels: sorted(this.byKernel), variants: sorted(this.byVariant), unread: this.pending.size };
  }

  /** Clears the sums (a benchmark drops its warm-up). */
  reset(): void {
    this.byKernel.clear();
    this.byVariant.clear();
  }

  /** The report DR_PROFILE asks for: a table on stderr, or JSON into the named file. */
  report(target: string): void {
    const r = this.rows();
    if (target !== '1') {
      writeFileSync(target, JSON.stringify(r, null, 2) + '\n');
      return;
    }
    const total = r.kernels.reduce((s, k) => s + k.ms, 0);
    const lines = [`kernel profile: ${total.toFixed(1)} ms GPU time in ${r.kernels.reduce((s, k) => s + k.calls, 0)} dispatches` +
      (r.unread ? ` (${r.unread} batches not read back)` : '')];
    for (const k of r.kernels) {
      lines.push(`${k.kernel.padEnd(28)} ${k.ms.toFixed(2).padStart(10)} ms ${(100 * k.ms / total).toFixed(1).padStart(5)} % ${String(k.calls).padStart(7)} calls`);
    }
    process.stderr.write(lines.join('\n') + '\n');
  }
}

function add(m: Map<string, ProfileRow>, kernel: string, ms: number): void {
  const row = m.get(kernel);
  if (row) {
    row.calls++;
    row.ms += ms;
  } else m.set(kernel, { kernel, calls: 1, ms });
}
