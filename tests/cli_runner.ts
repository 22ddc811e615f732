// Running the built `dr` CLI in tests (npm test builds it first) and checking the
// one-line error contract: exit 1, one `dr: ` line, no stack trace.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'vitest';
import { REPO } from './helpers.js';

export const CLI = path.join(REPO, 'dist/src/cli/main.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** `dr ARGS...`, never throwing: the exit code comes back with the output; `user` runs it as another user (from root). */
export async function runDr(args: string[], opts: { env?: NodeJS.ProcessEnv; user?: { uid: number; gid: number }; cwd?: string } = {}): Promise<CliResult> {
  try {
    const { stdout, stderr } = await promisify(execFile)('node', [CLI, ...args], { maxBuffer: 64 << 20, env: opts.env, cwd: opts.cwd, ...opts.user });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as CliResult;
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

export const dr = (...args: string[]): Promise<CliResult> => runDr(args);

/** Dawn's own notices on lavapipe start with "Warning:"; everything else is ours. */
export const ourLines = (stderr: string): string[] => stderr.split('\n').filter((l) => l && !l.startsWith('Warning:'));

export function expectUserError(r: CliResult, ...fragments: string[]): void {
  expect(r.code, r.stderr).toBe(1);
  const lines = ourLines(r.stderr);
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^dr: /);
  for (const f of fragments) expect(lines[0]).toContain(f);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}
