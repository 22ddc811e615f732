import type { Engine } from '../engine/engine.js';

/**
 * Wall-clock seconds per phase of a pipeline. Each phase ends with a GPU sync, so the
 * work a phase queued is charged to it, not to the next phase that reads a result.
 */
export class PhaseTimer {
  readonly seconds: Record<string, number> = {};
  private last = performance.now();

  constructor(private readonly e: Engine) {}

  async end(phase: string): Promise<void> {
    await this.e.sync();
    const now = performance.now();
    this.seconds[phase] = (this.seconds[phase] ?? 0) + (now - this.last) / 1000;
    this.last = now;
  }
}
