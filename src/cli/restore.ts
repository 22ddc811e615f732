import { Command } from 'commander';
import fs from 'node:fs';
import path from 'node:path';
import { DrError } from '../errors.js';
import { Engine } from '../engine/engine.js';
import { autoPrecision } from '../engine/kernels.js';
import { cast } from '../engine/ops/copy.js';
import { scale } from '../engine/ops/elementwise.js';
import { adainColorFix, cropTo, reflectPad, waveletColorFix } from '../engine/ops/eval/image.js';
import type { Tensor } from '../engine/tensor.js';
import { DiffRestorer, readModelIndex } from '../graph/diffrestorer/model.js';
import type { Precision } from '../graph/module.js';
import { CLEAN_TEXT, positivePrompt, TrainingFreeRestorer } from '../graph/training_free.js';
import type { RgbImage } from '../image/load.js';
import { listImageTree } from '../image/load.js';
import { resizeBicubicPlanes } from '../image/resize.js';
import { checkImage, loadImage, outputPathFor, RESTORED_SUFFIX, saveImage, type LoadedImage } from '../image/restore_io.js';
import { checkOutputFile, ensureDir, Inputs } from '../atomic.js';
import { Batch } from './batch.js';
import { modelDir, sdModel } from './models.js';
import { Progress } from './progress.js';
import { inShard, parseShard, SHARD_HELP, shardNote } from './shard.js';
import { ADAPTER_HELP, numberOption, precisionOption, runCommand, SEED_RANGE, seedOption, warnIfCut } from './run.js';

interface RestoreCliOptions {
  output?: string;
  model?: string;
  sd?: string;
  clip?: string;
  controlnet?: string;
  steps: string;
  seed: string;
  guidance?: string;
  strength: string;
  prompt?: string;
  threshold: string;
  controlScale: string;
  precision?: string;
  tile: string;
  tileOverlap: string;
  colorFix: string;
  upscale: string;
  quality: string;
  force?: boolean;
  skipExisting?: boolean;
  recursive?: boolean;
  shard?: string;
  json?: boolean;
  stats?: boolean;
}

const DEFAULT_SD = 'stable-diffusion-v1-5/stable-diffusion-v1-5';
const DEFAULT_CLIP = 'openai/clip-vit-large-patch14';
const DEFAULT_CONTROLNET = 'lllyasviel/control_v11f1e_sd15_tile';
const COLOR_FIXES = ['wavelet', 'adain', 'none'] as const;
type ColorFix = (typeof COLOR_FIXES)[number];

export function restoreCommand(): Command {
  return new Command('restore')
    .description('restore photos with Diff-Restorer (--model), or training-free with SD 1.5 + a tile ControlNet')
    .argument('<images...>', 'image files or folders of images (PNG, JPEG, WebP, TIFF, GIF; 8 or 16 bit)')
    .option('-o, --output <path>', 'output file, or folder (ends in /, exists, or several inputs); default: beside each input as NAME_restored.EXT')
    .option('-m, --model <dir>', 'a Diff-Restorer checkpoint (see `dr init`); without it, the training-free mode runs')
    .option('--sd <dir|repo|file>', `Stable Diffusion 1.5 folder, repo id or single-file checkpoint (default: the checkpoint's, else ${DEFAULT_SD})`)
    .option('--clip <dir|repo>', `CLIP folder or repo id (default: the checkpoint's, else ${DEFAULT_CLIP})`)
    .option('--controlnet <dir|repo>', `training-free: a tile ControlNet folder or repo id (default ${DEFAULT_CONTROLNET})`)
    .option('--steps <n>', 'UniPC steps of the schedule (training-free: floor(steps × strength) of them run)', '20')
    .option('--seed <n>', `noise seed, an integer in ${SEED_RANGE} (same seed, adapter and precision → same output)`, '0')
    .option('--guidance <g>', 'classifier-free guidance scale (default 1 with --model, as the paper; 5 training-free)')
    .option('--strength <s>', 'training-free: how much of the schedule re-runs from the noised input (0–1; 20 steps at 0.5 run 10)', '0.5')
    .option('--prompt <text>', 'training-free: words added to the positive prompt, e.g. what the photo shows')
    .option('--threshold <p>', 'a degradation is reported (and, training-free, put in the negative prompt) from this probability', '0.2')
    .option('--control-scale <s>', 'training-free: ControlNet conditioning scale', '1')
    .option('--adapter <name|index>', ADAPTER_HELP)
    .option('--precision <p>', 'auto (f16 on a GPU with shader-f16; f32 on a CPU adapter, where f16 is emulated and slower), f32 or f16', 'auto')
    .option('--tile <px>', 'images larger than this are denoised in overlapping tiles of this side', '512')
    .option('--tile-overlap <px>', 'overlap of neighbouring tiles', '128')
    .option('--upscale <k>', 'resize the input by k first (Pillow bicubic, as DiffBIR and SUPIR do for super-resolution), e.g. 2 or 4', '1')
    .option('--quality <q>', 'JPEG and WebP output quality (1–100)', '95')
    .option('--color-fix <how>', 'match the input\'s colours: wavelet (low frequencies), adain (channel mean/std) or none', 'wavelet')
    .option('-f, --force', 'replace existing output files')
    .option('--skip-existing', 'skip inputs whose output exists (resume an interrupted run)')
    .option('--shard <i/n>', SHARD_HELP)
    .option('--recursive', 'also restore the images in subfolders of folder inputs (an output folder gets the same subfolders)')
    .option('--stats', 'print seconds per phase (CLIP, control, denoise, decode) and peak GPU memory per image')
    .option('--json', 'print a JSON summary: per image input, output, size, seconds (and per phase), peak GPU memory, degradations')
    .addHelpText('after', `
Modes:
  --model DR_DIR   Diff-Restorer: CLIP visual prompts → prompt processor → UNet + image control
                   network, UniPC → degradation-aware decoder. Base models come from the
                   checkpoint's model_index.json unless --sd/--clip are given.
  (no --model)     Training-free, public weights only: CLIP finds the degradations (Eq. 1, as
                   \`dr probe\`); SD 1.5 + the tile ControlNet re-denoise the input's latent
                   (img2img, --strength) toward "${CLEAN_TEXT}" and away
                   from the detected degradations (negative prompt).

Models are folders or Hugging Face repo ids found in the local cache (\`dr fetch REPO\`).
Images are padded (reflect) to the model's multiple and cropped back; alpha is kept; 16-bit
PNG/TIFF stay 16-bit. Outputs are written under a temporary name and renamed, so an interrupted
run leaves only complete files: rerun with --skip-existing to go on.

Examples:
  dr restore noisy.jpg -o clean.png
  dr restore photos/ -o restored/ --strength 0.4 --prompt "a cat on a sofa"
  dr restore photos/ -o restored/ --model dr-checkpoint --steps 20 --seed 1 --json`)
    .action((images: string[], opts: RestoreCliOptions, cmd: Command) =>
      runCommand(() => {
        refuseOtherModeOptions(cmd, opts.model ? 'diff-restorer' : 'training-free');
        return restore(images, opts);
      }));
}

type Mode = 'diff-restorer' | 'training-free';

/** Options only one mode reads (commander's names): given in the other, they would do nothing. */
const MODE_OF: Record<string, Mode> = { controlnet: 'training-free', strength: 'training-free', prompt: 'training-free', controlScale: 'training-free' };

function refuseOtherModeOptions(cmd: Command, mode: Mode): void {
  for (const o of cmd.options) {
    const key = o.attributeName();
    if (MODE_OF[key] && MODE_OF[key] !== mode && cmd.getOptionValueSource(key) === 'cli') {
      throw new DrError(mode === 'diff-restorer'
        ? `${o.long}: training-free only; with --model it would do nothing (leave it out, or drop --model for the training-free mode)`
        : `${o.long}: Diff-Restorer only (--model DR_DIR); the training-free mode would ignore it`);
    }
  }
}

/** The settings --json reports: those the mode ran with, and (training-free) the steps actually run. */
function reportedSettings(s: Settings, precision: Precision, mode: Mode): Record<string, unknown> {
  const ran: Record<string, unknown> = { ...s, precision };
  for (const key of Object.keys(MODE_OF)) if (MODE_OF[key] !== mode) delete ran[key];
  if (mode === 'training-free') ran.stepsRun = Math.min(Math.floor(s.steps * s.strength), s.steps);
  return ran;
}

interface Settings {
  steps: number;
  seed: number;
  guidance: number;
  strength: number;
  threshold: number;
  controlScale: number;
  precision: Precision;
  tile: number;
  tileOverlap: number;
  colorFix: ColorFix;
  prompt?: string;
  upscale: number;
  quality: number;
}

function parseSettings(opts: RestoreCliOptions, trained: boolean): Settings {
  const int = (name: string, v: string, min: number) =>
    numberOption(name, v, (n) => Number.isInteger(n) && n >= min, `an integer ≥ ${min}`)!;
  const colorFix = opts.colorFix as ColorFix;
  if (!COLOR_FIXES.includes(colorFix)) throw new DrError(`--color-fix: expected ${COLOR_FIXES.join(', ')}, got "${opts.colorFix}"`);
  const s: Settings = {
    steps: int('--steps', opts.steps, 1),
    seed: seedOption(opts.seed),
    guidance: numberOption('--guidance', opts.guidance, (n) => n >= 0, 'a number ≥ 0') ?? (trained ? 1 : 5),
    strength: numberOption('--strength', opts.strength, (n) => n > 0 && n <= 1, 'a number in (0, 1]')!,
    threshold: numberOption('--threshold', opts.threshold, (n) => n >= 0 && n <= 1, 'a probability in [0, 1]')!,
    controlScale: numberOption('--control-scale', opts.controlScale, (n) => n >= 0, 'a number ≥ 0')!,
    precision: precisionOption(opts.precision),
    tile: int('--tile', opts.tile, 64),
    tileOverlap: int('--tile-overlap', opts.tileOverlap, 0),
    colorFix,
    prompt: opts.prompt,
    upscale: numberOption('--upscale', opts.upscale, (n) => n >= 1 && n <= 16, 'a factor from 1 to 16')!,
    quality: numberOption('--quality', opts.quality, (n) => Number.isInteger(n) && n >= 1 && n <= 100, 'an integer in 1..100')!,
  };
  if (!trained && Math.floor(s.steps * s.strength) < 1) {
    throw new DrError(`--strength ${s.strength} of ${s.steps} steps runs no step (img2img runs floor(steps × strength)); raise --strength or --steps`);
  }
  if (s.tileOverlap >= s.tile) throw new DrError(`--tile-overlap (${s.tileOverlap}) must be smaller than --tile (${s.tile})`);
  return s;
}

/** Per phase: wall-clock seconds and the process's CPU seconds (PhaseTimer). */
interface PhaseTimes {
  wall: Record<string, number>;
  cpu: Record<string, number>;
}

/** One loaded pipeline, either mode, as the per-image loop sees it. */
interface Restorer {
  /** Image sides are padded to a multiple of this: the VAE's factor (the UNet takes any latent size). */
  multiple: number;
  /** Pixels per latent cell. */
  vaeFactor: number;
  run(e: Engine, lq: Tensor, rgb: RgbImage, onStep: (i: number, total: number) => void): Promise<{ image: Tensor; scores: Score[]; phases: PhaseTimes }>;
}

interface Score {
  name: string;
  probability: number;
}

/**
 * 'auto' runs f16 wherever the GPU computes it natively (diffusers users run SD in fp16 too; f32
 * weights are converted on upload); a software adapter emulates f16 and is faster in f32.
 */
function resolvePrecision(e: Engine, p: Precision): Precision {
  return p === 'auto' ? autoPrecision(e.kernels.path, e.gpu.hasF16, e.gpu.info.software) : p;
}

function loadRestorer(e: Engine, opts: RestoreCliOptions, s: Settings, say: (part: string) => void): Restorer {
  const tile = (vaeFactor: number) => ({ size: Math.floor(s.tile / vaeFactor), overlap: Math.floor(s.tileOverlap / vaeFactor) });
  if (opts.model) {
    const dir = modelDir(opts.model, '--model');
    const index = readModelIndex(dir);
    // A base model taken from model_index.json that is not there says where it was recorded.
    const recorded = (option: string, spec: string, find: (spec: string, option: string) => string): string => {
      try {
        return find(spec, option);
      } catch (err) {
        if (err instanceof DrError) throw new DrError(`${err.message} (the base model recorded in ${path.join(dir, 'model_index.json')}; ${option} gives another)`);
        throw err;
      }
    };
    const bases = {
      sd: opts.sd !== undefined ? sdModel(opts.sd, '--sd') : recorded('--sd', index.sd, sdModel),
      clip: opts.clip !== undefined ? modelDir(opts.clip, '--clip') : recorded('--clip', index.clip, modelDir),
    };
    const m = DiffRestorer.load(e, dir, bases, s.precision, (part) => say(part));
    const vaeFactor = 2 ** (m.vae.config.blockOut.length - 1);
    return {
      multiple: vaeFactor,
      vaeFactor,
      run: async (e, lq, rgb, onStep) => {
        const r = await m.restore(e, lq, rgb, { steps: s.steps, seed: s.seed, guidance: s.guidance, tile: tile(vaeFactor), onStep });
        return { image: r.image, scores: r.degradations, phases: { wall: r.seconds, cpu: r.cpuSeconds } };
      },
    };
  }
  const dirs = {
    sd: sdModel(opts.sd ?? DEFAULT_SD, '--sd'),
    clip: modelDir(opts.clip ?? DEFAULT_CLIP, '--clip'),
    controlnet: modelDir(opts.controlnet ?? DEFAULT_CONTROLNET, '--controlnet'),
  };
  const m = TrainingFreeRestorer.load(e, dirs, s.precision, say);
  const positive = positivePrompt(s.prompt);
  warnIfCut('--prompt: the positive prompt', positive, m.sd.tokenizer.tokenCount(positive), m.sd.tokenizer.contextLength);
  const vaeFactor = 2 ** (m.sd.vae.config.blockOut.length - 1);
  return {
    multiple: vaeFactor,
    vaeFactor,
    run: async (e, lq, rgb, onStep) => {
      const r = await m.restore(e, lq, rgb, {
        steps: s.steps, seed: s.seed, guidance: s.guidance, strength: s.strength, prompt: s.prompt, threshold: s.threshold,
        controlScale: s.controlScale, tile: tile(vaeFactor), onStep,
      });
      return { image: r.image, scores: r.scores.map((d) => ({ name: d.text, probability: d.probability })), phases: { wall: r.seconds, cpu: r.cpuSeconds } };
    },
  };
}

interface ImageResult {
  input: string;
  output: string;
  width: number;
  height: number;
  seconds: number;
  /** Seconds per pipeline phase (clip, control, denoise, decode, ...). */
  phases: Record<string, number>;
  /** The process's CPU seconds per phase, every thread (a CPU adapter's included). */
  phasesCpu: Record<string, number>;
  /** Peak GPU memory held by dr so far (weights + activations), bytes. */
  peakGpuBytes: number;
  /** Bytes of weights, pooled activation buffers and activation textures at that peak. */
  peakGpuSplit: { weights: number; buffers: number; textures: number };
  /**
   * Distinct compute pipelines built so far in this run (each a driver compile on a first run), and
   * seconds their creation took: a diagnostic, not the compile time (lavapipe compiles at the first
   * dispatch, and creation can wait behind queued work).
   */
  pipelines: number;
  pipelineSeconds: number;
  /** Degradations at or above --threshold, most likely first. */
  detected: string[];
  scores: Score[];
}

async function restore(inputs: string[], opts: RestoreCliOptions): Promise<number> {
  const s = parseSettings(opts, !!opts.model);
  if (opts.force && opts.skipExisting) throw new DrError('--force and --skip-existing contradict each other; choose one');
  const tree = listImageTree(inputs, !!opts.recursive);
  const listed = tree.map((t) => t.file);
  const rel = new Map(tree.map((t) => [t.file, t.rel]));
  // Without -o the outputs are NAME_restored.EXT beside the inputs: never inputs themselves,
  // so a rerun (--skip-existing) restores nothing twice.
  const files = opts.output === undefined ? listed.filter((f) => !path.parse(f).name.endsWith(RESTORED_SUFFIX)) : listed;
  if (files.length === 0) throw new DrError(`${listed[0]}: named *${RESTORED_SUFFIX}, an output of dr restore without -o; give -o to restore it again`);
  if (files.length < listed.length && !opts.json) process.stderr.write(`leaving out ${listed.length - files.length} images named *${RESTORED_SUFFIX} (outputs of dr restore)\n`);
  // -o is a folder when the whole run has several inputs, however few fall in this shard.
  const shard = parseShard(opts.shard);
  const mine = files.filter((f) => inShard(f, shard));
  shardNote(shard, mine.length, files.length, opts.json);
  const jobs = mine.map((input) => ({ input, output: mirrored(outputPathFor(input, opts.output, files.length > 1), rel.get(input)!, opts.output) }));
  // Every output checked before minutes of model loading: not an input, not a folder, in a writable folder.
  const inputFiles = new Inputs(files);
  const outputs = new Set<string>();
  for (const j of jobs) {
    if (outputs.has(j.output)) throw new DrError(`${j.output}: two inputs would be written here (same name); restore them separately`);
    outputs.add(j.output);
    checkOutputFile(j.output, inputFiles);
  }
  const existing = jobs.filter((j) => fs.existsSync(j.output));
  if (existing.length && !opts.force && !opts.skipExisting) {
    throw new DrError(`${existing[0].output}: already exists${existing.length > 1 ? ` (and ${existing.length - 1} more outputs)` : ''}; use --force to replace or --skip-existing to resume`);
  }
  if (opts.skipExisting && existing.length && !opts.json) process.stderr.write(`skipping ${existing.length} images whose output exists\n`);

  // Unreadable inputs are reported before minutes of model loading; the others still run.
  const batch = new Batch('written', opts.json);
  const todo: typeof jobs = [];
  for (const job of opts.skipExisting ? jobs.filter((j) => !existing.includes(j)) : jobs) {
    if (await batch.item(job.input, () => checkImage(job.input))) todo.push(job);
  }
  const results: ImageResult[] = [];
  // The precision actually run (auto resolves once the adapter is known).
  const precision = todo.length ? await restoreAll(todo, opts, s, results, batch) : s.precision;
  const errors = batch.errors;
  if (opts.json) {
    const mode = opts.model ? 'diff-restorer' : 'training-free';
    // The whole process so far (model loading included): its peak resident memory and CPU seconds, every thread.
    const u = process.resourceUsage();
    const usage = { maxRssBytes: u.maxRSS * 1024, cpuSeconds: (u.userCPUTime + u.systemCPUTime) / 1e6 };
    process.stdout.write(`${JSON.stringify({ mode, settings: reportedSettings(s, precision, mode), results, errors, skipped: opts.skipExisting ? existing.map((j) => j.input) : [], process: usage }, null, 2)}\n`);
  }
  return batch.finish(jobs.length, opts.skipExisting && existing.length ? `, ${existing.length} skipped (output exists)` : '');
}

async function restoreAll(todo: { input: string; output: string }[], opts: RestoreCliOptions, s: Settings, results: ImageResult[], batch: Batch): Promise<Precision> {
  // Like the progress bars: shown on a terminal only, so scripts see results and errors alone.
  const say = (part: string) => process.stderr.isTTY && !opts.json && process.stderr.write(`loading ${part}\n`);
  const e = await Engine.create();
  const precision = resolvePrecision(e, s.precision);
  const restorer = loadRestorer(e, opts, { ...s, precision }, say);
  for (const [n, job] of todo.entries()) {
    const started = performance.now();
    // Made at the first step, when the mode has said how many steps it runs (img2img runs fewer).
    let bar: Progress | undefined;
    const onStep = (_: number, total: number) => {
      bar ??= new Progress(`[${n + 1}/${todo.length}] ${job.input}`, total, { unit: 'steps' });
      bar.tick();
    };
    const done = await batch.item(job.input, async () => {
      const img = upscaled(await loadImage(job.input), s.upscale);
      checkSize(job.input, img, restorer.multiple);
      let restored: Float32Array;
      let scores: Score[];
      let phases: PhaseTimes;
      try {
        ({ restored, scores, phases } = await restoreOne(e, restorer, img, s.colorFix, onStep));
      } catch (err) {
        throw outOfMemoryHint(job.input, err);
      } finally {
        bar?.stop();
      }
      await saveImage(job.output, { width: img.width, height: img.height, rgb: restored, alpha: img.alpha }, { bitDepth: img.bitDepth, force: opts.force, quality: s.quality });
      return { img, scores, phases };
    });
    if (!done) continue;
    const { img, scores, phases } = done;
    batch.done++;
    const detected = scores.filter((d) => d.probability >= s.threshold).sort((a, b) => b.probability - a.probability);
    const r: ImageResult = {
      ...job, width: img.width, height: img.height, seconds: (performance.now() - started) / 1000,
      phases: phases.wall, phasesCpu: phases.cpu, peakGpuBytes: e.pool.stats.peakBytes, peakGpuSplit: e.pool.peakSplit,
      pipelines: e.counters.pipelines, pipelineSeconds: e.counters.pipelineMs / 1000,
      detected: detected.map((d) => d.name), scores,
    };
    results.push(r);
    if (!opts.json) {
      const found = detected.map((d) => `${d.name} (${d.probability.toFixed(2)})`).join(', ') || 'none';
      process.stderr.write(`[${n + 1}/${todo.length}] ${r.input} → ${r.output} (${r.seconds.toFixed(1)} s); detected: ${found}\n`);
      if (opts.stats) {
        const split = Object.entries(r.phases).map(([k, v]) => `${k} ${v.toFixed(2)} s`).join(', ');
        process.stderr.write(`  ${split}; peak GPU memory ${(r.peakGpuBytes / 2 ** 20).toFixed(0)} MiB\n`);
      }
    }
  }
  return precision;
}

/** In an output folder, an image found in a subfolder of a --recursive input goes to the same subfolder. */
function mirrored(out: string, rel: string, output: string | undefined): string {
  const sub = path.dirname(rel);
  if (output === undefined || sub === '.' || path.resolve(out) === path.resolve(output)) return out;
  const dir = path.join(path.dirname(out), sub);
  ensureDir(dir);
  return path.join(dir, path.basename(out));
}

/**
 * --upscale: the photo resized by k (sides truncated, as DiffBIR's int(side·k)) before restoration,
 * alpha too; the denoiser's tiles keep large results within GPU memory.
 */
function upscaled(img: LoadedImage, k: number): LoadedImage {
  if (k === 1) return img;
  const [W, H] = [Math.trunc(img.width * k), Math.trunc(img.height * k)];
  return {
    ...img, width: W, height: H,
    rgb: resizeBicubicPlanes(img.rgb, 3, img.width, img.height, W, H),
    alpha: img.alpha && resizeBicubicPlanes(img.alpha, 1, img.width, img.height, W, H),
  };
}

/** Reflect padding needs each side larger than its padding: below the multiple's half there is not enough image. */
function checkSize(file: string, img: LoadedImage, multiple: number): void {
  const min = multiple / 2 + 1;
  if (img.width < min || img.height < min) throw new DrError(`${file}: ${img.width}×${img.height} is too small (at least ${min}×${min} pixels)`);
}

/** Pads, restores, crops back and fixes colours; returns CHW [3, H, W] in about [0, 1]. */
async function restoreOne(
  e: Engine, r: Restorer, img: LoadedImage, colorFix: ColorFix, onStep: (i: number, total: number) => void,
): Promise<{ restored: Float32Array; scores: Score[]; phases: PhaseTimes }> {
  const { width: W, height: H } = img;
  const up = (n: number) => Math.ceil(n / r.multiple) * r.multiple;
  const input = e.keep(e.upload(img.rgb, [1, 3, H, W])); // [1, 3, H, W] in [0, 1]
  const lq = e.keep(reflectPad(e, input, 0, up(H) - H, 0, up(W) - W)); // [1, 3, H', W']
  try {
    const { image, scores, phases } = await r.run(e, lq, rgb8(img), onStep); // [1, 3, H', W'] in [-1, 1]
    const out = e.tidy(() => {
      // The colour fix and the output in f32 whatever the model ran in.
      const x = cropTo(e, scale(e, cast(e, image, 'f32'), 0.5, 0.5), H, W);
      return colorFix === 'wavelet' ? waveletColorFix(e, x, input) : colorFix === 'adain' ? adainColorFix(e, x, input) : x;
    });
    e.release(image);
    const restored = await e.read(out);
    e.release(out);
    return { restored, scores, phases };
  } finally {
    e.release(input);
    e.release(lq);
  }
}

/** The 8-bit HWC image CLIP's preprocessing takes. */
function rgb8(img: LoadedImage): RgbImage {
  const n = img.width * img.height;
  const data = new Uint8Array(3 * n);
  for (let i = 0; i < n; i++) for (let c = 0; c < 3; c++) data[i * 3 + c] = Math.round(img.rgb[c * n + i] * 255);
  return { width: img.width, height: img.height, data };
}

function outOfMemoryHint(file: string, err: unknown): unknown {
  if (err instanceof DrError && /ran out of memory/.test(err.message)) {
    return new DrError(`${file}: the GPU ran out of memory; try a smaller --tile (e.g. 384) or --precision f16`);
  }
  return err;
}
