// `dr init`: a fresh Diff-Restorer checkpoint, the way training starts. The control
// network is a copy of the UNet's encoder and mid block with zero convolutions;
// every new layer gets PyTorch's default init from a fixed seed; the layers whose
// output joins an existing path start at zero (ControlNet's zero-conv trick), so a
// fresh model samples exactly like SD 1.5 and decodes exactly like the SD VAE.
import fs from 'node:fs';
import path from 'node:path';
import { beginTemp, commitTemp, dropTemp } from '../../atomic.js';
import { DrError } from '../../errors.js';
import { Checkpoint } from '../../weights/checkpoint.js';
import { writeSafetensorsYielding, type LazyTensorToWrite, type TensorToWrite } from '../../weights/safetensors.js';
import { readClipConfig } from '../clip/model.js';
import { ConfigFile } from '../config.js';
import { defaultInit, type HostParam } from '../init.js';
import type { Module } from '../module.js';
import { SdBase } from '../sd/single_file.js';
import { readUNetConfig } from '../sd/unet.js';
import { DiffRestorerControl } from './control.js';
import { DegradationAwareDecoder, readDecoderConfig } from './decoder.js';
import { DEGRADATIONS, PromptProcessor, promptProcessorConfigJson, readPromptProcessorConfig } from './prompt_processor.js';

export interface InitOptions {
  sd: string; // resolved SD folder
  clip: string; // resolved CLIP folder
  sdSpec?: string; // as the user named them (folder or repo id), recorded in model_index.json
  clipSpec?: string;
  out: string;
  /** Replace what is at `out` (an earlier checkpoint) once the new one is complete. */
  replace?: boolean;
  seed: number;
  controlChannels?: number[];
  /** Tokens of P_S, the cross-attention context (default DEFAULT_CONTEXT_TOKENS). */
  contextTokens?: number;
  onProgress?: (part: string) => void;
}

/**
 * P_S tokens of a new checkpoint (the design's Prompt Processor): with one, every cross-attention's
 * softmax is identically 1, so its to_q/to_k get no gradient; 4 as IP-Adapter uses for image prompts.
 */
export const DEFAULT_CONTEXT_TOKENS = 4;

/** UNet parts the control network copies (diffusers' ControlNetModel.from_unet). */
const COPIED_FROM_UNET = /^(conv_in|time_embedding|down_blocks|mid_block)\./;

/** Async only so that Ctrl-C is handled between tensors (writes yield to the event loop). */
export async function initDiffRestorer(o: InitOptions): Promise<void> {
  if (!o.replace && fs.existsSync(o.out) && fs.readdirSync(o.out).length) throw new DrError(`${o.out}: exists and is not empty`);
  const sd = SdBase.open(o.sd);
  const unetDir = sd.dir('unet');
  const vaeDir = sd.dir('vae');
  const unetCfg = readUNetConfig(unetDir);
  const clipCfg = readClipConfig(o.clip);
  const tmp = beginTemp(o.out);
  try {
    // prompt_processor/
    const ppDir = path.join(tmp, 'prompt_processor');
    writeJson(path.join(ppDir, 'config.json'), promptProcessorConfigJson({
      clipDim: clipCfg.projectionDim, hiddenDim: 768, semanticDim: unetCfg.crossAttentionDim, contextTokens: o.contextTokens ?? DEFAULT_CONTEXT_TOKENS,
      degradationDim: 256, degradations: DEGRADATIONS, leakySlope: 0.01, eps: 1e-5,
    }));
    o.onProgress?.('prompt_processor');
    await writeInit(ppDir, new PromptProcessor(readPromptProcessorConfig(ppDir)), o.seed);

    // control/
    o.onProgress?.('control');
    const ctlDir = path.join(tmp, 'control');
    const unetRaw = { ...ConfigFile.inDir(unetDir).raw } as Record<string, unknown>;
    for (const k of ['up_block_types', 'out_channels', 'center_input_sample', 'conv_out_kernel', 'sample_size']) delete unetRaw[k];
    writeJson(path.join(ctlDir, 'config.json'), {
      ...unetRaw,
      _class_name: 'ControlNetModel',
      conditioning_scale: 1.0,
      control_encoder: { in_channels: 3, channels: o.controlChannels ?? [64, 128, 256, 256], norm_num_groups: 32, norm_eps: 1e-6, degradation_dim: 256 },
    });
    const control = DiffRestorerControl.build(ctlDir);
    const unet = sd.weights('unet') ?? Checkpoint.open(unetDir);
    try {
      const fresh = new Map([...defaultInit(control.network, o.seed + 1), ...defaultInit(control.decoder, o.seed + 2, 'control_decoder.')]);
      const tensors: (TensorToWrite | LazyTensorToWrite)[] = [];
      for (const [name, param] of fresh) {
        if (COPIED_FROM_UNET.test(name)) {
          const info = unet.info(name);
          tensors.push({ name, dtype: info.dtype, shape: info.shape, read: () => unet.readBytes(name) });
        } else {
          const zero = /^controlnet_(down|mid)_block|^controlnet_cond_embedding\.conv_out\./.test(name);
          tensors.push(f32(name, param, zero));
        }
      }
      await writeSafetensorsYielding(path.join(ctlDir, 'model.safetensors'), tensors, { producer: 'dr init', seed: String(o.seed) });
    } finally {
      unet.close();
    }

    // decoder/
    o.onProgress?.('decoder');
    const decDir = path.join(tmp, 'decoder');
    writeJson(path.join(decDir, 'config.json'), { ...ConfigFile.inDir(vaeDir).raw, _class_name: 'DegradationAwareDecoder', degradation_dim: 256, drbs: true });
    const decoder = new DegradationAwareDecoder(readDecoderConfig(decDir));
    const vae = sd.weights('vae') ?? Checkpoint.open(vaeDir);
    try {
      const tensors: (TensorToWrite | LazyTensorToWrite)[] = [];
      for (const [name, param] of defaultInit(decoder, o.seed + 3)) {
        if (name.startsWith('drbs.')) {
          tensors.push(f32(name, param, /\.(fuse|block\.conv2)\./.test(name)));
        } else {
          const info = vae.info(name);
          tensors.push({ name, dtype: info.dtype, shape: info.shape, read: () => vae.readBytes(name) });
        }
      }
      await writeSafetensorsYielding(path.join(decDir, 'model.safetensors'), tensors, { producer: 'dr init', seed: String(o.seed) });
    } finally {
      vae.close();
    }

    writeJson(path.join(tmp, 'model_index.json'), {
      _class_name: 'DiffRestorerPipeline',
      _dr_version: '0.1.0',
      base: { sd: o.sdSpec ?? o.sd, clip: o.clipSpec ?? o.clip },
      prompt_processor: ['dr', 'PromptProcessor'],
      control: ['dr', 'DiffRestorerControl'],
      decoder: ['dr', 'DegradationAwareDecoder'],
    });
    commitTemp(tmp, o.out);
  } catch (err) {
    dropTemp(tmp);
    const e = err as NodeJS.ErrnoException;
    // A folder that refuses writes (permissions, read-only or full file system) is the user's to fix.
    if (e.syscall && e.code) throw new DrError(`${o.out}: cannot write the checkpoint (${e.code}${e.path ? ` on ${e.path}` : ''})`);
    throw err;
  } finally {
    sd.close();
  }
}

function writeJson(file: string, value: unknown): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`);
}

/** Writes every param of `root` with its default init. */
async function writeInit(dir: string, root: Module, seed: number): Promise<void> {
  const tensors = [...defaultInit(root, seed)].map(([name, param]) => f32(name, param, false));
  await writeSafetensorsYielding(path.join(dir, 'model.safetensors'), tensors, { producer: 'dr init', seed: String(seed) });
}

/** A freshly initialised tensor, zeroed on request. */
function f32(name: string, p: HostParam, zero: boolean): TensorToWrite {
  if (zero) p.values.fill(0);
  return { name, dtype: 'F32', shape: p.shape, data: p.values };
}
