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

/**
 * A metric has no value for this input by its own definition (NIQE of an image with fewer
 * than two 96×96 blocks, SSIM of one smaller than its window): `dr eval` reports the image
 * as unscored and leaves it out of that metric's mean, instead of stopping.
 */
export class NoScore extends DrError {
  constructor(message: string) {
    super(message);
    this.name = 'NoScore';
  }
}
