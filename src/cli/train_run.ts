// `dr train -o OUT_DIR`: the training run (issue 10): batches from src/graph/train/data.ts, AdamW
// steps with gradient accumulation, checkpoints (src/graph/train/checkpoint.ts) every N steps and
// at the end, exact resumption, log.jsonl, previews, and a clean stop on Ctrl-C or a NaN loss.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { checkOutputFolder, Inputs, writeAtomic } from '../atomic.js';
import { DrError } from '../errors.js';
import { grad } from '../engine/autograd.js';
import { Engine } from '../engine/engine.js';
import { accumulateGrads, AdamW } from '../engine/ops/adamw.js';
import type { Tensor } from '../engine/tensor.js';
import { readClipImageConfig } from '../graph/clip/preprocess.js';
import { readPromptProcessorConfig } from '../graph/diffrestorer/prompt_processor.js';
import type { Precision } from '../graph/module.js';
import { SdBase } from '../graph/sd/single_file.js';
import { readUniPCConfig } from '../graph/sd/unipc.js';
import { readVaeConfig } from '../graph/sd/vae.js';
import {
  discriminatorDir, loadOptimizer, readTrainState, STATE_FILE, writeCheckpoint, type TrainedState, type TrainState,
} from '../graph/train/checkpoint.js';
import { batchReader, dataSourceFromCli, TrainData, type DataOptions } from '../graph/train/data.js';
import type { Stage } from '../graph/train/stage.js';
import { Stage2 } from '../graph/train/stage2.js';
import { Progress } from './progress.js';

/** The settings of a run that --resume takes from train_state.json when not given again. */
export interface RunSettings {
  stage: string;
  data?: string[];
  degrade?: string[];
  lq?: string;
  hq?: string;
  labels?: string;
  recursive?: boolean;
  skipSmall?: boolean;
  size: number;
  batch: number;
  accumulate: number;
  lr: number;
  weightDecay: number;
  advWeight: number;
  precision: Precision;
  seed: number;
  vgg?: string;
}

export interface RunOptions extends RunSettings {
  /** The checkpoint to start from (the run's own OUT_DIR when resuming). */
  model: string;
  /** Base model folders (resolved) and how model_index.json records them (relative paths against OUT_DIR). */
  bases: { sd: string; clip: string };
  baseSpecs: { sd: string; clip: string };
  output: string;
  resume: boolean;
  steps?: number;
  epochs?: number;
  checkpointEvery: number;
  keep: number;
  previewEvery?: number;
  workers?: number;
  json: boolean;
  discriminator?: string;
  /** Builds the stage's models (no batch yet). */
  build: (e: Engine, dir: string, discriminator: string | undefined) => Stage;
}

/** Preview images: the first samples of the data (epoch 0, the run's seed), the same at every preview. */
const PREVIEWS = 4;

const STAGE_TERMS: Record<string, string[]> = {
  1: ['loss_diff', 'loss_deg', 'loss_rec'],
  2: ['loss_mse', 'loss_per', 'loss_adv', 'loss_disc'],
};

/** Refuses what would overwrite an input or another run, before any work. */
export function checkRunOutput(out: string, resume: boolean, inputs: string[]): void {
  if (resume) {
    if (!fs.existsSync(path.join(out, STATE_FILE))) throw new DrError(`${out}: no ${STATE_FILE}: --resume takes the -o folder of a dr train run`);
    return;
  }
  checkOutputFolder(out, 'tree', new Inputs(inputs));
  let names: string[] = [];
  try {
    names = fs.readdirSync(out);
  } catch {
    // missing: created below
  }
  if (fs.existsSync(path.join(out, STATE_FILE))) throw new DrError(`${out}: holds a training run; continue it with --resume ${out}, or choose another -o folder`);
  if (names.length) throw new DrError(`${out}: is not empty; choose a new -o folder for the run`);
  fs.mkdirSync(out, { recursive: true });
}

/** Runs the training; returns the exit status (0, or 130/143 after a checkpoint on Ctrl-C/SIGTERM). */
export async function trainRun(o: RunOptions): Promise<number> {
  const out = o.output;
  const prev = o.resume ? readTrainState(out) : undefined;
  const sd = SdBase.open(o.bases.sd);
  let numTrainTimesteps: number;
  let latentChannels: number;
  let latentFactor: number;
  try {
    numTrainTimesteps = readUniPCConfig(path.join(sd.dir('scheduler'), 'scheduler_config.json')).numTrainTimesteps;
    const vae = readVaeConfig(sd.dir('vae'));
    latentChannels = vae.latentChannels;
    latentFactor = 2 ** (vae.blockOut.length - 1);
  } finally {
    sd.close();
  }
  const dataOptions: DataOptions = {
    source: dataSourceFromCli(o),
    size: o.size, batch: o.batch, seed: o.seed, small: o.skipSmall ? 'skip' : 'upscale',
    classes: readPromptProcessorConfig(path.join(o.model, 'prompt_processor')).degradations,
    clip: readClipImageConfig(o.bases.clip), numTrainTimesteps, latentChannels, latentFactor, workers: o.workers,
  };
  const data = TrainData.open(dataOptions, prev?.data);
  const previews = o.previewEvery ? await previewInputs(TrainData.open({ ...dataOptions, batch: Math.min(PREVIEWS, data.items.length), prefetch: false, workers: 0 }), path.join(out, 'previews', 'inputs')) : [];
  const perStep = o.batch * o.accumulate;
  const steps = o.steps ?? Math.ceil((o.epochs! * data.items.length) / perStep);
  const start = prev?.step ?? 0;
  if (steps <= start) throw new DrError(`--steps ${steps}: the run in ${out} is already at step ${start}; give more steps to continue it`);

  const e = await Engine.create();
  const stage = o.build(e, o.model, o.discriminator ?? (prev ? discriminatorDir(out) : undefined));
  const optimizer = new AdamW(e, { lr: o.lr, weightDecay: o.weightDecay });
  const critic = stage instanceof Stage2 && stage.critic ? { d: stage.critic.d, params: stage.critic.params, optimizer: stage.critic.optimizer } : undefined;
  const trained: TrainedState = { params: stage.params, optimizer, critic };
  if (prev) loadOptimizer(e, out, prev, trained);

  const index = JSON.parse(fs.readFileSync(path.join(o.model, 'model_index.json'), 'utf8')) as Record<string, unknown>;
  index.base = { ...(index.base as object), ...o.baseSpecs };
  const settings: RunSettings = {
    stage: o.stage, data: o.data, degrade: o.degrade, lq: o.lq, hq: o.hq, labels: o.labels, recursive: o.recursive, skipSmall: o.skipSmall,
    size: o.size, batch: o.batch, accumulate: o.accumulate, lr: o.lr, weightDecay: o.weightDecay, advWeight: o.advWeight,
    precision: o.precision, seed: o.seed, vgg: o.vgg,
  };
  const logFile = path.join(out, 'log.jsonl');
  // A resumed run logs again the steps after its checkpoint.
  if (prev && fs.existsSync(logFile)) {
    const kept = fs.readFileSync(logFile, 'utf8').split('\n').filter((l) => l && (JSON.parse(l) as { step: number }).step <= start);
    writeAtomic(logFile, kept.map((l) => `${l}\n`).join(''));
  }

  let source = o.model;
  let images = prev?.images ?? 0;
  // `seconds` in the log and the state: training time since the run began, resumed sessions included.
  const secondsBefore = prev?.seconds ?? 0;
  const t0 = performance.now();
  const elapsed = (): number => secondsBefore + (performance.now() - t0) / 1000;
  let lastCheckpoint = prev ? start : undefined;
  const checkpoint = async (step: number): Promise<void> => {
    const state: TrainState = { format: 1, stage: Number(o.stage), step, images, seconds: elapsed(), data: data.state(), seed: o.seed, optimizerSteps: {}, settings: { ...settings } };
    source = await writeCheckpoint(e, out, source, index, trained, state, o.keep);
    lastCheckpoint = step;
    if (o.previewEvery && (step % o.previewEvery === 0 || step === steps)) await preview(previews, source, path.join(out, 'previews', `step_${step}`));
  };

  // Ctrl-C / SIGTERM: the step under way finishes and is checkpointed; a second one stops at once.
  let stopSignal: NodeJS.Signals | undefined;
  const restoreHandlers: (() => void)[] = [];
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    const saved = process.listeners(sig);
    process.removeAllListeners(sig);
    const onSignal = (): void => {
      if (stopSignal) for (const h of saved) (h as () => void)();
      stopSignal = sig;
      process.stderr.write(`\ndr: ${sig === 'SIGINT' ? 'Ctrl-C' : sig}: finishing this step and writing a checkpoint (again to stop at once)\n`);
    };
    process.on(sig, onSignal);
    restoreHandlers.push(() => {
      process.removeListener(sig, onSignal);
      for (const h of saved) process.on(sig, h as () => void);
    });
  }

  const terms = STAGE_TERMS[o.stage];
  const bar = new Progress(`train stage ${o.stage}`, steps, { unit: 'steps', start, info: true, minTotal: 1 });
  let last: Record<string, number> = {};
  let step = start;
  try {
    while (step < steps && !stopSignal) {
      const sums: Record<string, number> = {};
      const acc: (Tensor | undefined)[] = stage.params.map(() => undefined);
      try {
        for (let k = 0; k < o.accumulate; k++) {
          const batch = await data.next();
          stage.setBatch(e, batchReader(batch));
          const kept: Record<string, Tensor> = {};
          const { loss, grads } = grad(e, () => {
            const all = stage.losses(e);
            for (const [name, t] of Object.entries(all)) if (name !== 'loss') kept[name] = e.keep(t);
            return all.loss;
          }, stage.params.map(([, p]) => p.t));
          try {
            sums.loss = (sums.loss ?? 0) + (await e.read(loss))[0];
            for (const [name, t] of Object.entries(kept)) sums[name] = (sums[name] ?? 0) + (await e.read(t))[0];
          } finally {
            for (const t of [loss, ...Object.values(kept)]) e.release(t);
          }
          accumulateGrads(e, acc, grads);
          images += o.batch;
        }
        const bad = Object.entries(sums).find(([, v]) => !Number.isFinite(v));
        if (bad) {
          const kept = lastCheckpoint === undefined ? `no checkpoint was written yet (the model in ${o.model} is untouched)` : `${out} holds the last good checkpoint (step ${lastCheckpoint})`;
          throw new DrError(`step ${step + 1}: ${bad[0]} is ${bad[1]}; training stopped: ${kept}; try a lower --lr`);
        }
        optimizer.step(stage.params.flatMap(([, p], i) => (acc[i] ? [{ param: p.t, grad: acc[i] }] : [])), 1 / o.accumulate);
      } finally {
        for (const g of acc) if (g) e.release(g);
      }
      const after = stage.afterStep?.(e);
      step++;
      last = Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, v / o.accumulate]));
      for (const [name, t] of Object.entries(after ?? {})) {
        last[name] = (await e.read(t))[0];
        e.release(t);
      }
      const line: Record<string, number> = { step, loss: last.loss };
      for (const t of terms) if (last[t] !== undefined) line[t] = last[t];
      Object.assign(line, { lr: o.lr, seconds: Number(elapsed().toFixed(3)), images });
      fs.appendFileSync(logFile, `${JSON.stringify(line)}\n`);
      const rate = (step - start) / ((performance.now() - t0) / 1000);
      bar.tick(1, [`loss ${last.loss.toPrecision(4)}`, ...terms.filter((t) => last[t] !== undefined).map((t) => `${t.slice(5)} ${last[t].toPrecision(3)}`), `${rate.toFixed(2)} steps/s`].join(' '));
      // A preview restores from a checkpoint: its steps write one too.
      if (step % o.checkpointEvery === 0 || step === steps || stopSignal || (o.previewEvery && step % o.previewEvery === 0)) await checkpoint(step);
    }
  } finally {
    bar.stop();
    data.dispose();
    for (const r of restoreHandlers) r();
  }
  stage.dispose(e);
  const seconds = (performance.now() - t0) / 1000;
  const summary = {
    output: out, stage: Number(o.stage), steps: step, from_step: start, images, seconds: Number(seconds.toFixed(3)),
    losses: last, checkpoint: lastCheckpoint, data: data.stats(), peak_gpu_bytes: e.pool.stats.peakBytes, interrupted: stopSignal ?? null,
  };
  if (o.json) process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  else process.stdout.write(`${out}\n`);
  if (stopSignal) {
    process.stderr.write(`dr: stopped at step ${step}; continue with --resume ${out}\n`);
    return stopSignal === 'SIGINT' ? 130 : 143;
  }
  return 0;
}

/** Writes the preview inputs once (LQ crops, with their HQ beside them for comparison); returns the LQ files. */
async function previewInputs(data: TrainData, dir: string): Promise<string[]> {
  const b = await data.next();
  data.dispose();
  fs.mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  const [B, , H, W] = b.pixels_lq.shape;
  for (let i = 0; i < B; i++) {
    for (const [kind, a] of [['lq', b.pixels_lq], ['hq', b.pixels_hq]] as const) {
      const n = H * W;
      const px = new Uint8Array(3 * n);
      for (let c = 0; c < 3; c++) for (let j = 0; j < n; j++) px[j * 3 + c] = Math.round(Math.min(1, Math.max(0, a.data[(i * 3 + c) * n + j])) * 255);
      const file = path.join(dir, `${i}_${kind}.png`);
      writeAtomic(file, await sharp(px, { raw: { width: W, height: H, channels: 3 } }).png().toBuffer());
      if (kind === 'lq') files.push(file);
    }
  }
  return files;
}

/**
 * Restores the preview inputs with the checkpoint in `dir` by `dr restore` itself, in a process
 * of its own (its models are freed when it ends); the run's adapter is inherited (DR_ADAPTER).
 */
async function preview(files: string[], dir: string, outDir: string): Promise<void> {
  fs.mkdirSync(outDir, { recursive: true });
  const args = [process.argv[1], 'restore', ...files, '--model', dir, '-o', `${outDir}${path.sep}`, '--force'];
  await new Promise<void>((resolve, reject) => {
    execFile(process.execPath, args, { maxBuffer: 16 << 20 }, (err, _stdout, stderr) => {
      if (err) reject(new DrError(`preview of ${dir} failed: ${stderr.split('\n').filter((l) => l.startsWith('dr: ')).join(' ') || err.message}`));
      else resolve();
    });
  });
}
