// A/B of the elementwise and norm kernels against their previous versions, through the same shapes
// the SD models run, alternating in one process so that other load hits both alike:
//   for k in binary copy_strided group_norm layer_norm geglu to_texture; do
//     git show 6490fa2:src/engine/wgsl/$k.wgsl > dist/src/engine/wgsl/${k}_old.wgsl; done
//   node dist/bench/ab_ops.js [binary] [copy] [group_norm] [layer_norm] [geglu] [to_texture] [--rounds 3]
// `old` dispatches the *_old kernel as the op did before; `new` is the op itself. Prints ms per call,
// wall clock (best) and CPU-normalised (process CPU seconds ÷ cores ÷ calls, steady under load),
// and the largest difference between the two outputs relative to the largest value (to_texture: its
// input, the texture is not read back).
import os from 'node:os';
import { Engine } from '../src/engine/engine.js';
import { elementwiseGrid, pad8, rowWorkgroup, stridesOf, ACT } from '../src/engine/ops/common.js';
import { add, broadcast, geglu } from '../src/engine/ops/elementwise.js';
import { permute, upsampleNearest2x } from '../src/engine/ops/copy.js';
import { groupNorm, layerNorm } from '../src/engine/ops/norms.js';
import { toTexture } from '../src/engine/ops/matmul_tex.js';
import { grid } from '../src/engine/engine.js';
import type { Tensor } from '../src/engine/tensor.js';
import { fmt, measure, rand } from './timing.js';

const args = process.argv.slice(2);
const roundsAt = args.indexOf('--rounds');
const rounds = roundsAt >= 0 ? Number(args[roundsAt + 1]) : 3;
const only = args.filter((a) => !a.startsWith('--') && !/^\d+$/.test(a));
const want = (name: string): boolean => !only.length || only.includes(name);

interface Case {
  name: string;
  old: () => Tensor;
  now: () => Tensor;
}

function oldBinary(e: Engine, a: Tensor, b: Tensor): Tensor {
  const { shape, sa, sb } = broadcast(a.shape, b.shape);
  const out = e.empty(shape, a.dtype);
  const A = pad8(shape, sa);
  const B = pad8(shape, sb);
  const { workgroups, groupsX } = elementwiseGrid(out.size);
  e.run({ kernel: 'binary_old', bindings: { a, b, out }, defines: { OP: 0 },
    params: { shape: A.shape, strideA: A.strides, strideB: B.strides, n: out.size, groupsX }, workgroups });
  return out;
}

function oldCopy(e: Engine, src: Tensor, shape: number[], strides: number[]): Tensor {
  const dst = e.empty(shape, src.dtype);
  const s = pad8(shape, strides);
  const d = pad8(shape, stridesOf(shape));
  const n = dst.size;
  const { workgroups, groupsX } = elementwiseGrid(n);
  e.run({ kernel: 'copy_strided_old', bindings: { src, dst },
    params: { shape: s.shape, srcStride: s.strides, dstStride: d.strides, n, srcOff: 0, dstOff: 0, groupsX }, workgroups });
  return dst;
}

function oldGroupNorm(e: Engine, x: Tensor, w: Tensor, b: Tensor, groups: number): Tensor {
  const [N, C] = x.shape;
  const S = x.size / (N * C);
  const y = e.empty(x.shape, x.dtype);
  const stats = e.empty([N, groups, 2]);
  e.run({ kernel: 'group_norm_old', bindings: { x, gamma: w, beta: b, y, stats }, defines: { WG: rowWorkgroup((C / groups) * S, 'gpu'), ACT: ACT.silu },
    params: { C, S, groups, eps: 1e-5 }, workgroups: [groups, N] });
  return y;
}

function oldLayerNorm(e: Engine, x: Tensor, w: Tensor, b: Tensor): Tensor {
  const D = x.shape.at(-1)!;
  const rows = x.size / D;
  const y = e.empty(x.shape, x.dtype);
  const stats = e.empty([rows, 2]);
  const workgroups = grid(rows);
  e.run({ kernel: 'layer_norm_old', bindings: { x, gamma: w, beta: b, y, stats }, defines: { WG: rowWorkgroup(D, 'gpu') },
    params: { rows, D, eps: 1e-5, groupsX: workgroups[0] }, workgroups });
  return y;
}

function oldGeglu(e: Engine, x: Tensor): Tensor {
  const F = x.shape.at(-1)! / 2;
  const rows = x.size / (2 * F);
  const y = e.empty([...x.shape.slice(0, -1), F], x.dtype);
  const { workgroups, groupsX } = elementwiseGrid(rows * F);
  e.run({ kernel: 'geglu_old', bindings: { x, y }, params: { rows, F, groupsX }, workgroups });
  return y;
}

function oldToTexture(e: Engine, src: Tensor, rows: number, K: number): Tensor {
  const dst = e.texturePool.acquire(Math.ceil(K / 4), rows, 'rgba32float');
  e.run({ kernel: 'to_texture_old', bindings: { src }, textures: { dst },
    params: { rows, rowsPerItem: rows, segs: 1, segCols: K, base: 0, sItem: 0, sRow: K, sSeg: 0, sK: 1 }, workgroups: [Math.ceil(Math.ceil(K / 4) / 64), rows] });
  e.texturePool.release(dst);
  return src;
}

function newToTexture(e: Engine, src: Tensor, rows: number, K: number): Tensor {
  const dst = e.texturePool.acquire(Math.ceil(K / 4), rows, 'rgba32float');
  toTexture(e, src, dst, { rows, rowsPerItem: rows, segs: 1, segCols: K, base: 0, sItem: 0, sRow: K, sSeg: 0, sK: 1 });
  e.texturePool.release(dst);
  return src;
}

function cases(e: Engine): Case[] {
  const out: Case[] = [];
  const up = (shape: number[], seed: number) => e.keep(e.upload(rand(shape.reduce((p, d) => p * d, 1), seed), shape));
  if (want('binary')) {
    for (const [a, b] of [[[1, 64, 128, 128], [1, 64, 128, 128]], [[1, 320, 32, 32], [1, 320, 1, 1]], [[1, 1024, 320], [1, 1024, 320]]]) {
      const [ta, tb] = [up(a, 1), up(b, 2)];
      out.push({ name: `add [${a}] + [${b}]`, old: () => oldBinary(e, ta, tb), now: () => add(e, ta, tb) });
    }
  }
  if (want('copy')) {
    const x = up([1, 64, 64, 64], 3);
    const [N, C, H, W] = x.shape;
    out.push({ name: 'upsample ×2 [1,64,64,64]', old: () => oldCopy(e, x, [N * C, H, 2, W, 2], [H * W, W, 0, 1, 0]).reshape([N, C, 2 * H, 2 * W]),
      now: () => upsampleNearest2x(e, x) });
    const t = up([1, 320, 1024], 4);
    out.push({ name: 'permute [1,320,1024]→[0,2,1]', old: () => oldCopy(e, t, [1, 1024, 320], [0, 1, 1024]), now: () => permute(e, t, [0, 2, 1]) });
  }
  if (want('group_norm')) {
    for (const [shape, groups] of [[[1, 64, 128, 128], 32], [[1, 320, 32, 32], 32], [[1, 1280, 8, 8], 32]] as [number[], number][]) {
      const x = up(shape, 5);
      const w = up([shape[1]], 6);
      const b = up([shape[1]], 7);
      out.push({ name: `group_norm+silu [${shape}] /${groups}`, old: () => oldGroupNorm(e, x, w, b, groups), now: () => groupNorm(e, x, w, b, groups, 1e-5, 'silu') });
    }
  }
  if (want('layer_norm')) {
    for (const shape of [[1, 1024, 32], [1, 1024, 320], [1, 64, 1280]]) {
      const x = up(shape, 8);
      const D = shape.at(-1)!;
      const w = up([D], 9);
      const b = up([D], 10);
      out.push({ name: `layer_norm [${shape}]`, old: () => oldLayerNorm(e, x, w, b), now: () => layerNorm(e, x, w, b, 1e-5) });
    }
  }
  if (want('geglu')) {
    for (const shape of [[1, 1024, 256], [1, 1024, 2560], [1, 64, 10240]]) {
      const x = up(shape, 11);
      out.push({ name: `geglu [${shape}]`, old: () => oldGeglu(e, x), now: () => geglu(e, x) });
    }
  }
  if (want('to_texture')) {
    // Matmul operands as the CPU path copies them (K not a multiple of 64: no copyBufferToTexture).
    for (const [rows, K] of [[1024, 32], [1024, 320], [4096, 40]]) {
      const x = up([rows, K], 12);
      out.push({ name: `to_texture [${rows}, ${K}]`, old: () => oldToTexture(e, x, rows, K), now: () => newToTexture(e, x, rows, K) });
    }
  }
  return out;
}

async function main(): Promise<void> {
  const e = await Engine.create();
  const cores = os.cpus().length;
  console.log(`kernel path ${e.kernels.path}; ${cores} cores; load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  for (const c of cases(e)) {
    const [o, n] = [await e.read(e.keep(c.old())), await e.read(e.keep(c.now()))];
    let err = 0;
    let scale = 0;
    for (let i = 0; i < o.length; i++) {
      err = Math.max(err, Math.abs(o[i] - n[i]));
      scale = Math.max(scale, Math.abs(o[i]));
    }
    const wall = { old: Infinity, now: Infinity };
    const cpu = { old: Infinity, now: Infinity };
    for (let r = 0; r < rounds; r++) {
      for (const v of ['old', 'now'] as const) {
        const c0 = process.cpuUsage();
        const t = await measure(e, c[v], { minSeconds: 0.3, reps: 2 });
        const used = process.cpuUsage(c0);
        wall[v] = Math.min(wall[v], t.gpuBest ?? t.best);
        cpu[v] = Math.min(cpu[v], (used.user + used.system) / 1e6 / cores / (2 + t.iters));
      }
    }
    console.log(`${c.name.padEnd(36)} old ${fmt(wall.old * 1e3, 2)} ms (${fmt(cpu.old * 1e3, 2)} cpu-norm)  new ${fmt(wall.now * 1e3, 2)} ms (${fmt(cpu.now * 1e3, 2)} cpu-norm)` +
      `  ×${fmt(wall.old / wall.now, 2)} (×${fmt(cpu.old / cpu.now, 2)})  max|diff|/max ${(err / (scale || 1)).toExponential(1)}`);
  }
}

main().then(() => process.exit(0), (err: unknown) => {
  console.error(err);
  process.exit(1);
});
