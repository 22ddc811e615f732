// Features users reach for first (issue 11, items 12–17): probe texts with commas, restore
// --upscale, any latent size, choosing the adapter, --shard, and flags consistent across commands.
// CLI cases run the built dr (npm run build) on the tiny fixtures.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import { upsampleNearest } from '../src/engine/ops/copy.js';
import { ControlNetModel } from '../src/graph/sd/controlnet.js';
import { UNet2DConditionModel } from '../src/graph/sd/unet.js';
import { loadRgb } from '../src/image/load.js';
import { resizeBicubicPlanes, resizeBicubicU8 } from '../src/image/resize.js';
import { inShard, parseShard } from '../src/cli/shard.js';
import { firstRunOnAdapter } from '../src/engine/first_run.js';
import { saveImage } from '../src/image/restore_io.js';
import { SafetensorsFile, writeSafetensors } from '../src/weights/safetensors.js';
import { CLI, dr, expectUserError, runDr } from './cli_runner.js';
import { absMax, expectClose, FIXTURES, rand, SHARED } from './helpers.js';

const SD = path.join(FIXTURES, 'sd-tiny');
const CLIP = path.join(FIXTURES, 'clip-tiny');
const PHOTO = path.join(SHARED, 'images/chelsea.png');
let tmp: string;
let e: Engine;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-features-'));
  e = await Engine.create();
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** PyTorch's F.interpolate(mode='nearest', size=...) in float32, as upsample_nearest2d computes it. */
function nearestRef(x: Float32Array, planes: number, H: number, W: number, Ho: number, Wo: number): Float32Array {
  const src = (o: number, n: number, no: number): number =>
    no === n ? o : no === 2 * n ? o >> 1 : Math.min(Math.floor(Math.fround(o * Math.fround(n / no))), n - 1);
  const y = new Float32Array(planes * Ho * Wo);
  for (let p = 0; p < planes; p++) {
    for (let i = 0; i < Ho; i++) for (let j = 0; j < Wo; j++) y[(p * Ho + i) * Wo + j] = x[(p * H + src(i, H, Ho)) * W + src(j, W, Wo)];
  }
  return y;
}

describe('any latent size (diffusers passes the skip size to each upsampler)', () => {
  it.each([[1, 1, 1, 1], [3, 4, 5, 8], [5, 7, 9, 13], [6, 5, 12, 9], [2, 3, 4, 6]])(
    'nearest upsampling %i×%i → %i×%i is PyTorch\'s, exactly', async (H, W, Ho, Wo) => {
      const [N, C] = [2, 3];
      const x = rand(N * C * H * W, H * 100 + W);
      for (const dtype of ['f32', 'f16'] as const) {
        const y = upsampleNearest(e, e.upload(x, [N, C, H, W], dtype), Ho, Wo);
        expect(y.shape).toEqual([N, C, Ho, Wo]);
        const xs = dtype === 'f16' ? await e.read(e.upload(x, [N, C, H, W], 'f16')) : x;
        expect(Array.from(await e.read(y))).toEqual(Array.from(nearestRef(xs, N * C, H, W, Ho, Wo)));
      }
    });

  it('refuses sizes a UNet never asks for', () => {
    expect(() => upsampleNearest(e, e.upload(rand(9), [1, 1, 3, 3]), 7, 6)).toThrow(/double/);
  });

  it('the UNet and ControlNet run on latents that are not a multiple of 8 (5×7, 12×10, 3×9)', async () => {
    const unet = UNet2DConditionModel.load(e, path.join(SD, 'unet'), 'f32');
    const controlnet = ControlNetModel.load(e, path.join(SD, 'controlnet'), 'f32');
    const context = rand(2 * 77 * 32, 7);
    for (const [h, w] of [[5, 7], [12, 10], [3, 9]]) {
      const sample = rand(2 * 4 * h * w, h * w);
      // Each up block's output has the spatial size of the skip it meets next (the down path's).
      const traced = new Map<string, number[]>();
      e.tracer = (name, t) => traced.set(name, [...t.shape]);
      const hint = controlnet.embedHint(e, e.upload(rand(2 * 3 * 8 * h * 8 * w, 3), [2, 3, 8 * h, 8 * w]));
      const control = controlnet.forward(e, e.upload(sample, [2, 4, h, w]), 11, e.upload(context, [2, 77, 32]), hint);
      const both = unet.forward(e, e.upload(sample, [2, 4, h, w]), 11, e.upload(context, [2, 77, 32]), control);
      e.tracer = undefined;
      expect(both.shape).toEqual([2, 4, h, w]);
      for (const i of [0, 1, 2]) {
        const down = traced.get(`down_blocks.${2 - i}.resnets.1`)!;
        expect(traced.get(`up_blocks.${i}.upsamplers.0`)!.slice(2), `up block ${i}`).toEqual(down.slice(2));
      }
      const out = await e.read(both);
      expect(out.every(Number.isFinite)).toBe(true);
      // Batch items are independent: the second alone gives the second half.
      const n = 4 * h * w;
      const ctl1 = controlnet.forward(e, e.upload(sample.slice(n), [1, 4, h, w]), 11, e.upload(context.slice(77 * 32), [1, 77, 32]),
        controlnet.embedHint(e, e.upload(rand(2 * 3 * 8 * h * 8 * w, 3).slice(3 * 64 * h * w), [1, 3, 8 * h, 8 * w])));
      const one = await e.read(unet.forward(e, e.upload(sample.slice(n), [1, 4, h, w]), 11, e.upload(context.slice(77 * 32), [1, 77, 32]), ctl1));
      expectClose(one, out.slice(n), 0, 1e-4 * Math.max(1, absMax(out)));
    }
  });

  it('dr forward takes a 5×7 latent', async () => {
    const inputs = path.join(tmp, 'unet_odd.safetensors');
    writeSafetensors(inputs, [
      { name: 'sample', dtype: 'F32', shape: [1, 4, 5, 7], data: rand(140, 5) },
      { name: 'timestep', dtype: 'F32', shape: [1], data: new Float32Array([500]) },
      { name: 'encoder_hidden_states', dtype: 'F32', shape: [1, 77, 32], data: rand(77 * 32, 6) },
    ]);
    const out = path.join(tmp, 'unet_odd_out.safetensors');
    const r = await dr('forward', '--model', path.join(SD, 'unet'), '--inputs', inputs, '-o', out);
    expect(r.code, r.stderr).toBe(0);
    const f = SafetensorsFile.open(out);
    expect(f.tensors.get('output')!.shape).toEqual([1, 4, 5, 7]);
    f.close();
  });
});

describe('dr probe texts (item 12)', () => {
  it('--text keeps commas, repeats, and combines with --texts and --texts-file in that order', async () => {
    const file = path.join(tmp, 'texts.txt');
    fs.writeFileSync(file, 'a noisy, grainy photo\r\n\n  a dark photo  \n');
    const r = await dr('probe', PHOTO, '--model', CLIP, '--texts', 'a blurry photo,a sharp photo', '--text', 'a hazy, foggy photo',
      '--text', 'a clean photo', '--texts-file', file, '--json');
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    const texts = ['a blurry photo', 'a sharp photo', 'a hazy, foggy photo', 'a clean photo', 'a noisy, grainy photo', 'a dark photo'];
    expect(out.texts).toEqual(texts);
    expect(out.results[0].scores.map((s: { text: string }) => s.text)).toEqual(texts);
    // The same text scores the same whichever way it was given.
    const alone = JSON.parse((await dr('probe', PHOTO, '--model', CLIP, '--texts-file', file, '--json')).stdout);
    expect(alone.texts).toEqual(texts.slice(4));
    expect(alone.results[0].scores[0].cosine).toBeCloseTo(out.results[0].scores[4].cosine, 5);
  });

  it('a missing or empty texts file is one line', async () => {
    expectUserError(await dr('probe', PHOTO, '--model', CLIP, '--texts-file', path.join(tmp, 'nope.txt')), 'nope.txt', 'no such file');
    const empty = path.join(tmp, 'empty.txt');
    fs.writeFileSync(empty, '\n \n');
    expectUserError(await dr('probe', PHOTO, '--model', CLIP, '--texts-file', empty), 'empty.txt', 'no texts');
  });
});

describe('choosing the adapter (item 15)', () => {
  it('dr doctor --list shows every adapter; --adapter and DR_ADAPTER pick one by index or name', async () => {
    const list = await dr('doctor', '--list', '--json');
    expect(list.code, list.stderr).toBe(0);
    const adapters = JSON.parse(list.stdout) as { index: number; name: string; backend: string }[];
    expect(adapters.length).toBeGreaterThan(0);
    expect(adapters[0]).toMatchObject({ index: 0 });
    const table = await dr('doctor', '--list');
    expect(table.stdout).toContain(adapters[0].name);
    const byIndex = JSON.parse((await dr('doctor', '--adapter', '0', '--json')).stdout);
    expect(byIndex.backend).toBe(adapters[0].backend);
    const byName = await dr('doctor', '--adapter', adapters[0].name.slice(0, 6), '--json');
    expect(JSON.parse(byName.stdout).description).toBe(JSON.parse((await dr('doctor', '--json')).stdout).description);
    const r = await dr('probe', PHOTO, '--model', CLIP, '--adapter', '0', '--texts', 'a,b', '--json');
    expect(r.code, r.stderr).toBe(0);
  });

  it('an adapter that does not exist is one line naming the ones that do, on every computing command', async () => {
    expectUserError(await dr('probe', PHOTO, '--model', CLIP, '--adapter', '99'), `--adapter "99": no adapter with that index`, 'doctor --list');
    expectUserError(await dr('doctor', '--adapter', 'no such gpu'), "no adapter's name contains it");
    const env = { ...process.env, DR_ADAPTER: 'no such gpu' };
    expectUserError(await runDr(['eval', '--ref', path.join(SHARED, 'images'), '--dist', path.join(SHARED, 'images'), '--metric', 'psnr'], { env }), 'no such gpu');
  });
});

describe('dr restore --upscale (item 13) and odd sizes (item 14)', () => {
  const TRAINING_FREE = ['--sd', SD, '--clip', CLIP, '--controlnet', path.join(SD, 'controlnet'), '--steps', '2'];
  let small: string; // 21×13 crop of a real photo: below the old 33-pixel minimum (pad to 64)

  beforeAll(async () => {
    small = path.join(tmp, 'small.png');
    await sharp(PHOTO).extract({ left: 150, top: 60, width: 21, height: 13 }).png().toFile(small);
  });

  it('the float bicubic is Pillow\'s: within 1.125 levels of the bit-exact 8-bit resize (which rounds between passes)', async () => {
    const img = await loadRgb(PHOTO);
    const [W, H] = [img.width, img.height];
    const planes = new Float32Array(3 * W * H);
    for (let i = 0; i < W * H; i++) for (let c = 0; c < 3; c++) planes[c * W * H + i] = img.data[i * 3 + c] / 255;
    for (const [w, h] of [[2 * W, 2 * H], [Math.trunc(1.5 * W), 3 * H + 1]]) {
      const exact = resizeBicubicU8(img, w, h).data;
      const mine = resizeBicubicPlanes(planes, 3, W, H, w, h);
      let worst = 0;
      for (let i = 0; i < w * h; i++) for (let c = 0; c < 3; c++) worst = Math.max(worst, Math.abs(mine[c * w * h + i] * 255 - exact[i * 3 + c]));
      // The 8-bit path rounds its intermediate (±0.5 level) before a vertical pass whose |weights| sum
      // to at most 1.25 (bicubic a = −0.5 at phase ½), then rounds again: 0.5·1.25 + 0.5. Measured 1.10.
      expect(worst).toBeLessThanOrEqual(1.125);
    }
  });

  it('--upscale 2 doubles the output; --upscale 4 beyond --tile runs in tiles', async () => {
    const out2 = path.join(tmp, 'small_x2.png');
    const r2 = await dr('restore', small, '-o', out2, ...TRAINING_FREE, '--upscale', '2', '--json');
    expect(r2.code, r2.stderr).toBe(0);
    expect(JSON.parse(r2.stdout).settings.upscale).toBe(2);
    expect(await sharp(out2).metadata()).toMatchObject({ width: 42, height: 26 });
    const out4 = path.join(tmp, 'small_x4.png');
    const r4 = await dr('restore', small, '-o', out4, ...TRAINING_FREE, '--upscale', '4', '--tile', '64', '--tile-overlap', '32', '--json');
    expect(r4.code, r4.stderr).toBe(0);
    expect(await sharp(out4).metadata()).toMatchObject({ width: 84, height: 52 });
    expectUserError(await dr('restore', small, '-o', path.join(tmp, 'x.png'), ...TRAINING_FREE, '--upscale', '0.5'), '--upscale', 'from 1 to 16');
  });

  it('a 21×13 photo restores in both modes (padded to 24×16: a 3×2 latent)', async () => {
    const out = path.join(tmp, 'small_tf.png');
    const r = await dr('restore', small, '-o', out, ...TRAINING_FREE);
    expect(r.code, r.stderr).toBe(0);
    expect(await sharp(out).metadata()).toMatchObject({ width: 21, height: 13 });
    const model = path.join(tmp, 'dr-tiny');
    expect((await dr('init', '--sd', SD, '--clip', CLIP, '--control-channels', '32,32,32,32', '-o', model)).code).toBe(0);
    const out2 = path.join(tmp, 'small_dr.png');
    const r2 = await dr('restore', small, '-o', out2, '--model', model, '--steps', '2');
    expect(r2.code, r2.stderr).toBe(0);
    expect(await sharp(out2).metadata()).toMatchObject({ width: 21, height: 13 });
  });
});

describe('--shard i/n (item 16)', () => {
  const names = ['a1', 'b2', 'c3', 'd4', 'e5', 'f6', 'g7'];
  let photos: string;

  beforeAll(async () => {
    photos = path.join(tmp, 'shard-photos');
    fs.mkdirSync(photos);
    for (const [i, n] of names.entries()) {
      await sharp(PHOTO).extract({ left: 20 * i, top: 10 * i, width: 24, height: 16 }).png().toFile(path.join(photos, `${n}.png`));
    }
  });

  it('a stable split by name without extension: every image in exactly one shard, the same on every run', () => {
    // FNV-1a 32: a fixed function of the name, so machines agree without talking.
    expect([0, 1, 2, 3].map((i) => inShard('x/chelsea.png', { index: i, count: 4 }))).toEqual([false, false, false, true]);
    expect(inShard('/elsewhere/chelsea.jpg', { index: 3, count: 4 })).toBe(true);
    // Even over power-of-two counts (FNV's low bits alone would follow the bytes' parity).
    const counts = [0, 1, 2, 3, 4, 5, 6, 7].map((index) => Array.from({ length: 4000 }, (_, i) => `img_${i}`).filter((n) => inShard(n, { index, count: 8 })).length);
    for (const c of counts) expect(Math.abs(c - 500)).toBeLessThan(75); // ±3.6 σ of a binomial(4000, 1/8)
    for (const count of [1, 2, 3, 5]) {
      for (const n of names) expect([...Array(count).keys()].filter((index) => inShard(`${n}.png`, { index, count }))).toHaveLength(1);
    }
    expect(() => parseShard('4/4')).toThrow(/0 ≤ i < n/);
    expect(() => parseShard('1/0')).toThrow(/0 ≤ i < n/);
    expect(() => parseShard('-1/3')).toThrow(/0 ≤ i < n/);
  });

  it('degrade and eval: the shards together are the whole set; a rerun with --skip-existing writes nothing', async () => {
    const out = path.join(tmp, 'shard-degraded');
    const seen: string[] = [];
    for (const i of [0, 1, 2]) {
      const r = await dr('degrade', photos, '-o', out, '--type', 'noise:20', '--shard', `${i}/3`);
      expect(r.code, r.stderr).toBe(0);
      const mine = names.filter((n) => inShard(n, { index: i, count: 3 }));
      expect(r.stderr).toContain(`shard ${i}/3: ${mine.length} of ${names.length} images`);
      const ev = await dr('eval', '--ref', photos, '--dist', out, '--metric', 'psnr', '--json', '--shard', `${i}/3`);
      expect(ev.code, ev.stderr).toBe(0);
      expect(JSON.parse(ev.stdout).results.map((x: { image: string }) => x.image).sort()).toEqual(mine);
      seen.push(...mine);
    }
    expect(seen.sort()).toEqual(names);
    expect(fs.readdirSync(out).filter((f) => f.endsWith('.png')).sort()).toEqual(names.map((n) => `${n}.png`));
    const before = fs.statSync(path.join(out, `${names[0]}.png`)).mtimeMs;
    const again = await dr('degrade', photos, '-o', out, '--type', 'noise:20', '--shard', '0/1', '--skip-existing');
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toContain(`skipping ${names.length} images`);
    expect(fs.statSync(path.join(out, `${names[0]}.png`)).mtimeMs).toBe(before);
  });

  it('restore: each shard restores its own images into the shared folder; a rerun with --skip-existing restores none', async () => {
    const two = path.join(tmp, 'shard-two');
    fs.mkdirSync(two);
    const [x, y] = [0, 1].map((index) => names.find((n) => inShard(n, { index, count: 2 }))!);
    for (const n of [x, y]) fs.copyFileSync(path.join(photos, `${n}.png`), path.join(two, `${n}.png`));
    const out = path.join(tmp, 'shard-restored');
    const args = ['--sd', SD, '--clip', CLIP, '--controlnet', path.join(SD, 'controlnet'), '--steps', '2'];
    const r0 = await dr('restore', two, '-o', out, ...args, '--shard', '0/2', '--json');
    expect(r0.code, r0.stderr).toBe(0);
    expect(JSON.parse(r0.stdout).results.map((r: { input: string }) => path.basename(r.input))).toEqual([`${x}.png`]);
    expect(fs.readdirSync(out)).toEqual([`${x}.png`]);
    const r1 = await dr('restore', two, '-o', out, ...args, '--shard', '1/2', '--skip-existing', '--json');
    expect(r1.code, r1.stderr).toBe(0);
    expect(fs.readdirSync(out).sort()).toEqual([`${x}.png`, `${y}.png`].sort());
    const again = await dr('restore', two, '-o', out, ...args, '--shard', '0/2', '--skip-existing', '--json');
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ results: [], skipped: [path.join(two, `${x}.png`)] });
  });
});

describe('consistent flags (item 17)', () => {
  const COMMANDS = ['restore', 'init', 'probe', 'forward', 'doctor', 'inspect', 'convert', 'degrade', 'eval', 'fetch', 'plot'];
  const WRITERS = ['restore', 'init', 'forward', 'convert', 'degrade', 'plot'];

  it('-m is --model only; every command that writes files has -o/--output and -f/--force', async () => {
    for (const c of COMMANDS) {
      const help = (await dr(c, '--help')).stdout;
      for (const m of help.matchAll(/(^|\s)-m, (--\S+)/g)) expect(m[2], c).toBe('--model');
      if (WRITERS.includes(c)) {
        expect(help, c).toMatch(/-o, --output/);
        expect(help, c).toMatch(/-f, --force/);
      }
    }
    expect((await dr('eval', '--help')).stdout).toMatch(/-f, --force/); // --report
    const images = path.join(SHARED, 'images');
    const r = await dr('eval', '--ref', images, '--dist', images, '-m', 'psnr');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("unknown option '-m'");
  });

  it('dr forward: -o/--output, --out kept as its alias', async () => {
    const inputs = path.join(CLIP, 'io.safetensors');
    const a = path.join(tmp, 'fw-a.safetensors');
    const b = path.join(tmp, 'fw-b.safetensors');
    expect((await dr('forward', '-m', CLIP, '-i', inputs, '--output', a)).code).toBe(0);
    expect((await dr('forward', '-m', CLIP, '-i', inputs, '--out', b)).code).toBe(0);
    expect(fs.readFileSync(a).equals(fs.readFileSync(b))).toBe(true);
    expectUserError(await dr('forward', '-m', CLIP, '-i', inputs), '-o/--output');
    expectUserError(await dr('forward', '-m', CLIP, '-i', inputs, '-o', a, '--out', b, '-f'), '--out is another name for -o/--output');
  });

  it('dr init -f replaces a checkpoint, never another folder', async () => {
    const model = path.join(tmp, 'dr-init-force');
    const args = ['init', '--sd', SD, '--clip', CLIP, '--control-channels', '32,32,32,32', '-o', model];
    expect((await dr(...args)).code).toBe(0);
    expectUserError(await dr(...args), 'not empty');
    fs.writeFileSync(path.join(model, 'stale.txt'), 'x');
    const r = await dr(...args, '-f');
    expect(r.code, r.stderr).toBe(0);
    expect(fs.existsSync(path.join(model, 'stale.txt'))).toBe(false);
    const other = path.join(tmp, 'not-a-checkpoint');
    fs.mkdirSync(other);
    fs.writeFileSync(path.join(other, 'keep.txt'), 'x');
    expectUserError(await dr('init', '--sd', SD, '--clip', CLIP, '-o', other, '-f'), 'not empty');
    expect(fs.existsSync(path.join(other, 'keep.txt'))).toBe(true);
  });

  it('--recursive: probe, degrade (subfolders mirrored) and eval (paired by path below the folders)', async () => {
    const root = path.join(tmp, 'tree');
    fs.mkdirSync(path.join(root, 'sub', 'deeper'), { recursive: true });
    for (const [i, rel] of ['top.png', 'sub/one.png', 'sub/deeper/one.png'].entries()) {
      await sharp(PHOTO).extract({ left: 30 * i, top: 0, width: 24, height: 16 }).png().toFile(path.join(root, rel));
    }
    const flat = JSON.parse((await dr('probe', root, '--model', CLIP, '--texts', 'a,b', '--json')).stdout);
    expect(flat.results.map((r: { image: string }) => r.image)).toEqual([path.join(root, 'top.png')]);
    const deep = JSON.parse((await dr('probe', root, '--model', CLIP, '--texts', 'a,b', '--json', '--recursive')).stdout);
    expect(deep.results.map((r: { image: string }) => path.relative(root, r.image))).toEqual(['top.png', 'sub/one.png', 'sub/deeper/one.png']);
    const out = path.join(tmp, 'tree-degraded');
    const d = await dr('degrade', root, '-o', out, '--type', 'noise:10', '--recursive');
    expect(d.code, d.stderr).toBe(0);
    for (const rel of ['top', 'sub/one', 'sub/deeper/one']) {
      expect(fs.existsSync(path.join(out, `${rel}.png`)), rel).toBe(true);
      expect(fs.existsSync(path.join(out, `${rel}.json`)), rel).toBe(true);
    }
    const ev = JSON.parse((await dr('eval', '--ref', root, '--dist', out, '--metric', 'psnr', '--json', '--recursive')).stdout);
    expect(ev.results.map((r: { image: string }) => r.image)).toEqual(['top', 'sub/one', 'sub/deeper/one']);
  });

  it('restore --recursive into a folder keeps the subfolders; --quality sets JPEG/WebP quality; a cut prompt is warned about', async () => {
    const root = path.join(tmp, 'tree-jpg');
    fs.mkdirSync(path.join(root, 'sub'), { recursive: true });
    await sharp(PHOTO).extract({ left: 0, top: 0, width: 24, height: 16 }).jpeg().toFile(path.join(root, 'sub', 'cat.jpg'));
    const out = path.join(tmp, 'tree-jpg-restored');
    const long = Array(40).fill('a very detailed cat').join(', ');
    const r = await dr('restore', root, '-o', `${out}/`, '--recursive', '--quality', '30', '--prompt', long, '--json',
      '--sd', SD, '--clip', CLIP, '--controlnet', path.join(SD, 'controlnet'), '--steps', '2');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).settings.quality).toBe(30);
    expect(fs.existsSync(path.join(out, 'sub', 'cat.jpg'))).toBe(true);
    expect(r.stderr).toMatch(/warning: --prompt: .* is \d+ tokens; CLIP reads the first 77/);
    expectUserError(await dr('restore', root, '-o', `${out}/`, '--recursive', '--quality', '0'), '--quality');
    // The encoder takes it: quality 30 is smaller than the default 95.
    const img = { width: 64, height: 48, rgb: rand(3 * 64 * 48, 9).map((v) => (v + 1) / 2) };
    const [q30, q95] = [path.join(tmp, 'q30.jpg'), path.join(tmp, 'q95.jpg')];
    await saveImage(q30, img, { quality: 30 });
    await saveImage(q95, img);
    expect(fs.statSync(q30).size).toBeLessThan(fs.statSync(q95).size * 0.7);
  });

  it('probe warns about a text CLIP cuts at 77 tokens, once, and only about that one', async () => {
    const long = Array(30).fill('a noisy photo').join(' and ');
    const r = await dr('probe', PHOTO, '--model', CLIP, '--text', long, '--text', 'a sharp photo', '--json');
    expect(r.code, r.stderr).toBe(0);
    const warnings = r.stderr.split('\n').filter((l) => l.includes('warning'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/text "a noisy photo and .*\.\.\." is \d+ tokens; CLIP reads the first 77/);
  });

  // `script` (util-linux) gives dr a terminal: the note is for people, like the progress bars.
  it.skipIf(spawnSync('script', ['--version']).status !== 0)('on a terminal, the first run that computes says shaders are being compiled; the next does not', () => {
    const env = { ...process.env, DR_CACHE_DIR: path.join(tmp, 'tty-cache') };
    const probe = ['node', CLI, 'probe', PHOTO, '--model', CLIP, '--texts', 'a,b'].map((x) => `'${x}'`).join(' ');
    const run = () => spawnSync('script', ['-qec', probe, '/dev/null'], { env, encoding: 'utf8' });
    const first = run();
    expect(first.status, first.stdout).toBe(0);
    expect(first.stdout).toMatch(/dr: first run on .*: the GPU driver compiles dr's shaders/);
    const second = run();
    expect(second.status, second.stdout).toBe(0);
    expect(second.stdout).not.toContain('first run');
    expect(second.stdout).toContain(PHOTO);
  });

  it('the shader note: shown on the first run of these kernels on an adapter, not again', () => {
    const dir = path.join(tmp, 'cache');
    const info = { adapter: 'gpu-a', vendor: 'v', architecture: 'x', description: 'driver 1', backend: 'vulkan', software: false, features: [], limits: {} };
    expect(firstRunOnAdapter(info, dir)).toBe(true);
    expect(firstRunOnAdapter(info, dir)).toBe(false);
    expect(firstRunOnAdapter({ ...info, description: 'driver 2' }, dir)).toBe(true); // a new driver compiles again
    expect(firstRunOnAdapter({ ...info, adapter: 'gpu-b' }, dir)).toBe(true);
    // A cache folder that cannot be written never nags on every run.
    const file = path.join(tmp, 'a-file');
    fs.writeFileSync(file, '');
    expect(firstRunOnAdapter(info, path.join(file, 'dr'))).toBe(false);
  });
});
