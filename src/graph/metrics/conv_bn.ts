// Convolutions followed by an eval-mode BatchNorm (CLIP RN50 for CLIP-IQA, InceptionV3 for FID).
// Both load on the host under the checkpoint's key names and are folded into one convolution
// with a bias, so inference runs a single conv per pair.
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { Module, type Param } from '../module.js';

/** A bias-free conv whose weight stays on the host until it is folded with its BatchNorm. */
export class HostConv extends Module {
  readonly weight: Param;
  constructor(cin: number, cout: number, k: number | [number, number]) {
    super();
    const [kh, kw] = typeof k === 'number' ? [k, k] : k;
    this.weight = this.param('weight', [cout, cin, kh, kw], true);
  }
}

export class BatchNorm2d extends Module {
  readonly weight: Param;
  readonly bias: Param;
  readonly running_mean: Param;
  readonly running_var: Param;
  constructor(ch: number) {
    super();
    this.weight = this.param('weight', [ch], true);
    this.bias = this.param('bias', [ch], true);
    this.running_mean = this.param('running_mean', [ch], true);
    this.running_var = this.param('running_var', [ch], true);
  }
}

/**
 * conv (no bias) → BatchNorm (eval) as one conv: weight w·γ/√(σ²+eps), bias β − μ·γ/√(σ²+eps),
 * uploaded in f32; the host copies are dropped.
 */
export function foldBatchNorm(e: Engine, conv: HostConv, bn: BatchNorm2d, eps: number): { weight: Tensor; bias: Tensor } {
  const w = conv.weight.hostValue;
  const [gamma, beta, mu, v] = [bn.weight, bn.bias, bn.running_mean, bn.running_var].map((p) => p.hostValue);
  const cout = gamma.length;
  const per = w.length / cout;
  const fw = new Float32Array(w.length);
  const fb = new Float32Array(cout);
  for (let c = 0; c < cout; c++) {
    const s = gamma[c] / Math.sqrt(v[c] + eps);
    for (let i = 0; i < per; i++) fw[c * per + i] = w[c * per + i] * s;
    fb[c] = beta[c] - mu[c] * s;
  }
  for (const p of [conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var]) p.value = undefined;
  return {
    weight: e.createWeight(new Uint8Array(fw.buffer), conv.weight.shape, 'f32'),
    bias: e.createWeight(new Uint8Array(fb.buffer), [cout], 'f32'),
  };
}
