import type { Engine } from '../engine.js';
import type { Tensor } from '../tensor.js';
import { assertShape, elementwiseGrid } from './common.js';

/** Inputs one dispatch of linear_combination.wgsl reads. */
const MAX_TERMS = 4;

/**
 * Σ c_i · x_i over tensors of one shape, in the first tensor's dtype. More than
 * four terms chain dispatches, each folding its partial sum into the next.
 */
export function linearCombination(e: Engine, terms: readonly (readonly [number, Tensor])[]): Tensor {
  assertShape('linearCombination', terms.length > 0, 'needs at least one term');
  e.assertNoGrad('linearCombination', ...terms.map(([, x]) => x));
  const [, first] = terms[0];
  for (const [c, x] of terms) {
    const same = x.shape.length === first.shape.length && x.shape.every((d, i) => d === first.shape[i]);
    assertShape('linearCombination', same, `${x} does not match ${first}`);
    assertShape('linearCombination', Number.isFinite(c), `coefficient ${c} of ${x} is not finite`);
  }
  return e.tidy(() => {
    let out = combine(e, terms.slice(0, MAX_TERMS));
    for (let i = MAX_TERMS; i < terms.length; i += MAX_TERMS - 1) {
      out = combine(e, [[1, out], ...terms.slice(i, i + MAX_TERMS - 1)]);
    }
    return out;
  });
}

function combine(e: Engine, terms: readonly (readonly [number, Tensor])[]): Tensor {
  const x0 = terms[0][1];
  const out = e.empty(x0.shape, x0.dtype);
  const slot = (i: number): Tensor => terms[i]?.[1] ?? x0;
  const coef = (i: number): number => terms[i]?.[0] ?? 0;
  const { workgroups, groupsX } = elementwiseGrid(out.size);
  e.run({
    kernel: 'linear_combination',
    bindings: { x0: slot(0), x1: slot(1), x2: slot(2), x3: slot(3), out },
    params: { n: out.size, groupsX, c0: coef(0), c1: coef(1), c2: coef(2), c3: coef(3), terms: terms.length },
    workgroups,
  });
  return out;
}
