import type { Engine } from '../engine.js';
import type { Tensor } from '../tensor.js';
import { assertShape } from './common.js';
import { textureAttention, textureAttentionFits } from './attention_tex.js';

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
 * → [B, Lq, heads·d]. Never materialises the Lq×Lk score matrix (the CPU-adapter path,
 * attention_tex.ts, holds blocks of scores within a fixed budget). Given `lse`
 * (f32, [B, heads, Lq]), it also saves each query row's log-sum-exp of its scaled
 * scores for attentionBackward.
 */
export function attention(
  e: Engine,
  q: Tensor | AttentionOperand,
  k: Tensor | AttentionOperand,
  v: Tensor | AttentionOperand,
  opts: AttentionOptions,
  lse?: Tensor,
): Tensor {
  const a = plan('attention', q, k, v, opts);
  if (lse) assertShape('attention', lse.size === a.B * opts.heads * a.Lq && lse.dtype === 'f32', `lse ${lse} for ${a.Q.t}`);
  const out = e.empty([a.B, a.Lq, a.width], a.Q.t.dtype);
  // The kernel always writes the row statistics (one float a row): unasked, to a scratch buffer.
  const saved = lse ?? e.empty([a.B, opts.heads, a.Lq]);
  if (e.kernels.path === 'cpu' && textureAttentionFits(e, a.Lq, a.Lk, opts.heads, a.headDim)) {
    // A CPU adapter (kernels.ts): scores in blocks of queries through textures.
    textureAttention(e, { ...a, heads: opts.heads, scale: a.params.scale }, out, saved);
  } else {
    e.run({
      kernel: 'attention',
      bindings: { q: a.Q.t, k: a.K.t, v: a.V.t, o: out, lse: saved },
      // Shared K and V tiles take 16 KiB whatever the head size (limit: 16 KiB and up).
      defines: { HEAD_DIM: a.headDim, KEYS: Math.max(1, Math.min(64, Math.floor(2048 / a.headDim))), CAUSAL: a.causal },
      params: a.params,
      workgroups: [Math.ceil(a.Lq / 64), opts.heads, a.B],
    });
  }
  const [Q, K, V] = [a.Q.t, a.K.t, a.V.t];
  if (e.needsGrad(Q, K, V)) {
    const dense = [a.Q, a.K, a.V].every((o) => (o.stride ?? a.width) === a.width && (o.offset ?? 0) === 0);
    assertShape('attention', dense, 'gradients through column slices of a fused projection are not supported');
    e.record('attention', [Q, K, V], out, [Q, K, V, out, saved], (dout, [dq, dk, dv]) => {
      const g = attentionBackward(e, Q, K, V, out, saved, dout, opts, { dq, dk, dv });
      return [g.dq, g.dk, g.dv];
    });
  } else if (!lse) e.release(saved);
  return out;
}

/** Which of dq, dk, dv attentionBackward computes. */
export interface AttentionNeeds { dq?: boolean; dk?: boolean; dv?: boolean }

/**
 * Gradients of `attention` (FlashAttention-2 style, never an Lq×Lk matrix) from its
 * inputs, output `out`, the saved `lse` and the upstream gradient `dout` (both dense
 * [B, Lq, heads·d]). dq [B, Lq, heads·d] and dk, dv [B, Lk, heads·d] are dense even
 * when q/k/v are slices of a fused projection, and have dout's dtype. Two passes
 * without atomics: one over query blocks for dq, one over key blocks for dk and dv
 * (computed together when either is needed).
 */
export function attentionBackward(
  e: Engine,
  q: Tensor | AttentionOperand,
  k: Tensor | AttentionOperand,
  v: Tensor | AttentionOperand,
  out: Tensor,
  lse: Tensor,
  dout: Tensor,
  opts: AttentionOptions,
  needs: AttentionNeeds,
): { dq?: Tensor; dk?: Tensor; dv?: Tensor } {
  const a = plan('attentionBackward', q, k, v, opts);
  const { B, Lq, Lk, width, headDim } = a;
  assertShape('attentionBackward', out.size === B * Lq * width && dout.size === out.size && lse.size === B * opts.heads * Lq,
    `out ${out}, dout ${dout}, lse ${lse} for ${a.Q.t}`);
  const inputs = { q: a.Q.t, k: a.K.t, v: a.V.t, o: out, lse, dout };
  const grads: { dq?: Tensor; dk?: Tensor; dv?: Tensor } = {};
  if (needs.dq) {
    grads.dq = e.empty([B, Lq, width], dout.dtype);
    e.run({
      kernel: 'attention_back_dq',
      bindings: { ...inputs, dq: grads.dq },
      defines: { HEAD_DIM: headDim, KEYS: Math.max(1, Math.min(64, Math.floor(2048 / headDim))), CAUSAL: a.causal },
      params: a.params,
      workgroups: [Math.ceil(Lq / 64), opts.heads, B],
    });
  }
  if (needs.dk || needs.dv) {
    const dk = e.empty([B, Lk, width], dout.dtype);
    const dv = e.empty([B, Lk, width], dout.dtype);
    e.run({
      kernel: 'attention_back',
      bindings: { ...inputs, dk, dv },
      // Shared q and dO tiles plus two floats per row stay within 16 KiB.
      defines: { HEAD_DIM: headDim, ROWS: Math.max(1, Math.min(64, Math.floor(2048 / (headDim + 1)))), CAUSAL: a.causal },
      params: a.params,
      workgroups: [Math.ceil(Lk / 64), opts.heads, B],
    });
    if (needs.dk) grads.dk = dk;
    else e.release(dk);
    if (needs.dv) grads.dv = dv;
    else e.release(dv);
  }
  return grads;
}

/** Operands, shapes and the params struct shared by the forward and backward kernels. */
function plan(op: string, q: Tensor | AttentionOperand, k: Tensor | AttentionOperand, v: Tensor | AttentionOperand, opts: AttentionOptions) {
  const [Q, K, V] = [q, k, v].map((x) => ('t' in x ? x : { t: x }));
  const [B, Lq] = Q.t.shape;
  const Lk = K.t.shape[1];
  const { heads, causal = false } = opts;
  const headDim = opts.headDim ?? Q.t.shape[2] / heads;
  assertShape(op, Number.isInteger(headDim), `${Q.t.shape[2]} channels do not split into ${heads} heads`);
  const width = heads * headDim;
  assertShape(op, K.t.shape[0] === B && V.t.shape[0] === B && V.t.shape[1] === Lk, `q ${Q.t}, k ${K.t}, v ${V.t}`);
  // Per-thread q and accumulator rows live in registers (spilling beyond); 512 is the SD VAE's one-head mid-block.
  assertShape(op, headDim <= 512, `head size ${headDim} > 512 is not supported`);
  const params = {
    heads, Lq, Lk,
    qStride: Q.stride ?? width, kStride: K.stride ?? width, vStride: V.stride ?? width,
    qOff: Q.offset ?? 0, kOff: K.offset ?? 0, vOff: V.offset ?? 0,
    scale: opts.scale ?? 1 / Math.sqrt(headDim),
  };
  return { Q, K, V, B, Lq, Lk, headDim, width, causal, params };
}
