import type { Engine } from '../engine.js';
import type { Tensor } from '../tensor.js';
import { grid } from '../engine.js';
import { assertShape, elementwiseGrid } from './common.js';
import { expand } from './copy.js';
import { scale, softplus, sumTo } from './elementwise.js';
import { squaredDiffPartials } from './sq_diff.js';

// Scalar training losses (shape [], f32) and their gradients. The dloss arguments are the
// upstream gradient as a one-element tensor, so a loss can sit anywhere in a weighted sum.

/**
 * mean((a − b)²) over all elements: tree sums of 256 squares, those summed by one workgroup
 * (a VGG feature map at 512² has 3·10⁷ elements: one long f32 sum per thread would lose digits).
 */
export function mse(e: Engine, a: Tensor, b: Tensor): Tensor {
  assertShape('mse', a.shape.join() === b.shape.join(), `${a} vs ${b}`);
  const loss = e.tidy(() => scale(e, sumTo(e, squaredDiffPartials(e, a, b), []), 1 / a.size));
  e.record('mse', [a, b], loss, [a, b], (dloss, [na, nb]) => {
    const g = mseBackward(e, a, b, dloss, { a: na, b: nb });
    return [g.da, g.db];
  });
  return loss;
}

/** Backward of `mse`: da = dloss · 2(a − b)/n and db = −da, each only if asked for in `needs`. */
export function mseBackward(
  e: Engine, a: Tensor, b: Tensor, dloss: Tensor, needs: { a?: boolean; b?: boolean } = { a: true, b: true },
): { da?: Tensor; db?: Tensor } {
  assertShape('mseBackward', a.shape.join() === b.shape.join() && dloss.size === 1, `${a} vs ${b}, dloss ${dloss}`);
  const grad = (like: Tensor, k: number): Tensor => {
    const d = e.empty(a.shape, like.dtype);
    const { workgroups, groupsX } = elementwiseGrid(a.size);
    e.run({ kernel: 'mse_back', bindings: { a, b, dloss, d }, params: { n: a.size, scale: k, groupsX }, workgroups });
    return d;
  };
  return { da: needs.a ? grad(a, 2 / a.size) : undefined, db: needs.b ? grad(b, -2 / a.size) : undefined };
}

/**
 * Softmax cross-entropy of logits [B, C] against class indices labels [B] (i32), averaged over
 * the batch (PyTorch's F.cross_entropy, reduction 'mean'). A label outside [0, C) gives NaN.
 */
export function crossEntropy(e: Engine, logits: Tensor, labels: Tensor): Tensor {
  assertShape('crossEntropy', logits.shape.length === 2 && labels.size === logits.shape[0], `logits ${logits}, labels ${labels}`);
  const [B, C] = logits.shape;
  const out = e.empty([], 'f32');
  e.run({ kernel: 'cross_entropy', bindings: { logits, labels, out }, defines: { WG: 64 }, params: { B, C }, workgroups: [1] });
  e.record('crossEntropy', [logits], out, [logits, labels], (dloss) => [crossEntropyBackward(e, logits, labels, dloss)]);
  return out;
}

/** Backward of `crossEntropy`: dlogits = dloss · (softmax(logits) − onehot(labels)) / B. */
export function crossEntropyBackward(e: Engine, logits: Tensor, labels: Tensor, dloss: Tensor): Tensor {
  assertShape('crossEntropyBackward', logits.shape.length === 2 && labels.size === logits.shape[0] && dloss.size === 1, `logits ${logits}, labels ${labels}, dloss ${dloss}`);
  const [B, C] = logits.shape;
  const dlogits = e.empty(logits.shape, logits.dtype);
  const workgroups = grid(Math.ceil(B / 64));
  e.run({ kernel: 'cross_entropy_back', bindings: { logits, labels, dloss, dlogits }, params: { B, C, groupsX: workgroups[0] }, workgroups });
  return dlogits;
}

/** mean(x) over all elements, a scalar f32; its backward spreads dloss / n over x's shape. */
export function meanAll(e: Engine, x: Tensor): Tensor {
  const loss = e.tidy(() => scale(e, sumTo(e, x, []), 1 / x.size));
  e.record('meanAll', [x], loss, [], (dloss) => [expand(e, scale(e, dloss, 1 / x.size).reshape(x.shape.map(() => 1)), [...x.shape])]);
  return loss;
}

/**
 * Binary cross-entropy of logits against an all-`target` label, averaged (PyTorch's
 * BCEWithLogitsLoss with a constant target, the GAN loss of pix2pix's 'vanilla' mode):
 * mean(softplus(−x)) for target 1, mean(softplus(x)) for target 0.
 */
export function bceWithLogits(e: Engine, logits: Tensor, target: 0 | 1): Tensor {
  return e.tidy(() => meanAll(e, softplus(e, target === 1 ? scale(e, logits, -1) : logits)));
}
