// Degradation-aware Decoder: the SD VAE decoder with a Degradation-aware
// Refinement Block (DRB, Eq. 5) after each upsampler, fed the frozen VAE
// encoder's features of the low-quality input and modulated by P_D.
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { add, mul, scale } from '../../engine/ops/elementwise.js';
import { cast, concat } from '../../engine/ops/copy.js';
import { ConfigFile } from '../config.js';
import { Module, ModuleList, loadFromCheckpoint, type Precision } from '../module.js';
import { Conv2d, Linear } from '../nn.js';
import { ResnetBlock2D } from '../sd/blocks.js';
import { VaeDecoder, readVaeConfig, type VaeConfig } from '../sd/vae.js';

/** DRB: z^ = ResBlock(Conv3×3(concat(z, z_lq)) ⊗ sigmoid(Linear(P_D))) + z. */
export class DegradationRefinementBlock extends Module {
  readonly fuse: Conv2d;
  readonly modulation: Linear;
  readonly block: ResnetBlock2D;

  constructor(channels: number, skipChannels: number, degradationDim: number, groups: number) {
    super();
    this.fuse = this.child('fuse', new Conv2d(channels + skipChannels, channels, 3, 1, 1));
    this.modulation = this.child('modulation', new Linear(degradationDim, channels));
    this.block = this.child('block', new ResnetBlock2D(channels, channels, undefined, groups, 1e-6));
  }

  forward(e: Engine, z: Tensor, skip: Tensor, pd: Tensor): Tensor {
    return e.tidy(() => {
      const fused = this.fuse.forward(e, concat(e, [z, cast(e, skip, z.dtype)], 1));
      const f = this.modulation.forward(e, pd, 'sigmoid'); // [B, C]
      const gated = mul(e, fused, f.reshape([f.shape[0], f.shape[1], 1, 1]));
      return add(e, this.block.forward(e, gated), z);
    });
  }
}

export interface DecoderConfig extends VaeConfig {
  degradationDim: number;
  /** false: no DRB weights, the decoder is exactly the SD VAE decoder. */
  drbs: boolean;
}

export function readDecoderConfig(dir: string): DecoderConfig {
  const c = ConfigFile.inDir(dir);
  return { ...readVaeConfig(dir), degradationDim: c.int('degradation_dim', 256), drbs: c.raw.drbs !== false };
}

export class DegradationAwareDecoder extends Module {
  readonly post_quant_conv?: Conv2d;
  readonly decoder: VaeDecoder;
  readonly drbs?: ModuleList<DegradationRefinementBlock>;

  constructor(readonly config: DecoderConfig) {
    super();
    const lc = config.latentChannels;
    if (config.postQuantConv) this.post_quant_conv = this.child('post_quant_conv', new Conv2d(lc, lc, 1));
    this.decoder = this.child('decoder', new VaeDecoder(config));
    if (config.drbs) {
      const b = config.blockOut;
      const rev = [...b].reverse();
      // DRB i follows up block i's upsampler (H/4, H/2, H); its skip is the encoder state
      // entering downsampler n-2-i, at the same resolution.
      this.drbs = this.child('drbs', new ModuleList(rev.slice(0, -1).map((ch, i) =>
        new DegradationRefinementBlock(ch, b[b.length - 2 - i], config.degradationDim, config.groups))));
    }
  }

  static load(e: Engine, dir: string, precision: Precision): DegradationAwareDecoder {
    const model = new DegradationAwareDecoder(readDecoderConfig(dir));
    loadFromCheckpoint(e, model, dir, { precision });
    return model;
  }

  /**
   * Scaled latent [B, C, h, w], the VAE encoder's skip features of I_LQ (at H, H/2,
   * H/4: AutoencoderKL.encodeMoments().levels) and P_D → image [B, 3, H, W] in [-1, 1].
   */
  decode(e: Engine, latent: Tensor, skips: Tensor[], pd: Tensor): Tensor {
    return e.tidy(() => {
      let z = scale(e, latent, 1 / this.config.scalingFactor);
      const dt = this.decoder.conv_in.weight.t.dtype;
      z = cast(e, z, dt);
      if (this.post_quant_conv) z = this.post_quant_conv.forward(e, z);
      const n = this.config.blockOut.length;
      return this.decoder.forward(e, z, this.drbs && ((i, h) => this.drbs!.items[i].forward(e, h, skips[n - 2 - i], pd)));
    });
  }
}
