import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { GpuInfo } from './device.js';

const WGSL_DIR = new URL('./wgsl/', import.meta.url);

/** dr's own small state: $DR_CACHE_DIR, else $XDG_CACHE_HOME/dr, else ~/.cache/dr. */
export function cacheDir(): string {
  return process.env.DR_CACHE_DIR || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'dr');
}

/**
 * Whether this is the first run of these kernels on this adapter and driver, the run in which the
 * driver compiles every shader it meets (Mesa, NVIDIA and AMD keep compiled shaders on disk, so
 * later runs skip that). A marker file named by a hash of the kernels' sources and the adapter's
 * identity records that a run happened: absent means cold, and it is written then. A cache
 * folder that cannot be written says "warm": a note that cannot stop repeating is not shown.
 */
export function firstRunOnAdapter(info: GpuInfo, dir = cacheDir()): boolean {
  const h = crypto.createHash('sha256');
  h.update(JSON.stringify([info.adapter, info.vendor, info.architecture, info.description, info.backend]));
  const wgsl = fs.readdirSync(WGSL_DIR).filter((f) => f.endsWith('.wgsl')).sort();
  for (const f of wgsl) h.update(f).update(fs.readFileSync(new URL(f, WGSL_DIR)));
  const marker = path.join(dir, `shaders-${h.digest('hex').slice(0, 16)}`);
  if (fs.existsSync(marker)) return false;
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(marker, `${info.adapter} ${info.description}\n`);
    return true;
  } catch {
    return false;
  }
}

/** The one-line note, on a terminal only (scripts and logs see results and errors alone, as with progress bars). */
export function noteFirstRun(info: GpuInfo): void {
  if (process.stderr.isTTY && firstRunOnAdapter(info)) {
    process.stderr.write(`dr: first run on ${info.adapter}: the GPU driver compiles dr's shaders as they are first used, so this run starts slower (they are cached for later runs)\n`);
  }
}
