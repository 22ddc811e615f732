import type { Engine } from '../../engine.js';
import type { Tensor } from '../../tensor.js';
import { assertShape, elementwiseGrid } from '../common.js';
import { add, mean, mul, rsqrt, scale, sqrt, sub } from '../elementwise.js';
import { crop } from './tiles.js';

/** PyTorch F.pad(x, (left, right, top, bottom), mode='reflect') of [B, C, H, W]. */
export function reflectPad(e: Engine, x: Tensor, top: number, bottom: number, left: number, right: number): Tensor {
  assertShape('reflectPad', x.shape.length === 4, `need [B, C, H, W], got ${x}`);
  const [B, C, H, W] = x.shape;
  assertShape(
    'reflectPad',
    Math.min(top, bottom, left, right) >= 0 && Math.max(top, bottom) < H && Math.max(left, right) < W,
    `padding (${top}, ${bottom}, ${left}, ${right}) must be ≥ 0 and less than the size of ${x}`,
  );
  const [OH, OW] = [H + top + bottom, W + left + right];
  const y = e.empty([B, C, OH, OW], x.dtype);
  const { workgroups, groupsX } = elementwiseGrid(y.size);
  e.run({ kernel: 'reflect_pad', bindings: { x, y }, params: { H, W, OH, OW, top, left, n: y.size, groupsX }, workgroups });
  return y;
}

/** The top-left H×W of [B, C, ≥H, ≥W]: undoes padding at the bottom and right. */
export const cropTo = (e: Engine, x: Tensor, H: number, W: number): Tensor => crop(e, x, { y0: 0, x0: 0, h: H, w: W });

/** One level of StableSR's wavelet decomposition: 3×3 binomial blur at dilation `radius`, edges replicated. */
export function waveletBlur(e: Engine, x: Tensor, radius: number): Tensor {
  assertShape('waveletBlur', x.shape.length === 4, `need [B, C, H, W], got ${x}`);
  const [H, W] = x.shape.slice(2);
  const y = e.empty(x.shape, x.dtype);
  const { workgroups, groupsX } = elementwiseGrid(y.size);
  e.run({ kernel: 'wavelet_blur', bindings: { x, y }, params: { H, W, r: radius, n: y.size, groupsX }, workgroups });
  return y;
}

/**
 * StableSR's wavelet colour fix: the high frequencies of `restored` with the low
 * frequencies of `reference` (same shape), over `levels` blurs at dilation 1, 2, 4, ...
 * The high band Σ(imageᵢ − blurᵢ) telescopes to image − low, and the blurs are linear, so
 * high(restored) + low(reference) = restored − low(restored − reference): one chain of blurs.
 */
export function waveletColorFix(e: Engine, restored: Tensor, reference: Tensor, levels = 5): Tensor {
  assertShape('waveletColorFix', restored.shape.join() === reference.shape.join(), `${restored} vs reference ${reference}`);
  return e.tidy(() => {
    let low = sub(e, restored, reference);
    for (let i = 0; i < levels; i++) low = waveletBlur(e, low, 2 ** i);
    return sub(e, restored, low);
  });
}

const ADAIN_EPS = 1e-5;

/**
 * Per channel of [B, C, H, W]: x − μ, μ and σ² ([B, C, 1]), with σ² = unbiased variance + eps
 * as StableSR's calc_mean_std.
 */
function centredAndVariance(e: Engine, x: Tensor): { centred: Tensor; variance: Tensor; mu: Tensor } {
  const [B, C, H, W] = x.shape;
  const N = H * W;
  assertShape('adainColorFix', N > 1, `${x}: the unbiased variance needs at least 2 pixels`);
  const flat = x.reshape([B, C, N]);
  const mu = mean(e, flat, 2).reshape([B, C, 1]);
  const centred = sub(e, flat, mu);
  const variance = scale(e, mean(e, mul(e, centred, centred), 2), N / (N - 1), ADAIN_EPS).reshape([B, C, 1]);
  return { centred, variance, mu };
}

/**
 * StableSR's AdaIN colour fix: each channel of `restored` takes the mean and standard
 * deviation of the same channel of `reference` (any size): (x − μx)/σx · σr + μr.
 */
export function adainColorFix(e: Engine, restored: Tensor, reference: Tensor): Tensor {
  assertShape('adainColorFix', restored.shape.length === 4 && reference.shape.length === 4
    && restored.shape[0] === reference.shape[0] && restored.shape[1] === reference.shape[1], `${restored} vs reference ${reference}`);
  return e.tidy(() => {
    const x = centredAndVariance(e, restored);
    const r = centredAndVariance(e, reference);
    return add(e, mul(e, x.centred, mul(e, rsqrt(e, x.variance), sqrt(e, r.variance))), r.mu).reshape(restored.shape);
  });
}
