import fs from 'node:fs';
import path from 'node:path';
import { DrError } from './errors.js';

// ---- temporary files: one naming scheme for every writer ----

/**
 * `.NAME.dr-PID.tmp` beside the target, for files and folders alike: hidden, never taken
 * for an image or a weights file, and tied to the process writing it, so a later run can
 * tell a temporary left by a killed run from one another run is still writing.
 */
const TEMP_NAME = /^\..+\.dr-(\d+)\.tmp$/;

/** Temporaries this process is writing, removed if it is interrupted. */
const live = new Set<string>();

export function tempPathFor(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.dr-${process.pid}.tmp`);
}

/** Starts writing `target`: returns its temporary path (file or folder), registered for removal on an interrupt. */
export function beginTemp(target: string): string {
  const tmp = tempPathFor(target);
  fs.rmSync(tmp, { recursive: true, force: true });
  live.add(tmp);
  return tmp;
}

/** Puts a finished temporary in place: renamed over `target` (a folder target is replaced whole). */
export function commitTemp(tmp: string, target: string): void {
  if (fs.statSync(tmp).isDirectory()) fs.rmSync(target, { recursive: true, force: true });
  fs.renameSync(tmp, target);
  live.delete(tmp);
}

/** Removes a temporary whose writing failed. */
export function dropTemp(tmp: string): void {
  fs.rmSync(tmp, { recursive: true, force: true });
  live.delete(tmp);
}

/** On an interrupt: the outputs being written go; finished outputs stay. */
export function dropLiveTemps(): void {
  for (const tmp of live) dropTemp(tmp);
}

/** Folders already cleaned by this process. */
const cleaned = new Set<string>();

/** Removes temporaries of our naming in `dir` whose process is gone (a run killed before it could clean up). */
export function removeStaleTemps(dir: string): void {
  const real = realPath(dir);
  if (cleaned.has(real)) return;
  cleaned.add(real);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(TEMP_NAME.exec(name)?.[1]);
    if (pid && pid !== process.pid && !running(pid)) fs.rmSync(path.join(dir, name), { recursive: true, force: true });
  }
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // alive, another user's
  }
}

/**
 * Writes a file all at once: the bytes go to a temporary file in the same folder,
 * which is then renamed over the target, so an interrupted run never leaves a
 * half-written output behind.
 */
export function writeAtomic(file: string, data: string | Uint8Array): void {
  const tmp = beginTemp(file);
  try {
    fs.writeFileSync(tmp, data);
    commitTemp(tmp, file);
  } catch (err) {
    dropTemp(tmp);
    const code = (err as NodeJS.ErrnoException).code;
    throw new DrError(`${file}: cannot write (${code === 'ENOENT' ? `no folder ${path.dirname(file)}` : code ?? (err as Error).message})`);
  }
}

// ---- outputs checked before the work ----

/** The real path of `p` (symlinks resolved), also when `p` or its tail does not exist yet. */
export function realPath(p: string): string {
  const abs = path.resolve(p);
  try {
    return fs.realpathSync(abs);
  } catch {
    const parent = path.dirname(abs);
    return parent === abs ? abs : path.join(realPath(parent), path.basename(abs));
  }
}

/**
 * What an output is: a `file`; a `folder` that outputs named after the inputs are written
 * into; or a `tree`, a folder replaced as a whole (a converted model, a new checkpoint).
 */
export type OutputKind = 'file' | 'folder' | 'tree';

/**
 * What a command reads (files, and folders read whole), as real paths resolved once, for
 * the check every writer makes that it will not overwrite its own input.
 */
export class Inputs {
  private readonly files = new Map<string, string>(); // real path → as given
  private readonly inodes = new Map<string, string>(); // dev:ino → as given (hard links)
  private readonly folders = new Map<string, string>(); // input folders and folders of input files
  private readonly all: { real: string; given: string; dir: boolean }[] = [];

  constructor(paths: readonly string[]) {
    for (const given of paths) {
      const real = realPath(given);
      const st = statOrUndefined(real);
      this.all.push({ real, given, dir: !!st?.isDirectory() });
      if (st?.isDirectory()) {
        this.folders.set(real, given);
        continue;
      }
      this.files.set(real, given);
      if (st) this.inodes.set(`${st.dev}:${st.ino}`, given);
      if (!this.folders.has(path.dirname(real))) this.folders.set(path.dirname(real), given);
    }
  }

  /**
   * Refuses, with or without --force, an output that is an input: a file output may not be an
   * input file or lie in an input folder (one read whole); a folder output may not be an input folder or the folder of an input file; a
   * tree may not hold an input. Symlinks are resolved, hard links compared by inode.
   */
  check(target: string, kind: OutputKind): void {
    const t = realPath(target);
    if (kind === 'file') {
      const st = statOrUndefined(t);
      const input = this.files.get(t) ?? (st && this.inodes.get(`${st.dev}:${st.ino}`));
      if (input !== undefined) throw new DrError(`${target}: is the input ${input}; choose another output`);
      const folder = this.all.find((i) => i.dir && within(i.real, t));
      if (folder) throw new DrError(`${target}: is in the input folder ${folder.given}; choose another output`);
    } else if (kind === 'folder') {
      const input = this.folders.get(t);
      if (input !== undefined) throw new DrError(`${target}: is the folder of the input ${input}; choose another output folder`);
    } else {
      const held = this.all.find((i) => within(t, i.real));
      if (held) throw new DrError(`${target}: ${t === held.real ? 'is' : 'holds'} the input ${held.given}; choose another output folder`);
    }
  }
}

const within = (dir: string, p: string): boolean => {
  const rel = path.relative(dir, p);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
};

function statOrUndefined(p: string): fs.Stats | undefined {
  try {
    return fs.statSync(p);
  } catch {
    return undefined;
  }
}

/**
 * Everything about an output file that can be checked before the work: not an input, not a
 * folder, in a writable folder (whose stale temporaries are removed). An existing file is
 * refused unless `force`; with `force` undefined the caller decides (restore's --skip-existing).
 */
export function checkOutputFile(file: string, inputs: Inputs, force?: boolean): void {
  inputs.check(file, 'file');
  const st = statOrUndefined(file);
  if (st?.isDirectory()) throw new DrError(`${file}: is a folder; give a file name`);
  checkFolder(path.dirname(file));
  if (st && force === false) checkWritable(file, false);
}

/** An output folder (`folder` or `tree`): not an input, writable; created if missing (a tree's parent). */
export function checkOutputFolder(dir: string, kind: 'folder' | 'tree', inputs: Inputs): void {
  inputs.check(dir, kind);
  // A tree is written beside itself and renamed into place: its parent is the folder written.
  const folder = kind === 'folder' ? dir : path.dirname(path.resolve(dir));
  ensureDir(folder);
  checkFolder(folder);
}

/** A folder outputs are written into: exists, is a folder, may be written; stale temporaries of ours go. */
function checkFolder(dir: string): void {
  const st = statOrUndefined(dir);
  if (!st) throw new DrError(`${dir}: no such folder`);
  if (!st.isDirectory()) throw new DrError(`${dir}: is not a folder`);
  try {
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
  } catch {
    throw new DrError(`${dir}: folder is not writable`);
  }
  removeStaleTemps(dir);
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
