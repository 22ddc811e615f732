import type { Engine } from '../engine.js';
import { f32 } from '../engine.js';
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
  const coef = (i: number) => f32(terms[i]?.[0] ?? 0);
  const { workgroups, groupsX } = elementwiseGrid(out.size);
  e.run({
    kernel: 'linear_combination',
    bindings: { X0: slot(0), X1: slot(1), X2: slot(2), X3: slot(3), Out: out },
    defines: { N: terms.length },
    params: [out.size, groupsX, coef(0), coef(1), coef(2), coef(3)],
    workgroups,
  });
  return out;
}
