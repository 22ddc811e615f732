/**
 * A minimal zip reader for PyTorch archives: the central directory (ZIP64 too, which
 * torch writes for files past 4 GB), stored or deflated members. Only the directory
 * and local headers are read at open; member bytes are read on demand, and every
 * position is checked against the file size first.
 */
import fs from 'node:fs';
import zlib from 'node:zlib';
import { DrError } from '../errors.js';

export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflated */
  method: number;
  compressedSize: number;
  size: number;
  /** Absolute position of the member's (compressed) bytes. */
  dataStart: number;
}

const EOCD = 0x06054b50;
const EOCD64 = 0x06064b50;
const EOCD64_LOCATOR = 0x07064b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;
/** 22-byte end record plus the longest possible comment. */
const EOCD_SEARCH = 22 + 0xffff;

export class ZipArchive {
  readonly entries = new Map<string, ZipEntry>();

  constructor(readonly path: string, private readonly fd: number, readonly fileSize: number) {
    const tailLen = Math.min(fileSize, EOCD_SEARCH);
    const tail = this.pread(fileSize - tailLen, tailLen);
    const view = dv(tail);
    let at = -1;
    for (let i = tailLen - 22; i >= 0; i--) {
      if (view.getUint32(i, true) === EOCD) {
        at = i;
        break;
      }
    }
    if (at < 0) throw this.fail('no zip end-of-central-directory record found (file truncated, or not a zip archive)');
    let count = view.getUint16(at + 10, true);
    let cdSize = view.getUint32(at + 12, true);
    let cdOffset = view.getUint32(at + 16, true);
    if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
      // ZIP64: the locator sits just before the end record and points at the real one.
      const locAt = fileSize - tailLen + at - 20;
      const loc = dv(this.pread(locAt, 20, 'ZIP64 locator'));
      if (loc.getUint32(0, true) !== EOCD64_LOCATOR) throw this.fail('ZIP64 end-of-central-directory locator missing');
      const rec = dv(this.pread(u64(loc, 8), 56, 'ZIP64 end record'));
      if (rec.getUint32(0, true) !== EOCD64) throw this.fail('ZIP64 end-of-central-directory record missing');
      count = u64(rec, 32);
      cdSize = u64(rec, 40);
      cdOffset = u64(rec, 48);
    }
    const cd = dv(this.pread(cdOffset, cdSize, 'central directory'));
    for (let p = 0, i = 0; i < count; i++) {
      if (p + 46 > cdSize || cd.getUint32(p, true) !== CENTRAL) throw this.fail(`central directory entry ${i} is damaged`);
      const flags = cd.getUint16(p + 8, true);
      const method = cd.getUint16(p + 10, true);
      let compressedSize = cd.getUint32(p + 20, true);
      let size = cd.getUint32(p + 24, true);
      const nameLen = cd.getUint16(p + 28, true);
      const extraLen = cd.getUint16(p + 30, true);
      const commentLen = cd.getUint16(p + 32, true);
      let local = cd.getUint32(p + 42, true);
      if (p + 46 + nameLen + extraLen > cdSize) throw this.fail(`central directory entry ${i} is damaged`);
      const name = new TextDecoder().decode(new Uint8Array(cd.buffer, cd.byteOffset + p + 46, nameLen));
      // ZIP64 extra field: 64-bit values for exactly the fields saturated above, in this order.
      for (let x = p + 46 + nameLen; x + 4 <= p + 46 + nameLen + extraLen; ) {
        const id = cd.getUint16(x, true);
        const len = cd.getUint16(x + 2, true);
        if (id === 0x0001) {
          let q = x + 4;
          const next = (): number => {
            if (q + 8 > x + 4 + len) throw this.fail(`ZIP64 extra field of "${name}" is too short`);
            const v = u64(cd, q);
            q += 8;
            return v;
          };
          if (size === 0xffffffff) size = next();
          if (compressedSize === 0xffffffff) compressedSize = next();
          if (local === 0xffffffff) local = next();
        }
        x += 4 + len;
      }
      if (flags & 1) throw this.fail(`member "${name}" is encrypted`);
      if (method !== 0 && method !== 8) throw this.fail(`member "${name}" uses compression method ${method} (only stored and deflate are supported)`);
      if (method === 0 && size !== compressedSize) throw this.fail(`stored member "${name}" has size ${size} but ${compressedSize} stored bytes`);
      const lh = dv(this.pread(local, 30, `local header of "${name}"`));
      if (lh.getUint32(0, true) !== LOCAL) throw this.fail(`local header of "${name}" is missing`);
      const dataStart = local + 30 + lh.getUint16(26, true) + lh.getUint16(28, true);
      if (dataStart + compressedSize > fileSize) {
        throw this.fail(`member "${name}" ends at byte ${dataStart + compressedSize}, past the end of the file (${fileSize} bytes)`);
      }
      this.entries.set(name, { name, method, compressedSize, size, dataStart });
      p += 46 + nameLen + extraLen + commentLen;
    }
  }

  /** The whole member, inflated if needed. */
  read(entry: ZipEntry): Uint8Array {
    const raw = this.pread(entry.dataStart, entry.compressedSize, `member "${entry.name}"`);
    if (entry.method === 0) return raw;
    let out: Buffer;
    try {
      out = zlib.inflateRawSync(raw);
    } catch (e) {
      throw this.fail(`member "${entry.name}" does not inflate: ${(e as Error).message}`);
    }
    if (out.length !== entry.size) throw this.fail(`member "${entry.name}" inflates to ${out.length} bytes, the directory says ${entry.size}`);
    return out;
  }

  /** A byte range of a stored (uncompressed) member, read in place. */
  readStored(entry: ZipEntry, start: number, length: number): Uint8Array {
    if (entry.method !== 0) throw new Error(`readStored: member "${entry.name}" is compressed`);
    if (start < 0 || start + length > entry.size) throw this.fail(`read of bytes [${start}, ${start + length}) outside member "${entry.name}" (${entry.size} bytes)`);
    return this.pread(entry.dataStart + start, length, `member "${entry.name}"`);
  }

  private pread(position: number, length: number, what = 'zip directory'): Uint8Array {
    if (position < 0 || position + length > this.fileSize) {
      throw this.fail(`${what} at bytes [${position}, ${position + length}) lies outside the file (${this.fileSize} bytes; truncated?)`);
    }
    return readAt(this.path, this.fd, position, length);
  }

  private fail(msg: string): DrError {
    return new DrError(`${this.path}: ${msg}`);
  }
}

/** Node's readSync takes at most 2^31-1 bytes per call. */
const IO_CHUNK = 1 << 30;

/** Reads exactly `length` bytes at `position` into `into` (at `offset`); the caller has checked the range. */
export function readInto(path: string, fd: number, into: Uint8Array, offset: number, length: number, position: number): void {
  for (let done = 0; done < length; ) {
    const n = fs.readSync(fd, into, offset + done, Math.min(length - done, IO_CHUNK), position + done);
    if (n === 0) throw new DrError(`${path}: file ended at byte ${position + done} while reading (truncated since it was opened?)`);
    done += n;
  }
}

export function readAt(path: string, fd: number, position: number, length: number): Uint8Array {
  const buf = new Uint8Array(length);
  readInto(path, fd, buf, 0, length, position);
  return buf;
}

const dv = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** 64-bit field as a number; larger than 2^53 only in a damaged file, where it fails the range checks. */
const u64 = (v: DataView, at: number): number => Number(v.getBigUint64(at, true));
