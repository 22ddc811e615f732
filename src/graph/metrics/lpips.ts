/**
 * LPIPS v0.1 (Zhang et al. 2018, the `lpips` package) with the AlexNet or VGG16 backbone.
 * Module paths are the package's state-dict keys (`net.slice1.0.weight`, `lin0.model.1.weight`,
 * `scaling_layer.shift`), so its checkpoints load as they are once converted to safetensors.
 * Inputs in [0, 1]; 2x − 1, then (x − shift) / scale; five ReLU stages; each feature is
 * divided by its channel L2 norm + 1e-10; squared difference through the 1×1 lin layer;
 * spatial mean; summed over the stages. No resizing.
 */
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { div, scale, sub } from '../../engine/ops/elementwise.js';
import { NoScore } from '../../errors.js';
import { lpipsDistance } from '../../engine/ops/eval/lpips_distance.js';
import { maxPool2d } from '../../engine/ops/pool2d.js';
import { Module, ModuleList } from '../module.js';
import { Conv2d } from '../nn.js';

export type LpipsNet = 'alex' | 'vgg';

/** One `sliceN` of the backbone: torchvision `features` layers by index (convs with ReLU, max pools). */
class Slice extends Module {
  readonly layers: { conv?: Conv2d; pool?: [number, number] }[] = [];
  constructor(spec: ([number, number, number, number, number, number] | ['pool', number, number])[]) {
    super();
    for (const s of spec) {
      if (s[0] === 'pool') this.layers.push({ pool: [s[1], s[2]] });
      else {
        const [index, cin, cout, k, stride, pad] = s;
        this.layers.push({ conv: this.child(String(index), new Conv2d(cin, cout, k, stride, pad)) });
      }
    }
  }

  forward(e: Engine, x: Tensor): Tensor {
    for (const l of this.layers) x = l.pool ? maxPool2d(e, x, l.pool[0], l.pool[1]) : l.conv!.forward(e, x, 'relu');
    return x;
  }
}

class Backbone extends Module {
  readonly slices: Slice[];
  constructor(net: LpipsNet) {
    super();
    const specs = net === 'alex' ? ALEX : VGG16;
    this.slices = specs.map((s, i) => this.child(`slice${i + 1}`, new Slice(s)));
  }
}

class Lin extends Module {
  readonly conv: LinConv;
  constructor(ch: number) {
    super();
    this.conv = new LinConv(ch);
    this.child('model', new ModuleList<Module>([new Dropout(), this.conv]));
  }
}

/** Index 0 of `linN.model` is Dropout (no parameters, inactive in eval). */
class Dropout extends Module {}

class LinConv extends Module {
  readonly weight;
  constructor(ch: number) {
    super();
    this.weight = this.param('weight', [1, ch, 1, 1]);
  }
}

class ScalingLayer extends Module {
  readonly shift;
  readonly scale;
  constructor() {
    super();
    this.shift = this.param('shift', [1, 3, 1, 1]);
    this.scale = this.param('scale', [1, 3, 1, 1]);
  }
}

// [features index, in, out, kernel, stride, padding] or ['pool', kernel, stride]
type Spec = ([number, number, number, number, number, number] | ['pool', number, number])[];
const ALEX: Spec[] = [
  [[0, 3, 64, 11, 4, 2]],
  [['pool', 3, 2], [3, 64, 192, 5, 1, 2]],
  [['pool', 3, 2], [6, 192, 384, 3, 1, 1]],
  [[8, 384, 256, 3, 1, 1]],
  [[10, 256, 256, 3, 1, 1]],
];
const VGG16: Spec[] = [
  [[0, 3, 64, 3, 1, 1], [2, 64, 64, 3, 1, 1]],
  [['pool', 2, 2], [5, 64, 128, 3, 1, 1], [7, 128, 128, 3, 1, 1]],
  [['pool', 2, 2], [10, 128, 256, 3, 1, 1], [12, 256, 256, 3, 1, 1], [14, 256, 256, 3, 1, 1]],
  [['pool', 2, 2], [17, 256, 512, 3, 1, 1], [19, 512, 512, 3, 1, 1], [21, 512, 512, 3, 1, 1]],
  [['pool', 2, 2], [24, 512, 512, 3, 1, 1], [26, 512, 512, 3, 1, 1], [28, 512, 512, 3, 1, 1]],
];
/** The smallest image side whose feature maps keep at least one pixel through every layer of `spec`. */
function minSide(spec: Spec[]): number {
  const out = (side: number): number => {
    for (const l of spec.flat()) {
      side = l[0] === 'pool' ? Math.floor((side - l[1]) / l[2]) + 1 : Math.floor((side + 2 * l[5] - l[3]) / l[4]) + 1;
      if (side < 1) return 0;
    }
    return side;
  };
  let side = 1;
  while (out(side) < 1) side++;
  return side;
}

export const LPIPS_CHANNELS: Record<LpipsNet, number[]> = { alex: [64, 192, 384, 256, 256], vgg: [64, 128, 256, 512, 512] };

export class Lpips extends Module {
  readonly net: Backbone;
  readonly lins: Lin[];
  readonly scalingLayer: ScalingLayer;

  constructor(readonly kind: LpipsNet) {
    super();
    this.scalingLayer = this.child('scaling_layer', new ScalingLayer());
    this.net = this.child('net', new Backbone(kind));
    this.lins = LPIPS_CHANNELS[kind].map((c, i) => this.child(`lin${i}`, new Lin(c)));
  }

  /** The five ReLU stage outputs for an image [1, 3, H, W] in [0, 1] (traced as `stage{k}`). */
  features(e: Engine, x01: Tensor): Tensor[] {
    let x = div(e, sub(e, scale(e, x01, 2, -1), this.scalingLayer.shift.t), this.scalingLayer.scale.t);
    return this.net.slices.map((s) => (x = s.forward(e, x)));
  }

  /** Per-stage values (their sum is LPIPS); each stage's map is averaged on the host in f64. */
  async layers(e: Engine, ref: Tensor, dist: Tensor): Promise<number[]> {
    const maps = e.tidy(() => {
      const fa = this.features(e, ref);
      const fb = this.features(e, dist);
      return fa.map((a, k) => lpipsDistance(e, a, fb[k], this.lins[k].conv.weight.t));
    });
    const out: number[] = [];
    for (const m of maps) {
      const v = await e.read(m);
      e.release(m);
      let s = 0;
      for (const x of v) s += x;
      out.push(s / v.length);
    }
    return out;
  }

  async distance(e: Engine, ref: Tensor, dist: Tensor): Promise<number> {
    const [H, W] = dist.shape.slice(-2);
    const min = minSide(this.kind === 'alex' ? ALEX : VGG16);
    // PyTorch's pools refuse a map smaller than their window (so pyiqa's lpips has no value either).
    if (H < min || W < min) throw new NoScore(`${W}x${H} is smaller than the ${min}x${min} that LPIPS-${this.kind}'s pooling layers need`);
    return (await this.layers(e, ref, dist)).reduce((a, b) => a + b, 0);
  }
}
