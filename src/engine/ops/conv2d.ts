import type { Engine } from '../engine.js';
import { align } from '../engine.js';
import type { Tensor } from '../tensor.js';
import { ACT, assertShape, type Activation } from './common.js';
import { sumTo, unary } from './elementwise.js';
import { kSplits } from './matmul.js';
import { useSubgroupMatrix } from '../kernels.js';
import { textureConv, textureConvFits } from './conv2d_tex.js';

export interface Conv2dOptions {
  stride?: number | [number, number];
  /** Symmetric (p or [ph, pw]), or [top, bottom, left, right] like F.pad's (0, 1, 0, 1) in VAE downsamplers. */
  padding?: number | [number, number] | [number, number, number, number];
  bias?: Tensor;
  act?: Activation;
  /** Slope for leaky_relu (PyTorch's default 0.01). */
  alpha?: number;
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
  const taping = e.needsGrad(x, w, opts.bias);
  // Taping: the activation runs as its own op, which keeps the pre-activation for its backward.
  if (taping && opts.act && opts.act !== 'none') {
    return unary(e, conv2d(e, x, w, { ...opts, act: 'none' }), opts.act, { alpha: opts.alpha ?? 0.01 });
  }

  const y = e.empty([B, Cout, Ho, Wo], x.dtype);
  const geometry = { B, Cin, H, W, Cout, Ho, Wo, KH, KW, strideH: sh, strideW: sw, padH: top, padW: left };
  // A CPU adapter (kernels.ts) reads the input and weights from textures.
  if (e.kernels.path === 'cpu' && textureConvFits(e, geometry)) {
    textureConv(e, x, w, y, { ...geometry, bias: opts.bias, act: opts.act ?? 'none', alpha: opts.alpha ?? 0.01 });
  } else {
    // f16 operands on the matrix units where the adapter has them (kernels.ts): the GEMM is Cout × Ho·Wo × Cin·KH·KW.
    const matrix = useSubgroupMatrix(e.kernels, { M: Cout, N: Ho * Wo, K: Cin * KH * KW, a: w.dtype, b: x.dtype });
    e.run({
      kernel: matrix ? 'conv2d_subgroup_matrix' : 'conv2d',
      bindings: { x, w, bias: opts.bias ?? w, y },
      ...(matrix ? { defines: { SM: e.kernels.matrix.tile, WG: e.kernels.matrix.workgroup } } : {}),
      params: { Cin, H, W, Cout, Ho, Wo, KH, KW, strideH: sh, strideW: sw, padH: top, padW: left, alpha: opts.alpha ?? 0.01, hasBias: opts.bias ? 1 : 0, act: ACT[opts.act ?? 'none'] },
      workgroups: [Math.ceil((Ho * Wo) / 64), Math.ceil(Cout / 64), B],
    });
  }
  if (taping) {
    e.record('conv2d', [x, w, opts.bias], y, [x, w], (dy, [nx, nw, nb]) => {
      const g = conv2dBackward(e, x, w, dy, opts, { x: nx, w: nw, bias: nb });
      return [g.dx, g.dw, g.dbias];
    });
  }
  return y;
}

export interface Conv2dGrads {
  dx?: Tensor;
  dw?: Tensor;
  dbias?: Tensor;
}

/**
 * Gradients of conv2d for the upstream gradient dy [B, Cout, Ho, Wo], only those `needs` asks
 * for: dx as a transposed implicit GEMM, dw (f32, the master weights' dtype) as a GEMM over
 * batch × output pixels, dbias as dy summed over batch and pixels (dx and dbias in dy's dtype).
 * No atomics: the results do not depend on scheduling. A fused activation is not
 * differentiated here: while taping, training runs conv2d without it and the activation as its
 * own op, whose backward gives dy at the pre-activation (that op's saved input), so nothing is
 * recomputed and no kernel needs a second output.
 */
export function conv2dBackward(e: Engine, x: Tensor, w: Tensor, dy: Tensor, opts: Pick<Conv2dOptions, 'stride' | 'padding'>,
  needs: { x?: boolean; w?: boolean; bias?: boolean }): Conv2dGrads {
  const [sh, sw] = pair(opts.stride ?? 1);
  const [top, , left] = padding4(opts.padding ?? 0);
  const [B, Cin, H, W] = x.shape;
  const [Cout, , KH, KW] = w.shape;
  const [, , Ho, Wo] = dy.shape;
  assertShape('conv2dBackward', dy.shape.length === 4 && dy.shape[0] === B && dy.shape[1] === Cout,
    `gradient ${dy} for input ${x} and weight ${w}`);
  const geometry = { Cin, H, W, Cout, Ho, Wo, KH, KW, strideH: sh, strideW: sw, padH: top, padW: left };
  const grads: Conv2dGrads = {};
  if (needs.x) {
    const dx = e.empty(x.shape, dy.dtype);
    e.run({
      kernel: 'conv2d_back_data',
      bindings: { w, dy, dx },
      params: geometry,
      // Grid for the largest phase class (ih ≡ 0 mod sh, iw ≡ 0 mod sw); smaller classes skip the excess.
      workgroups: [Math.ceil((Math.ceil(H / sh) * Math.ceil(W / sw)) / 64), Math.ceil(Cin / 64), B * sh * sw],
    });
    grads.dx = dx;
  }
  if (needs.w) {
    const Kc = Cin * KH * KW;
    const R = B * Ho * Wo;
    const tiles = Math.ceil(Kc / 64) * Math.ceil(Cout / 64);
    const rChunk = align(Math.ceil(R / kSplits(tiles, R)), 16);
    const chunks = Math.ceil(R / rChunk);
    const partial = e.empty(chunks > 1 ? [chunks, ...w.shape] : w.shape, 'f32');
    e.run({
      kernel: 'conv2d_back_weight',
      bindings: { x, dy, dw: partial },
      params: { B, ...geometry, rChunk },
      workgroups: [Math.ceil(Kc / 64), Math.ceil(Cout / 64), chunks],
    });
    grads.dw = chunks > 1 ? sumTo(e, partial, w.shape) : partial;
    if (chunks > 1) e.release(partial);
  }
  if (needs.bias) grads.dbias = sumTo(e, dy, [Cout, 1, 1]).reshape([Cout]);
  return grads;
}

const pair = (v: number | [number, number]): [number, number] => (typeof v === 'number' ? [v, v] : v);

/** The kernel offsets by top/left and treats everything outside the input as 0. */
function padding4(p: NonNullable<Conv2dOptions['padding']>): [number, number, number, number] {
  if (typeof p === 'number') return [p, p, p, p];
  return p.length === 2 ? [p[0], p[0], p[1], p[1]] : p;
}
