// Degradation-aware Control Encoder (its DMBs modulate features by P_D), the
// Control Decoder used as a training-time reconstruction head, and the Image
// Control Network: a ControlNet whose hint encoder is the Control Encoder.
import { DrError } from '../../errors.js';
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { mul } from '../../engine/ops/elementwise.js';
import { upsampleNearest2x } from '../../engine/ops/copy.js';
import { Checkpoint } from '../../weights/checkpoint.js';
import { ConfigFile } from '../config.js';
import { Module, ModuleList, loadModule, type Precision } from '../module.js';
import { Conv2d, Linear } from '../nn.js';
import { ResnetBlock2D } from '../sd/blocks.js';
import { ControlNetModel, readControlNetConfig, type HintEncoder } from '../sd/controlnet.js';

export interface ControlEncoderConfig {
  inChannels: number;
  channels: number[];
  groups: number;
  eps: number;
  degradationDim: number;
}

/** ResBlock without time embedding: the SD VAE's ResnetBlock2D. */
const resBlock = (inCh: number, out: number, cfg: ControlEncoderConfig): ResnetBlock2D =>
  new ResnetBlock2D(inCh, out, undefined, cfg.groups, cfg.eps);

/** Per-channel gate sigmoid(Linear(P_D)) [B, C] applied to x [B, C, H, W]. */
function modulate(e: Engine, x: Tensor, gate: Linear, pd: Tensor): Tensor {
  return e.tidy(() => {
    const f = gate.forward(e, pd, 'sigmoid'); // [B, C]
    return mul(e, x, f.reshape([f.shape[0], f.shape[1], 1, 1]));
  });
}

/** Degradation Modulation Block (Eq. 3): F^ = ResBlock(ResBlock(F) ⊗ sigmoid(Linear(P_D))). */
class DegradationModulationBlock extends Module {
  readonly block1: ResnetBlock2D;
  readonly modulation: Linear;
  readonly block2: ResnetBlock2D;

  constructor(channels: number, cfg: ControlEncoderConfig) {
    super();
    this.block1 = this.child('block1', resBlock(channels, channels, cfg));
    this.modulation = this.child('modulation', new Linear(cfg.degradationDim, channels));
    this.block2 = this.child('block2', resBlock(channels, channels, cfg));
  }

  forward(e: Engine, x: Tensor, pd: Tensor): Tensor {
    return e.tidy(() => this.block2.forward(e, modulate(e, this.block1.forward(e, x), this.modulation, pd)));
  }
}

class EncoderStage extends Module {
  readonly dmb: DegradationModulationBlock;
  readonly downsample?: Conv2d;

  constructor(channels: number, next: number | undefined, cfg: ControlEncoderConfig) {
    super();
    this.dmb = this.child('dmb', new DegradationModulationBlock(channels, cfg));
    if (next !== undefined) this.downsample = this.child('downsample', new Conv2d(channels, next, 3, 2, 1));
  }
}

/** Conv3×3 → DMB stages (stride-2 convs between them, H → H/8) → zero-initialised Conv1×1 → c. */
export class ControlEncoder extends Module implements HintEncoder {
  readonly conv_in: Conv2d;
  readonly stages: ModuleList<EncoderStage>;
  readonly conv_out: Conv2d;

  constructor(readonly cfg: ControlEncoderConfig, outChannels: number) {
    super();
    const ch = cfg.channels;
    this.conv_in = this.child('conv_in', new Conv2d(cfg.inChannels, ch[0], 3, 1, 1));
    this.stages = this.child('stages', new ModuleList(ch.map((c, k) => new EncoderStage(c, ch[k + 1], cfg))));
    this.conv_out = this.child('conv_out', new Conv2d(ch.at(-1)!, outChannels, 1));
  }

  /** I_LQ [B, 3, H, W] in [0, 1], P_D [B, D] → features before conv_out [B, C_last, H/8, W/8]. */
  features(e: Engine, image: Tensor, pd: Tensor): Tensor {
    return e.tidy(() => {
      let h = this.conv_in.forward(e, image);
      for (const stage of this.stages.items) {
        h = stage.dmb.forward(e, h, pd);
        if (stage.downsample) h = stage.downsample.forward(e, h);
      }
      return h;
    });
  }

  forward(e: Engine, image: Tensor, pd?: Tensor): Tensor {
    if (!pd) throw new Error('ControlEncoder needs the degradation embedding P_D');
    return e.tidy(() => e.trace(this.path, this.conv_out.forward(e, this.features(e, image, pd))));
  }
}

/** Training-time head: ResBlocks mirroring the encoder, ×2 upsampling between them, Conv3×3 → I_CD. */
export class ControlDecoder extends Module {
  readonly blocks: ModuleList<ResnetBlock2D>;
  readonly upsamplers: ModuleList<Conv2d>;
  readonly conv_out: Conv2d;

  constructor(cfg: ControlEncoderConfig) {
    super();
    const ch = [...cfg.channels].reverse();
    this.blocks = this.child('blocks', new ModuleList(ch.map((c, k) => resBlock(k === 0 ? c : ch[k - 1], c, cfg))));
    this.upsamplers = this.child('upsamplers', new ModuleList(ch.slice(0, -1).map((c) => new Conv2d(c, c, 3, 1, 1))));
    this.conv_out = this.child('conv_out', new Conv2d(ch.at(-1)!, 3, 3, 1, 1));
  }

  /** encoder features [B, C_last, H/8, W/8] → I_CD [B, 3, H, W] */
  forward(e: Engine, features: Tensor): Tensor {
    return e.tidy(() => {
      let h = features;
      this.blocks.items.forEach((block, k) => {
        h = block.forward(e, h);
        if (k < this.upsamplers.items.length) h = this.upsamplers.items[k].forward(e, upsampleNearest2x(e, h));
      });
      return this.conv_out.forward(e, h);
    });
  }
}

export function readControlEncoderConfig(c: ConfigFile): ControlEncoderConfig {
  const s = c.section('control_encoder');
  const channels = s.raw.channels ?? [64, 128, 256, 256];
  if (!Array.isArray(channels) || channels.length < 1 || !channels.every((x) => Number.isInteger(x) && x > 0)) {
    throw new DrError(`${c.file}: "control_encoder.channels" must be a list of positive integers`);
  }
  return {
    inChannels: s.int('in_channels', 3),
    channels: channels as number[],
    groups: s.int('norm_num_groups', 32),
    eps: s.num('norm_eps', 1e-6),
    degradationDim: s.int('degradation_dim', 256),
  };
}

/** control/: the Image Control Network (ControlNet keys) with its encoder, plus `control_decoder.*`. */
export class DiffRestorerControl {
  private constructor(readonly network: ControlNetModel, readonly encoder: ControlEncoder, readonly decoder: ControlDecoder, readonly scale: number) {}

  static build(dir: string): DiffRestorerControl {
    const c = ConfigFile.inDir(dir);
    const netCfg = readControlNetConfig(dir);
    const encCfg = readControlEncoderConfig(c);
    if (2 ** (encCfg.channels.length - 1) !== 8) {
      throw new DrError(`${c.file}: control_encoder.channels must have 4 stages (3 stride-2 convs reach the latent's H/8), got ${encCfg.channels.length}`);
    }
    const encoder = new ControlEncoder(encCfg, netCfg.blockOut[0]);
    return new DiffRestorerControl(new ControlNetModel(netCfg, encoder), encoder, new ControlDecoder(encCfg), c.num('conditioning_scale', 1));
  }

  static load(e: Engine, dir: string, precision: Precision): DiffRestorerControl {
    const control = DiffRestorerControl.build(dir);
    const ckpt = Checkpoint.open(dir);
    try {
      loadModule(e, control.network, ckpt, { precision });
      loadModule(e, control.decoder, ckpt, { precision, prefix: 'control_decoder.' });
    } finally {
      ckpt.close();
    }
    return control;
  }
}
