// Engine benchmarks: matmul and conv2d throughput, CLIP-L forward passes (random weights).
//
//   npm run bench                       # build, then everything at the default sizes
//   node dist/bench/run.js --quick      # small sizes only (smoke test, seconds)
//   node dist/bench/run.js --only matmul|conv|clip [--full] [--json]
//
// --full adds sizes that take minutes on a software GPU (lavapipe) but are the ones
// that matter on real GPUs. --json prints one JSON document instead of tables.
import os from 'node:os';
import { Engine } from '../src/engine/engine.js';
import { conv2d } from '../src/engine/ops/conv2d.js';
import { matmul } from '../src/engine/ops/matmul.js';
import type { DType } from '../src/engine/tensor.js';
import { ClipModel } from '../src/graph/clip/model.js';
import { CLIP_L, CLIP_TINY, freeTower, randomTokens, randomizeTower } from './clip.js';
import { measure, rand, type Timing } from './timing.js';

type Section = 'matmul' | 'conv' | 'clip';
const SECTIONS: Section[] = ['matmul', 'conv', 'clip'];

interface Options {
  quick: boolean;
  full: boolean;
  json: boolean;
  only?: Section;
  noText: boolean;
}

const USAGE = `usage: node dist/bench/run.js [--quick | --full] [--only matmul|conv|clip] [--no-text] [--json]
  --quick      small sizes only (smoke test)
  --full       add the large sizes (minutes on a software GPU)
  --only S     run one section: matmul, conv or clip
  --no-text    skip the CLIP text-tower forward
  --json       print machine-readable results instead of tables`;

function parseArgs(argv: string[]): Options {
  const o: Options = { quick: false, full: false, json: false, noText: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') o.quick = true;
    else if (a === '--full') o.full = true;
    else if (a === '--json') o.json = true;
    else if (a === '--no-text') o.noText = true;
    else if (a === '--only' || a.startsWith('--only=')) {
      const v = a.includes('=') ? a.slice(7) : argv[++i];
      if (!SECTIONS.includes(v as Section)) fail(`--only takes ${SECTIONS.join('|')}, got ${v ?? 'nothing'}`);
      o.only = v as Section;
    } else if (a === '--help' || a === '-h') {
      console.log(USAGE);
      process.exit(0);
    } else fail(`unknown argument ${a}`);
  }
  if (o.quick && o.full) fail('--quick and --full exclude each other');
  return o;
}

function fail(message: string): never {
  console.error(`${message}\n${USAGE}`);
  process.exit(2);
}

// ---- results -----------------------------------------------------------------

interface KernelResult {
  section: 'matmul' | 'conv';
  name: string;
  shape: string;
  dtype: string;
  gflop: number;
  bestMs: number;
  medianMs: number;
  gflops: number;
  iters: number;
  reps: number;
}

interface ClipResult {
  section: 'clip';
  name: string;
  batch: number;
  bestMs: number;
  medianMs: number;
  msPerItem: number;
  reps: number;
  weightMiB: number;
  peakMiB: number;
  dispatches: number;
}

type Result = KernelResult | ClipResult;

const MiB = 2 ** 20;
const log = (opts: Options, line: string): void => {
  if (!opts.json) console.log(line);
  else console.error(line);
};

function kernelResult(section: KernelResult['section'], name: string, shape: string, dtype: string, flops: number, t: Timing): KernelResult {
  return {
    section, name, shape, dtype,
    gflop: flops / 1e9,
    bestMs: t.best * 1e3,
    medianMs: t.median * 1e3,
    gflops: flops / t.best / 1e9,
    iters: t.iters,
    reps: t.reps,
  };
}

// ---- matmul ----------------------------------------------------------------------

interface MatmulCase {
  name: string;
  M: number;
  K: number;
  N: number;
  transB: boolean;
  weight: DType;
}

function matmulCases(o: Options, hasF16: boolean): MatmulCase[] {
  const sq = (n: number): MatmulCase => ({ name: `square ${n}`, M: n, K: n, N: n, transB: false, weight: 'f32' });
  const clip = (B: number, K: number, N: number, weight: DType): MatmulCase => ({
    name: `CLIP-L ${K === 1024 ? 'fc1' : 'fc2'} B=${B}${weight === 'f16' ? ' f16 W' : ''}`,
    M: 257 * B, K, N, transB: true, weight,
  });
  if (o.quick) {
    return [sq(128), sq(256), { name: 'odd 129·127·131', M: 129, K: 127, N: 131, transB: true, weight: 'f32' },
      ...(hasF16 ? [{ name: 'linear 256 f16 W', M: 256, K: 256, N: 256, transB: true, weight: 'f16' as DType }] : [])];
  }
  const cases = [sq(256), sq(512), sq(1024), { name: 'odd 509·509·509', M: 509, K: 509, N: 509, transB: true, weight: 'f32' as DType },
    clip(1, 1024, 4096, 'f32'), clip(1, 4096, 1024, 'f32')];
  if (hasF16) cases.push(clip(1, 1024, 4096, 'f16'), clip(1, 4096, 1024, 'f16'));
  if (o.full) {
    cases.push(sq(2048), clip(8, 1024, 4096, 'f32'), clip(8, 4096, 1024, 'f32'));
    if (hasF16) cases.push(clip(8, 1024, 4096, 'f16'));
  }
  return cases;
}

async function benchMatmul(e: Engine, o: Options): Promise<KernelResult[]> {
  const out: KernelResult[] = [];
  for (const c of matmulCases(o, e.gpu.hasF16)) {
    const a = e.upload(rand(c.M * c.K, 1), [c.M, c.K]);
    const b = e.upload(rand(c.K * c.N, 2, 0.05), c.transB ? [c.N, c.K] : [c.K, c.N], c.weight);
    const t = await measure(e, () => matmul(e, a, b, { transB: c.transB }), { minSeconds: o.quick ? 0.2 : 1, reps: o.quick ? 3 : 5 });
    [a, b].forEach((x) => e.release(x));
    const r = kernelResult('matmul', c.name, `${c.M}×${c.K}·${c.K}×${c.N}${c.transB ? ' (Bᵀ)' : ''}`, `A f32, B ${c.weight}`, 2 * c.M * c.N * c.K, t);
    log(o, `  matmul ${c.name.padEnd(26)} ${fmt(r.gflops, 2).padStart(8)} GFLOP/s  (${fmt(r.bestMs, 2)} ms)`);
    out.push(r);
  }
  return out;
}

// ---- conv2d ----------------------------------------------------------------------

interface ConvCase {
  name: string;
  B: number;
  Cin: number;
  H: number;
  W: number;
  Cout: number;
  k: number;
  stride: number;
  pad: number;
}

function convCases(o: Options): ConvCase[] {
  const c3 = (name: string, C: number, Co: number, S: number): ConvCase => ({ name, B: 1, Cin: C, H: S, W: S, Cout: Co, k: 3, stride: 1, pad: 1 });
  const patch = (S: number, D: number): ConvCase => ({ name: `CLIP-L patch embed ${S}²`, B: 1, Cin: 3, H: S, W: S, Cout: D, k: 14, stride: 14, pad: 0 });
  if (o.quick) return [c3('3×3 32→32 @32²', 32, 32, 32), patch(112, 256)];
  const cases = [
    c3('SD conv_in 4→320 @64²', 4, 320, 64),
    c3('3×3 64→64 @64²', 64, 64, 64),
    c3('3×3 320→320 @32²', 320, 320, 32),
    { name: '1×1 320→320 @64²', B: 1, Cin: 320, H: 64, W: 64, Cout: 320, k: 1, stride: 1, pad: 0 },
    patch(224, 1024),
  ];
  if (o.full) {
    cases.push(c3('SD 3×3 320→320 @64²', 320, 320, 64), c3('SD 3×3 640→640 @32²', 640, 640, 32), c3('SD 3×3 1280→1280 @16²', 1280, 1280, 16));
  }
  return cases;
}

async function benchConv(e: Engine, o: Options): Promise<KernelResult[]> {
  const out: KernelResult[] = [];
  for (const c of convCases(o)) {
    const Ho = Math.floor((c.H + 2 * c.pad - c.k) / c.stride) + 1;
    const Wo = Math.floor((c.W + 2 * c.pad - c.k) / c.stride) + 1;
    const x = e.upload(rand(c.B * c.Cin * c.H * c.W, 3), [c.B, c.Cin, c.H, c.W]);
    const w = e.upload(rand(c.Cout * c.Cin * c.k * c.k, 4, 0.05), [c.Cout, c.Cin, c.k, c.k]);
    const bias = e.upload(rand(c.Cout, 5), [c.Cout]);
    const t = await measure(e, () => conv2d(e, x, w, { stride: c.stride, padding: c.pad, bias }), {
      minSeconds: o.quick ? 0.2 : 1, reps: o.quick ? 3 : 5,
    });
    [x, w, bias].forEach((v) => e.release(v));
    const flops = 2 * c.Cout * c.Cin * c.k * c.k * Ho * Wo * c.B;
    const shape = `[${c.B},${c.Cin},${c.H},${c.W}] ⊛ ${c.Cout}×${c.Cin}×${c.k}×${c.k} s${c.stride} p${c.pad}`;
    const r = kernelResult('conv', c.name, shape, 'f32', flops, t);
    log(o, `  conv   ${c.name.padEnd(26)} ${fmt(r.gflops, 2).padStart(8)} GFLOP/s  (${fmt(r.bestMs, 2)} ms)`);
    out.push(r);
  }
  return out;
}

// ---- CLIP ------------------------------------------------------------------------

async function benchClip(o: Options): Promise<ClipResult[]> {
  const out: ClipResult[] = [];
  const config = o.quick ? CLIP_TINY : CLIP_L;
  const label = o.quick ? 'CLIP tiny' : 'CLIP-L/14';
  const reps = o.quick ? 3 : 2;
  const model = new ClipModel(config);

  // A fresh engine per tower: its pool's peak is that forward's weights + activations.
  {
    const e = await Engine.create();
    const t0 = performance.now();
    randomizeTower(e, model, 'vision');
    log(o, `  ${label} vision weights: ${fmt(e.pool.stats.weightBytes / MiB, 0)} MiB in ${fmt((performance.now() - t0) / 1e3, 1)} s`);
    const B = 1;
    const S = config.vision.imageSize;
    const pixels = e.keep(e.upload(rand(B * 3 * S * S, 6), [B, 3, S, S]));
    const before = e.counters.dispatches;
    const t = await measure(e, () => model.encodeImage(e, pixels), { minSeconds: 0, reps, maxIters: 1 });
    const dispatches = (e.counters.dispatches - before) / (reps + 1);
    out.push(clipResult(`${label} vision forward`, B, t, e, dispatches));
    log(o, `  ${label} vision forward B=${B}: ${fmt(t.best * 1e3, 0)} ms/image, peak ${fmt(e.pool.stats.peakBytes / MiB, 0)} MiB`);
    e.release(pixels);
    freeTower(model, 'vision');
    e.pool.trim();
  }

  if (!o.noText) {
    const e = await Engine.create();
    randomizeTower(e, model, 'text');
    const B = 8;
    const L = config.text.maxPositions;
    const ids = randomTokens(B, L, config.text.vocab);
    const before = e.counters.dispatches;
    const t = await measure(e, () => model.encodeText(e, ids, L), { minSeconds: 0, reps, maxIters: 1 });
    const dispatches = (e.counters.dispatches - before) / (reps + 1);
    out.push(clipResult(`${label} text forward`, B, t, e, dispatches));
    log(o, `  ${label} text forward B=${B}×${L}: ${fmt(t.best * 1e3, 0)} ms (${fmt((t.best * 1e3) / B, 0)} ms/prompt), peak ${fmt(e.pool.stats.peakBytes / MiB, 0)} MiB`);
    freeTower(model, 'text');
    e.pool.trim();
  }
  return out;
}

function clipResult(name: string, batch: number, t: Timing, e: Engine, dispatches: number): ClipResult {
  return {
    section: 'clip', name, batch,
    bestMs: t.best * 1e3,
    medianMs: t.median * 1e3,
    msPerItem: (t.best * 1e3) / batch,
    reps: t.reps,
    weightMiB: e.pool.stats.weightBytes / MiB,
    peakMiB: e.pool.stats.peakBytes / MiB,
    dispatches,
  };
}

// ---- report ----------------------------------------------------------------------

const fmt = (x: number, digits: number): string => x.toFixed(digits);

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = (r: string[]): string => `| ${r.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
  return [line(rows[0]), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.slice(1).map(line)].join('\n');
}

function printTables(results: Result[]): void {
  const kernels = results.filter((r): r is KernelResult => r.section !== 'clip');
  if (kernels.length) {
    console.log(`\n${table([
      ['op', 'case', 'shape', 'dtype', 'GFLOP', 'best ms', 'median ms', 'GFLOP/s'],
      ...kernels.map((r) => [r.section, r.name, r.shape, r.dtype, fmt(r.gflop, 3), fmt(r.bestMs, 2), fmt(r.medianMs, 2), fmt(r.gflops, 2)]),
    ])}`);
  }
  const clips = results.filter((r): r is ClipResult => r.section === 'clip');
  if (clips.length) {
    console.log(`\n${table([
      ['model', 'batch', 'best ms', 'median ms', 'ms / item', 'dispatches', 'weights MiB', 'peak GPU MiB'],
      ...clips.map((r) => [r.name, String(r.batch), fmt(r.bestMs, 0), fmt(r.medianMs, 0), fmt(r.msPerItem, 0), String(r.dispatches), fmt(r.weightMiB, 0), fmt(r.peakMiB, 0)]),
    ])}`);
  }
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const e = await Engine.create();
  const info = e.gpu.info;
  const cpus = os.cpus();
  const machine = {
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
  };
  const adapter = {
    name: info.adapter,
    vendor: info.vendor,
    architecture: info.architecture,
    description: info.description,
    backend: info.backend,
    software: info.software,
    shaderF16: e.gpu.hasF16,
    maxStorageBufferBindingMiB: info.limits.maxStorageBufferBindingSize / MiB,
  };
  log(o, `machine: ${machine.os}, ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, node ${machine.node}`);
  log(o, `adapter: ${adapter.name} (vendor ${adapter.vendor || '?'}, architecture ${adapter.architecture || '?'}, ${adapter.description || 'no description'}), ` +
    `backend ${adapter.backend}, software ${adapter.software}, shader-f16 ${adapter.shaderF16}`);
  log(o, `mode: ${o.quick ? 'quick' : o.full ? 'full' : 'default'}${o.only ? `, only ${o.only}` : ''}`);

  const results: Result[] = [];
  const want = (s: Section): boolean => !o.only || o.only === s;
  if (want('matmul')) results.push(...(await benchMatmul(e, o)));
  if (want('conv')) results.push(...(await benchConv(e, o)));
  e.pool.trim();
  if (want('clip')) results.push(...(await benchClip(o)));

  if (o.json) console.log(JSON.stringify({ machine, adapter, mode: o.quick ? 'quick' : o.full ? 'full' : 'default', results }, null, 2));
  else printTables(results);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err instanceof Error ? err.stack ?? err.message : err);
    process.exit(1);
  },
);
