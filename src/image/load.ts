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

/** Files to process: each file as given, each directory expanded to its images (sorted; subfolders too with `recursive`). */
export function listImages(inputs: string[], recursive = false): string[] {
  return listImageTree(inputs, recursive).map((f) => f.file);
}

/**
 * listImages with each file's path relative to the folder it was found in (its name for a file
 * given itself), so outputs can mirror the subfolders of a --recursive input.
 */
export function listImageTree(inputs: string[], recursive = false): { file: string; rel: string }[] {
  const out: { file: string; rel: string }[] = [];
  for (const input of inputs) {
    if (!statOrThrow(input).isDirectory()) {
      out.push({ file: input, rel: path.basename(input) });
      continue;
    }
    const files = imagesIn(input, '', recursive);
    if (files.length === 0) {
      const dir = input.endsWith('/') ? input : `${input}/`;
      throw new DrError(`${dir}: no images (${IMAGE_EXTS.join(', ')})${recursive ? '' : '; --recursive also looks in subfolders'}`);
    }
    out.push(...files.map((rel) => ({ file: path.join(input, rel), rel })));
  }
  return out;
}

/** Image files under root/sub, sorted, each folder's files before its subfolders'; hidden folders (.git) skipped. */
function imagesIn(root: string, sub: string, recursive: boolean): string[] {
  const entries = fs.readdirSync(path.join(root, sub), { withFileTypes: true });
  const files = entries.filter((e) => e.isFile() && isImagePath(e.name)).map((e) => path.join(sub, e.name)).sort();
  if (!recursive) return files;
  const dirs = entries.filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name).sort();
  return [...files, ...dirs.flatMap((d) => imagesIn(root, path.join(sub, d), true))];
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
