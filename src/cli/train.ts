import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { checkOutputFile, Inputs } from '../atomic.js';
import { DrError } from '../errors.js';
import { Engine } from '../engine/engine.js';
import { readModelIndex, type DiffRestorerParts } from '../graph/diffrestorer/model.js';
import type { Precision } from '../graph/module.js';
import { trainSteps, type Stage } from '../graph/train/stage.js';
import { Stage1 } from '../graph/train/stage1.js';
import { Stage2 } from '../graph/train/stage2.js';
import { NLayerDiscriminator, PIX2PIX_DISCRIMINATOR } from '../graph/train/discriminator.js';
import type { AdamWOptions } from '../engine/ops/adamw.js';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../weights/safetensors.js';
import { modelDir, sdModel } from './models.js';
import { ADAPTER_HELP, numberOption, runCommand, seedOption } from './run.js';
import { checkRunOutput, trainRun, type RunSettings } from './train_run.js';
import { readTrainState } from '../graph/train/checkpoint.js';
import { DATA_HELP } from '../graph/train/data.js';

interface TrainCliOptions {
  stage: string;
  model?: string;
  batchFile?: string;
  dump?: string;
  steps?: string;
  output?: string;
  data?: string[];
  degrade?: string[];
  lq?: string;
  hq?: string;
  labels?: string;
  recursive?: boolean;
  skipSmall?: boolean;
  size: string;
  batch: string;
  accumulate: string;
  epochs?: string;
  checkpointEvery: string;
  keep: string;
  resume?: string;
  seed: string;
  previewEvery?: string;
  workers?: string;
  checkpointing?: boolean;
  json?: boolean;
  lr: string;
  weightDecay: string;
  vgg?: string;
  advWeight: string;
  discriminator?: string;
  precision: string;
  sd?: string;
  clip?: string;
  force?: boolean;
}

/** What a stage is built from: the checkpoint, its bases, the batch and the options a stage may read. */
export interface StageInputs {
  e: Engine;
  dir: string;
  bases: DiffRestorerParts;
  /** Weights of the frozen modules. */
  precision: Precision;
  /** --checkpointing: stage 1's control network keeps only each layer's inputs for the backward. */
  checkpointing?: boolean;
  /** --vgg: VGG-19 features for stage 2's perceptual loss. */
  vgg?: string;
  /** Stage 2's adversarial weight (0: no critic) and the critic to start from (a fresh PatchGAN without one). */
  adversarial: { weight: number; discriminator?: string; optimizer: AdamWOptions };
}

/** The training stages by --stage: each loads its models (the batch comes with setBatch). */
const STAGES: Record<string, (s: StageInputs) => Stage> = {
  1: (s) => Stage1.open(s.e, s),
  2: (s) => {
    if (!s.vgg) throw new DrError('--stage 2 needs --vgg FILE (VGG-19 features weights for the perceptual loss)');
    const a = s.adversarial;
    const critic = a.weight > 0 ? {
      weight: a.weight, optimizer: a.optimizer,
      discriminator: a.discriminator ? NLayerDiscriminator.load(s.e, a.discriminator) : NLayerDiscriminator.init(s.e, PIX2PIX_DISCRIMINATOR, 0),
    } : undefined;
    return Stage2.open(s.e, { ...s, vgg: s.vgg, critic });
  },
};

export function trainCommand(): Command {
  return new Command('train')
    .description('train a Diff-Restorer checkpoint (stage 1 or 2) from a folder of photos into -o OUT_DIR, resumable; or check mode: AdamW steps on one --batch-file, dumping losses, gradients and parameters')
    .option('--stage <n>', '1 (prompt processor + control: L_diff + L_deg + L_rec) or 2 (degradation-aware decoder)')
    .option('-m, --model <dir>', 'a Diff-Restorer checkpoint to start from (see `dr init`); its model_index.json names the base models')
    .option('-o, --output <dir>', 'the run folder: the latest checkpoint (dr init layout, restorable), checkpoints/step-N/, log.jsonl, previews/')
    .option('--resume <dir>', 'continue the run in this folder from its latest checkpoint, exactly (settings as saved unless given again)')
    .option('--data <dir>', 'clean photos; LQ images synthesised on the fly (repeatable)', collect, [])
    .option('--degrade <chain>', 'a dr degrade --type chain each sample may draw (repeatable; default the eight classes); CHAIN=CLASS sets its label', collect, [])
    .option('--lq <dir>', 'paired data: degraded images (with --hq)')
    .option('--hq <dir>', 'paired data: clean images matched by file name (with --lq)')
    .option('--labels <file.csv>', 'paired data: "name,label" lines (default: the --lq sub-folder names)')
    .option('--recursive', 'read the data folders with their subfolders')
    .option('--skip-small', 'leave out images smaller than --size (default: upscale them)')
    .option('--size <px>', 'crop side (a multiple of the VAE factor, 8)', '512')
    .option('--batch <n>', 'images per micro-batch', '1')
    .option('--accumulate <k>', 'micro-batches per AdamW step (effective batch = batch × k)', '1')
    .option('--steps <n>', 'AdamW steps of the whole run (a resumed run continues up to it); check mode: steps on the batch (default 1)')
    .option('--epochs <n>', 'instead of --steps: passes over the data')
    .option('--checkpoint-every <n>', 'write a checkpoint every n steps (and at the end, and on Ctrl-C)', '500')
    .option('--keep <k>', 'checkpoints kept under OUT_DIR/checkpoints/ (the latest is also OUT_DIR itself)', '3')
    .option('--seed <n>', 'seeds the data order, crops, degradations, timesteps and noise', '0')
    .option('--workers <n>', 'threads building the samples (default up to 8, two cores left; the batches are the same for any number)')
    .option('--preview-every <n>', 'every n steps (and at the end) write a checkpoint and restore 4 fixed preview crops of the data (OUT_DIR/previews/inputs/) with it into OUT_DIR/previews/step_N/')
    .option('--checkpointing', 'stage 1: activation checkpointing of the control network (each resnet and transformer recomputed in the backward: less memory, ~1 more forward of it)')
    .option('--json', 'print a JSON summary at the end')
    .option('--batch-file <file>', "check mode: safetensors file with one batch (tensor names as in shared/fixtures/train's stage<n>_io)")
    .option('--dump <file>', 'check mode: safetensors file to write the losses, first-step gradients and parameters after each step to')
    .option('--lr <x>', 'AdamW learning rate', '1e-5')
    .option('--weight-decay <x>', 'AdamW decoupled weight decay', '1e-2')
    .option('--vgg <file>', "stage 2: VGG-19 features weights (torchvision's features.N keys, any widths)")
    .option('--adv-weight <w>', "stage 2: weight of the adversarial term L_adv (the paper's: 0.001; 0, the fixtures' contract, trains no critic)", '0')
    .option('--discriminator <dir>', 'stage 2: the PatchGAN critic to start from (config.json + model.safetensors; default: a fresh pix2pix NLayerDiscriminator, seed 0)')
    .option('--precision <p>', 'weights of the frozen modules (CLIP, UNet, VAE): f32 or f16; trained weights are always f32', 'f32')
    .option('--sd <dir|repo|file>', "Stable Diffusion 1.5 folder, repo id or single-file checkpoint (default: the checkpoint's)")
    .option('--clip <dir|repo>', "CLIP folder or repo id (default: the checkpoint's)")
    .option('--adapter <name|index>', ADAPTER_HELP)
    .option('-f, --force', 'overwrite the dump file if it exists')
    .addHelpText('after', `
Run: dr train --stage 1 --model DR_DIR -o OUT_DIR --data PHOTOS --steps N; OUT_DIR holds the latest
  checkpoint (dr restore --model OUT_DIR works at any time), checkpoints/step-N/ (--keep of them,
  with optimizer moments, data position and seed), log.jsonl (dr plot OUT_DIR), previews/.
  --resume OUT_DIR --steps M continues exactly (the saved settings apply unless given again).
  Ctrl-C finishes the step, writes a checkpoint and exits 130; a NaN/Inf loss stops the run.
${DATA_HELP}
Check mode (--batch-file with --dump): AdamW steps on one batch, for checks against a reference.
Batch tensors (stage 1): pixels_hq, pixels_lq [B,3,H,W] in [0,1]; clip_pixel_values [B,3,S,S]
  (CLIP-preprocessed); noise [B,4,H/8,W/8]; timesteps [B] and labels [B] (integers).
Batch tensors (stage 2): pixels_hq, pixels_lq, clip_pixel_values, as stage 1. Its loss is
  L_mse + 0.1·L_per (+ --adv-weight·L_adv, with a PatchGAN critic trained alternately).
Dump: loss, loss_<term>, grad.<part>.<key> (first step), step<n>.<part>.<key> after step n,
  step<n>.loss (the loss at the step-n parameters), <part> one of prompt_processor, control, decoder.
AdamW: betas (0.9, 0.999), eps 1e-8, as torch.optim.AdamW.

Examples:
  dr train --stage 1 --model dr-ckpt -o run1 --data photos/ --size 512 --batch 4 --accumulate 4 --steps 20000
  dr train --resume run1 --steps 40000
  dr train --stage 2 --model run1 -o run2 --data photos/ --vgg vgg19.safetensors --adv-weight 0.001 --epochs 25
  dr train --stage 1 --model dr-ckpt --batch-file stage1_io.safetensors --dump out.safetensors --steps 2 --lr 1e-3`)
    .action((opts: TrainCliOptions, cmd: Command) => runCommand(() => (opts.batchFile || opts.dump ? train(opts) : run(opts, cmd))));
}

const collect = (v: string, all: string[]): string[] => [...all, v];

async function train(opts: TrainCliOptions): Promise<void> {
  if (!opts.batchFile || !opts.dump) throw new DrError(`check mode needs both --batch-file and --dump (the run mode takes -o OUT_DIR and --data)`);
  if (!opts.stage) throw new DrError('--stage 1|2 is required');
  const build = STAGES[opts.stage];
  if (!build) throw new DrError(`--stage: expected ${Object.keys(STAGES).join(' or ')}, got "${opts.stage}"`);
  const steps = numberOption('--steps', opts.steps ?? '1', (n) => Number.isInteger(n) && n >= 1, 'a positive integer')!;
  const lr = numberOption('--lr', opts.lr, (n) => n > 0, 'a positive number')!;
  const weightDecay = numberOption('--weight-decay', opts.weightDecay, (n) => n >= 0, 'a non-negative number')!;
  const advWeight = numberOption('--adv-weight', opts.advWeight, (n) => n >= 0, 'a non-negative number')!;
  if (opts.precision !== 'f32' && opts.precision !== 'f16') throw new DrError(`--precision: expected f32 or f16, got "${opts.precision}"`);
  const dir = modelDir(opts.model, '--model');
  const index = readModelIndex(dir);
  const bases = { sd: sdModel(opts.sd ?? index.sd, '--sd'), clip: modelDir(opts.clip ?? index.clip, '--clip') };
  const dump = path.resolve(opts.dump!);
  checkOutputFile(opts.dump!, new Inputs([opts.batchFile!, dir, ...(opts.vgg ? [opts.vgg] : []), ...(opts.discriminator ? [opts.discriminator] : [])]), !!opts.force);
  const batch = SafetensorsFile.open(opts.batchFile!);
  try {
    const e = await Engine.create();
    const adversarial = { weight: advWeight, discriminator: opts.discriminator, optimizer: { lr, weightDecay } };
    const stage = build({ e, dir, bases, precision: opts.precision, vgg: opts.vgg, adversarial, checkpointing: opts.checkpointing });
    stage.setBatch(e, batch);
    const out: TensorToWrite[] = [];
    // Seconds from the step's start to its loss on the host (forward and backward; the AdamW
    // update and the dump's read-back land in the next step's time).
    let t0 = performance.now();
    const onStep = (n: number, loss: number): void => {
      const now = performance.now();
      process.stderr.write(`step ${n}: loss ${loss.toPrecision(7)} (${((now - t0) / 1000).toFixed(2)} s)\n`);
      t0 = now;
    };
    await trainSteps(e, stage, { steps, lr, weightDecay, onStep }, (name, shape, data) => out.push({ name, dtype: 'F32', shape: [...shape], data }));
    stage.dispose(e);
    writeSafetensors(dump, out, { producer: 'dr train', model: dir, stage: opts.stage });
    const mib = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;
    process.stderr.write(`peak GPU memory ${mib(e.pool.stats.peakBytes)} (weights ${mib(e.pool.stats.weightBytes)})\n`);
  } finally {
    batch.close();
  }
}

/** The training run: `-o OUT_DIR` (or `--resume OUT_DIR`) from --data or --lq/--hq. */
async function run(opts: TrainCliOptions, cmd: Command): Promise<number> {
  const resume = opts.resume !== undefined;
  if (resume && opts.output && path.resolve(opts.output) !== path.resolve(opts.resume!)) throw new DrError('--resume continues the run in its own folder: give -o the same folder or leave it out');
  const out = path.resolve(opts.resume ?? opts.output ?? '');
  if (!opts.resume && !opts.output) throw new DrError('-o OUT_DIR (the run folder) is required, or --resume OUT_DIR, or --batch-file with --dump for the check mode');
  // A resumed run takes its saved settings where the command line gives none.
  const saved = resume ? readTrainState(out).settings as Partial<RunSettings> : {};
  const given = (key: keyof TrainCliOptions): boolean => {
    const src = cmd.getOptionValueSource(key);
    return src !== undefined && src !== 'default' && !(Array.isArray(opts[key]) && !(opts[key] as unknown[]).length);
  };
  const pick = <T>(key: keyof TrainCliOptions & keyof RunSettings, parsed: () => T): T => (resume && !given(key) && saved[key] !== undefined ? saved[key] as T : parsed());
  const stage = pick('stage', () => opts.stage);
  if (!stage) throw new DrError('--stage 1|2 is required');
  const build = STAGES[stage];
  if (!build) throw new DrError(`--stage: expected ${Object.keys(STAGES).join(' or ')}, got "${stage}"`);
  if (resume && saved.stage !== undefined && stage !== saved.stage) throw new DrError(`--stage ${stage}: the run in ${out} trains stage ${saved.stage}`);
  const int = (name: string, v: string | undefined, min: number): number | undefined => numberOption(name, v, (n) => Number.isInteger(n) && n >= min, min ? 'a positive integer' : 'a non-negative integer');
  const s: RunSettings = {
    stage,
    data: pick('data', () => opts.data),
    degrade: pick('degrade', () => opts.degrade),
    lq: pick('lq', () => opts.lq),
    hq: pick('hq', () => opts.hq),
    labels: pick('labels', () => opts.labels),
    recursive: pick('recursive', () => opts.recursive),
    skipSmall: pick('skipSmall', () => opts.skipSmall),
    size: pick('size', () => int('--size', opts.size, 1)!),
    batch: pick('batch', () => int('--batch', opts.batch, 1)!),
    accumulate: pick('accumulate', () => int('--accumulate', opts.accumulate, 1)!),
    lr: pick('lr', () => numberOption('--lr', opts.lr, (n) => n > 0, 'a positive number')!),
    weightDecay: pick('weightDecay', () => numberOption('--weight-decay', opts.weightDecay, (n) => n >= 0, 'a non-negative number')!),
    advWeight: pick('advWeight', () => numberOption('--adv-weight', opts.advWeight, (n) => n >= 0, 'a non-negative number')!),
    precision: pick('precision', () => opts.precision as Precision),
    seed: pick('seed', () => seedOption(opts.seed)),
    vgg: pick('vgg', () => (opts.vgg ? path.resolve(opts.vgg) : undefined)),
  };
  if (s.precision !== 'f32' && s.precision !== 'f16') throw new DrError(`--precision: expected f32 or f16, got "${s.precision}"`);
  if (resume && given('seed') && s.seed !== saved.seed) throw new DrError(`--seed ${s.seed}: the run in ${out} has seed ${saved.seed}; resuming exactly needs the same`);
  if (opts.steps !== undefined && opts.epochs !== undefined) throw new DrError('--steps and --epochs: give one');
  const steps = int('--steps', opts.steps, 1);
  const epochs = numberOption('--epochs', opts.epochs, (n) => n > 0, 'a positive number');
  if (steps === undefined && epochs === undefined) throw new DrError('--steps N or --epochs N is required (the length of the whole run)');
  if (s.stage === '2' && !s.vgg) throw new DrError('--stage 2 needs --vgg FILE (VGG-19 features weights for the perceptual loss)');
  // Data folders resolved: a resumed run may start from another working folder.
  for (const k of ['lq', 'hq', 'labels'] as const) if (s[k] && !resume) s[k] = path.resolve(s[k]!);
  if (!resume) s.data = s.data?.map((d) => path.resolve(d));

  const model = resume ? out : modelDir(opts.model, '--model');
  const index = readModelIndex(model);
  const bases = { sd: sdModel(opts.sd ?? index.sd, '--sd'), clip: modelDir(opts.clip ?? index.clip, '--clip') };
  const inputs = [model, bases.sd, bases.clip, ...(s.data ?? []), ...[s.lq, s.hq, s.labels, s.vgg, opts.discriminator].filter((x): x is string => !!x)];
  if (!resume && path.resolve(model) === out) throw new DrError(`${out}: is the --model folder; write the run to another folder (or --resume a run)`);
  checkRunOutput(out, resume, inputs);
  // model_index.json of the run's checkpoints: existing base folders named relative to OUT_DIR (as dr init does).
  const spec = (p: string): string => {
    if (!fs.existsSync(p)) return p;
    const rel = path.relative(out, p).split(path.sep).join('/');
    return rel.startsWith('../') ? rel : `./${rel}`;
  };
  const optimizer = { lr: s.lr, weightDecay: s.weightDecay };
  return trainRun({
    ...s, model, bases, baseSpecs: { sd: spec(bases.sd), clip: spec(bases.clip) }, output: out, resume, steps, epochs,
    checkpointEvery: int('--checkpoint-every', opts.checkpointEvery, 1)!, keep: int('--keep', opts.keep, 1)!,
    previewEvery: int('--preview-every', opts.previewEvery, 1), workers: int('--workers', opts.workers, 0), json: !!opts.json, discriminator: opts.discriminator,
    build: (e, dir, discriminator) => build({ e, dir, bases, precision: s.precision, vgg: s.vgg, checkpointing: opts.checkpointing, adversarial: { weight: s.advWeight, discriminator, optimizer } }),
  });
}
