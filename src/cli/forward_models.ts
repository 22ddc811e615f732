// What `dr forward` runs for each kind of model folder: which input tensors it
// reads and which named outputs it writes (the names of the reference fixtures).
import path from 'node:path';
import { DrError } from '../errors.js';
import type { Engine } from '../engine/engine.js';
import type { Tensor } from '../engine/tensor.js';
import { l2Normalize } from '../engine/ops/norms.js';
import { ControlNetModel } from '../graph/sd/controlnet.js';
import { UNet2DConditionModel } from '../graph/sd/unet.js';
import { AutoencoderKL } from '../graph/sd/vae.js';
import { UniPCScheduler, readUniPCConfig, uniPCConfigFrom } from '../graph/sd/unipc.js';
import type { Precision } from '../graph/module.js';
import type { SafetensorsFile, TensorToWrite } from '../weights/safetensors.js';
import { loadClip } from './models.js';

/** Collects outputs: GPU tensors are read back once, at the end. */
export class Outputs {
  private readonly gpu: { name: string; t: Tensor }[] = [];
  private readonly host: TensorToWrite[] = [];

  add(name: string, t: Tensor): void {
    this.gpu.push({ name, t });
  }

  addHost(name: string, shape: number[], data: Float32Array | Uint8Array): void {
    this.host.push({ name, dtype: data instanceof Uint8Array ? 'U8' : 'F32', shape, data });
  }

  async collect(e: Engine): Promise<TensorToWrite[]> {
    const out: TensorToWrite[] = [];
    for (const { name, t } of this.gpu) out.push({ name, dtype: 'F32', shape: [...t.shape], data: await e.read(t) });
    return [...out, ...this.host];
  }
}

export interface ForwardRun {
  e: Engine;
  dir: string;
  inputs: SafetensorsFile;
  precision: Precision;
  out: Outputs;
  /** Records module outputs as `intermediate.<model>.<path>`. */
  trace: boolean;
  /** Wall time of each stage, for --stats. */
  timings: Record<string, number>;
}

/** Runs `fn`, waits for the GPU, and records the seconds under `label`. */
export async function timed<T>(run: ForwardRun, label: string, fn: () => T): Promise<T> {
  const t0 = performance.now();
  const result = fn();
  await run.e.sync();
  run.timings[label] = (run.timings[label] ?? 0) + (performance.now() - t0) / 1000;
  return result;
}

function input(run: ForwardRun, name: string, dtype?: Tensor['dtype']): Tensor {
  return run.e.upload(run.inputs.readF32(name), run.inputs.info(name).shape, dtype);
}

function need(run: ForwardRun, ...names: string[]): void {
  for (const n of names) if (!run.inputs.tensors.has(n)) throw new DrError(`${run.inputs.path}: missing input tensor "${n}"`);
}

function traceAs(run: ForwardRun, model: string): void {
  if (run.trace) run.e.tracer = (name, t) => run.out.add(`intermediate.${model}.${name}`, t);
}

/** Prefixes of the cases in an io file: '' and 'case1.', 'case2.', … for each `<prefix>sample`. */
function cases(run: ForwardRun, key: string): string[] {
  return [...run.inputs.tensors.keys()].filter((n) => n === key || /^case\d+\./.test(n) && n.endsWith(`.${key}`)).map((n) => n.slice(0, n.length - key.length));
}

export async function forwardClip(run: ForwardRun): Promise<void> {
  const { e, inputs, out } = run;
  const model = await timed(run, 'load', () => loadClip(e, run.dir, run.precision));
  let image: Tensor | undefined;
  let text: Tensor | undefined;
  if (inputs.tensors.has('pixel_values')) {
    const v = await timed(run, 'vision', () => model.encodeImage(e, input(run, 'pixel_values'), true));
    v.hiddenStates.forEach((h, i) => out.add(`vision_hidden_states.${i}`, h));
    out.add('vision_last_hidden_state', v.lastHiddenState);
    out.add('vision_pooler_output', v.pooled);
    out.add('image_embeds', (image = v.embeds));
    out.add('image_embeds_normalized', l2Normalize(e, image));
  }
  if (inputs.tensors.has('input_ids')) {
    const shape = inputs.info('input_ids').shape;
    if (shape.length !== 2) throw new DrError(`${inputs.path}: input_ids must be [P, L], got [${shape}]`);
    const t = await timed(run, 'text', () => model.encodeText(e, inputs.readInt32('input_ids'), shape[1], true));
    t.hiddenStates.forEach((h, i) => out.add(`text_hidden_states.${i}`, h));
    out.add('text_last_hidden_state', t.lastHiddenState);
    out.add('text_pooler_output', t.pooled);
    out.add('text_embeds', (text = t.embeds));
    out.add('text_embeds_normalized', l2Normalize(e, text));
  }
  if (!image && !text) throw new DrError(`${inputs.path}: no pixel_values or input_ids tensor`);
  if (image && text) {
    out.add('logits_per_image', model.logits(e, model.cosine(e, image, text)));
    out.add('logits_per_text', model.logits(e, model.cosine(e, text, image)));
    out.addHost('logit_scale', [1], model.logit_scale.hostValue);
  }
}

export async function forwardUNet(run: ForwardRun): Promise<void> {
  const { e, inputs, out } = run;
  const unet = await timed(run, 'load', () => UNet2DConditionModel.load(e, run.dir, run.precision));
  const dt = unet.dtype;
  const prefixes = cases(run, 'sample');
  if (!prefixes.length) need(run, 'sample');
  for (const p of prefixes) {
    need(run, `${p}timestep`, `${p}encoder_hidden_states`);
    const residuals = inputs.tensors.has(`${p}mid_block_additional_residual`)
      ? {
          down: [...inputs.tensors.keys()].filter((n) => n.startsWith(`${p}down_block_additional_residuals.`))
            .sort((a, b) => Number(a.split('.').at(-1)) - Number(b.split('.').at(-1))).map((n) => input(run, n, dt)),
          mid: input(run, `${p}mid_block_additional_residual`, dt),
        }
      : undefined;
    if (p === '') traceAs(run, 'unet');
    const y = await timed(run, 'unet', () =>
      unet.forward(e, input(run, `${p}sample`, dt), inputs.readF32(`${p}timestep`)[0], input(run, `${p}encoder_hidden_states`, dt), residuals));
    e.tracer = undefined;
    out.add(`${p}output`, y);
  }
}

export async function forwardControlNet(run: ForwardRun): Promise<void> {
  const { e, inputs, out } = run;
  need(run, 'sample', 'timestep', 'encoder_hidden_states', 'controlnet_cond');
  const model = await timed(run, 'load', () => ControlNetModel.load(e, run.dir, run.precision));
  const dt = model.dtype;
  // One run per `scaleK.conditioning_scale` input (or `conditioning_scale`, default 1).
  const scales = [...inputs.tensors.keys()].filter((n) => n.endsWith('conditioning_scale'));
  const keys = scales.length ? scales : ['conditioning_scale'];
  for (const key of keys) {
    const p = key.slice(0, key.length - 'conditioning_scale'.length);
    const s = inputs.tensors.has(key) ? inputs.readF32(key)[0] : 1;
    if (key === keys[0]) traceAs(run, 'controlnet');
    const r = await timed(run, 'controlnet', () => model.forward(e, input(run, 'sample', dt), inputs.readF32('timestep')[0],
      input(run, 'encoder_hidden_states', dt), model.embedHint(e, input(run, 'controlnet_cond', dt)), s));
    e.tracer = undefined;
    r.down.forEach((t, i) => out.add(`${p}down_block_res_samples.${i}`, t));
    out.add(`${p}mid_block_res_sample`, r.mid);
  }
}

export async function forwardVae(run: ForwardRun): Promise<void> {
  const { e, inputs, out } = run;
  const vae = await timed(run, 'load', () => AutoencoderKL.load(e, run.dir, run.precision));
  const dt = vae.dtype;
  if (!inputs.tensors.has('image') && !inputs.tensors.has('decode_input_latent_scaled')) {
    throw new DrError(`${inputs.path}: no "image" (to encode) or "decode_input_latent_scaled" (to decode) tensor`);
  }
  traceAs(run, 'vae');
  if (inputs.tensors.has('image')) {
    const { moments } = await timed(run, 'vae encode', () => vae.encodeMoments(e, input(run, 'image', dt)));
    out.add('moments', moments);
    out.add('latent_mode_scaled', vae.latent(e, moments));
    if (inputs.tensors.has('sample_noise')) out.add('latent_sample_scaled', vae.latent(e, moments, input(run, 'sample_noise', dt)));
    // The posterior's parts, derived on the host from the moments (debug output only).
    const m = await e.read(moments);
    const [B, C2, h, w] = moments.shape;
    const half = (C2 / 2) * h * w;
    const pick = (second: boolean, f: (v: number) => number): Float32Array => {
      const o = new Float32Array(B * half);
      for (let b = 0; b < B; b++) for (let i = 0; i < half; i++) o[b * half + i] = f(m[b * 2 * half + (second ? half : 0) + i]);
      return o;
    };
    const clampLogvar = (v: number): number => Math.min(20, Math.max(-30, v));
    const shape = [B, C2 / 2, h, w];
    out.addHost('posterior_mean', shape, pick(false, (v) => v));
    out.addHost('posterior_logvar', shape, pick(true, clampLogvar));
    out.addHost('posterior_std', shape, pick(true, (v) => Math.exp(0.5 * clampLogvar(v))));
  }
  if (inputs.tensors.has('decode_input_latent_scaled')) {
    const image = await timed(run, 'vae decode', () => vae.decode(e, input(run, 'decode_input_latent_scaled', dt)));
    out.add('decoded', image);
    const [B, C, H, W] = image.shape;
    if (B === 1) {
      // As diffusers' pipelines output it: round(clamp(x / 2 + 0.5, 0, 1) · 255), HWC.
      const x = await e.read(image);
      const u8 = new Uint8Array(H * W * C);
      for (let c = 0; c < C; c++) for (let i = 0; i < H * W; i++) u8[i * C + c] = Math.round(Math.min(1, Math.max(0, x[c * H * W + i] / 2 + 0.5)) * 255);
      out.addHost('decoded_uint8_hwc', [H, W, C], u8);
    }
  }
  e.tracer = undefined;
}

/**
 * Replays a scheduler trajectory: the recorded model outputs are fed in order and
 * every intermediate latent written (the model is never run).
 */
export async function forwardScheduler(run: ForwardRun): Promise<void> {
  const { e, inputs, out } = run;
  need(run, 'initial_latent');
  const meta = inputs.metadata;
  const cfg = meta.scheduler_config
    ? uniPCConfigFrom(JSON.parse(meta.scheduler_config), `${inputs.path} (metadata scheduler_config)`)
    : readUniPCConfig(path.join(run.dir, 'scheduler_config.json'));
  const steps = Number(meta.num_inference_steps ?? [...inputs.tensors.keys()].filter((n) => n.startsWith('model_output.')).length);
  if (!Number.isInteger(steps) || steps < 1) throw new DrError(`${inputs.path}: no model_output.i tensors and no num_inference_steps metadata`);
  const scheduler = new UniPCScheduler(cfg);
  scheduler.setTimesteps(steps);
  out.addHost('sigmas', [scheduler.sigmas.length], Float32Array.from(scheduler.sigmas));
  let latent = input(run, 'initial_latent');
  await timed(run, 'scheduler', () => {
    for (let i = 0; i < steps; i++) {
      need(run, `model_output.${i}`);
      latent = scheduler.step(e, input(run, `model_output.${i}`), scheduler.timesteps[i], latent);
      out.add(`latent.${i}`, latent);
    }
  });
  out.addHost('timesteps', [steps], Float32Array.from(scheduler.timesteps));
}
