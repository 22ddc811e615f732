import type { Engine } from '../../engine.js';
import type { Tensor } from '../../tensor.js';
import { assertShape, rowWorkgroup } from '../common.js';

/**
 * DISTS' structure and texture terms per channel of two feature maps [1, C, H, W]:
 * [C, 2] of (S1, S2) — mean similarity and covariance similarity with constants c1, c2.
 */
export function distsStats(e: Engine, x: Tensor, y: Tensor, c1 = 1e-6, c2 = 1e-6): Tensor {
  assertShape('distsStats', x.shape.length === 4 && x.shape[0] === 1 && x.shape.join() === y.shape.join(), `features ${x} and ${y}`);
  const [, C, H, W] = x.shape;
  const out = e.empty([C, 2]);
  e.run({
    kernel: 'dists_stats',
    bindings: { x, y, out },
    defines: { WG: rowWorkgroup(H * W, e.kernels.path) },
    params: { C, P: H * W, c1, c2 },
    workgroups: [C],
  });
  return out;
}
