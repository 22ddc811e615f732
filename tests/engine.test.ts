// The engine's by-name dispatch contract: bindings and uniforms are checked against the
// kernel's own `@binding`s and `struct Params`, includes expand once, cast is a no-op
// on a matching dtype.
import { readdirSync, readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import { expandIncludes, parseInterface } from '../src/engine/kernel_source.js';
import { cast } from '../src/engine/ops/copy.js';
import { add, relu, rsqrt, scale, silu, sqrt } from '../src/engine/ops/elementwise.js';
import { elementwiseGrid } from '../src/engine/ops/common.js';
import { REPO, expectClose, rand } from './helpers.js';

let e: Engine;
beforeAll(async () => {
  e = await Engine.create();
});

const WGSL = `${REPO}/src/engine/wgsl`;

describe('kernel interface', () => {
  it('every kernel in src/engine/wgsl parses: bindings 1..n (buffers, then textures) and a supported struct Params', () => {
    const files = readdirSync(WGSL).filter((f) => f.endsWith('.wgsl')).map((f) => f.slice(0, -5));
    const read = (name: string): string => readFileSync(`${WGSL}/${name}.wgsl`, 'utf8');
    for (const kernel of files) {
      const src = expandIncludes(kernel, read);
      if (!/@compute/.test(src)) continue; // a helper
      const iface = parseInterface(kernel, src);
      expect(iface.bindings.length + iface.textures.length, kernel).toBeGreaterThan(0);
    }
  });

  it('lays out scalars and array<vec4> fields at WGSL uniform offsets', () => {
    const iface = parseInterface('t', `
      struct Params {
        a: u32,
        shape: array<vec4<u32>, 2>, // 16-aligned
        s: f32, k: i32,
      }
      @group(0) @binding(0) var<uniform> p: Params;
      @group(0) @binding(1) var<storage, read> x: array<TX>;
      @group(0) @binding(2) var<storage, read_write> ids: array<i32>;`);
    expect(iface.params).toEqual([
      { name: 'a', kind: 'u32', count: 1, offset: 0 },
      { name: 'shape', kind: 'u32', count: 8, offset: 16 },
      { name: 's', kind: 'f32', count: 1, offset: 48 },
      { name: 'k', kind: 'i32', count: 1, offset: 52 },
    ]);
    expect(iface.paramBytes).toBe(64);
    expect(iface.bindings.map((b) => `${b.binding}:${b.name}:${b.elem}`)).toEqual(['1:x:TX', '2:ids:i32']);
  });

  it('rejects an element-type alias that collides with a constant (k: array<TK> beside const TK)', () => {
    const src = `const TK = 16u;
      @group(0) @binding(1) var<storage, read> k: array<TK>;`;
    expect(() => parseInterface('attn', src)).toThrow(/attn\.wgsl: element type TK of binding k collides/);
  });

  it('rejects gaps in binding numbers and unsupported Params fields', () => {
    expect(() => parseInterface('g', '@group(0) @binding(2) var<storage, read> x: array<TX>;')).toThrow(/g\.wgsl: .*@binding\(2\) x/);
    expect(() => parseInterface('m', 'struct Params { m: mat2x2<f32> }')).toThrow(/m\.wgsl: unsupported struct Params field/);
  });

  it('//!include pastes each helper once (a diamond) and rejects cycles', () => {
    const files: Record<string, string> = {
      top: '//!include left.wgsl\n//!include right.wgsl\nfn main() {}',
      left: '//!include shared.wgsl\nfn left() {}',
      right: '//!include shared.wgsl\nfn right() {}',
      shared: 'fn shared() {}',
      a: '//!include b.wgsl',
      b: '//!include a.wgsl',
    };
    const out = expandIncludes('top', (n) => files[n]);
    expect(out.match(/fn shared\(\)/g)).toHaveLength(1);
    expect(out).toMatch(/fn left[\s\S]*fn right[\s\S]*fn main/);
    expect(() => expandIncludes('a', (n) => files[n])).toThrow('wgsl include cycle: a → b → a');
  });
});

describe('kernel profiler (DR_PROFILE)', () => {
  it('times every dispatch and sums them per kernel and per kernel with its defines', async () => {
    const p = await Engine.create({ profile: true });
    const x = p.upload(rand(5000, 3), [5000]);
    const y = p.tidy(() => p.keep(add(p, silu(p, x), scale(p, x, 2))));
    await p.read(y);
    await p.profiler!.settle();
    const { kernels, variants, unread } = p.profiler!.rows();
    expect(unread).toBe(0);
    expect(kernels.map((k) => [k.kernel, k.calls]).sort()).toEqual([['binary', 1], ['unary', 2]]);
    expect(variants.map((k) => [k.kernel, k.calls]).sort()).toEqual([['binary|RANK=2', 1], ['unary|', 2]]);
    for (const k of kernels) expect(k.ms).toBeGreaterThan(0);
    p.profiler!.reset();
    expect(p.profiler!.rows().kernels).toEqual([]);
  });
});

describe('dispatch by name', () => {
  const n = 300;
  const a = rand(n, 1);
  const b = rand(n, 2);
  const binaryParams = (size: number) => {
    const one = [1, 1, 1, 1, 1, 1, 1, size];
    const strides = [0, 0, 0, 0, 0, 0, 0, 1];
    return { shape: one, strideA: strides, strideB: strides, n: size, groupsX: elementwiseGrid(size).groupsX, op: 1 };
  };

  it('binds by the kernel variable names, whatever the order of the object', async () => {
    const [ta, tb] = [e.upload(a, [n]), e.upload(b, [n])];
    const out = e.empty([n]);
    // op 1 is a − b: binding b first must not swap the operands.
    e.run({ kernel: 'binary', bindings: { out, b: tb, a: ta }, defines: { RANK: 1 }, params: binaryParams(n), workgroups: elementwiseGrid(n).workgroups });
    expect(Array.from(await e.read(out))).toEqual(Array.from(a, (v, i) => Math.fround(v - b[i])));
  });

  it('a missing, misnamed or extra binding, or a wrong dtype for a typed binding, is an Error naming kernel and binding', () => {
    const [ta, tb, out] = [e.upload(a, [n]), e.upload(b, [n]), e.empty([n])];
    const run = (bindings: Record<string, typeof ta>) => () =>
      e.run({ kernel: 'binary', bindings, defines: { RANK: 1 }, params: binaryParams(n), workgroups: [1] });
    expect(run({ a: ta, out })).toThrow('binary: binding b missing (the kernel binds a, b, out)');
    expect(run({ A: ta, b: tb, out })).toThrow('binary: binding a missing');
    expect(run({ a: ta, b: tb, out, c: tb })).toThrow('binary: no binding named c');
    const ids = e.upload(Float32Array.from([0]), [1]);
    expect(() => e.run({
      kernel: 'gather_rows', bindings: { ids, table: ta.reshape([n, 1]), out },
      params: { rows: 1, D: 1, firstRow: 0, chunkRows: n, groupsX: 1 }, workgroups: [1],
    })).toThrow('gather_rows: binding ids is array<i32>, given f32');
  });

  it('a missing, extra or ill-typed uniform is an Error naming kernel and field', () => {
    const [ta, tb, out] = [e.upload(a, [n]), e.upload(b, [n]), e.empty([n])];
    const run = (params: Record<string, number | number[]>) => () =>
      e.run({ kernel: 'binary', bindings: { a: ta, b: tb, out }, defines: { RANK: 1 }, params, workgroups: [1] });
    const noGroups: Record<string, number | number[]> = binaryParams(n);
    delete noGroups.groupsX;
    expect(run(noGroups)).toThrow('binary: param groupsX missing');
    expect(run({ ...binaryParams(n), scale: 2 })).toThrow('binary: no param named scale in struct Params');
    expect(run({ ...binaryParams(n), n: -1 })).toThrow('binary: param n = -1 is not a u32');
    expect(run({ ...binaryParams(n), n: 2.5 })).toThrow('binary: param n = 2.5 is not a u32');
    expect(run({ ...binaryParams(n), shape: [1, 2, 3] })).toThrow('binary: param shape holds 8 value(s), given [1,2,3]');
    expect(run({ ...binaryParams(n), groupsX: [1] })).toThrow('binary: param groupsX holds 1 value(s)');
  });
});

describe('tidy', () => {
  it('releases what its scope created when fn throws (a failed forward leaks nothing)', () => {
    const before = e.pool.stats.inUseBytes;
    expect(() => e.tidy(() => {
      e.tidy(() => e.empty([1000]));
      e.empty([300]);
      throw new Error('bad input');
    })).toThrow('bad input');
    expect(e.pool.stats.inUseBytes).toBe(before);
  });
});

describe('ops added with the by-name API', () => {
  it('cast returns its input when the dtype already matches', () => {
    const t = e.upload(rand(5, 3), [5]);
    expect(cast(e, t, 'f32')).toBe(t);
    expect(cast(e, t, 'f16')).not.toBe(t);
  });

  it('relu, sqrt, rsqrt', async () => {
    const x = rand(1000, 4, 3);
    const pos = Float32Array.from(x, (v) => Math.abs(v) + 0.01);
    expect(Array.from(await e.read(relu(e, e.upload(x, [1000]))))).toEqual(Array.from(x, (v) => Math.max(v, 0)));
    // WGSL's sqrt/inverseSqrt: a few ulp (Vulkan allows 2.5 ulp for inverseSqrt).
    expectClose(await e.read(sqrt(e, e.upload(pos, [1000]))), Array.from(pos, Math.sqrt), 1e-6, 0);
    expectClose(await e.read(rsqrt(e, e.upload(pos, [1000]))), Array.from(pos, (v) => 1 / Math.sqrt(v)), 1e-6, 0);
  });
});
