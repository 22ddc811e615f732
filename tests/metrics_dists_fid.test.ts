// DISTS and FID against ../shared/fixtures/metrics (the authors' DISTS_pt / pyiqa, pytorch-fid),
// and their kernels against plain-TypeScript references on odd shapes.
//
// The backbones have the fixture README's "hash32 recipe" weights (regenerated here) and the
// real DISTS α/β; the values are not those of the published models, they check the
// arithmetic, the layer layout and the conventions.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import { distsStats } from '../src/engine/ops/dists_stats.js';
import { l2Pool } from '../src/engine/ops/l2_pool.js';
import { Dists, DISTS_CHANNELS, hannFilter3 } from '../src/graph/metrics/dists.js';
import { uploadImage } from '../src/graph/metrics/image.js';
import { loadFromCheckpoint } from '../src/graph/module.js';
import { loadRgb } from '../src/image/load.js';
import { SafetensorsFile, writeSafetensors } from '../src/weights/safetensors.js';
import { absMax, expectClose, FIXTURES, rand, SHARED } from './helpers.js';

const M = path.join(FIXTURES, 'metrics');
const DEEP = JSON.parse(fs.readFileSync(path.join(M, 'deep.json'), 'utf8')).pairs as { ref: string; dist: string; dists: number }[];
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-dists-fid-'));

let e: Engine;
beforeAll(async () => {
  e = await Engine.create();
});
afterAll(() => fs.rmSync(TMP, { recursive: true, force: true }));

// hash32 recipe of the fixture README (backbone weights that are not shipped).
const hash32 = (x: number): number => {
  x >>>= 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  x ^= x >>> 16;
  return x >>> 0;
};
function recipe(name: string, n: number, scale: number, offset = 0): Float32Array {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(name)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  const key = hash32(h);
  const [s, o] = [Math.fround(scale), Math.fround(offset)];
  return Float32Array.from({ length: n }, (_, i) => Math.fround(Math.fround(Math.fround(2 * ((hash32((hash32(i) ^ key) >>> 0) >>> 8) / 16777216) - 1) * s) + o));
}

describe('DISTS kernels against plain TypeScript', () => {
  it('l2_pool: 3×3 Hann, stride 2, pad 1 on 2×3×7×5, 1×2×8×6 and 1×1×1×1', async () => {
    const f = hannFilter3();
    for (const [N, C, H, W] of [[2, 3, 7, 5], [1, 2, 8, 6], [1, 1, 1, 1]]) {
      const x = rand(N * C * H * W, 11);
      const t = l2Pool(e, e.upload(x, [N, C, H, W]), e.upload(f, [3, 3]));
      const [Ho, Wo] = [Math.floor((H - 1) / 2) + 1, Math.floor((W - 1) / 2) + 1];
      expect(t.shape).toEqual([N, C, Ho, Wo]);
      const want: number[] = [];
      for (let p = 0; p < N * C; p++) {
        for (let i = 0; i < Ho; i++) {
          for (let j = 0; j < Wo; j++) {
            let s = 0;
            for (let a = 0; a < 3; a++) {
              for (let b = 0; b < 3; b++) {
                const [y, xx] = [2 * i + a - 1, 2 * j + b - 1];
                if (y >= 0 && y < H && xx >= 0 && xx < W) s += f[a * 3 + b] * x[p * H * W + y * W + xx] ** 2;
              }
            }
            want.push(Math.sqrt(s + 1e-12));
          }
        }
      }
      // 9-term f32 sums of products of values ≤ 1: a few ulp
      expectClose(await e.read(t), want, 1e-6, 1e-7);
    }
  });

  it('dists_stats: S1, S2 per channel on 5 channels × 7×9 and 3 channels × 1×300', async () => {
    for (const [C, H, W] of [[5, 7, 9], [3, 1, 300]]) {
      const x = rand(C * H * W, 12).map((v) => v * 3 + 1);
      const y = rand(C * H * W, 13).map((v, i) => 0.7 * x[i] + v);
      const got = await e.read(distsStats(e, e.upload(x, [1, C, H, W]), e.upload(y, [1, C, H, W])));
      const P = H * W;
      const want: number[] = [];
      for (let c = 0; c < C; c++) {
        let [mx, my] = [0, 0];
        for (let i = 0; i < P; i++) {
          mx += x[c * P + i] / P;
          my += y[c * P + i] / P;
        }
        let [vx, vy, cv] = [0, 0, 0];
        for (let i = 0; i < P; i++) {
          const [dx, dy] = [x[c * P + i] - mx, y[c * P + i] - my];
          vx += (dx * dx) / P;
          vy += (dy * dy) / P;
          cv += (dx * dy) / P;
        }
        want.push((2 * mx * my + 1e-6) / (mx * mx + my * my + 1e-6), (2 * cv + 1e-6) / (vx + vy + 1e-6));
      }
      // f32 moments of ≤ 300 terms of values ≤ 5, relative 1e-6 each: ratios to 1e-5
      expectClose(got, want, 1e-5, 1e-6);
    }
  });
});

/** The DISTS state dict (pyiqa / DISTS_pt key names) with recipe VGG16 convs and the real α, β. */
function writeDistsWeights(): string {
  const heads = SafetensorsFile.open(path.join(M, 'vgg_heads.safetensors'));
  const tensors = ['alpha', 'beta'].map((k) => ({ name: k, dtype: 'F32' as const, shape: [...heads.info(`dists.${k}`).shape], data: heads.readF32(`dists.${k}`) }));
  const convs: [number, number, number][] = [[0, 3, 64], [2, 64, 64], [5, 64, 128], [7, 128, 128], [10, 128, 256], [12, 256, 256], [14, 256, 256],
    [17, 256, 512], [19, 512, 512], [21, 512, 512], [24, 512, 512], [26, 512, 512], [28, 512, 512]];
  const stageOf = (i: number): number => (i < 4 ? 1 : i < 9 ? 2 : i < 16 ? 3 : i < 23 ? 4 : 5);
  for (const [i, cin, cout] of convs) {
    tensors.push({ name: `stage${stageOf(i)}.${i}.weight`, dtype: 'F32', shape: [cout, cin, 3, 3], data: recipe(`vgg16.features.${i}.weight`, cout * cin * 9, Math.sqrt(6 / (cin * 9))) });
    tensors.push({ name: `stage${stageOf(i)}.${i}.bias`, dtype: 'F32', shape: [cout], data: recipe(`vgg16.features.${i}.bias`, cout, 0.05) });
  }
  const file = path.join(TMP, 'dists.safetensors');
  writeSafetensors(file, tensors);
  return file;
}

describe('DISTS against DISTS_pt / pyiqa', () => {
  const deep = SafetensorsFile.open(path.join(M, 'deep_layers_astronaut_noise50.safetensors'));
  let model: Dists;
  beforeAll(() => {
    model = new Dists();
    loadFromCheckpoint(e, model, writeDistsWeights(), { precision: 'f32' });
  });

  it('the constant buffers equal the state dict’s (Hann L2-pool filters, ImageNet mean/std)', () => {
    const heads = SafetensorsFile.open(path.join(M, 'vgg_heads.safetensors'));
    for (const [k, c] of [['stage2.4', 64], ['stage3.9', 128], ['stage4.16', 256], ['stage5.23', 512]] as const) {
      const f = heads.readF32(`dists.${k}.filter`);
      expect(f.length).toBe(c * 9);
      for (let ch = 0; ch < c; ch++) expectClose(f.subarray(ch * 9, ch * 9 + 9), hannFilter3(), 0, 1e-8);
    }
    expectClose(heads.readF32('dists.mean'), Float32Array.from([0.485, 0.456, 0.406]), 0, 0);
    expectClose(heads.readF32('dists.std'), Float32Array.from([0.229, 0.224, 0.225]), 0, 0);
    expect(DISTS_CHANNELS.reduce((a, b) => a + b)).toBe(1475);
  });

  it('32×32 crop: features of every stage, structure and texture terms per level, total', async () => {
    const ref = e.upload(deep.readF32('dists.input_ref'), [1, 3, 32, 32]);
    const dist = e.upload(deep.readF32('dists.input_dist'), [1, 3, 32, 32]);
    const names = ['relu1_2', 'relu2_2', 'relu3_3', 'relu4_3', 'relu5_3'];
    for (const [side, x] of [['ref', ref], ['dist', dist]] as const) {
      const feats = e.tidy(() => model.features(e, x));
      for (let k = 1; k <= 5; k++) {
        const want = deep.readF32(`dists.stage${k}.${names[k - 1]}.feat_${side}`);
        // up to 13 f32 convolutions of ≤ 4608-term sums, reordered: measured ≤ 2.0e-6 of the layer's largest value
        expectClose(await e.read(feats[k]), want, 1e-4, 1e-5 * absMax(want));
      }
      for (const f of feats.slice(1)) e.release(f);
    }
    const t = await model.terms(e, ref, dist);
    // per-level terms are weighted sums of ≤ 512 ratios near 1; f32 feature error ~1e-6 relative
    expectClose(t.structure, deep.readF32('dists.structure_term_per_stage'), 1e-5, 1e-7);
    expectClose(t.texture, deep.readF32('dists.texture_term_per_stage'), 1e-5, 1e-7);
    const total = deep.readF32('dists.total')[0];
    // measured 9.6e-8; torch's own f32 value of 1 − Σ terms has ~6e-8 rounding at this magnitude
    expect(Math.abs(t.value - total)).toBeLessThan(2e-6);
  }, 120_000);

  // One full-size pair: VGG16 on 448×172 takes about 2 min on lavapipe with two busy cores.
  // Measured: text__noise50 6.8e-8, text__blur 1.8e-7.
  it('full-size text.png / text__noise50.png (448×172)', async () => {
    for (const p of DEEP.filter((q) => q.ref === 'text.png' && q.dist === 'text__noise50.png')) {
      const a = uploadImage(e, await loadRgb(path.join(SHARED, 'images', p.ref)));
      const b = uploadImage(e, await loadRgb(path.join(M, 'degraded', p.dist)));
      const got = await model.distance(e, a, b);
      // torch's own f32 result (1 − a sum of terms ≈ 1) carries ~1e-7 rounding; features agree to ~1e-6
      expect(Math.abs(got - p.dists), p.dist).toBeLessThan(2e-6);
      e.release(a);
      e.release(b);
    }
  }, 300_000);
});
