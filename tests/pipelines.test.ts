// A first run's time is mostly the driver compiling each distinct compute pipeline (26 s against
// 2.5 s warm on the tiny models, issue 12), so what only selects a branch (activation, bias,
// binary op, number of terms) is a uniform, not a define: every variant of an op reuses the
// pipeline its first call built. Runs on the kernel path DR_KERNELS selects (both are tested).
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import { linear } from '../src/engine/ops/matmul.js';
import { conv2d } from '../src/engine/ops/conv2d.js';
import { groupNorm } from '../src/engine/ops/norms.js';
import { add, div, gelu, leakyRelu, mul, scale, sigmoid, silu, sub } from '../src/engine/ops/elementwise.js';
import { linearCombination } from '../src/engine/ops/linear_combination.js';
import type { Tensor } from '../src/engine/tensor.js';
import { expectClose, rand } from './helpers.js';
import { conv2dRef, groupNormRef, matmulRef, siluRef } from './reference.js';

let e: Engine;
beforeAll(async () => {
  e = await Engine.create();
});

describe('pipelines', () => {
  it('every activation, bias, binary op and term count of an op reuses one pipeline', async () => {
    const x = e.upload(rand(5 * 24, 1), [5, 24]);
    const w = e.upload(rand(16 * 24, 2), [16, 24]);
    const bias = e.upload(rand(16, 3), [16]);
    const img = e.upload(rand(2 * 8 * 6 * 6, 4), [2, 8, 6, 6]);
    const cw = e.upload(rand(8 * 8 * 9, 5), [8, 8, 3, 3]);
    const cb = e.upload(rand(8, 6), [8]);
    const gamma = e.upload(rand(8, 7), [8]);
    const beta = e.upload(rand(8, 8), [8]);
    const first = (): Tensor[] => [
      linear(e, x, w, bias), conv2d(e, img, cw, { bias: cb, padding: 1 }), groupNorm(e, img, gamma, beta, 4, 1e-5),
      gelu(e, x), add(e, x, x), linearCombination(e, [[0.5, x], [2, x]]),
    ];
    const variants = (): Tensor[] => [
      linear(e, x, w), linear(e, x, w, bias, 'gelu'), linear(e, x, w, undefined, 'silu'), linear(e, x, w, bias, 'quick_gelu'),
      conv2d(e, img, cw, { padding: 1 }), conv2d(e, img, cw, { bias: cb, padding: 1, act: 'silu' }),
      groupNorm(e, img, gamma, beta, 4, 1e-5, 'silu'),
      silu(e, x), sigmoid(e, x), leakyRelu(e, x, 0.2), scale(e, x, 3, 1),
      sub(e, x, x), mul(e, x, x), div(e, x, x),
      linearCombination(e, [[1, x]]), linearCombination(e, [[1, x], [2, x], [3, x]]), linearCombination(e, [[1, x], [2, x], [3, x], [4, x]]),
    ];
    e.tidy(first);
    const built = e.counters.pipelines;
    expect(built).toBeGreaterThan(0);
    const outs = e.tidy(() => variants().map((t) => e.keep(t)));
    // The old defines built a pipeline per variant: 4 linear, 2 conv, 1 group norm, 4 unary,
    // 3 binary and 3 linear-combination ones (17) on top of `built` (24 against 7 on the CPU path).
    expect(e.counters.pipelines).toBe(built);
    expect(e.counters.pipelineMs).toBeGreaterThan(0);

    // The shared pipelines compute each variant: spot checks against the f64 references.
    const [xs, ws, imgs, cws, cbs, gs, bts] = [rand(5 * 24, 1), rand(16 * 24, 2), rand(2 * 8 * 6 * 6, 4), rand(8 * 8 * 9, 5), rand(8, 6), rand(8, 7), rand(8, 8)];
    const mm = matmulRef(xs, ws, 1, 5, 24, 16, { transB: true });
    expectClose(await e.read(outs[0]), mm);
    expectClose(await e.read(outs[2]), matmulRef(xs, ws, 1, 5, 24, 16, { transB: true, act: siluRef }));
    const conv = conv2dRef(imgs, cws, cbs, [2, 8, 6, 6], [8, 8, 3, 3], 1, 1).y;
    expectClose(await e.read(outs[5]), conv.map(siluRef));
    expectClose(await e.read(outs[6]), groupNormRef(imgs, 2, 8, 36, 4, gs, bts, 1e-5, siluRef));
    expectClose(await e.read(outs[11]), new Float32Array(xs.length));
    expectClose(await e.read(outs[16]), xs.map((v) => 10 * v));
    for (const t of [...outs, x, w, bias, img, cw, cb, gamma, beta]) e.release(t);
  });

  it('DR_LOG_PIPELINES=1 lists each pipeline once, as it is built, with its build time', async () => {
    const fresh = await Engine.create();
    const lines: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((s) => (lines.push(String(s)), true));
    process.env.DR_LOG_PIPELINES = '1';
    try {
      const x = fresh.upload(rand(10, 1), [10]);
      await fresh.read(fresh.tidy(() => fresh.keep(silu(fresh, gelu(fresh, x)))));
    } finally {
      delete process.env.DR_LOG_PIPELINES;
      spy.mockRestore();
    }
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^pipeline \d+ ms unary\|x:f32,y:f32\|/);
  });
});
