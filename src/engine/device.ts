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
}

export interface Gpu {
  device: GPUDevice;
  info: GpuInfo;
  hasF16: boolean;
  hasSubgroups: boolean;
  hasTimestamps: boolean;
}

// Dawn frees its instance when the object returned by create() is collected, even
// while adapters and devices made from it are alive: that crashes the process.
// Holding it here, in the module that owns the device, keeps it alive.
let instance: GPU | undefined;
let acquired: Promise<Gpu> | undefined;

const WANTED_FEATURES = ['shader-f16', 'subgroups', 'timestamp-query'] as const;
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

/** Dawn toggles: robustness (bounds clamping on every access) off unless DR_ROBUST=1. */
function dawnFlags(): string[] {
  const flags: string[] = [];
  if (process.env.DR_ROBUST !== '1') flags.push('enable-dawn-features=disable_robustness');
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
  instance = create(dawnFlags());
  const gpu = instance;
  const adapter = await filterDawnNotices(() => gpu.requestAdapter({ powerPreference: 'high-performance' }));
  if (!adapter) throw new DrError(NO_ADAPTER_HELP);

  const features = WANTED_FEATURES.filter((f) => adapter.features.has(f));
  const requiredLimits: Record<string, number> = {};
  for (const key in adapter.limits) {
    const value = (adapter.limits as unknown as Record<string, unknown>)[key];
    if (typeof value === 'number') requiredLimits[key] = value;
  }
  const device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits });
  const ai = adapter.info;
  const limits: Record<string, number> = {};
  for (const key of REPORTED_LIMITS) limits[key] = (device.limits as unknown as Record<string, number>)[key];
  const info: GpuInfo = {
    adapter: ai.device || ai.description || 'unknown',
    vendor: ai.vendor,
    architecture: ai.architecture,
    description: ai.description,
    backend: process.env.DR_BACKEND ?? PLATFORM_BACKEND[process.platform] ?? 'default',
    software: /llvmpipe|lavapipe|swiftshader|software/i.test(`${ai.architecture} ${ai.device} ${ai.description}`),
    features: [...adapter.features].sort(),
    limits,
  };
  return {
    device,
    info,
    hasF16: features.includes('shader-f16'),
    hasSubgroups: features.includes('subgroups'),
    hasTimestamps: features.includes('timestamp-query'),
  };
}
