/**
 * FID features (pytorch-fid conventions): the pool3 feature of every image of a folder (any
 * size: each is resized to 299×299 on its own); frechet.ts compares two such sets in f64.
 */
import type { Engine } from '../../engine/engine.js';
import { loadRgb } from '../../image/load.js';
import type { FeatureSet } from './frechet.js';
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

