import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { DrError } from '../errors.js';

/** An 8-bit sRGB image, rows top to bottom, pixels interleaved R,G,B (HWC). */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

// Formats the bundled libvips decodes (sharp.format[..].input.file); BMP is not one of them.
const IMAGE_EXTS = ['.png', '.jpg', '.jpeg', '.webp', '.tif', '.tiff', '.gif'];

export function isImagePath(p: string): boolean {
  return IMAGE_EXTS.includes(path.extname(p).toLowerCase());
}

function statOrThrow(p: string): fs.Stats {
  try {
    return fs.statSync(p);
  } catch {
    throw new DrError(`${p}: no such file or directory`);
  }
}

/** Files to process: each file as given, each directory expanded to its images (not recursive, sorted). */
export function listImages(inputs: string[]): string[] {
  const out: string[] = [];
  for (const input of inputs) {
    if (!statOrThrow(input).isDirectory()) {
      out.push(input);
      continue;
    }
    const files = fs
      .readdirSync(input, { withFileTypes: true })
      .filter((e) => e.isFile() && isImagePath(e.name))
      .map((e) => e.name)
      .sort();
    if (files.length === 0) {
      const dir = input.endsWith('/') ? input : `${input}/`;
      throw new DrError(`${dir}: no images (${IMAGE_EXTS.join(', ')})`);
    }
    out.push(...files.map((f) => path.join(input, f)));
  }
  return out;
}

/**
 * Decodes any format sharp reads into 8-bit sRGB RGB: EXIF orientation applied,
 * 16-bit samples reduced to 8, grayscale expanded to RGB, alpha dropped (not composited).
 */
export async function loadRgb(p: string): Promise<RgbImage> {
  checkImageFile(p);
  const res = await sharp(p)
    .rotate()
    .toColourspace('srgb')
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true })
    .catch(unreadable(p));
  const { width, height, channels } = res.info;
  if (channels !== 3) throw new DrError(`${p}: decoded to ${channels} channels, expected RGB`);
  return { width, height, data: new Uint8Array(res.data.buffer, res.data.byteOffset, res.data.length) };
}

/** An image path that exists, is a file and is not empty (before asking sharp to decode it). */
export function checkImageFile(p: string): void {
  const st = statOrThrow(p);
  if (st.isDirectory()) throw new DrError(`${p}: is a directory, not an image`);
  if (st.size === 0) throw new DrError(`${p}: empty file (0 bytes)`);
}

/** A sharp decoding failure as one line naming the file. */
export const unreadable = (p: string) => (e: Error): never => {
  // sharp says e.g. "Input file contains unsupported image format"; keep the useful part.
  const why = e.message.replace(/^Input file (contains |has |is )?/i, '').split('\n')[0];
  throw new DrError(`${p}: not a readable image (${why})`);
};
