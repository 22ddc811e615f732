import type { Engine } from '../engine.js';
import { f32 } from '../engine.js';
import { numel, type Tensor } from '../tensor.js';
import { ACT, assertShape, type Activation } from './common.js';

export interface MatmulOptions {
  /** b is [..., N, K] (PyTorch Linear weight layout) instead of [..., K, N]. */
  transB?: boolean;
  bias?: Tensor;
  act?: Activation;
  /** Slope for leaky_relu. */
  alpha?: number;
}

/**
 * a: [...batch, M, K] · b: [K, N] | [N, K] (shared by every batch item) or
 * [...batch, K, N] | [...batch, N, K] (per item) → [...batch, M, N] (+ bias[N], act).
 */
export function matmul(e: Engine, a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const { transB = false, bias, act = 'none', alpha = 0 } = opts;
  assertShape('matmul', a.shape.length >= 2 && b.shape.length >= 2, `need rank >= 2, got ${a} and ${b}`);
  const M = a.shape.at(-2)!;
  const K = a.shape.at(-1)!;
  const [bRows, bCols] = b.shape.slice(-2);
  const N = transB ? bRows : bCols;
  assertShape('matmul', (transB ? bCols : bRows) === K, `inner dimensions differ: ${a} · ${b}${transB ? 'ᵀ' : ''}`);
  const batchShape = a.shape.slice(0, -2);
  const batch = numel(batchShape);
  const bBatch = numel(b.shape.slice(0, -2));
  assertShape('matmul', bBatch === 1 || bBatch === batch, `batch of ${b} does not match ${a}`);
  if (bias) assertShape('matmul', bias.size === N, `bias ${bias} for ${N} outputs`);

  const out = e.empty([...batchShape, M, N], a.dtype);
  e.run({
    kernel: 'matmul',
    bindings: { A: a, B: b, Bias: bias ?? a, C: out },
    defines: { TRANS_B: transB, HAS_BIAS: !!bias, ACT: ACT[act] },
    params: [M, N, K, M * K, bBatch === 1 ? 0 : K * N, M * N, f32(alpha)],
    workgroups: [Math.ceil(N / 64), Math.ceil(M / 64), batch],
  });
  return out;
}

/** PyTorch nn.Linear: x [..., in] · weight[out, in]ᵀ + bias[out]. */
export function linear(e: Engine, x: Tensor, weight: Tensor, bias?: Tensor, act: Activation = 'none'): Tensor {
  const lead = x.shape.slice(0, -1);
  const rows = x.reshape([numel(lead), x.shape.at(-1)!]);
  return matmul(e, rows, weight, { transB: true, bias, act }).reshape([...lead, weight.shape[0]]);
}
