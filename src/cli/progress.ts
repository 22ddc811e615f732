import cliProgress from 'cli-progress';

/**
 * A progress bar on stderr, shown only on a terminal and only for work with
 * enough steps to be worth watching; otherwise every call is a no-op.
 */
export class Progress {
  /** Bars on screen, stopped on an interrupt so that the cursor and line wrapping come back. */
  private static readonly shown = new Set<Progress>();

  static stopAll(): void {
    for (const p of Progress.shown) p.stop();
  }

  private readonly bar?: cliProgress.SingleBar;

  /** `start`: work done before (a resumed run); `info`: a text field after the ETA, set by tick (loss terms). */
  constructor(label: string, total: number, opts: { minTotal?: number; unit?: string; bytes?: boolean; start?: number; info?: boolean } = {}) {
    if (!process.stderr.isTTY || total < (opts.minTotal ?? 2)) return;
    const fmt = (opts.bytes ? '{value_mib}/{total_mib} MiB' : `{value}/{total} ${opts.unit ?? ''}`) + (opts.info ? ' | {info}' : '');
    this.bar = new cliProgress.SingleBar(
      { format: `${label} [{bar}] {percentage}% | ${fmt} | ETA {eta_formatted}`, stream: process.stderr, hideCursor: true, clearOnComplete: true },
      cliProgress.Presets.shades_classic,
    );
    this.value = opts.start ?? 0;
    this.bar.start(total, this.value, opts.bytes ? { value_mib: '0', total_mib: mib(total) } : { info: '' });
    Progress.shown.add(this);
    this.bytes = !!opts.bytes;
  }

  private bytes = false;
  private value = 0;

  tick(n = 1, info?: string): void {
    this.value += n;
    this.bar?.update(this.value, this.bytes ? { value_mib: mib(this.value) } : info !== undefined ? { info } : {});
  }

  stop(): void {
    this.bar?.stop();
    Progress.shown.delete(this);
  }
}

const mib = (b: number): string => (b / 2 ** 20).toFixed(0);
