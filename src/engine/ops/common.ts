import type { Engine } from '../engine.js';
import { grid } from '../engine.js';
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

/** Params for kernels with one thread per element in 256-wide workgroups. */
export function elementwiseGrid(n: number): { workgroups: [number, number]; groupsX: number } {
  const workgroups = grid(Math.ceil(n / 256));
  return { workgroups, groupsX: workgroups[0] };
}

/** Workgroup size for row reductions: rows this short waste most of a 256 group. */
export function rowWorkgroup(D: number): number {
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
  e.run({ kernel, bindings, params: { rows, D, ...value, groupsX: workgroups[0] }, defines: { WG: rowWorkgroup(D) }, workgroups });
}
