// ControlNetModel against diffusers on sd-tiny (io/controlnet_io.safetensors):
// residuals at two conditioning scales, the UNet driven by them, and the
// ControlNet's recorded intermediates.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import type { Tensor } from '../src/engine/tensor.js';
import { ControlNetModel } from '../src/graph/sd/controlnet.js';
import { UNet2DConditionModel } from '../src/graph/sd/unet.js';
import { SafetensorsFile } from '../src/weights/safetensors.js';
import { absMax, expectClose, FIXTURES } from './helpers.js';

const SD = path.join(FIXTURES, 'sd-tiny');
let e: Engine;
let io: SafetensorsFile;
let unet: UNet2DConditionModel;
let controlnet: ControlNetModel;

beforeAll(async () => {
  e = await Engine.create();
  io = SafetensorsFile.open(path.join(SD, 'io/controlnet_io.safetensors'));
  unet = UNet2DConditionModel.load(e, path.join(SD, 'unet'), 'f32');
  controlnet = ControlNetModel.load(e, path.join(SD, 'controlnet'), 'f32');
});
afterAll(() => io.close());

const input = (name: string): Tensor => e.upload(io.readF32(name), io.tensors.get(name)!.shape);

/** f32 vs f32: 1e-4 · max(1, absmax) absolute, the fixture README's rule. */
async function expectFixture(t: Tensor, name: string): Promise<void> {
  const ref = io.readF32(name);
  expect(t.shape, name).toEqual(io.tensors.get(name)!.shape);
  expectClose(await e.read(t), ref, 0, 1e-4 * Math.max(1, absMax(ref)));
}

describe('sd-tiny ControlNet parity with diffusers', () => {
  it.each([0, 1])('conditioning scale index %i: residuals and the controlled UNet output', async (k) => {
    const t = io.readF32('timestep')[0];
    const traced = new Map<string, Tensor>();
    if (k === 0) e.tracer = (name, x) => traced.set(name, x);
    const hint = controlnet.embedHint(e, input('controlnet_cond'));
    const res = controlnet.forward(e, input('sample'), t, input('encoder_hidden_states'), hint, io.readF32(`scale${k}.conditioning_scale`)[0]);
    e.tracer = undefined;
    for (const [name, x] of traced) {
      const ref = `intermediate.controlnet.${name}`;
      if (io.tensors.has(ref)) await expectFixture(x, ref);
    }
    if (k === 0) expect([...traced.keys()].filter((n) => io.tensors.has(`intermediate.controlnet.${n}`)).length).toBe(8);
    for (const [i, r] of res.down.entries()) await expectFixture(r, `scale${k}.down_block_res_samples.${i}`);
    await expectFixture(res.mid, `scale${k}.mid_block_res_sample`);
    await expectFixture(unet.forward(e, input('sample'), t, input('encoder_hidden_states'), res), `scale${k}.unet_output`);
  });

  it('the UNet without control', async () => {
    await expectFixture(unet.forward(e, input('sample'), io.readF32('timestep')[0], input('encoder_hidden_states')), 'unet_output_without_control');
  });

  it('rejects a hint of the wrong size', () => {
    const hint = controlnet.embedHint(e, e.upload(new Float32Array(2 * 3 * 32 * 32), [2, 3, 32, 32]));
    expect(() => controlnet.forward(e, input('sample'), 1, input('encoder_hidden_states'), hint))
      .toThrow(/hint image 8× the latent size/);
  });
});
