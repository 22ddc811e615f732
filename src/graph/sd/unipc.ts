/**
 * diffusers' UniPCMultistepScheduler (0.40): the B(h) predictor (UniP) and corrector
 * (UniC) of https://huggingface.co/papers/2302.04867 on the VP noise schedule.
 *
 * Every scalar is computed on the host; each latent update is one
 * `linearCombination` (one dispatch for up to four tensors), the UniPC formulas
 * expanded into one coefficient per tensor. diffusers computes its schedule and
 * coefficients in float32 torch tensors; `f` marks the float32 roundings that are
 * reproduced, so the sigmas match bit for bit and the coefficients to float32
 * precision (the small R·ρ = b solves run in double).
 */
import fs from 'node:fs';
import { DrError } from '../../errors.js';
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { linearCombination } from '../../engine/ops/linear_combination.js';

/**
 * A float32 rounding of diffusers' torch arithmetic. Beyond making the schedule bit
 * exact it matters for the coefficients: h_φ_k = h_φ_{k-1}/h − 1/k! cancels when h
 * is small, so with many steps float32 moves the corrector's ρ and with them the
 * latents (by ~2e-4 at 999 steps of order 2, ~3e-3 at 250 steps of order 3).
 */
const f = Math.fround;

export interface UniPCConfig {
  numTrainTimesteps: number;
  betaStart: number;
  betaEnd: number;
  betaSchedule: 'linear' | 'scaled_linear' | 'squaredcos_cap_v2';
  /** Explicit betas, overriding the schedule. */
  trainedBetas?: number[];
  solverOrder: number;
  solverType: 'bh1' | 'bh2';
  predictX0: boolean;
  lowerOrderFinal: boolean;
  predictionType: 'epsilon' | 'v_prediction' | 'sample';
  timestepSpacing: 'linspace' | 'leading' | 'trailing';
  stepsOffset: number;
  finalSigmasType: 'zero' | 'sigma_min';
  /** Step indices whose following step skips the corrector. */
  disableCorrector: number[];
  rescaleBetasZeroSnr: boolean;
}

/** Options that change the algorithm and are not implemented: an error when set. */
const UNSUPPORTED = [
  'use_karras_sigmas', 'use_exponential_sigmas', 'use_beta_sigmas', 'use_flow_sigmas', 'use_dynamic_shifting',
  'thresholding', 'solver_p', 'shift_terminal',
];

export function readUniPCConfig(file: string): UniPCConfig {
  let data: unknown;
  try {
    data = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new DrError(`${file}: cannot read the scheduler config (${(err as Error).message})`);
  }
  return uniPCConfigFrom(data, file);
}

/**
 * A scheduler config (diffusers' keys, e.g. a parsed scheduler_config.json);
 * `where` names its source in errors. Missing or null keys take diffusers' defaults.
 */
export function uniPCConfigFrom(data: unknown, where: string): UniPCConfig {
  if (!data || typeof data !== 'object' || Array.isArray(data)) {
    throw new DrError(`${where}: the scheduler config is not a JSON object`);
  }
  const d = data as Record<string, unknown>;
  for (const key of UNSUPPORTED) {
    if (d[key]) throw new DrError(`${where}: "${key}": ${JSON.stringify(d[key])} is not supported by the UniPC scheduler`);
  }
  const get = <T>(key: string, fallback: T, ok: (v: unknown) => boolean, what: string): T => {
    const v = d[key] ?? fallback;
    if (!ok(v)) throw new DrError(`${where}: "${key}" must be ${what}, got ${JSON.stringify(d[key])}`);
    return v as T;
  };
  const isInt = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 0;
  const int = (key: string, fallback: number) => get(key, fallback, isInt, 'a non-negative integer');
  const num = (key: string, fallback: number) => get(key, fallback, Number.isFinite, 'a number');
  const bool = (key: string, fallback: boolean) => get(key, fallback, (v) => typeof v === 'boolean', 'true or false');
  const oneOf = <T extends string>(key: string, options: readonly T[]) =>
    get(key, options[0], (v) => options.includes(v as T), `one of ${options.join(', ')}`);
  const numbers = (v: unknown) => v === undefined || (Array.isArray(v) && v.every(Number.isFinite));

  // diffusers maps the DPM-Solver solver types onto bh2.
  const solverTypes = ['bh1', 'bh2', 'midpoint', 'heun', 'logrho'];
  const solverType = get<string>('solver_type', 'bh2', (v) => solverTypes.includes(v as string), 'bh1 or bh2');
  const cfg: UniPCConfig = {
    numTrainTimesteps: int('num_train_timesteps', 1000),
    betaStart: num('beta_start', 0.0001),
    betaEnd: num('beta_end', 0.02),
    betaSchedule: oneOf('beta_schedule', ['linear', 'scaled_linear', 'squaredcos_cap_v2'] as const),
    trainedBetas: get<number[] | undefined>('trained_betas', undefined, numbers, 'a list of numbers'),
    solverOrder: get('solver_order', 2, (v) => v === 1 || v === 2 || v === 3, '1, 2 or 3'),
    solverType: solverType === 'bh1' ? 'bh1' : 'bh2',
    predictX0: bool('predict_x0', true),
    lowerOrderFinal: bool('lower_order_final', true),
    predictionType: oneOf('prediction_type', ['epsilon', 'v_prediction', 'sample'] as const),
    timestepSpacing: oneOf('timestep_spacing', ['linspace', 'leading', 'trailing'] as const),
    stepsOffset: int('steps_offset', 0),
    finalSigmasType: oneOf('final_sigmas_type', ['zero', 'sigma_min'] as const),
    disableCorrector: get('disable_corrector', [], (v) => Array.isArray(v) && v.every(isInt), 'a list of step indices'),
    rescaleBetasZeroSnr: bool('rescale_betas_zero_snr', false),
  };
  if (cfg.numTrainTimesteps < 2) throw new DrError(`${where}: "num_train_timesteps" must be at least 2`);
  if (cfg.trainedBetas && cfg.trainedBetas.length !== cfg.numTrainTimesteps) {
    throw new DrError(
      `${where}: "trained_betas" has ${cfg.trainedBetas.length} values, "num_train_timesteps" is ${cfg.numTrainTimesteps}`,
    );
  }
  // A final σ of 0 makes λ = ∞ on the last step; diffusers then returns inf/NaN
  // latents when that step has older outputs (r_k = 0) or predicts ε (0·∞).
  if (cfg.finalSigmasType === 'zero' && cfg.solverOrder > 1 && !cfg.lowerOrderFinal) {
    throw new DrError(
      `${where}: "lower_order_final": false needs "final_sigmas_type": "sigma_min" (the last step divides by zero)`,
    );
  }
  if (cfg.finalSigmasType === 'zero' && !cfg.predictX0) {
    throw new DrError(
      `${where}: "predict_x0": false needs "final_sigmas_type": "sigma_min" (the last step multiplies 0 by infinity)`,
    );
  }
  return cfg;
}

export class UniPCScheduler {
  readonly initNoiseSigma = 1;
  timesteps: number[] = [];
  /** σ per timestep plus the final one, float32 values as in diffusers. */
  sigmas = new Float64Array(0);
  /** float32 √((1 − ᾱ_t)/ᾱ_t) for every training timestep. */
  private readonly trainSigmas: Float64Array;
  /** Converted model outputs of the last solverOrder steps, oldest first (kept GPU tensors). */
  private history: (Tensor | undefined)[] = [];
  private lastSample?: Tensor;
  /** The engine that made the kept tensors, to release them on setTimesteps. */
  private engine?: Engine;
  private lowerOrderNums = 0;
  private thisOrder = 0;
  private stepIndex?: number;
  private beginIndex?: number;

  constructor(readonly cfg: UniPCConfig) {
    const betas = trainBetas(cfg);
    const alphasCumprod = cumprod(oneMinus(cfg.rescaleBetasZeroSnr ? rescaleZeroTerminalSnr(betas) : betas));
    // Close to 0 without being 0, so the first σ is finite (diffusers' choice).
    if (cfg.rescaleBetasZeroSnr) alphasCumprod[alphasCumprod.length - 1] = 2 ** -24;
    this.trainSigmas = Float64Array.from(alphasCumprod, (a) => f(Math.sqrt(f(f(1 - a) / a))));
  }

  /** Chooses the n inference timesteps and forgets any previous run's state. */
  setTimesteps(n: number): void {
    if (!Number.isInteger(n) || n < 1) throw new DrError(`the number of inference steps must be a positive integer, got ${n}`);
    const N = this.cfg.numTrainTimesteps;
    // More steps than distinct training timesteps repeat a timestep (a zero step size: NaN).
    const most = this.cfg.timestepSpacing === 'trailing' ? N : N - 1;
    if (n > most) throw new DrError(`--steps ${n}: this scheduler has ${N} training timesteps, so at most ${most} steps (${this.cfg.timestepSpacing} spacing)`);
    let ts: number[];
    if (this.cfg.timestepSpacing === 'linspace') {
      // np.linspace(0, N-1, n+1).round()[::-1][:-1]; linspace pins the last point to N-1.
      ts = Array.from({ length: n }, (_, k) => (k === 0 ? N - 1 : roundHalfEven((n - k) * ((N - 1) / n))));
    } else if (this.cfg.timestepSpacing === 'leading') {
      const ratio = Math.floor(N / (n + 1));
      ts = Array.from({ length: n }, (_, k) => (n - k) * ratio + this.cfg.stepsOffset);
    } else {
      // np.arange(N, 0, -N/n).round() - 1; numpy fills arange with start + i·((start + step) − start).
      const ratio = N / n;
      const delta = N - ratio - N;
      ts = Array.from({ length: Math.ceil(N / ratio) }, (_, i) => roundHalfEven(N + i * delta) - 1);
    }
    this.timesteps = ts;
    // np.interp at integer timesteps is exact (and clamps past the ends).
    const sigmas = ts.map((t) => this.trainSigmas[Math.min(Math.max(t, 0), N - 1)]);
    this.sigmas = Float64Array.from([...sigmas, this.cfg.finalSigmasType === 'zero' ? 0 : this.trainSigmas[0]]);
    for (const t of [...this.history, this.lastSample]) if (t) this.engine?.release(t);
    this.history = new Array<Tensor | undefined>(this.cfg.solverOrder).fill(undefined);
    this.lastSample = undefined;
    this.lowerOrderNums = 0;
    this.stepIndex = undefined;
    this.beginIndex = undefined;
  }

  /** Starts at timesteps[i] (img2img), instead of locating the first step's timestep. */
  setBeginIndex(i: number): void {
    this.beginIndex = i;
  }

  /**
   * One denoising step: the latent at the next timestep. `modelOutput` and
   * `sample` stay the caller's; the scheduler keeps its own tensors for later steps.
   */
  step(e: Engine, modelOutput: Tensor, timestep: number, sample: Tensor): Tensor {
    if (!this.timesteps.length) throw new Error('UniPCScheduler.step before setTimesteps');
    const i = (this.stepIndex ??= this.beginIndex ?? this.indexForTimestep(timestep));
    if (i >= this.timesteps.length) throw new Error(`UniPCScheduler.step: all ${this.timesteps.length} steps are done`);
    this.engine = e;
    const useCorrector = i > 0 && !this.cfg.disableCorrector.includes(i - 1) && this.lastSample !== undefined;
    const m = e.keep(this.convert(e, modelOutput, sample, this.sigmas[i]));
    // The next step's corrector reads this sample: without a correction, copy the caller's.
    const x = e.keep(useCorrector ? this.corrector(e, m, i) : linearCombination(e, [[1, sample]]));
    if (this.lastSample) e.release(this.lastSample);
    this.lastSample = x;
    const dropped = this.history.shift();
    if (dropped) e.release(dropped);
    this.history.push(m);

    const order = this.cfg.lowerOrderFinal ? Math.min(this.cfg.solverOrder, this.timesteps.length - i) : this.cfg.solverOrder;
    this.thisOrder = Math.min(order, this.lowerOrderNums + 1); // warm-up: fewer older outputs than the order
    const prev = this.predictor(e, x, i, this.thisOrder);
    this.lowerOrderNums = Math.min(this.lowerOrderNums + 1, this.cfg.solverOrder);
    this.stepIndex = i + 1;
    return prev;
  }

  /** α_t·x0 + σ_t·noise at `timestep` (img2img's starting latent). */
  addNoise(e: Engine, x0: Tensor, noise: Tensor, timestep: number): Tensor {
    const i = this.beginIndex === undefined ? this.indexForTimestep(timestep) : (this.stepIndex ?? this.beginIndex);
    const [alpha, sigma] = alphaSigma(this.sigmas[i]);
    return linearCombination(e, [[alpha, x0], [sigma, noise]]);
  }

  /** diffusers' index_for_timestep: the second match if the timestep repeats, the last step if absent. */
  private indexForTimestep(t: number): number {
    const hits = this.timesteps.flatMap((s, k) => (s === t ? [k] : []));
    return hits.length === 0 ? this.timesteps.length - 1 : hits[Math.min(1, hits.length - 1)];
  }

  /** The model output as the solver's variable: x0 (predict_x0) or ε. */
  private convert(e: Engine, out: Tensor, sample: Tensor, s: number): Tensor {
    const [alpha, sigma] = alphaSigma(s);
    const type = this.cfg.predictionType;
    if (this.cfg.predictX0) {
      if (type === 'epsilon') return linearCombination(e, [[f(1 / alpha), sample], [-f(sigma / alpha), out]]);
      if (type === 'v_prediction') return linearCombination(e, [[alpha, sample], [-sigma, out]]);
      return linearCombination(e, [[1, out]]);
    }
    if (type === 'epsilon') return linearCombination(e, [[1, out]]);
    if (type === 'v_prediction') return linearCombination(e, [[alpha, out], [sigma, sample]]);
    return linearCombination(e, [[f(1 / sigma), sample], [-f(alpha / sigma), out]]);
  }

  /** UniP of `order` from sigmas[i] to sigmas[i+1]; history[-1] is step i's output. */
  private predictor(e: Engine, x: Tensor, i: number, order: number): Tensor {
    const older = range(1, order);
    const c = bh(this.cfg, this.sigmas[i + 1], this.sigmas[i], older.map((k) => this.sigmas[i - k]));
    // diffusers uses ρ = 0.5 at order 2 and solves the leading block of R above it.
    const rhos = order === 1 ? [] : order === 2 ? [0.5] : solve(c.R.slice(0, -1).map((r) => r.slice(0, -1)), c.b.slice(0, -1));
    return combine(e, c, x, this.history.at(-1)!, older.map((k): [number, Tensor] => [rhos[k - 1], this.history.at(-1 - k)!]));
  }

  /** UniC: corrects the predictor's sample for step i with step i's converted output mT. */
  private corrector(e: Engine, mT: Tensor, i: number): Tensor {
    const order = this.thisOrder;
    const older = range(1, order);
    const c = bh(this.cfg, this.sigmas[i], this.sigmas[i - 1], older.map((k) => this.sigmas[i - k - 1]));
    const rhos = order === 1 ? [0.5] : solve(c.R, c.b);
    const terms = older.map((k): [number, Tensor] => [rhos[k - 1], this.history.at(-1 - k)!]);
    return combine(e, c, this.lastSample!, this.history.at(-1)!, terms, [rhos.at(-1)!, mT]);
  }
}

/** Scalars of one B(h) update from σ_s0 to σ_t; `prev` are the σ of the older outputs. */
interface BhCoefficients {
  /** x_t = xScale·x − mScale·(hφ1·m0 + B(h)·(...)). */
  xScale: number;
  mScale: number;
  hPhi1: number;
  B: number;
  /** r_k = (λ_k − λ_s0)/h for each older output, then 1. */
  rks: number[];
  R: number[][];
  b: number[];
}

function bh(cfg: UniPCConfig, sigmaT: number, sigmaS0: number, prev: number[]): BhCoefficients {
  const [alphaT, sT] = alphaSigma(sigmaT);
  const [alphaS0, sS0] = alphaSigma(sigmaS0);
  const lambdaS0 = lambda(sigmaS0);
  const h = f(lambda(sigmaT) - lambdaS0);
  const rks = [...prev.map((s) => f(f(lambda(s) - lambdaS0) / h)), 1];
  const hh = cfg.predictX0 ? -h : h;
  const hPhi1 = f(Math.expm1(hh));
  const B = cfg.solverType === 'bh1' ? hh : hPhi1;
  const R: number[][] = [];
  const b: number[] = [];
  let hPhiK = f(f(hPhi1 / hh) - 1);
  let factorial = 1;
  for (let k = 1; k <= rks.length; k++) {
    R.push(rks.map((r) => f(r ** (k - 1))));
    b.push(f(f(hPhiK * factorial) / B));
    factorial *= k + 1;
    hPhiK = f(f(hPhiK / hh) - f(1 / factorial));
  }
  return cfg.predictX0
    ? { xScale: f(sT / sS0), mScale: alphaT, hPhi1, B, rks, R, b }
    : { xScale: f(alphaT / alphaS0), mScale: sT, hPhi1, B, rks, R, b };
}

/**
 * x_t = xScale·x − mScale·hφ1·m0 − mScale·B(h)·(Σ_k ρ_k·(m_k − m0)/r_k + ρ_t·(mT − m0)),
 * expanded into one coefficient per tensor: [x, m0, m_1.., mT].
 */
function combine(
  e: Engine, c: BhCoefficients, x: Tensor, m0: Tensor, older: [number, Tensor][], corr?: [number, Tensor],
): Tensor {
  const gain = c.mScale * c.B;
  const terms: [number, Tensor][] = older.map(([rho, m], k) => [-(gain * rho) / c.rks[k], m]);
  if (corr) terms.push([-gain * corr[0], corr[1]]);
  const m0Coef = -c.mScale * c.hPhi1 - terms.reduce((sum, [w]) => sum + w, 0);
  return linearCombination(e, [[c.xScale, x], [m0Coef, m0], ...terms]);
}

/** α_t = 1/√(1+σ²), σ_t = σ·α_t in float32, as diffusers' _sigma_to_alpha_sigma_t. */
function alphaSigma(sigma: number): [number, number] {
  const alpha = f(1 / f(Math.sqrt(f(f(sigma * sigma) + 1))));
  return [alpha, f(sigma * alpha)];
}

/** λ = log α_t − log σ_t (∞ at σ = 0). */
function lambda(sigma: number): number {
  const [alpha, s] = alphaSigma(sigma);
  return f(f(Math.log(alpha)) - f(Math.log(s)));
}

/** Betas as diffusers' float32 torch tensors. */
function trainBetas(cfg: UniPCConfig): Float32Array {
  const N = cfg.numTrainTimesteps;
  if (cfg.trainedBetas) return Float32Array.from(cfg.trainedBetas);
  if (cfg.betaSchedule === 'linear') return torchLinspace(cfg.betaStart, cfg.betaEnd, N);
  if (cfg.betaSchedule === 'scaled_linear') {
    return torchLinspace(Math.sqrt(cfg.betaStart), Math.sqrt(cfg.betaEnd), N).map((b) => b * b);
  }
  // squaredcos_cap_v2: betas_for_alpha_bar, in double, then stored as float32.
  const alphaBar = (t: number) => Math.cos((((t + 0.008) / 1.008) * Math.PI) / 2) ** 2;
  return Float32Array.from({ length: N }, (_, i) => Math.min(1 - alphaBar((i + 1) / N) / alphaBar(i / N), 0.999));
}

/**
 * torch.linspace in float32 on the CPU: the first half counts up from start, the
 * second down from end, with a float32 step (reproduces the betas bit for bit).
 */
function torchLinspace(start: number, end: number, steps: number): Float32Array {
  const [s, e] = [f(start), f(end)];
  const step = f(f(e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  return Float32Array.from({ length: steps }, (_, i) => (i < half ? s + f(step * i) : e - f(step * (steps - i - 1))));
}

const oneMinus = (x: Float32Array): Float32Array => x.map((v) => 1 - v);

/** torch.cumprod of float32 on the CPU accumulates in double and stores float32. */
function cumprod(x: Float32Array): Float32Array {
  let acc = 1;
  return x.map((v) => (acc *= v));
}

/** diffusers' rescale_zero_terminal_snr, in float32. */
function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
  const sqrtBar = cumprod(oneMinus(betas)).map(Math.sqrt);
  const [first, last] = [sqrtBar[0], sqrtBar[sqrtBar.length - 1]];
  const scale = f(first / f(first - last));
  const bar = sqrtBar.map((v) => f(f(v - last) * scale) ** 2);
  return oneMinus(bar.map((v, i) => (i === 0 ? v : v / bar[i - 1])));
}

/** NumPy's round: halves go to the even neighbour. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

const range = (from: number, to: number): number[] => Array.from({ length: Math.max(0, to - from) }, (_, k) => from + k);

/** Gaussian elimination with partial pivoting, in double (n ≤ 3). */
function solve(A: number[][], b: number[]): number[] {
  const n = b.length;
  const M = A.map((row, i) => [...row, b[i]]);
  for (let c = 0; c < n; c++) {
    const p = M.slice(c).reduce((best, row, k) => (Math.abs(row[c]) > Math.abs(M[best][c]) ? c + k : best), c);
    [M[c], M[p]] = [M[p], M[c]];
    for (let r = c + 1; r < n; r++) {
      const l = M[r][c] / M[c][c];
      for (let k = c; k <= n; k++) M[r][k] -= l * M[c][k];
    }
  }
  const x = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; r--) x[r] = (M[r][n] - M[r].slice(r + 1, n).reduce((s, v, k) => s + v * x[r + 1 + k], 0)) / M[r][r];
  return x;
}
