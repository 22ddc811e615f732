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
import { ADAPTER_HELP, numberOption, runCommand } from './run.js';

interface TrainCliOptions {
  stage: string;
  model?: string;
  batchFile?: string;
  dump?: string;
  steps: string;
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
  batch: SafetensorsFile;
  /** Weights of the frozen modules. */
  precision: Precision;
  /** --vgg: VGG-19 features for stage 2's perceptual loss. */
  vgg?: string;
  /** Stage 2's adversarial weight (0: no critic) and the critic to start from (a fresh PatchGAN without one). */
  adversarial: { weight: number; discriminator?: string; optimizer: AdamWOptions };
}

/** The training stages by --stage: each builds its trainable parameters and loss on the batch. */
const STAGES: Record<string, (s: StageInputs) => Stage> = {
  1: (s) => Stage1.load(s.e, s.batch, s),
  2: (s) => {
    if (!s.vgg) throw new DrError('--stage 2 needs --vgg FILE (VGG-19 features weights for the perceptual loss)');
    const a = s.adversarial;
    const critic = a.weight > 0 ? {
      weight: a.weight, optimizer: a.optimizer,
      discriminator: a.discriminator ? NLayerDiscriminator.load(s.e, a.discriminator) : NLayerDiscriminator.init(s.e, PIX2PIX_DISCRIMINATOR, 0),
    } : undefined;
    return Stage2.load(s.e, s.batch, { ...s, vgg: s.vgg, critic });
  },
};

export function trainCommand(): Command {
  return new Command('train')
    .description('train a Diff-Restorer checkpoint: AdamW steps on one batch, writing losses, gradients and parameters (checking against a reference)')
    .requiredOption('--stage <n>', '1 (prompt processor + control: L_diff + L_deg + L_rec) or 2 (degradation-aware decoder)')
    .requiredOption('-m, --model <dir>', 'a Diff-Restorer checkpoint (see `dr init`); its model_index.json names the base models')
    .requiredOption('--batch-file <file>', "safetensors file with one batch (tensor names as in shared/fixtures/train's stage<n>_io)")
    .requiredOption('--dump <file>', 'safetensors file to write the losses, first-step gradients and parameters after each step to')
    .option('--steps <n>', 'AdamW steps on the batch', '1')
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
Batch tensors (stage 1): pixels_hq, pixels_lq [B,3,H,W] in [0,1]; clip_pixel_values [B,3,S,S]
  (CLIP-preprocessed); noise [B,4,H/8,W/8]; timesteps [B] and labels [B] (integers).
Batch tensors (stage 2): pixels_hq, pixels_lq, clip_pixel_values, as stage 1. Its loss is
  L_mse + 0.1·L_per (+ --adv-weight·L_adv, with a PatchGAN critic trained alternately).
Dump: loss, loss_<term>, grad.<part>.<key> (first step), step<n>.<part>.<key> after step n,
  step<n>.loss (the loss at the step-n parameters), <part> one of prompt_processor, control, decoder.
AdamW: betas (0.9, 0.999), eps 1e-8, as torch.optim.AdamW.

Example:
  dr train --stage 1 --model dr-ckpt --batch-file stage1_io.safetensors --dump out.safetensors --steps 2 --lr 1e-3`)
    .action((opts: TrainCliOptions) => runCommand(() => train(opts)));
}

async function train(opts: TrainCliOptions): Promise<void> {
  const build = STAGES[opts.stage];
  if (!build) throw new DrError(`--stage: expected ${Object.keys(STAGES).join(' or ')}, got "${opts.stage}"`);
  const steps = numberOption('--steps', opts.steps, (n) => Number.isInteger(n) && n >= 1, 'a positive integer')!;
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
    const stage = build({ e, dir, bases, batch, precision: opts.precision, vgg: opts.vgg, adversarial });
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
