import type { Engine } from '../engine.js';
import { f32 } from '../engine.js';
import type { Tensor } from '../tensor.js';
import { assertShape } from './common.js';

/** Where one of q/k/v lives: rows of `stride` values, this operand starting at `offset`. */
export interface AttentionOperand {
  t: Tensor;
  stride?: number;
  offset?: number;
}

export interface AttentionOptions {
  heads: number;
  /** Needed when q is a slice of a fused projection; else q's width / heads. */
  headDim?: number;
  causal?: boolean;
  /** Defaults to 1/√head_dim. */
  scale?: number;
}

/**
 * Multi-head scaled-dot-product attention on projection outputs:
 * q [B, Lq, heads·d], k/v [B, Lk, heads·d] (or column slices of fused projections)
 * → [B, Lq, heads·d]. Never materialises the Lq×Lk score matrix.
 */
export function attention(
  e: Engine,
  q: Tensor | AttentionOperand,
  k: Tensor | AttentionOperand,
  v: Tensor | AttentionOperand,
  opts: AttentionOptions,
): Tensor {
  const [Q, Kt, V] = [q, k, v].map((x) => ('t' in x ? x : { t: x }));
  const [B, Lq] = Q.t.shape;
  const Lk = Kt.t.shape[1];
  const { heads, causal = false } = opts;
  const headDim = opts.headDim ?? Q.t.shape[2] / heads;
  assertShape('attention', Number.isInteger(headDim), `${Q.t.shape[2]} channels do not split into ${heads} heads`);
  const width = heads * headDim;
  assertShape('attention', Kt.t.shape[0] === B && V.t.shape[0] === B && V.t.shape[1] === Lk, `q ${Q.t}, k ${Kt.t}, v ${V.t}`);
  // Per-thread q and accumulator rows live in registers (spilling beyond); 512 is the SD VAE's one-head mid-block.
  assertShape('attention', headDim <= 512, `head size ${headDim} > 512 is not supported`);
  const out = e.empty([B, Lq, width], Q.t.dtype);
  e.run({
    kernel: 'attention',
    bindings: { Q: Q.t, K: Kt.t, V: V.t, O: out },
    // Shared K and V tiles take 16 KiB whatever the head size (limit: 16 KiB and up).
    defines: { HEAD_DIM: headDim, KEYS: Math.max(1, Math.min(64, Math.floor(2048 / headDim))), CAUSAL: causal },
    params: [
      heads, Lq, Lk,
      Q.stride ?? width, Kt.stride ?? width, V.stride ?? width,
      Q.offset ?? 0, Kt.offset ?? 0, V.offset ?? 0,
      f32(opts.scale ?? 1 / Math.sqrt(headDim)),
    ],
    workgroups: [Math.ceil(Lq / 64), heads, B],
  });
  return out;
}
