// No-reference deep metrics (CLIP-IQA, MUSIQ) against ../shared/fixtures/metrics: pyiqa run
// with the fixture README's hash32 "recipe" backbones (real architecture, pseudo-random
// weights). The recipe tensors are regenerated here, checked against the fixture's checksums,
// written to a temporary safetensors file under the reference state-dict key names and loaded
// the way `dr eval --weights DIR` loads them.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import type { Tensor } from '../src/engine/tensor.js';
import { avgPool2d } from '../src/engine/ops/pool2d.js';
import { CLIPIQA_TOKENS, ClipIqa } from '../src/graph/metrics/clipiqa.js';
import { toPlanar01, uploadImage } from '../src/graph/metrics/image.js';
import { Musiq, musiqPatches } from '../src/graph/metrics/musiq.js';
import { createMetrics, isNoReference } from '../src/graph/metrics/registry.js';
import { loadRgb } from '../src/image/load.js';
import { SafetensorsFile, writeSafetensorsLazy } from '../src/weights/safetensors.js';
import { expectClose, FIXTURES, rand, SHARED } from './helpers.js';
import { recipe } from './recipe.js';

const M = path.join(FIXTURES, 'metrics');
const imagePath = (f: string): string => (f.includes('__') ? path.join(M, 'degraded', f) : path.join(SHARED, 'images', f));
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-nr-'));

let e: Engine;
beforeAll(async () => {
  e = await Engine.create();
});
afterAll(() => fs.rmSync(TMP, { recursive: true, force: true }));


interface Checksum { shape: number[]; sum: number; first8: number[]; scale?: number; offset?: number; value?: number }

/**
 * Regenerates every tensor of a checksum file (`prefix` + key is its recipe name) and writes them,
 * keys unchanged, to one safetensors file; `extra` are the tensors that are not random.
 */
function recipeFile(checksums: string, prefix: string, out: string, extra: { name: string; shape: number[]; data: Float32Array }[] = []): string {
  const sums: Record<string, Checksum> = JSON.parse(fs.readFileSync(path.join(M, checksums), 'utf8'));
  const file = path.join(TMP, out);
  writeSafetensorsLazy(file, [...extra.map((t) => ({ ...t, dtype: 'F32' as const, read: () => t.data })), ...Object.entries(sums).map(([name, c]) => ({
    name, dtype: 'F32' as const, shape: c.shape,
    read: () => {
      const n = c.shape.reduce((a, b) => a * b, 1);
      const v = recipe(prefix + name, n, c.scale!, c.offset ?? 0);
      // the generator against the fixture: first values bit for bit, the f64 sum to f64 rounding
      expect([...v.subarray(0, 8)], name).toEqual(c.first8);
      let s = 0;
      for (const x of v) s += x;
      expect(Math.abs(s - c.sum), name).toBeLessThanOrEqual(1e-9 * n);
      return v;
    },
  }))]);
  return file;
}

async function read(t: Tensor): Promise<Float32Array> {
  const v = await e.read(t);
  e.release(t);
  return v;
}

const maxAbs = (x: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]));
  return m;
};

describe('kernels against plain TypeScript', () => {
  it('avg_pool2d: 2/2 on 2×3×15×9 (odd: floor), 3/2 on 1×2×7×8, 1/1', async () => {
    for (const [N, C, H, W, K, S] of [[2, 3, 15, 9, 2, 2], [1, 2, 7, 8, 3, 2], [1, 1, 3, 5, 1, 1]]) {
      const x = rand(N * C * H * W, 11 + K);
      const t = avgPool2d(e, e.upload(x, [N, C, H, W]), K, S);
      const [Ho, Wo] = [Math.floor((H - K) / S) + 1, Math.floor((W - K) / S) + 1];
      expect(t.shape).toEqual([N, C, Ho, Wo]);
      const want: number[] = [];
      for (let p = 0; p < N * C; p++) {
        for (let i = 0; i < Ho; i++) {
          for (let j = 0; j < Wo; j++) {
            let s = 0;
            for (let a = 0; a < K; a++) for (let b = 0; b < K; b++) s += x[p * H * W + (i * S + a) * W + j * S + b];
            want.push(s / (K * K));
          }
        }
      }
      // f32 sum of ≤ 9 values in [-1, 1] against f64
      expectClose(await read(t), want, 0, 1e-6);
    }
  });
});

describe('CLIP-IQA (pyiqa clipiqa, CLIP RN50) against pyiqa', () => {
  const dbg = SafetensorsFile.open(path.join(M, 'clipiqa_tensors.safetensors'));
  const scores: Record<string, { clipiqa: number; logits: number[]; image_feature_norm: number }> = JSON.parse(fs.readFileSync(path.join(M, 'clipiqa.json'), 'utf8')).scores;
  const metric = new ClipIqa();
  let weights: string;

  beforeAll(async () => {
    // logit_scale is not random: ln(100) in float32
    weights = recipeFile('clipiqa_recipe_checksums.json', 'clip_rn50.', 'clipiqa_rn50.safetensors', [{ name: 'logit_scale', shape: [], data: Float32Array.of(Math.log(100)) }]);
    metric.load(e, weights);
  }, 300_000);

  it('prompt tokens are the fixture\'s', () => {
    const tokens = dbg.readInt32('prompt_tokens');
    const want = CLIPIQA_TOKENS.flatMap((r) => [...r, ...Array(77 - r.length).fill(0)]);
    expect([...tokens]).toEqual(want);
  });

  it('text features of the 10 prompts (text tower, recipe weights)', async () => {
    const got = await metric.promptFeatures(e);
    const want = dbg.readF32('text_features');
    // 12 pre-norm blocks in f32, sums reordered (K ≤ 2048), values up to ~4: measured ≤ 1.8e-6 of
    // the largest value; allowed 1e-5 of it (f32 ε · 12 blocks · a few roundings each).
    expectClose(got, want, 0, 1e-5 * maxAbs(want));
  });

  it('96×96 chelsea crop: stem, layer1-4, attention pool, score', async () => {
    const x = e.upload(dbg.readF32('debug.input_01'), [1, 3, 96, 96]);
    const traced = new Map<string, Tensor>();
    e.tracer = (name, t) => traced.set(name, t);
    const feature = await metric.imageFeature(e, x);
    e.tracer = undefined;
    e.release(x);
    // ~50 f32 conv/BN layers (BN folded into the convs, sums of up to 4608 terms reordered):
    // measured ≤ 1.6e-6 of each tensor's largest value; allowed 1e-5 of it.
    for (const name of ['stem', 'layer1', 'layer2', 'layer3', 'layer4']) {
      const want = dbg.readF32(`debug.${name}_out`);
      expectClose(await read(traced.get(name)!), want, 0, 1e-5 * maxAbs(want));
    }
    const want = dbg.readF32('debug.attnpool_out');
    expectClose(feature, want, 0, 1e-5 * maxAbs(want));
    // logits are 100·cosine: a 1e-6 relative feature error moves them by ~1e-4; a pair's
    // probability moves by at most a quarter of its logit difference's change: allowed 5e-5.
    // Measured: 1.2e-8.
    expect(Math.abs((await metric.scoreFeature(e, feature)).score - dbg.readF32('debug.clipiqa')[0])).toBeLessThan(5e-5);
  });

  it('full-size images (clipiqa.json): odd sizes 451×300 and 448×172, no resize', async () => {
    // ~25 s per image on lavapipe. Measured: logits ≤ 1.3e-5, scores ≤ 2.3e-7, feature norms ≤ 4e-8 relative.
    for (const file of ['chelsea.png', 'text__noise50.png']) {
      const x = uploadImage(e, await loadRgb(imagePath(file)));
      const feature = await metric.imageFeature(e, x);
      e.release(x);
      const { logits, score } = await metric.scoreFeature(e, feature);
      const want = scores[file];
      expectClose(logits, want.logits, 0, 1e-4);
      expect(Math.abs(score - want.clipiqa), file).toBeLessThan(5e-5);
      expect(Math.abs(Math.hypot(...feature) / want.image_feature_norm - 1), file).toBeLessThan(1e-5);
    }
  }, 300_000);

  it('dr eval: clipiqa is no-reference; a missing weight file is named with the expected keys', () => {
    expect(isNoReference('clipiqa')).toBe(true);
    expect(() => createMetrics(e, ['clipiqa'], { net: 'alex', weightsDir: path.join(TMP, 'nowhere') }))
      .toThrow(/nowhere\/clipiqa_rn50\.safetensors: missing; clipiqa needs it \(OpenAI CLIP RN50 state dict/);
    expect(() => createMetrics(e, ['clipiqa'], { net: 'alex' })).toThrow(/clipiqa: needs weights: give --weights DIR with clipiqa_rn50\.safetensors/);
  });

  it('an image smaller than 32×32 has no score (dr eval reports it, the other images still count)', async () => {
    await expect(metric.imageFeature(e, e.upload(new Float32Array(3 * 31 * 40), [1, 3, 31, 40]))).rejects.toThrow(/40x31 is smaller than the 32x32 that CLIP RN50 needs/);
  });
});

describe('MUSIQ (pyiqa MUSIQ, one-output head) against pyiqa', () => {
  const dbg = SafetensorsFile.open(path.join(M, 'musiq_debug.safetensors'));
  const scores: Record<string, number> = JSON.parse(fs.readFileSync(path.join(M, 'musiq.json'), 'utf8')).scores;
  const model = new Musiq();

  beforeAll(() => {
    model.load(e, recipeFile('musiq_recipe_checksums.json', 'musiq.', 'musiq.safetensors'));
  }, 300_000);

  it('64×64 chelsea crop: patch layout, patches, embeddings, CLS, score', async () => {
    const p = musiqPatches(dbg.readF32('debug.input_01'), 64, 64);
    const meta = dbg.readF32('debug.patch_meta');
    expect(p.count).toBe(197);
    expect([...p.spatial]).toEqual(Array.from({ length: 197 }, (_, i) => meta[3 * i]));
    expect([...p.scale]).toEqual(Array.from({ length: 197 }, (_, i) => meta[3 * i + 1]));
    expect(Array.from({ length: 197 }, (_, i) => meta[3 * i + 2]).every((m) => m === 1)).toBe(true);
    // f32 torch bicubic (16 taps on values in [-1, 1]) against ours (f32 weights, f64 sums):
    // measured ≤ 7.2e-7; allowed 5e-6 (16 taps · ε · |weights| ≤ 1.5, twice).
    expectClose(p.pixels.subarray(0, 8 * 3072), dbg.readF32('debug.patches_first8'), 0, 5e-6);
    // patch network + Linear over 16384 inputs in f32, sums reordered: measured ≤ 3.5e-6 of the
    // largest value; allowed 1e-5 of it (f32 ε · √16384 · a few layers).
    const wantEmb = dbg.readF32('debug.embedding_out');
    expectClose(await read(model.embedPatches(e, e.upload(p.pixels, [197, 3072]))), wantEmb, 0, 1e-5 * maxAbs(wantEmb));
    let cls!: Tensor;
    e.tracer = (name, t) => { if (name === 'encoder_out_cls') cls = t; };
    const score = await model.scorePatches(e, p);
    e.tracer = undefined;
    // 14 pre-norm blocks after it: measured ≤ 1.0e-6 of the largest value; allowed 1e-5 of it.
    const wantCls = dbg.readF32('debug.encoder_out_cls');
    expectClose(await read(cls), wantCls, 0, 1e-5 * maxAbs(wantCls));
    // the head (384 → 1) of that CLS; scores are O(1): measured 1.2e-7, allowed 1e-5
    expect(Math.abs(score - dbg.readF32('debug.score')[0])).toBeLessThan(1e-5);
  });

  it('full-size images (musiq.json): aspect ratios 451×300, 448×172, 512×400, 512×512', async () => {
    // non-square images exercise the rounding of each scale's size, the zero padding to
    // multiples of 32 and the dropped mask-0 rows. Measured ≤ 3.4e-7; allowed 1e-5 as above.
    for (const file of ['chelsea.png', 'text__noise50.png', 'coffee__jpeg10.png', 'astronaut__blur.png']) {
      const img = await loadRgb(imagePath(file));
      const s = await model.score(e, toPlanar01(img), img.height, img.width);
      expect(Math.abs(s - scores[file]), file).toBeLessThan(1e-5);
    }
  }, 300_000);

  it('dr eval: musiq is no-reference; a missing weight file is named with the expected keys', () => {
    expect(isNoReference('musiq')).toBe(true);
    expect(() => createMetrics(e, ['musiq'], { net: 'alex', weightsDir: path.join(TMP, 'nowhere') }))
      .toThrow(/nowhere\/musiq\.safetensors: missing; musiq needs it \(pyiqa MUSIQ state dict/);
  });
});
