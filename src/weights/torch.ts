/**
 * PyTorch checkpoints (`torch.save`) read without running any of their code: the
 * zip format (`<root>/data.pkl` + one `<root>/data/<key>` member per storage) and
 * the legacy format (five pickles, then every storage as u64 element count + raw
 * bytes). The pickles go through the restricted unpickler with an allow-list of
 * exactly what tensor state dicts need. Tensors stay references into the file
 * until read, so a big checkpoint is streamed tensor by tensor.
 */
import fs from 'node:fs';
import { DrError } from '../errors.js';
import { ByteReader, PyDict, PyGlobal, PyTuple, unpickle } from './pickle.js';
import { DTYPE_BYTES, openForReading, type StDtype } from './safetensors.js';
import { ZipArchive, readAt, type ZipEntry } from './zip.js';

const STORAGE_DTYPES: Record<string, StDtype> = {
  FloatStorage: 'F32', HalfStorage: 'F16', BFloat16Storage: 'BF16', DoubleStorage: 'F64',
  LongStorage: 'I64', IntStorage: 'I32', ShortStorage: 'I16', CharStorage: 'I8',
  ByteStorage: 'U8', BoolStorage: 'BOOL',
};

/** torch's legacy-format magic number, the first pickle of such a file. */
const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL = 1001;

/** One storage: `numel` elements of `dtype`; `read` takes a byte range inside it. */
export interface TorchStorage {
  key: string;
  dtype: StDtype;
  numel: number;
  read(byteStart: number, byteLength: number): Uint8Array;
}

/** A tensor as torch pickles it: a strided view of a storage, checked to lie inside it. */
export class TorchTensor {
  constructor(
    readonly storage: TorchStorage,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}

  get dtype(): StDtype {
    return this.storage.dtype;
  }

  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  get byteLength(): number {
    return this.numel * DTYPE_BYTES[this.dtype];
  }

  /** The elements in row-major order, as a fresh buffer (views of shared storages are copied out). */
  read(): Uint8Array {
    const es = DTYPE_BYTES[this.dtype];
    const n = this.numel;
    if (n === 0) return new Uint8Array(0);
    if (this.contiguous()) return this.storage.read(this.offset * es, n * es);
    // Read the span the view touches once, then gather element by element.
    const last = this.shape.reduce((s, d, i) => s + (d - 1) * this.stride[i], 0);
    const span = this.storage.read(this.offset * es, (last + 1) * es);
    const out = new Uint8Array(n * es);
    const idx = new Array<number>(this.shape.length).fill(0);
    let src = 0;
    for (let i = 0; i < n; i++) {
      out.set(span.subarray(src * es, src * es + es), i * es);
      for (let d = this.shape.length - 1; d >= 0; d--) {
        src += this.stride[d];
        if (++idx[d] < this.shape[d]) break;
        src -= this.stride[d] * this.shape[d];
        idx[d] = 0;
      }
    }
    return out;
  }

  private contiguous(): boolean {
    let expected = 1;
    for (let d = this.shape.length - 1; d >= 0; d--) {
      if (this.shape[d] !== 1 && this.stride[d] !== expected) return false;
      expected *= this.shape[d];
    }
    return true;
  }
}

export type TorchFormat = 'torch zip' | 'torch legacy';

export interface TorchFile {
  format: TorchFormat;
  /** The unpickled object: PyDict / PyTuple / arrays / numbers / strings and TorchTensor leaves. */
  root: unknown;
  close(): void;
}

/** Reads the pickled object of a torch file; tensors are read later, on demand. */
export function openTorchFile(path: string): TorchFile {
  const fd = openForReading(path);
  try {
    const size = fs.fstatSync(fd).size;
    if (size === 0) throw new DrError(`${path}: file is empty (0 bytes)`);
    const head = readAt(path, fd, 0, Math.min(size, 4));
    const close = (): void => fs.closeSync(fd);
    if (head[0] === 0x50 && head[1] === 0x4b) return { format: 'torch zip', root: readZip(path, new ZipArchive(path, fd, size)), close };
    if (head[0] === 0x80) return { format: 'torch legacy', root: readLegacy(path, fd, size), close };
    throw new DrError(`${path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)`);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/** True if the file starts like a torch file (zip or pickle), so callers can tell it from safetensors. */
export function looksLikeTorch(path: string): boolean {
  const fd = openForReading(path);
  try {
    const b = Buffer.alloc(9);
    const n = fs.readSync(fd, b, 0, 9, 0);
    // A safetensors header length can start with 0x80 too; its JSON always opens at byte 8.
    const safetensors = n === 9 && b.readUInt32LE(4) === 0 && b[8] === 0x7b;
    return !safetensors && n >= 2 && ((b[0] === 0x50 && b[1] === 0x4b) || b[0] === 0x80);
  } finally {
    fs.closeSync(fd);
  }
}

/** The allow-list: containers, tensor and parameter rebuilders, storage classes. */
function allowList(path: string): Map<string, PyGlobal> {
  const g = new Map<string, PyGlobal>();
  const add = (name: string, call?: (args: unknown[]) => unknown): void => {
    g.set(name, new PyGlobal(name, call));
  };
  add('collections.OrderedDict', (args) => {
    const d = new PyDict();
    const pairs = args[0];
    if (pairs !== undefined) {
      if (!Array.isArray(pairs)) throw new DrError(`${path}: corrupt pickle: OrderedDict built from a ${typeof pairs}, not a list of pairs`);
      for (const p of pairs) {
        const kv = p instanceof PyTuple ? p.items : p;
        if (!Array.isArray(kv) || kv.length !== 2) throw new DrError(`${path}: corrupt pickle: OrderedDict item is not a (key, value) pair`);
        d.map.set(kv[0], kv[1]);
      }
    }
    return d;
  });
  const rebuild = (args: unknown[]): TorchTensor => rebuildTensor(path, args);
  add('torch._utils._rebuild_tensor', rebuild);
  add('torch._utils._rebuild_tensor_v2', rebuild);
  // nn.Parameter pickles as its data plus flags a weights reader does not need.
  add('torch._utils._rebuild_parameter', (args) => args[0]);
  add('torch._utils._rebuild_parameter_with_state', (args) => args[0]);
  for (const name of Object.keys(STORAGE_DTYPES)) add(`torch.${name}`);
  return g;
}

function rebuildTensor(path: string, args: unknown[]): TorchTensor {
  const [storage, offset, size, stride] = args;
  if (!(storage instanceof StorageRef)) throw new DrError(`${path}: corrupt pickle: tensor rebuilt from something that is not a storage`);
  const ints = (v: unknown, what: string): number[] => {
    const items = v instanceof PyTuple ? v.items : v;
    if (!Array.isArray(items) || !items.every((x) => Number.isSafeInteger(x) && (x as number) >= 0)) {
      throw new DrError(`${path}: corrupt pickle: tensor ${what} is not a tuple of non-negative integers`);
    }
    return items as number[];
  };
  const shape = ints(size, 'size');
  const strides = ints(stride, 'stride');
  if (!Number.isSafeInteger(offset) || (offset as number) < 0) throw new DrError(`${path}: corrupt pickle: tensor storage offset ${String(offset)} is not a non-negative integer`);
  if (strides.length !== shape.length) throw new DrError(`${path}: corrupt pickle: tensor has size [${shape}] but stride [${strides}]`);
  const s = storage.storage;
  const numel = shape.reduce((a, b) => a * b, 1);
  if (numel > 0) {
    const last = (offset as number) + shape.reduce((acc, d, i) => acc + (d - 1) * strides[i], 0);
    if (!Number.isSafeInteger(last) || last >= s.numel) {
      throw new DrError(
        `${path}: tensor view (storage offset ${offset}, size [${shape.join(', ')}], stride [${strides.join(', ')}]) reaches element ${last}, past the end of storage "${s.key}" (${s.numel} elements): offset + extent exceeds the storage`,
      );
    }
  }
  return new TorchTensor(s, offset as number, shape, strides);
}

/** What BINPERSID pushes: the storage a tensor is rebuilt from. */
class StorageRef {
  constructor(readonly storage: TorchStorage) {}
}

/** `('storage', torch.XStorage, key, location, numel[, view_metadata])`; the location (cpu, cuda:0) is ignored. */
function parsePid(path: string, pid: unknown): { dtype: StDtype; key: string; numel: number; view: unknown } {
  const items = pid instanceof PyTuple ? pid.items : [];
  const [kind, type, key, , numel, view] = items;
  if (kind !== 'storage' || items.length < 5) throw new DrError(`${path}: corrupt pickle: persistent id is not a ('storage', ...) tuple`);
  if (!(type instanceof PyGlobal) || !type.name.startsWith('torch.')) throw new DrError(`${path}: corrupt pickle: storage type is not a torch storage class`);
  const dtype = STORAGE_DTYPES[type.name.slice('torch.'.length)];
  if (typeof key !== 'string' || !Number.isSafeInteger(numel) || (numel as number) < 0) {
    throw new DrError(`${path}: corrupt pickle: storage reference has a bad key or element count`);
  }
  return { dtype, key, numel: numel as number, view };
}

function readZip(path: string, zip: ZipArchive): unknown {
  // Members live under one top folder named after the file's stem at save time.
  const pkls = [...zip.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (pkls.length !== 1) {
    throw new DrError(`${path}: zip archive is not a PyTorch checkpoint (${pkls.length ? 'several' : 'no'} <root>/data.pkl member${pkls.length ? 's' : ''})`);
  }
  const root = pkls[0].slice(0, -'data.pkl'.length);
  const byteorder = zip.entries.get(`${root}byteorder`);
  if (byteorder) {
    const order = Buffer.from(zip.read(byteorder)).toString('latin1').trim();
    if (order !== 'little') throw new DrError(`${path}: storages are ${order}-endian; only little-endian checkpoints are supported`);
  }
  const storages = new Map<string, TorchStorage>();
  const persistentLoad = (pid: unknown): StorageRef => {
    const { dtype, key, numel } = parsePid(path, pid);
    let s = storages.get(key);
    if (!s) {
      const member = `${root}data/${key}`;
      const entry = zip.entries.get(member);
      if (!entry) throw new DrError(`${path}: storage "${key}" is missing from the archive (no member ${member})`);
      const want = numel * DTYPE_BYTES[dtype];
      if (entry.size !== want) {
        throw new DrError(`${path}: storage "${key}" (${member}) holds ${entry.size} bytes but is declared as ${numel} ${dtype} elements (${want} bytes)`);
      }
      s = { key, dtype, numel, read: zipReader(zip, entry) };
      storages.set(key, s);
    } else if (s.dtype !== dtype || s.numel !== numel) {
      throw new DrError(`${path}: storage "${key}" is referenced with two different types or sizes`);
    }
    return new StorageRef(s);
  };
  const pkl = zip.entries.get(pkls[0])!;
  return unpickle(new ByteReader(path, zip.read(pkl)), { file: path, globals: allowList(path), persistentLoad });
}

/** Stored members are read in place; a deflated one is inflated once, on first use. */
function zipReader(zip: ZipArchive, entry: ZipEntry): TorchStorage['read'] {
  if (entry.method === 0) return (start, length) => zip.readStored(entry, start, length);
  let all: Uint8Array | undefined;
  return (start, length) => (all ??= zip.read(entry)).slice(start, start + length);
}

function readLegacy(path: string, fd: number, size: number): unknown {
  const r = new ByteReader(path, { fill: (pos: number, len: number) => readAt(path, fd, pos, len), start: 0, end: size });
  const storages = new Map<string, { dtype: StDtype; numel: number; position: number }>();
  const views = new Map<string, TorchStorage>();
  const noStorages = (): never => {
    throw new DrError(`${path}: corrupt legacy checkpoint: a storage reference appears outside the object pickle`);
  };
  const globals = allowList(path);
  const header = (): unknown => unpickle(r, { file: path, globals, persistentLoad: noStorages });
  const magic = header();
  if (typeof magic !== 'bigint' || magic !== LEGACY_MAGIC) {
    throw new DrError(`${path}: not a PyTorch checkpoint (a pickle, but not one written by torch.save)`);
  }
  const protocol = header();
  if (protocol !== LEGACY_PROTOCOL) throw new DrError(`${path}: legacy checkpoint protocol ${String(protocol)} is not supported (${LEGACY_PROTOCOL})`);
  const sysInfo = header();
  if (sysInfo instanceof PyDict && sysInfo.map.get('little_endian') === false) {
    throw new DrError(`${path}: storages are big-endian; only little-endian checkpoints are supported`);
  }

  // Storage positions are known only after the object pickle, so references are resolved lazily.
  const persistentLoad = (pid: unknown): StorageRef => {
    const { dtype, key, numel, view } = parsePid(path, pid);
    const known = storages.get(key);
    if (!known) storages.set(key, { dtype, numel, position: -1 });
    else if (known.dtype !== dtype || known.numel !== numel) throw new DrError(`${path}: storage "${key}" is referenced with two different types or sizes`);
    const base = (start: number, length: number): Uint8Array => {
      const s = storages.get(key)!;
      return readAt(path, fd, s.position + start, length);
    };
    if (view === null || view === undefined) return new StorageRef({ key, dtype, numel, read: base });
    // Pre-0.4 torch: (view_key, element offset, element count) of the root storage.
    const [viewKey, offset, count] = view instanceof PyTuple ? view.items : [];
    if (typeof viewKey !== 'string' || !Number.isSafeInteger(offset) || !Number.isSafeInteger(count) || (offset as number) + (count as number) > numel) {
      throw new DrError(`${path}: corrupt pickle: storage view of "${key}" is malformed or outside it`);
    }
    const es = DTYPE_BYTES[dtype];
    let v = views.get(viewKey);
    if (!v) views.set(viewKey, (v = { key: viewKey, dtype, numel: count as number, read: (start, length) => base((offset as number) * es + start, length) }));
    return new StorageRef(v);
  };
  const root = unpickle(r, { file: path, globals, persistentLoad });
  const keys = header();
  if (!Array.isArray(keys)) throw new DrError(`${path}: corrupt legacy checkpoint: the storage key list is not a list`);

  let pos = r.pos;
  for (const key of keys) {
    const s = storages.get(key as string);
    if (!s) throw new DrError(`${path}: corrupt legacy checkpoint: storage "${String(key)}" is listed but no tensor uses it`);
    if (pos + 8 > size) throw new DrError(`${path}: file ends at byte ${size} before storage "${key}" (truncated?)`);
    const count = Number(Buffer.from(readAt(path, fd, pos, 8)).readBigUInt64LE(0));
    if (count !== s.numel) throw new DrError(`${path}: storage "${key}" holds ${count} elements but is declared with ${s.numel}`);
    s.position = pos + 8;
    pos = s.position + count * DTYPE_BYTES[s.dtype];
    if (pos > size) throw new DrError(`${path}: storage "${key}" ends at byte ${pos}, past the end of the file (${size} bytes; truncated?)`);
  }
  for (const [key, s] of storages) if (s.position < 0) throw new DrError(`${path}: storage "${key}" is used by a tensor but missing from the file`);
  return root;
}
