// Model-side groundwork for the training losses (issue 9, item 4): a timestep per batch
// element in the UNet and the control network, VGG-19 features for stage 2's perceptual loss,
// and the PatchGAN discriminator.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grad } from '../src/engine/autograd.js';
import { Engine } from '../src/engine/engine.js';
import { mse } from '../src/engine/ops/losses.js';
import type { Tensor } from '../src/engine/tensor.js';
import { DiffRestorerControl } from '../src/graph/diffrestorer/control.js';
import { UNet2DConditionModel } from '../src/graph/sd/unet.js';
import {
  initDiscriminator, NLayerDiscriminator, saveDiscriminator, discriminatorConfigJson, type DiscriminatorConfig,
} from '../src/graph/train/discriminator.js';
import { perceptualLoss, Vgg19Features } from '../src/graph/train/vgg19.js';
import { SafetensorsFile, writeSafetensors } from '../src/weights/safetensors.js';
import { absMax, expectClose, FIXTURES, rand } from './helpers.js';
import { conv2dRef, groupNormRef, mseRef, pool2dRef } from './reference.js';

const SD = path.join(FIXTURES, 'sd-tiny');
const TRAIN = path.join(FIXTURES, 'train');
let e: Engine;
let unet: UNet2DConditionModel;
let control: DiffRestorerControl;

beforeAll(async () => {
  e = await Engine.create();
  unet = UNet2DConditionModel.load(e, path.join(SD, 'unet'), 'f32');
  control = DiffRestorerControl.load(e, path.join(TRAIN, 'dr-random/control'), 'f32');
});

/** Sample b of a [B, ...] host array. */
const item = (x: Float32Array, B: number, b: number): Float32Array => x.subarray((b * x.length) / B, ((b + 1) * x.length) / B);

describe('a timestep per batch element', () => {
  // Latent [2, 4, 8, 8], a 3-token context of the UNet's cross_attention_dim 32.
  const [B, C, h, w, L, Cc] = [2, 4, 8, 8, 3, 32];
  const sample = rand(B * C * h * w, 11);
  const context = rand(B * L * Cc, 12);
  const timesteps = [17, 803];
  const up = (x: Float32Array, shape: number[]): Tensor => e.upload(x, shape);

  // The batch runs the same f32 kernels on each sample as a batch of one: only the order of
  // reductions may differ, a few ulps of the largest value.
  const tol = (ref: Float32Array): number => 1e-5 * absMax(ref);

  it('UNet: a batch of 2 at timesteps [17, 803] equals the two single-sample runs', async () => {
    const both = await e.read(unet.forward(e, up(sample, [B, C, h, w]), timesteps, up(context, [B, L, Cc])));
    for (let b = 0; b < B; b++) {
      const one = await e.read(unet.forward(e, up(item(sample, B, b), [1, C, h, w]), timesteps[b], up(item(context, B, b), [1, L, Cc])));
      expectClose(item(both, B, b), one, 0, tol(one));
    }
    // The two timesteps give visibly different predictions, so the comparison above can tell them apart.
    const other = await e.read(unet.forward(e, up(item(sample, B, 1), [1, C, h, w]), timesteps[0], up(item(context, B, 1), [1, L, Cc])));
    expect(absMax(other.map((v, i) => v - item(both, B, 1)[i]))).toBeGreaterThan(100 * tol(other));
  });

  it("Diff-Restorer's control network: a batch of 2 equals the two single-sample runs", async () => {
    const hint = rand(B * 32 * h * w, 13); // the control encoder's output [B, C0, h, w]
    const run = (b: number | undefined) => {
      const [n, s, c, t] = b === undefined ? [B, sample, context, timesteps] : [1, item(sample, B, b), item(context, B, b), [timesteps[b]]];
      const hb = b === undefined ? hint : item(hint, B, b);
      return control.network.forward(e, up(s, [n, C, h, w]), t, up(c, [n, L, Cc]), up(hb, [n, 32, h, w]));
    };
    const both = run(undefined);
    for (let b = 0; b < B; b++) {
      const one = run(b);
      for (const [k, r] of [...one.down, one.mid].entries()) {
        const ref = await e.read(r);
        const full = await e.read(k < one.down.length ? both.down[k] : both.mid);
        expectClose(item(full, B, b), ref, 0, tol(ref));
      }
    }
  });

  it('one timestep is broadcast to the batch; a wrong count is a one-line error', async () => {
    const s = up(sample, [B, C, h, w]);
    const c = up(context, [B, L, Cc]);
    expectClose(await e.read(unet.forward(e, s, [803], c)), await e.read(unet.forward(e, s, 803, c)), 0, 0);
    expect(() => unet.forward(e, s, [1, 2, 3], c)).toThrow('3 timesteps for a batch of 2');
  });

  describe('against PyTorch on the stage-1 fixture (per-sample timesteps)', () => {
    let io: SafetensorsFile;
    beforeAll(() => {
      io = SafetensorsFile.open(path.join(TRAIN, 'stage1_io.safetensors'));
    });
    afterAll(() => io.close());
    const input = (name: string): Tensor => up(io.readF32(name), io.info(name).shape);

    it('control residuals and the controlled UNet prediction at timesteps t[b]', async () => {
      const t = Array.from(io.readInt32('timesteps'));
      expect(t[0]).not.toBe(t[1]);
      const res = control.network.forward(e, input('out.z_t'), t, input('out.p_s'), input('out.hint'));
      // f32 against the f64 reference: the fixture's suggested 1e-4 · max|ref| for intermediates
      // (measured f32-vs-f64 differences: ≤ 1.1e-6 relative).
      for (const [got, name] of [[res.down[0], 'out.residual_down0'], [res.mid, 'out.residual_mid']] as const) {
        const ref = io.readF32(name);
        expectClose(await e.read(got), ref, 0, 1e-4 * absMax(ref));
      }
      const eps = io.readF32('out.eps_pred');
      expectClose(await e.read(unet.forward(e, input('out.z_t'), t, input('out.p_s'), res)), eps, 0, 1e-4 * absMax(eps));
    });
  });
});

describe('VGG-19 features', () => {
  const VGG = path.join(TRAIN, 'vgg19.safetensors');
  let vgg: Vgg19Features;
  let weights: SafetensorsFile;
  beforeAll(() => {
    vgg = Vgg19Features.load(e, VGG);
    weights = SafetensorsFile.open(VGG);
  });
  afterAll(() => weights.close());

  /** f64 host VGG: [-1, 1] → [0, 1] → ImageNet-normalised, conv+ReLU stages with 2×2 max-pools between. */
  function vggRef(y: ArrayLike<number>, [B, , H, W]: number[]): { values: Float64Array; shape: number[] }[] {
    const [mean, std] = [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]];
    let shape = [B, 3, H, W];
    let x: Float64Array = Float64Array.from(y, (v: number, i) => ((v + 1) / 2 - mean[Math.floor(i / (H * W)) % 3]) / std[Math.floor(i / (H * W)) % 3]);
    const out = [];
    for (const [s, convs] of [[0, 2], [5, 7], [10, 12, 14, 16], [19, 21, 23, 25], [28, 30, 32, 34]].entries()) {
      if (s > 0) {
        x = pool2dRef(x, shape, 'max', 2, 2, 0);
        shape = [B, shape[1], Math.floor(shape[2] / 2), Math.floor(shape[3] / 2)];
      }
      for (const n of convs) {
        const wInfo = weights.info(`features.${n}.weight`);
        const r = conv2dRef(x, weights.readF32(`features.${n}.weight`), weights.readF32(`features.${n}.bias`), shape, wInfo.shape, 1, 1);
        x = r.y.map((v) => Math.max(v, 0));
        shape = [B, wInfo.shape[0], r.Ho, r.Wo];
      }
      out.push({ values: x, shape });
    }
    return out;
  }

  it('reads the stage widths from the file', () => {
    expect(vgg.widths).toEqual([8, 16, 16, 32, 32]);
  });

  it('relu1_2 … relu5_4 against an f64 host reference (batch 2, odd sides 21×18)', async () => {
    const shape = [2, 3, 18, 21];
    const y = rand(2 * 3 * 18 * 21, 21);
    const got = vgg.forward(e, e.upload(y, shape));
    const ref = vggRef(y, shape);
    for (let k = 0; k < 5; k++) {
      expect(got[k].shape).toEqual(ref[k].shape);
      // 16 stacked f32 convs of ≤ 288 terms: rounding grows with depth, relative to the layer's scale
      // (measured ≤ 1.0e-6).
      expectClose(await e.read(got[k]), ref[k].values, 0, 2e-5 * absMax(ref[k].values));
    }
  });

  it("L_per of the stage-2 fixture's x_hat against 2·I_HQ − 1", async () => {
    const io = SafetensorsFile.open(path.join(TRAIN, 'stage2_io.safetensors'));
    try {
      const up = (name: string): Tensor => e.upload(io.readF32(name), io.info(name).shape);
      const target = io.readF32('pixels_hq').map((v) => 2 * v - 1);
      const loss = perceptualLoss(e, vgg, up('out.x_hat'), e.upload(target, io.info('pixels_hq').shape));
      expect(loss.shape).toEqual([]);
      // Losses: the fixture's suggested rtol 1e-4 (its f32 vs f64: 2.1e-7 relative; measured here 7e-8).
      expectClose(await e.read(loss), io.readF32('loss_per'), 1e-4, 0);
    } finally {
      io.close();
    }
  });

  it('d L_per / d x_hat on the tape against central differences of the f64 reference', async () => {
    const shape = [1, 3, 17, 16];
    const [a, b] = [rand(3 * 17 * 16, 31), rand(3 * 17 * 16, 32)];
    const fb = vggRef(b, shape);
    const lossRef = (x: Float64Array): number => vggRef(x, shape).reduce((s, f, k) => s + mseRef(f.values, fb[k].values), 0);
    const ta = e.upload(a, shape);
    const { loss, grads } = grad(e, () => perceptualLoss(e, vgg, ta, e.upload(b, shape)), [ta]);
    const g = await e.read(grads[0]!);
    const x = Float64Array.from(a);
    expect((await e.read(loss))[0]).toBeCloseTo(lossRef(x), 6);
    // Every 13th element (the f64 VGG runs twice per element), step 1e-5.
    const h = 1e-5;
    let worst = 0;
    const scaleRef = absMax(g);
    for (let i = 0; i < x.length; i += 13) {
      x[i] = a[i] + h;
      const up = lossRef(x);
      x[i] = a[i] - h;
      const down = lossRef(x);
      x[i] = a[i];
      worst = Math.max(worst, Math.abs(g[i] - (up - down) / (2 * h)) / scaleRef);
    }
    // f32 forward and backward through 16 convs, 4 pools and 5 MSEs: measured 4.6e-7·max.
    console.log(`VGG L_per gradient: worst ${worst.toExponential(2)}·max`);
    expect(worst).toBeLessThan(1e-5);
  });

  it('a missing or wrong weights file is a one-line error', () => {
    expect(() => Vgg19Features.load(e, path.join(TRAIN, 'no-such-vgg.safetensors'))).toThrow(/no-such-vgg.safetensors: no such file/);
    expect(() => Vgg19Features.load(e, path.join(TRAIN, 'dr-random/decoder/model.safetensors')))
      .toThrow(/model.safetensors: not a VGG-19 features checkpoint \(no tensor "features.0.weight"\)/);
    // .pth files go through the restricted unpickler (here a UNet state dict).
    expect(() => Vgg19Features.load(e, path.join(FIXTURES, 'interop/pth/unet_zip.pth'))).toThrow(/unet_zip.pth: not a VGG-19 features checkpoint/);
    expect(() => vgg.forward(e, e.upload(rand(3 * 15 * 40), [1, 3, 15, 40]))).toThrow('at least 16×16 pixels, got 40×15');
  });
});

describe('PatchGAN discriminator (pix2pix NLayerDiscriminator)', () => {
  const cfg: DiscriminatorConfig = { inChannels: 3, ndf: 4, nLayers: 3, eps: 1e-5, slope: 0.2 };
  // pix2pix's Sequential indices: conv 0, LeakyReLU 1, conv 2, norm 3, LeakyReLU 4, conv 5, norm 6, …, conv 11.
  const KEYS = ['0', '2', '3', '5', '6', '8', '9', '11'].flatMap((n) => [`model.${n}.weight`, `model.${n}.bias`]);
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-disc-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it("has pix2pix's key names and widths ndf·[1, 2, 4, 8]", () => {
    const shapes = Object.fromEntries([...new NLayerDiscriminator(cfg).namedParams()].map(([k, p]) => [k, p.shape]));
    expect(Object.keys(shapes).sort()).toEqual([...KEYS].sort());
    expect(shapes['model.0.weight']).toEqual([4, 3, 4, 4]);
    expect(shapes['model.5.weight']).toEqual([16, 8, 4, 4]);
    expect(shapes['model.8.weight']).toEqual([32, 16, 4, 4]);
    expect(shapes['model.9.weight']).toEqual([32]);
    expect(shapes['model.11.weight']).toEqual([1, 32, 4, 4]);
    // Deeper critics cap the width at 8·ndf, as pix2pix's min(2^n, 8).
    const deep = [...new NLayerDiscriminator({ ...cfg, nLayers: 5 }).namedParams()].filter(([k]) => k.endsWith('weight') && !/\.(3|6|9|12|15)\./.test(k));
    expect(deep.map(([, p]) => p.shape[0])).toEqual([4, 8, 16, 32, 32, 32, 1]);
  });

  /** f64 host forward: conv (4×4, pad 1) → instance norm → LeakyReLU(0.2), per pix2pix. */
  function discRef(w: (k: string) => ArrayLike<number>, x: ArrayLike<number>, inShape: number[]): { values: Float64Array; shape: number[] } {
    let shape = inShape;
    let values: Float64Array = Float64Array.from(x);
    const layers: [string, number, string | undefined, boolean][] = [['0', 2, undefined, true], ['2', 2, '3', true], ['5', 2, '6', true], ['8', 1, '9', true], ['11', 1, undefined, false]];
    for (const [conv, stride, norm, act] of layers) {
      const wt = w(`model.${conv}.weight`);
      const Cout = wt.length / (shape[1] * 16);
      const r = conv2dRef(values, wt, w(`model.${conv}.bias`), shape, [Cout, shape[1], 4, 4], stride, 1);
      shape = [shape[0], Cout, r.Ho, r.Wo];
      values = r.y;
      if (norm) values = groupNormRef(values, shape[0], Cout, r.Ho * r.Wo, Cout, w(`model.${norm}.weight`), w(`model.${norm}.bias`), cfg.eps);
      if (act) values = values.map((v) => (v > 0 ? v : 0.2 * v));
    }
    return { values, shape };
  }

  it('forward against an f64 host reference (random weights incl. the norms’ affine, batch 2, 35×29)', async () => {
    const dir = path.join(tmp, 'random');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(discriminatorConfigJson(cfg)));
    const host = new Map([...new NLayerDiscriminator(cfg).namedParams()].map(([k, p], i) => {
      const n = p.shape.reduce((a, d) => a * d, 1);
      // Weights of fan-in scale; norm scales around 1.
      const fan = p.shape.length === 4 ? p.shape[1] * 16 : 1;
      const v = rand(n, 100 + i, p.shape.length === 4 ? 1 / Math.sqrt(fan) : 0.5);
      if (/model\.(3|6|9)\.weight/.test(k)) v.forEach((x, j) => (v[j] = 1 + x));
      return [k, { shape: [...p.shape], v }];
    }));
    writeSafetensors(path.join(dir, 'model.safetensors'), [...host].map(([name, t]) => ({ name, dtype: 'F32', shape: t.shape, data: t.v })));
    const d = NLayerDiscriminator.load(e, dir);
    const shape = [2, 3, 35, 29];
    const x = rand(2 * 3 * 35 * 29, 7);
    const got = d.forward(e, e.upload(x, shape));
    const ref = discRef((k) => host.get(k)!.v, x, shape);
    expect(got.shape).toEqual([2, 1, 2, 1]);
    expect(ref.shape).toEqual(got.shape);
    // Five f32 convs (≤ 512 terms) and three instance norms over as few as 6 pixels: 1e-5 · max|ref|
    // (measured 6.5e-7).
    expectClose(await e.read(got), ref.values, 0, 1e-5 * absMax(ref.values));
  });

  it('gradients of mse(D(x), target) on the tape for the input and the weights against central differences', async () => {
    const dir = path.join(tmp, 'grad');
    initDiscriminator(dir, cfg, 3);
    const d = NLayerDiscriminator.load(e, dir);
    const f = SafetensorsFile.open(path.join(dir, 'model.safetensors'));
    const host = new Map([...f.tensors.keys()].map((k) => [k, f.readF32(k)]));
    f.close();
    // Norm affine away from (1, 0) so its gradients are exercised.
    for (const n of ['3', '6', '9']) {
      for (const [k, base] of [['weight', 1], ['bias', 0]] as const) {
        const v = Float32Array.from(rand(host.get(`model.${n}.${k}`)!.length, Number(n) + (base ? 50 : 60), 0.3), (u) => base + u);
        host.set(`model.${n}.${k}`, v);
        const p = [...d.namedParams()].find(([name]) => name === `model.${n}.${k}`)![1];
        p.value = e.createWeight(new Uint8Array(v.buffer), p.shape, 'f32');
      }
    }
    const shape = [2, 3, 26, 25];
    const x = rand(2 * 3 * 26 * 25, 41);
    const target = rand(2, 42);
    const names = ['model.0.weight', 'model.5.weight', 'model.6.weight', 'model.9.bias', 'model.11.bias'];
    const params = names.map((k) => [...d.namedParams()].find(([name]) => name === k)![1].t);
    const tx = e.upload(x, shape);
    const { grads } = grad(e, () => mse(e, d.forward(e, tx), e.upload(target, [2, 1, 1, 1])), [tx, ...params]);
    const lossRef = (w: Map<string, ArrayLike<number>>, input: ArrayLike<number>): number =>
      mseRef(discRef((k) => w.get(k)!, input, shape).values, target);
    const h = 1e-5;
    let worst = 0;
    for (const [j, name] of ['input', ...names].entries()) {
      const g = await e.read(grads[j]!);
      const base = name === 'input' ? x : host.get(name)!;
      const p = Float64Array.from(base);
      const at = (): number => {
        const w = new Map<string, ArrayLike<number>>(host);
        if (name !== 'input') w.set(name, p);
        return lossRef(w, name === 'input' ? p : x);
      };
      const scaleRef = absMax(g);
      expect(scaleRef, name).toBeGreaterThan(1e-6);
      // About 60 elements per tensor, spread over it (the f64 forward runs twice per element).
      for (let i = j; i < p.length; i += Math.max(1, Math.floor(p.length / 60))) {
        p[i] = base[i] + h;
        const up = at();
        p[i] = base[i] - h;
        const down = at();
        p[i] = base[i];
        const err = Math.abs(g[i] - (up - down) / (2 * h)) / scaleRef;
        if (err > worst) worst = err;
      }
    }
    // Five convs, three instance norms (as few as 4 pixels), LeakyReLUs: measured 1.1e-6·max.
    console.log(`discriminator gradients: worst ${worst.toExponential(2)}·max`);
    expect(worst).toBeLessThan(1e-5);
  });

  it('seeded init: PyTorch default bounds, the same file for the same seed; saved weights load back', async () => {
    const [a, b] = [path.join(tmp, 'a'), path.join(tmp, 'b')];
    initDiscriminator(a, cfg, 5);
    initDiscriminator(b, cfg, 5);
    expect(fs.readFileSync(path.join(a, 'model.safetensors'))).toEqual(fs.readFileSync(path.join(b, 'model.safetensors')));
    const f = SafetensorsFile.open(path.join(a, 'model.safetensors'));
    try {
      const w = f.readF32('model.5.weight');
      expect(absMax(w)).toBeLessThanOrEqual(1 / Math.sqrt(8 * 16));
      expect(absMax(w)).toBeGreaterThan(0.9 / Math.sqrt(8 * 16));
      expect(f.readF32('model.6.weight').every((v) => v === 1)).toBe(true);
    } finally {
      f.close();
    }
    const d = NLayerDiscriminator.load(e, a);
    expect(d.config).toEqual(cfg);
    const c = path.join(tmp, 'c');
    await saveDiscriminator(e, d, c);
    const x = e.upload(rand(3 * 24 * 24, 9), [1, 3, 24, 24]);
    const out = await e.read(d.forward(e, x));
    expect(out.length).toBe(1); // 24 → 12 → 6 → 3 → 2 → 1: the smallest input
    expectClose(await e.read(NLayerDiscriminator.load(e, c).forward(e, x)), out, 0, 0);
  });

  it('bad input is a one-line error', () => {
    initDiscriminator(path.join(tmp, 'bad'), cfg, 1);
    const d = NLayerDiscriminator.load(e, path.join(tmp, 'bad'));
    expect(() => d.forward(e, e.upload(rand(3 * 23 * 40), [1, 3, 23, 40]))).toThrow('at least 24×24 pixels, got 40×23');
    expect(() => d.forward(e, e.upload(rand(4 * 32 * 32), [1, 4, 32, 32]))).toThrow('takes [B, 3, H, W] images');
    expect(() => NLayerDiscriminator.load(e, path.join(tmp, 'none'))).toThrow(/none.config.json: missing/);
  });
});
