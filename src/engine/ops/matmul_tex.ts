// matmul on the CPU-adapter path (kernels.ts): operands in rgba32float textures, or packed f16
// rgba32uint ones when both are f16, one lane per output row (matmul_tex.wgsl, matmul_tex_h.wgsl).
// Called by matmul's gemm; same shapes and epilogues.
import type { Engine } from '../engine.js';
import type { Tensor } from '../tensor.js';
import { perTexel, texelsPerRow, weightTexture, type TexelFormat, type TextureView } from '../textures.js';
import { ACT, type Activation } from './common.js';

export interface TextureGemm {
  M: number;
  K: number;
  N: number;
  batch: number;
  /** b's batch: 1 (shared, e.g. a weight) or `batch`. */
  bBatch: number;
  transB: boolean;
  bias?: Tensor;
  act: Activation;
  alpha: number;
}

/**
 * Whether the texture kernel takes a product: K/4 texels must fit a texture row, and the N rows
 * of one item's b a texture's height. Larger a (rows) is split into blocks; per-item b stacks as
 * many items as fit.
 */
export function textureGemmFits(e: Engine, K: number, N: number): boolean {
  const max = e.device.limits.maxTextureDimension2D;
  return texelsPerRow(K) <= max && N <= max;
}

/** c [...batch, M, N] = act(a · op(b) + bias) (see matmul), recorded as copies and dispatches. */
export function textureGemm(e: Engine, a: Tensor, b: Tensor, c: Tensor, g: TextureGemm): void {
  const { M, K, N, batch, bBatch, transB } = g;
  const max = e.device.limits.maxTextureDimension2D;
  const format: TexelFormat = a.dtype === 'f16' && b.dtype === 'f16' ? 'rgba32uint' : 'rgba32float';
  const width = texelsPerRow(K, format);
  const shared = bBatch === 1;
  // Rows of b's texture for item i: [N rows, K/4 texels], b as stored when transB, else transposed.
  const bView = (rows: number, item0: number): TextureView => ({
    rows, rowsPerItem: N, segs: 1, segCols: K, base: item0 * K * N, sItem: K * N, sRow: transB ? K : 1, sSeg: 0, sK: transB ? 1 : N,
  });
  let wShared: GPUTexture | undefined;
  let wPooled: GPUTexture | undefined;
  if (shared) {
    const isWeight = !(b.base ?? b).pooled;
    const fill = (t: GPUTexture) => toTexture(e, b, t, bView(N, 0), transB);
    if (isWeight) wShared = weightTexture(e, b, transB ? 'nk' : 'kn', width, N, bView(N, 0), fill, format);
    else fill((wShared = wPooled = e.texturePool.acquire(width, N, format)));
  }
  const mRows = Math.min(M, max);
  const perBlock = Math.max(1, Math.min(Math.floor(max / mRows), shared ? batch : Math.floor(max / N)));
  for (let i0 = 0; i0 < batch; i0 += perBlock) {
    const items = Math.min(perBlock, batch - i0);
    let w = wShared;
    if (!w) toTexture(e, b, (w = e.texturePool.acquire(width, items * N, format)), bView(items * N, i0), transB);
    for (let m0 = 0; m0 < M; m0 += mRows) {
      const rows = Math.min(mRows, M - m0);
      const at = e.texturePool.acquire(width, items * rows, format);
      toTexture(e, a, at, { rows: items * rows, rowsPerItem: rows, segs: 1, segCols: K, base: i0 * M * K + m0 * K, sItem: M * K, sRow: K, sSeg: 0, sK: 1 },
        items === 1 || rows === M);
      e.run({
        kernel: format === 'rgba32uint' ? 'matmul_tex_h' : 'matmul_tex',
        bindings: { bias: g.bias ?? e.placeholder(b.dtype), c },
        textures: { at, wt: w },
        params: { M: rows, N, K4: Math.ceil(K / perTexel(format)), wItemRows: shared ? 0 : N, cBase: i0 * M * N + m0 * N, cItem: M * N, alpha: g.alpha, hasBias: g.bias ? 1 : 0, act: ACT[g.act] },
        workgroups: [Math.ceil(N / 16), Math.ceil(rows / 64), items],
      });
      e.texturePool.release(at);
    }
    if (w !== wShared) e.texturePool.release(w);
  }
  if (wPooled) e.texturePool.release(wPooled);
}

export type { TextureView };

/**
 * Fills a texture from a strided view of `src`: copyBufferToTexture where the rows are contiguous,
 * already in the texel's type (f32, or f16 for packed texels) and their pitch a multiple of 256
 * bytes (its alignment rule), else to_texture.wgsl / to_texture_h.wgsl.
 */
export function toTexture(e: Engine, src: Tensor, dst: GPUTexture, v: TextureView, contiguousRows = false): void {
  const packed = dst.format === 'rgba32uint';
  const pitch = v.segCols * (packed ? 2 : 4);
  if (contiguousRows && v.segs === 1 && src.dtype === (packed ? 'f16' : 'f32') && pitch % 256 === 0 && v.sK === 1 && v.sRow === v.segCols) {
    e.copyToTexture(src, v.base * (packed ? 2 : 4), pitch, dst, pitch / 16, v.rows);
    return;
  }
  e.run({
    kernel: packed ? 'to_texture_h' : 'to_texture',
    bindings: { src },
    textures: { dst },
    params: { ...v },
    workgroups: [Math.ceil((v.segs * Math.ceil(v.segCols / (packed ? 8 : 4))) / 8), Math.ceil(v.rows / 64)], // 8 texels × 64 rows
  });
}
