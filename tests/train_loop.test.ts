// dr train -o OUT_DIR, the training run (issue 10, items 1–3) on the tiny fixture models: exact
// resumption byte for byte, the checkpoint layout (restorable at any time, keep K), log.jsonl,
// a NaN loss stopping with the last good checkpoint kept, Ctrl-C writing a checkpoint, and the
// output checks. Runs are tiny (32×32 crops, batch 2, 1–3 steps; each run ~10–20 s on lavapipe).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grad } from '../src/engine/autograd.js';
import { Engine } from '../src/engine/engine.js';
import { Stage1 } from '../src/graph/train/stage1.js';
import { SafetensorsFile } from '../src/weights/safetensors.js';
import { CLI, dr, expectUserError, ourLines } from './cli_runner.js';
import { FIXTURES, SHARED } from './helpers.js';

const MODEL = path.join(FIXTURES, 'train', 'dr-random');
const BASES = ['--sd', path.join(FIXTURES, 'sd-tiny'), '--clip', path.join(FIXTURES, 'clip-tiny')];
const IMAGES = path.join(SHARED, 'images');
const PARTS = ['prompt_processor', 'control', 'decoder'];
const RUN = ['train', '--stage', '1', ...BASES, '--data', IMAGES, '--size', '32', '--batch', '2', '--lr', '1e-3'];

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-trainloop-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const bytes = (dir: string, part: string): Buffer => fs.readFileSync(path.join(dir, part, 'model.safetensors'));
const log = (dir: string): Record<string, number>[] => fs.readFileSync(path.join(dir, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
const state = (dir: string): { step: number; data: { epoch: number; index: number } } => JSON.parse(fs.readFileSync(path.join(dir, 'train_state.json'), 'utf8'));
const temps = (dir: string): string[] => fs.readdirSync(dir, { recursive: true }).map(String).filter((n) => /\.dr-\d+\.tmp/.test(n));

describe('dr train --stage 1 -o OUT_DIR', () => {
  let straight: string;
  beforeAll(async () => {
    straight = path.join(tmp, 'straight');
    const r = await dr(...RUN, '--model', MODEL, '-o', straight, '--steps', '3', '--checkpoint-every', '1', '--keep', '2', '--preview-every', '3', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ steps: 3, from_step: 0, images: 6, checkpoint: 3 });
  }, 300_000);

  it('--steps 2 then --steps 3 --resume gives the parameter and optimizer files of --steps 3 straight, byte for byte', async () => {
    const resumed = path.join(tmp, 'resumed');
    const a = await dr(...RUN, '--model', MODEL, '-o', resumed, '--steps', '2');
    expect(a.code, a.stderr).toBe(0);
    // The data, size, batch and lr come from the saved settings; the bases from the run's model_index.json.
    const b = await dr('train', '--resume', resumed, '--steps', '3', '--json');
    expect(b.code, b.stderr).toBe(0);
    expect(JSON.parse(b.stdout)).toMatchObject({ steps: 3, from_step: 2, images: 6 });
    for (const part of PARTS) expect(bytes(resumed, part).equals(bytes(straight, part)), part).toBe(true);
    expect(fs.readFileSync(path.join(resumed, 'optimizer.safetensors')).equals(fs.readFileSync(path.join(straight, 'optimizer.safetensors')))).toBe(true);
    expect(state(resumed)).toMatchObject({ step: 3, data: state(straight).data });
    // The trained parts changed, so the test could tell a run that did nothing.
    expect(bytes(resumed, 'control').equals(fs.readFileSync(path.join(MODEL, 'control', 'model.safetensors')))).toBe(false);
    expect(log(resumed).map((l) => l.loss)).toEqual(log(straight).map((l) => l.loss));
    // The resumed session's seconds continue the first session's (time since the run began).
    const seconds = log(resumed).map((l) => l.seconds);
    expect(seconds[2]).toBeGreaterThan(seconds[1]);
  }, 300_000);

  it('OUT_DIR is the latest checkpoint in the dr init layout; older ones under checkpoints/, --keep of them; no temporaries', () => {
    expect(fs.readdirSync(path.join(straight, 'checkpoints')).sort()).toEqual(['step-2', 'step-3']);
    for (const part of PARTS) {
      expect(bytes(straight, part).equals(bytes(path.join(straight, 'checkpoints', 'step-3'), part))).toBe(true);
      expect(fs.existsSync(path.join(straight, part, 'config.json'))).toBe(true);
    }
    expect(bytes(straight, 'control').equals(bytes(path.join(straight, 'checkpoints', 'step-2'), 'control'))).toBe(false);
    const index = JSON.parse(fs.readFileSync(path.join(straight, 'model_index.json'), 'utf8'));
    expect(path.resolve(straight, index.base.sd)).toBe(path.join(FIXTURES, 'sd-tiny'));
    expect(temps(straight)).toEqual([]);
  });

  it('dr restore --model OUT_DIR restores with the trained checkpoint', async () => {
    const crop = path.join(tmp, 'crop.png');
    await sharp(path.join(IMAGES, 'coffee.png')).extract({ left: 200, top: 150, width: 32, height: 32 }).png().toFile(crop);
    const out = path.join(tmp, 'restored.png');
    const r = await dr('restore', crop, '--model', straight, '-o', out, '--steps', '2');
    expect(r.code, r.stderr).toBe(0);
    expect(fs.statSync(out).size).toBeGreaterThan(0);
  }, 300_000);

  it('--preview-every: 4 fixed crops of the data (LQ and HQ) restored by the step-3 checkpoint into previews/step_3/', async () => {
    const inputs = fs.readdirSync(path.join(straight, 'previews', 'inputs')).sort();
    expect(inputs).toEqual(['0_hq.png', '0_lq.png', '1_hq.png', '1_lq.png', '2_hq.png', '2_lq.png', '3_hq.png', '3_lq.png']);
    expect(fs.readdirSync(path.join(straight, 'previews')).sort()).toEqual(['inputs', 'step_3']);
    const restored = fs.readdirSync(path.join(straight, 'previews', 'step_3')).sort();
    expect(restored).toEqual(['0_lq.png', '1_lq.png', '2_lq.png', '3_lq.png']);
    const meta = await sharp(path.join(straight, 'previews', 'step_3', '0_lq.png')).metadata();
    expect([meta.width, meta.height]).toEqual([32, 32]);
  });

  it('log.jsonl: one line per step with step, loss, loss_diff, loss_deg, loss_rec, lr, seconds, images', () => {
    const lines = log(straight);
    expect(lines.map((l) => l.step)).toEqual([1, 2, 3]);
    for (const [i, l] of lines.entries()) {
      expect(Object.keys(l).sort()).toEqual(['images', 'loss', 'loss_deg', 'loss_diff', 'loss_rec', 'lr', 'seconds', 'step']);
      expect(l.loss).toBeCloseTo(l.loss_diff + l.loss_deg + l.loss_rec, 5);
      expect(l.lr).toBe(1e-3);
      expect(l.images).toBe(2 * (i + 1));
      expect(l.seconds).toBeGreaterThan(0);
    }
    // `seconds` is time since the run began (dr plot's title), so it grows by each step's time.
    for (let i = 1; i < lines.length; i++) expect(lines[i].seconds).toBeGreaterThan(lines[i - 1].seconds);
  });
});

describe('dr train --stage 2 -o OUT_DIR (with the PatchGAN critic)', () => {
  it('--steps 1 then --resume --steps 2 equals --steps 2 straight: decoder, discriminator and both optimizers, byte for byte', async () => {
    const args = ['train', '--stage', '2', ...BASES, '--data', IMAGES, '--size', '32', '--batch', '2', '--lr', '1e-3', '--model', MODEL,
      '--vgg', path.join(FIXTURES, 'train', 'vgg19.safetensors'), '--adv-weight', '0.001'];
    const [a, b] = [path.join(tmp, 's2-straight'), path.join(tmp, 's2-resumed')];
    for (const r of [await dr(...args, '-o', a, '--steps', '2'), await dr(...args, '-o', b, '--steps', '1'), await dr('train', '--resume', b, '--steps', '2')]) expect(r.code, r.stderr).toBe(0);
    for (const f of ['decoder/model.safetensors', 'discriminator/model.safetensors', 'optimizer.safetensors']) {
      expect(fs.readFileSync(path.join(b, f)).equals(fs.readFileSync(path.join(a, f))), f).toBe(true);
    }
    const lines = log(b);
    expect(Object.keys(lines[1]).sort()).toEqual(['images', 'loss', 'loss_adv', 'loss_disc', 'loss_mse', 'loss_per', 'lr', 'seconds', 'step']);
    expect(lines.map((l) => l.loss)).toEqual(log(a).map((l) => l.loss));
  }, 300_000);
});

describe('dr train stops cleanly', () => {
  it('a NaN/Inf loss stops the run with one line; OUT_DIR keeps the last good checkpoint', async () => {
    const out = path.join(tmp, 'nan');
    // lr 1e30 moves every weight by ~1e30 at the first step: the second step's loss is not finite.
    const r = await dr(...RUN.filter((a) => a !== '1e-3'), '1e30', '--model', MODEL, '-o', out, '--steps', '4', '--checkpoint-every', '1');
    expectUserError(r, 'step 2:', 'training stopped', 'last good checkpoint (step 1)', '--lr');
    expect(state(out).step).toBe(1);
    for (const part of PARTS) expect(bytes(out, part).equals(bytes(path.join(out, 'checkpoints', 'step-1'), part))).toBe(true);
    expect(log(out).map((l) => l.step)).toEqual([1]);
  }, 300_000);

  it('SIGINT mid-run finishes the step, writes its checkpoint and exits 130', async () => {
    const out = path.join(tmp, 'sigint');
    const child = spawn('node', [CLI, ...RUN, '--model', MODEL, '-o', out, '--steps', '50'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const logFile = path.join(out, 'log.jsonl');
    const timer = setInterval(() => {
      if (fs.existsSync(logFile) && fs.readFileSync(logFile, 'utf8').length) {
        clearInterval(timer);
        child.kill('SIGINT');
      }
    }, 100);
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    clearInterval(timer);
    expect(code, stderr).toBe(130);
    const steps = log(out).length;
    expect(steps).toBeGreaterThanOrEqual(1);
    expect(steps).toBeLessThan(50);
    expect(state(out).step).toBe(steps);
    expect(fs.readdirSync(path.join(out, 'checkpoints'))).toEqual([`step-${steps}`]);
    expect(ourLines(stderr).join('\n')).toContain(`continue with --resume ${out}`);
    expect(temps(out)).toEqual([]);
  }, 300_000);
});

describe('dr train output checks, before any work', () => {
  it('refuses the model folder as -o, a non-empty folder, an earlier run without --resume, --resume of a folder that is no run', async () => {
    const model = path.join(tmp, 'model-copy');
    fs.cpSync(MODEL, model, { recursive: true });
    expectUserError(await dr(...RUN, '--model', model, '-o', model, '--steps', '1'), model);
    const busy = path.join(tmp, 'busy');
    fs.mkdirSync(busy);
    fs.writeFileSync(path.join(busy, 'x.txt'), 'x');
    expectUserError(await dr(...RUN, '--model', MODEL, '-o', busy, '--steps', '1'), 'is not empty');
    fs.writeFileSync(path.join(busy, 'train_state.json'), '{}');
    expectUserError(await dr(...RUN, '--model', MODEL, '-o', busy, '--steps', '1'), '--resume');
    expectUserError(await dr('train', '--resume', model, '--steps', '1'), 'train_state.json');
    expectUserError(await dr(...RUN, '--model', MODEL, '-o', path.join(tmp, 'x')), '--steps N or --epochs N');
    expect(fs.readFileSync(path.join(busy, 'x.txt'), 'utf8')).toBe('x');
    expect(fs.existsSync(path.join(tmp, 'x'))).toBe(false);
  }, 60_000);
});

describe('--checkpointing (activation checkpointing of the control network)', () => {
  it('keeps fewer activations for the backward (measured); same loss, gradients equal up to float32 reassociation', async () => {
    const e = await Engine.create();
    const batch = SafetensorsFile.open(path.join(FIXTURES, 'train', 'stage1_io.safetensors'));
    const bases = { sd: path.join(FIXTURES, 'sd-tiny'), clip: path.join(FIXTURES, 'clip-tiny') };
    const run = async (checkpointing: boolean): Promise<{ loss: number; grads: Float32Array[]; saved: number }> => {
      const stage = Stage1.load(e, batch, { dir: MODEL, bases, precision: 'f32', checkpointing });
      const { loss, grads, stats } = grad(e, () => stage.losses(e).loss, stage.params.map(([, p]) => p.t));
      const out = { loss: (await e.read(loss))[0], grads: await Promise.all(grads.map((g) => (g ? e.read(g) : new Float32Array()))), saved: stats.savedBytes };
      for (const t of [loss, ...grads]) if (t) e.release(t);
      stage.dispose(e);
      return out;
    };
    try {
      const [plain, ckpt] = [await run(false), await run(true)];
      // Measured on the fixture (64×64, batch 2): 10.6 → 9.3 MiB of activations kept for the backward
      // (the frozen UNet's, which the gradient crosses, and the control encoder's stay).
      expect(ckpt.saved).toBeLessThan(0.95 * plain.saved);
      expect(ckpt.loss).toBe(plain.loss);
      // The recomputed forward is bit-identical; only the order in which a shared input's (temb, P_S)
      // gradient contributions are summed differs: a few float32 roundings of sums of tens of terms
      // (measured ≤ 3.3e-6 of a tensor's largest value).
      for (const [i, g] of plain.grads.entries()) {
        const max = g.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        const diff = g.reduce((m, v, j) => Math.max(m, Math.abs(v - ckpt.grads[i][j])), 0);
        expect(diff, `gradient ${i}`).toBeLessThanOrEqual(1e-5 * max);
      }
    } finally {
      batch.close();
    }
  }, 120_000);
});
