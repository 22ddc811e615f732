import type { Engine } from '../engine.js';
import { f32 } from '../engine.js';
import type { Tensor } from '../tensor.js';
import { ACT, assertShape, elementwiseGrid, pad8, stridesOf, type Activation } from './common.js';

/** y = act(x) · scale + shift. */
export function unary(e: Engine, x: Tensor, act: Activation, opts: { alpha?: number; scale?: number; shift?: number } = {}): Tensor {
  const y = e.empty(x.shape, x.dtype);
  const { workgroups, groupsX } = elementwiseGrid(x.size);
  e.run({
    kernel: 'unary',
    bindings: { X: x, Y: y },
    defines: { ACT: ACT[act] },
    params: [x.size, f32(opts.alpha ?? 0), f32(opts.scale ?? 1), f32(opts.shift ?? 0), groupsX],
    workgroups,
  });
  return y;
}

export const gelu = (e: Engine, x: Tensor): Tensor => unary(e, x, 'gelu');
export const quickGelu = (e: Engine, x: Tensor): Tensor => unary(e, x, 'quick_gelu');
export const silu = (e: Engine, x: Tensor): Tensor => unary(e, x, 'silu');
export const sigmoid = (e: Engine, x: Tensor): Tensor => unary(e, x, 'sigmoid');
export const leakyRelu = (e: Engine, x: Tensor, slope = 0.01): Tensor => unary(e, x, 'leaky_relu', { alpha: slope });
export const scale = (e: Engine, x: Tensor, s: number, shift = 0): Tensor => unary(e, x, 'none', { scale: s, shift });

const BINARY_OPS = { add: 0, sub: 1, mul: 2, div: 3 } as const;

/** NumPy broadcasting of two shapes → output shape and each input's strides. */
export function broadcast(a: readonly number[], b: readonly number[]): { shape: number[]; sa: number[]; sb: number[] } {
  const rank = Math.max(a.length, b.length);
  const pa = [...Array(rank - a.length).fill(1), ...a];
  const pb = [...Array(rank - b.length).fill(1), ...b];
  const [ta, tb] = [stridesOf(pa), stridesOf(pb)];
  const shape: number[] = [];
  const sa: number[] = [];
  const sb: number[] = [];
  for (let i = 0; i < rank; i++) {
    if (pa[i] !== pb[i] && pa[i] !== 1 && pb[i] !== 1) throw new Error(`cannot broadcast [${a}] with [${b}]`);
    shape.push(Math.max(pa[i], pb[i]));
    sa.push(pa[i] === 1 ? 0 : ta[i]);
    sb.push(pb[i] === 1 ? 0 : tb[i]);
  }
  return { shape, sa, sb };
}

function binary(e: Engine, op: keyof typeof BINARY_OPS, a: Tensor, b: Tensor): Tensor {
  const { shape, sa, sb } = broadcast(a.shape, b.shape);
  const out = e.empty(shape, a.dtype);
  const A = pad8(shape, sa);
  const B = pad8(shape, sb);
  const { workgroups, groupsX } = elementwiseGrid(out.size);
  e.run({
    kernel: 'binary',
    bindings: { A: a, B: b, Out: out },
    defines: { OP: BINARY_OPS[op] },
    params: [...A.shape, ...A.strides, ...B.strides, out.size, groupsX],
    workgroups,
  });
  return out;
}

export const add = (e: Engine, a: Tensor, b: Tensor): Tensor => binary(e, 'add', a, b);
export const sub = (e: Engine, a: Tensor, b: Tensor): Tensor => binary(e, 'sub', a, b);
export const mul = (e: Engine, a: Tensor, b: Tensor): Tensor => binary(e, 'mul', a, b);
export const div = (e: Engine, a: Tensor, b: Tensor): Tensor => binary(e, 'div', a, b);

/** Mean over one axis. */
export function mean(e: Engine, x: Tensor, axis: number): Tensor {
  const ax = axis < 0 ? x.shape.length + axis : axis;
  assertShape('mean', ax >= 0 && ax < x.shape.length, `axis ${axis} of ${x}`);
  const outer = x.shape.slice(0, ax).reduce((p, d) => p * d, 1);
  const R = x.shape[ax];
  const inner = x.shape.slice(ax + 1).reduce((p, d) => p * d, 1);
  const y = e.empty([...x.shape.slice(0, ax), ...x.shape.slice(ax + 1)], x.dtype);
  const { workgroups, groupsX } = elementwiseGrid(outer * inner);
  e.run({ kernel: 'reduce_mean', bindings: { X: x, Y: y }, params: [outer, R, inner, groupsX], workgroups });
  return y;
}

/** GEGLU gate: x [..., 2F] = [hidden | gate] → hidden · gelu(gate) [..., F]. */
export function geglu(e: Engine, x: Tensor): Tensor {
  const F2 = x.shape.at(-1)!;
  assertShape('geglu', F2 % 2 === 0, `last dimension of ${x} must be even`);
  const F = F2 / 2;
  const rows = x.size / F2;
  const y = e.empty([...x.shape.slice(0, -1), F], x.dtype);
  const { workgroups, groupsX } = elementwiseGrid(rows * F);
  e.run({ kernel: 'geglu', bindings: { X: x, Y: y }, params: [rows, F, groupsX], workgroups });
  return y;
}
