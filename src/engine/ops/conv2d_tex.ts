// conv2d on the CPU-adapter path (kernels.ts): implicit GEMM over a channels-last input texture
// and a weight texture made once (conv2d_tex.wgsl). Called by conv2d; same shapes and epilogues.
import type { Engine } from '../engine.js';
import type { Tensor } from '../tensor.js';
import { weightTexture } from '../textures.js';
import { ACT, type Activation } from './common.js';
import { toTexture } from './matmul_tex.js';

export interface TextureConv {
  B: number; Cin: number; H: number; W: number; Cout: number; Ho: number; Wo: number; KH: number; KW: number;
  strideH: number; strideW: number; padH: number; padW: number;
  bias?: Tensor;
  act: Activation;
  alpha: number;
}

/**
 * Whether the textures fit (W·Cin/4 texels per input row, taps·Cin/4 per weight row, H and Cout
 * rows) and the pixels' 16-wide tiles one dispatch dimension.
 */
export function textureConvFits(e: Engine, c: Pick<TextureConv, 'Cin' | 'H' | 'W' | 'Cout' | 'KH' | 'KW' | 'Ho' | 'Wo'>): boolean {
  const max = e.device.limits.maxTextureDimension2D;
  const cin4 = Math.ceil(c.Cin / 4);
  return c.W * cin4 <= max && c.KH * c.KW * cin4 <= max && c.H <= max && c.Cout <= max &&
    Math.ceil((c.Ho * c.Wo) / 16) <= e.device.limits.maxComputeWorkgroupsPerDimension;
}

/** y [B, Cout, Ho, Wo] = act(conv(x, w) + bias), recorded as copies and dispatches. */
export function textureConv(e: Engine, x: Tensor, w: Tensor, y: Tensor, c: TextureConv): void {
  const { B, Cin, H, W, Cout, Ho, Wo, KH, KW } = c;
  const max = e.device.limits.maxTextureDimension2D;
  const cin4 = Math.ceil(Cin / 4);
  const taps = KH * KW;
  // Weight rows: one segment of Cin channels per tap (W[co, ci, tap] at co·Cin·taps + ci·taps + tap).
  const wView = { rows: Cout, rowsPerItem: Cout, segs: taps, segCols: Cin, base: 0, sItem: 0, sRow: Cin * taps, sSeg: 1, sK: taps };
  const isWeight = !(w.base ?? w).pooled;
  const wt = isWeight ? weightTexture(e, w, 'conv', taps * cin4, Cout, wView, (t) => toTexture(e, w, t, wView))
    : e.texturePool.acquire(taps * cin4, Cout);
  if (!isWeight) toTexture(e, w, wt, wView);
  const perBlock = Math.max(1, Math.floor(max / H));
  for (let b0 = 0; b0 < B; b0 += perBlock) {
    const items = Math.min(perBlock, B - b0);
    // Input rows (item, ih), one segment of Cin channels per pixel iw.
    const xt = e.texturePool.acquire(W * cin4, items * H);
    toTexture(e, x, xt, { rows: items * H, rowsPerItem: H, segs: W, segCols: Cin, base: b0 * Cin * H * W, sItem: Cin * H * W, sRow: W, sSeg: 1, sK: H * W });
    e.run({
      kernel: 'conv2d_tex',
      bindings: { bias: c.bias ?? e.placeholder(w.dtype), y },
      textures: { xt, wt },
      params: { Cout, H, W, Ho, Wo, KW, taps, Cin4: cin4, strideH: c.strideH, strideW: c.strideW, padH: c.padH, padW: c.padW, y0: b0, alpha: c.alpha, hasBias: c.bias ? 1 : 0, act: ACT[c.act] },
      workgroups: [Math.ceil((Ho * Wo) / 16), Math.ceil(Cout / 64), items],
    });
    e.texturePool.release(xt);
  }
  if (!isWeight) e.texturePool.release(wt);
}
