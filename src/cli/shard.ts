import path from 'node:path';
import { DrError } from '../errors.js';

/** `--shard i/n`: this process takes the images whose name hashes to i of n (0 ≤ i < n). */
export interface Shard {
  index: number;
  count: number;
}

export const SHARD_HELP = 'take only shard i of n (0-based, e.g. 3/8): images split by a hash of their name without extension, the same on every machine';

export function parseShard(value: string | undefined): Shard | undefined {
  if (value === undefined) return undefined;
  const m = /^(\d+)\/(\d+)$/.exec(value.trim());
  const [index, count] = m ? [Number(m[1]), Number(m[2])] : [NaN, NaN];
  if (!(count >= 1 && index < count && Number.isSafeInteger(count))) {
    throw new DrError(`--shard: expected i/n with 0 ≤ i < n (e.g. 0/4 … 3/4, as $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT), got "${value}"`);
  }
  return { index, count };
}

/**
 * Whether `file` belongs to the shard: a hash (FNV-1a, mixed) of its name without folder or extension, so a
 * photo, its degraded copy (.png) and its restored version fall in the same shard of every
 * command, whatever else is in the folders and wherever they are mounted.
 */
export function inShard(file: string, shard: Shard | undefined): boolean {
  if (!shard) return true;
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(path.parse(file).name, 'utf8')) h = Math.imul(h ^ byte, 0x01000193);
  // FNV's low bits are weak (bit 0 is the parity of the bytes' bit 0s): murmur3's finaliser mixes
  // every bit into the ones `% count` reads for power-of-two shard counts.
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  h = (h ^ (h >>> 16)) >>> 0;
  return h % shard.count === shard.index;
}

/** One line on stderr saying how much of the run this shard takes (scripts see it in their logs). */
export function shardNote(shard: Shard | undefined, kept: number, total: number, quiet = false): void {
  if (shard && !quiet) process.stderr.write(`shard ${shard.index}/${shard.count}: ${kept} of ${total} images\n`);
}
