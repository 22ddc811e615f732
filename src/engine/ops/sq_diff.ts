import type { Engine } from '../engine.js';
import type { Tensor } from '../tensor.js';
import { assertShape, elementwiseGrid } from './common.js';

/** Σ (a − b)² of each run of 256 elements, f32 [ceil(n / 256)]. */
export function squaredDiffPartials(e: Engine, a: Tensor, b: Tensor): Tensor {
  assertShape('squaredDiffPartials', a.size === b.size, `${a} and ${b} differ in size`);
  const { workgroups, groupsX } = elementwiseGrid(a.size);
  const partial = e.empty([Math.ceil(a.size / 256)]);
  e.run({ kernel: 'sq_diff_partial', bindings: { a, b, out: partial }, defines: { WG: 256 }, params: { n: a.size, groupsX }, workgroups });
  return partial;
}

/** Σ (a − b)² over all elements: f32 partial sums per 256 elements on the GPU, their total in f64 here. */
export async function sumSquaredDiff(e: Engine, a: Tensor, b: Tensor): Promise<number> {
  const partial = squaredDiffPartials(e, a, b);
  const host = await e.read(partial);
  e.release(partial);
  let s = 0;
  for (const v of host) s += v;
  return s;
}
