import { DrError } from '../errors.js';

/** A bad item of a batch: the input and its one-line error (the JSON summaries list these). */
export interface ItemError {
  input: string;
  error: string;
}

/**
 * The one rule for a bad item in a batch, in every command: the item is skipped with one
 * `dr:` line on stderr (with --json, listed in the summary instead), the rest are processed,
 * the run ends with a summary line ("5 written, 1 failed") and the exit status is 1. Errors that are not DrError are bugs in dr and stop the run.
 */
export class Batch {
  readonly errors: ItemError[] = [];
  /** Items done (written, scored). */
  done = 0;

  /** `verb`: what a done item is, for the summary ("written", "scored"). */
  constructor(private readonly verb: string, private readonly quiet = false) {}

  /** Runs one item's work; a DrError skips the item (undefined comes back). */
  async item<T>(input: string, work: () => Promise<T>): Promise<T | undefined> {
    try {
      return await work();
    } catch (err) {
      if (!(err instanceof DrError)) throw err;
      this.fail(input, err.message);
      return undefined;
    }
  }

  fail(input: string, error: string): void {
    this.errors.push({ input, error });
    if (!this.quiet) process.stderr.write(`dr: ${error}\n`);
  }

  /** The exit status, after the summary line when some of several items failed (one item's own line says it all). */
  finish(items: number, more = ''): number {
    if (items > 1 && this.errors.length && !this.quiet) process.stderr.write(`dr: ${this.done} ${this.verb}, ${this.errors.length} failed${more}\n`);
    return this.errors.length ? 1 : 0;
  }
}
