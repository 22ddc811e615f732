/**
 * pytorch-fid's FID InceptionV3 (the TensorFlow FID network ported to PyTorch): torchvision's
 * Inception3 with FIDInceptionA/C/E_1 (3×3 average pools that ignore the padding) and
 * FIDInceptionE_2 (a 3×3 max pool in the pool branch). Input [1, 3, H, W] in [0, 1], bilinear
 * resize to 299×299 (align_corners false, no antialias), 2x − 1; pool3 = the final global
 * average (2048-d). Module paths are torchvision's Inception3 state-dict keys, as in
 * pytorch-fid's pt_inception-2015-12-05 weights (`Conv2d_1a_3x3.conv.weight`,
 * `Mixed_5b.branch1x1.bn.running_var`, …; `fc.*` is not used). Each BatchNorm (eps 1e-3) is
 * folded into its convolution at load: w·γ/√(var+eps), β − mean·γ/√(var+eps).
 */
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { conv2d } from '../../engine/ops/conv2d.js';
import { concat } from '../../engine/ops/copy.js';
import { mean, scale } from '../../engine/ops/elementwise.js';
import { maxPool2d, pool2d } from '../../engine/ops/pool2d.js';
import { resizeBilinear } from '../../engine/ops/eval/resize_bilinear.js';
import { Module } from '../module.js';
import { BatchNorm2d, HostConv, foldBatchNorm } from './conv_bn.js';

type K = number | [number, number];
const pair = (k: K): [number, number] => (typeof k === 'number' ? [k, k] : k);

/** torchvision BasicConv2d: conv (no bias) → BatchNorm(eps 0.001) → ReLU, folded into one conv. */
class BasicConv2d extends Module {
  readonly conv: HostConv;
  readonly bn: BatchNorm2d;
  private w?: Tensor;
  private b?: Tensor;
  constructor(cin: number, cout: number, k: K, readonly stride = 1, readonly padding: K = 0) {
    super();
    this.conv = this.child('conv', new HostConv(cin, cout, k));
    this.bn = this.child('bn', new BatchNorm2d(cout));
  }

  /** Folds the BatchNorm into the convolution and uploads it; the host copies are dropped. */
  prepare(e: Engine): void {
    ({ weight: this.w, bias: this.b } = foldBatchNorm(e, this.conv, this.bn, 1e-3));
  }

  forward(e: Engine, x: Tensor): Tensor {
    if (!this.w) throw new Error(`${this.path}: weights not prepared (call Inception.prepare after loading)`);
    return conv2d(e, x, this.w, { stride: this.stride, padding: pair(this.padding), bias: this.b, act: 'relu' });
  }
}

abstract class Block extends Module {
  protected conv(name: string, cin: number, cout: number, k: K, stride = 1, padding: K = 0): BasicConv2d {
    return this.child(name, new BasicConv2d(cin, cout, k, stride, padding));
  }
  abstract forward(e: Engine, x: Tensor): Tensor;
}

/** FIDInceptionA: 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg-pool (padding excluded)→1×1. */
class InceptionA extends Block {
  private readonly c;
  constructor(cin: number, poolFeatures: number) {
    super();
    this.c = {
      b1: this.conv('branch1x1', cin, 64, 1),
      b5a: this.conv('branch5x5_1', cin, 48, 1),
      b5b: this.conv('branch5x5_2', 48, 64, 5, 1, 2),
      d1: this.conv('branch3x3dbl_1', cin, 64, 1),
      d2: this.conv('branch3x3dbl_2', 64, 96, 3, 1, 1),
      d3: this.conv('branch3x3dbl_3', 96, 96, 3, 1, 1),
      pool: this.conv('branch_pool', cin, poolFeatures, 1),
    };
  }
  forward(e: Engine, x: Tensor): Tensor {
    const c = this.c;
    return concat(e, [
      c.b1.forward(e, x),
      c.b5b.forward(e, c.b5a.forward(e, x)),
      c.d3.forward(e, c.d2.forward(e, c.d1.forward(e, x))),
      c.pool.forward(e, pool2d(e, x, 'avg', 3, 1, 1)),
    ], 1);
  }
}

/** InceptionB (Mixed_6a): 3×3 stride 2 | 1×1→3×3→3×3 stride 2 | max-pool 3 stride 2. */
class InceptionB extends Block {
  private readonly c;
  constructor(cin: number) {
    super();
    this.c = {
      b3: this.conv('branch3x3', cin, 384, 3, 2),
      d1: this.conv('branch3x3dbl_1', cin, 64, 1),
      d2: this.conv('branch3x3dbl_2', 64, 96, 3, 1, 1),
      d3: this.conv('branch3x3dbl_3', 96, 96, 3, 2),
    };
  }
  forward(e: Engine, x: Tensor): Tensor {
    const c = this.c;
    return concat(e, [c.b3.forward(e, x), c.d3.forward(e, c.d2.forward(e, c.d1.forward(e, x))), maxPool2d(e, x, 3, 2)], 1);
  }
}

/** FIDInceptionC: 1×1 | 1×1→1×7→7×1 | 1×1→7×1→1×7→7×1→1×7 | avg-pool (padding excluded)→1×1. */
class InceptionC extends Block {
  private readonly b1;
  private readonly b7: BasicConv2d[];
  private readonly d7: BasicConv2d[];
  private readonly pool;
  constructor(cin: number, c7: number) {
    super();
    const row: [number, number] = [1, 7];
    const col: [number, number] = [7, 1];
    this.b1 = this.conv('branch1x1', cin, 192, 1);
    this.b7 = [
      this.conv('branch7x7_1', cin, c7, 1),
      this.conv('branch7x7_2', c7, c7, row, 1, [0, 3]),
      this.conv('branch7x7_3', c7, 192, col, 1, [3, 0]),
    ];
    this.d7 = [
      this.conv('branch7x7dbl_1', cin, c7, 1),
      this.conv('branch7x7dbl_2', c7, c7, col, 1, [3, 0]),
      this.conv('branch7x7dbl_3', c7, c7, row, 1, [0, 3]),
      this.conv('branch7x7dbl_4', c7, c7, col, 1, [3, 0]),
      this.conv('branch7x7dbl_5', c7, 192, row, 1, [0, 3]),
    ];
    this.pool = this.conv('branch_pool', cin, 192, 1);
  }
  forward(e: Engine, x: Tensor): Tensor {
    const chain = (cs: BasicConv2d[]): Tensor => cs.reduce((h, c) => c.forward(e, h), x);
    return concat(e, [this.b1.forward(e, x), chain(this.b7), chain(this.d7), this.pool.forward(e, pool2d(e, x, 'avg', 3, 1, 1))], 1);
  }
}

/** InceptionD (Mixed_7a): 1×1→3×3 stride 2 | 1×1→1×7→7×1→3×3 stride 2 | max-pool 3 stride 2. */
class InceptionD extends Block {
  private readonly b3: BasicConv2d[];
  private readonly b7: BasicConv2d[];
  constructor(cin: number) {
    super();
    this.b3 = [this.conv('branch3x3_1', cin, 192, 1), this.conv('branch3x3_2', 192, 320, 3, 2)];
    this.b7 = [
      this.conv('branch7x7x3_1', cin, 192, 1),
      this.conv('branch7x7x3_2', 192, 192, [1, 7], 1, [0, 3]),
      this.conv('branch7x7x3_3', 192, 192, [7, 1], 1, [3, 0]),
      this.conv('branch7x7x3_4', 192, 192, 3, 2),
    ];
  }
  forward(e: Engine, x: Tensor): Tensor {
    const chain = (cs: BasicConv2d[]): Tensor => cs.reduce((h, c) => c.forward(e, h), x);
    return concat(e, [chain(this.b3), chain(this.b7), maxPool2d(e, x, 3, 2)], 1);
  }
}

/** FIDInceptionE_1 (avg pool, padding excluded) and FIDInceptionE_2 (max pool) in the pool branch. */
class InceptionE extends Block {
  private readonly c;
  constructor(cin: number, readonly poolMode: 'avg' | 'max') {
    super();
    this.c = {
      b1: this.conv('branch1x1', cin, 320, 1),
      b3: this.conv('branch3x3_1', cin, 384, 1),
      b3a: this.conv('branch3x3_2a', 384, 384, [1, 3], 1, [0, 1]),
      b3b: this.conv('branch3x3_2b', 384, 384, [3, 1], 1, [1, 0]),
      d1: this.conv('branch3x3dbl_1', cin, 448, 1),
      d2: this.conv('branch3x3dbl_2', 448, 384, 3, 1, 1),
      d3a: this.conv('branch3x3dbl_3a', 384, 384, [1, 3], 1, [0, 1]),
      d3b: this.conv('branch3x3dbl_3b', 384, 384, [3, 1], 1, [1, 0]),
      pool: this.conv('branch_pool', cin, 192, 1),
    };
  }
  forward(e: Engine, x: Tensor): Tensor {
    const c = this.c;
    const b3 = c.b3.forward(e, x);
    const d = c.d2.forward(e, c.d1.forward(e, x));
    return concat(e, [
      c.b1.forward(e, x),
      c.b3a.forward(e, b3), c.b3b.forward(e, b3),
      c.d3a.forward(e, d), c.d3b.forward(e, d),
      c.pool.forward(e, pool2d(e, x, this.poolMode, 3, 1, 1)),
    ], 1);
  }
}

export class FidInception extends Module {
  private readonly stem: BasicConv2d[];
  private readonly stem2: BasicConv2d[];
  private readonly mixed6: Block[];
  private readonly mixed7: Block[];

  constructor() {
    super();
    this.stem = [
      this.child('Conv2d_1a_3x3', new BasicConv2d(3, 32, 3, 2)),
      this.child('Conv2d_2a_3x3', new BasicConv2d(32, 32, 3)),
      this.child('Conv2d_2b_3x3', new BasicConv2d(32, 64, 3, 1, 1)),
    ];
    this.stem2 = [this.child('Conv2d_3b_1x1', new BasicConv2d(64, 80, 1)), this.child('Conv2d_4a_3x3', new BasicConv2d(80, 192, 3))];
    this.mixed6 = [
      this.child('Mixed_5b', new InceptionA(192, 32)),
      this.child('Mixed_5c', new InceptionA(256, 64)),
      this.child('Mixed_5d', new InceptionA(288, 64)),
      this.child('Mixed_6a', new InceptionB(288)),
      this.child('Mixed_6b', new InceptionC(768, 128)),
      this.child('Mixed_6c', new InceptionC(768, 160)),
      this.child('Mixed_6d', new InceptionC(768, 160)),
      this.child('Mixed_6e', new InceptionC(768, 192)),
    ];
    this.mixed7 = [this.child('Mixed_7a', new InceptionD(768)), this.child('Mixed_7b', new InceptionE(1280, 'avg')), this.child('Mixed_7c', new InceptionE(2048, 'max'))];
  }

  /** After loadFromCheckpoint: folds every BatchNorm and uploads the convolutions. */
  prepare(e: Engine): this {
    for (const [, m] of this.modules()) if (m instanceof BasicConv2d) m.prepare(e);
    return this;
  }

  /** pytorch-fid's four block outputs for x [1, 3, H, W] in [0, 1]; the last is pool3 [1, 2048, 1, 1]. */
  blocks(e: Engine, x01: Tensor): Tensor[] {
    let x = scale(e, resizeBilinear(e, x01, 299, 299), 2, -1);
    for (const c of this.stem) x = c.forward(e, x);
    const b0 = maxPool2d(e, x, 3, 2);
    x = b0;
    for (const c of this.stem2) x = c.forward(e, x);
    const b1 = maxPool2d(e, x, 3, 2);
    x = b1;
    for (const m of this.mixed6) x = m.forward(e, x);
    const b2 = x;
    for (const m of this.mixed7) x = m.forward(e, x);
    const [, C, H, W] = x.shape;
    const b3 = mean(e, x.reshape([1, C, H * W]), 2).reshape([1, C, 1, 1]);
    return [b0, b1, b2, b3];
  }

  /** The 2048-d pool3 feature of one image, on the host. */
  async pool3(e: Engine, x01: Tensor): Promise<Float32Array> {
    const f = e.tidy(() => this.blocks(e, x01)[3]);
    const out = await e.read(f);
    e.release(f);
    return out;
  }
}
