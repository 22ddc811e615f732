// A/B of the two kernel paths (src/engine/kernels.ts) through the ops themselves, alternating in
// one process so that other load on the machine hits both alike:
//   node dist/bench/ab_kernels.js [matmul] [conv] [attention] [unet] [f16] [--rounds 3] [--quick]
// Linear products x[M, K] · W[N, K]ᵀ and SD-sized 3×3 convolutions (padding 1), with W a weight
// (its texture made once, as in a model); each call on the CPU path includes copying the
// activation into a texture. `attention`: multi-head softmax(QKᵀ/√d)·V on [1, L, heads·d]
// operands (SD's self- and cross-attention, CLIP-L's vision tower), 4·heads·Lq·Lk·d FLOP.
// `unet`: one step of the sd-tiny fixture UNet at 32×32 latents (ms; small channel counts, so
// most of its time is attention, norms and elementwise kernels). Prints wall-clock GFLOP/s (GPU
// timestamps, which are the CPU clock on lavapipe) and CPU-normalised GFLOP/s: FLOP ÷ (process
// CPU seconds ÷ cores), which holds steady when other jobs take cores away.
// `openblas`: each round of a Linear case also times OpenBLAS's cblas_sgemm at the same shape in a
// child process on as many threads as cores (bench/openblas.ts; f32; built with gcc on first use when
// libopenblas-dev is installed) and prints our fraction of it.
import os from 'node:os';
import { Engine } from '../src/engine/engine.js';
import { chooseKernels, adapterTraits, type KernelPath } from '../src/engine/kernels.js';
import { matmul } from '../src/engine/ops/matmul.js';
import { conv2d } from '../src/engine/ops/conv2d.js';
import { attention } from '../src/engine/ops/attention.js';
import type { Tensor } from '../src/engine/tensor.js';
import { f32ToF16Bits } from '../src/engine/half.js';
import { UNet2DConditionModel } from '../src/graph/sd/unet.js';
import path from 'node:path';
import { SD_TINY_DIR } from './sd.js';
import { openblasBinary, openblasSgemm, type BlasResult } from './openblas.js';
import { adapterInfo, fmt, measure, rand } from './timing.js';

const args = process.argv.slice(2);
const roundsAt = args.indexOf('--rounds');
const rounds = roundsAt >= 0 ? Number(args[roundsAt + 1]) : 3;
const quick = args.includes('--quick');
// f16: activations and weights in f16 (the CPU path then packs 8 halves per texel), f32 accumulation.
const dtype = args.includes('f16') ? 'f16' : 'f32';
const weightBytes = (v: Float32Array): Uint8Array => new Uint8Array(dtype === 'f16' ? Uint16Array.from(v, f32ToF16Bits).buffer : v.buffer);
const ops = args.filter((a) => a === 'matmul' || a === 'conv' || a === 'attention' || a === 'unet');
const MATMULS: [number, number, number][] = quick ? [[256, 320, 320]]
  : [[1024, 1024, 1024], [256, 320, 320], [4096, 320, 320], [257, 1024, 4096]];
// [channels in, side, channels out]: SD 1.5 UNet levels at 16×16 latents (128² images), and a 128-channel level at 64².
const CONVS: [number, number, number][] = quick ? [[320, 16, 320]]
  : [[320, 16, 320], [640, 8, 640], [1280, 4, 1280], [128, 64, 128]];
// [Lq, Lk, heads, head size]: SD 1.5's first level at 32² and 64² latents (self), its cross-attention
// to 77 tokens, CLIP-L/14's vision tower (257 tokens, 16 heads of 64).
const ATTENTIONS: [number, number, number, number][] = quick ? [[1024, 1024, 8, 40]]
  : [[1024, 1024, 8, 40], [1024, 77, 8, 40], [257, 257, 16, 64], [4096, 4096, 8, 40]];

interface Case {
  name: string;
  flops: number;
  step: () => Tensor;
  /** A Linear's [M, K, N], for the OpenBLAS reference. */
  gemm?: [number, number, number];
}

function cases(e: Engine): Case[] {
  const out: Case[] = [];
  if (!ops.length || ops.includes('matmul')) {
    for (const [M, K, N] of MATMULS) {
      const x = e.keep(e.upload(rand(M * K, 1), [M, K], dtype));
      const w = e.createWeight(weightBytes(rand(N * K, 2, 0.05)), [N, K], dtype);
      out.push({ name: `linear ${M}×${K}×${N}`, flops: 2 * M * N * K, step: () => matmul(e, x, w, { transB: true }), gemm: [M, K, N] });
    }
  }
  if (!ops.length || ops.includes('conv')) {
    for (const [Cin, S, Cout] of CONVS) {
      const x = e.keep(e.upload(rand(Cin * S * S, 3), [1, Cin, S, S], dtype));
      const w = e.createWeight(weightBytes(rand(Cout * Cin * 9, 4, 0.05)), [Cout, Cin, 3, 3], dtype);
      out.push({ name: `conv ${Cin}→${Cout} 3×3 @${S}²`, flops: 2 * Cout * Cin * 9 * S * S, step: () => conv2d(e, x, w, { padding: 1 }) });
    }
  }
  if (ops.includes('attention')) {
    for (const [Lq, Lk, heads, d] of ATTENTIONS) {
      const [q, k, v] = [[Lq, 5], [Lk, 6], [Lk, 7]].map(([L, seed]) => e.keep(e.upload(rand(L * heads * d, seed), [1, L, heads * d], dtype)));
      out.push({ name: `attention ${Lq}×${Lk} ${heads}×${d}`, flops: 4 * heads * Lq * Lk * d, step: () => attention(e, q, k, v, { heads }) });
    }
  }
  if (ops.includes('unet')) {
    const unet = UNet2DConditionModel.load(e, path.join(SD_TINY_DIR, 'unet'), dtype);
    const sample = e.keep(e.upload(rand(4 * 32 * 32, 11), [1, 4, 32, 32], dtype));
    const context = e.keep(e.upload(rand(77 * unet.config.crossAttentionDim, 12), [1, 77, unet.config.crossAttentionDim], dtype));
    out.push({ name: 'sd-tiny UNet step 32×32', flops: 0, step: () => unet.forward(e, sample, 500, context) });
  }
  return out;
}

async function main(): Promise<void> {
  const e = await Engine.create();
  const traits = adapterTraits(e.gpu);
  const paths: KernelPath[] = ['gpu', 'cpu'];
  const cores = os.cpus().length;
  const a = adapterInfo(e);
  console.log(`${dtype}; adapter ${a.name} (${a.description}); ${cores} cores; load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  const blas = args.includes('openblas') ? openblasBinary() : {};
  if (blas.why) console.log(`OpenBLAS left out: ${blas.why}`);
  if (blas.binary && dtype === 'f16') console.log('OpenBLAS left out: it has no f16 sgemm');
  const blasBinary = dtype === 'f32' ? blas.binary : undefined;
  for (const { name, flops, step, gemm } of cases(e)) {
    const outs: Float32Array[] = [];
    for (const p of paths) {
      e.kernels = chooseKernels(traits, p);
      outs.push(await e.read(e.keep(step())));
    }
    let err = 0;
    let scale = 0;
    for (let i = 0; i < outs[0].length; i++) {
      err = Math.max(err, Math.abs(outs[0][i] - outs[1][i]));
      scale = Math.max(scale, Math.abs(outs[0][i]));
    }
    const wall = new Map<KernelPath, number>();
    const cpu = new Map<KernelPath, number>();
    let best: BlasResult | undefined;
    for (let r = 0; r < rounds; r++) {
      if (blasBinary && gemm) {
        const b = openblasSgemm(blasBinary, ...gemm, cores);
        best = { gflops: Math.max(best?.gflops ?? 0, b.gflops), cpuNormGflops: Math.max(best?.cpuNormGflops ?? 0, b.cpuNormGflops) };
      }
      for (const p of paths) {
        e.kernels = chooseKernels(traits, p);
        const c0 = process.cpuUsage();
        const t = await measure(e, step, { minSeconds: 0.5, reps: 2 });
        const c = process.cpuUsage(c0);
        const calls = 2 + t.iters; // warm-up, first, then one repetition of iters
        const work = flops || 1e6; // a model step: 1e6 / 1e9 per second, i.e. calls per ms
        wall.set(p, Math.max(wall.get(p) ?? 0, work / (t.gpuBest ?? t.best) / 1e9));
        cpu.set(p, Math.max(cpu.get(p) ?? 0, (work * calls) / ((c.user + c.system) / 1e6 / cores) / 1e9));
      }
    }
    if (!flops) {
      // A model step: milliseconds (wall is the best of the timed calls; CPU ms per call, normalised).
      console.log(name.padEnd(26) + paths.map((p) => `${p} ${fmt(1 / wall.get(p)!, 0)} ms (${fmt(1 / cpu.get(p)!, 0)} cpu-norm)`).join('  ') +
        `  cpu/gpu speed ×${fmt(wall.get('cpu')! / wall.get('gpu')!, 2)} (×${fmt(cpu.get('cpu')! / cpu.get('gpu')!, 2)})  max|diff|/max ${(err / scale).toExponential(1)}`);
      continue;
    }
    const ratio = (m: Map<KernelPath, number>) => `×${fmt(m.get('cpu')! / m.get('gpu')!, 2)}`;
    console.log(name.padEnd(26) +
      paths.map((p) => `${p} ${fmt(wall.get(p), 1)} (${fmt(cpu.get(p), 1)} cpu-norm)`).join('  ') +
      `  cpu/gpu ${ratio(wall)} (${ratio(cpu)})  max|diff|/max ${(err / scale).toExponential(1)}`);
    if (best) {
      const of = (p: KernelPath) => `${p} ×${fmt(wall.get(p)! / best.gflops, 3)} (×${fmt(cpu.get(p)! / best.cpuNormGflops, 3)})`;
      console.log(`${''.padEnd(26)}openblas ${fmt(best.gflops, 1)} (${fmt(best.cpuNormGflops, 1)} cpu-norm)  fraction of OpenBLAS: ${of('gpu')}  ${of('cpu')}`);
    }
  }
  console.log(`load average after: ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
}

main().then(() => process.exit(0), (err: unknown) => {
  console.error(err);
  process.exit(1);
});
