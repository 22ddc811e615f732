// Bad or odd input that used to end in "internal error" or in silent nonsense (issue 11,
// items 6–11): each case now gives one `dr:` line or says what ran. Built CLI (`npm run build`
// first), tiny fixtures.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NoScore } from '../src/errors.js';
import { Engine } from '../src/engine/engine.js';
import { readModelIndex } from '../src/graph/diffrestorer/model.js';
import { Lpips } from '../src/graph/metrics/lpips.js';
import { niqe } from '../src/graph/metrics/niqe.js';
import { CLI, dr, expectUserError, runDr } from './cli_runner.js';
import { FIXTURES, REPO } from './helpers.js';

const SD = path.join(FIXTURES, 'sd-tiny');
const CLIP = path.join(FIXTURES, 'clip-tiny');
const TRAINING_FREE = ['--sd', SD, '--clip', CLIP, '--controlnet', path.join(SD, 'controlnet')];
const CLAMP_NOTICE = /artificially reduced/;

let tmp: string;
const at = (...p: string[]) => path.join(tmp, ...p);

/** A w×h RGB image of deterministic texture (or one flat grey), as raw pixels. */
function pixels(w: number, h: number, flat = false): Uint8Array {
  const data = new Uint8Array(w * h * 3);
  let s = 12345;
  for (let i = 0; i < data.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    data[i] = flat ? 128 : (s >>> 16) & 255;
  }
  return data;
}

async function png(file: string, w: number, h: number): Promise<string> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await sharp(Buffer.from(pixels(w, h)), { raw: { width: w, height: h, channels: 3 } }).png().toFile(file);
  return file;
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-errors-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('user-reachable input gives a DrError line, never an internal error (item 6)', () => {
  it('an unknown DR_BACKEND', async () => {
    const r = await runDr(['doctor'], { env: { ...process.env, DR_BACKEND: 'bogus' } });
    expectUserError(r, 'DR_BACKEND=bogus: not a Dawn backend (one of vulkan, metal');
  });

  it('dr fetch --endpoint notaurl, and a non-http HF_ENDPOINT, before any request', async () => {
    expectUserError(await dr('fetch', 'org/name', '--endpoint', 'notaurl'), '--endpoint: "notaurl" is not an http(s) URL');
    const r = await runDr(['fetch', 'org/name'], { env: { ...process.env, HF_ENDPOINT: 'ftp://mirror' } });
    expectUserError(r, 'HF_ENDPOINT: "ftp://mirror" is not an http(s) URL');
  });

  it('HF_HUB_CACHE naming a file (every cache path below it is ENOTDIR)', async () => {
    const file = await png(at('cache-file.png'), 8, 8);
    const r = await runDr(['probe', file, '--model', 'org/name'], { env: { ...process.env, HF_HUB_CACHE: file } });
    expectUserError(r, `org/name: not a folder and not in the Hugging Face cache (${file}/models--org--name)`);
  });

  it('dr init into a folder that refuses the write (sysfs: writable to root by its mode, refused by the kernel)', async () => {
    const r = await dr('init', '--sd', SD, '--clip', CLIP, '--control-channels', '32,32,32,32', '-o', '/sys/dr-errors-test');
    expectUserError(r, '/sys');
    expect(fs.readdirSync('/sys').filter((n) => n.includes('dr-errors-test'))).toEqual([]);
  });

  it('dr restore --steps beyond the scheduler\'s distinct timesteps (NaN, or out of memory, before)', async () => {
    const photo = await png(at('steps', 'a.png'), 24, 24);
    const r = await dr('restore', photo, '-o', at('steps', 'out.png'), ...TRAINING_FREE, '--strength', '1', '--steps', '1000');
    expectUserError(r, '--steps 1000: this scheduler has 1000 training timesteps, so at most 999 steps');
    expect(fs.existsSync(at('steps', 'out.png'))).toBe(false);
  }, 60_000);

  it('SSIM of images smaller than its 11×11 window: reported as unscored, PSNR still computed', async () => {
    for (const d of ['ref', 'dist']) await png(at('ssim', d, 'x.png'), 8, 8);
    const r = await dr('eval', '--ref', at('ssim', 'ref'), '--dist', at('ssim', 'dist'), '--metric', 'psnr,ssim', '--json');
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
    const doc = JSON.parse(r.stdout);
    expect(doc.results[0].scores.dist).toEqual({ psnr: expect.any(Number), ssim: null });
    expect(doc.unscored).toEqual([`${at('ssim', 'dist', 'x.png')}: no ssim score: 8x8 is smaller than SSIM's 11x11 window (pyiqa filters without padding, so it defines no value below 11x11)`]);
  });
});

describe('LPIPS below the side its max pools take has no score (was an internal error)', () => {
  it('alex needs 31 px a side (conv 11/4, two pools 3/2), vgg 16 (four pools 2/2); checked before any weight is read', async () => {
    const e = await Engine.create();
    const img = (h: number, w: number) => e.upload(new Float32Array(3 * h * w), [1, 3, h, w]);
    await expect(new Lpips('alex').distance(e, img(30, 40), img(30, 40))).rejects.toThrow(NoScore);
    await expect(new Lpips('alex').distance(e, img(30, 40), img(30, 40))).rejects.toThrow("40x30 is smaller than the 31x31 that LPIPS-alex's pooling layers need");
    await expect(new Lpips('vgg').distance(e, img(16, 15), img(16, 15))).rejects.toThrow("15x16 is smaller than the 16x16 that LPIPS-vgg's pooling layers need");
  });
});

describe('NIQE without enough blocks has no score, as in pyiqa (item 7)', () => {
  const img = (w: number, h: number, flat = false) => ({ width: w, height: h, data: pixels(w, h, flat) });

  it('one 96×96 block: no covariance (pyiqa divides by n − 1 = 0); two blocks: a score', () => {
    expect(() => niqe(img(96, 150))).toThrow(NoScore);
    expect(() => niqe(img(96, 150))).toThrow('96x150 holds 1 whole 96x96 block; NIQE needs 2 (an image of at least 192x96 or 96x192)');
    expect(Number.isFinite(niqe(img(192, 96)))).toBe(true);
    expect(Number.isFinite(niqe(img(96, 192)))).toBe(true);
  });

  it('blocks without finite features (flat) do not count: pyiqa\'s NaN mean, no score', () => {
    expect(() => niqe(img(192, 96, true))).toThrow('0 of its 2 96x96 blocks have finite features (a flat block has none); NIQE needs 2');
  });

  it('dr eval: the unscored image is reported, left out of the mean, and counted; exit 1', async () => {
    await png(at('niqe', 'big.png'), 192, 96);
    await png(at('niqe', 'small.png'), 40, 40);
    const r = await dr('eval', '--dist', at('niqe'), '--metric', 'niqe', '--json');
    expect(r.code, r.stderr).toBe(1);
    const doc = JSON.parse(r.stdout);
    const score = (image: string) => doc.results.find((x: { image: string }) => x.image === image).scores.niqe.niqe;
    expect(score('small')).toBeNull();
    expect(doc.mean.niqe.niqe).toBe(score('big'));
    expect(doc.count.niqe.niqe).toBe(1);
    expect(doc.unscored).toEqual([`${at('niqe', 'small.png')}: no niqe score: 40x40 holds 0 whole 96x96 blocks; NIQE needs 2 (an image of at least 192x96 or 96x192)`]);

    const table = await dr('eval', '--dist', at('niqe'), '--metric', 'niqe');
    expect(table.code).toBe(1);
    expect(table.stdout).toMatch(/^small +—$/m);
    expect(table.stdout).toMatch(/^images +1$/m); // the mean is over 1 image
    expect(table.stderr).toContain(`dr: ${at('niqe', 'small.png')}: no niqe score: 40x40 holds 0 whole`);
  });
});

describe('dr restore: options that would do nothing are refused; --json says what ran (item 8)', () => {
  let model: string;
  beforeAll(async () => {
    model = at('dr-tiny');
    const r = await dr('init', '--sd', SD, '--clip', CLIP, '--control-channels', '32,32,32,32', '-o', model);
    expect(r.code, r.stderr).toBe(0);
  });

  it.each([
    ['--strength', '0.3'],
    ['--prompt', 'a cat'],
    ['--control-scale', '0.5'],
    ['--controlnet', path.join(SD, 'controlnet')],
  ])('%s with --model', async (flag, value) => {
    const photo = await png(at('modes', 'a.png'), 24, 24);
    const r = await dr('restore', photo, '-o', at('modes', 'out.png'), '--model', model, flag, value);
    expectUserError(r, `${flag}: training-free only; with --model it would do nothing`);
  });

  it('--json: Diff-Restorer settings without the training-free ones; training-free with the steps run', async () => {
    const photo = await png(at('json', 'a.png'), 24, 24);
    const trained = await dr('restore', photo, '-o', at('json', 'dr.png'), '--model', model, '--steps', '2', '--json');
    expect(trained.code, trained.stderr).toBe(0);
    const settings = JSON.parse(trained.stdout).settings;
    expect(settings.steps).toBe(2);
    for (const key of ['strength', 'prompt', 'controlScale', 'stepsRun']) expect(settings).not.toHaveProperty(key);

    const free = await dr('restore', photo, '-o', at('json', 'tf.png'), ...TRAINING_FREE, '--steps', '5', '--strength', '0.5', '--json');
    expect(free.code, free.stderr).toBe(0);
    expect(JSON.parse(free.stdout).settings).toMatchObject({ steps: 5, strength: 0.5, stepsRun: 2 });
    expect((await dr('restore', '--help')).stdout).toContain('floor(steps × strength) of them run');
  }, 60_000);
});

describe('--key, which picks a state dict in a PyTorch file, does nothing elsewhere: refused', () => {
  it.each([
    [['inspect', path.join(CLIP, 'model.safetensors'), '--key', 'ema'], 'is a safetensors file, one set of tensors'],
    [['convert', path.join(CLIP, 'model.safetensors'), '-o', 'OUT', '--key', 'ema'], 'is a safetensors file, one set of tensors'],
    [['inspect', CLIP, '--key', 'ema'], 'is a folder; --key picks a state dict in a PyTorch file'],
  ])('%j', async (args, message) => {
    fs.mkdirSync(at('key'), { recursive: true });
    const r = await dr(...args.map((a) => (a === 'OUT' ? at('key', 'out.safetensors') : a)));
    expectUserError(r, '--key ema: ', message);
    expect(fs.existsSync(at('key', 'out.safetensors'))).toBe(false);
  });
});

describe('--seed: the range the generators honour, in every command (item 9)', () => {
  it.each([
    ['restore', ...TRAINING_FREE],
    ['degrade', '--type', 'noise:5'],
    ['init', '--sd', SD, '--clip', CLIP],
  ])('%s refuses 2^32 (it would wrap onto seed 0)', async (command, ...rest) => {
    const photo = await png(at('seed', 'a.png'), 24, 24);
    const input = command === 'init' ? [] : [photo];
    const r = await dr(command, ...input, '-o', at('seed', `${command}-out`), ...rest, '--seed', '4294967296');
    expectUserError(r, '--seed: expected an integer in 0..4294967295, got "4294967296"');
  });

  it('the top of the range is honoured, and the same seed gives the same pixels', async () => {
    const photo = await png(at('seed2', 'a.png'), 24, 24);
    const out = (n: string) => at('seed2', n);
    for (const [dir, seed] of [['a', '4294967295'], ['b', '4294967295'], ['c', '0']]) {
      const r = await dr('degrade', photo, '-o', out(dir), '--type', 'noise:20', '--seed', seed);
      expect(r.code, r.stderr).toBe(0);
    }
    const read = (d: string) => fs.readFileSync(out(`${d}/a.png`));
    expect(read('a').equals(read('b'))).toBe(true);
    expect(read('a').equals(read('c'))).toBe(false);
  });
});

describe('dr init records base models as given (item 10)', () => {
  it('a relative path stays relative (to the checkpoint folder), so the pair can move together', async () => {
    fs.mkdirSync(at('models'));
    fs.symlinkSync(SD, at('models', 'sd15')); // models/sd15 and models/dr-fresh, side by side
    const rel = path.relative(REPO, at('models', 'sd15')); // as given in the repository root, where the tests run
    const ckpt = at('models', 'dr-fresh');
    const r = await dr('init', '--sd', rel, '--clip', CLIP, '--control-channels', '32,32,32,32', '-o', ckpt);
    expect(r.code, r.stderr).toBe(0);
    const base = JSON.parse(fs.readFileSync(path.join(ckpt, 'model_index.json'), 'utf8')).base;
    expect(base).toEqual({ sd: '../sd15', clip: CLIP }); // an absolute path stays as given too
    expect(readModelIndex(ckpt)).toEqual({ sd: at('models', 'sd15'), clip: CLIP });
    // moved with its base model, keeping their places: found there
    fs.mkdirSync(at('elsewhere'));
    fs.cpSync(ckpt, at('elsewhere', 'dr-fresh'), { recursive: true });
    fs.symlinkSync(SD, at('elsewhere', 'sd15'));
    expect(readModelIndex(at('elsewhere', 'dr-fresh')).sd).toBe(at('elsewhere', 'sd15'));
    // moved without it: the error says where the path was recorded
    fs.cpSync(ckpt, at('alone', 'dr-fresh'), { recursive: true });
    const photo = await png(at('alone', 'a.png'), 24, 24);
    const r2 = await dr('restore', photo, '-o', at('alone', 'out.png'), '--model', at('alone', 'dr-fresh'));
    expectUserError(r2, `${at('alone', 'sd15')}: no such model folder`, `(the base model recorded in ${at('alone', 'dr-fresh', 'model_index.json')}; --sd gives another)`);
    expect((await dr('init', '--help')).stdout).toContain('relative path (given relative to the current folder) relative to the checkpoint');
  });
});

describe("Dawn's two limit-clamp notices are not printed (item 11)", () => {
  // Node's child stdio is a socket, which cannot be reopened: a shell pipe is what users have.
  const viaPipe = async (command: string): Promise<string> => (await promisify(execFile)('sh', ['-c', `${command} 2>&1 >/dev/null | cat`])).stdout;

  it('dr doctor prints neither: on a pipe, and on a file opened for appending', async () => {
    expect(await viaPipe(`node ${CLI} doctor`)).toBe('');
    const log = at('doctor.log');
    await promisify(execFile)('sh', ['-c', `node ${CLI} doctor 2>>${log} >/dev/null`]);
    expect(fs.readFileSync(log, 'utf8')).toBe('');
    // the old behaviour, to be sure the test can see the notices: Dawn on its own prints them
    expect(await viaPipe(`node --input-type=module -e "import {create,globals} from 'webgpu'; Object.assign(globalThis, globals); await create([]).requestAdapter(); process.exit(0)"`)).toMatch(CLAMP_NOTICE);
  });

  it('exactly those lines go: anything else Dawn prints still shows', async () => {
    // What the filter sees from Dawn, written to fd 2 as Dawn's fprintf does.
    const script = `
      import fs from 'node:fs';
      import { filterDawnNotices } from ${JSON.stringify(path.join(REPO, 'dist/src/engine/dawn_notices.js'))};
      const r = filterDawnNotices(() => {
        fs.writeSync(2, 'Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.\\n');
        fs.writeSync(2, 'Warning: something else Dawn says\\n');
        fs.writeSync(2, 'Warning: maxDynamicStorageBuffersPerPipelineLayout artificially reduced from 500000 to 16 to fit dynamic offset allocation limit.\\n');
        return 42;
      });
      process.stderr.write('after ' + r + '\\n');`;
    fs.writeFileSync(at('notices.mjs'), script);
    expect(await viaPipe(`node ${at('notices.mjs')}`)).toBe('Warning: something else Dawn says\nafter 42\n');
  });
});
