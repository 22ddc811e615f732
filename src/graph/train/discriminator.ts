/**
 * Stage 2's adversarial critic: pix2pix's PatchGAN `NLayerDiscriminator` (Isola et al. 2017;
 * junyanz/pytorch-CycleGAN-and-pix2pix, networks.py) with its Sequential's key names
 * (`model.0.weight`, `model.2.weight`, `model.3.weight` …): 4×4 convs, stride 2 for the first
 * n_layers, then one stride-1 conv and a stride-1 conv to one channel, padding 1 throughout;
 * LeakyReLU(0.2) after every conv but the last; a norm after every conv but the first and last.
 * The output is a map of logits, one per overlapping patch (70×70 pixels for n_layers 3).
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeAtomic } from '../../atomic.js';
import { DrError } from '../../errors.js';
import type { Engine } from '../../engine/engine.js';
import type { DType, Tensor } from '../../engine/tensor.js';
import { cast } from '../../engine/ops/copy.js';
import { leakyRelu } from '../../engine/ops/elementwise.js';
import { writeSafetensors } from '../../weights/safetensors.js';
import { ConfigFile } from '../config.js';
import { defaultInit } from '../init.js';
import { Module, loadFromCheckpoint, type Precision } from '../module.js';
import { Conv2d, GroupNorm } from '../nn.js';

export interface DiscriminatorConfig {
  inChannels: number; // input_nc
  ndf: number; // filters of the first conv; ×2 per layer up to ×8
  nLayers: number;
  eps: number;
  slope: number; // LeakyReLU negative slope
}

export const PIX2PIX_DISCRIMINATOR: DiscriminatorConfig = { inChannels: 3, ndf: 64, nLayers: 3, eps: 1e-5, slope: 0.2 };

export function readDiscriminatorConfig(dir: string): DiscriminatorConfig {
  const c = ConfigFile.inDir(dir);
  // pix2pix's default BatchNorm is left out on purpose (see NLayerDiscriminator).
  const norm = c.str('norm', 'instance');
  if (norm !== 'instance') throw new DrError(`${c.file}: norm "${norm}" is not supported (instance)`);
  const cfg = {
    inChannels: c.int('input_nc', 3), ndf: c.int('ndf', 64), nLayers: c.int('n_layers', 3),
    eps: c.num('norm_eps', 1e-5), slope: c.num('negative_slope', 0.2),
  };
  if (cfg.inChannels < 1 || cfg.ndf < 1 || cfg.nLayers < 1) throw new DrError(`${c.file}: input_nc, ndf and n_layers must be at least 1`);
  return cfg;
}

export function discriminatorConfigJson(cfg: DiscriminatorConfig): Record<string, unknown> {
  return {
    _class_name: 'NLayerDiscriminator', input_nc: cfg.inChannels, ndf: cfg.ndf, n_layers: cfg.nLayers,
    norm: 'instance', norm_eps: cfg.eps, negative_slope: cfg.slope,
  };
}

interface Layer {
  conv: Conv2d;
  norm?: GroupNorm;
  act: boolean;
}

/** The `model` Sequential: children named by their index (LeakyReLUs hold no weights). */
class Sequential extends Module {
  readonly layers: Layer[] = [];
  constructor(cfg: DiscriminatorConfig) {
    super();
    let index = 0;
    const add = (inCh: number, outCh: number, stride: number, norm: boolean, act: boolean): void => {
      const conv = this.child(String(index++), new Conv2d(inCh, outCh, 4, stride, 1));
      // InstanceNorm2d(affine) as GroupNorm with one channel per group. pix2pix defaults to
      // BatchNorm2d, whose statistics over a batch of 1–4 crops are noise, and whose running
      // averages make the critic differ between training and evaluation; instance statistics are
      // per sample (pix2pix's own `--norm instance`, as CycleGAN trains at batch 1).
      const n = norm ? this.child(String(index++), new GroupNorm(outCh, outCh, cfg.eps)) : undefined;
      if (act) index++;
      this.layers.push({ conv, norm: n, act });
    };
    const width = (n: number): number => cfg.ndf * Math.min(2 ** n, 8);
    add(cfg.inChannels, cfg.ndf, 2, false, true);
    for (let n = 1; n < cfg.nLayers; n++) add(width(n - 1), width(n), 2, true, true);
    add(width(cfg.nLayers - 1), width(cfg.nLayers), 1, true, true);
    add(width(cfg.nLayers), 1, 1, false, false);
  }
}

export class NLayerDiscriminator extends Module {
  readonly model: Sequential;

  constructor(readonly config: DiscriminatorConfig) {
    super();
    this.model = this.child('model', new Sequential(config));
  }

  static load(e: Engine, dir: string, precision: Precision = 'f32'): NLayerDiscriminator {
    const d = new NLayerDiscriminator(readDiscriminatorConfig(dir));
    loadFromCheckpoint(e, d, dir, { precision });
    return d;
  }

  /** A fresh critic on the GPU, f32: PyTorch's default init, seeded (the weights initDiscriminator writes). */
  static init(e: Engine, cfg: DiscriminatorConfig, seed: number): NLayerDiscriminator {
    const d = new NLayerDiscriminator(cfg);
    const init = defaultInit(d, seed);
    for (const [name, p] of d.namedParams()) p.value = e.createWeight(new Uint8Array(init.get(name)!.values.buffer), p.shape, 'f32');
    return d;
  }

  get dtype(): DType {
    return this.model.layers[0].conv.weight.t.dtype;
  }

  /** Output side for an input side: k4 p1 keeps ⌊s/2⌋ at stride 2 and s − 1 at stride 1. */
  outputSide(side: number): number {
    for (const l of this.model.layers) side = l.conv.stride === 2 ? Math.floor(side / 2) : side - 1;
    return side;
  }

  /** images [B, C, H, W] in [-1, 1] → patch logits [B, 1, h, w] (in the images' dtype). */
  forward(e: Engine, images: Tensor): Tensor {
    const [, C, H, W] = images.shape;
    if (images.shape.length !== 4 || C !== this.config.inChannels) {
      throw new DrError(`the discriminator takes [B, ${this.config.inChannels}, H, W] images, got [${images.shape}]`);
    }
    if (this.outputSide(Math.min(H, W)) < 1) {
      let min = 1;
      while (this.outputSide(min) < 1) min++;
      throw new DrError(`the discriminator needs images of at least ${min}×${min} pixels, got ${W}×${H}`);
    }
    return e.tidy(() => {
      let x = cast(e, images, this.dtype);
      for (const l of this.model.layers) {
        x = l.conv.forward(e, x);
        if (l.norm) x = l.norm.forward(e, x);
        if (l.act) x = leakyRelu(e, x, this.config.slope);
      }
      return cast(e, x, images.dtype);
    });
  }
}

/** A fresh discriminator in `dir` (config.json + model.safetensors): PyTorch's default init, seeded. */
export function initDiscriminator(dir: string, cfg: DiscriminatorConfig, seed: number): void {
  const tensors = [...defaultInit(new NLayerDiscriminator(cfg), seed)].map(([name, p]) => ({ name, shape: p.shape, values: p.values }));
  writeDiscriminator(dir, cfg, tensors, { producer: 'dr', seed: String(seed) });
}

/** Writes the discriminator's current (trained) weights to `dir`, as f32. */
export async function saveDiscriminator(e: Engine, d: NLayerDiscriminator, dir: string): Promise<void> {
  const tensors = [];
  for (const [name, p] of d.namedParams()) tensors.push({ name, shape: [...p.shape], values: await e.read(p.t) });
  writeDiscriminator(dir, d.config, tensors, { producer: 'dr' });
}

function writeDiscriminator(dir: string, cfg: DiscriminatorConfig, tensors: { name: string; shape: number[]; values: Float32Array }[],
  metadata: Record<string, string>): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new DrError(`${dir}: cannot create the discriminator folder (${(err as NodeJS.ErrnoException).code})`);
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors.map((t) => ({ name: t.name, dtype: 'F32', shape: t.shape, data: t.values })), metadata);
  writeAtomic(path.join(dir, 'config.json'), `${JSON.stringify(discriminatorConfigJson(cfg), null, 2)}\n`);
}
