import type { Engine } from '../engine.js';
import { align } from '../engine.js';
import { numel, type DType, type Tensor } from '../tensor.js';
import { useSubgroupMatrix } from '../kernels.js';
import { ACT, assertShape, type Activation } from './common.js';
import { sumTo, unary } from './elementwise.js';
import { textureGemm, textureGemmFits } from './matmul_tex.js';

export interface MatmulOptions {
  /** a is [..., K, M], read transposed in place (a gradient dYᵀ·X without a permute copy). */
  transA?: boolean;
  /** b is [..., N, K] (PyTorch Linear weight layout) instead of [..., K, N]. */
  transB?: boolean;
  bias?: Tensor;
  act?: Activation;
  /** Slope for leaky_relu (PyTorch's default 0.01). */
  alpha?: number;
}

/**
 * a: [...batch, M, K] · b: [K, N] | [N, K] (shared by every batch item) or
 * [...batch, K, N] | [...batch, N, K] (per item) → [...batch, M, N] (+ bias[N], act).
 */
export function matmul(e: Engine, a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  if (!e.needsGrad(a, b, opts.bias)) return gemm(e, a, b, opts, 1, a.dtype);
  // Taping: the activation runs as its own op, which keeps the pre-activation for its backward.
  const { act = 'none', alpha = 0.01 } = opts;
  if (act !== 'none') return unary(e, matmul(e, a, b, { ...opts, act: 'none' }), act, { alpha });
  const c = gemm(e, a, b, opts, 1, a.dtype);
  e.record('matmul', [a, b, opts.bias], c, [a, b], (dc, [na, nb, nbias]) => {
    const g = matmulBackward(e, a, b, dc, { transB: opts.transB }, { a: na, b: nb, bias: nbias });
    return [g.da, g.db, g.dbias];
  });
  return c;
}

/**
 * matmul with K summed in up to `splits` chunks, each into its own f32 partial product, then
 * added by sumTo: a short, wide output (a weight gradient) over a long K (batch × pixels)
 * otherwise leaves most of a large GPU idle, and atomics would make it nondeterministic.
 */
function gemm(e: Engine, a: Tensor, b: Tensor, opts: MatmulOptions, splits: number, dtype: DType): Tensor {
  const { transA = false, transB = false, bias, act = 'none', alpha = 0.01 } = opts;
  assertShape('matmul', a.shape.length >= 2 && b.shape.length >= 2, `need rank >= 2, got ${a} and ${b}`);
  const [aRows, aCols] = a.shape.slice(-2);
  const [M, K] = transA ? [aCols, aRows] : [aRows, aCols];
  const [bRows, bCols] = b.shape.slice(-2);
  const N = transB ? bRows : bCols;
  assertShape('matmul', (transB ? bCols : bRows) === K,
    `inner dimensions differ: ${a}${transA ? 'ᵀ' : ''} · ${b}${transB ? 'ᵀ' : ''}`);
  const batchShape = a.shape.slice(0, -2);
  const batch = numel(batchShape);
  const bBatch = numel(b.shape.slice(0, -2));
  assertShape('matmul', bBatch === 1 || bBatch === batch, `batch of ${b} does not match ${a}`);
  if (bias) assertShape('matmul', bias.size === N, `bias ${bias} for ${N} outputs`);
  const kChunk = align(Math.ceil(K / splits), 16); // whole TILE_K steps per split
  const chunks = Math.max(1, Math.ceil(K / kChunk));
  if (chunks > 1) assertShape('matmul', !bias && act === 'none' && dtype === 'f32', 'a K-split product is f32 without an epilogue');

  // A CPU adapter (kernels.ts) reads the operands from textures; K splits only fill a big GPU.
  if (e.kernels.path === 'cpu' && !transA && textureGemmFits(e, K, N)) {
    const c = e.empty([...batchShape, M, N], dtype);
    textureGemm(e, a, b, c, { M, K, N, batch, bBatch, transB, bias, act, alpha });
    return c;
  }
  const c = e.empty(chunks > 1 ? [chunks, ...batchShape, M, N] : [...batchShape, M, N], chunks > 1 ? 'f32' : dtype);
  // f16 operands on the matrix units where the adapter has them (kernels.ts); same interface and 64×64 tiles.
  const { tile, workgroup } = e.kernels.matrix;
  const matrix = useSubgroupMatrix(e.kernels, { M, N, K, a: a.dtype, b: b.dtype });
  e.run({
    kernel: matrix ? 'matmul_subgroup_matrix' : 'matmul',
    bindings: { a, b, bias: bias ?? a, c },
    defines: { TRANS_A: transA, TRANS_B: transB, ...(matrix ? { SM: tile, WG: workgroup } : {}) },
    params: { M, N, K, strideA: M * K, strideB: bBatch === 1 ? 0 : K * N, strideC: M * N, alpha, batch, kChunk, hasBias: bias ? 1 : 0, act: ACT[act] },
    workgroups: [Math.ceil(N / 64), Math.ceil(M / 64), batch * chunks],
  });
  if (chunks === 1) return c;
  const out = sumTo(e, c, [...batchShape, M, N]);
  e.release(c);
  return out;
}

/**
 * How many K splits keep a GPU busy: about 256 workgroups over the output's `tiles`
 * (64×64 each), every split still summing at least 256 terms.
 */
export function kSplits(tiles: number, K: number): number {
  return Math.max(1, Math.min(Math.ceil(256 / tiles), Math.floor(K / 256)));
}

/** PyTorch nn.Linear: x [..., in] · weight[out, in]ᵀ + bias[out]. */
export function linear(e: Engine, x: Tensor, weight: Tensor, bias?: Tensor, act: Activation = 'none'): Tensor {
  const lead = x.shape.slice(0, -1);
  const rows = x.reshape([numel(lead), x.shape.at(-1)!]);
  return matmul(e, rows, weight, { transB: true, bias, act }).reshape([...lead, weight.shape[0]]);
}

export interface MatmulGrads {
  da?: Tensor;
  db?: Tensor;
  dbias?: Tensor;
}

/**
 * Gradients of c = a · op(b) + bias (matmul, without its activation: training runs a fused
 * activation as its own op, whose backward gives dc at the pre-activation) for the upstream
 * gradient dc [...batch, M, N]; only what `needs` asks for. db of a shared b (a weight) is
 * f32, the other gradients have dc's dtype.
 */
export function matmulBackward(e: Engine, a: Tensor, b: Tensor, dc: Tensor, opts: { transB?: boolean },
  needs: { a?: boolean; b?: boolean; bias?: boolean }): MatmulGrads {
  const transB = opts.transB ?? false;
  const M = a.shape.at(-2)!;
  const N = dc.shape.at(-1)!;
  const batch = numel(a.shape.slice(0, -2));
  const shared = numel(b.shape.slice(0, -2)) === 1;
  assertShape('matmulBackward', dc.size === batch * M * N && dc.shape.at(-2) === M, `gradient ${dc} for ${a} · ${b}`);
  const grads: MatmulGrads = {};
  // da = dc · op(b)ᵀ: b as stored is already op(b)ᵀ when transB.
  if (needs.a) grads.da = matmul(e, dc, b, { transB: !transB });
  if (needs.b) {
    // db = dcᵀ · a (transB, [N, K]) or aᵀ · dc ([K, N]); a shared b sums over the batch too,
    // which for contiguous rows is one product over batch·M.
    const [l, r] = transB ? [dc, a] : [a, dc];
    if (shared) {
      const rows = batch * M;
      const lf = l.reshape([rows, l.shape.at(-1)!]);
      const rf = r.reshape([rows, r.shape.at(-1)!]);
      const tiles = Math.ceil(lf.shape[1] / 64) * Math.ceil(rf.shape[1] / 64);
      grads.db = gemm(e, lf, rf, { transA: true }, kSplits(tiles, rows), 'f32').reshape(b.shape);
    } else {
      grads.db = matmul(e, l, r, { transA: true }).reshape(b.shape);
    }
  }
  if (needs.bias) grads.dbias = sumTo(e, dc, [N]);
  return grads;
}

/** Gradients of linear (y = x·weightᵀ + bias, without its activation) for dy [..., out]. */
export function linearBackward(e: Engine, x: Tensor, weight: Tensor, dy: Tensor,
  needs: { x?: boolean; weight?: boolean; bias?: boolean }): { dx?: Tensor; dw?: Tensor; dbias?: Tensor } {
  const lead = x.shape.slice(0, -1);
  const rows = x.reshape([numel(lead), x.shape.at(-1)!]);
  const dyRows = dy.reshape([numel(lead), weight.shape[0]]);
  const g = matmulBackward(e, rows, weight, dyRows, { transB: true }, { a: needs.x, b: needs.weight, bias: needs.bias });
  return { dx: g.da?.reshape(x.shape), dw: g.db, dbias: g.dbias };
}
