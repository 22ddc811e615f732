import type { Engine } from '../engine.js';
import type { Tensor } from '../tensor.js';
import { assertShape, elementwiseGrid } from './common.js';

/** Σ (a − b)² over all elements: f32 partial sums per 256 elements on the GPU, their total in f64 here. */
export async function sumSquaredDiff(e: Engine, a: Tensor, b: Tensor): Promise<number> {
  assertShape('sumSquaredDiff', a.size === b.size, `${a} and ${b} differ in size`);
  const { workgroups, groupsX } = elementwiseGrid(a.size);
  const groups = Math.ceil(a.size / 256);
  const partial = e.empty([groups]);
  e.run({ kernel: 'sq_diff_partial', bindings: { A: a, B: b, Out: partial }, defines: { WG: 256 }, params: [a.size, groupsX], workgroups });
  const host = await e.read(partial);
  e.release(partial);
  let s = 0;
  for (const v of host) s += v;
  return s;
}
