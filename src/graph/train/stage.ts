// What `dr train` steps: a training stage is its trainable parameters, named as in the
// fixtures (`<part>.<key>`), and one forward pass on the tape that returns its loss terms.
import { DrError } from '../../errors.js';
import { grad } from '../../engine/autograd.js';
import type { Engine } from '../../engine/engine.js';
import { AdamW, type AdamWOptions } from '../../engine/ops/adamw.js';
import type { Tensor } from '../../engine/tensor.js';
import type { BatchReader } from './data.js';
import type { Param } from '../module.js';

export interface Stage {
  /** Trainable parameters by `<part>.<key>` (f32 master weights, updated in place by AdamW). */
  readonly params: readonly (readonly [string, Param])[];
  /** One forward pass (run under `grad`): `loss`, the one-element total, and each `loss_<term>`. */
  losses(e: Engine): Record<string, Tensor>;
  /** Runs after each AdamW step: trains what the stage trains alternately (stage 2's critic); returns its loss terms (the caller releases them). */
  afterStep?(e: Engine): Record<string, Tensor> | void;
  /** Replaces the batch (the tensors of a `--batch-file`): the frozen parts' work on it is done here, once. */
  setBatch(e: Engine, batch: BatchReader): void;
  /** Releases the batch tensors the stage holds. */
  dispose(e: Engine): void;
}

/** A module's trainable params under the fixture's `<part>.` prefix (and the key prefix inside the part's file). */
export function named(part: string, params: [string, Param][]): [string, Param][] {
  return params.map(([key, p]) => [`${part}.${key}`, p]);
}

/**
 * A batch file's tensor, its shape checked against `want` (undefined = any size there);
 * `what` says what the tensor is, for the error.
 */
export function batchTensor(file: BatchReader, name: string, want: readonly (number | undefined)[], what: string): { shape: number[]; data: Float32Array } {
  const { shape } = file.info(name);
  if (shape.length !== want.length || want.some((d, i) => d !== undefined && d !== shape[i])) {
    const spec = want.map((d) => d ?? '*').join(', ');
    throw new DrError(`${file.path}: tensor "${name}" has shape [${shape}], expected [${spec}] (${what})`);
  }
  return { shape: [...shape], data: file.readF32(name) };
}

/** Integer class indices or timesteps in [0, limit), one per sample. */
export function batchIndices(file: BatchReader, name: string, batch: number, limit: number, what: string): Int32Array {
  const { shape } = file.info(name);
  if (shape.length !== 1 || shape[0] !== batch) throw new DrError(`${file.path}: tensor "${name}" has shape [${shape}], expected [${batch}] (${what}, one per sample)`);
  const v = file.readInt32(name);
  const bad = v.findIndex((x) => x < 0 || x >= limit);
  if (bad >= 0) throw new DrError(`${file.path}: tensor "${name}"[${bad}] is ${v[bad]}, expected 0..${limit - 1} (${what})`);
  return v;
}

/** Receives a named f32 tensor for the check dump. */
export type DumpSink = (name: string, shape: readonly number[], data: Float32Array) => void;

/**
 * `steps` AdamW steps on the stage's one batch. With `dump`, the check tensors of `dr train`
 * (the fixtures' names): the loss terms and `grad.<P>` of the first step, `step<n>.<P>` after
 * step n, and `step<n>.loss`, the loss at the step-n parameters (computed for step n + 1).
 * A parameter the loss does not reach has no gradient and is not stepped (torch skips it, weight
 * decay included); its dumped gradient is zeros. Returns the total loss of each step.
 */
export async function trainSteps(
  e: Engine, stage: Stage, opts: AdamWOptions & { steps: number; onStep?: (n: number, loss: number) => void }, dump?: DumpSink,
): Promise<number[]> {
  const tensors = stage.params.map(([, p]) => p.t);
  const opt = new AdamW(e, opts);
  const history: number[] = [];
  for (let n = 1; n <= opts.steps; n++) {
    const terms: Record<string, Tensor> = {};
    const { loss, grads } = grad(e, () => {
      const all = stage.losses(e);
      for (const [name, t] of Object.entries(all)) if (name !== 'loss') terms[name] = e.keep(t);
      return all.loss;
    }, tensors);
    try {
      const total = (await e.read(loss))[0];
      history.push(total);
      opts.onStep?.(n, total);
      if (dump && n === 1) {
        dump('loss', [], Float32Array.of(total));
        for (const [name, t] of Object.entries(terms)) dump(name, [], await e.read(t));
        for (const [k, [name, p]] of stage.params.entries()) {
          const g = grads[k];
          dump(`grad.${name}`, p.shape, g ? await e.read(g) : new Float32Array(p.t.size));
        }
      }
      if (dump && n > 1) dump(`step${n - 1}.loss`, [], Float32Array.of(total));
      opt.step(tensors.flatMap((param, k) => (grads[k] ? [{ param, grad: grads[k]! }] : [])));
      for (const t of Object.values(stage.afterStep?.(e) ?? {})) e.release(t);
    } finally {
      for (const t of [loss, ...grads, ...Object.values(terms)]) if (t) e.release(t);
    }
    if (dump) for (const [name, p] of stage.params) dump(`step${n}.${name}`, p.shape, await e.read(p.t));
  }
  return history;
}
