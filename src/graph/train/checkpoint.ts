// A training run's checkpoints (issue 10): OUT_DIR/checkpoints/step-N/ holds the `dr init` layout
// (model_index.json, prompt_processor/, control/, decoder/) with the trained weights, plus what
// resumes the run exactly: optimizer.safetensors (AdamW moments, f32), train_state.json (step,
// per-parameter AdamW step counts, data position, seed, the run's settings) and, in stage 2,
// discriminator/. Each is written under a temporary name and renamed whole (src/atomic.ts); OUT_DIR
// itself then gets hard links to the newest one's files (parts renamed in one by one,
// train_state.json last), so `dr restore --model OUT_DIR` reads a whole checkpoint at any time.
import fs from 'node:fs';
import path from 'node:path';
import { beginTemp, commitTemp, dropTemp, writeAtomic } from '../../atomic.js';
import { DrError } from '../../errors.js';
import type { Engine } from '../../engine/engine.js';
import type { AdamW } from '../../engine/ops/adamw.js';
import type { Tensor } from '../../engine/tensor.js';
import { SafetensorsFile, writeSafetensorsLazy, type LazyTensorToWrite, type TensorToWrite } from '../../weights/safetensors.js';
import type { DataState } from './data.js';
import { saveDiscriminator, type NLayerDiscriminator } from './discriminator.js';

export const PARTS = ['prompt_processor', 'control', 'decoder'] as const;
export const STATE_FILE = 'train_state.json';
const OPTIMIZER_FILE = 'optimizer.safetensors';
const DISCRIMINATOR = 'discriminator';

/** What train_state.json holds. */
export interface TrainState {
  format: 1;
  stage: number;
  /** Optimizer steps done. */
  step: number;
  /** Images seen (micro-batches × batch). */
  images: number;
  /** Seconds of training since the run began, over every resumed session (log.jsonl's `seconds`). */
  seconds?: number;
  /** The next batch's data position. */
  data: DataState;
  /** Seeds every random stream of the run (data order, crops, degradations, timesteps, noise). */
  seed: number;
  /** AdamW's step count per parameter (a parameter without a gradient is not stepped). */
  optimizerSteps: Record<string, number>;
  /** The run's settings, reused by --resume where not given again. */
  settings: Record<string, unknown>;
}

/** What a checkpoint saves: the trained parameters by `<part>.<key>`, their optimizer, the stage-2 critic. */
export interface TrainedState {
  params: readonly (readonly [string, { t: Tensor }])[];
  optimizer: AdamW;
  critic?: { d: NLayerDiscriminator; params: Tensor[]; optimizer: AdamW };
}

export const stepDir = (out: string, step: number): string => path.join(out, 'checkpoints', `step-${step}`);

/**
 * Writes checkpoint `state.step` of the run in `out`, from the weights of `source` (a
 * checkpoint folder: the parts' untrained tensors and configs are copied from it) and the
 * trained tensors on the GPU. `index` is model_index.json's content. Returns the step folder.
 */
export async function writeCheckpoint(
  e: Engine, out: string, source: string, index: Record<string, unknown>, trained: TrainedState, state: TrainState, keep: number,
): Promise<string> {
  const target = stepDir(out, state.step);
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const tmp = beginTemp(target);
  try {
    fs.mkdirSync(tmp);
    const byPart = new Map<string, Map<string, Tensor>>();
    for (const [name, p] of trained.params) {
      const dot = name.indexOf('.');
      const part = name.slice(0, dot);
      if (!byPart.has(part)) byPart.set(part, new Map());
      byPart.get(part)!.set(name.slice(dot + 1), p.t);
    }
    for (const part of PARTS) await writePart(e, path.join(source, part), path.join(tmp, part), byPart.get(part) ?? new Map());
    writeAtomic(path.join(tmp, 'model_index.json'), `${JSON.stringify(index, null, 2)}\n`);

    const moments: TensorToWrite[] = [];
    const optimizerSteps: Record<string, number> = {};
    const addMoments = async (prefix: string, name: string, t: Tensor, opt: AdamW): Promise<void> => {
      const s = opt.state(t);
      if (!s) return;
      optimizerSteps[`${prefix}${name}`] = s.step;
      moments.push({ name: `m.${prefix}${name}`, dtype: 'F32', shape: [...t.shape], data: await e.read(s.m) });
      moments.push({ name: `v.${prefix}${name}`, dtype: 'F32', shape: [...t.shape], data: await e.read(s.v) });
    };
    for (const [name, p] of trained.params) await addMoments('', name, p.t, trained.optimizer);
    if (trained.critic) {
      const { d, optimizer } = trained.critic;
      await saveDiscriminator(e, d, path.join(tmp, DISCRIMINATOR));
      for (const [name, p] of d.trainableParams()) await addMoments(`${DISCRIMINATOR}.`, name, p.t, optimizer);
    }
    writeSafetensorsLazy(path.join(tmp, OPTIMIZER_FILE), moments.map((m) => ({ ...m, read: () => m.data })), { producer: 'dr train' });
    writeAtomic(path.join(tmp, STATE_FILE), `${JSON.stringify({ ...state, optimizerSteps }, null, 2)}\n`);
    commitTemp(tmp, target);
  } catch (err) {
    dropTemp(tmp);
    throw err;
  }
  publish(out, target);
  prune(out, keep);
  return target;
}

/** A part folder: config.json copied, model.safetensors with the trained tensors (f32) in place of the source's. */
async function writePart(e: Engine, src: string, dst: string, trained: Map<string, Tensor>): Promise<void> {
  fs.mkdirSync(dst);
  fs.copyFileSync(path.join(src, 'config.json'), path.join(dst, 'config.json'));
  const file = SafetensorsFile.open(path.join(src, 'model.safetensors'));
  try {
    const values = new Map<string, Float32Array>();
    for (const [key, t] of trained) {
      if (!file.tensors.has(key)) throw new Error(`trained parameter ${key} is not in ${file.path}`);
      values.set(key, await e.read(t));
    }
    const tensors: LazyTensorToWrite[] = [...file.tensors.values()].map((info) => {
      const v = values.get(info.name);
      return v ? { name: info.name, dtype: 'F32', shape: info.shape, read: () => v } : { name: info.name, dtype: info.dtype, shape: info.shape, read: () => file.readBytes(info.name) };
    });
    writeSafetensorsLazy(path.join(dst, 'model.safetensors'), tensors, { ...file.metadata, producer: 'dr train' });
  } finally {
    file.close();
  }
}

/** Hard links (copies where links are refused) of a folder's files, recursively. */
function linkTree(src: string, dst: string): void {
  if (fs.statSync(src).isDirectory()) {
    fs.mkdirSync(dst);
    for (const name of fs.readdirSync(src)) linkTree(path.join(src, name), path.join(dst, name));
    return;
  }
  try {
    fs.linkSync(src, dst);
  } catch {
    fs.copyFileSync(src, dst);
  }
}

/** OUT_DIR's top level becomes the checkpoint in `dir`: each entry put in place by a rename, train_state.json last. */
function publish(out: string, dir: string): void {
  const names = fs.readdirSync(dir).filter((n) => n !== STATE_FILE);
  if (!fs.existsSync(path.join(dir, DISCRIMINATOR))) fs.rmSync(path.join(out, DISCRIMINATOR), { recursive: true, force: true });
  for (const name of [...names, STATE_FILE]) {
    const target = path.join(out, name);
    const tmp = beginTemp(target);
    try {
      linkTree(path.join(dir, name), tmp);
      commitTemp(tmp, target);
    } catch (err) {
      dropTemp(tmp);
      throw new DrError(`${target}: cannot write (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
  }
}

/** The steps of the checkpoints under OUT_DIR/checkpoints, oldest first. */
export function checkpointSteps(out: string): number[] {
  let names: string[];
  try {
    names = fs.readdirSync(path.join(out, 'checkpoints'));
  } catch {
    return [];
  }
  return names.flatMap((n) => (/^step-\d+$/.test(n) ? [Number(n.slice(5))] : [])).sort((a, b) => a - b);
}

/** Keeps the newest `keep` step folders (OUT_DIR's own files are links: they stay). */
function prune(out: string, keep: number): void {
  const steps = checkpointSteps(out);
  for (const s of steps.slice(0, Math.max(0, steps.length - keep))) fs.rmSync(stepDir(out, s), { recursive: true, force: true });
}

/** A run's train_state.json, checked enough to resume from. */
export function readTrainState(out: string): TrainState {
  const file = path.join(out, STATE_FILE);
  let s: TrainState;
  try {
    s = JSON.parse(fs.readFileSync(file, 'utf8')) as TrainState;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new DrError(`${file}: ${code === 'ENOENT' ? 'no training state: --resume takes the -o folder of a dr train run' : `cannot read (${code ?? (err as Error).message})`}`);
  }
  if (s?.format !== 1 || !Number.isInteger(s.step) || !s.data || typeof s.settings !== 'object') throw new DrError(`${file}: not a dr train state (format 1)`);
  return s;
}

/** Loads the saved AdamW moments of a run into the optimizers. */
export function loadOptimizer(e: Engine, out: string, state: TrainState, trained: TrainedState): void {
  const file = SafetensorsFile.open(path.join(out, OPTIMIZER_FILE));
  try {
    const load = (name: string, t: Tensor, opt: AdamW): void => {
      const step = state.optimizerSteps[name];
      if (step === undefined) return;
      opt.setState(t, { m: file.readF32(`m.${name}`), v: file.readF32(`v.${name}`), step });
    };
    for (const [name, p] of trained.params) load(name, p.t, trained.optimizer);
    if (trained.critic) for (const [name, p] of trained.critic.d.trainableParams()) load(`${DISCRIMINATOR}.${name}`, p.t, trained.critic.optimizer);
  } finally {
    file.close();
  }
}

export const discriminatorDir = (out: string): string | undefined => (fs.existsSync(path.join(out, DISCRIMINATOR)) ? path.join(out, DISCRIMINATOR) : undefined);
