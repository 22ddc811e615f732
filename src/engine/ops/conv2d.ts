import type { Engine } from '../engine.js';
import { f32 } from '../engine.js';
import type { Tensor } from '../tensor.js';
import { ACT, assertShape, type Activation } from './common.js';

export interface Conv2dOptions {
  stride?: number | [number, number];
  /** Symmetric (p or [ph, pw]), or [top, bottom, left, right] like F.pad's (0, 1, 0, 1) in VAE downsamplers. */
  padding?: number | [number, number] | [number, number, number, number];
  bias?: Tensor;
  act?: Activation;
}

/** x [B, Cin, H, W] ⊛ w [Cout, Cin, KH, KW] → [B, Cout, Ho, Wo] (groups = 1, dilation 1). */
export function conv2d(e: Engine, x: Tensor, w: Tensor, opts: Conv2dOptions = {}): Tensor {
  const [sh, sw] = pair(opts.stride ?? 1);
  const [top, bottom, left, right] = padding4(opts.padding ?? 0);
  assertShape('conv2d', x.shape.length === 4 && w.shape.length === 4, `need 4-D input and weight, got ${x} and ${w}`);
  const [B, Cin, H, W] = x.shape;
  const [Cout, wCin, KH, KW] = w.shape;
  assertShape('conv2d', wCin === Cin, `weight ${w} expects ${wCin} input channels, input ${x} has ${Cin}`);
  const Ho = Math.floor((H + top + bottom - KH) / sh) + 1;
  const Wo = Math.floor((W + left + right - KW) / sw) + 1;
  assertShape('conv2d', Ho > 0 && Wo > 0, `kernel ${KH}x${KW} larger than padded input ${H}x${W}`);
  if (opts.bias) assertShape('conv2d', opts.bias.size === Cout, `bias ${opts.bias} for ${Cout} channels`);

  const y = e.empty([B, Cout, Ho, Wo], x.dtype);
  e.run({
    kernel: 'conv2d',
    bindings: { X: x, W: w, Bias: opts.bias ?? w, Y: y },
    defines: { HAS_BIAS: !!opts.bias, ACT: ACT[opts.act ?? 'none'] },
    params: [Cin, H, W, Cout, Ho, Wo, KH, KW, sh, sw, top, left, f32(0)],
    workgroups: [Math.ceil((Ho * Wo) / 64), Math.ceil(Cout / 64), B],
  });
  return y;
}

const pair = (v: number | [number, number]): [number, number] => (typeof v === 'number' ? [v, v] : v);

/** The kernel offsets by top/left and treats everything outside the input as 0. */
function padding4(p: NonNullable<Conv2dOptions['padding']>): [number, number, number, number] {
  if (typeof p === 'number') return [p, p, p, p];
  return p.length === 2 ? [p[0], p[0], p[1], p[1]] : p;
}
