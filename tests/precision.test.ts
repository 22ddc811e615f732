// --precision f16: weights and activations in f16, accumulation in f32, against
// diffusers' f32 outputs. f16 keeps 11 significant bits (step 4.9e-4 relative).
// Measured worst errors on lavapipe, as a fraction of the reference's absmax:
//   UNet output 1.6e-3, VAE decode 2.5e-3, VAE encode (latent mode) 5.0e-3
// (f32 path: 8e-7, 1.8e-6, 2.5e-6). Bounds are about 3–4× the measured error:
// loose enough for another adapter's rounding, ~100× tighter than a real bug.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import { UNet2DConditionModel } from '../src/graph/sd/unet.js';
import { AutoencoderKL } from '../src/graph/sd/vae.js';
import { SafetensorsFile } from '../src/weights/safetensors.js';
import { absMax, expectClose, FIXTURES } from './helpers.js';

const SD = path.join(FIXTURES, 'sd-tiny');
let e: Engine;
let unetIo: SafetensorsFile;
let vaeIo: SafetensorsFile;

beforeAll(async () => {
  e = await Engine.create();
  unetIo = SafetensorsFile.open(path.join(SD, 'io/unet_io.safetensors'));
  vaeIo = SafetensorsFile.open(path.join(SD, 'io/vae_io.safetensors'));
});
afterAll(() => {
  unetIo.close();
  vaeIo.close();
});

const up = (f: SafetensorsFile, n: string) => e.upload(f.readF32(n), f.info(n).shape);

describe('f16 precision against the f32 references', () => {
  it('UNet: f16 inside, f32 latents in and out', async () => {
    if (!e.gpu.hasF16) return;
    const unet = UNet2DConditionModel.load(e, path.join(SD, 'unet'), 'f16');
    expect(unet.dtype).toBe('f16');
    const out = unet.forward(e, up(unetIo, 'sample'), unetIo.readF32('timestep')[0], up(unetIo, 'encoder_hidden_states'));
    expect(out.dtype).toBe('f32');
    const ref = unetIo.readF32('output');
    expectClose(await e.read(out), ref, 0, 5e-3 * absMax(ref));
  });

  it('VAE: encode and decode in f16', async () => {
    if (!e.gpu.hasF16) return;
    const vae = AutoencoderKL.load(e, path.join(SD, 'vae'), 'f16');
    const decoded = vaeIo.readF32('decoded');
    expectClose(await e.read(vae.decode(e, up(vaeIo, 'decode_input_latent_scaled'))), decoded, 0, 1e-2 * absMax(decoded));
    const latent = vaeIo.readF32('latent_mode_scaled');
    expectClose(await e.read(vae.encode(e, up(vaeIo, 'image'))), latent, 0, 2e-2 * absMax(latent));
  });
});
