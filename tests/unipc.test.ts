// UniPC scheduler against diffusers' recorded runs (sd-tiny/io/unipc_*), the
// linear_combination kernel against a TypeScript reference, config errors, and an
// exact-model check of the paths the fixtures do not cover.
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/engine/engine.js';
import type { Tensor } from '../src/engine/tensor.js';
import { linearCombination } from '../src/engine/ops/linear_combination.js';
import { readUniPCConfig, uniPCConfigFrom, UniPCScheduler } from '../src/graph/sd/unipc.js';
import { DrError } from '../src/errors.js';
import { SafetensorsFile } from '../src/weights/safetensors.js';
import { absMax, expectClose, FIXTURES, rand } from './helpers.js';

const IO = path.join(FIXTURES, 'sd-tiny/io');
const RUNS = fs.readdirSync(IO).filter((n) => /^unipc_.*\.safetensors$/.test(n));
const SCHEDULER_JSON = path.join(FIXTURES, 'sd-tiny/scheduler/scheduler_config.json');
const BASE = JSON.parse(fs.readFileSync(SCHEDULER_JSON, 'utf8'));

let e: Engine;
beforeAll(async () => {
  e = await Engine.create();
});

describe.each(RUNS)('%s', (name) => {
  const file = SafetensorsFile.open(path.join(IO, name));
  const cfg = uniPCConfigFrom(JSON.parse(file.metadata.scheduler_config), file.path);
  const timesteps = Array.from(file.readInt32('timesteps'));
  const shape = file.info('initial_latent').shape;

  it('has diffusers timesteps and sigmas', () => {
    const s = new UniPCScheduler(cfg);
    s.setTimesteps(timesteps.length);
    expect(s.timesteps).toEqual(timesteps);
    expectClose(s.sigmas, file.readF32('sigmas'), 1e-6, 0);
  });

  it('reproduces every latent from the recorded model outputs', async () => {
    const s = new UniPCScheduler(cfg);
    const run = async (steps: number) => {
      s.setTimesteps(timesteps.length);
      let latent = e.upload(file.readF32('initial_latent'), shape);
      for (let i = 0; i < steps; i++) {
        const out = e.upload(file.readF32(`model_output.${i}`), shape);
        const next = s.step(e, out, timesteps[i], latent);
        // The scheduler must not hold on to the caller's tensors.
        e.release(out);
        e.release(latent);
        latent = next;
        const want = file.readF32(`latent.${i}`);
        // Each update is a float32 sum of 2-4 terms with float32 coefficients, in
        // another order than torch's; the first steps' x0 = (x − σ·ε)/α divides by
        // α ≈ 0.07, so the ulp-level differences reach ~1e-5 at most.
        expectClose(await e.read(latent), want, 0, 1e-4 * Math.max(1, absMax(want)));
      }
    };
    await run(3); // leaves outputs and a sample behind, which setTimesteps must forget
    await run(timesteps.length);
  });
});

describe('linearCombination', () => {
  const n = 1000; // not a multiple of the 256-wide workgroup
  it.each([1, 2, 3, 4, 6])('%i terms', async (count) => {
    const xs = Array.from({ length: count }, (_, i) => rand(n, 10 + i));
    const cs = Array.from({ length: count }, (_, i) => (i % 2 ? -0.5 : 1.25) * (i + 1));
    const got = await e.read(linearCombination(e, xs.map((x, i): [number, Tensor] => [cs[i], e.upload(x, [10, 100])])));
    const want = Array.from({ length: n }, (_, j) => xs.reduce((sum, x, i) => sum + cs[i] * x[j], 0));
    expectClose(got, want, 1e-6, 1e-6);
  });

  it('rejects mismatched shapes', () => {
    const a = e.upload(rand(12), [3, 4]);
    const b = e.upload(rand(12), [4, 3]);
    expect(() => linearCombination(e, [[1, a], [1, b]])).toThrow(/does not match/);
  });
});

describe('config', () => {
  const drError = (override: Record<string, unknown>, re: RegExp) => {
    let err: unknown;
    try {
      uniPCConfigFrom({ ...BASE, ...override }, 'sched.json');
    } catch (caught) {
      err = caught;
    }
    expect(err).toBeInstanceOf(DrError);
    expect((err as Error).message).toMatch(/^sched\.json: /);
    expect((err as Error).message).toMatch(re);
  };

  it('reads scheduler_config.json like the fixtures metadata', () => {
    const file = SafetensorsFile.open(path.join(IO, RUNS[0]));
    expect(readUniPCConfig(SCHEDULER_JSON)).toEqual(uniPCConfigFrom(JSON.parse(file.metadata.scheduler_config), 'metadata'));
  });

  const unsupported = [
    'use_karras_sigmas', 'use_exponential_sigmas', 'use_beta_sigmas', 'use_flow_sigmas', 'thresholding', 'use_dynamic_shifting',
  ];
  it.each(unsupported)('rejects %s', (key) => drError({ [key]: true }, new RegExp(`"${key}": true is not supported`)));

  it('rejects bad values and combinations', () => {
    drError({ solver_type: 'dpm' }, /"solver_type" must be bh1 or bh2, got "dpm"/);
    drError({ prediction_type: 'flow_prediction' }, /"prediction_type" must be one of epsilon, v_prediction, sample/);
    drError({ solver_order: 4 }, /"solver_order" must be 1, 2 or 3/);
    drError({ disable_corrector: [0, -1] }, /"disable_corrector" must be a list of step indices/);
    drError({ lower_order_final: false }, /"lower_order_final": false needs "final_sigmas_type": "sigma_min"/);
    drError({ predict_x0: false }, /"predict_x0": false needs "final_sigmas_type": "sigma_min"/);
    expect(() => readUniPCConfig('/nonexistent/scheduler_config.json')).toThrow(DrError);
  });
});

// With a perfect model (the true x0 and ε at every step) every UniPC update is
// exact: the latent after step i is α_{i+1}·x0 + σ_{i+1}·ε, whatever the order and
// B(h), because all the differences of model outputs vanish. This checks the
// prediction-type conversions and the expanded coefficients on other settings.
describe.each<[string, Record<string, unknown>]>([
  ['v_prediction, bh1, order 3, trailing', {
    prediction_type: 'v_prediction', solver_type: 'bh1', solver_order: 3, timestep_spacing: 'trailing',
  }],
  ['sample, predict ε, order 3, leading, σ_min', {
    prediction_type: 'sample', predict_x0: false, solver_order: 3, timestep_spacing: 'leading', final_sigmas_type: 'sigma_min',
  }],
  ['v_prediction, linear betas, zero SNR, corrector off at step 1', {
    prediction_type: 'v_prediction', beta_schedule: 'linear', rescale_betas_zero_snr: true, disable_corrector: [1],
  }],
  ['sample, squaredcos_cap_v2, order 1', { prediction_type: 'sample', beta_schedule: 'squaredcos_cap_v2', solver_order: 1 }],
  ['epsilon, bh2, order 3', { solver_order: 3 }],
])('exact model: %s', (_, override) => {
  it('follows α·x0 + σ·ε', async () => {
    const cfg = uniPCConfigFrom({ ...BASE, ...override }, 'test');
    const s = new UniPCScheduler(cfg);
    s.setTimesteps(8);
    const n = 256;
    const x0 = rand(n, 1);
    const eps = rand(n, 2);
    const at = (sigma: number) => {
      const alpha = 1 / Math.sqrt(1 + sigma * sigma);
      return { alpha, sigma: sigma * alpha };
    };
    const mix = (a: number, b: number) => Float32Array.from(x0, (v, j) => a * v + b * eps[j]);
    const first = at(s.sigmas[0]);
    let latent = e.upload(mix(first.alpha, first.sigma), [1, n]);
    for (let i = 0; i < s.timesteps.length; i++) {
      const { alpha, sigma } = at(s.sigmas[i]);
      const out =
        cfg.predictionType === 'v_prediction' ? mix(-sigma, alpha) : cfg.predictionType === 'sample' ? x0 : eps;
      latent = s.step(e, e.upload(out, [1, n]), s.timesteps[i], latent);
      const next = at(s.sigmas[i + 1]);
      // float32 rounding only; ε prediction's x0 = (x − σ·ε)/α cancels at large σ (~1e-6 here).
      expectClose(await e.read(latent), mix(next.alpha, next.sigma), 0, 1e-5);
    }
  });
});
