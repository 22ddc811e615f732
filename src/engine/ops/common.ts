import type { Engine, Param } from '../engine.js';
import { grid } from '../engine.js';
import type { Tensor } from '../tensor.js';

export const MAX_DIMS = 8;

/** Activation codes shared with activations.wgsl. */
export const ACT = { none: 0, gelu: 1, quick_gelu: 2, silu: 3, sigmoid: 4, leaky_relu: 5 } as const;
export type Activation = keyof typeof ACT;

export function activationFromConfig(name: string, where: string): Activation {
  if (name in ACT && name !== 'none') return name as Activation;
  throw new Error(`${where}: unsupported activation "${name}" (supported: gelu, quick_gelu, silu, sigmoid)`);
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
 * l2_normalize): their params start with rows, D, a float, groupsX.
 */
export function runRows(
  e: Engine,
  kernel: string,
  bindings: Record<string, Tensor>,
  rows: number,
  D: number,
  value: number,
): void {
  const workgroups = grid(rows);
  const params: Param[] = [rows, D, { f32: value }, workgroups[0]];
  e.run({ kernel, bindings, params, defines: { WG: rowWorkgroup(D) }, workgroups });
}
