import type { Engine } from '../engine.js';
import { grid } from '../engine.js';
import { numel, type Tensor } from '../tensor.js';
import { ACT, LOOP_ELEMENTS, assertShape, collapseAxes, elementwiseGrid, indexRank, pad8, rowWorkgroup, stridesOf, type Activation } from './common.js';

/** y = act(x) · scale + shift. */
export function unary(e: Engine, x: Tensor, act: Activation, opts: { alpha?: number; scale?: number; shift?: number } = {}): Tensor {
  const y = e.empty(x.shape, x.dtype);
  const { workgroups, groupsX } = elementwiseGrid(x.size, LOOP_ELEMENTS);
  e.run({
    kernel: 'unary',
    bindings: { x, y },
    params: { n: x.size, alpha: opts.alpha ?? 0, scale: opts.scale ?? 1, shift: opts.shift ?? 0, groupsX, act: ACT[act] },
    workgroups,
  });
  e.record('unary', [x], y, [x], (dy) => [unaryBackward(e, act, x, dy, opts)]);
  return y;
}

export const gelu = (e: Engine, x: Tensor): Tensor => unary(e, x, 'gelu');
export const quickGelu = (e: Engine, x: Tensor): Tensor => unary(e, x, 'quick_gelu');
export const silu = (e: Engine, x: Tensor): Tensor => unary(e, x, 'silu');
export const sigmoid = (e: Engine, x: Tensor): Tensor => unary(e, x, 'sigmoid');
export const relu = (e: Engine, x: Tensor): Tensor => unary(e, x, 'relu');
export const sqrt = (e: Engine, x: Tensor): Tensor => unary(e, x, 'sqrt');
export const rsqrt = (e: Engine, x: Tensor): Tensor => unary(e, x, 'rsqrt');
export const softplus = (e: Engine, x: Tensor): Tensor => unary(e, x, 'softplus');
export const leakyRelu = (e: Engine, x: Tensor, slope = 0.01): Tensor => unary(e, x, 'leaky_relu', { alpha: slope });
export const scale = (e: Engine, x: Tensor, s: number, shift = 0): Tensor => unary(e, x, 'none', { scale: s, shift });

/**
 * Backward of `unary`: dx = dy · scale · act'(x), in dy's dtype (act' at a ReLU kink is PyTorch's:
 * 0 takes the left slope). For relu and leaky_relu (slope > 0) the output has x's sign, so a fused
 * epilogue's output can stand in for x.
 */
export function unaryBackward(e: Engine, act: Activation, x: Tensor, dy: Tensor, opts: { alpha?: number; scale?: number } = {}): Tensor {
  assertShape('unaryBackward', dy.size === x.size, `gradient ${dy} for input ${x}`);
  const dx = e.empty(x.shape, dy.dtype);
  const { workgroups, groupsX } = elementwiseGrid(x.size);
  e.run({
    kernel: 'unary_back',
    bindings: { x, dy, dx },
    defines: { ACT: ACT[act] },
    params: { n: x.size, alpha: opts.alpha ?? 0, scale: opts.scale ?? 1, groupsX },
    workgroups,
  });
  return dx;
}

const BINARY_OPS = { add: 0, sub: 1, mul: 2, div: 3 } as const;
export type BinaryOp = keyof typeof BINARY_OPS;

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
  const axes = collapseAxes(shape, [sa, sb]);
  const A = pad8(axes.shape, axes.strides[0]);
  const B = pad8(axes.shape, axes.strides[1]);
  const { workgroups, groupsX } = elementwiseGrid(out.size, LOOP_ELEMENTS);
  e.run({
    kernel: 'binary',
    bindings: { a, b, out },
    defines: { RANK: indexRank(axes.shape.length) },
    params: { shape: A.shape, strideA: A.strides, strideB: B.strides, n: out.size, groupsX, op: BINARY_OPS[op] },
    workgroups,
  });
  // add and sub need only the operands' shapes.
  e.record(op, [a, b], out, op === 'mul' || op === 'div' ? [a, b] : [], (dy, [na, nb]) => {
    const g = binaryBackward(e, op, a, b, dy, { a: na, b: nb });
    return [g.da, g.db];
  });
  return out;
}

export const add = (e: Engine, a: Tensor, b: Tensor): Tensor => binary(e, 'add', a, b);
export const sub = (e: Engine, a: Tensor, b: Tensor): Tensor => binary(e, 'sub', a, b);
export const mul = (e: Engine, a: Tensor, b: Tensor): Tensor => binary(e, 'mul', a, b);
export const div = (e: Engine, a: Tensor, b: Tensor): Tensor => binary(e, 'div', a, b);

/**
 * Backward of out = a OP b with broadcasting, given dy = dL/dout: each gradient is summed back
 * to its operand's shape (`sumTo`); only those asked for in `needs` are computed. A gradient may
 * be dy itself or a view of it (add, sub without broadcasting): never write into it.
 */
export function binaryBackward(
  e: Engine, op: BinaryOp, a: Tensor, b: Tensor, dy: Tensor, needs: { a?: boolean; b?: boolean } = { a: true, b: true },
): { da?: Tensor; db?: Tensor } {
  assertShape('binaryBackward', broadcast(a.shape, b.shape).shape.join() === dy.shape.join(), `gradient ${dy} for ${a} ${op} ${b}`);
  return e.tidy(() => {
    const { a: needA, b: needB } = needs;
    switch (op) {
      case 'add':
        return { da: needA ? sumTo(e, dy, a.shape) : undefined, db: needB ? sumTo(e, dy, b.shape) : undefined };
      case 'sub':
        return { da: needA ? sumTo(e, dy, a.shape) : undefined, db: needB ? scale(e, sumTo(e, dy, b.shape), -1) : undefined };
      case 'mul':
        return { da: needA ? sumTo(e, mul(e, dy, b), a.shape) : undefined, db: needB ? sumTo(e, mul(e, dy, a), b.shape) : undefined };
      case 'div':
        // d(a/b)/db = −(a/b)/b
        return {
          da: needA ? sumTo(e, div(e, dy, b), a.shape) : undefined,
          db: needB ? scale(e, sumTo(e, div(e, mul(e, dy, div(e, a, b)), b), b.shape), -1) : undefined,
        };
    }
  });
}

/**
 * t summed over the axes that broadcasting added to `shape` (right-aligned; 1 or missing in
 * `shape`), reshaped to `shape`: the gradient of an operand broadcast to t's shape (ggml's
 * repeat_back). t itself when nothing is summed and the shape is t's.
 */
export function sumTo(e: Engine, t: Tensor, shape: readonly number[]): Tensor {
  const lead = t.shape.length - shape.length;
  assertShape('sumTo', lead >= 0 && shape.every((d, i) => d === t.shape[lead + i] || d === 1), `${t} to [${shape}]`);
  assertShape('sumTo', t.shape.length <= 8, `rank of ${t} above 8`);
  // Runs of kept or summed axes merge into one (t is contiguous): at most 4 groups of each.
  const strides = stridesOf(t.shape);
  const keep = { shape: [] as number[], strides: [] as number[] };
  const red = { shape: [] as number[], strides: [] as number[] };
  let last: typeof keep | undefined;
  t.shape.forEach((size, i) => {
    if (size === 1) return;
    const group = i >= lead && shape[i - lead] === size ? keep : red;
    if (group === last) {
      group.shape[group.shape.length - 1] *= size;
      group.strides[group.strides.length - 1] = strides[i];
    } else {
      group.shape.push(size);
      group.strides.push(strides[i]);
    }
    last = group;
  });
  // Nothing summed: t itself passes on; a reshaped view of it is copied instead (a batch of 1 gives a bias
  // gradient [1, C] → [C]: as a view, the backward freed its buffer with dy while the param still held it).
  if (red.shape.length === 0) return t.shape.join() === shape.join() ? t : scale(e, t, 1).reshape(shape);
  const pad4 = (v: number[], fill: number): number[] => [...Array(4 - v.length).fill(fill), ...v];
  const nOut = numel(keep.shape);
  const R = numel(red.shape);
  const y = e.empty(shape, t.dtype);
  // Long sums get a workgroup each; short ones (an upsampling's 2×2 blocks) a thread each.
  const split = R >= 64;
  const WG = split ? rowWorkgroup(R, e.kernels.path) : 256;
  const workgroups = grid(split ? nOut : Math.ceil(nOut / WG));
  e.run({
    kernel: 'sum_to',
    bindings: { x: t, y },
    defines: { SPLIT: split, WG },
    params: {
      keepShape: pad4(keep.shape, 1), keepStride: pad4(keep.strides, 0),
      redShape: pad4(red.shape, 1), redStride: pad4(red.strides, 0),
      nOut, R, groupsX: workgroups[0],
    },
    workgroups,
  });
  return y;
}

/** Mean over one axis. */
export function mean(e: Engine, x: Tensor, axis: number): Tensor {
  e.assertNoGrad('mean', x);
  const ax = axis < 0 ? x.shape.length + axis : axis;
  assertShape('mean', ax >= 0 && ax < x.shape.length, `axis ${axis} of ${x}`);
  const outer = x.shape.slice(0, ax).reduce((p, d) => p * d, 1);
  const R = x.shape[ax];
  const inner = x.shape.slice(ax + 1).reduce((p, d) => p * d, 1);
  const y = e.empty([...x.shape.slice(0, ax), ...x.shape.slice(ax + 1)], x.dtype);
  const { workgroups, groupsX } = elementwiseGrid(outer * inner);
  e.run({ kernel: 'reduce_mean', bindings: { x, y }, params: { outer, R, inner, groupsX }, workgroups });
  return y;
}

/** GEGLU gate: x [..., 2F] = [hidden | gate] → hidden · gelu(gate) [..., F]. */
export function geglu(e: Engine, x: Tensor): Tensor {
  const F2 = x.shape.at(-1)!;
  assertShape('geglu', F2 % 2 === 0, `last dimension of ${x} must be even`);
  const F = F2 / 2;
  const rows = x.size / F2;
  const y = e.empty([...x.shape.slice(0, -1), F], x.dtype);
  const workgroups = grid(rows);
  const groupsX = workgroups[0];
  e.run({ kernel: 'geglu', bindings: { x, y }, params: { rows, F, groupsX }, workgroups });
  e.record('geglu', [x], y, [x], (dy) => [gegluBackward(e, x, dy)]);
  return y;
}

/** Backward of `geglu`: dy [..., F] → dx [..., 2F] = [dy · gelu(gate) | dy · hidden · gelu'(gate)]. */
export function gegluBackward(e: Engine, x: Tensor, dy: Tensor): Tensor {
  const F2 = x.shape.at(-1)!;
  assertShape('gegluBackward', F2 % 2 === 0 && dy.size * 2 === x.size && dy.shape.at(-1) === F2 / 2, `gradient ${dy} for input ${x}`);
  const F = F2 / 2;
  const rows = x.size / F2;
  const dx = e.empty(x.shape, dy.dtype);
  const workgroups = grid(rows);
  const groupsX = workgroups[0];
  e.run({ kernel: 'geglu_back', bindings: { x, dy, dx }, params: { rows, F, groupsX }, workgroups });
  return dx;
}
