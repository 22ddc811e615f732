import fs from 'node:fs';
import path from 'node:path';
import sharp, { type Metadata } from 'sharp';
import { checkOutputFolder, checkWritable, Inputs, writeAtomic } from '../atomic.js';
import { DrError } from '../errors.js';
import { checkImageFile, isImagePath, unreadable } from './load.js';

/** A decoded photo as the restorer consumes it. */
export interface LoadedImage {
  width: number;
  height: number;
  /** CHW [3, H, W] in [0, 1]. */
  rgb: Float32Array;
  /** [H·W] in [0, 1], when the file has an alpha channel. */
  alpha?: Float32Array;
  bitDepth: 8 | 16;
  /** sharp's name of the input format (png, jpeg, webp, tiff, gif). */
  format: string;
}

export interface ImageToSave {
  width: number;
  height: number;
  /** CHW [3, H, W]; values outside [0, 1] are clamped. */
  rgb: Float32Array;
  alpha?: Float32Array;
}

export interface SaveOptions {
  /** 16 writes 16-bit samples to PNG and TIFF; JPEG and WebP are always 8-bit. */
  bitDepth?: 8 | 16;
  force?: boolean;
  /** JPEG and WebP quality, 1–100 (default 95). */
  quality?: number;
}

const INPUT_FORMATS = ['png', 'jpeg', 'webp', 'tiff', 'gif'];
const OUTPUT_FORMATS: Record<string, 'png' | 'jpeg' | 'webp' | 'tiff'> = {
  '.png': 'png', '.jpg': 'jpeg', '.jpeg': 'jpeg', '.webp': 'webp', '.tif': 'tiff', '.tiff': 'tiff',
};

function outputFormat(p: string): 'png' | 'jpeg' | 'webp' | 'tiff' {
  const format = OUTPUT_FORMATS[path.extname(p).toLowerCase()];
  if (!format) {
    throw new DrError(`${p}: cannot write this format (supported: ${Object.keys(OUTPUT_FORMATS).join(' ')}; end a folder with /)`);
  }
  return format;
}

/**
 * Decodes PNG, JPEG, WebP, TIFF (and GIF) with EXIF orientation applied. 16-bit
 * files stay 16-bit so their extra precision reaches the model; grayscale becomes RGB.
 */
export async function loadImage(p: string): Promise<LoadedImage> {
  const meta = await checkImage(p);
  const deep = meta.depth === 'ushort';
  const { data, info } = await sharp(p)
    .rotate()
    .toColourspace(deep ? 'rgb16' : 'srgb')
    .raw({ depth: deep ? 'ushort' : 'uchar' })
    .toBuffer({ resolveWithObject: true })
    .catch(unreadable(p));
  // Copied for 16-bit: a Uint16Array view needs an even byte offset, which a Buffer need not have.
  const samples = deep ? new Uint16Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length)) : data;
  const { width, height, channels } = info;
  const n = width * height;
  const max = deep ? 65535 : 255;
  const rgb = new Float32Array(3 * n);
  const alpha = channels === 4 ? new Float32Array(n) : undefined;
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) rgb[c * n + i] = samples[i * channels + c] / max;
    if (alpha) alpha[i] = samples[i * channels + 3] / max;
  }
  return { width, height, rgb, alpha, bitDepth: deep ? 16 : 8, format: meta.format };
}

/** Reads only the header: a file that passes decodes as loadImage expects (cheap, for checking inputs up front). */
export async function checkImage(p: string): Promise<Metadata> {
  checkImageFile(p);
  const meta = await sharp(p).metadata().catch(unreadable(p));
  if (!INPUT_FORMATS.includes(meta.format)) {
    throw new DrError(`${p}: unsupported image format ${meta.format} (supported: PNG, JPEG, WebP, TIFF, GIF)`);
  }
  if (meta.depth !== 'uchar' && meta.depth !== 'ushort') {
    throw new DrError(`${p}: unsupported ${meta.depth} samples (8- and 16-bit images are supported)`);
  }
  return meta;
}

/**
 * Encodes by the extension of `p` (.png .jpg/.jpeg .webp .tif/.tiff): JPEG and WebP at
 * `quality` (95 unless given), TIFF deflate-compressed (sharp's default, JPEG, would be lossy and 8-bit).
 * Alpha is reattached, except for JPEG, which has none: there the image is flattened onto
 * white. The file is written under a temporary name in the same folder and renamed, so a
 * failed or interrupted save never leaves a partial file at `p`; an existing `p` is
 * replaced only with `force`.
 */
export async function saveImage(p: string, img: ImageToSave, opts: SaveOptions = {}): Promise<void> {
  const format = outputFormat(p);
  const { width, height, rgb, alpha } = img;
  const n = width * height;
  if (rgb.length !== 3 * n || (alpha && alpha.length !== n)) {
    throw new Error(`saveImage: ${rgb.length} RGB / ${alpha?.length} alpha values for ${width}x${height}`);
  }
  const deep = opts.bitDepth === 16 && (format === 'png' || format === 'tiff');
  const channels = alpha ? 4 : 3;
  const max = deep ? 65535 : 255;
  const px = deep ? new Uint16Array(n * channels) : new Uint8Array(n * channels);
  const quantise = (v: number): number => Math.round(Math.min(Math.max(v, 0), 1) * max);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) px[i * channels + c] = quantise(rgb[c * n + i]);
    if (alpha) px[i * channels + 3] = quantise(alpha[i]);
  }
  let s = sharp(px, { raw: { width, height, channels } });
  if (deep) s = s.toColourspace('rgb16');
  s = format === 'png' ? s.png()
    : format === 'tiff' ? s.tiff({ compression: 'deflate' })
    : format === 'webp' ? s.webp({ quality: opts.quality ?? 95 })
    : s.flatten({ background: '#ffffff' }).jpeg({ quality: opts.quality ?? 95 });
  const bytes = await s.toBuffer().catch((e: Error): never => {
    throw new DrError(`${p}: cannot encode ${format} (${e.message})`);
  });
  // Checked after encoding, just before writing, to keep the window for a race small.
  checkWritable(p, !!opts.force);
  writeAtomic(p, bytes);
}

/** Ends the name of a restored image written beside its input (NAME_restored.EXT). */
export const RESTORED_SUFFIX = '_restored';

/**
 * Where the restored `input` goes. Without `-o`: beside the input as `<stem><suffix><ext>`.
 * `-o` is a folder when it exists as one, ends in `/`, or there are several inputs (it is
 * created); the file keeps the input's name there. Otherwise `-o` is the output file.
 * Inputs in a format dr cannot write (GIF) get `.png`.
 */
export function outputPathFor(input: string, output: string | undefined, manyInputs: boolean, defaultSuffix = RESTORED_SUFFIX): string {
  const { dir, name, ext: inExt } = path.parse(input);
  const ext = OUTPUT_FORMATS[inExt.toLowerCase()] ? inExt : '.png';
  if (output === undefined) return path.join(dir, `${name}${defaultSuffix}${ext}`);
  const existing = statOrUndefined(output);
  const endsInSep = output.endsWith('/') || output.endsWith(path.sep);
  if (!existing?.isDirectory() && !endsInSep && !manyInputs) {
    outputFormat(output);
    return output;
  }
  if (existing && !existing.isDirectory()) throw new DrError(`${output}: is a file, not an output folder`);
  if (!existing && !endsInSep && isImagePath(output)) {
    throw new DrError(`${output}: one output file for several inputs; give a folder (ending in /)`);
  }
  checkOutputFolder(output, 'folder', new Inputs([input]));
  return path.join(output, `${name}${ext}`);
}

function statOrUndefined(p: string): fs.Stats | undefined {
  try {
    return fs.statSync(p);
  } catch {
    return undefined; // missing, or a path through a file ("a.png/"): not a folder either way
  }
}
