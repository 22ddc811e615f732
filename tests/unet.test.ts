// UNet2DConditionModel against diffusers on sd-tiny (io/unet_io.safetensors):
// the output for two cases and, to localise any difference, the per-block
// intermediates diffusers recorded with forward hooks.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import type { Tensor } from '../src/engine/tensor.js';
import { UNet2DConditionModel } from '../src/graph/sd/unet.js';
import { SafetensorsFile } from '../src/weights/safetensors.js';
import { absMax, expectClose, FIXTURES } from './helpers.js';

const SD = path.join(FIXTURES, 'sd-tiny');
let e: Engine;
let io: SafetensorsFile;
let unet: UNet2DConditionModel;

beforeAll(async () => {
  e = await Engine.create();
  io = SafetensorsFile.open(path.join(SD, 'io/unet_io.safetensors'));
  unet = UNet2DConditionModel.load(e, path.join(SD, 'unet'), 'f32');
});
afterAll(() => io.close());

const input = (name: string): Tensor => e.upload(io.readF32(name), io.tensors.get(name)!.shape);

/** f32 vs f32, summation order only: 1e-4 · max(1, absmax), the fixture README's rule. */
async function expectFixture(t: Tensor, name: string): Promise<void> {
  const ref = io.readF32(name);
  expect(t.shape, name).toEqual(io.tensors.get(name)!.shape);
  expectClose(await e.read(t), ref, 0, 1e-4 * Math.max(1, absMax(ref)));
}

describe('sd-tiny UNet parity with diffusers', () => {
  it('every recorded intermediate, then the output', async () => {
    const traced = new Map<string, Tensor>();
    e.tracer = (name, t) => traced.set(name, t);
    const out = unet.forward(e, input('sample'), io.readF32('timestep')[0], input('encoder_hidden_states'));
    e.tracer = undefined;
    const names = [...io.tensors.keys()].filter((n) => n.startsWith('intermediate.unet.'));
    let compared = 0;
    for (const name of names) {
      const t = traced.get(name.slice('intermediate.unet.'.length));
      if (!t) continue; // conv_norm_out: fused with its SiLU here, so never materialised
      await expectFixture(t, name);
      compared++;
    }
    expect(compared).toBeGreaterThanOrEqual(names.length - 1);
    await expectFixture(out, 'output');
  });

  it('case1: batch 1, another timestep', async () => {
    const out = unet.forward(e, input('case1.sample'), io.readF32('case1.timestep')[0], input('case1.encoder_hidden_states'));
    await expectFixture(out, 'case1.output');
  });
});
