// Writes PyTorch zip checkpoints the way torch.save lays them out (data.pkl with
// protocol 2, one stored member per storage), for the load benchmark and for tests
// that need files the fixtures do not have. Tensor data can be streamed in chunks,
// so a multi-GB file is written without holding it in memory.
import fs from 'node:fs';
import zlib from 'node:zlib';
import { DTYPE_BYTES, type StDtype } from '../src/weights/safetensors.js';

const STORAGE_CLASS: Partial<Record<StDtype, string>> = {
  F32: 'FloatStorage', F16: 'HalfStorage', BF16: 'BFloat16Storage', F64: 'DoubleStorage',
  I64: 'LongStorage', I32: 'IntStorage', I16: 'ShortStorage', I8: 'CharStorage', U8: 'ByteStorage', BOOL: 'BoolStorage',
};

// ---- pickle fragments (protocol 2) ----

const op = (...codes: number[]): Buffer => Buffer.from(codes);
export const MARK = op(0x28);
export const global = (module: string, name: string): Buffer => Buffer.from(`c${module}\n${name}\n`, 'latin1');
export const str = (s: string): Buffer => {
  const b = Buffer.from(s, 'utf-8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(b.length);
  return Buffer.concat([op(0x58), len, b]);
};
/** LONG1 with 8 bytes: any integer a checkpoint needs. */
export const int = (n: number): Buffer => {
  const b = Buffer.alloc(10);
  b[0] = 0x8a;
  b[1] = 8;
  b.writeBigInt64LE(BigInt(n), 2);
  return b;
};
export const tuple = (...items: Buffer[]): Buffer => Buffer.concat([MARK, ...items, op(0x74)]);
/** `module.name(*args)` as GLOBAL + REDUCE: what a malicious pickle does. */
export const call = (module: string, name: string, ...args: Buffer[]): Buffer => Buffer.concat([global(module, name), tuple(...args), op(0x52)]);
export const pickle = (body: Buffer): Buffer => Buffer.concat([op(0x80, 0x02), body, op(0x2e)]);

export interface TensorSpec {
  name: string;
  dtype: StDtype;
  shape: number[];
  /** The bytes, or chunks of them generated on the fly. */
  data: Uint8Array | Iterable<Uint8Array>;
}

function tensorPickle(key: string, t: TensorSpec): Buffer {
  const numel = t.shape.reduce((a, b) => a * b, 1);
  const stride = t.shape.map((_, i) => t.shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const storage = tuple(str('storage'), global('torch', STORAGE_CLASS[t.dtype]!), str(key), str('cpu'), int(numel));
  return call('torch._utils', '_rebuild_tensor_v2',
    Buffer.concat([storage, op(0x51)]), int(0), tuple(...t.shape.map(int)), tuple(...stride.map(int)), op(0x89), call('collections', 'OrderedDict'));
}

/** `{name: tensor, ...}` as an OrderedDict, plus `extra` entries given as raw pickle fragments. */
export function stateDictPickle(tensors: TensorSpec[], extra: [string, Buffer][] = []): Buffer {
  const items = [...tensors.map((t, i) => Buffer.concat([str(t.name), tensorPickle(String(i), t)])), ...extra.map(([k, v]) => Buffer.concat([str(k), v]))];
  return pickle(Buffer.concat([call('collections', 'OrderedDict'), MARK, ...items, op(0x75)]));
}

// ---- zip (stored members, no ZIP64: files under 4 GB) ----

/** Writes `root/data.pkl` (the given pickle) and `root/data/<i>` for each tensor, in order. */
export function writeTorchZip(path: string, dataPkl: Buffer, tensors: TensorSpec[], root = 'archive'): void {
  const fd = fs.openSync(path, 'w');
  const central: Buffer[] = [];
  let pos = 0;
  const write = (b: Uint8Array): void => {
    for (let done = 0; done < b.length; ) done += fs.writeSync(fd, b, done, b.length - done, pos + done);
    pos += b.length;
  };
  const member = (name: string, chunks: Iterable<Uint8Array>, size: number): void => {
    const nameBytes = Buffer.from(name, 'utf-8');
    const local = Buffer.alloc(30);
    const at = pos;
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt32LE(size, 18);
    local.writeUInt32LE(size, 22);
    local.writeUInt16LE(nameBytes.length, 26);
    write(local);
    write(nameBytes);
    let crc = 0;
    let written = 0;
    for (const c of chunks) {
      crc = zlib.crc32(c, crc);
      written += c.length;
      write(c);
    }
    if (written !== size) throw new Error(`${name}: wrote ${written} bytes, expected ${size}`);
    const crcBytes = Buffer.alloc(4);
    crcBytes.writeUInt32LE(crc >>> 0);
    fs.writeSync(fd, crcBytes, 0, 4, at + 14);
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(0x02014b50, 0);
    cd.writeUInt16LE(20, 4);
    cd.writeUInt16LE(20, 6);
    cd.writeUInt32LE(crc >>> 0, 16);
    cd.writeUInt32LE(size, 20);
    cd.writeUInt32LE(size, 24);
    cd.writeUInt16LE(nameBytes.length, 28);
    cd.writeUInt32LE(at, 42);
    central.push(cd, nameBytes);
  };
  try {
    member(`${root}/data.pkl`, [dataPkl], dataPkl.length);
    member(`${root}/byteorder`, [Buffer.from('little')], 6);
    tensors.forEach((t, i) => {
      const size = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
      member(`${root}/data/${i}`, t.data instanceof Uint8Array ? [t.data] : t.data, size);
    });
    member(`${root}/version`, [Buffer.from('3\n')], 2);
    const cdStart = pos;
    const cd = Buffer.concat(central);
    write(cd);
    const end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0);
    end.writeUInt16LE(central.length / 2, 8);
    end.writeUInt16LE(central.length / 2, 10);
    end.writeUInt32LE(cd.length, 12);
    end.writeUInt32LE(cdStart, 16);
    write(end);
  } finally {
    fs.closeSync(fd);
  }
}
