// `dr forward` reproduces each sd-tiny fixture from the command line.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SafetensorsFile } from '../src/weights/safetensors.js';
import { absMax, expectClose, FIXTURES, REPO } from './helpers.js';

const CLI = path.join(REPO, 'dist/src/cli/main.js');
const SD = path.join(FIXTURES, 'sd-tiny');
let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-forward-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Runs dr forward on a fixture io file and checks every output it shares with it. */
async function reproduces(model: string, io: string, expected: string[], extra: string[] = []): Promise<string> {
  const out = path.join(tmp, `${path.basename(io)}`);
  const ioPath = path.join(SD, 'io', io);
  const { stderr } = await promisify(execFile)('node', [CLI, 'forward', '--model', path.join(SD, model), '--inputs', ioPath, '--out', out, '--force', ...extra]);
  const got = SafetensorsFile.open(out);
  const ref = SafetensorsFile.open(ioPath);
  try {
    for (const name of expected) {
      expect(got.tensors.has(name), name).toBe(true);
      const want = ref.readF32(name);
      expect(got.info(name).shape, name).toEqual(ref.info(name).shape);
      // Same rule as the component tests: f32 summation order only.
      expectClose(got.readF32(name), want, 0, 1e-4 * Math.max(1, absMax(want)));
    }
  } finally {
    got.close();
    ref.close();
  }
  return stderr;
}

describe('dr forward on sd-tiny', () => {
  it('unet: both cases, with --stats', async () => {
    const stderr = await reproduces('unet', 'unet_io.safetensors', ['output', 'case1.output'], ['--stats']);
    expect(stderr).toMatch(/unet\s+\d+\.\d+ s/);
    expect(stderr).toMatch(/peak GPU\s+\d+\.\d MiB/);
  });

  it('unet --trace writes the intermediates under their fixture names', async () => {
    await reproduces('unet', 'unet_io.safetensors', ['intermediate.unet.mid_block', 'intermediate.unet.down_blocks.1.res.2'], ['--trace']);
  });

  it('controlnet: residuals at both conditioning scales', async () => {
    const names = [0, 1].flatMap((k) => [`scale${k}.mid_block_res_sample`, ...Array.from({ length: 12 }, (_, i) => `scale${k}.down_block_res_samples.${i}`)]);
    await reproduces('controlnet', 'controlnet_io.safetensors', names);
  });

  it('vae: encode, posterior parts, sampled latent, decode', async () => {
    await reproduces('vae', 'vae_io.safetensors', ['moments', 'posterior_mean', 'posterior_logvar', 'posterior_std', 'latent_mode_scaled', 'latent_sample_scaled', 'decoded']);
    const got = SafetensorsFile.open(path.join(tmp, 'vae_io.safetensors'));
    const ref = SafetensorsFile.open(path.join(SD, 'io/vae_io.safetensors'));
    // Rounded to 8 bits: equal except where a value sits within f32 noise of a .5 boundary.
    const [a, b] = [got.readBytes('decoded_uint8_hwc'), ref.readBytes('decoded_uint8_hwc')];
    let off = 0;
    for (let i = 0; i < a.length; i++) off += Math.abs(a[i] - b[i]) > 1 ? 100 : a[i] !== b[i] ? 1 : 0;
    expect(off).toBeLessThanOrEqual(2);
    got.close();
    ref.close();
  });
});

describe('dr forward on a scheduler folder', () => {
  it.each(['unipc_20steps_order2.safetensors', 'unipc_5steps_order2.safetensors'])('replays %s', async (io) => {
    const steps = Number(/_(\d+)steps/.exec(io)![1]);
    await reproduces('scheduler', io, Array.from({ length: steps }, (_, i) => `latent.${i}`));
    const got = SafetensorsFile.open(path.join(tmp, io));
    const ref = SafetensorsFile.open(path.join(SD, 'io', io));
    expect(Array.from(got.readF32('timesteps'))).toEqual(Array.from(ref.readInt32('timesteps')));
    got.close();
    ref.close();
  });
});
