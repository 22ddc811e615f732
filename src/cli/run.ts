import { dropLiveTemps } from '../atomic.js';
import { DrError } from '../errors.js';
import { Progress } from './progress.js';

/**
 * Runs a command body: user errors print one line and exit 1; anything else is a
 * bug in dr and exits 70 with its message (stack with DR_DEBUG=1). Exits
 * explicitly because a live Dawn instance keeps Node's event loop running.
 */
export async function runCommand(body: () => Promise<number | void>): Promise<never> {
  // `dr inspect big.safetensors | head`: a reader that stops early ends the output, quietly.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => interrupted(signal));
  let code = 0;
  try {
    code = (await body()) ?? 0;
  } catch (err) {
    if (err instanceof DrError) {
      process.stderr.write(`dr: ${err.message}\n`);
      code = 1;
    } else {
      const e = err as Error;
      process.stderr.write(`dr: internal error: ${e?.message ?? String(err)}\n`);
      if (process.env.DR_DEBUG === '1') process.stderr.write(`${e?.stack}\n`);
      else process.stderr.write('dr: (set DR_DEBUG=1 to print the stack trace; please report it)\n');
      code = 70;
    }
  }
  // Let stdout drain before exiting (large --json output to a pipe).
  await new Promise<void>((resolve) => (process.stdout.writableNeedDrain ? process.stdout.once('drain', resolve) : resolve()));
  process.exit(code);
}

/**
 * Ctrl-C or a kill: the terminal gets its cursor and line wrapping back, the output being
 * written is removed (finished ones stay), and the exit status is the shell's 128 + signal.
 */
function interrupted(signal: 'SIGINT' | 'SIGTERM'): never {
  Progress.stopAll();
  dropLiveTemps();
  process.stderr.write('dr: interrupted\n');
  process.exit(signal === 'SIGINT' ? 130 : 143);
}

/** Parses a number option, naming the option in the error. */
export function numberOption(name: string, value: string | undefined, check: (n: number) => boolean, what: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || !check(n)) throw new DrError(`${name}: expected ${what}, got "${value}"`);
  return n;
}

/**
 * --seed, the same range in every command: the generators (xoshiro128** for dr degrade, the
 * latent noise of dr restore, dr init's weights) take 32 bits, so a larger seed would wrap
 * onto a smaller one and give its output.
 */
export const SEED_RANGE = '0..4294967295';
export function seedOption(value: string): number {
  return numberOption('--seed', value, (n) => Number.isInteger(n) && n >= 0 && n < 2 ** 32, `an integer in ${SEED_RANGE}`)!;
}

export function precisionOption(value: string | undefined): 'auto' | 'f32' | 'f16' {
  const p = value ?? 'auto';
  if (p !== 'auto' && p !== 'f32' && p !== 'f16') throw new DrError(`--precision: expected auto, f32 or f16, got "${p}"`);
  return p;
}

/** Help of --adapter, on every command that computes (main.ts hands the value to the device module as DR_ADAPTER). */
export const ADAPTER_HELP = 'GPU adapter: its index or part of its name in `dr doctor --list` (default $DR_ADAPTER, else the high-performance one)';

/** CLIP reads `limit` tokens of a text and drops the rest silently, as the pipelines do: say so once per text. */
export function warnIfCut(what: string, text: string, tokens: number, limit: number): void {
  if (tokens > limit) process.stderr.write(`dr: warning: ${what} "${text.length > 60 ? `${text.slice(0, 57)}...` : text}" is ${tokens} tokens; CLIP reads the first ${limit}, the rest is ignored\n`);
}
