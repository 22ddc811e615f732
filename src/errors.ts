/**
 * An error the user caused or can fix (bad file, missing weights, no adapter).
 * The CLI prints `message` on one line with no stack trace and exits non-zero;
 * any other error is a bug in dr and keeps its stack.
 */
export class DrError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DrError';
  }
}
