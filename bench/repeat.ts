// Repeated evaluations of one model in one process (issue 12, 6a/6c): each eval's wall time and
// what the engine holds after it (weight bytes, pooled activation buffers, pooled activation
// textures, RSS), so growth from one eval to the next shows.
//
//   node dist/bench/repeat.js [--model sd15|tiny] [--latent 8] [--evals 3] [--dtype f32]
import os from 'node:os';
import path from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { Engine } from '../src/engine/engine.js';
import type { DType } from '../src/engine/tensor.js';
import { UNet2DConditionModel, readUNetConfig } from '../src/graph/sd/unet.js';
import { randomizeParams } from './random.js';
import { SD15_UNET_CONFIG, SD_TINY_DIR, viaConfigFile } from './sd.js';
import { fmt, hostMemory, MiB, progress, rand } from './timing.js';

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

const model = option('model', 'sd15');
const h = Number(option('latent', '8'));
const evals = Number(option('evals', '3'));
const dtype = option('dtype', 'f32') as DType;

let gcMs = 0;
new PerformanceObserver((list) => { for (const entry of list.getEntries()) gcMs += entry.duration; }).observe({ entryTypes: ['gc'] });

const e = await Engine.create();
const t0 = performance.now();
let unet: UNet2DConditionModel;
if (model === 'tiny') unet = UNet2DConditionModel.load(e, path.join(SD_TINY_DIR, 'unet'), dtype === 'f16' ? 'f16' : 'f32');
else {
  unet = new UNet2DConditionModel(viaConfigFile(SD15_UNET_CONFIG, readUNetConfig));
  randomizeParams(e, unet, dtype);
}
const mem = (): string => {
  const s = e.pool.stats;
  const { rssMiB, maxRssMiB } = hostMemory();
  return `weights ${fmt(s.weightBytes / MiB, 0)} MiB, act. buffers ${fmt(s.activationBytes / MiB, 0)} MiB, ` +
    `act. textures ${fmt(e.texturePool.bytes / MiB, 0)} MiB, RSS ${fmt(rssMiB, 0)} MiB (max ${fmt(maxRssMiB, 0)})`;
};
progress(`${model} UNet ${dtype}, latent ${h}², kernels ${e.kernels.path}: loaded in ${fmt((performance.now() - t0) / 1e3, 1)} s; ${mem()}`);
const C = unet.config.inChannels;
const sample = e.keep(e.upload(rand(C * h * h, 11), [1, C, h, h]));
const context = e.keep(e.upload(rand(77 * unet.config.crossAttentionDim, 12), [1, 77, unet.config.crossAttentionDim]));
for (let i = 0; i < evals; i++) {
  const start = performance.now();
  const cpu0 = process.cpuUsage();
  const faults0 = process.resourceUsage().minorPageFault;
  const gc0 = gcMs;
  const out = e.keep(e.tidy(() => unet.forward(e, sample, 500, context)));
  await e.read(out);
  e.release(out);
  const cpu = process.cpuUsage(cpu0);
  const faults = process.resourceUsage().minorPageFault - faults0;
  progress(`eval ${i + 1}: ${fmt(performance.now() - start, 0)} ms (process CPU ${fmt(cpu.user / 1e3, 0)} user + ${fmt(cpu.system / 1e3, 0)} system ms, ` +
    `${faults} page faults, GC ${fmt(gcMs - gc0, 0)} ms, load ${fmt(os.loadavg()[0], 1)}); ${mem()}`);
}
