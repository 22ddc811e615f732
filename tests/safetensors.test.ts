import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DrError } from '../src/errors.js';
import {
  SafetensorsFile,
  writeSafetensors,
  type TensorToWrite,
} from '../src/weights/safetensors.js';
import { bf16ToF32, f16ToF32, f32ToF16Bits } from '../src/engine/half.js';
import { Checkpoint } from '../src/weights/checkpoint.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIXTURES = path.resolve(here, '../../shared/fixtures/clip-tiny');

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-st-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Expects `fn` to throw a DrError whose message names `file`, and returns the message. */
function drError(fn: () => unknown, file: string): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(DrError);
    const msg = (e as Error).message;
    expect(msg).toContain(path.basename(file));
    expect(msg).not.toContain('\n');
    return msg;
  }
  throw new Error('expected a DrError');
}

/** Writes a raw safetensors-like file: length field, header text, then `dataLen` zero bytes. */
function rawFile(name: string, header: unknown, dataLen = 0, lenField?: bigint): string {
  const file = path.join(tmp, name);
  const text = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lenField ?? BigInt(text.length));
  fs.writeFileSync(file, Buffer.concat([len, text, Buffer.alloc(dataLen)]));
  return file;
}

describe('f16 / bf16 conversion', () => {
  it('decodes special values exactly', () => {
    expect(f16ToF32(0x3c00)).toBe(1);
    expect(f16ToF32(0xc000)).toBe(-2);
    expect(f16ToF32(0x7bff)).toBe(65504);
    expect(f16ToF32(0x0001)).toBe(2 ** -24);
    expect(f16ToF32(0x03ff)).toBe(1023 * 2 ** -24);
    expect(f16ToF32(0x0400)).toBe(2 ** -14);
    expect(Object.is(f16ToF32(0x8000), -0)).toBe(true);
    expect(f16ToF32(0x7c00)).toBe(Infinity);
    expect(f16ToF32(0xfc00)).toBe(-Infinity);
    expect(f16ToF32(0x7e00)).toBeNaN();
  });

  it('round-trips every half bit pattern', () => {
    for (let b = 0; b < 65536; b++) {
      const x = f16ToF32(b);
      if (Number.isNaN(x)) expect(Number.isNaN(f16ToF32(f32ToF16Bits(x)))).toBe(true);
      else expect(f32ToF16Bits(x)).toBe(b);
    }
  });

  it('rounds to nearest even', () => {
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie -> even (down)
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie -> even (up)
    expect(f32ToF16Bits(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01); // above the tie
    expect(f32ToF16Bits(65519)).toBe(0x7bff);
    expect(f32ToF16Bits(65520)).toBe(0x7c00); // rounds up past max -> inf
    expect(f32ToF16Bits(2 ** -25)).toBe(0x0000); // half the smallest subnormal: tie -> 0
    expect(f32ToF16Bits(1.5 * 2 ** -25)).toBe(0x0001);
    expect(f32ToF16Bits(3 * 2 ** -25)).toBe(0x0002); // subnormal tie -> even
    expect(f32ToF16Bits(1023.5 * 2 ** -24)).toBe(0x0400); // carries into the smallest normal
    expect(f32ToF16Bits(-1e-10)).toBe(0x8000);
    expect(f32ToF16Bits(1e10)).toBe(0x7c00);
  });

  it('decodes bf16', () => {
    expect(bf16ToF32(0x3f80)).toBe(1);
    expect(bf16ToF32(0xc040)).toBe(-3);
    expect(bf16ToF32(0x7f80)).toBe(Infinity);
    expect(bf16ToF32(0x0001)).toBe(2 ** -133);
  });
});

describe('writeSafetensors / SafetensorsFile round trip', () => {
  it('round-trips F32, F16, BF16, I64, I32 and U8 with odd shapes', () => {
    const f32 = Float32Array.from({ length: 3 * 5 * 7 }, (_, i) => Math.sin(i) * 100);
    const halfVals = [0, -0, 1, -2.5, 65504, 2 ** -24, 1e-3, Infinity, 0.1];
    const f16 = Uint16Array.from(halfVals, f32ToF16Bits);
    const bf16 = Uint16Array.from([0x3f80, 0xc040, 0x4049, 0x0000, 0xbf00]);
    const i64 = BigInt64Array.from([0n, -1n, 49407n, 2147483647n, -2147483648n, 7n]);
    const i32 = Int32Array.from([5, -6, 7]);
    const u8 = Uint8Array.from([0, 255, 3]);
    const file = path.join(tmp, 'roundtrip.safetensors');
    const tensors: TensorToWrite[] = [
      { name: 'a.f32', dtype: 'F32', shape: [3, 5, 7], data: f32 },
      { name: 'b.f16', dtype: 'F16', shape: [9], data: f16 },
      { name: 'c.bf16', dtype: 'BF16', shape: [1, 5], data: bf16 },
      { name: 'd.i64', dtype: 'I64', shape: [2, 3], data: i64 },
      { name: 'e.i32', dtype: 'I32', shape: [3], data: i32 },
      { name: 'f.u8', dtype: 'U8', shape: [3, 1], data: u8 },
      { name: 'g.empty', dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
      { name: 'h.scalar', dtype: 'F32', shape: [], data: Float32Array.of(42) },
    ];
    writeSafetensors(file, tensors, { format: 'pt', note: 'ünïcode' });

    // Header is padded so the data section starts 8-byte aligned.
    const headerLen = Number(fs.readFileSync(file).readBigUInt64LE(0));
    expect(headerLen % 8).toBe(0);

    const st = SafetensorsFile.open(file);
    try {
      expect(st.metadata).toEqual({ format: 'pt', note: 'ünïcode' });
      expect([...st.tensors.keys()]).toEqual(tensors.map((t) => t.name));
      const a = st.tensors.get('a.f32')!;
      expect(a).toMatchObject({ dtype: 'F32', shape: [3, 5, 7], byteLength: 420, file, fileOffset: 8 + headerLen });
      expect(st.readF32('a.f32')).toEqual(f32);
      expect(Array.from(st.readF32('b.f16'))).toEqual(halfVals.map((v) => f16ToF32(f32ToF16Bits(v))));
      expect(Array.from(st.readF32('c.bf16'))).toEqual([1, -3, 3.140625, 0, -0.5]);
      expect(Array.from(st.readF32('d.i64'))).toEqual([0, -1, 49407, 2147483648, -2147483648, 7]);
      expect(Array.from(st.readInt32('d.i64'))).toEqual([0, -1, 49407, 2147483647, -2147483648, 7]);
      expect(st.readInt32('e.i32')).toEqual(i32);
      expect(Array.from(st.readF32('f.u8'))).toEqual([0, 255, 3]);
      expect(Array.from(st.readInt32('f.u8'))).toEqual([0, 255, 3]);
      expect(st.readF32('g.empty').length).toBe(0);
      expect(Array.from(st.readF32('h.scalar'))).toEqual([42]);
      expect(Buffer.from(st.readBytes('b.f16'))).toEqual(Buffer.from(f16.buffer));
      drError(() => st.readInt32('a.f32'), file);
      drError(() => st.readBytes('nope'), file);
    } finally {
      st.close();
    }
  });

  it('rejects an I64 value that does not fit in int32', () => {
    const file = path.join(tmp, 'big-i64.safetensors');
    writeSafetensors(file, [{ name: 'ids', dtype: 'I64', shape: [2], data: BigInt64Array.of(1n, 1n << 40n) }]);
    const st = SafetensorsFile.open(file);
    try {
      expect(drError(() => st.readInt32('ids'), file)).toMatch(/1099511627776.*int32/);
    } finally {
      st.close();
    }
  });

  it('writes a view with a byteOffset correctly', () => {
    const backing = Float32Array.from([9, 1, 2, 3, 9]);
    const file = path.join(tmp, 'view.safetensors');
    writeSafetensors(file, [{ name: 'x', dtype: 'F32', shape: [3], data: backing.subarray(1, 4) }]);
    const st = SafetensorsFile.open(file);
    expect(Array.from(st.readF32('x'))).toEqual([1, 2, 3]);
    st.close();
  });

  it('leaves no file behind when a tensor has the wrong size', () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'nofile-'));
    const file = path.join(dir, 'bad.safetensors');
    const msg = drError(
      () =>
        writeSafetensors(file, [
          { name: 'ok', dtype: 'F32', shape: [2], data: new Float32Array(2) },
          { name: 'bad', dtype: 'F16', shape: [2, 3], data: new Uint16Array(5) },
        ]),
      file,
    );
    expect(msg).toContain('"bad"');
    expect(msg).toContain('10');
    expect(msg).toContain('12');
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('reports a write into a missing folder as a DrError and leaves nothing', () => {
    const file = path.join(tmp, 'no-such-dir', 'x.safetensors');
    drError(() => writeSafetensors(file, [{ name: 'x', dtype: 'U8', shape: [1], data: new Uint8Array(1) }]), file);
    expect(fs.existsSync(path.dirname(file))).toBe(false);
  });
});

describe('real fixtures', () => {
  it('reads clip-tiny model.safetensors', () => {
    const file = path.join(FIXTURES, 'model.safetensors');
    const st = SafetensorsFile.open(file);
    try {
      expect(st.metadata.format).toBe('pt');
      expect(st.tensors.size).toBe(78);
      const info = st.tensors.get('text_model.embeddings.token_embedding.weight')!;
      expect(info.dtype).toBe('F32');
      expect(info.shape).toEqual([49408, 32]);
      expect(info.byteLength).toBe(49408 * 32 * 4);
      const w = st.readF32('text_model.embeddings.token_embedding.weight');
      expect(w.length).toBe(49408 * 32);
      expect(w[0]).toBeCloseTo(-0.036425843834877014, 7);
      expect(w[2]).toBeCloseTo(-0.024977628141641617, 7);
      expect(w[w.length - 1]).toBeCloseTo(-0.02253909222781658, 7);
    } finally {
      st.close();
    }
  });

  it('reads clip-tiny io.safetensors metadata and I64 input_ids', () => {
    const st = SafetensorsFile.open(path.join(FIXTURES, 'io.safetensors'));
    try {
      expect(st.metadata.variant).toBe('fixtures');
      expect(JSON.parse(st.metadata.prompts)).toHaveLength(3);
      expect(st.tensors.get('input_ids')).toMatchObject({ dtype: 'I64', shape: [3, 77] });
      const ids = st.readInt32('input_ids');
      expect(ids.length).toBe(3 * 77);
      expect(Array.from(ids.subarray(0, 7))).toEqual([49406, 320, 1125, 539, 320, 2368, 49407]);
      expect(Array.from(ids.subarray(77, 80))).toEqual([49406, 21977, 1125]);
    } finally {
      st.close();
    }
  });

  it('opens the fixture folder as a Checkpoint', () => {
    const ck = Checkpoint.open(FIXTURES);
    try {
      expect(ck.keys()).toHaveLength(78);
      expect(ck.has('logit_scale')).toBe(true);
      expect(ck.info('text_model.embeddings.position_embedding.weight').shape).toEqual([77, 32]);
      expect(drError(() => ck.info('missing.weight'), FIXTURES)).toContain('missing.weight');
    } finally {
      ck.close();
    }
  });
});

describe('Checkpoint layouts', () => {
  function shardedDir(name: string): string {
    const dir = path.join(tmp, name);
    fs.mkdirSync(dir);
    writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), [
      { name: 'a', dtype: 'F32', shape: [2], data: Float32Array.of(1, 2) },
      { name: 'b', dtype: 'F16', shape: [1], data: Uint16Array.of(0x3c00) },
    ]);
    writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), [
      { name: 'c', dtype: 'I64', shape: [3], data: BigInt64Array.of(4n, 5n, 6n) },
    ]);
    fs.writeFileSync(
      path.join(dir, 'model.safetensors.index.json'),
      JSON.stringify({
        metadata: { total_size: 22 },
        weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00001-of-00002.safetensors', c: 'model-00002-of-00002.safetensors' },
      }),
    );
    return dir;
  }

  it('opens a sharded checkpoint (folder or index file)', () => {
    const dir = shardedDir('sharded');
    for (const p of [dir, path.join(dir, 'model.safetensors.index.json')]) {
      const ck = Checkpoint.open(p);
      try {
        expect(ck.keys().sort()).toEqual(['a', 'b', 'c']);
        expect(Array.from(ck.readF32('a'))).toEqual([1, 2]);
        expect(Array.from(ck.readF32('b'))).toEqual([1]);
        expect(Array.from(ck.readInt32('c'))).toEqual([4, 5, 6]);
        expect(ck.info('c').file).toBe(path.join(dir, 'model-00002-of-00002.safetensors'));
        expect(ck.readBytes('a').byteLength).toBe(8);
      } finally {
        ck.close();
      }
    }
  });

  it('reports a missing shard and a tensor absent from its shard', () => {
    const dir = shardedDir('sharded-missing');
    fs.rmSync(path.join(dir, 'model-00002-of-00002.safetensors'));
    expect(drError(() => Checkpoint.open(dir), 'model.safetensors.index.json')).toContain('model-00002-of-00002.safetensors');

    const dir2 = shardedDir('sharded-wrong');
    const index = path.join(dir2, 'model.safetensors.index.json');
    const j = JSON.parse(fs.readFileSync(index, 'utf-8'));
    j.weight_map.c = 'model-00001-of-00002.safetensors';
    fs.writeFileSync(index, JSON.stringify(j));
    expect(drError(() => Checkpoint.open(dir2), index)).toMatch(/"c".*model-00001-of-00002/);

    fs.writeFileSync(index, '{"weight_map": 3}');
    drError(() => Checkpoint.open(dir2), index);
  });

  it('opens a diffusers folder, a lone file, and a folder with one odd-named file', () => {
    const data = [{ name: 'w', dtype: 'F32' as const, shape: [1], data: Float32Array.of(3) }];
    const d1 = path.join(tmp, 'unet');
    fs.mkdirSync(d1);
    writeSafetensors(path.join(d1, 'diffusion_pytorch_model.safetensors'), data);
    const d2 = path.join(tmp, 'odd');
    fs.mkdirSync(d2);
    writeSafetensors(path.join(d2, 'weights.safetensors'), data);
    for (const p of [d1, d2, path.join(d2, 'weights.safetensors')]) {
      const ck = Checkpoint.open(p);
      expect(Array.from(ck.readF32('w'))).toEqual([3]);
      ck.close();
    }
  });

  it('explains folders with no weights, ambiguous weights, or no such path', () => {
    const empty = path.join(tmp, 'clip');
    fs.mkdirSync(empty);
    expect(drError(() => Checkpoint.open(empty), empty)).toContain(
      'no model.safetensors, diffusion_pytorch_model.safetensors or *.safetensors.index.json found',
    );

    const two = path.join(tmp, 'two');
    fs.mkdirSync(two);
    const data = [{ name: 'w', dtype: 'U8' as const, shape: [1], data: new Uint8Array(1) }];
    writeSafetensors(path.join(two, 'x.safetensors'), data);
    writeSafetensors(path.join(two, 'y.safetensors'), data);
    drError(() => Checkpoint.open(two), two);
    writeSafetensors(path.join(two, 'model.safetensors'), data);
    writeSafetensors(path.join(two, 'diffusion_pytorch_model.safetensors'), data);
    expect(drError(() => Checkpoint.open(two), two)).toContain('expected exactly one');

    drError(() => Checkpoint.open(path.join(tmp, 'nowhere')), 'nowhere');
  });
});

describe('header validation', () => {
  const good = { x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
  const cases: [string, () => string, RegExp][] = [
    ['empty file', () => rawFileBytes('empty.safetensors', Buffer.alloc(0)), /empty/],
    ['shorter than 8 bytes', () => rawFileBytes('short.safetensors', Buffer.from([1, 2, 3])), /3 bytes/],
    ['header length past EOF', () => rawFile('hlen.safetensors', good, 8, 5000n), /5000.*truncated/],
    ['absurd header length', () => rawFile('absurd.safetensors', good, 8, 1n << 60n), /limit/],
    ['invalid JSON', () => rawFile('json.safetensors', '{"x": '), /not valid JSON/],
    ['JSON not an object', () => rawFile('array.safetensors', '[1,2]'), /not a JSON object/],
    ['unknown dtype', () => rawFile('dtype.safetensors', { w: { dtype: 'F8', shape: [1], data_offsets: [0, 1] } }, 1), /"w".*"F8"/],
    ['bad shape', () => rawFile('shape.safetensors', { w: { dtype: 'F32', shape: [2, -1], data_offsets: [0, 8] } }, 8), /"w".*shape/],
    ['shape not array', () => rawFile('shape2.safetensors', { w: { dtype: 'F32', shape: 2, data_offsets: [0, 8] } }, 8), /shape/],
    ['missing data_offsets', () => rawFile('offs.safetensors', { w: { dtype: 'F32', shape: [2] } }, 8), /data_offsets/],
    ['begin > end', () => rawFile('offs2.safetensors', { w: { dtype: 'F32', shape: [0], data_offsets: [8, 0] } }, 8), /data_offsets/],
    ['size mismatch', () => rawFile('size.safetensors', { w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, 8), /8 bytes.*needs 12/],
    ['truncated data', () => rawFile('trunc.safetensors', { w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 10), /truncated/],
    [
      'overlap',
      () =>
        rawFile(
          'overlap.safetensors',
          { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } },
          12,
        ),
      /"a".*"b".*overlap/,
    ],
    ['bad metadata', () => rawFile('meta.safetensors', { __metadata__: { n: 1 } }), /__metadata__/],
  ];
  function rawFileBytes(name: string, bytes: Buffer): string {
    const file = path.join(tmp, name);
    fs.writeFileSync(file, bytes);
    return file;
  }

  for (const [what, make, pattern] of cases) {
    it(`rejects ${what}`, () => {
      const file = make();
      expect(drError(() => SafetensorsFile.open(file), file)).toMatch(pattern);
    });
  }

  it('names a missing file', () => {
    drError(() => SafetensorsFile.open(path.join(tmp, 'missing.safetensors')), 'missing.safetensors');
  });

  it('accepts empty tensors at any offset and tensors in any header order', () => {
    const file = rawFile(
      'ok.safetensors',
      {
        b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
        e: { dtype: 'F32', shape: [0], data_offsets: [2, 2] },
        a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
      },
      8,
    );
    const st = SafetensorsFile.open(file);
    expect(st.tensors.size).toBe(3);
    st.close();
  });
});
