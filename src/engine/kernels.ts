// Which kernels run on this adapter, decided in one place.
//
// 'gpu': the tiled kernels (workgroup-memory tiles, barriers) that real GPUs want.
// 'cpu': kernels for a CPU-backed adapter (Mesa's llvmpipe/lavapipe). There every storage-buffer or
//   workgroup-memory load inside a loop becomes 8 per-lane scalar loads with bounds checks, while a
//   textureLoad of an rgba32float texel is a branch-free 8-texel fetch and subgroupBroadcast is one
//   register permute (../shared/design/lavapipe-kernels.md): operands are read from textures, one
//   lane per output row. That needs subgroups of at least 8 lanes (one 8-invocation workgroup must
//   be one subgroup, or part of one).
// DR_KERNELS=cpu|gpu overrides the choice, so both paths can run the tests on one adapter.
import { DrError } from '../errors.js';
import type { Gpu } from './device.js';

export type KernelPath = 'cpu' | 'gpu';

export interface KernelChoice {
  path: KernelPath;
  /** Why, for `dr doctor`. */
  reason: string;
}

/** What the choice reads from the adapter (a Gpu provides it; tests pass their own). */
export interface AdapterTraits {
  software: boolean;
  hasSubgroups: boolean;
  subgroupMinSize: number;
}

export function adapterTraits(gpu: Gpu): AdapterTraits {
  const info = gpu.device.adapterInfo as GPUAdapterInfo & { subgroupMinSize?: number };
  return { software: gpu.info.software, hasSubgroups: gpu.hasSubgroups, subgroupMinSize: info.subgroupMinSize ?? 0 };
}

export function chooseKernels(t: AdapterTraits, override = process.env.DR_KERNELS): KernelChoice {
  const cpuCapable = t.hasSubgroups && t.subgroupMinSize >= 8;
  const lanes = t.hasSubgroups ? `subgroups of ${t.subgroupMinSize}+ lanes` : 'no subgroups';
  if (override !== undefined && override !== '') {
    if (override === 'gpu') return { path: 'gpu', reason: 'DR_KERNELS=gpu' };
    if (override !== 'cpu') throw new DrError(`DR_KERNELS=${override}: expected cpu or gpu (unset it to choose by adapter)`);
    if (!cpuCapable) throw new DrError(`DR_KERNELS=cpu: the CPU-adapter kernels need subgroups of at least 8 lanes; this adapter has ${lanes}`);
    return { path: 'cpu', reason: 'DR_KERNELS=cpu' };
  }
  if (t.software && cpuCapable) return { path: 'cpu', reason: `software adapter with ${lanes}: texture operands, one lane per output row` };
  if (t.software) return { path: 'gpu', reason: `software adapter, but ${lanes} (the CPU-adapter kernels need 8+)` };
  return { path: 'gpu', reason: 'hardware adapter: tiled workgroup-memory kernels' };
}

/**
 * `--precision auto`: f16 where a hardware GPU computes it natively; f32 on the CPU path, where
 * f16 is emulated through conversions and an f16 run took 1.6–2× the f32 one (issue 12, 6b).
 */
export function autoPrecision(path: KernelPath, hasF16: boolean, software: boolean): 'f16' | 'f32' {
  return path === 'gpu' && hasF16 && !software ? 'f16' : 'f32';
}
