import type { Engine } from '../engine/engine.js';

/**
 * Wall-clock seconds per phase of a pipeline, and the process's CPU seconds in it (every
 * thread: on a CPU adapter such as lavapipe that includes the driver's, so CPU time ÷ cores
 * is a measure that other load on a shared machine moves less than wall time). Each phase
 * ends with a GPU sync, so the work a phase queued is charged to it, not to the next phase
 * that reads a result.
 */
export class PhaseTimer {
  readonly seconds: Record<string, number> = {};
  readonly cpuSeconds: Record<string, number> = {};
  private last = performance.now();
  private lastCpu = process.cpuUsage();

  constructor(private readonly e: Engine) {}

  async end(phase: string): Promise<void> {
    await this.e.sync();
    const now = performance.now();
    const cpu = process.cpuUsage();
    this.seconds[phase] = (this.seconds[phase] ?? 0) + (now - this.last) / 1000;
    this.cpuSeconds[phase] = (this.cpuSeconds[phase] ?? 0) + (cpu.user + cpu.system - this.lastCpu.user - this.lastCpu.system) / 1e6;
    this.last = now;
    this.lastCpu = cpu;
    // The next phase runs other models at other sizes: free what this one pooled, so the peak is
    // the largest phase's working set, not the sum of every phase's size classes.
    this.e.trimPools();
  }
}
