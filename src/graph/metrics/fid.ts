/**
 * FID between two folders (pytorch-fid conventions): the pool3 feature of every image (any
 * size: each is resized to 299×299 on its own), then the Fréchet distance of the two sets in f64.
 */
import type { Engine } from '../../engine/engine.js';
import { loadRgb } from '../../image/load.js';
import { frechetDistance, type FeatureSet, type FrechetResult } from './frechet.js';
import { uploadImage } from './image.js';
import type { FidInception } from './inception.js';

export async function featureSet(e: Engine, model: FidInception, files: string[], onImage?: () => void): Promise<FeatureSet> {
  const d = 2048;
  const data = new Float32Array(files.length * d);
  for (const [i, f] of files.entries()) {
    const x = uploadImage(e, await loadRgb(f));
    data.set(await model.pool3(e, x), i * d);
    e.release(x);
    onImage?.();
  }
  return { data, n: files.length, d };
}

export async function fidBetween(e: Engine, model: FidInception, refFiles: string[], distFiles: string[], onImage?: () => void): Promise<FrechetResult> {
  const a = await featureSet(e, model, refFiles, onImage);
  const b = await featureSet(e, model, distFiles, onImage);
  return frechetDistance(a, b);
}
