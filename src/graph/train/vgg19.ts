/**
 * VGG-19 `features` (torchvision's layout and key names, `features.N.weight` / `.bias`) for stage
 * 2's perceptual loss: the ReLU outputs relu1_2, relu2_2, relu3_4, relu4_4 and relu5_4
 * (features.3, 8, 17, 26, 35). Stage widths are read from the file, so reduced-width copies
 * (the training fixture's [8, 16, 16, 32, 32]) load as the real [64, 128, 256, 512, 512] does.
 */
import { DrError } from '../../errors.js';
import type { Engine } from '../../engine/engine.js';
import { f32ToF16Bits } from '../../engine/half.js';
import type { DType, Tensor } from '../../engine/tensor.js';
import { add, div, scale, sub } from '../../engine/ops/elementwise.js';
import { cast } from '../../engine/ops/copy.js';
import { mse } from '../../engine/ops/losses.js';
import { maxPool2d } from '../../engine/ops/pool2d.js';
import { Checkpoint } from '../../weights/checkpoint.js';
import { Module, loadModule, type Precision } from '../module.js';
import { Conv2d } from '../nn.js';

/** 3×3 convolutions per stage; a 2×2 max-pool closes each stage (torchvision's cfg "E"). */
const CONVS_PER_STAGE = [2, 2, 4, 4, 4];
const IMAGENET_MEAN = [0.485, 0.456, 0.406];
const IMAGENET_STD = [0.229, 0.224, 0.225];

/** `features.N` index of every conv, per stage: [[0, 2], [5, 7], [10, 12, 14, 16], ...]. */
function convIndices(): number[][] {
  let n = 0;
  return CONVS_PER_STAGE.map((count) => {
    const stage = Array.from({ length: count }, (_, k) => n + 2 * k); // conv, ReLU, conv, ReLU, ...
    n += 2 * count + 1; // + the max-pool
    return stage;
  });
}

/** The `features` Sequential: children named by their torchvision index (ReLUs and pools hold no weights). */
class Features extends Module {
  readonly stages: Conv2d[][];
  constructor(widths: number[]) {
    super();
    let inCh = 3;
    this.stages = convIndices().map((stage, s) => stage.map((index) => {
      const conv = this.child(String(index), new Conv2d(inCh, widths[s], 3, 1, 1));
      inCh = widths[s];
      return conv;
    }));
  }
}

export class Vgg19Features extends Module {
  readonly features: Features;
  private mean?: Tensor;
  private std?: Tensor;

  constructor(readonly widths: number[]) {
    super();
    this.features = this.child('features', new Features(widths));
  }

  /**
   * A torchvision VGG-19 state dict (.safetensors, or .pth through the restricted unpickler);
   * keys other than `features.*` (the classifier) are ignored.
   */
  static load(e: Engine, file: string, precision: Precision = 'f32'): Vgg19Features {
    const ckpt = Checkpoint.open(file);
    try {
      const widths = convIndices().map((stage) => {
        const key = `features.${stage[0]}.weight`;
        if (!ckpt.has(key)) throw new DrError(`${file}: not a VGG-19 features checkpoint (no tensor "${key}")`);
        return ckpt.info(key).shape[0];
      });
      const vgg = new Vgg19Features(widths);
      loadModule(e, vgg, ckpt, { precision });
      vgg.mean = constant(e, IMAGENET_MEAN, vgg.dtype);
      vgg.std = constant(e, IMAGENET_STD, vgg.dtype);
      return vgg;
    } finally {
      ckpt.close();
    }
  }

  get dtype(): DType {
    return this.features.stages[0][0].weight.t.dtype;
  }

  /**
   * y [B, 3, H, W] in [-1, 1] → the five stage outputs relu1_2 … relu5_4, in the weights'
   * precision. The input is mapped to [0, 1] and ImageNet-normalised as torchvision expects.
   */
  forward(e: Engine, y: Tensor): Tensor[] {
    if (!this.mean || !this.std) throw new Error('Vgg19Features: weights not loaded');
    if (y.shape.length !== 4 || y.shape[1] !== 3) throw new DrError(`VGG-19 features need RGB images [B, 3, H, W], got [${y.shape}]`);
    // Four 2×2 pools before relu5_4: smaller sides would pool away to nothing.
    if (y.shape[2] < 16 || y.shape[3] < 16) throw new DrError(`VGG-19 features need images of at least 16×16 pixels, got ${y.shape[3]}×${y.shape[2]}`);
    const [mean, std] = [this.mean, this.std];
    return e.tidy(() => {
      let x = div(e, sub(e, scale(e, cast(e, y, this.dtype), 0.5, 0.5), mean), std);
      return this.features.stages.map((stage, s) => {
        if (s > 0) x = maxPool2d(e, x, 2, 2);
        for (const conv of stage) x = conv.forward(e, x, 'relu');
        return x;
      });
    });
  }
}

/**
 * L_per: the sum over the five layers of mean((φ(a) − φ(b))²), a scalar f32 tensor; a and b in
 * [-1, 1] (stage 2 compares x̂ with 2·I_HQ − 1).
 */
export function perceptualLoss(e: Engine, vgg: Vgg19Features, a: Tensor, b: Tensor): Tensor {
  return e.tidy(() => {
    const fa = vgg.forward(e, a);
    const fb = vgg.forward(e, b);
    return fa.map((f, k) => mse(e, f, fb[k])).reduce((sum, l) => add(e, sum, l));
  });
}

/** A per-channel constant [1, 3, 1, 1] in `dtype`, in its own buffer. */
function constant(e: Engine, values: number[], dtype: DType): Tensor {
  const data = dtype === 'f16' ? Uint16Array.from(values, f32ToF16Bits) : Float32Array.from(values);
  return e.createWeight(new Uint8Array(data.buffer), [1, 3, 1, 1], dtype);
}
