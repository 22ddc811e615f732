/**
 * Single-file Stable Diffusion 1.x checkpoints in the original CompVis/ldm layout
 * (`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.transformer.*`;
 * .safetensors or .ckpt, as A1111 and ComfyUI users have them), seen as the three
 * diffusers components our loaders read. Keys are renamed by rules built from the
 * component configs (the block structure decides the ldm numbering); bytes are
 * never copied or changed, only the VAE attention 1x1 convolutions are read as the
 * linear weights they are. The file has no configs: they come from a diffusers
 * folder, by default SD 1.5's own shipped in ./sd15/.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DrError } from '../../errors.js';
import { Checkpoint, openTensorFile, type TensorEntry, type TensorSource } from '../../weights/checkpoint.js';
import { ClipTextModel, textConfig } from '../clip/model.js';
import { ConfigFile } from '../config.js';
import type { Module } from '../module.js';
import { UNet2DConditionModel, readUNetConfig, type UNetConfig } from './unet.js';
import { AutoencoderKL, readVaeConfig, type VaeConfig } from './vae.js';

export const SD15_CONFIG_DIR = fileURLToPath(new URL('./sd15/', import.meta.url));

export type SdComponent = 'unet' | 'vae' | 'text_encoder';
export const SD_COMPONENTS: readonly SdComponent[] = ['unet', 'vae', 'text_encoder'];

const PREFIX: Record<SdComponent, string> = {
  unet: 'model.diffusion_model.',
  vae: 'first_stage_model.',
  text_encoder: 'cond_stage_model.transformer.',
};

export interface KeyMapping {
  original: string;
  component: SdComponent;
  diffusers: string;
  /** The diffusers shape when it differs from the stored one (VAE attention: [C, C, 1, 1] → [C, C]). */
  shape?: number[];
}

/** True when the keys are those of an original-layout SD checkpoint. */
export function isOriginalSd(keys: Iterable<string>): boolean {
  for (const k of keys) if (k.startsWith(PREFIX.unet)) return true;
  return false;
}

/** `[ldm prefix, diffusers prefix]` pairs of the UNet for this block structure. */
function unetPrefixes(c: UNetConfig): [string, string][] {
  const p: [string, string][] = [
    ['time_embed.0.', 'time_embedding.linear_1.'], ['time_embed.2.', 'time_embedding.linear_2.'],
    ['input_blocks.0.0.', 'conv_in.'], ['out.0.', 'conv_norm_out.'], ['out.2.', 'conv_out.'],
    ['middle_block.0.', 'mid_block.resnets.0.'], ['middle_block.1.', 'mid_block.attentions.0.'], ['middle_block.2.', 'mid_block.resnets.1.'],
  ];
  const lpb = c.layersPerBlock;
  const last = c.blockOut.length - 1;
  c.downTypes.forEach((type, i) => {
    const attn = type.startsWith('CrossAttn');
    // input_blocks.0 is conv_in; each down block is lpb resnets (+ attention) then a downsampler.
    for (let j = 0; j < lpb; j++) {
      const n = 1 + i * (lpb + 1) + j;
      p.push([`input_blocks.${n}.0.`, `down_blocks.${i}.resnets.${j}.`]);
      if (attn) p.push([`input_blocks.${n}.1.`, `down_blocks.${i}.attentions.${j}.`]);
    }
    if (i < last) p.push([`input_blocks.${1 + i * (lpb + 1) + lpb}.0.op.`, `down_blocks.${i}.downsamplers.0.conv.`]);
  });
  c.upTypes.forEach((type, i) => {
    const attn = type.startsWith('CrossAttn');
    // Up blocks have lpb + 1 resnets; the upsampler sits in the last one, after the attention.
    for (let j = 0; j <= lpb; j++) {
      const n = i * (lpb + 1) + j;
      p.push([`output_blocks.${n}.0.`, `up_blocks.${i}.resnets.${j}.`]);
      if (attn) p.push([`output_blocks.${n}.1.`, `up_blocks.${i}.attentions.${j}.`]);
      if (j === lpb && i < last) p.push([`output_blocks.${n}.${attn ? 2 : 1}.conv.`, `up_blocks.${i}.upsamplers.0.conv.`]);
    }
  });
  return p;
}

const UNET_RESNET: [string, string][] = [
  ['in_layers.0.', 'norm1.'], ['in_layers.2.', 'conv1.'], ['emb_layers.1.', 'time_emb_proj.'],
  ['out_layers.0.', 'norm2.'], ['out_layers.3.', 'conv2.'], ['skip_connection.', 'conv_shortcut.'],
];

function vaePrefixes(c: VaeConfig): [string, string][] {
  const p: [string, string][] = [['quant_conv.', 'quant_conv.'], ['post_quant_conv.', 'post_quant_conv.']];
  const n = c.blockOut.length;
  for (const part of ['encoder', 'decoder']) {
    p.push([`${part}.conv_in.`, `${part}.conv_in.`], [`${part}.norm_out.`, `${part}.conv_norm_out.`], [`${part}.conv_out.`, `${part}.conv_out.`],
      [`${part}.mid.block_1.`, `${part}.mid_block.resnets.0.`], [`${part}.mid.block_2.`, `${part}.mid_block.resnets.1.`],
      [`${part}.mid.attn_1.`, `${part}.mid_block.attentions.0.`]);
  }
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < c.layersPerBlock; j++) p.push([`encoder.down.${i}.block.${j}.`, `encoder.down_blocks.${i}.resnets.${j}.`]);
    if (i < n - 1) p.push([`encoder.down.${i}.downsample.conv.`, `encoder.down_blocks.${i}.downsamplers.0.conv.`]);
    // ldm numbers decoder levels from the lowest resolution up; diffusers in execution order.
    const u = n - 1 - i;
    for (let j = 0; j <= c.layersPerBlock; j++) p.push([`decoder.up.${u}.block.${j}.`, `decoder.up_blocks.${i}.resnets.${j}.`]);
    if (i < n - 1) p.push([`decoder.up.${u}.upsample.conv.`, `decoder.up_blocks.${i}.upsamplers.0.conv.`]);
  }
  return p;
}

const VAE_ATTENTION: [string, string][] = [['norm.', 'group_norm.'], ['q.', 'to_q.'], ['k.', 'to_k.'], ['v.', 'to_v.'], ['proj_out.', 'to_out.0.']];

/** Renames `rest` by the first matching inner prefix (a resnet's or attention's parts). */
function inner(rest: string, table: [string, string][]): string {
  for (const [from, to] of table) if (rest.startsWith(from)) return to + rest.slice(from.length);
  return rest;
}

/** The longest matching prefix pair wins, so the order of the rules does not matter. */
function byPrefix(key: string, pairs: [string, string][]): [string, string, string] | undefined {
  let best: [string, string] | undefined;
  for (const pair of pairs) if (key.startsWith(pair[0]) && (!best || pair[0].length > best[0].length)) best = pair;
  return best && [best[0], best[1], key.slice(best[0].length)];
}

/**
 * The diffusers name of every original key, and the keys no component uses
 * (`model_ema.*`, `betas`, `alphas_cumprod`, position_ids, ...). A key under a
 * component prefix that fits no rule is an error: the configs do not match the file.
 */
export function mapOriginalKeys(file: string, entries: ReadonlyMap<string, TensorEntry>, unet: UNetConfig, vae: VaeConfig): { mapping: KeyMapping[]; ignored: string[] } {
  const unetPairs = unetPrefixes(unet);
  const vaePairs = vaePrefixes(vae);
  const mapping: KeyMapping[] = [];
  const ignored: string[] = [];
  const unmatched = (key: string, component: SdComponent): DrError =>
    new DrError(`${file}: key "${key}" fits no ${component} tensor of the configured model (wrong configs for this checkpoint? use a matching diffusers config folder)`);
  for (const [key, entry] of entries) {
    if (key.startsWith(PREFIX.unet)) {
      const m = byPrefix(key.slice(PREFIX.unet.length), unetPairs);
      if (!m) throw unmatched(key, 'unet');
      const [, to, rest] = m;
      mapping.push({ original: key, component: 'unet', diffusers: to + (to.includes('.resnets.') ? inner(rest, UNET_RESNET) : rest) });
    } else if (key.startsWith(PREFIX.vae)) {
      const m = byPrefix(key.slice(PREFIX.vae.length), vaePairs);
      if (!m) throw unmatched(key, 'vae');
      const [, to, rest] = m;
      if (to.includes('.attentions.')) {
        const name = to + inner(rest, VAE_ATTENTION);
        const conv = entry.shape.length === 4 && entry.shape[2] === 1 && entry.shape[3] === 1;
        mapping.push({ original: key, component: 'vae', diffusers: name, ...(conv ? { shape: entry.shape.slice(0, 2) } : {}) });
      } else {
        mapping.push({ original: key, component: 'vae', diffusers: to + (to.includes('.resnets.') ? inner(rest, [['nin_shortcut.', 'conv_shortcut.']]) : rest) });
      }
    } else if (key.startsWith(PREFIX.text_encoder)) {
      // transformers ≥ 5 names CLIPTextModel's tensors without `text_model.` (our loader takes both).
      const rest = key.slice(PREFIX.text_encoder.length).replace(/^text_model\./, '');
      if (rest === 'embeddings.position_ids') ignored.push(key);
      else mapping.push({ original: key, component: 'text_encoder', diffusers: rest });
    } else {
      ignored.push(key);
    }
  }
  const seen = new Map<string, string>();
  for (const m of mapping) {
    const id = `${m.component}/${m.diffusers}`;
    if (seen.has(id)) throw new DrError(`${file}: keys "${seen.get(id)}" and "${m.original}" both map to ${id}`);
    seen.set(id, m.original);
  }
  return { mapping, ignored };
}

/**
 * The mapped tensors must be exactly the params of the models the configs describe, with
 * their shapes: a file of another size (or another model) is one clear error before any
 * GPU work, not a failure halfway through loading.
 */
function checkAgainstModels(file: string, configDir: string, entries: ReadonlyMap<string, TensorEntry>, mapping: KeyMapping[], models: Record<SdComponent, Module>): void {
  const hint = `the configs come from ${configDir}; for a model of another size use its own diffusers folder: dr convert ${file} -o DIR --config CONFIG_DIR`;
  for (const c of SD_COMPONENTS) {
    const have = new Map(mapping.filter((m) => m.component === c).map((m) => [m.diffusers, m]));
    for (const [name, p] of models[c].namedParams()) {
      const m = have.get(name);
      if (!m) throw new DrError(`${file}: has no tensor for ${c} "${name}" (${hint})`);
      const shape = m.shape ?? entries.get(m.original)!.shape;
      if (shape.length !== p.shape.length || shape.some((d, i) => d !== p.shape[i])) {
        throw new DrError(`${file}: "${m.original}" has shape [${shape.join(', ')}] but ${c} "${name}" is [${p.shape.join(', ')}] (${hint})`);
      }
      have.delete(name);
    }
    const extra = [...have.values()][0];
    if (extra) throw new DrError(`${file}: key "${extra.original}" maps to ${c} "${extra.diffusers}", which the configured model does not have (${hint})`);
  }
}

/** One component's tensors under their diffusers names, read from the original file. */
class ComponentSource implements TensorSource {
  readonly tensors = new Map<string, TensorEntry>();
  private readonly original = new Map<string, string>();

  constructor(readonly path: string, private readonly file: TensorSource, rows: KeyMapping[]) {
    for (const m of rows) {
      const e = file.tensors.get(m.original)!;
      this.tensors.set(m.diffusers, { ...e, name: m.diffusers, shape: m.shape ?? e.shape });
      this.original.set(m.diffusers, m.original);
    }
  }

  readBytes(name: string): Uint8Array {
    const o = this.original.get(name);
    if (!o) throw new DrError(`${this.path}: no tensor named "${name}"`);
    return this.file.readBytes(o);
  }

  /** The file is shared by the components; SingleFileSd closes it. */
  close(): void {}
}

export class SingleFileSd {
  private constructor(
    readonly file: string,
    /** The diffusers folder the configs (and tokenizer, scheduler) come from. */
    readonly configDir: string,
    private readonly source: TensorSource,
    readonly mapping: KeyMapping[],
    readonly ignored: string[],
  ) {}

  /** `key` picks the state dict inside a .ckpt that holds several. */
  static open(file: string, configDir = SD15_CONFIG_DIR, key?: string): SingleFileSd {
    return SingleFileSd.fromSource(file, openTensorFile(file, key), configDir);
  }

  /** Takes over `source` (closes it on failure or with close()). */
  static fromSource(file: string, source: TensorSource, configDir = SD15_CONFIG_DIR): SingleFileSd {
    try {
      for (const c of SD_COMPONENTS) {
        if (!fs.existsSync(path.join(configDir, c))) throw new DrError(`${configDir}: missing ${c}/ (expected a diffusers Stable Diffusion folder to take the configs from)`);
      }
      if (!isOriginalSd(source.tensors.keys())) {
        throw new DrError(`${file}: not a single-file Stable Diffusion checkpoint (no ${PREFIX.unet}* tensors)`);
      }
      const unet = readUNetConfig(path.join(configDir, 'unet'));
      const vae = readVaeConfig(path.join(configDir, 'vae'));
      const { mapping, ignored } = mapOriginalKeys(file, source.tensors, unet, vae);
      const text = ConfigFile.inDir(path.join(configDir, 'text_encoder'));
      checkAgainstModels(file, configDir, source.tensors, mapping, {
        unet: new UNet2DConditionModel(unet),
        vae: new AutoencoderKL(vae),
        text_encoder: new ClipTextModel(textConfig(text, text.file)).text_model,
      });
      return new SingleFileSd(file, configDir, source, mapping, ignored);
    } catch (e) {
      source.close();
      throw e;
    }
  }

  /** The component's weights under diffusers names; its config is `configDir/<component>/`. */
  component(c: SdComponent): Checkpoint {
    const rows = this.mapping.filter((m) => m.component === c);
    return Checkpoint.fromSource(`${this.file} (${c})`, new ComponentSource(`${this.file} (${c})`, this.source, rows));
  }

  close(): void {
    this.source.close();
  }
}

/**
 * A Stable Diffusion base as the user names it (`--sd`): a diffusers folder, or a
 * single file whose configs, tokenizer and scheduler come from `configDir`. Loaders
 * take their config from `dir(c)` and, for a single file, their weights from `weights(c)`.
 */
export class SdBase {
  private constructor(
    /** The folder holding unet/, vae/, text_encoder/, tokenizer/, scheduler/ (configs at least). */
    readonly root: string,
    readonly single?: SingleFileSd,
  ) {}

  static open(spec: string, configDir?: string): SdBase {
    if (!fs.statSync(spec, { throwIfNoEntry: false })?.isFile()) return new SdBase(spec);
    const single = SingleFileSd.open(spec, configDir);
    return new SdBase(single.configDir, single);
  }

  dir(part: SdComponent | 'tokenizer' | 'scheduler'): string {
    return path.join(this.root, part);
  }

  /** The component's weights when they come from a single file; undefined for a folder (its loader opens it). */
  weights(c: SdComponent): Checkpoint | undefined {
    return this.single?.component(c);
  }

  close(): void {
    this.single?.close();
  }
}
