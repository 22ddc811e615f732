import type { Engine } from '../engine.js';
import { grid } from '../engine.js';
import type { KernelPath } from '../kernels.js';
import type { Tensor } from '../tensor.js';

export const MAX_DIMS = 8;

/** Activation codes shared with activations.wgsl (sqrt/rsqrt: elementwise maths on the same path). */
export const ACT = { none: 0, gelu: 1, quick_gelu: 2, silu: 3, sigmoid: 4, leaky_relu: 5, relu: 6, sqrt: 7, rsqrt: 8, softplus: 9 } as const;
export type Activation = keyof typeof ACT;

/** The activations a model config (hidden_act, act_fn) may name. */
const CONFIG_ACTIVATIONS: readonly Activation[] = ['gelu', 'quick_gelu', 'silu', 'sigmoid', 'relu'];

export function activationFromConfig(name: string, where: string): Activation {
  if ((CONFIG_ACTIVATIONS as readonly string[]).includes(name)) return name as Activation;
  throw new Error(`${where}: unsupported activation "${name}" (supported: ${CONFIG_ACTIVATIONS.join(', ')})`);
}

export function assertShape(op: string, cond: boolean, message: string): void {
  if (!cond) throw new Error(`${op}: ${message}`);
}

/** Row-major strides of a shape. */
export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** Left-pads shape (with 1) and strides (with 0) to the kernels' 8 dimensions. */
export function pad8(shape: readonly number[], strides: readonly number[]): { shape: number[]; strides: number[] } {
  if (shape.length > MAX_DIMS) throw new Error(`tensors of rank ${shape.length} > ${MAX_DIMS} are not supported`);
  const k = MAX_DIMS - shape.length;
  return { shape: [...Array(k).fill(1), ...shape], strides: [...Array(k).fill(0), ...strides] };
}

/**
 * Drops size-1 axes and merges each axis into the one before it where every stride set walks the
 * pair as one axis (outer stride = inner stride · inner size; broadcast axes of stride 0 merge
 * too), so the index kernels divide once per remaining axis: a same-shape add has one axis.
 */
export function collapseAxes(shape: readonly number[], strides: readonly (readonly number[])[]): { shape: number[]; strides: number[][] } {
  const out: number[] = [];
  const outStrides: number[][] = strides.map(() => []);
  shape.forEach((size, i) => {
    if (size === 1) return;
    const last = out.length - 1;
    if (last >= 0 && strides.every((s, k) => outStrides[k][last] === s[i] * size)) {
      out[last] *= size;
      strides.forEach((s, k) => (outStrides[k][last] = s[i]));
    } else {
      out.push(size);
      strides.forEach((s, k) => outStrides[k].push(s[i]));
    }
  });
  if (!out.length) return { shape: [1], strides: strides.map(() => [0]) };
  return { shape: out, strides: outStrides };
}

/**
 * The RANK define of the index kernels (binary, copy_strided) for `rank` collapsed axes: a define, as
 * the index loop then unrolls to just its divisions (a uniform rank ran those kernels 1.6–3.8× slower
 * on lavapipe). Ranks 1 and 2 share a pipeline (same-shape ops, biases over [N, C, H·W], transposes,
 * channel concats), one pipeline fewer on a first run: the spare division of a same-shape add measured
 * 1.9 against 1.3–1.9 ms CPU-normalised for 327K values, within the noise of a loaded machine.
 */
export const indexRank = (rank: number): number => Math.max(2, rank);

/**
 * Params for elementwise kernels: one thread per element in 256-wide workgroups, or `perGroup`
 * elements a workgroup for those that loop (LOOP_ELEMENTS).
 */
export function elementwiseGrid(n: number, perGroup = 256): { workgroups: [number, number]; groupsX: number } {
  const workgroups = grid(Math.ceil(n / perGroup));
  return { workgroups, groupsX: workgroups[0] };
}

/**
 * Elements per workgroup of the looping elementwise kernels (64 threads × 32 elements, at stride 64
 * so that a GPU's loads stay coalesced). lavapipe pays about 20 integer divisions per 8-lane chunk
 * just to start invocations: with one element each, y = 2x took 7–18 ns an element, with 32–64 in
 * a loop 1–2 ns (docs/benchmarks.md, "Elementwise and norm kernels").
 */
export const LOOP_ELEMENTS = 64 * 32;

/**
 * Workgroup size for row reductions. GPUs: rows this short waste most of a 256 group. The CPU path
 * (kernels.ts): 8, one SIMD chunk, so each lane loops over many values and the reduction tree is
 * 3 steps (a 64–256 group of one row or group was 2–8× slower on lavapipe).
 */
export function rowWorkgroup(D: number, path: KernelPath): number {
  if (path === 'cpu') return 8;
  return D >= 1024 ? 256 : D >= 256 ? 128 : 64;
}

/**
 * Shared dispatch of the one-workgroup-per-row kernels (layer_norm, softmax,
 * l2_normalize): their params are rows, D, groupsX and one float (eps or scale).
 */
export function runRows(
  e: Engine,
  kernel: string,
  bindings: Record<string, Tensor>,
  rows: number,
  D: number,
  value: { eps: number } | { scale: number },
): void {
  const workgroups = grid(rows);
  e.run({ kernel, bindings, params: { rows, D, ...value, groupsX: workgroups[0] }, defines: { WG: rowWorkgroup(D, e.kernels.path) }, workgroups });
}
