import { create, globals } from 'webgpu';
import { DrError } from '../errors.js';
import { filterDawnNotices } from './dawn_notices.js';

/** What `dr doctor` reports and what kernels may rely on. */
export interface GpuInfo {
  adapter: string;
  vendor: string;
  architecture: string;
  description: string;
  backend: string;
  software: boolean;
  features: string[];
  limits: Record<string, number>;
  /** The matrix shapes one subgroup multiplies (`chromium-experimental-subgroup-matrix`), if granted. */
  subgroupMatrixConfigs: SubgroupMatrixConfig[];
  /** Why a device with that feature could not be made (it was then made without). */
  subgroupMatrixError?: string;
}

/** GPUSubgroupMatrixConfig: left M×K times right K×N of `componentType` into a `resultComponentType` M×N. */
export interface SubgroupMatrixConfig {
  componentType: string;
  resultComponentType: string;
  M: number;
  N: number;
  K: number;
}

export interface Gpu {
  device: GPUDevice;
  info: GpuInfo;
  hasF16: boolean;
  hasSubgroups: boolean;
  hasTimestamps: boolean;
  hasSubgroupMatrix: boolean;
}

// Dawn frees its instance when the object returned by create() is collected, even
// while adapters and devices made from it are alive: that crashes the process.
// Holding it here, in the module that owns the device, keeps it alive.
let instance: GPU | undefined;
let acquired: Promise<Gpu> | undefined;

const SUBGROUP_MATRIX = 'chromium-experimental-subgroup-matrix';
const WANTED_FEATURES = ['shader-f16', 'subgroups', 'timestamp-query', SUBGROUP_MATRIX] as const;
const REPORTED_LIMITS = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
  'minStorageBufferOffsetAlignment',
  'minUniformBufferOffsetAlignment',
  'maxUniformBufferBindingSize',
] as const;

export const NO_ADAPTER_HELP =
  'no WebGPU adapter found. Install a GPU driver with Vulkan support, or Mesa\'s software Vulkan ' +
  'driver (lavapipe, Mesa >= 25): on Debian 12 add bookworm-backports and run ' +
  '`apt-get install -t bookworm-backports libvulkan1 mesa-vulkan-drivers` (README, "No GPU")';

// Dawn's default backend per platform (dawn.node does not report the one it chose).
const PLATFORM_BACKEND: Record<string, string> = { linux: 'vulkan', win32: 'd3d12', darwin: 'metal' };

// The backends Dawn knows (its own error for another name is thrown from inside requestAdapter).
const BACKENDS = ['vulkan', 'metal', 'd3d12', 'd3d11', 'opengl', 'opengles'];

/**
 * Dawn toggles: robustness (bounds clamping on every access) off unless DR_ROBUST=1;
 * allow_unsafe_apis unless DR_SUBGROUP_MATRIX=0, because Dawn lists its experimental features
 * (subgroup matrices, the one we request) only under it — it unlocks APIs, it removes no validation.
 */
function dawnFlags(): string[] {
  const flags: string[] = [];
  const toggles = [
    ...(process.env.DR_ROBUST !== '1' ? ['disable_robustness'] : []),
    ...(process.env.DR_SUBGROUP_MATRIX !== '0' ? ['allow_unsafe_apis'] : []),
  ];
  if (toggles.length) flags.push(`enable-dawn-features=${toggles.join(',')}`);
  const backend = process.env.DR_BACKEND;
  if (backend) {
    if (!BACKENDS.includes(backend)) throw new DrError(`DR_BACKEND=${backend}: not a Dawn backend (one of ${BACKENDS.join(', ')}; unset it for the platform's default)`);
    flags.push(`backend=${backend}`);
  }
  return flags;
}

/** The process-wide device, acquired once with the adapter's real limits. */
export function getGpu(): Promise<Gpu> {
  acquired ??= acquire();
  return acquired;
}

async function acquire(): Promise<Gpu> {
  process.env.XDG_RUNTIME_DIR ??= '/tmp';
  Object.assign(globalThis, globals);
  const chosen = await chosenAdapter();
  instance = create([...dawnFlags().filter((f) => !(chosen.backend && f.startsWith('backend='))), ...chosen.flags]);
  const gpu = instance;
  const adapter = await filterDawnNotices(() => gpu.requestAdapter({ powerPreference: 'high-performance' }));
  if (!adapter) throw new DrError(NO_ADAPTER_HELP);

  // Subgroup matrices need subgroups (Dawn's rule) and, for our f16 kernel, shader-f16.
  const matrixUsable = adapter.features.has('subgroups') && adapter.features.has('shader-f16');
  const features: string[] = WANTED_FEATURES.filter((f) => adapter.features.has(f) && (f !== SUBGROUP_MATRIX || matrixUsable));
  const requiredLimits: Record<string, number> = {};
  for (const key in adapter.limits) {
    const value = (adapter.limits as unknown as Record<string, unknown>)[key];
    if (typeof value === 'number') requiredLimits[key] = value;
  }
  let device: GPUDevice;
  let subgroupMatrixError: string | undefined;
  try {
    device = await adapter.requestDevice({ requiredFeatures: features as GPUFeatureName[], requiredLimits });
  } catch (err) {
    // An experimental feature must not cost the run: without it the tiled kernels do the work.
    if (!features.includes(SUBGROUP_MATRIX)) throw err;
    subgroupMatrixError = (err as Error).message;
    features.splice(features.indexOf(SUBGROUP_MATRIX), 1);
    const again = await filterDawnNotices(() => gpu.requestAdapter({ powerPreference: 'high-performance' }));
    device = await again!.requestDevice({ requiredFeatures: features as GPUFeatureName[], requiredLimits });
  }
  const ai = adapter.info;
  const limits: Record<string, number> = {};
  for (const key of REPORTED_LIMITS) limits[key] = (device.limits as unknown as Record<string, number>)[key];
  const info: GpuInfo = {
    adapter: ai.device || ai.description || 'unknown',
    vendor: ai.vendor,
    architecture: ai.architecture,
    description: ai.description,
    backend: chosen.backend ?? process.env.DR_BACKEND ?? PLATFORM_BACKEND[process.platform] ?? 'default',
    software: isSoftware(ai),
    features: [...adapter.features].sort(),
    limits,
    subgroupMatrixConfigs: features.includes(SUBGROUP_MATRIX) ? matrixConfigs(ai) : [],
    ...(subgroupMatrixError ? { subgroupMatrixError } : {}),
  };
  return {
    device,
    info,
    hasF16: features.includes('shader-f16'),
    hasSubgroups: features.includes('subgroups'),
    hasTimestamps: features.includes('timestamp-query'),
    hasSubgroupMatrix: features.includes(SUBGROUP_MATRIX),
  };
}

/** adapter.info.subgroupMatrixConfigs as plain objects (dawn.node's are wrappers JSON.stringify cannot see into). */
function matrixConfigs(ai: GPUAdapterInfo): SubgroupMatrixConfig[] {
  const configs = (ai as GPUAdapterInfo & { subgroupMatrixConfigs?: readonly SubgroupMatrixConfig[] }).subgroupMatrixConfigs ?? [];
  return configs.map(({ componentType, resultComponentType, M, N, K }) => ({ componentType, resultComponentType, M, N, K }));
}

/** An adapter Dawn can use, as its "Available adapters" list names it; `index` is what --adapter takes. */
export interface AdapterEntry {
  index: number;
  name: string;
  backend: string;
}

// Instances made to list and describe adapters, held for the same reason as `instance`.
const probes: GPU[] = [];

/**
 * Every adapter Dawn offers under the current DR_BACKEND, in its order. WebGPU has no call that
 * enumerates adapters, but dawn.node names them all when asked for one that does not exist.
 */
export async function listAdapters(): Promise<AdapterEntry[]> {
  process.env.XDG_RUNTIME_DIR ??= '/tmp';
  Object.assign(globalThis, globals);
  const probe = create([...dawnFlags(), 'adapter=\u0001 (no adapter has this name)']);
  probes.push(probe);
  let message = '';
  try {
    await filterDawnNotices(() => probe.requestAdapter());
  } catch (err) {
    message = (err as Error).message ?? '';
  }
  const entries: AdapterEntry[] = [];
  for (const m of message.matchAll(/^ \* backend: '([^']*)', name: '(.*)'$/gm)) entries.push({ index: entries.length, backend: m[1], name: m[2] });
  return entries;
}

/**
 * --adapter NAME|INDEX (the CLI puts it in DR_ADAPTER): the listed adapter at INDEX, or the first
 * whose name contains NAME, as Dawn toggles (`adapter=` matches by name, so `backend=` is pinned too).
 */
async function chosenAdapter(): Promise<{ flags: string[]; backend?: string }> {
  const spec = process.env.DR_ADAPTER;
  if (spec === undefined || spec === '') return { flags: [] };
  const all = await listAdapters();
  const known = all.map((a) => `${a.index} '${a.name}' (${a.backend})`).join(', ') || 'none';
  const a = /^\d+$/.test(spec) ? all[Number(spec)] : all.find((x) => x.name.includes(spec));
  if (!a) {
    const why = /^\d+$/.test(spec) ? 'no adapter with that index' : "no adapter's name contains it";
    throw new DrError(`--adapter "${spec}": ${why} (adapters: ${known}; see dr doctor --list)`);
  }
  const first = all.find((b) => b.backend === a.backend && b.name.includes(a.name))!;
  if (first !== a) throw new DrError(`--adapter ${spec}: adapters ${first.index} and ${a.index} share the name '${a.name}' and Dawn selects by name, so only ${first.index} can be chosen`);
  return { flags: withBackend(a), backend: a.backend };
}

/** Toggles that select exactly this listed adapter (DR_BACKEND's own backend= toggle is replaced). */
const withBackend = (a: AdapterEntry): string[] => [`backend=${a.backend}`, `adapter=${a.name}`];

/** What `dr doctor --list` shows of each adapter: asked for by name, one instance each. */
export async function describeAdapters(): Promise<(AdapterEntry & { description: string; vendor: string; software: boolean; features: string[] })[]> {
  const out = [];
  for (const a of await listAdapters()) {
    const probe = create([...dawnFlags().filter((f) => !f.startsWith('backend=')), ...withBackend(a)]);
    probes.push(probe);
    const adapter = await filterDawnNotices(() => probe.requestAdapter()).catch(() => null);
    const ai = adapter?.info;
    out.push({
      ...a,
      description: ai?.description ?? '',
      vendor: ai?.vendor ?? '',
      software: !!ai && isSoftware(ai),
      features: adapter ? [...adapter.features].sort() : [],
    });
  }
  return out;
}

const isSoftware = (ai: GPUAdapterInfo): boolean => /llvmpipe|lavapipe|swiftshader|software/i.test(`${ai.architecture} ${ai.device} ${ai.description}`);
