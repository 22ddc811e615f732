/**
 * safetensors reader and writer, written from the format description:
 * u64 little-endian header length N, N bytes of JSON header, then the data section.
 * Header entries are `{dtype, shape, data_offsets: [begin, end]}` relative to the data
 * section, plus an optional `"__metadata__": {string: string}`.
 *
 * Tensor bytes are used as host-endian typed arrays; every platform Node and Dawn run on
 * is little-endian, like the format. Positions are plain numbers (exact to 2^53), so
 * files and offsets past 2 GB / 4 GB work.
 */
import fs from 'node:fs';
import { beginTemp, commitTemp, dropTemp } from '../atomic.js';
import { DrError } from '../errors.js';
import { bytesToF32, bytesToInt32 } from './dtype.js';

export type StDtype =
  | 'F64' | 'F32' | 'F16' | 'BF16'
  | 'I64' | 'I32' | 'I16' | 'I8'
  | 'U64' | 'U32' | 'U16' | 'U8'
  | 'BOOL';

export const DTYPE_BYTES: Record<StDtype, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2,
  I64: 8, I32: 4, I16: 2, I8: 1,
  U64: 8, U32: 4, U16: 2, U8: 1,
  BOOL: 1,
};

export interface TensorInfo {
  name: string;
  dtype: StDtype;
  shape: number[];
  byteLength: number;
  /** Source file path. */
  file: string;
  /** Absolute byte position of the tensor's first byte in `file`. */
  fileOffset: number;
}

export interface TensorToWrite {
  name: string;
  dtype: StDtype;
  shape: number[];
  data: ArrayBufferView;
}

/** A tensor whose bytes are read only when it is written, so a big file is streamed, not held. */
export interface LazyTensorToWrite {
  name: string;
  dtype: StDtype;
  shape: number[];
  read: () => ArrayBufferView;
}

/** Real headers are a few hundred KB at most; anything bigger is a corrupt length field. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** Node's readSync/writeSync take at most 2^31-1 bytes per call. */
const IO_CHUNK = 1 << 30;

function isDtype(s: unknown): s is StDtype {
  return typeof s === 'string' && Object.hasOwn(DTYPE_BYTES, s);
}

function isShape(s: unknown): s is number[] {
  return Array.isArray(s) && s.every((d) => Number.isSafeInteger(d) && d >= 0);
}

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}


// ---- reader ----

/** A file descriptor for reading, or one line naming the file and why it cannot be opened. */
export function openForReading(path: string): number {
  try {
    return fs.openSync(path, 'r');
  } catch (e) {
    throw new DrError(`${path}: cannot open: ${(e as Error).message}`);
  }
}

export class SafetensorsFile {
  private fd: number;

  private constructor(
    readonly path: string,
    fd: number,
    readonly metadata: Record<string, string>,
    readonly tensors: Map<string, TensorInfo>,
  ) {
    this.fd = fd;
  }

  /** Opens `path` and parses/validates its header; tensor data is read on demand. */
  static open(path: string): SafetensorsFile {
    const fd = openForReading(path);
    try {
      const { metadata, tensors } = parseHeader(path, fd);
      return new SafetensorsFile(path, fd, metadata, tensors);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new DrError(`${this.path}: no tensor named "${name}"`);
    return t;
  }

  /** The tensor's raw bytes, in a fresh buffer (so typed-array views on it are aligned). */
  readBytes(name: string): Uint8Array {
    const t = this.info(name);
    if (this.fd < 0) throw new Error(`${this.path}: read after close()`);
    const buf = new Uint8Array(t.byteLength);
    for (let done = 0; done < buf.length; ) {
      const n = fs.readSync(this.fd, buf, done, Math.min(buf.length - done, IO_CHUNK), t.fileOffset + done);
      if (n === 0) {
        throw new DrError(
          `${this.path}: file ended at byte ${t.fileOffset + done} while reading tensor "${name}" (file truncated since it was opened?)`,
        );
      }
      done += n;
    }
    return buf;
  }

  /** The tensor as f32, converting from any float, integer or bool dtype. */
  readF32(name: string): Float32Array {
    return bytesToF32(this.info(name).dtype, this.readBytes(name));
  }

  /** The tensor as int32 (token ids, indices); fails on float dtypes and out-of-range values. */
  readInt32(name: string): Int32Array {
    return bytesToInt32(this.info(name).dtype, this.readBytes(name), `${this.path}: tensor "${name}"`);
  }

  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
  }
}


function readExact(fd: number, length: number, position: number): Uint8Array {
  const buf = new Uint8Array(length);
  for (let done = 0; done < length; ) {
    const n = fs.readSync(fd, buf, done, length - done, position + done);
    if (n === 0) break; // caller has already checked the file size
    done += n;
  }
  return buf;
}

function parseHeader(path: string, fd: number): { metadata: Record<string, string>; tensors: Map<string, TensorInfo> } {
  const size = fs.fstatSync(fd).size;
  const fail = (msg: string) => new DrError(`${path}: ${msg}`);
  if (size === 0) throw fail('file is empty (0 bytes), not a safetensors file');
  if (size < 8) throw fail(`file has only ${size} bytes, too short for a safetensors header`);

  const lenBig = Buffer.from(readExact(fd, 8, 0)).readBigUInt64LE(0);
  if (lenBig > BigInt(MAX_HEADER_BYTES)) {
    throw fail(`header length field says ${lenBig} bytes, over the ${MAX_HEADER_BYTES}-byte limit (not a safetensors file?)`);
  }
  const headerLen = Number(lenBig);
  if (8 + headerLen > size) {
    throw fail(`header length field says ${headerLen} bytes but the file has only ${size} bytes (truncated or not a safetensors file)`);
  }

  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(readExact(fd, headerLen, 8)));
  } catch (e) {
    throw fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(header)) throw fail('header is not a JSON object');

  const dataStart = 8 + headerLen;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  const ranges: { name: string; begin: number; end: number }[] = [];

  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!isPlainObject(entry)) throw fail('header "__metadata__" is not an object');
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== 'string') throw fail(`header "__metadata__" value for "${k}" is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const where = `header entry for tensor "${name}"`;
    if (!isPlainObject(entry)) throw fail(`${where} is not an object`);
    const { dtype, shape, data_offsets: offs } = entry;
    if (!isDtype(dtype)) throw fail(`${where} has unknown dtype ${JSON.stringify(dtype)}`);
    if (!isShape(shape)) throw fail(`${where} has shape ${JSON.stringify(shape)}, expected an array of non-negative integers`);
    if (
      !Array.isArray(offs) || offs.length !== 2 ||
      !offs.every((o) => Number.isSafeInteger(o) && o >= 0) || offs[0] > offs[1]
    ) {
      throw fail(`${where} has data_offsets ${JSON.stringify(offs)}, expected [begin, end] with 0 <= begin <= end`);
    }
    const [begin, end] = offs as [number, number];
    const expected = numel(shape) * DTYPE_BYTES[dtype];
    if (end - begin !== expected) {
      throw fail(
        `header says tensor "${name}" has ${end - begin} bytes but ${dtype} shape [${shape.join(', ')}] needs ${expected}`,
      );
    }
    if (dataStart + end > size) {
      throw fail(
        `header says tensor "${name}" ends at byte ${dataStart + end} but the file has ${size} bytes (file truncated?)`,
      );
    }
    tensors.set(name, { name, dtype, shape, byteLength: expected, file: path, fileOffset: dataStart + begin });
    ranges.push({ name, begin, end });
  }

  // Empty tensors occupy no bytes, so they cannot overlap anything.
  const nonEmpty = ranges.filter((r) => r.end > r.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < nonEmpty.length; i++) {
    const [a, b] = [nonEmpty[i - 1], nonEmpty[i]];
    if (b.begin < a.end) {
      throw fail(`tensors "${a.name}" [${a.begin}, ${a.end}) and "${b.name}" [${b.begin}, ${b.end}) overlap`);
    }
  }
  return { metadata, tensors };
}

// ---- writer ----

/**
 * Writes tensors in the given order. Goes through a temporary file (src/atomic.ts) and a
 * rename so a crash or bad input never leaves a half-written file at `path`.
 */
export function writeSafetensors(path: string, tensors: TensorToWrite[], metadata?: Record<string, string>): void {
  for (const _ of writeTensors(path, tensors, metadata));
}

/** writeSafetensors for lazily read tensors; `onTensor` is told each tensor's bytes once written (progress). */
export function writeSafetensorsLazy(path: string, tensors: LazyTensorToWrite[], metadata?: Record<string, string>, onTensor?: (bytes: number) => void): void {
  for (const _ of writeTensors(path, tensors, metadata, onTensor));
}

/** writeSafetensors that lets the event loop run after each tensor, so Ctrl-C is handled during a long write. */
export async function writeSafetensorsYielding(path: string, tensors: (TensorToWrite | LazyTensorToWrite)[], metadata?: Record<string, string>, onTensor?: (bytes: number) => void): Promise<void> {
  for (const _ of writeTensors(path, tensors, metadata, onTensor)) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** Writes the file, yielding after each tensor. */
function* writeTensors(path: string, tensors: (TensorToWrite | LazyTensorToWrite)[], metadata?: Record<string, string>, onTensor?: (bytes: number) => void): Generator<void> {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    const what = `${path}: tensor "${t.name}"`;
    if (t.name === '__metadata__' || Object.hasOwn(header, t.name)) throw new DrError(`${what}: duplicate or reserved name`);
    if (!isDtype(t.dtype)) throw new DrError(`${what}: unknown dtype ${JSON.stringify(t.dtype)}`);
    if (!isShape(t.shape)) throw new DrError(`${what}: shape ${JSON.stringify(t.shape)} is not an array of non-negative integers`);
    const expected = numel(t.shape) * DTYPE_BYTES[t.dtype];
    if ('data' in t && t.data.byteLength !== expected) {
      throw new DrError(
        `${what}: data has ${t.data.byteLength} bytes but ${t.dtype} shape [${t.shape.join(', ')}] needs ${expected}`,
      );
    }
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + expected] };
    offset += expected;
  }

  let json = JSON.stringify(header);
  // Pad so the data section starts 8-byte aligned, as the reference implementation does.
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf-8');
  const lenBytes = Buffer.alloc(8);
  lenBytes.writeBigUInt64LE(BigInt(headerBytes.length));

  const tmp = beginTemp(path);
  let fd = -1;
  try {
    fd = fs.openSync(tmp, 'w');
    let pos = 0;
    const write = (bytes: Uint8Array) => {
      for (let done = 0; done < bytes.length; ) {
        const n = fs.writeSync(fd, bytes, done, Math.min(bytes.length - done, IO_CHUNK), pos);
        done += n;
        pos += n;
      }
    };
    write(lenBytes);
    write(headerBytes);
    for (const t of tensors) {
      const data = 'data' in t ? t.data : t.read();
      const expected = numel(t.shape) * DTYPE_BYTES[t.dtype];
      if (data.byteLength !== expected) throw new Error(`tensor "${t.name}" has ${data.byteLength} bytes, ${t.dtype} [${t.shape}] needs ${expected}`);
      write(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      onTensor?.(data.byteLength);
      yield;
    }
    fs.closeSync(fd);
    fd = -1;
    commitTemp(tmp, path);
  } catch (e) {
    if (fd >= 0) fs.closeSync(fd);
    dropTemp(tmp);
    throw new DrError(`${path}: cannot write: ${(e as Error).message}`);
  }
}
