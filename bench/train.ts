// One training step (forward + backward + AdamW) of stage 1 or 2: seconds per step and peak GPU
// memory split into frozen and trainable weights, optimizer state, the batch, the activations
// the tape keeps for the backward and the gradients. Two models: the training fixture
// (dr-random on sd-tiny / clip-tiny, its stage<n>_io batch: 64×64, batch 2) and SD 1.5 size
// (random weights in the real configs, CLIP-L/14's vision tower, real VGG-19 widths; `dr init`
// on them, as a user would start), written once to --base.
//
//   npm run bench:train -- --stage 1                           # the fixture and its batch
//   npm run bench:train -- --stage 1 --latent 32               # the fixture's models on a random 256² batch
//   npm run bench:train -- --stage 1 --model sd15 --latent 8   # SD 1.5 size, 8×8 latents (64² px), batch 1
//   npm run bench:train -- --stage 1 --checkpointing           # control network under activation checkpointing
//   npm run bench:train -- --stage 2 --model sd15 --latent 16 --json
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { grad } from '../src/engine/autograd.js';
import { Engine } from '../src/engine/engine.js';
import { AdamW } from '../src/engine/ops/adamw.js';
import { ClipVisionModelWithProjection, readClipConfig } from '../src/graph/clip/model.js';
import { initDiffRestorer } from '../src/graph/diffrestorer/init.js';
import { readModelIndex, type DiffRestorerParts } from '../src/graph/diffrestorer/model.js';
import type { Module, Precision } from '../src/graph/module.js';
import { readUNetConfig, UNet2DConditionModel } from '../src/graph/sd/unet.js';
import { AutoencoderKL, readVaeConfig } from '../src/graph/sd/vae.js';
import type { Stage } from '../src/graph/train/stage.js';
import { Stage1 } from '../src/graph/train/stage1.js';
import { Stage2 } from '../src/graph/train/stage2.js';
import { Vgg19Features } from '../src/graph/train/vgg19.js';
import { SafetensorsFile, writeSafetensors, writeSafetensorsLazy } from '../src/weights/safetensors.js';
import { CLIP_L } from './clip.js';
import { randomCheckpoint } from './random.js';
import { SD15_UNET_CONFIG, SD15_VAE_CONFIG } from './sd.js';
import { table } from './tables.js';
import { adapterInfo, fmt, hostMemory, machineInfo, MiB, progress, rand } from './timing.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIXTURES = path.resolve(REPO, '../shared/fixtures');
const TRAIN = path.join(FIXTURES, 'train');

interface Options {
  stage: 1 | 2;
  model: 'tiny' | 'sd15';
  /** Latent side of a random batch (default: the fixture's batch for tiny, 8 for sd15). */
  latent?: number;
  batch: number;
  steps: number;
  precision: Precision;
  /** Stage 1: activation checkpointing of the control network. */
  checkpointing: boolean;
  base: string;
  json: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { stage: 1, model: 'tiny', batch: 1, steps: 2, precision: 'f32', checkpointing: false, base: path.join(os.tmpdir(), 'dr-bench-train-sd15'), json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (): string => argv[++i] ?? fail(`${a} needs a value`);
    if (a === '--stage') o.stage = Number(value()) as 1 | 2;
    else if (a === '--model') o.model = value() as Options['model'];
    else if (a === '--latent') o.latent = Number(value());
    else if (a === '--batch') o.batch = Number(value());
    else if (a === '--steps') o.steps = Number(value());
    else if (a === '--precision') o.precision = value() as Precision;
    else if (a === '--base') o.base = path.resolve(value());
    else if (a === '--checkpointing') o.checkpointing = true;
    else if (a === '--json') o.json = true;
    else fail(`unknown option ${a}`);
  }
  if (o.stage !== 1 && o.stage !== 2) fail('--stage takes 1 or 2');
  if (o.model !== 'tiny' && o.model !== 'sd15') fail('--model takes tiny or sd15');
  if (o.precision !== 'f32' && o.precision !== 'f16') fail('--precision takes f32 or f16');
  for (const [k, v] of [['--latent', o.latent ?? 1], ['--batch', o.batch], ['--steps', o.steps]] as const) if (!Number.isInteger(v) || v < 1) fail(`${k} takes a positive integer`);
  return o;
}

function fail(message: string): never {
  console.error(`bench:train: ${message}`);
  process.exit(2);
}

const writeJson = (file: string, value: unknown): void => {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(value, null, 2));
};

/** A module's random f32 weights to `file` (its config already written beside it). */
function writeRandom(file: string, root: Module): void {
  progress(`  writing ${path.relative(path.dirname(path.dirname(file)), file)}`);
  writeSafetensorsLazy(file, randomCheckpoint(root));
}

/**
 * SD 1.5 (UNet, VAE, the fixture's scheduler), CLIP-L/14 and VGG-19 with random weights, and a
 * `dr init` checkpoint on them, under `base` (kept for the next run: about 7 GB).
 */
async function sd15Base(base: string): Promise<{ dir: string; bases: DiffRestorerParts; vgg: string }> {
  const sd = path.join(base, 'sd');
  const clip = path.join(base, 'clip');
  const out = { dir: path.join(base, 'dr'), bases: { sd, clip }, vgg: path.join(base, 'vgg19.safetensors') };
  if (fs.existsSync(path.join(base, 'complete'))) return out;
  progress(`building the SD 1.5-sized random-weight models in ${base} (once)`);
  fs.rmSync(base, { recursive: true, force: true });
  writeJson(path.join(sd, 'unet/config.json'), SD15_UNET_CONFIG);
  writeRandom(path.join(sd, 'unet/diffusion_pytorch_model.safetensors'), new UNet2DConditionModel(readUNetConfig(path.join(sd, 'unet'))));
  writeJson(path.join(sd, 'vae/config.json'), SD15_VAE_CONFIG);
  writeRandom(path.join(sd, 'vae/diffusion_pytorch_model.safetensors'), new AutoencoderKL(readVaeConfig(path.join(sd, 'vae'))));
  fs.cpSync(path.join(FIXTURES, 'sd-tiny/scheduler'), path.join(sd, 'scheduler'), { recursive: true });
  const { text: t, vision: v } = CLIP_L;
  const tower = (c: typeof t | typeof v) => ({ hidden_size: c.hidden, intermediate_size: c.intermediate, num_hidden_layers: c.layers, num_attention_heads: c.heads, layer_norm_eps: c.eps, hidden_act: c.act });
  writeJson(path.join(clip, 'config.json'), {
    projection_dim: CLIP_L.projectionDim,
    text_config: { ...tower(t), vocab_size: t.vocab, max_position_embeddings: t.maxPositions, eos_token_id: t.eosTokenId },
    vision_config: { ...tower(v), image_size: v.imageSize, patch_size: v.patchSize, num_channels: v.channels },
  });
  writeRandom(path.join(clip, 'model.safetensors'), new ClipVisionModelWithProjection(readClipConfig(clip)));
  writeRandom(out.vgg, new Vgg19Features([64, 128, 256, 512, 512]));
  progress('  dr init');
  await initDiffRestorer({ sd, clip, out: out.dir, seed: 0 });
  fs.writeFileSync(path.join(base, 'complete'), '');
  return out;
}

/** A random batch in the stage<n>_io names, written to `file`. */
function writeBatch(file: string, B: number, side: number, clipSide: number): void {
  const f32 = (name: string, shape: number[], seed: number, lo = 0, hi = 1) => {
    const data = rand(shape.reduce((a, d) => a * d, 1), seed).map((x) => lo + ((x + 1) / 2) * (hi - lo));
    return { name, dtype: 'F32' as const, shape, data };
  };
  const i32 = (name: string, values: number[]) => ({ name, dtype: 'I32' as const, shape: [B], data: Int32Array.from(values) });
  writeSafetensors(file, [
    f32('pixels_hq', [B, 3, side, side], 1), f32('pixels_lq', [B, 3, side, side], 2), f32('clip_pixel_values', [B, 3, clipSide, clipSide], 3, -2, 2),
    f32('noise', [B, 4, side / 8, side / 8], 4, -2, 2),
    i32('timesteps', Array.from({ length: B }, (_, b) => (100 + 400 * b) % 1000)), i32('labels', Array.from({ length: B }, (_, b) => b % 8)),
  ]);
}

interface StepResult {
  step: number;
  seconds: number;
  loss: number;
  peakMiB: number;
  savedMiB: number;
  gradMiB: number;
  tapeOps: number;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const machine = machineInfo();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-bench-train-'));
  try {
    let dir: string;
    let bases: DiffRestorerParts;
    let vgg: string;
    let batchFile = path.join(TRAIN, `stage${o.stage}_io.safetensors`);
    if (o.model === 'tiny') {
      dir = path.join(TRAIN, 'dr-random');
      const index = readModelIndex(dir);
      bases = { sd: path.resolve(REPO, index.sd), clip: path.resolve(REPO, index.clip) };
      vgg = path.join(TRAIN, 'vgg19.safetensors');
    } else {
      ({ dir, bases, vgg } = await sd15Base(o.base));
      o.latent ??= 8;
    }
    if (o.latent) {
      batchFile = path.join(tmp, 'batch.safetensors');
      writeBatch(batchFile, o.batch, 8 * o.latent, readClipConfig(bases.clip).vision.imageSize);
    }
    const batch = SafetensorsFile.open(batchFile);
    const [B, , H, W] = batch.info('pixels_hq').shape;
    const input = `${B}×3×${H}×${W} (latent ${H / 8}×${W / 8})`;
    const e = await Engine.create();
    const adapter = adapterInfo(e);
    const t0 = performance.now();
    const stage: Stage = o.stage === 1
      ? Stage1.load(e, batch, { dir, bases, precision: o.precision, checkpointing: o.checkpointing })
      : Stage2.load(e, batch, { dir, bases, precision: o.precision, vgg });
    batch.close();
    const loadSeconds = (performance.now() - t0) / 1e3;
    const trainable = stage.params.map(([, p]) => p.t);
    const trainableBytes = trainable.reduce((s, t) => s + t.byteLength, 0);
    const weightBytes = e.pool.stats.weightBytes;
    const batchBytes = e.pool.stats.inUseBytes; // what the stage keeps from the frozen parts' pass
    const setupPeak = e.pool.stats.peakBytes;
    progress(`stage ${o.stage}, ${o.model}, ${input}: loaded and frozen parts run in ${fmt(loadSeconds, 1)} s; ` +
      `${fmt(trainableBytes / 4e6, 1)} M trainable params; setup peak ${fmt(setupPeak / MiB, 0)} MiB`);

    const opt = new AdamW(e, { lr: 1e-5, weightDecay: 1e-2 });
    // The moments exist from the first timed step on, as in every step of a run but its first:
    // one update on zero gradients makes them (it only decays the random weights a little).
    e.tidy(() => opt.step(trainable.map((param) => ({ param, grad: e.zeros(param.shape) }))));
    const steps: StepResult[] = [];
    for (let step = 1; step <= o.steps; step++) {
      // The step's own peak: the pool's idle buffers from before are dropped first.
      await e.sync();
      e.pool.trim();
      e.pool.peakBytes = e.pool.totalBytes;
      const s0 = performance.now();
      const { loss, grads, stats } = grad(e, () => stage.losses(e).loss, trainable);
      const gradBytes = grads.reduce((s, g) => s + (g?.byteLength ?? 0), 0);
      opt.step(trainable.map((param, k) => ({ param, grad: grads[k] })));
      const value = (await e.read(loss))[0];
      const seconds = (performance.now() - s0) / 1e3;
      for (const t of [loss, ...grads]) if (t) e.release(t);
      steps.push({ step, seconds, loss: value, peakMiB: e.pool.stats.peakBytes / MiB, savedMiB: stats.savedBytes / MiB, gradMiB: gradBytes / MiB, tapeOps: stats.nodes });
      progress(`  step ${step}: ${fmt(seconds, 2)} s, loss ${value.toPrecision(5)}, peak ${fmt(e.pool.stats.peakBytes / MiB, 0)} MiB`);
    }
    stage.dispose(e);

    // On the CPU-adapter kernel path the pool's weight bytes also count each weight's texture.
    const memory = {
      frozenWeightsMiB: (weightBytes - trainableBytes) / MiB,
      weightsAfterMiB: e.pool.stats.weightBytes / MiB,
      trainableWeightsMiB: trainableBytes / MiB,
      optimizerMiB: opt.stateBytes / MiB,
      batchMiB: batchBytes / MiB,
      setupPeakMiB: setupPeak / MiB,
      ...hostMemory(),
    };
    const command = `npm run bench:train -- ${process.argv.slice(2).join(' ')}`.trim();
    const kernels = `${e.kernels.path} (${e.kernels.reason})`;
    const header = { date: new Date().toISOString(), command, machine, adapter, kernels, options: o, model: o.model === 'tiny' ? 'dr-random (fixture)' : 'SD 1.5 size (random weights)', input, loadSeconds };
    if (o.json) {
      process.stdout.write(`${JSON.stringify({ ...header, memory, steps }, null, 2)}\n`);
    } else {
      console.log(`${header.date}; ${machine.cpu}, ${machine.cores} cores, load ${machine.loadavg.join(' ')}; adapter ${adapter.name} (${adapter.backend}), kernels ${kernels}`);
      console.log(`stage ${o.stage}, ${header.model}, ${input}, frozen ${o.precision}; memory (MiB): ` +
        Object.entries(memory).map(([k, v]) => `${k.replace(/MiB$/, '')} ${fmt(v, 1)}`).join(', '));
      console.log(table([
        ['step', 's', 'loss', 'peak GPU MiB', 'activations kept MiB', 'gradients MiB', 'ops taped'],
        ...steps.map((s) => [String(s.step), fmt(s.seconds, 2), s.loss.toPrecision(5), fmt(s.peakMiB, 1), fmt(s.savedMiB, 1), fmt(s.gradMiB, 1), String(s.tapeOps)]),
      ]));
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  process.exit(0); // a live Dawn instance keeps the event loop running
}

await main();
