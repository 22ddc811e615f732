import fs from 'node:fs';
import path from 'node:path';
import { DrError } from '../errors.js';
import type { Engine } from '../engine/engine.js';
import { ClipModel } from '../graph/clip/model.js';
import type { Precision } from '../graph/module.js';
import { Checkpoint } from '../weights/checkpoint.js';
import { resolveModel } from '../weights/hub.js';
import { Progress } from './progress.js';

/** A model folder, or a Hugging Face repo id found in the local cache; the loaders check the rest. */
export function modelDir(dir: string | undefined, option: string): string {
  if (!dir) throw new DrError(`${option} is required: a Hugging Face model folder (config.json + *.safetensors) or repo id ORG/NAME`);
  return resolveModel(dir);
}

/** `--sd`: a diffusers folder or repo id, or a single-file checkpoint in the original layout (.safetensors, .ckpt). */
export function sdModel(spec: string | undefined, option: string): string {
  if (spec && fs.statSync(spec, { throwIfNoEntry: false })?.isFile()) return path.resolve(spec);
  return modelDir(spec, option);
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
