import fs from 'node:fs';
import path from 'node:path';
import { DrError } from './errors.js';

/**
 * Writes a file all at once: the bytes go to a temporary file in the same folder,
 * which is then renamed over the target, so an interrupted run never leaves a
 * half-written output behind.
 */
export function writeAtomic(file: string, data: string | Uint8Array): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    const code = (err as NodeJS.ErrnoException).code;
    throw new DrError(`${file}: cannot write (${code === 'ENOENT' ? `no folder ${path.dirname(file)}` : code ?? (err as Error).message})`);
  }
}

/** Refuses to replace an existing file unless --force was given. */
export function checkWritable(file: string, force: boolean): void {
  if (!force && fs.existsSync(file)) throw new DrError(`${file}: already exists (use --force to overwrite)`);
}

/** Creates the output folder (and parents), naming it in the error. */
export function ensureDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new DrError(`${dir}: cannot create the output folder (${(err as NodeJS.ErrnoException).code})`);
  }
  if (!fs.statSync(dir).isDirectory()) throw new DrError(`${dir}: exists and is not a folder`);
}
