// Where a model step's GPU time goes, per kernel (src/engine/profiler.ts: one timed pass per dispatch):
//   node dist/bench/profile.js [unet|vae] [--model tiny|sd15] [--latent 32] [--steps 3] [--json FILE]
// One warm-up call (compiles the pipelines), then --steps calls timed together. Prints each kernel's
// and each kernel family's share of the summed GPU time (on lavapipe the CPU clock) and, per kernel,
// its variants (defines). The kernel path is the adapter's, or DR_KERNELS.
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Engine } from '../src/engine/engine.js';
import type { ProfileRow } from '../src/engine/profiler.js';
import { AutoencoderKL, readVaeConfig } from '../src/graph/sd/vae.js';
import { UNet2DConditionModel, readUNetConfig } from '../src/graph/sd/unet.js';
import { randomizeParams } from './random.js';
import { SD15_UNET_CONFIG, SD15_VAE_CONFIG, SD_TINY_DIR, viaConfigFile } from './sd.js';
import { rand } from './timing.js';

const args = process.argv.slice(2);
const opt = (name: string, fallback: string): string => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const part = args.includes('vae') ? 'vae' : 'unet';
const model = opt('--model', 'tiny');
const latent = Number(opt('--latent', model === 'tiny' ? '32' : '8'));
const steps = Number(opt('--steps', model === 'tiny' ? '3' : '1'));
const dtype = opt('--dtype', 'f32') as 'f32' | 'f16';

/** Kernel families of the report: matmul/conv/attention (with their operand copies) and the rest. */
const FAMILIES: [RegExp, string][] = [
  [/^(matmul|to_texture)/, 'matmul (+ operand textures)'],
  [/^conv2d/, 'conv'],
  [/^attention/, 'attention'],
  [/^group_norm/, 'group_norm'],
  [/^layer_norm/, 'layer_norm'],
  [/^binary$/, 'binary elementwise'],
  [/^unary/, 'unary elementwise'],
  [/^geglu/, 'geglu'],
  [/^(copy_strided|add_into|upsample_nearest2x)$/, 'copies (permute, concat, upsample)'],
  [/^softmax$/, 'softmax'],
];
const familyOf = (kernel: string): string => FAMILIES.find(([re]) => re.test(kernel))?.[1] ?? 'other';

async function main(): Promise<void> {
  const e = await Engine.create({ profile: true });
  const profiler = e.profiler!;
  let step: () => unknown;
  let what: string;
  if (part === 'unet') {
    let unet: UNet2DConditionModel;
    if (model === 'tiny') unet = UNet2DConditionModel.load(e, path.join(SD_TINY_DIR, 'unet'), dtype);
    else {
      unet = new UNet2DConditionModel(viaConfigFile(SD15_UNET_CONFIG, readUNetConfig));
      randomizeParams(e, unet, dtype);
    }
    const C = unet.config.inChannels;
    const Cc = unet.config.crossAttentionDim;
    const sample = e.keep(e.upload(rand(C * latent * latent, 11), [1, C, latent, latent], dtype));
    const context = e.keep(e.upload(rand(77 * Cc, 12), [1, 77, Cc], dtype));
    step = () => unet.forward(e, sample, 500, context);
    what = `${model} UNet step, ${latent}×${latent} latent`;
  } else {
    let vae: AutoencoderKL;
    if (model === 'tiny') vae = AutoencoderKL.load(e, path.join(SD_TINY_DIR, 'vae'), dtype);
    else {
      vae = new AutoencoderKL(viaConfigFile(SD15_VAE_CONFIG, readVaeConfig));
      const isDecoder = (n: string): boolean => n.startsWith('decoder.') || n.startsWith('post_quant_conv.') || n.startsWith('encoder.conv_in.');
      randomizeParams(e, vae, dtype, isDecoder);
    }
    const C = vae.config.latentChannels;
    const z = e.keep(e.upload(rand(C * latent * latent, 13), [1, C, latent, latent], dtype));
    step = () => vae.decode(e, z);
    what = `${model} VAE decode, ${latent}×${latent} latent`;
  }
  await e.read(e.tidy(() => e.keep(step() as never)));
  await profiler.settle();
  profiler.reset();
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  for (let i = 0; i < steps; i++) await e.read(e.tidy(() => e.keep(step() as never)));
  const wall = (performance.now() - t0) / steps;
  const used = process.cpuUsage(c0);
  // CPU-normalised: process CPU time (llvmpipe's threads included) ÷ cores, steady when other jobs take cores.
  const cpuNorm = (used.user + used.system) / 1e3 / os.cpus().length / steps;
  await profiler.settle();
  const { kernels, variants } = profiler.rows();
  const total = kernels.reduce((s, k) => s + k.ms, 0);
  const families = new Map<string, ProfileRow>();
  for (const k of kernels) {
    const f = familyOf(k.kernel);
    const row = families.get(f) ?? { kernel: f, calls: 0, ms: 0 };
    row.calls += k.calls;
    row.ms += k.ms;
    families.set(f, row);
  }
  const line = (r: ProfileRow): string =>
    `${r.kernel.padEnd(40)} ${(r.ms / steps).toFixed(1).padStart(9)} ms ${(100 * r.ms / total).toFixed(1).padStart(5)} % ${String(r.calls / steps).padStart(6)} calls`;
  console.log(`${what}, ${dtype}, kernel path ${e.kernels.path}: ${wall.toFixed(0)} ms wall, ${cpuNorm.toFixed(0)} ms CPU-normalised, ${(total / steps).toFixed(0)} ms GPU per call (${steps} calls; profiling adds a pass per dispatch)`);
  console.log('\nby family:');
  for (const r of [...families.values()].sort((a, b) => b.ms - a.ms)) console.log(line(r));
  console.log('\nby kernel:');
  for (const r of kernels) console.log(line(r));
  console.log('\nby kernel and defines (top 25):');
  for (const r of variants.slice(0, 25)) console.log(line(r));
  const json = opt('--json', '');
  if (json) writeFileSync(json, JSON.stringify({ what, dtype, path: e.kernels.path, steps, wallMs: wall, cpuNormMs: cpuNorm, families: [...families.values()], kernels, variants }, null, 2) + '\n');
}

main().then(() => process.exit(0), (err: unknown) => {
  console.error(err);
  process.exit(1);
});
