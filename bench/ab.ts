// A/B timing of kernel variants (for tuning): the same dispatch as the op, with the
// WGSL file swapped, alternating variants in one process so that other load on the
// machine hits both alike; each variant's output is checked against the first's.
//   node dist/bench/ab.js matmul matmul_v1 matmul [f16] [--reps 3]
//   node dist/bench/ab.js conv conv2d_v1 conv2d
//   node dist/bench/ab.js attention attention_v1 attention
// Variants are WGSL files in dist/src/engine/wgsl (e.g. an old version from git show).
import { Engine } from '../src/engine/engine.js';
import type { DType, Tensor } from '../src/engine/tensor.js';
import { fmt, measure, rand } from './timing.js';

const [op, ...rest] = process.argv.slice(2);
const variants = rest.filter((a) => !a.startsWith('--') && !/^\d+$/.test(a) && a !== 'f16' && a !== 'f32');
const dtype: DType = rest.includes('f16') ? 'f16' : 'f32';
const repsAt = rest.indexOf('--reps');
const rounds = repsAt >= 0 ? Number(rest[repsAt + 1]) : 3;

interface Case {
  name: string;
  flops: number;
  inputs: Tensor[];
  run: (kernel: string) => Tensor;
}

function matmulCase(e: Engine, M: number, K: number, N: number, transB: boolean, wg: (M: number, N: number) => [number, number] = (m, n) => [Math.ceil(n / 64), Math.ceil(m / 64)]): Case {
  const a = e.upload(rand(M * K, 1), [M, K], dtype);
  const b = e.upload(rand(K * N, 2, 0.05), transB ? [N, K] : [K, N], dtype);
  const bias = e.upload(rand(N, 3), [N], dtype);
  return {
    name: `matmul ${M}×${K}·${K}×${N}${transB ? 'ᵀ' : ''}`,
    flops: 2 * M * N * K,
    inputs: [a, b, bias],
    run: (kernel) => {
      const out = e.empty([M, N], dtype);
      const [x, y] = wg(M, N);
      e.run({ kernel, bindings: { a, b, bias, c: out }, defines: { TRANS_B: transB },
        params: { M, N, K, strideA: M * K, strideB: 0, strideC: M * N, alpha: 0, hasBias: 1, act: 0 }, workgroups: [x, y, 1] });
      return out;
    },
  };
}

function convCase(e: Engine, Cin: number, S: number, Cout: number, k: number, stride = 1): Case {
  const pad = Math.floor(k / 2);
  const Ho = Math.floor((S + 2 * pad - k) / stride) + 1;
  const x = e.upload(rand(Cin * S * S, 4), [1, Cin, S, S], dtype);
  const w = e.upload(rand(Cout * Cin * k * k, 5, 0.05), [Cout, Cin, k, k], dtype);
  const bias = e.upload(rand(Cout, 6), [Cout], dtype);
  return {
    name: `conv ${Cin}→${Cout} ${k}×${k} s${stride} @${S}²`,
    flops: 2 * Cout * Cin * k * k * Ho * Ho,
    inputs: [x, w, bias],
    run: (kernel) => {
      const y = e.empty([1, Cout, Ho, Ho], dtype);
      e.run({ kernel, bindings: { x, w, bias, y }, params: { Cin, H: S, W: S, Cout, Ho, Wo: Ho, KH: k, KW: k, strideH: stride, strideW: stride, padH: pad, padW: pad, alpha: 0, hasBias: 1, act: 0 },
        workgroups: [Math.ceil((Ho * Ho) / 64), Math.ceil(Cout / 64), 1] });
      return y;
    },
  };
}

/** Self- (Lk = Lq) or cross-attention of [B, L, heads·d] projections, as the attention op dispatches it. */
function attentionCase(e: Engine, B: number, Lq: number, Lk: number, heads: number, d: number): Case {
  const W = heads * d;
  const q = e.upload(rand(B * Lq * W, 7), [B, Lq, W], dtype);
  const k = e.upload(rand(B * Lk * W, 8), [B, Lk, W], dtype);
  const v = e.upload(rand(B * Lk * W, 9), [B, Lk, W], dtype);
  return {
    name: `attention B${B} ${Lq}×${Lk} h${heads} d${d}`,
    flops: 4 * B * heads * Lq * Lk * d,
    inputs: [q, k, v],
    run: (kernel) => {
      const o = e.empty([B, Lq, W], dtype);
      e.run({ kernel, bindings: { q, k, v, o },
        defines: { HEAD_DIM: d, KEYS: Math.max(1, Math.min(64, Math.floor(2048 / d))), CAUSAL: false },
        params: { heads, Lq, Lk, qStride: W, kStride: W, vStride: W, qOff: 0, kOff: 0, vOff: 0, scale: 1 / Math.sqrt(d) },
        workgroups: [Math.ceil(Lq / 64), heads, B] });
      return o;
    },
  };
}

async function main(): Promise<void> {
  const e = await Engine.create();
  const cases: Case[] = op === 'attention'
    ? [attentionCase(e, 2, 1024, 1024, 8, 40), attentionCase(e, 2, 1024, 77, 8, 40), attentionCase(e, 1, 1024, 1024, 8, 64), attentionCase(e, 1, 257, 257, 16, 64), attentionCase(e, 1, 256, 256, 1, 512)]
    : op === 'matmul'
    ? [matmulCase(e, 131, 127, 129, true), matmulCase(e, 512, 512, 512, false), matmulCase(e, 1024, 1024, 1024, false), matmulCase(e, 256, 320, 2560, true), matmulCase(e, 257, 1024, 4096, true)]
    : [convCase(e, 17, 19, 23, 3), convCase(e, 320, 16, 320, 3), convCase(e, 640, 8, 640, 3), convCase(e, 128, 64, 128, 3), convCase(e, 320, 16, 320, 3, 2), convCase(e, 320, 16, 320, 1)];
  for (const c of cases) {
    const ref = await e.read(e.keep(c.run(variants[0])));
    const best = new Map<string, number>();
    for (const v of variants) {
      const got = await e.read(e.keep(c.run(v)));
      let err = 0;
      let scale = 0;
      for (let i = 0; i < ref.length; i++) {
        err = Math.max(err, Math.abs(got[i] - ref[i]));
        scale = Math.max(scale, Math.abs(ref[i]));
      }
      if (!(err <= 1e-3 * Math.max(1, scale))) console.log(`  ${v}: WRONG on ${c.name}: max |diff| ${err} (scale ${scale})`);
    }
    for (let r = 0; r < rounds; r++) {
      for (const v of variants) {
        const t = await measure(e, () => c.run(v), { minSeconds: 0.3, reps: 2 });
        const s = t.gpuBest ?? t.best;
        best.set(v, Math.min(best.get(v) ?? Infinity, s));
      }
    }
    console.log(`${c.name.padEnd(32)} ${dtype} ` + variants.map((v) => `${v} ${fmt(c.flops / best.get(v)! / 1e9, 2)} GFLOP/s`).join('  '));
  }
}

main().then(() => process.exit(0), (err: unknown) => {
  console.error(err);
  process.exit(1);
});
