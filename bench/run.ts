// Benchmarks: kernel throughput (matmul, conv2d, attention) and model forwards
// (CLIP, SD 1.5 UNet step, VAE decode) with their peak GPU and host memory.
//
//   npm run bench                          # build, then every benchmark at the default sizes
//   npm run bench -- matmul unet           # only these (matmul conv attention clip unet vae; kernels, models)
//   npm run bench -- unet --latent 8,16 --dtype f16 --json
//
// Each benchmark runs in a child process of its own (each model case too), so memory
// figures are that benchmark's alone and a crash costs one case, not the run.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Engine } from '../src/engine/engine.js';
import type { DType } from '../src/engine/tensor.js';
import { benchClipCase, clipCaseId, clipCases, parseClipCase } from './clip.js';
import { benchAttention, benchConv, benchMatmul, type KernelOptions } from './kernels.js';
import { benchSdCase, parseSdCase, sdCaseId, sdCases } from './sd.js';
import { KERNEL_SECTIONS, MODEL_SECTIONS, sectionTable, type Result } from './tables.js';
import { adapterInfo, fmt, machineInfo, progress } from './timing.js';

const KERNELS = KERNEL_SECTIONS;
const MODELS = MODEL_SECTIONS;
type Section = (typeof KERNELS)[number] | (typeof MODELS)[number];
const SECTIONS: readonly Section[] = [...KERNELS, ...MODELS];
const GROUPS: Record<string, readonly Section[]> = { all: SECTIONS, kernels: KERNELS, models: MODELS, sd: ['unet', 'vae'] };

interface Options {
  sections: Section[];
  quick: boolean;
  full: boolean;
  json: boolean;
  dtype: 'f32' | 'f16' | 'both';
  /** Latent sides of the SD 1.5-sized UNet / VAE cases. */
  latents: number[];
  batch: number;
  clipText: boolean;
  /** Internal: run one benchmark (a kernel section or a model case id) and print its JSON. */
  child?: string;
}

const USAGE = `usage: npm run bench -- [BENCHMARK...] [options]
benchmarks: ${SECTIONS.join(' ')} (groups: ${Object.keys(GROUPS).join(' ')}); default all
  --quick          small sizes only (smoke test, about a minute)
  --full           add the sizes that matter on real GPUs (minutes to hours on a software adapter)
  --dtype D        f32, f16 or both (default: both where the adapter has shader-f16)
  --latent A,B     latent sides of the SD 1.5-sized UNet/VAE cases (default 8; 16 takes minutes per case on a CPU adapter; 64 is 512×512)
  --batch N        UNet/VAE batch (default 1; 2 is a classifier-free-guidance step)
  --clip-text      also time the CLIP-L text tower (8 prompts)
  --json           print one JSON document (machine, adapter, results) instead of tables`;

function parseArgs(argv: string[]): Options {
  const o: Options = { sections: [], quick: false, full: false, json: false, dtype: 'both', latents: [8], batch: 1, clipText: false };
  const value = (i: number, flag: string): string => {
    const v = argv[i];
    if (v === undefined || v.startsWith('--')) fail(`${flag} needs a value`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') o.quick = true;
    else if (a === '--full') o.full = true;
    else if (a === '--json') o.json = true;
    else if (a === '--clip-text') o.clipText = true;
    else if (a === '--dtype') {
      const v = value(++i, a);
      if (v !== 'f32' && v !== 'f16' && v !== 'both') fail(`--dtype takes f32, f16 or both, got ${v}`);
      o.dtype = v;
    } else if (a === '--latent') {
      o.latents = value(++i, a).split(',').map(Number);
      if (!o.latents.every((n) => Number.isInteger(n) && n > 0 && n % 8 === 0)) fail('--latent takes multiples of 8 (SD 1.5 downsamples 3 times), e.g. 8,16');
    } else if (a === '--batch') {
      o.batch = Number(value(++i, a));
      if (!Number.isInteger(o.batch) || o.batch < 1) fail('--batch takes a positive integer');
    } else if (a === '--only') o.sections.push(...section(value(++i, a))); // the earlier spelling
    else if (a === '--child') o.child = value(++i, a);
    else if (a === '--help' || a === '-h') {
      console.log(USAGE);
      process.exit(0);
    } else if (a.startsWith('-')) fail(`unknown option ${a}`);
    else o.sections.push(...section(a));
  }
  if (o.quick && o.full) fail('--quick and --full exclude each other');
  if (!o.sections.length) o.sections = [...SECTIONS];
  o.sections = SECTIONS.filter((s) => o.sections.includes(s));
  return o;
}

function section(name: string): readonly Section[] {
  if (name in GROUPS) return GROUPS[name];
  if (SECTIONS.includes(name as Section)) return [name as Section];
  if (name === 'conv2d') return ['conv'];
  return fail(`unknown benchmark ${name} (${SECTIONS.join(', ')}, or ${Object.keys(GROUPS).join(', ')})`);
}

function fail(message: string): never {
  console.error(`${message}\n${USAGE}`);
  process.exit(2);
}

const RESULT_MARK = '@@dr-bench-result ';
const ERROR_MARK = '@@dr-bench-error ';

interface Failure {
  benchmark: string;
  error: string;
}

function dtypesOf(o: Options, hasF16: boolean): DType[] {
  if (o.dtype === 'f16' && !hasF16) fail('--dtype f16: this adapter has no shader-f16');
  return o.dtype === 'both' ? (hasF16 ? ['f32', 'f16'] : ['f32']) : [o.dtype];
}

/** What one section runs, as child benchmark ids: a kernel section whole, models case by case. */
function plan(o: Options, dtypes: DType[]): { section: Section; ids: string[] }[] {
  const f32 = dtypes.includes('f32');
  const f16 = dtypes.includes('f16');
  return o.sections.map((s) => {
    if (s === 'clip') return { section: s, ids: clipCases({ quick: o.quick, text: o.clipText, f32, f16 }).map(clipCaseId) };
    if (s === 'unet' || s === 'vae') return { section: s, ids: sdCases(s, { quick: o.quick, f32, f16, latents: o.latents, batch: o.batch }).map(sdCaseId) };
    return { section: s, ids: [s] };
  });
}

// ---- child: one benchmark --------------------------------------------------------

async function runChild(o: Options, id: string): Promise<Result[]> {
  if ((KERNELS as readonly string[]).includes(id)) {
    const e = await Engine.create();
    const ko: KernelOptions = { quick: o.quick, full: o.full, dtypes: dtypesOf(o, e.gpu.hasF16) };
    if (id === 'matmul') return benchMatmul(e, ko);
    if (id === 'conv') return benchConv(e, ko);
    return benchAttention(e, ko);
  }
  if (id.startsWith('clip:')) return [await benchClipCase(parseClipCase(id))];
  return [await benchSdCase(parseSdCase(id))];
}

function childArgs(o: Options, id: string): string[] {
  const args = ['--child', id, '--dtype', o.dtype];
  if (o.quick) args.push('--quick');
  if (o.full) args.push('--full');
  return args;
}

/** Runs one benchmark in a child process; its stdout is the JSON array of results. */
function spawnChild(o: Options, id: string): Promise<Result[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), ...childArgs(o, id)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) {
        try {
          const line = out.split('\n').find((l) => l.startsWith(RESULT_MARK));
          resolve(JSON.parse(line!.slice(RESULT_MARK.length)) as Result[]);
        } catch {
          reject(new Error(`unreadable output: ${out.slice(0, 200)}`));
        }
      } else {
        const said = out.split('\n').find((l) => l.startsWith(ERROR_MARK))?.slice(ERROR_MARK.length);
        reject(new Error(said ?? (signal ? `killed by ${signal}` : `exit code ${code}`)));
      }
    });
  });
}

// ---- main ------------------------------------------------------------------------

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (o.child) {
    // Marked lines: native code (Dawn) may print to stdout too.
    try {
      const results = await runChild(o, o.child);
      process.stdout.write(`\n${RESULT_MARK}${JSON.stringify(results)}\n`);
    } catch (err) {
      process.stdout.write(`\n${ERROR_MARK}${err instanceof Error ? err.message : String(err)}\n`);
      throw err;
    }
    return;
  }
  const e = await Engine.create();
  const machine = machineInfo();
  const adapter = adapterInfo(e);
  const dtypes = dtypesOf(o, adapter.shaderF16);
  const date = new Date().toISOString();
  const command = `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim();
  const say = o.json ? progress : (line: string) => console.log(line);
  say(`machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.os}, node ${machine.node}, load average ${machine.loadavg.join(" ")}`);
  say(`adapter: ${adapter.name} (vendor ${adapter.vendor || '?'}, architecture ${adapter.architecture || '?'}, ${adapter.description || 'no description'}), ` +
    `backend ${adapter.backend}, ${adapter.software ? 'software' : 'hardware'}, shader-f16 ${adapter.shaderF16}, timestamp-query ${adapter.timestampQuery}`);
  say(`date: ${date}; benchmarks: ${o.sections.join(' ')}; ${o.quick ? 'quick' : o.full ? 'full' : 'default'} sizes; dtypes ${dtypes.join(', ')}`);

  const results: Result[] = [];
  const failures: Failure[] = [];
  const t0 = performance.now();
  for (const { section, ids } of plan(o, dtypes)) {
    progress(`${section}:`);
    const mine: Result[] = [];
    for (const id of ids) {
      try {
        mine.push(...(await spawnChild(o, id)));
      } catch (err) {
        const error = err instanceof Error ? err.message : String(err);
        progress(`  ${id} failed: ${error}`);
        failures.push({ benchmark: id, error });
      }
    }
    results.push(...mine);
    if (!o.json && mine.length) console.log(`\n${section}\n\n${sectionTable(section, mine)}\n`);
  }
  const seconds = (performance.now() - t0) / 1e3;
  if (o.json) {
    console.log(JSON.stringify({ date, command, machine, adapter, options: { ...o, dtypes }, seconds, results, failures }, null, 2));
  } else {
    console.log(`total ${fmt(seconds, 0)} s${failures.length ? `; ${failures.length} failed: ${failures.map((f) => f.benchmark).join(', ')}` : ''}`);
  }
  if (failures.length) process.exitCode = 1;
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (err: unknown) => {
    console.error(err instanceof Error ? err.stack ?? err.message : err);
    process.exit(1);
  },
);
