// The sampling loop shared by every mode: UNet (+ control network) noise
// prediction with optional classifier-free guidance, over latent tiles blended
// MultiDiffusion-style when the latent is larger than one tile, stepped by UniPC.
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { concat, expand, slice } from '../../engine/ops/copy.js';
import { linearCombination } from '../../engine/ops/linear_combination.js';
import { TileBlender, crop, planTiles } from '../../engine/ops/eval/tiles.js';
import type { ControlNetModel } from './controlnet.js';
import type { UniPCScheduler } from './unipc.js';
import type { UNet2DConditionModel } from './unet.js';

export interface ControlInput {
  model: ControlNetModel;
  /** The embedded hint for the whole latent, [1, C0, h, w] (ControlNetModel.embedHint). */
  hintEmbedding: Tensor;
  scale: number;
}

export interface DenoiseOptions {
  unet: UNet2DConditionModel;
  scheduler: UniPCScheduler;
  /** Starting latent [1, 4, h, w]: noise, or a noised image latent for img2img. */
  latents: Tensor;
  /** Cross-attention context [1, L, D]. */
  context: Tensor;
  /** Context of the unconditional branch; guidance > 1 needs it. */
  uncondContext?: Tensor;
  guidance: number;
  steps: number;
  /** img2img: start at this index of the schedule (diffusers: steps − strength·steps). */
  startIndex?: number;
  control?: ControlInput;
  /** Latent tile side and overlap; a latent within one tile runs whole. */
  tile?: { size: number; overlap: number };
  onStep?: (i: number, timestep: number, latent: Tensor) => void | Promise<void>;
}

/** Runs the schedule from startIndex to the end; returns the final latent (kept, caller releases). */
export async function denoise(e: Engine, o: DenoiseOptions): Promise<Tensor> {
  const { scheduler } = o;
  scheduler.setTimesteps(o.steps);
  const start = o.startIndex ?? 0;
  scheduler.setBeginIndex(start);
  const guided = o.guidance !== 1 && !!o.uncondContext;
  // [uncond, cond] in one UNet batch, as diffusers' pipelines run guidance.
  const context = e.keep(guided ? concat(e, [o.uncondContext!, o.context], 0) : o.context);
  const [, , h, w] = o.latents.shape;
  const tiles = o.tile ? planTiles(h, w, o.tile.size, o.tile.overlap) : planTiles(h, w, Math.max(h, w), 0);
  let latent = o.latents;
  try {
    for (let i = start; i < scheduler.timesteps.length; i++) {
      const t = scheduler.timesteps[i];
      const next = e.tidy(() => {
        let noise: Tensor;
        if (tiles.length === 1) {
          noise = predict(e, o, guided, context, latent, o.control?.hintEmbedding, t);
        } else {
          const blender = new TileBlender(e, latent.shape, o.tile!.overlap);
          for (const tile of tiles) {
            e.tidy(() => blender.add(predict(e, o, guided, context, crop(e, latent, tile), o.control && crop(e, o.control.hintEmbedding, tile), t), tile));
          }
          noise = blender.result();
        }
        return scheduler.step(e, noise, t, latent);
      });
      if (latent !== o.latents) e.release(latent);
      latent = e.keep(next);
      await o.onStep?.(i, t, latent);
    }
  } finally {
    if (context !== o.context) e.release(context);
  }
  return latent;
}

/** Noise prediction for one latent window, guided when asked. */
function predict(e: Engine, o: DenoiseOptions, guided: boolean, context: Tensor, x: Tensor, hint: Tensor | undefined, t: number): Tensor {
  return e.tidy(() => {
    const input = guided ? concat(e, [x, x], 0) : x; // [G, 4, th, tw]
    const hints = hint && guided ? expand(e, hint, [2, ...hint.shape.slice(1)]) : hint;
    const residuals = o.control && o.control.model.forward(e, input, t, context, hints!, o.control.scale);
    const noise = o.unet.forward(e, input, t, context, residuals);
    if (!guided) return noise;
    const [uncond, cond] = [slice(e, noise, 0, 0, 1), slice(e, noise, 0, 1, 2)];
    return linearCombination(e, [[1 - o.guidance, uncond], [o.guidance, cond]]);
  });
}
