// Photo I/O for `dr restore`: bit depth, alpha and EXIF orientation in; format by
// extension, no overwrite without force and no partial files out; output naming.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DrError } from '../src/errors.js';
import { loadImage, outputPathFor, saveImage } from '../src/image/restore_io.js';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-io-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const file = (name: string) => path.join(tmp, name);
/** A W×H ramp with a distinct value per sample. */
function ramp(w: number, h: number, channels: number, max: number): number[] {
  return Array.from({ length: w * h * channels }, (_, i) => Math.round(((i * 7919) % (max + 1))));
}

describe('loadImage', () => {
  it('keeps 16-bit PNG samples exactly and the alpha channel', async () => {
    const [w, h] = [5, 3];
    const samples = new Uint16Array(ramp(w, h, 4, 65535));
    await sharp(samples, { raw: { width: w, height: h, channels: 4 } }).toColourspace('rgb16').png().toFile(file('deep.png'));
    const img = await loadImage(file('deep.png'));
    expect([img.width, img.height, img.bitDepth, img.format]).toEqual([w, h, 16, 'png']);
    const n = w * h;
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < 3; c++) expect(img.rgb[c * n + i]).toBeCloseTo(samples[i * 4 + c] / 65535, 7);
      expect(img.alpha![i]).toBeCloseTo(samples[i * 4 + 3] / 65535, 7);
    }
  });

  it('applies EXIF orientation (6: rotate 90° clockwise)', async () => {
    await sharp({ create: { width: 4, height: 2, channels: 3, background: '#808080' } }).jpeg().withMetadata({ orientation: 6 }).toFile(file('rotated.jpg'));
    const img = await loadImage(file('rotated.jpg'));
    expect([img.width, img.height, img.alpha]).toEqual([2, 4, undefined]);
  });

  it('expands grayscale to RGB', async () => {
    await sharp(Buffer.from([0, 128, 255, 64]), { raw: { width: 2, height: 2, channels: 1 } }).png().toFile(file('gray.png'));
    const img = await loadImage(file('gray.png'));
    expect(Array.from(img.rgb.slice(0, 4))).toEqual(Array.from(img.rgb.slice(8, 12)));
    expect(img.rgb[1]).toBeCloseTo(128 / 255, 6);
  });

  it.each([
    ['notes.png', 'hello', /not a readable image/],
    ['empty.png', '', /empty file/],
  ])('%s: one clear error naming the file', async (name, content, why) => {
    fs.writeFileSync(file(name), content);
    await expect(loadImage(file(name))).rejects.toThrow(DrError);
    await expect(loadImage(file(name))).rejects.toThrow(new RegExp(`${name}.*${why.source}`));
  });
});

describe('saveImage', () => {
  const img = { width: 3, height: 2, rgb: new Float32Array(18).map((_, i) => i / 17), alpha: new Float32Array([1, 0.5, 0, 1, 1, 0.25]) };

  it.each(['png', 'tif'])('16-bit %s round-trips to 1/65535 with alpha', async (ext) => {
    const p = file(`out16.${ext}`);
    await saveImage(p, img, { bitDepth: 16 });
    const back = await loadImage(p);
    expect(back.bitDepth).toBe(16);
    for (let i = 0; i < 18; i++) expect(Math.abs(back.rgb[i] - img.rgb[i])).toBeLessThanOrEqual(0.5 / 65535 + 1e-7);
    for (let i = 0; i < 6; i++) expect(Math.abs(back.alpha![i] - img.alpha[i])).toBeLessThanOrEqual(0.5 / 65535 + 1e-7);
  });

  it('writes JPEG and WebP by extension; JPEG has no alpha', async () => {
    await saveImage(file('o.jpg'), img);
    await saveImage(file('o.webp'), img);
    expect((await sharp(file('o.jpg')).metadata()).format).toBe('jpeg');
    expect((await sharp(file('o.jpg')).metadata()).hasAlpha).toBe(false);
    expect((await sharp(file('o.webp')).metadata()).format).toBe('webp');
  });

  it('never replaces a file without force, and leaves no temporary file', async () => {
    const p = file('keep.png');
    fs.writeFileSync(p, 'precious');
    await expect(saveImage(p, img)).rejects.toThrow(/already exists \(use --force to overwrite\)/);
    expect(fs.readFileSync(p, 'utf8')).toBe('precious');
    await saveImage(p, img, { force: true });
    expect((await sharp(p).metadata()).format).toBe('png');
    expect(fs.readdirSync(tmp).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('refuses an extension it cannot write, and a missing folder, naming the path', async () => {
    await expect(saveImage(file('o.bmp'), img)).rejects.toThrow(/o\.bmp: cannot write this format/);
    await expect(saveImage(file('no/such/o.png'), img)).rejects.toThrow(/o\.png: cannot write \(no folder/);
  });
});

describe('outputPathFor', () => {
  it('puts NAME_restored.EXT beside the input by default; GIF becomes PNG', () => {
    expect(outputPathFor('a/b/photo.jpg', undefined, false)).toBe(path.join('a/b', 'photo_restored.jpg'));
    expect(outputPathFor('a/anim.gif', undefined, false)).toBe(path.join('a', 'anim_restored.png'));
  });

  it('takes -o as a file for one input, as a folder when it ends in / or there are several', () => {
    expect(outputPathFor('in.png', file('x.webp'), false)).toBe(file('x.webp'));
    expect(outputPathFor('in.png', `${file('dir1')}/`, false)).toBe(path.join(file('dir1'), 'in.png'));
    expect(fs.statSync(file('dir1')).isDirectory()).toBe(true);
    expect(outputPathFor('in.png', file('dir2'), true)).toBe(path.join(file('dir2'), 'in.png'));
  });

  it('refuses one output file for several inputs, and replacing an input', () => {
    expect(() => outputPathFor('in.png', file('one.png'), true)).toThrow(/one output file for several inputs/);
    expect(() => outputPathFor(path.join(tmp, 'same.png'), tmp, true)).toThrow(/is the folder of the input/);
  });
});
