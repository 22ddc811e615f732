import type { Engine } from '../engine.js';
import type { Tensor } from '../tensor.js';
import { assertShape, elementwiseGrid } from './common.js';
import { cast } from './copy.js';

export interface AdamWOptions {
  lr: number;
  betas?: readonly [number, number];
  eps?: number;
  weightDecay?: number;
  /** Clip the gradients to this global 2-norm first (torch.nn.utils.clip_grad_norm_). */
  maxGradNorm?: number;
}

/**
 * One parameter to update: its f32 master weight (updated in place) and its gradient;
 * without one (the loss does not reach it: `grad` gives undefined) it is skipped as torch skips
 * a None grad: no decay, and its own step count stays.
 */
export interface ParamGrad {
  param: Tensor;
  grad?: Tensor;
}

/** A parameter's optimiser state: torch's exp_avg, exp_avg_sq and per-parameter step. */
export interface AdamWState {
  m: Tensor;
  v: Tensor;
  step: number;
}

/**
 * torch.optim.AdamW (amsgrad off) with torch's defaults: one fused dispatch per parameter
 * tensor. Moments are f32 buffers of their own (unpooled, like weights), created at a
 * parameter's first step; the parameter itself is the f32 master weight.
 */
export class AdamW {
  private readonly moments = new Map<Tensor, AdamWState>();
  /** Bound in place of the clip factor when not clipping (never read then). */
  private noClip?: Tensor;

  constructor(private readonly e: Engine, readonly opts: AdamWOptions) {}

  /**
   * One step over all parameters. `gradScale` multiplies every gradient first (1/k after
   * accumulating k micro-batches with addInto). Returns the clip factor and global norm
   * ([2] f32, of the scaled gradients) when clipping, for logging.
   */
  step(params: readonly ParamGrad[], gradScale = 1): Tensor | undefined {
    const { e, opts } = this;
    const [beta1, beta2] = opts.betas ?? [0.9, 0.999];
    const grads = params.flatMap((p) => (p.grad ? [p.grad] : []));
    const clip = opts.maxGradNorm === undefined || !grads.length ? undefined : clipCoefficient(e, grads, opts.maxGradNorm, gradScale);
    for (const { param, grad } of params) {
      if (!grad) continue;
      assertShape('AdamW', param.dtype === 'f32', `parameter ${param} must be f32 (the master weight)`);
      assertShape('AdamW', grad.size === param.size, `gradient ${grad} for parameter ${param}`);
      let state = this.moments.get(param);
      if (!state) {
        const zeros = new Uint8Array(param.byteLength);
        state = { m: e.createWeight(zeros, param.shape, 'f32'), v: e.createWeight(zeros, param.shape, 'f32'), step: 0 };
        this.moments.set(param, state);
      }
      const t = ++state.step;
      const { workgroups, groupsX } = elementwiseGrid(param.size);
      e.run({
        kernel: 'adamw',
        bindings: { param, m: state.m, v: state.v, grad, clip: clip ?? (this.noClip ??= e.createWeight(new Uint8Array(8), [2], 'f32')) },
        defines: { CLIP: !!clip },
        params: {
          n: param.size, groupsX, beta1, beta2, eps: opts.eps ?? 1e-8,
          decay: 1 - opts.lr * (opts.weightDecay ?? 1e-2),
          stepSize: opts.lr / (1 - beta1 ** t),
          bc2Sqrt: Math.sqrt(1 - beta2 ** t),
          gradScale,
        },
        workgroups,
      });
    }
    return clip;
  }

  /** A parameter's state (tests, checkpoints of the optimiser). */
  state(param: Tensor): AdamWState | undefined {
    return this.moments.get(param);
  }

  /** Sets a parameter's state (a resumed run's saved moments, f32, and step count). */
  setState(param: Tensor, s: { m: Float32Array; v: Float32Array; step: number }): void {
    assertShape('AdamW', s.m.length === param.size && s.v.length === param.size, `saved moments of ${s.m.length} for parameter ${param}`);
    const old = this.moments.get(param);
    if (old) for (const t of [old.m, old.v]) this.e.release(t);
    const bytes = (a: Float32Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    this.moments.set(param, { m: this.e.createWeight(bytes(s.m), param.shape, 'f32'), v: this.e.createWeight(bytes(s.v), param.shape, 'f32'), step: s.step });
  }

  /** Bytes of optimiser state (the moments), for memory reports. */
  get stateBytes(): number {
    let n = 0;
    for (const { m, v } of this.moments.values()) n += m.byteLength + v.byteLength;
    return n;
  }
}

const NORM_GROUPS = 64;
const NORM_WG = 256;

/**
 * [min(1, maxNorm / (‖g‖ + 1e-6)), ‖g‖] over all gradients together, ‖g‖ of the gradients
 * times gradScale (torch's clip_grad_norm_ factor), on the GPU: no read back before the step.
 */
export function clipCoefficient(e: Engine, grads: readonly Tensor[], maxNorm: number, gradScale = 1): Tensor {
  return e.tidy(() => {
    const groups = grads.map((g) => Math.max(1, Math.min(NORM_GROUPS, Math.ceil(g.size / NORM_WG))));
    const partial = e.empty([groups.reduce((s, n) => s + n, 0)]);
    let at = 0;
    grads.forEach((x, i) => {
      e.run({ kernel: 'sum_squares', bindings: { x, partial }, defines: { WG: NORM_WG }, params: { n: x.size, groups: groups[i], at }, workgroups: [groups[i]] });
      at += groups[i];
    });
    const out = e.empty([2]);
    e.run({ kernel: 'clip_coef', bindings: { partial, out }, defines: { WG: NORM_WG }, params: { count: at, maxNorm, gradScale }, workgroups: [1] });
    return out;
  });
}

/**
 * Gradient accumulation over micro-batches: adds each of `grads` (one entry per parameter, as
 * `grad` returns them) into `acc` in place, or takes it as the running sum (in f32) where `acc`
 * has none yet, and releases what it added. Then `AdamW.step(…, 1 / batches)` steps on the mean.
 */
export function accumulateGrads(e: Engine, acc: (Tensor | undefined)[], grads: readonly (Tensor | undefined)[]): void {
  grads.forEach((g, i) => {
    if (!g) return;
    const sum = acc[i];
    if (!sum) {
      acc[i] = g.dtype === 'f32' ? g : e.keep(cast(e, g, 'f32'));
      if (acc[i] !== g) e.release(g);
      return;
    }
    addInto(e, sum, g);
    e.release(g);
  });
}

/** acc += x · scale in place (acc f32): gradient accumulation over micro-batches and tape branches. */
export function addInto(e: Engine, acc: Tensor, x: Tensor, scale = 1): void {
  assertShape('addInto', acc.dtype === 'f32' && acc.size === x.size, `accumulate ${x} into ${acc}`);
  const { workgroups, groupsX } = elementwiseGrid(x.size);
  e.run({ kernel: 'add_into', bindings: { acc, x }, params: { n: x.size, scale, groupsX }, workgroups });
}
