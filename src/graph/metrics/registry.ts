/**
 * The metrics `dr eval` knows: full-reference (a pair of images) or no-reference (one
 * image), which direction is better, and what weights each needs.
 */
import fs from 'node:fs';
import path from 'node:path';
import { DrError } from '../../errors.js';
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import type { RgbImage } from '../../image/load.js';
import { loadFromCheckpoint } from '../module.js';
import { toPlanar01 } from './image.js';
import { ClipIqa } from './clipiqa.js';
import { Dists } from './dists.js';
import { FidInception } from './inception.js';
import { Lpips, type LpipsNet } from './lpips.js';
import { Musiq } from './musiq.js';
import { niqe } from './niqe.js';
import { psnr, type ColorMode } from './psnr.js';
import { ssim } from './ssim.js';

export interface MetricInputs {
  ref?: Tensor;
  dist: Tensor;
  distImage: RgbImage;
}

export interface Metric {
  name: string;
  kind: 'fr' | 'nr';
  higherIsBetter: boolean;
  /** Weight files (in the --weights folder) the metric needs; none for the classic ones. */
  weightFiles: string[];
  run: (e: Engine, x: MetricInputs) => Promise<number>;
}

export interface MetricOptions {
  color?: ColorMode;
  net: LpipsNet;
  weightsDir?: string;
}

export const METRIC_NAMES = ['psnr', 'ssim', 'lpips', 'dists', 'niqe', 'clipiqa', 'musiq'] as const;

/** Metrics that score one image (no --ref needed). */
export const isNoReference = (name: string): boolean => name === 'niqe' || name === 'clipiqa' || name === 'musiq';

/** Builds the named metrics, loading weights (an error names every missing file). */
export function createMetrics(e: Engine, names: string[], opts: MetricOptions): Metric[] {
  return names.map((name): Metric => {
    switch (name) {
      case 'psnr':
        return { name, kind: 'fr', higherIsBetter: true, weightFiles: [], run: (en, x) => psnr(en, x.ref!, x.dist, opts.color ?? 'rgb') };
      case 'ssim':
        return { name, kind: 'fr', higherIsBetter: true, weightFiles: [], run: (en, x) => ssim(en, x.ref!, x.dist, opts.color ?? 'y') };
      case 'niqe':
        return { name, kind: 'nr', higherIsBetter: false, weightFiles: [], run: async (_en, x) => niqe(x.distImage) };
      case 'lpips': {
        const file = weightFile('lpips', opts);
        const model = new Lpips(opts.net);
        loadFromCheckpoint(e, model, file, { precision: 'f32' });
        return { name, kind: 'fr', higherIsBetter: false, weightFiles: [file], run: (en, x) => model.distance(en, x.ref!, x.dist) };
      }
      case 'clipiqa': {
        const file = weightFile(name, opts);
        const model = new ClipIqa();
        model.load(e, file);
        return { name, kind: 'nr', higherIsBetter: true, weightFiles: [file], run: (en, x) => model.score(en, x.dist) };
      }
      case 'musiq': {
        const file = weightFile(name, opts);
        const model = new Musiq();
        model.load(e, file);
        return { name, kind: 'nr', higherIsBetter: true, weightFiles: [file], run: (en, x) => model.score(en, toPlanar01(x.distImage), x.distImage.height, x.distImage.width) };
      }
      case 'dists': {
        const file = weightFile(name, opts);
        const model = new Dists();
        loadFromCheckpoint(e, model, file, { precision: 'f32' });
        return { name, kind: 'fr', higherIsBetter: false, weightFiles: [file], run: (en, x) => model.distance(en, x.ref!, x.dist) };
      }
      default:
        throw new DrError(`--metric: unknown metric "${name}" (known: ${METRIC_NAMES.join(', ')})`);
    }
  });
}

export const lpipsFileName = (net: LpipsNet): string => `lpips_${net}.safetensors`;

interface WeightSpec {
  file: string;
  /** What the file holds, for the error that says it is missing. */
  keys: string;
}

/** Weight files of the deep metrics besides lpips: the reference implementation's state dict as safetensors, keys unchanged. */
export const WEIGHTS: Record<string, WeightSpec> = {
  dists: { file: 'dists.safetensors', keys: 'DISTS state dict: stage1.0.weight ... stage5.28.bias (torchvision VGG16 features.I), alpha, beta' },
  fid: { file: 'fid_inception.safetensors', keys: "pytorch-fid's pt_inception-2015-12-05 state dict: Conv2d_1a_3x3.conv.weight, Conv2d_1a_3x3.bn.{weight,bias,running_mean,running_var} ... Mixed_7c.*" },
  clipiqa: { file: 'clipiqa_rn50.safetensors', keys: 'OpenAI CLIP RN50 state dict: visual.*, transformer.resblocks.*, token_embedding.weight, positional_embedding, ln_final.*, text_projection, logit_scale' },
  musiq: { file: 'musiq.safetensors', keys: 'pyiqa MUSIQ state dict with a one-output head (KonIQ): conv_root.weight, gn_root.*, block1.*, embedding.*, transformer_encoder.*, head.weight/bias' },
};

/** The weight file a metric needs, if any (lpips: the --net's). */
function weightSpec(name: string, opts: MetricOptions): WeightSpec | undefined {
  if (name === 'lpips') {
    return {
      file: lpipsFileName(opts.net),
      keys: "the lpips package's v0.1 state dict as safetensors: net.slice1.0.weight ... net.slice5.*, lin0.model.1.weight ... lin4.model.1.weight, scaling_layer.shift/scale",
    };
  }
  return WEIGHTS[name];
}

/** Whether a metric can run with what is on disk (for the default "all available"). */
export function metricAvailable(name: string, opts: MetricOptions): boolean {
  const spec = weightSpec(name, opts);
  return !spec || (!!opts.weightsDir && fs.existsSync(path.join(opts.weightsDir, spec.file)));
}

/** The path of a metric's weight file in --weights DIR, or one line saying what is missing. */
function weightFile(name: string, opts: MetricOptions): string {
  const { file, keys } = weightSpec(name, opts)!;
  const label = name === 'lpips' ? `lpips --net ${opts.net}` : name;
  if (!opts.weightsDir) throw new DrError(`${name}: needs weights: give --weights DIR with ${file} (${keys}; see README "Metric weights")`);
  const full = path.join(opts.weightsDir, file);
  if (!fs.existsSync(full)) throw new DrError(`${full}: missing; ${label} needs it (${keys}; see README "Metric weights")`);
  return full;
}


/** Metrics of a whole folder against another (not per image): FID. */
export const SET_METRIC_NAMES = ['fid'] as const;

/** pytorch-fid's InceptionV3 from --weights DIR (BatchNorms folded). */
export function createFidModel(e: Engine, opts: MetricOptions): FidInception {
  const model = new FidInception();
  loadFromCheckpoint(e, model, weightFile('fid', opts), { precision: 'f32' });
  return model.prepare(e);
}
