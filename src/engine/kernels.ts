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
// On path 'gpu', f16 matmuls use the GPU's matrix units (tensor cores) through Dawn's subgroup
// matrices when the adapter has an f16 × f16 → f32 square configuration (matrixChoice below).
import { DrError } from '../errors.js';
import type { Gpu, SubgroupMatrixConfig } from './device.js';
import type { DType } from './tensor.js';

export type KernelPath = 'cpu' | 'gpu';

export interface KernelChoice {
  path: KernelPath;
  /** Why, for `dr doctor`. */
  reason: string;
  /** f16 matmuls on subgroup matrices (path 'gpu'). */
  matrix: MatrixChoice;
}

/** The subgroup-matrix kernel's SM × SM × SM shape (matmul_subgroup_matrix.wgsl), 0 when not used. */
export interface MatrixChoice {
  tile: 0 | 8 | 16;
  /** Workgroup size: 4 subgroups of the adapter's largest size (0 when not used). */
  workgroup: number;
  reason: string;
}

/** What the choice reads from the adapter (a Gpu provides it; tests pass their own). */
export interface AdapterTraits {
  software: boolean;
  hasSubgroups: boolean;
  subgroupMinSize: number;
  subgroupMaxSize?: number;
  /** Granted subgroup-matrix configurations (empty without the feature). */
  subgroupMatrixConfigs?: readonly SubgroupMatrixConfig[];
  maxWorkgroupInvocations?: number;
}

export function adapterTraits(gpu: Gpu): AdapterTraits {
  const info = gpu.device.adapterInfo as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number };
  return {
    software: gpu.info.software,
    hasSubgroups: gpu.hasSubgroups,
    subgroupMinSize: info.subgroupMinSize ?? 0,
    subgroupMaxSize: info.subgroupMaxSize ?? 0,
    subgroupMatrixConfigs: gpu.info.subgroupMatrixConfigs,
    maxWorkgroupInvocations: gpu.device.limits.maxComputeInvocationsPerWorkgroup,
  };
}

/**
 * Whether f16 matmuls can run on subgroup matrices: an f16 × f16 → f32 configuration with
 * M = N = K of 16 (preferred) or 8. Configurations that accumulate in f16 are not used: a sum
 * over K = 5120 terms (SD's GEGLU projection) in f16 keeps about 3 significant digits.
 */
export function matrixChoice(t: AdapterTraits): MatrixChoice {
  const none = (reason: string): MatrixChoice => ({ tile: 0, workgroup: 0, reason });
  const configs = t.subgroupMatrixConfigs ?? [];
  if (!configs.length) return none('no subgroup matrices on this adapter (chromium-experimental-subgroup-matrix)');
  const list = configs.map((c) => `${c.componentType}→${c.resultComponentType} ${c.M}×${c.N}×${c.K}`).join(', ');
  const square = (size: number) => configs.some((c) => c.componentType === 'f16' && c.resultComponentType === 'f32' && c.M === size && c.N === size && c.K === size);
  const tile = square(16) ? 16 : square(8) ? 8 : 0;
  if (!tile) return none(`no f16→f32 16×16×16 or 8×8×8 subgroup matrix among ${list}`);
  const workgroup = 4 * (t.subgroupMaxSize ?? 0);
  if (!workgroup || workgroup > (t.maxWorkgroupInvocations ?? 256)) return none(`4 subgroups of ${t.subgroupMaxSize ?? '?'} lanes do not fit one workgroup`);
  return { tile, workgroup, reason: `f16 matmuls on ${tile}×${tile}×${tile} f16→f32 subgroup matrices (of ${list})` };
}

/**
 * The subgroup-matrix kernel for this product: f16 operands, path 'gpu', and every dimension at
 * least one matrix tile (smaller products gain nothing from a 64×64 workgroup tile of them).
 */
export function useSubgroupMatrix(k: KernelChoice, s: { M: number; N: number; K: number; a: DType; b: DType }): boolean {
  const { tile } = k.matrix;
  return k.path === 'gpu' && tile > 0 && s.a === 'f16' && s.b === 'f16' && s.M >= tile && s.N >= tile && s.K >= tile;
}

/** `override` is DR_KERNELS (the engine passes it; tests pass their own, undefined meaning unset). */
export function chooseKernels(t: AdapterTraits, override: string | undefined): KernelChoice {
  const matrix = matrixChoice(t);
  const cpuCapable = t.hasSubgroups && t.subgroupMinSize >= 8;
  const lanes = t.hasSubgroups ? `subgroups of ${t.subgroupMinSize}+ lanes` : 'no subgroups';
  if (override !== undefined && override !== '') {
    if (override === 'gpu') return { path: 'gpu', reason: 'DR_KERNELS=gpu', matrix };
    if (override !== 'cpu') throw new DrError(`DR_KERNELS=${override}: expected cpu or gpu (unset it to choose by adapter)`);
    if (!cpuCapable) throw new DrError(`DR_KERNELS=cpu: the CPU-adapter kernels need subgroups of at least 8 lanes; this adapter has ${lanes}`);
    return { path: 'cpu', reason: 'DR_KERNELS=cpu', matrix };
  }
  if (t.software && cpuCapable) return { path: 'cpu', reason: `software adapter with ${lanes}: texture operands, one lane per output row`, matrix };
  if (t.software) return { path: 'gpu', reason: `software adapter, but ${lanes} (the CPU-adapter kernels need 8+)`, matrix };
  return { path: 'gpu', reason: 'hardware adapter: tiled workgroup-memory kernels', matrix };
}

/**
 * `--precision auto`: f16 where a hardware GPU computes it natively; f32 on the CPU path, where
 * f16 is emulated through conversions and an f16 run took 1.6–2× the f32 one (issue 12, 6b).
 */
export function autoPrecision(path: KernelPath, hasF16: boolean, software: boolean): 'f16' | 'f32' {
  return path === 'gpu' && hasF16 && !software ? 'f16' : 'f32';
}
