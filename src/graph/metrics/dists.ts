/**
 * DISTS (Ding et al. 2020; pyiqa's `dists`, identical to the authors' DISTS_pt): VGG16 whose
 * max pools are L2 pools (square, 3×3 Hann filter, stride 2, pad 1, sqrt), on (x − mean) / std
 * with ImageNet statistics. Features: the raw [0, 1] input and relu1_2 … relu5_3 (3 + 64 + 128 +
 * 256 + 512 + 512 = 1475 channels). Per channel S1 (means) and S2 (variances and covariance),
 * c1 = c2 = 1e-6; DISTS = 1 − Σ (α·S1 + β·S2) / (Σα + Σβ). No resizing.
 * Module paths are the package's state-dict keys (`stage1.0.weight` … `stage5.28.bias`, `alpha`,
 * `beta`). Its buffers (`mean`, `std`, `stageN.I.filter`) are constants and are built here.
 */
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { distsStats } from '../../engine/ops/eval/dists_stats.js';
import { div, sub } from '../../engine/ops/elementwise.js';
import { l2Pool } from '../../engine/ops/eval/l2_pool.js';
import { Module } from '../module.js';
import { Conv2d } from '../nn.js';

export const DISTS_CHANNELS = [3, 64, 128, 256, 512, 512];
const IMAGENET_MEAN = [0.485, 0.456, 0.406];
const IMAGENET_STD = [0.229, 0.224, 0.225];

/** hanning(5)[1:-1] = (0.5, 1, 0.5), outer product normalised to sum 1 (exact in f32). */
export function hannFilter3(): Float32Array {
  const a = [0.5, 1, 0.5];
  return Float32Array.from({ length: 9 }, (_, i) => (a[Math.floor(i / 3)] * a[i % 3]) / 4);
}

// torchvision VGG16 `features` convs per stage: [index, in, out]; stages 2-5 start with an L2 pool.
const STAGES: [number, number, number][][] = [
  [[0, 3, 64], [2, 64, 64]],
  [[5, 64, 128], [7, 128, 128]],
  [[10, 128, 256], [12, 256, 256], [14, 256, 256]],
  [[17, 256, 512], [19, 512, 512], [21, 512, 512]],
  [[24, 512, 512], [26, 512, 512], [28, 512, 512]],
];

class Stage extends Module {
  readonly convs: Conv2d[];
  constructor(spec: [number, number, number][]) {
    super();
    this.convs = spec.map(([i, cin, cout]) => this.child(String(i), new Conv2d(cin, cout, 3, 1, 1)));
  }
}

export interface DistsTerms {
  /** Σ α·S1 per feature level (0 = the input), α already divided by Σα + Σβ. */
  structure: number[];
  /** Σ β·S2 per level. */
  texture: number[];
  value: number;
}

export class Dists extends Module {
  readonly stages: Stage[];
  readonly alpha;
  readonly beta;
  private consts?: { mean: Tensor; std: Tensor; filter: Tensor };

  constructor() {
    super();
    this.stages = STAGES.map((s, i) => this.child(`stage${i + 1}`, new Stage(s)));
    const total = DISTS_CHANNELS.reduce((a, b) => a + b, 0);
    this.alpha = this.param('alpha', [1, total, 1, 1], true);
    this.beta = this.param('beta', [1, total, 1, 1], true);
  }

  private constants(e: Engine): { mean: Tensor; std: Tensor; filter: Tensor } {
    return (this.consts ??= {
      mean: e.keep(e.upload(Float32Array.from(IMAGENET_MEAN), [1, 3, 1, 1])),
      std: e.keep(e.upload(Float32Array.from(IMAGENET_STD), [1, 3, 1, 1])),
      filter: e.keep(e.upload(hannFilter3(), [3, 3])),
    });
  }

  /** The six feature levels of an image [1, 3, H, W] in [0, 1]: the input, relu1_2 … relu5_3. */
  features(e: Engine, x01: Tensor): Tensor[] {
    const { mean, std, filter } = this.constants(e);
    let h = div(e, sub(e, x01, mean), std);
    const out = [x01];
    for (const [k, stage] of this.stages.entries()) {
      if (k > 0) h = l2Pool(e, h, filter);
      for (const c of stage.convs) h = c.forward(e, h, 'relu');
      out.push(h);
    }
    return out;
  }

  /** Per-level terms and the DISTS value (weights summed on the host in f64). */
  async terms(e: Engine, ref: Tensor, dist: Tensor): Promise<DistsTerms> {
    const stats = e.tidy(() => {
      const fa = this.features(e, dist);
      const fb = this.features(e, ref);
      return fa.map((a, k) => distsStats(e, a, fb[k]));
    });
    const [alpha, beta] = [this.alpha.hostValue, this.beta.hostValue];
    let wsum = 0;
    for (let i = 0; i < alpha.length; i++) wsum += alpha[i] + beta[i];
    const structure: number[] = [];
    const texture: number[] = [];
    let at = 0;
    for (const s of stats) {
      const v = await e.read(s);
      e.release(s);
      let [s1, s2] = [0, 0];
      for (let c = 0; c < v.length / 2; c++) {
        s1 += (alpha[at + c] / wsum) * v[2 * c];
        s2 += (beta[at + c] / wsum) * v[2 * c + 1];
      }
      at += v.length / 2;
      structure.push(s1);
      texture.push(s2);
    }
    const value = 1 - structure.reduce((a, b) => a + b, 0) - texture.reduce((a, b) => a + b, 0);
    return { structure, texture, value };
  }

  async distance(e: Engine, ref: Tensor, dist: Tensor): Promise<number> {
    return (await this.terms(e, ref, dist)).value;
  }
}
