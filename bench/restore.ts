// `dr restore` end to end, both modes: seconds per image with the per-phase split
// (CLIP, control, denoise, decode, ...) and peak GPU memory, as the CLI reports them
// with --json. Each run is a fresh `dr` process, so model loading is excluded from the
// phases but the numbers are what a user sees. Beside each phase's wall time: its CPU-normalised
// time, the process's CPU seconds (every thread, a CPU adapter's included) ÷ cores, which other
// load on a shared machine moves less; and the process's max RSS.
//
//   npm run bench:restore                                  # tiny fixtures, 256×256, 20 steps
//   npm run bench:restore -- --size 512 --steps 20 --json
//   npm run bench:restore -- --sd SD15_DIR --clip CLIP_DIR --controlnet TILE_DIR   # real weights
//   npm run bench:restore -- --sd SD15 --clip CLIP-L --mode training-free --size 128 --steps 4 --precision f32
//     SD15 / CLIP-L: SD 1.5 (+ a tile ControlNet of its size) and CLIP-L/14 with random weights,
//     written once under --base (default $TMPDIR/dr-bench-restore-sd15, ~6.5 GB); the training-free
//     row is then compared with diffusers + PyTorch's phases on this machine's CPU (PYTORCH_CPU).
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { Engine } from '../src/engine/engine.js';
import { table } from './tables.js';
import { sd15Folders } from './sd15_folders.js';
import { adapterInfo, fmt, machineInfo, MiB, progress } from './timing.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = path.join(REPO, 'dist/src/cli/main.js');
const FIXTURES = path.resolve(REPO, '../shared/fixtures');
const PHOTO = path.resolve(REPO, '../shared/images/astronaut.png');
const DEFAULT_CONTROLNET = path.join(FIXTURES, 'sd-tiny/controlnet');

interface Options {
  size: number;
  steps: number;
  precision: string;
  sd: string;
  clip: string;
  controlnet: string;
  mode: 'both' | 'training-free' | 'diff-restorer';
  base: string;
  json: boolean;
}

/**
 * diffusers 0.x + PyTorch (f32, OpenBLAS) on this machine's 2 CPU cores, the reference:
 * StableDiffusionControlNetImg2ImgPipeline with SD 1.5 and the tile ControlNet, 128², 4 steps at
 * strength 0.5, guidance 5, and CLIP-L's zero-shot probe; seconds per phase (7.0 s in all).
 */
const PYTORCH_CPU: Record<string, number> = { clip: 1.2, prompts: 0.23, encode: 0.38, denoise: 4.2, decode: 0.84 };
const PYTORCH_CPU_TOTAL = 7.0;

function parseArgs(argv: string[]): Options {
  const o: Options = {
    size: 256, steps: 20, precision: 'auto', json: false, mode: 'both', base: path.join(os.tmpdir(), 'dr-bench-restore-sd15'),
    sd: path.join(FIXTURES, 'sd-tiny'), clip: path.join(FIXTURES, 'clip-tiny'), controlnet: DEFAULT_CONTROLNET,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => argv[++i] ?? fail(`${a} needs a value`);
    if (a === '--size') o.size = Number(value());
    else if (a === '--steps') o.steps = Number(value());
    else if (a === '--precision') o.precision = value();
    else if (a === '--sd') o.sd = value();
    else if (a === '--clip') o.clip = value();
    else if (a === '--controlnet') o.controlnet = value();
    else if (a === '--mode') o.mode = value() as Options['mode'];
    else if (a === '--base') o.base = value();
    else if (a === '--json') o.json = true;
    else fail(`unknown option ${a}`);
  }
  if (!Number.isInteger(o.size) || o.size < 64 || o.size % 64) fail('--size takes a multiple of 64');
  if (!Number.isInteger(o.steps) || o.steps < 2) fail('--steps takes an integer ≥ 2');
  if (!['both', 'training-free', 'diff-restorer'].includes(o.mode)) fail('--mode takes both, training-free or diff-restorer');
  if (o.sd === 'SD15' || o.clip === 'CLIP-L') {
    const random = sd15Folders(o.base);
    if (o.sd === 'SD15') [o.sd, o.controlnet] = [random.sd, o.controlnet === DEFAULT_CONTROLNET ? random.controlnet : o.controlnet];
    if (o.clip === 'CLIP-L') o.clip = random.clip;
  }
  return o;
}

function fail(message: string): never {
  console.error(`bench:restore: ${message}`);
  process.exit(2);
}

interface RestoreRun {
  mode: string;
  seconds: number;
  phases: Record<string, number>;
  /** Per phase: the process's CPU seconds ÷ cores. */
  phasesCpuNorm: Record<string, number>;
  /** The image's CPU seconds ÷ cores (the sum of its phases). */
  cpuNormSeconds: number;
  peakGpuMiB: number;
  maxRssMiB: number;
  stepsRun: number;
  /** Load average (1 min) when the run started and ended. */
  load: [number, number];
}

async function restore(args: string[], mode: string, stepsRun: number): Promise<RestoreRun> {
  const loadBefore = os.loadavg()[0];
  const { stdout } = await promisify(execFile)('node', [CLI, 'restore', ...args, '--json', '--force'], { maxBuffer: 64 << 20 });
  const doc = JSON.parse(stdout);
  const [r] = doc.results;
  const cores = os.cpus().length;
  const phasesCpuNorm = Object.fromEntries(Object.entries(r.phasesCpu as Record<string, number>).map(([k, v]) => [k, v / cores]));
  return {
    mode, seconds: r.seconds, phases: r.phases, phasesCpuNorm, cpuNormSeconds: Object.values(phasesCpuNorm).reduce((a, b) => a + b, 0),
    peakGpuMiB: r.peakGpuBytes / MiB, maxRssMiB: doc.process.maxRssBytes / MiB, stepsRun, load: [loadBefore, os.loadavg()[0]],
  };
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const e = await Engine.create();
  const machine = machineInfo();
  const adapter = adapterInfo(e);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-bench-restore-'));
  try {
    const input = path.join(tmp, 'in.png');
    await sharp(PHOTO).resize(o.size, o.size).png().toFile(input);
    const common = [input, '--steps', String(o.steps), '--precision', o.precision, '--sd', o.sd, '--clip', o.clip];
    const runs: RestoreRun[] = [];
    if (o.mode !== 'training-free') {
      const model = path.join(tmp, 'dr');
      progress(`dr init (${o.sd}, ${o.clip})`);
      await promisify(execFile)('node', [CLI, 'init', '--sd', o.sd, '--clip', o.clip, '-o', model]);
      progress(`diff-restorer mode, ${o.size}×${o.size}, ${o.steps} steps`);
      runs.push(await restore([...common, '-o', path.join(tmp, 'dr.png'), '--model', model], 'diff-restorer', o.steps));
    }
    if (o.mode !== 'diff-restorer') {
      progress(`training-free mode (strength 0.5: ${Math.floor(o.steps * 0.5)} steps, guidance 5: batch 2)`);
      runs.push(await restore([...common, '-o', path.join(tmp, 'free.png'), '--controlnet', o.controlnet], 'training-free', Math.floor(o.steps * 0.5)));
    }

    const header = {
      machine, adapter: adapter.name, backend: adapter.backend, date: new Date().toISOString(),
      command: `npm run bench:restore -- ${process.argv.slice(2).join(' ')}`.trim(), size: o.size, steps: o.steps, precision: o.precision,
      models: { sd: o.sd, clip: o.clip, controlnet: o.controlnet },
    };
    if (o.json) {
      process.stdout.write(`${JSON.stringify({ ...header, runs }, null, 2)}\n`);
      return;
    }
    console.log(`machine: ${machine.cpu}, ${machine.cores} cores; adapter: ${adapter.name} (${adapter.backend}); ${header.date}`);
    console.log(`${o.size}×${o.size}, ${o.steps} steps, precision ${o.precision}; models: ${o.sd}, ${o.clip}, ${o.controlnet}`);
    const phases = [...new Set(runs.flatMap((r) => Object.keys(r.phases)))];
    console.log(table([
      ['mode', 'total s', ...phases.map((p) => `${p} s`), 's/denoise step', 'peak GPU MiB', 'max RSS MiB', 'load'],
      ...runs.flatMap((r) => [
        [r.mode, fmt(r.seconds, 2), ...phases.map((p) => fmt(r.phases[p], 2)), fmt(r.phases.denoise / r.stepsRun, 2), fmt(r.peakGpuMiB, 0), fmt(r.maxRssMiB, 0), r.load.map((l) => fmt(l, 1)).join('→')],
        ['  CPU-normalised', fmt(r.cpuNormSeconds, 2), ...phases.map((p) => fmt(r.phasesCpuNorm[p], 2)), fmt(r.phasesCpuNorm.denoise / r.stepsRun, 2), '', '', ''],
      ]),
    ]));
    const free = runs.find((r) => r.mode === 'training-free');
    if (free && o.size === 128 && o.steps === 4 && o.precision === 'f32' && o.sd.endsWith(path.join('dr-bench-restore-sd15', 'sd'))) {
      console.log(`\ntraining-free vs diffusers + PyTorch on this CPU (${PYTORCH_CPU_TOTAL} s): wall (CPU-normalised)`);
      // diffusers embeds the ControlNet hint inside every step, so its denoise holds our control phase.
      const ours = (t: Record<string, number>, p: string) => t[p] + (p === 'denoise' ? t.control ?? 0 : 0);
      const rows = Object.entries(PYTORCH_CPU).map(([p, ref]) => {
        const [wall, cpu] = [ours(free.phases, p), ours(free.phasesCpuNorm, p)];
        return [p === 'denoise' ? 'control + denoise' : p, fmt(ref, 2), fmt(wall, 2), fmt(cpu, 2), `×${fmt(wall / ref, 1)} (×${fmt(cpu / ref, 1)})`];
      });
      rows.push(['total', fmt(PYTORCH_CPU_TOTAL, 2), fmt(free.seconds, 2), fmt(free.cpuNormSeconds, 2), `×${fmt(free.seconds / PYTORCH_CPU_TOTAL, 1)} (×${fmt(free.cpuNormSeconds / PYTORCH_CPU_TOTAL, 1)})`]);
      console.log(table([['phase', 'PyTorch s', 'dr s', 'dr CPU-norm. s', 'dr / PyTorch'], ...rows]));
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  process.exit(0); // a live Dawn instance keeps the event loop running
}

await main();
