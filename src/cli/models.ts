import fs from 'node:fs';
import path from 'node:path';
import { DrError } from '../errors.js';
import type { Engine } from '../engine/engine.js';
import { ClipModel } from '../graph/clip/model.js';
import type { Precision } from '../graph/module.js';
import { Checkpoint } from '../weights/checkpoint.js';
import { Progress } from './progress.js';

/** A model folder must exist and be a folder; everything else is checked by the loaders. */
export function modelDir(dir: string | undefined, option: string): string {
  if (!dir) throw new DrError(`${option} is required: a Hugging Face model folder (config.json + *.safetensors)`);
  const stat = fs.statSync(dir, { throwIfNoEntry: false });
  if (!stat) throw new DrError(`${dir}: no such model folder`);
  if (!stat.isDirectory()) throw new DrError(`${dir}: not a folder (${option} takes a Hugging Face model folder)`);
  return path.resolve(dir);
}

/** Loads a CLIPModel folder with a progress bar over the weight bytes. */
export function loadClip(e: Engine, dir: string, precision: Precision): ClipModel {
  const ckpt = Checkpoint.open(dir);
  const total = ckpt.keys().reduce((s, k) => s + ckpt.info(k).byteLength, 0);
  ckpt.close();
  const bar = new Progress('loading CLIP', total, { bytes: true, minTotal: 64 * 2 ** 20 });
  try {
    return ClipModel.load(e, dir, precision, (bytes) => bar.tick(bytes));
  } finally {
    bar.stop();
  }
}
