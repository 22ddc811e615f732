// `dr eval`'s metrics: images (or reference/distorted pairs) per second per metric, each built
// and run the way `dr eval` builds and runs it (registry.ts, weights read from a --weights
// folder). The deep metrics get stand-in weights: safetensors files with every tensor of the
// real checkpoints (names and shapes) filled with seeded random values of sane magnitudes, so
// the timings are real but the scores are meaningless.
//
//   npm run bench:metrics                                  # every metric at 512×512
//   npm run bench:metrics -- --size 256 --metric lpips-vgg,dists --reps 2 --json
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { Engine } from '../src/engine/engine.js';
import { ClipIqa } from '../src/graph/metrics/clipiqa.js';
import { Dists } from '../src/graph/metrics/dists.js';
import { uploadImage } from '../src/graph/metrics/image.js';
import { FidInception } from '../src/graph/metrics/inception.js';
import { Lpips, type LpipsNet } from '../src/graph/metrics/lpips.js';
import { Musiq } from '../src/graph/metrics/musiq.js';
import { createFidModel, createMetrics, lpipsFileName, WEIGHTS, type MetricOptions } from '../src/graph/metrics/registry.js';
import type { Module } from '../src/graph/module.js';
import type { RgbImage } from '../src/image/load.js';
import { writeSafetensorsLazy } from '../src/weights/safetensors.js';
import { table } from './tables.js';
import { adapterInfo, fmt, machineInfo, MiB, progress, rand } from './timing.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PHOTO = path.resolve(REPO, '../shared/images/astronaut.png');

/** Benchmark ids: the `dr eval` metric names, lpips per backbone, and FID's per-image part. */
const METRICS = ['psnr', 'ssim', 'niqe', 'lpips-alex', 'lpips-vgg', 'dists', 'clipiqa', 'musiq', 'fid-features'] as const;
type MetricId = (typeof METRICS)[number];

const WHAT: Record<MetricId, string> = {
  psnr: 'full-reference, RGB',
  ssim: 'full-reference, Y',
  niqe: 'no-reference, on the host (CPU)',
  'lpips-alex': 'full-reference, AlexNet + lin',
  'lpips-vgg': 'full-reference, VGG16 + lin',
  dists: 'full-reference, VGG16 L2-pool',
  clipiqa: 'no-reference, CLIP RN50',
  musiq: 'no-reference, multi-scale ViT',
  'fid-features': 'InceptionV3 pool3 at 299²',
};

interface Options {
  size: number;
  metrics: MetricId[];
  reps: number;
  json: boolean;
}

const USAGE = `usage: npm run bench:metrics -- [options]
  --size N       image side in pixels (default 512)
  --metric LIST  comma-separated: ${METRICS.join(', ')} (default: all)
  --reps N       timed runs per metric after one warm-up (default 3)
  --json         print one JSON document (machine, adapter, results) instead of a table`;

function parseArgs(argv: string[]): Options {
  const o: Options = { size: 512, metrics: [...METRICS], reps: 3, json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => argv[++i] ?? fail(`${a} needs a value`);
    if (a === '--size') o.size = Number(value());
    else if (a === '--metric') {
      o.metrics = value().split(',').map((s) => s.trim()) as MetricId[];
      for (const m of o.metrics) if (!(METRICS as readonly string[]).includes(m)) fail(`--metric: unknown metric "${m}" (known: ${METRICS.join(', ')})`);
    } else if (a === '--reps') o.reps = Number(value());
    else if (a === '--json') o.json = true;
    else if (a === '--help' || a === '-h') {
      console.log(USAGE);
      process.exit(0);
    } else fail(`unknown option ${a}\n${USAGE}`);
  }
  if (!Number.isInteger(o.size) || o.size < 32) fail('--size takes an integer ≥ 32');
  if (!Number.isInteger(o.reps) || o.reps < 1) fail('--reps takes an integer ≥ 1');
  return o;
}

function fail(message: string): never {
  console.error(`bench:metrics: ${message}`);
  process.exit(2);
}

/**
 * A stand-in value for a checkpoint tensor, by its name and shape: BatchNorm running
 * variances near 1, norm weights near 1, biases and running means small, CLIP's logit
 * scale ln 100, matrices and kernels uniform(±√(3/fan_in)) (unit-variance outputs).
 */
function standIn(name: string, shape: readonly number[], seed: number): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const leaf = name.split('.').at(-1)!;
  if (leaf === 'logit_scale') return new Float32Array(n).fill(Math.log(100));
  if (leaf === 'running_var' || leaf === 'alpha' || leaf === 'beta' || leaf === 'scale' || (leaf === 'weight' && shape.length === 1)) {
    return rand(n, seed, 0.1).map((x) => 1 + x);
  }
  if (shape.length === 1 || leaf === 'shift') return rand(n, seed, 0.05);
  return rand(n, seed, Math.sqrt(3 / shape.slice(1).reduce((a, b) => a * b, 1)));
}

/** Writes `model`'s every param, under its checkpoint name, with stand-in values; returns the file's MiB. */
function writeStandIn(file: string, model: Module): number {
  let seed = 1;
  let bytes = 0;
  const tensors = [...model.namedParams()].map(([name, p]) => {
    const s = seed++;
    bytes += 4 * p.shape.reduce((a, b) => a * b, 1);
    return { name, dtype: 'F32' as const, shape: [...p.shape], read: () => standIn(name, p.shape, s) };
  });
  writeSafetensorsLazy(file, tensors, { note: 'dr bench:metrics stand-in weights (seeded random, real shapes)' });
  return bytes / MiB;
}

/** The weight file each benchmark reads from the stand-in --weights folder, and the model that defines its tensors. */
function standInFile(id: MetricId): { file: string; model: () => Module } | undefined {
  switch (id) {
    case 'lpips-alex':
    case 'lpips-vgg': {
      const net = id.slice(6) as LpipsNet;
      return { file: lpipsFileName(net), model: () => new Lpips(net) };
    }
    case 'dists':
      return { file: WEIGHTS.dists.file, model: () => new Dists() };
    case 'fid-features':
      return { file: WEIGHTS.fid.file, model: () => new FidInception() };
    case 'clipiqa':
      return { file: WEIGHTS.clipiqa.file, model: () => new ClipIqa().model };
    case 'musiq':
      return { file: WEIGHTS.musiq.file, model: () => new Musiq() };
    default:
      return undefined;
  }
}

interface MetricResult {
  metric: MetricId;
  what: string;
  size: number;
  /** Stand-in weights read (MiB, f32); 0 for the classic metrics. */
  weightsMiB: number;
  /** Building the metric: reading the weights, BatchNorm folding, weight standardisation. */
  loadSeconds: number;
  /** The first image: shader compilation, first use of every buffer (CLIP-IQA: its prompts' text features too). */
  firstSeconds: number;
  bestSeconds: number;
  medianSeconds: number;
  imagesPerSecond: number;
  reps: number;
}

/** One image's work as `dr eval` does it after decoding: upload, the metric (reading its value back), release. */
function runner(e: Engine, id: MetricId, weightsDir: string, images: { ref: RgbImage; dist: RgbImage }): () => Promise<unknown> {
  if (id === 'fid-features') {
    const model = createFidModel(e, { net: 'alex', weightsDir });
    return async () => {
      const x = uploadImage(e, images.dist);
      await model.pool3(e, x);
      e.release(x);
    };
  }
  const opts: MetricOptions = { net: id === 'lpips-vgg' ? 'vgg' : 'alex', weightsDir };
  const [metric] = createMetrics(e, [id.startsWith('lpips') ? 'lpips' : id], opts);
  return async () => {
    const ref = metric.kind === 'fr' ? uploadImage(e, images.ref) : undefined;
    const dist = uploadImage(e, images.dist);
    await metric.run(e, { ref, dist, distImage: images.dist });
    if (ref) e.release(ref);
    e.release(dist);
  };
}

/** astronaut.png resized to size², and a copy with seeded noise of about ±20 levels as the distorted image. */
async function testImages(size: number): Promise<{ ref: RgbImage; dist: RgbImage }> {
  const data = new Uint8Array(await sharp(PHOTO).resize(size, size).removeAlpha().raw().toBuffer());
  const noise = rand(data.length, 3, 20);
  const ref = { width: size, height: size, data };
  return { ref, dist: { ...ref, data: Uint8Array.from(data, (v, i) => Math.min(255, Math.max(0, Math.round(v + noise[i])))) } };
}

async function seconds(f: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await f();
  return (performance.now() - t0) / 1000;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const e = await Engine.create();
  const machine = machineInfo();
  const adapter = adapterInfo(e);
  const images = await testImages(o.size);
  const weights = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-bench-metrics-'));
  const results: MetricResult[] = [];
  const failures: { metric: MetricId; error: string }[] = [];
  const t0 = performance.now();
  try {
    for (const id of o.metrics) {
      try {
        const w = standInFile(id);
        let weightsMiB = 0;
        if (w) {
          progress(`${id}: writing stand-in weights ${w.file}`);
          weightsMiB = writeStandIn(path.join(weights, w.file), w.model());
        }
        progress(`${id}: ${o.size}×${o.size}, 1 warm-up + ${o.reps} timed`);
        const t1 = performance.now();
        const run = runner(e, id, weights, images);
        const loadSeconds = (performance.now() - t1) / 1000;
        const firstSeconds = await seconds(run);
        const times: number[] = [];
        for (let r = 0; r < o.reps; r++) times.push(await seconds(run));
        times.sort((a, b) => a - b);
        const median = times[Math.floor(times.length / 2)];
        results.push({ metric: id, what: WHAT[id], size: o.size, weightsMiB, loadSeconds, firstSeconds, bestSeconds: times[0], medianSeconds: median, imagesPerSecond: 1 / median, reps: o.reps });
        if (w) fs.rmSync(path.join(weights, w.file));
      } catch (err) {
        failures.push({ metric: id, error: (err as Error).message.split('\n')[0] });
        progress(`${id}: failed: ${failures.at(-1)!.error}`);
      }
    }
  } finally {
    fs.rmSync(weights, { recursive: true, force: true });
  }

  const doc = {
    date: new Date().toISOString(),
    command: `npm run bench:metrics -- ${process.argv.slice(2).join(' ')}`.trim(),
    machine,
    adapter,
    options: { size: o.size, reps: o.reps },
    weights: 'stand-in: seeded random values with the real checkpoints\' tensor names and shapes (timings are real, scores meaningless)',
    seconds: (performance.now() - t0) / 1000,
    results,
    failures,
  };
  if (o.json) process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
  else {
    console.log(`machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.os}, Node ${machine.node}, load ${machine.loadavg.join(' ')}`);
    console.log(`adapter: ${adapter.name} (vendor ${adapter.vendor}, architecture ${adapter.architecture}, ${adapter.backend} backend, ${adapter.software ? 'software' : 'hardware'}); ${doc.date}`);
    console.log(`images ${o.size}×${o.size} (a pair for full-reference metrics), decoded; per image: upload, metric, value read back. Weights: ${doc.weights}.`);
    console.log(table([
      ['metric', 'what', 'weights MiB', 'load s', 'first s', 'best s', 'median s', 'images/s'],
      ...results.map((r) => [r.metric, r.what, fmt(r.weightsMiB, 0), fmt(r.loadSeconds, 2), fmt(r.firstSeconds, 3), fmt(r.bestSeconds, 3), fmt(r.medianSeconds, 3), fmt(r.imagesPerSecond, r.imagesPerSecond >= 10 ? 1 : 3)]),
    ]));
    for (const f of failures) console.log(`${f.metric}: failed: ${f.error}`);
  }
  process.exit(failures.length ? 1 : 0); // a live Dawn instance keeps the event loop running
}

await main();
