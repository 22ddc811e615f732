// The dr command line as users meet it: real runs on the tiny CLIP fixture, and
// every kind of bad input ending in one clear line, a non-zero exit, no stack.
// Runs the compiled CLI (npm test builds it first).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SafetensorsFile, writeSafetensors } from '../src/weights/safetensors.js';
import { expectClose, absMax, FIXTURES, SHARED } from './helpers.js';
import { dr, expectUserError, ourLines, runDr } from './cli_runner.js';

const CLIP = path.join(FIXTURES, 'clip-tiny');
const PHOTO = path.join(SHARED, 'images/chelsea.png');
let tmp: string;


/** A copy of clip-tiny whose files a test may break. */
function clipCopy(name: string): string {
  const dir = path.join(tmp, name);
  fs.cpSync(CLIP, dir, { recursive: true });
  return dir;
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-cli-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('dr probe', () => {
  it('prints a table per image, best match first', async () => {
    const r = await dr('probe', PHOTO, '--model', CLIP);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe(PHOTO);
    const probs = lines.slice(2, 10).map((l) => Number(/(\d+\.\d)%/.exec(l)![1]));
    expect(probs).toHaveLength(8);
    expect([...probs].sort((a, b) => b - a)).toEqual(probs);
  });

  it('--json: Eq. 1 with --scale 1 is the softmax of the cosines', async () => {
    const r = await dr('probe', PHOTO, path.join(SHARED, 'images/rocket.png'), '--model', CLIP, '--texts', 'a blurry photo, a hazy photo,a sharp photo', '--scale', '1', '--json');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.texts).toEqual(['a blurry photo', 'a hazy photo', 'a sharp photo']);
    expect(out.results).toHaveLength(2);
    for (const { scores } of out.results) {
      const z = scores.reduce((s: number, x: { cosine: number }) => s + Math.exp(x.cosine), 0);
      expectClose(scores.map((s: { probability: number }) => s.probability), scores.map((s: { cosine: number }) => Math.exp(s.cosine) / z), 1e-5, 1e-7);
      for (const s of scores) expect(Math.abs(s.cosine)).toBeLessThanOrEqual(1);
    }
  });

  it('batches: the same scores with --batch 1 and --batch 8', async () => {
    const args = ['probe', path.join(SHARED, 'images'), '--model', CLIP, '--json'];
    const [a, b] = [JSON.parse((await dr(...args, '--batch', '1')).stdout), JSON.parse((await dr(...args, '--batch', '8')).stdout)];
    expect(a.results.length).toBeGreaterThan(1);
    for (const [i, r] of a.results.entries()) {
      expectClose(r.scores.map((s: { cosine: number }) => s.cosine), b.results[i].scores.map((s: { cosine: number }) => s.cosine), 1e-5, 1e-6);
    }
  });
});

describe('dr forward', () => {
  it('reproduces the clip-tiny fixture from the command line', async () => {
    const out = path.join(tmp, 'clip-out.safetensors');
    const r = await dr('forward', '--model', CLIP, '--inputs', path.join(CLIP, 'io.safetensors'), '--out', out);
    expect(r.code).toBe(0);
    const got = SafetensorsFile.open(out);
    const ref = SafetensorsFile.open(path.join(CLIP, 'io.safetensors'));
    for (const name of ['vision_last_hidden_state', 'image_embeds_normalized', 'text_last_hidden_state', 'text_embeds_normalized', 'logits_per_image', 'logits_per_text', 'vision_hidden_states.1', 'text_hidden_states.2']) {
      const want = ref.readF32(name);
      expectClose(got.readF32(name), want, 0, 1e-4 * Math.max(1, absMax(want)));
    }
    got.close();
    ref.close();
    // Never overwrites without --force.
    await expectUserError(await dr('forward', '--model', CLIP, '--inputs', path.join(CLIP, 'io.safetensors'), '--out', out), 'already exists');
  });
});

describe('bad input: one line naming the file and the problem', () => {
  it('missing model folder', async () => {
    await expectUserError(await dr('probe', PHOTO, '--model', path.join(tmp, 'nope')), 'nope', 'no such model folder');
  });

  it('partial model folder: no weights', async () => {
    const dir = clipCopy('no-weights');
    fs.rmSync(path.join(dir, 'model.safetensors'));
    await expectUserError(await dr('probe', PHOTO, '--model', dir), 'no-weights');
  });

  it('partial model folder: no vocab.json', async () => {
    const dir = clipCopy('no-vocab');
    fs.rmSync(path.join(dir, 'vocab.json'));
    await expectUserError(await dr('probe', PHOTO, '--model', dir), 'vocab.json');
  });

  it('config key missing', async () => {
    const dir = clipCopy('no-key');
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    delete cfg.vision_config.patch_size;
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
    await expectUserError(await dr('probe', PHOTO, '--model', dir), 'config.json', 'vision_config.patch_size');
  });

  it('truncated safetensors', async () => {
    const dir = clipCopy('truncated');
    const file = path.join(dir, 'model.safetensors');
    fs.truncateSync(file, fs.statSync(file).size - 1000);
    await expectUserError(await dr('probe', PHOTO, '--model', dir), 'model.safetensors');
  });

  it('lying header and unknown dtype', async () => {
    for (const [name, mutate] of [
      ['lying', (h: Record<string, { data_offsets: number[]; dtype: string }>) => { h['logit_scale'].data_offsets[1] += 4; }],
      ['dtype', (h: Record<string, { data_offsets: number[]; dtype: string }>) => { h['logit_scale'].dtype = 'F8_E9'; }],
    ] as const) {
      const dir = clipCopy(name);
      const file = path.join(dir, 'model.safetensors');
      const buf = fs.readFileSync(file);
      const n = Number(buf.readBigUInt64LE(0));
      const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
      mutate(header);
      const json = JSON.stringify(header);
      const text = Buffer.from(json.padEnd(Math.ceil(json.length / 8) * 8, ' '));
      const size = Buffer.alloc(8);
      size.writeBigUInt64LE(BigInt(text.length));
      fs.writeFileSync(file, Buffer.concat([size, text, buf.subarray(8 + n)]));
      await expectUserError(await dr('probe', PHOTO, '--model', dir), 'model.safetensors');
    }
  });

  it('tensor with the wrong shape for the config names the key', async () => {
    const dir = clipCopy('shape');
    const file = path.join(dir, 'model.safetensors');
    const st = SafetensorsFile.open(file);
    const tensors = [...st.tensors.values()].map((t) => ({
      name: t.name, dtype: t.dtype, shape: t.name === 'visual_projection.weight' ? [32, 16] : t.shape, data: st.readBytes(t.name),
    }));
    st.close();
    writeSafetensors(file, tensors);
    await expectUserError(await dr('probe', PHOTO, '--model', dir), 'visual_projection.weight', '[32,16]');
  });

  it('not an image, 0-byte file, folder without images', async () => {
    const text = path.join(tmp, 'notes.png');
    fs.writeFileSync(text, 'hello');
    const r = await dr('probe', text, '--model', CLIP);
    expect(r.code).toBe(1);
    expect(ourLines(r.stderr)).toEqual([expect.stringContaining('notes.png')]);
    const empty = path.join(tmp, 'empty.jpg');
    fs.writeFileSync(empty, '');
    expect(ourLines((await dr('probe', empty, '--model', CLIP)).stderr)).toEqual([expect.stringContaining('empty.jpg')]);
    const dir = path.join(tmp, 'no-images');
    fs.mkdirSync(dir);
    await expectUserError(await dr('probe', dir, '--model', CLIP), 'no-images', 'no images');
  });

  it('one bad image among good ones: the rest are scored, exit 1', async () => {
    const bad = path.join(tmp, 'bad.png');
    fs.writeFileSync(bad, 'not a png');
    const r = await dr('probe', PHOTO, bad, '--model', CLIP, '--json');
    expect(r.code).toBe(1);
    const out = JSON.parse(r.stdout);
    expect(out.results.map((x: { image: string }) => x.image)).toEqual([PHOTO]);
    expect(out.errors[0].image).toBe(bad);
  });

  it('empty --texts and bad --scale', async () => {
    await expectUserError(await dr('probe', PHOTO, '--model', CLIP, '--texts', ' , '), '--texts');
    await expectUserError(await dr('probe', PHOTO, '--model', CLIP, '--scale', 'hot'), '--scale');
  });
});

describe('dr doctor', () => {
  it('reports the adapter as JSON', async () => {
    const r = await dr('doctor', '--json');
    expect(r.code).toBe(0);
    const info = JSON.parse(r.stdout);
    expect(info.adapter).toBeTruthy();
    expect(info.limits.maxStorageBufferBindingSize).toBeGreaterThan(0);
    expect(['cpu', 'gpu']).toContain(info.kernels.path);
  });

  it('shows the kernel path, DR_KERNELS overrides it, an unknown value is one DrError line', async () => {
    const forced = await runDr(['doctor'], { env: { ...process.env, DR_KERNELS: 'gpu' } });
    expect(forced.stdout).toMatch(/^kernels +gpu \(DR_KERNELS=gpu\)$/m);
    expectUserError(await runDr(['doctor'], { env: { ...process.env, DR_KERNELS: 'fast' } }), 'DR_KERNELS=fast: expected cpu or gpu');
  });

  it('says whether f16 products use subgroup matrices; DR_SUBGROUP_MATRIX=0 keeps them off', async () => {
    const forced = await runDr(['doctor'], { env: { ...process.env, DR_KERNELS: 'gpu' } });
    expect(forced.stdout).toMatch(/^matrix units +(f16 matmuls on|no subgroup matrices|no f16→f32|4 subgroups)/m);
    const off = await runDr(['doctor', '--json'], { env: { ...process.env, DR_SUBGROUP_MATRIX: '0' } });
    const info = JSON.parse(off.stdout);
    expect(info.subgroupMatrixConfigs).toEqual([]);
    expect(info.features).not.toContain('chromium-experimental-subgroup-matrix');
    expect(info.kernels.matrix.tile).toBe(0);
  });
});
