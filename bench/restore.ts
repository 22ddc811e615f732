// `dr restore` end to end, both modes: seconds per image with the per-phase split
// (CLIP, control, denoise, decode, ...) and peak GPU memory, as the CLI reports them
// with --json. Each run is a fresh `dr` process, so model loading is excluded from the
// phases but the numbers are what a user sees.
//
//   npm run bench:restore                                  # tiny fixtures, 256×256, 20 steps
//   npm run bench:restore -- --size 512 --steps 20 --json
//   npm run bench:restore -- --sd SD15_DIR --clip CLIP_DIR --controlnet TILE_DIR   # real weights
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { Engine } from '../src/engine/engine.js';
import { table } from './tables.js';
import { adapterInfo, fmt, machineInfo, MiB, progress } from './timing.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = path.join(REPO, 'dist/src/cli/main.js');
const FIXTURES = path.resolve(REPO, '../shared/fixtures');
const PHOTO = path.resolve(REPO, '../shared/images/astronaut.png');

interface Options {
  size: number;
  steps: number;
  precision: string;
  sd: string;
  clip: string;
  controlnet: string;
  json: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    size: 256, steps: 20, precision: 'auto', json: false,
    sd: path.join(FIXTURES, 'sd-tiny'), clip: path.join(FIXTURES, 'clip-tiny'), controlnet: path.join(FIXTURES, 'sd-tiny/controlnet'),
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
    else if (a === '--json') o.json = true;
    else fail(`unknown option ${a}`);
  }
  if (!Number.isInteger(o.size) || o.size < 64 || o.size % 64) fail('--size takes a multiple of 64');
  if (!Number.isInteger(o.steps) || o.steps < 2) fail('--steps takes an integer ≥ 2');
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
  peakGpuMiB: number;
  stepsRun: number;
}

async function restore(args: string[], mode: string, stepsRun: number): Promise<RestoreRun> {
  const { stdout } = await promisify(execFile)('node', [CLI, 'restore', ...args, '--json', '--force'], { maxBuffer: 64 << 20 });
  const [r] = JSON.parse(stdout).results;
  return { mode, seconds: r.seconds, phases: r.phases, peakGpuMiB: r.peakGpuBytes / MiB, stepsRun };
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
    const model = path.join(tmp, 'dr');
    progress(`dr init (${o.sd}, ${o.clip})`);
    await promisify(execFile)('node', [CLI, 'init', '--sd', o.sd, '--clip', o.clip, '-o', model]);
    const runs: RestoreRun[] = [];
    progress(`diff-restorer mode, ${o.size}×${o.size}, ${o.steps} steps`);
    runs.push(await restore([...common, '-o', path.join(tmp, 'dr.png'), '--model', model], 'diff-restorer', o.steps));
    progress(`training-free mode (strength 0.5: ${Math.floor(o.steps * 0.5)} steps, guidance 5: batch 2)`);
    runs.push(await restore([...common, '-o', path.join(tmp, 'free.png'), '--controlnet', o.controlnet], 'training-free', Math.floor(o.steps * 0.5)));

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
      ['mode', 'total s', ...phases.map((p) => `${p} s`), 's/denoise step', 'peak GPU MiB'],
      ...runs.map((r) => [r.mode, fmt(r.seconds, 2), ...phases.map((p) => fmt(r.phases[p], 2)), fmt(r.phases.denoise / r.stepsRun, 2), fmt(r.peakGpuMiB, 0)]),
    ]));
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  process.exit(0); // a live Dawn instance keeps the event loop running
}

await main();
