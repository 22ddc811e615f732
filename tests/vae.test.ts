// AutoencoderKL against diffusers on sd-tiny (io/vae_io.safetensors): moments,
// posterior mode and seeded sample latents, the decoded image, and the recorded
// encoder/decoder intermediates.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import type { Tensor } from '../src/engine/tensor.js';
import { AutoencoderKL } from '../src/graph/sd/vae.js';
import { decodeTiled, fitBinding } from '../src/graph/sd/vae_tiles.js';
import { SafetensorsFile } from '../src/weights/safetensors.js';
import { absMax, expectClose, FIXTURES } from './helpers.js';

const SD = path.join(FIXTURES, 'sd-tiny');
let e: Engine;
let io: SafetensorsFile;
let vae: AutoencoderKL;

beforeAll(async () => {
  e = await Engine.create();
  io = SafetensorsFile.open(path.join(SD, 'io/vae_io.safetensors'));
  vae = AutoencoderKL.load(e, path.join(SD, 'vae'), 'f32');
});
afterAll(() => io.close());

const input = (name: string): Tensor => e.upload(io.readF32(name), io.tensors.get(name)!.shape);

/** f32 vs f32: 1e-4 · max(1, absmax) absolute, the fixture README's rule. */
async function expectFixture(t: Tensor, name: string): Promise<void> {
  const ref = io.readF32(name);
  expect(t.shape, name).toEqual(io.tensors.get(name)!.shape);
  expectClose(await e.read(t), ref, 0, 1e-4 * Math.max(1, absMax(ref)));
}

const recorded = (re: RegExp): string[] => [...io.tensors.keys()].filter((n) => re.test(n));

function traceInto(map: Map<string, Tensor>): void {
  e.tracer = (name, t) => map.set(`intermediate.vae.${name}`, t);
}

describe('sd-tiny VAE parity with diffusers', () => {
  it('encode: intermediates, moments, mode and sampled latents', async () => {
    const traced = new Map<string, Tensor>();
    traceInto(traced);
    const { moments, levels } = vae.encodeMoments(e, input('image'));
    e.tracer = undefined;
    let compared = 0;
    for (const [name, t] of traced) {
      if (!io.tensors.has(name)) continue;
      await expectFixture(t, name);
      compared++;
    }
    // Every recorded encoder intermediate but conv_norm_out (fused with its SiLU here).
    expect(compared).toBe(recorded(/^intermediate\.vae\.(encoder|quant_conv)/).length - 1);
    expect(levels.map((l) => l.shape.slice(1))).toEqual([[8, 64, 64], [16, 32, 32], [32, 16, 16]]); // entering each downsampler
    await expectFixture(moments, 'moments');
    await expectFixture(vae.latent(e, moments), 'latent_mode_scaled');
    await expectFixture(vae.latent(e, moments, input('sample_noise')), 'latent_sample_scaled');
  });

  it('decode: intermediates and the image', async () => {
    const traced = new Map<string, Tensor>();
    traceInto(traced);
    const image = vae.decode(e, input('decode_input_latent_scaled'));
    e.tracer = undefined;
    let compared = 0;
    for (const [name, t] of traced) {
      if (!io.tensors.has(name)) continue;
      await expectFixture(t, name);
      compared++;
    }
    expect(compared).toBe(recorded(/^intermediate\.vae\.(decoder|post_quant_conv)/).length - 1);
    await expectFixture(image, 'decoded');
  });

  it('rejects images whose sides do not divide by the downsampling factor', () => {
    expect(() => vae.encode(e, e.upload(new Float32Array(3 * 60 * 64), [1, 3, 60, 64]))).toThrow(/multiple of 8/);
  });
});

describe('full-resolution tiles that fit one storage binding (fitBinding)', () => {
  it('shrinks the tile, its overlap in proportion, only where the widest activation would exceed a binding', () => {
    const lavapipe = { maxBinding: 128 * 2 ** 20 } as Engine;
    // 512 f32 channels at 256² are exactly 128 MiB; 256 channels fit 362² (45 latent cells).
    expect(fitBinding(lavapipe, { size: 64, overlap: 16 }, 8, 512)).toEqual({ size: 32, overlap: 8 });
    expect(fitBinding(lavapipe, { size: 64, overlap: 16 }, 8, 256)).toEqual({ size: 45, overlap: 11 });
    expect(fitBinding({ maxBinding: 2 ** 31 } as Engine, { size: 64, overlap: 16 }, 8, 512)).toEqual({ size: 64, overlap: 16 });
    expect(fitBinding(lavapipe, undefined, 8, 512)).toEqual({ size: 32, overlap: 8 });
  });

  it('decodes a latent whose untiled activations exceed the binding limit', async () => {
    const small = await Engine.create({ maxBindingBytes: 512 * 1024 });
    const tiny = AutoencoderKL.load(small, path.join(SD, 'vae'), 'f32');
    const z = small.upload(Float32Array.from({ length: 4 * 16 * 16 }, (_, i) => Math.sin(i * 0.7)), [1, 4, 16, 16]);
    // Untiled, the decoder's 16-channel layers at 128² need 1 MiB in one binding.
    expect(() => small.tidy(() => tiny.decode(small, z))).toThrow(/more than this GPU binds at once/);
    const widest = Math.max(...tiny.config.blockOut);
    const image = small.tidy(() => decodeTiled(small, z, 8, 3, fitBinding(small, undefined, 8, widest), (t) => tiny.decode(small, t)));
    expect(image.shape).toEqual([1, 3, 128, 128]);
    expect((await small.read(image)).every(Number.isFinite)).toBe(true);
  });
});
