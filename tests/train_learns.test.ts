// Proof that `dr train` learns (issue 10, item 4), on lavapipe with the tiny fixture models.
// Data: 4 clean 32×32 crops of ../shared/images, each degraded by three classes with `dr degrade`
// (noise:50, haze, lowlight), 12 paired LQ/HQ images labelled by their folder. 32×32 rather than
// 64×64: a stage-1 step of batch 4 at 64×64 from `dr init` on sd-tiny took ~90 s on the loaded
// 2-core machine (design-width control encoder and prompt processor); dr-random (control channels
// 8..16) at 32×32 takes ~4 s. Runs start from dr-random (every weight seeded random). lr 1e-2 in
// stage 1, 1e-3 in stage 2 (not the paper's 1e-5): tiny models and a dozen images, so a dozen
// epochs must move the weights; at 1e-2 the control decoder's L_rec spikes now and then (measured
// up to 2.2 for a step), which the epoch means absorb. Classes: blur:2 in place of haze was
// measured too, and after 30 steps blur and noise were still confused (9/12 right); the three kept
// differ in CLIP-tiny's embedding enough for 36 steps. Measured on the loaded machine: stage 1
// run ~2.5 min, the three restores ~50 s per checkpoint, stage 2 ~1–1.7 min (the whole file 144 s
// when the machine was quieter; no single test over 3 min).
// Restore PSNR: with sd-tiny's random UNet the denoised latent is noise, so a short stage 1 alone
// does not move `dr restore --model` (measured, mean PSNR per class: untrained 13.03/10.08/9.27 dB;
// 36 stage-1 steps 13.06/10.07/9.34; 20 stage-2 steps alone 13.24/10.18/9.30); stage 1 then
// stage 2 does (13.97/10.54/9.41), and that is what the PSNR test runs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dr } from './cli_runner.js';
import { FIXTURES, SHARED } from './helpers.js';

const MODEL = path.join(FIXTURES, 'train', 'dr-random');
const BASES = ['--sd', path.join(FIXTURES, 'sd-tiny'), '--clip', path.join(FIXTURES, 'clip-tiny')];
const IMAGES = ['astronaut', 'chelsea', 'coffee', 'rocket'];
// Folder name = class name of the checkpoint's prompt_processor config (the label).
const CLASSES: Record<string, string> = { noise: 'noise:50', haze: 'haze', 'low-light': 'lowlight' };

let tmp: string;
let data: string[];
const log = (dir: string): Record<string, number>[] => fs.readFileSync(path.join(dir, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-learns-'));
  const hq = path.join(tmp, 'hq');
  fs.mkdirSync(hq);
  for (const n of IMAGES) await sharp(path.join(SHARED, 'images', `${n}.png`)).resize(32, 32, { fit: 'cover' }).png().toFile(path.join(hq, `${n}.png`));
  for (const [cls, chain] of Object.entries(CLASSES)) {
    const r = await dr('degrade', hq, '-o', path.join(tmp, 'lq', cls), '-t', chain);
    expect(r.code, r.stderr).toBe(0);
  }
  data = [...BASES, '--lq', path.join(tmp, 'lq'), '--hq', hq, '--recursive', '--size', '32', '--batch', '4', '--checkpoint-every', '1000'];
}, 120_000);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The classifier's accuracy on the training LQ crops: `dr restore --json` (1 UniPC step) reports C(P_D)'s probabilities. */
async function accuracy(model: string, name: string): Promise<number> {
  let [right, total] = [0, 0];
  for (const cls of Object.keys(CLASSES)) {
    const r = await dr('restore', path.join(tmp, 'lq', cls), '--model', model, ...BASES, '-o', `${path.join(tmp, name, cls)}/`, '--steps', '1', '--json');
    expect(r.code, r.stderr).toBe(0);
    for (const res of JSON.parse(r.stdout).results as { scores: { name: string; probability: number }[] }[]) {
      const best = res.scores.reduce((a, b) => (b.probability > a.probability ? b : a));
      right += best.name === cls ? 1 : 0;
      total++;
    }
  }
  expect(total).toBe(12);
  return right / total;
}

// Batch 4 of 12 pairs: an epoch is 3 steps, each image once, so the first and last epochs' mean
// losses compare the same images (a single step's loss depends on which 4 it drew).
const epochMean = (l: Record<string, number>[], key: string, epoch: number): number => mean(l.slice(3 * epoch, 3 * epoch + 3).map((x) => x[key]));

/** Restores every LQ crop with `model` (1 UniPC step, seed 0) and returns the mean PSNR (dr eval, RGB) against the clean crops. */
async function restorePsnr(model: string, name: string): Promise<number> {
  const means: number[] = [];
  for (const cls of Object.keys(CLASSES)) {
    const out = path.join(tmp, name, cls);
    const r = await dr('restore', path.join(tmp, 'lq', cls), '--model', model, ...BASES, '-o', `${out}/`, '--steps', '1');
    expect(r.code, r.stderr).toBe(0);
    const e = await dr('eval', '--dist', out, '--ref', path.join(tmp, 'hq'), '--metric', 'psnr', '--json');
    expect(e.code, e.stderr).toBe(0);
    means.push(...Object.values(JSON.parse(e.stdout).mean as Record<string, { psnr: number }>).map((m) => m.psnr));
  }
  expect(means).toHaveLength(3);
  return mean(means);
}

const STAGE2 = ['--vgg', path.join(FIXTURES, 'train', 'vgg19.safetensors'), '--steps', '21', '--lr', '1e-3'];

describe('stage 1 learns: 36 AdamW steps (12 epochs of the 12 crops), lr 1e-2', () => {
  let run: string;
  beforeAll(async () => {
    run = path.join(tmp, 'stage1');
    const r = await dr('train', '--stage', '1', '--model', MODEL, '-o', run, ...data, '--steps', '36', '--lr', '1e-2');
    expect(r.code, r.stderr).toBe(0);
  }, 600_000);

  // Measured: first epoch 3.19, last 0.68 (0.21×); L_deg 1.86 → 0.11 (ln 8 = 2.08 at chance).
  // A run that does not learn (--lr 1e-12; --lr 0 is refused): 3.48 → 3.45 (0.99×), failing.
  it('the loss: the last epoch\'s mean below 0.4× the first epoch\'s', () => {
    const l = log(run);
    expect(l).toHaveLength(36);
    const [first, last] = [epochMean(l, 'loss', 0), epochMean(l, 'loss', 11)];
    console.log(`stage 1 loss ${first.toFixed(3)} → ${last.toFixed(3)} (L_deg ${epochMean(l, 'loss_deg', 0).toFixed(3)} → ${epochMean(l, 'loss_deg', 11).toFixed(3)})`);
    expect(last).toBeLessThan(0.4 * first);
  });

  // Measured: 12/12 after training; the untrained dr-random 3/12 (noise right, haze and low-light not).
  it('L_deg\'s classifier: ≥ 90 % of the training crops classified right (untrained: < 90 %)', async () => {
    const [before, after] = [await accuracy(MODEL, 'untrained'), await accuracy(run, 'trained')];
    console.log(`classifier accuracy on the training crops ${before} → ${after}`);
    expect(before).toBeLessThan(0.9);
    expect(after).toBeGreaterThanOrEqual(0.9);
  }, 600_000);

  // Stage 1 alone cannot move restore PSNR here (header), so the comparison is the paper's order:
  // stage 1 (36 steps) then stage 2 (21 steps) from its checkpoint, against the untrained one.
  // Measured per class (noise/haze/low-light): untrained 13.03/10.08/9.27 dB, trained
  // 13.97/10.54/9.41 (+0.51 dB on the mean); the LQ inputs themselves 15.00/12.29/10.11.
  it('restore with stage 1 then stage 2 scores better: mean PSNR against the clean crops up by ≥ 0.2 dB', async () => {
    const both = path.join(tmp, 'psnr-stage2');
    const r = await dr('train', '--stage', '2', '--model', run, '-o', both, ...data, ...STAGE2);
    expect(r.code, r.stderr).toBe(0);
    const [before, after] = [await restorePsnr(MODEL, 'psnr-untrained'), await restorePsnr(both, 'psnr-trained')];
    console.log(`restore PSNR (mean of the class means) ${before.toFixed(2)} → ${after.toFixed(2)} dB`);
    expect(after - before).toBeGreaterThanOrEqual(0.2);
  }, 600_000);
});

describe('stage 2 learns: 21 AdamW steps (7 epochs), lr 1e-3', () => {
  // Measured: first epoch 0.33–0.35, last 0.19–0.20 (0.55–0.58×; at lr 3e-3 0.65×). The factor is
  // modest because a random decoder on 32×32 crops improves slowly; a run that does not learn
  // (--lr 1e-12, --lr 0 being refused) measured 0.430 → 0.426 (0.99×), so the check fails on it.
  it('the decoder\'s MSE: the last epoch\'s mean below 0.75× the first epoch\'s', async () => {
    const run = path.join(tmp, 'stage2');
    const r = await dr('train', '--stage', '2', '--model', MODEL, '-o', run, ...data, ...STAGE2);
    expect(r.code, r.stderr).toBe(0);
    const l = log(run);
    const [first, last] = [epochMean(l, 'loss_mse', 0), epochMean(l, 'loss_mse', 6)];
    console.log(`stage 2 loss_mse ${first.toFixed(4)} → ${last.toFixed(4)}`);
    expect(last).toBeLessThan(0.75 * first);
  }, 600_000);
});
