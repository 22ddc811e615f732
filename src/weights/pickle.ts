/**
 * A restricted unpickler (protocols 0–5). A pickle is a program for a stack machine
 * whose GLOBAL opcodes import arbitrary Python callables and whose REDUCE opcodes call
 * them; that is how a malicious checkpoint runs code under torch.load. Here nothing
 * is imported: GLOBAL / STACK_GLOBAL / INST resolve names only through the caller's
 * allow-list, and anything else stops the whole load at that opcode with an error
 * naming the global. REDUCE / NEWOBJ / BUILD apply only to allow-listed callables and
 * dicts. Containers become JS values: list → Array, tuple → PyTuple, dict → PyDict,
 * set → Set, str → string, bytes → Uint8Array, int → number (bigint beyond 2^53).
 */
import { DrError } from '../errors.js';

export class PyTuple {
  constructor(readonly items: unknown[]) {}
}

export class PyDict {
  readonly map = new Map<unknown, unknown>();
}

/** An allow-listed global: `call` if it may be called (REDUCE/NEWOBJ), else a plain marker value. */
export class PyGlobal {
  constructor(
    readonly name: string,
    readonly call?: (args: unknown[]) => unknown,
  ) {}
}

/** The load stopped at a global (or an operation) that a weights file does not need. */
export class PickleRefused extends DrError {
  constructor(file: string, readonly refused: string, how: string) {
    super(`${file}: refused to load: the pickle ${how} "${refused}", which is not on the allow-list of a weights file (tensors, state dicts, plain values); nothing was executed`);
  }
}

export interface UnpickleOptions {
  /** For error messages. */
  file: string;
  /** "module.name" → what GLOBAL pushes; any other name is refused. */
  globals: ReadonlyMap<string, PyGlobal>;
  /** BINPERSID / PERSID: torch's storage references. */
  persistentLoad: (pid: unknown) => unknown;
}

/** Bytes to unpickle, in memory or read from a file in chunks as the machine asks. */
export class ByteReader {
  private buf: Uint8Array;
  /** Absolute position of buf[0] in the source. */
  private base: number;
  private at = 0;
  private readonly end: number;
  private readonly refill?: (position: number, length: number) => Uint8Array;

  constructor(
    private readonly file: string,
    source: Uint8Array | { fill: (position: number, length: number) => Uint8Array; start: number; end: number },
  ) {
    if (source instanceof Uint8Array) {
      [this.buf, this.base, this.end] = [source, 0, source.length];
    } else {
      [this.buf, this.base, this.end, this.refill] = [new Uint8Array(0), source.start, source.end, source.fill];
    }
  }

  get pos(): number {
    return this.base + this.at;
  }

  private need(n: number): void {
    if (this.at + n <= this.buf.length) return;
    if (!this.refill || this.pos + n > this.end) {
      throw new DrError(`${this.file}: pickle data ends early at byte ${this.base + this.buf.length} (file truncated or corrupt)`);
    }
    const start = this.pos;
    this.buf = this.refill(start, Math.min(this.end - start, Math.max(n, 1 << 20)));
    this.base = start;
    this.at = 0;
  }

  u8(): number {
    this.need(1);
    return this.buf[this.at++];
  }

  take(n: number): Uint8Array {
    if (!Number.isSafeInteger(n) || n < 0) throw new DrError(`${this.file}: pickle has a bad length ${n} at byte ${this.pos}`);
    this.need(n);
    const out = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }

  view(n: number): DataView {
    const b = this.take(n);
    return new DataView(b.buffer, b.byteOffset, n);
  }

  /** A newline-terminated text argument (protocol 0 opcodes), without the newline. */
  line(): string {
    const chars: number[] = [];
    for (let c = this.u8(); c !== 0x0a; c = this.u8()) chars.push(c);
    return Buffer.from(chars).toString('latin1');
  }
}

const MARK = Symbol('mark');

/** Runs one pickle (up to its STOP) under the allow-list and returns its value. */
export function unpickle(r: ByteReader, opts: UnpickleOptions): unknown {
  const { file } = opts;
  const stack: unknown[] = [];
  const memo = new Map<number, unknown>();
  const fail = (msg: string): DrError => new DrError(`${file}: ${msg} (byte ${r.pos})`);

  const pop = (): unknown => {
    const v = stack.pop();
    if (v === undefined || v === MARK) throw fail('corrupt pickle: stack underflow');
    return v;
  };
  const top = (): unknown => {
    const v = stack[stack.length - 1];
    if (v === undefined || v === MARK) throw fail('corrupt pickle: stack underflow');
    return v;
  };
  const popMark = (): unknown[] => {
    const m = stack.lastIndexOf(MARK);
    if (m < 0) throw fail('corrupt pickle: no MARK on the stack');
    const items = stack.splice(m);
    items.shift();
    return items;
  };
  const global = (module: string, name: string, how: string): PyGlobal => {
    const g = opts.globals.get(`${module}.${name}`);
    if (!g) throw new PickleRefused(file, `${module}.${name}`, how);
    return g;
  };
  const call = (fn: unknown, args: unknown, op: string): unknown => {
    if (!(fn instanceof PyGlobal) || !fn.call) {
      throw new PickleRefused(file, fn instanceof PyGlobal ? fn.name : typeName(fn), `applies ${op} to`);
    }
    if (!(args instanceof PyTuple)) throw fail(`corrupt pickle: ${op} arguments are not a tuple`);
    return fn.call(args.items);
  };
  const str = (v: unknown, what: string): string => {
    if (typeof v !== 'string') throw fail(`corrupt pickle: ${what} is not a string`);
    return v;
  };
  const memoGet = (i: number): unknown => {
    if (!memo.has(i)) throw fail(`corrupt pickle: memo entry ${i} is not defined`);
    return memo.get(i);
  };
  const setItems = (d: unknown, items: unknown[]): void => {
    if (!(d instanceof PyDict)) throw new PickleRefused(file, typeName(d), 'sets items on');
    if (items.length % 2) throw fail('corrupt pickle: odd number of dict items');
    for (let i = 0; i < items.length; i += 2) d.map.set(items[i], items[i + 1]);
  };
  const append = (l: unknown, items: unknown[]): void => {
    if (!Array.isArray(l)) throw new PickleRefused(file, typeName(l), 'appends to');
    for (const v of items) l.push(v); // not push(...items): a long APPENDS would overflow the call stack
  };
  const int = (text: string): number | bigint => {
    const s = text.endsWith('L') ? text.slice(0, -1) : text;
    if (!/^[-+]?\d+$/.test(s)) throw fail(`corrupt pickle: "${text}" is not an integer`);
    return small(BigInt(s));
  };

  for (;;) {
    const op = r.u8();
    switch (op) {
      case 0x80: { // PROTO
        const v = r.u8();
        if (v > 5) throw fail(`pickle protocol ${v} is newer than 5`);
        break;
      }
      case 0x95: r.take(8); break; // FRAME: only a read-ahead hint
      case 0x2e: return pop(); // STOP
      case 0x28: stack.push(MARK); break;
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: stack.push(top()); break; // DUP
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break;
      case 0x89: stack.push(false); break;
      case 0x49: { // INT (text; 00/01 are protocol-0 booleans)
        const t = r.line();
        stack.push(t === '01' ? true : t === '00' ? false : int(t));
        break;
      }
      case 0x4a: stack.push(r.view(4).getInt32(0, true)); break; // BININT
      case 0x4b: stack.push(r.u8()); break; // BININT1
      case 0x4d: stack.push(r.view(2).getUint16(0, true)); break; // BININT2
      case 0x4c: stack.push(int(r.line())); break; // LONG
      case 0x8a: stack.push(longLE(r.take(r.u8()))); break; // LONG1
      case 0x8b: stack.push(longLE(r.take(r.view(4).getInt32(0, true)))); break; // LONG4
      case 0x46: stack.push(Number(r.line())); break; // FLOAT
      case 0x47: stack.push(r.view(8).getFloat64(0, false)); break; // BINFLOAT (big-endian)
      case 0x53: stack.push(unquote(r.line(), fail)); break; // STRING
      case 0x54: stack.push(latin1(r.take(r.view(4).getInt32(0, true)))); break; // BINSTRING
      case 0x55: stack.push(latin1(r.take(r.u8()))); break; // SHORT_BINSTRING
      case 0x56: stack.push(r.line().replace(/\\u([0-9a-fA-F]{4})/g, (_, h) => String.fromCharCode(parseInt(h, 16)))); break; // UNICODE
      case 0x58: stack.push(utf8(r.take(r.view(4).getUint32(0, true)))); break; // BINUNICODE
      case 0x8c: stack.push(utf8(r.take(r.u8()))); break; // SHORT_BINUNICODE
      case 0x8d: stack.push(utf8(r.take(u64(r)))); break; // BINUNICODE8
      case 0x42: stack.push(r.take(r.view(4).getUint32(0, true)).slice()); break; // BINBYTES
      case 0x43: stack.push(r.take(r.u8()).slice()); break; // SHORT_BINBYTES
      case 0x8e: case 0x96: stack.push(r.take(u64(r)).slice()); break; // BINBYTES8, BYTEARRAY8
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x61: { const v = pop(); append(top(), [v]); break; } // APPEND
      case 0x65: { const items = popMark(); append(top(), items); break; } // APPENDS
      case 0x6c: stack.push(popMark()); break; // LIST
      case 0x29: stack.push(new PyTuple([])); break; // EMPTY_TUPLE
      case 0x74: stack.push(new PyTuple(popMark())); break; // TUPLE
      case 0x85: stack.push(new PyTuple([pop()])); break;
      case 0x86: { const b = pop(); stack.push(new PyTuple([pop(), b])); break; }
      case 0x87: { const c = pop(); const b = pop(); stack.push(new PyTuple([pop(), b, c])); break; }
      case 0x7d: stack.push(new PyDict()); break; // EMPTY_DICT
      case 0x64: { const d = new PyDict(); setItems(d, popMark()); stack.push(d); break; } // DICT
      case 0x73: { const v = pop(); const k = pop(); setItems(top(), [k, v]); break; } // SETITEM
      case 0x75: { const items = popMark(); setItems(top(), items); break; } // SETITEMS
      case 0x8f: stack.push(new Set()); break; // EMPTY_SET
      case 0x90: { // ADDITEMS
        const items = popMark();
        const s = top();
        if (!(s instanceof Set)) throw new PickleRefused(file, typeName(s), 'adds items to');
        for (const v of items) s.add(v);
        break;
      }
      case 0x91: stack.push(new Set(popMark())); break; // FROZENSET
      case 0x70: memo.set(Number(int(r.line())), top()); break; // PUT
      case 0x71: memo.set(r.u8(), top()); break; // BINPUT
      case 0x72: memo.set(r.view(4).getUint32(0, true), top()); break; // LONG_BINPUT
      case 0x94: memo.set(memo.size, top()); break; // MEMOIZE
      case 0x67: stack.push(memoGet(Number(int(r.line())))); break; // GET
      case 0x68: stack.push(memoGet(r.u8())); break; // BINGET
      case 0x6a: stack.push(memoGet(r.view(4).getUint32(0, true))); break; // LONG_BINGET
      case 0x63: { const module = r.line(); stack.push(global(module, r.line(), 'asks for global')); break; } // GLOBAL
      case 0x93: { const name = str(pop(), 'STACK_GLOBAL name'); stack.push(global(str(pop(), 'STACK_GLOBAL module'), name, 'asks for global')); break; }
      case 0x69: { // INST: GLOBAL + call on the marked items
        const module = r.line();
        const g = global(module, r.line(), 'asks for global');
        stack.push(call(g, new PyTuple(popMark()), 'INST'));
        break;
      }
      case 0x6f: { const [cls, ...args] = popMark(); stack.push(call(cls, new PyTuple(args), 'OBJ')); break; }
      case 0x52: { const args = pop(); stack.push(call(pop(), args, 'REDUCE')); break; }
      case 0x81: { const args = pop(); stack.push(call(pop(), args, 'NEWOBJ')); break; }
      case 0x92: { // NEWOBJ_EX
        const kwargs = pop();
        const args = pop();
        if (!(kwargs instanceof PyDict) || kwargs.map.size) throw new PickleRefused(file, typeName(top()), 'passes keyword arguments to');
        stack.push(call(pop(), args, 'NEWOBJ_EX'));
        break;
      }
      case 0x62: { // BUILD: only the `_metadata` state torch puts on an OrderedDict state dict
        pop();
        const target = top();
        if (!(target instanceof PyDict)) throw new PickleRefused(file, typeName(target), 'applies BUILD to');
        break;
      }
      case 0x51: stack.push(opts.persistentLoad(pop())); break; // BINPERSID
      case 0x50: stack.push(opts.persistentLoad(r.line())); break; // PERSID
      case 0x82: case 0x83: case 0x84: // EXT1/2/4: globals from the copyreg extension registry
        throw new PickleRefused(file, `copyreg extension ${op === 0x82 ? r.u8() : op === 0x83 ? r.view(2).getUint16(0, true) : r.view(4).getInt32(0, true)}`, 'asks for');
      case 0x97: case 0x98: // NEXT_BUFFER, READONLY_BUFFER
        throw fail('pickle uses out-of-band buffers (protocol 5), which a file cannot carry');
      default:
        throw fail(`corrupt pickle: unknown opcode 0x${op.toString(16).padStart(2, '0')}`);
    }
  }
}

function typeName(v: unknown): string {
  if (v instanceof PyGlobal) return v.name;
  if (v instanceof PyTuple) return 'tuple';
  if (v instanceof PyDict) return 'dict';
  if (Array.isArray(v)) return 'list';
  if (v instanceof Uint8Array) return 'bytes';
  if (v === null) return 'None';
  return typeof v === 'object' ? (v.constructor?.name ?? 'object') : typeof v;
}

/** Two's-complement little-endian integer (LONG1/LONG4). */
function longLE(b: Uint8Array): number | bigint {
  let n = 0n;
  for (let i = b.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(b[i]);
  if (b.length && b[b.length - 1] & 0x80) n -= 1n << BigInt(8 * b.length);
  return small(n);
}

const small = (n: bigint): number | bigint =>
  n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;

function u64(r: ByteReader): number {
  const n = r.view(8).getBigUint64(0, true);
  return n > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(n); // -1 fails take()'s length check
}

const utf8 = (b: Uint8Array): string => new TextDecoder('utf-8').decode(b);
const latin1 = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString('latin1');

/** Protocol 0 STRING: a Python repr in quotes. */
function unquote(s: string, fail: (msg: string) => DrError): string {
  const q = s[0];
  if (s.length < 2 || (q !== "'" && q !== '"') || s[s.length - 1] !== q) throw fail('corrupt pickle: STRING argument is not quoted');
  const esc: Record<string, string> = { n: '\n', r: '\r', t: '\t', '\\': '\\', "'": "'", '"': '"' };
  return s.slice(1, -1).replace(/\\(x[0-9a-fA-F]{2}|.)/g, (_, e: string) => (e[0] === 'x' && e.length === 3 ? String.fromCharCode(parseInt(e.slice(1), 16)) : esc[e] ?? `\\${e}`));
}
