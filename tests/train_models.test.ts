// Model-side groundwork for the training losses (issue 9, item 4): a timestep per batch
// element in the UNet and the control network, VGG-19 features for stage 2's perceptual loss,
// and the PatchGAN discriminator.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import type { Tensor } from '../src/engine/tensor.js';
import { DiffRestorerControl } from '../src/graph/diffrestorer/control.js';
import { UNet2DConditionModel } from '../src/graph/sd/unet.js';
import { SafetensorsFile } from '../src/weights/safetensors.js';
import { absMax, expectClose, FIXTURES, rand } from './helpers.js';

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
