import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DrError } from '../src/errors.js';
import { isImagePath, listImages, loadRgb, type RgbImage } from '../src/image/load.js';
import { resizeBicubicU8 } from '../src/image/resize.js';
import { centerCropU8, clipPixelValues, readClipImageConfig, shortestEdgeSize } from '../src/graph/clip/preprocess.js';
import { SafetensorsFile } from '../src/weights/safetensors.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const clipDir = path.resolve(repoRoot, '../shared/fixtures/clip-tiny');
const chelsea = path.resolve(repoRoot, '../shared/images/chelsea.png');

describe('CLIP preprocessing vs transformers (PIL backend)', () => {
  const io = SafetensorsFile.open(path.join(clipDir, 'io.safetensors'));
  const cfg = readClipImageConfig(clipDir);
  afterAll(() => io.close());

  const image = (name: string): RgbImage => {
    const [height, width, c] = io.tensors.get(name)!.shape;
    expect(c).toBe(3);
    return { width, height, data: io.readBytes(name) };
  };

  it('reads preprocessor_config.json', () => {
    expect(cfg).toMatchObject({ shortestEdge: 32, cropHeight: 32, cropWidth: 32, doResize: true, doNormalize: true });
  });

  for (const i of [0, 1]) {
    it(`image ${i}: resize, crop and pixel_values match`, () => {
      const raw = image(`preprocess.raw_image.${i}`);
      const wantResized = image(`preprocess.resized_uint8.${i}`);
      const [w, h] = shortestEdgeSize(raw.width, raw.height, cfg.shortestEdge);
      expect([w, h]).toEqual([wantResized.width, wantResized.height]);

      const resized = resizeBicubicU8(raw, w, h);
      expect(Buffer.from(resized.data).equals(Buffer.from(wantResized.data))).toBe(true);

      const cropped = centerCropU8(resized, cfg.cropWidth, cfg.cropHeight);
      expect(Buffer.from(cropped.data).equals(Buffer.from(image(`preprocess.cropped_uint8.${i}`).data))).toBe(true);

      const got = clipPixelValues(raw, cfg);
      const want = io.readF32(`preprocess.pixel_values.${i}`);
      expect(got.length).toBe(want.length);
      let maxErr = 0;
      for (let k = 0; k < want.length; k++) maxErr = Math.max(maxErr, Math.abs(got[k] - want[k]));
      expect(maxErr).toBe(0); // float32 arithmetic is emulated exactly; 1e-6 would be f32 rounding
    });
  }
});

describe('bicubic resize edge cases', () => {
  it('same size is a copy; a flat image stays flat when up- or downscaled', () => {
    const flat: RgbImage = { width: 7, height: 5, data: new Uint8Array(7 * 5 * 3).fill(200) };
    const same = resizeBicubicU8(flat, 7, 5);
    expect(same.data).toEqual(flat.data);
    expect(same.data).not.toBe(flat.data);
    for (const [w, h] of [[3, 2], [20, 11], [7, 9], [1, 1]]) {
      expect(resizeBicubicU8(flat, w, h).data.every((v) => v === 200)).toBe(true);
    }
  });

  it('centre crop pads an image smaller than the crop with zeros', () => {
    const img: RgbImage = { width: 2, height: 1, data: new Uint8Array([1, 2, 3, 4, 5, 6]) };
    const c = centerCropU8(img, 4, 3); // top = floor(-2/2) = -1, left = -1
    expect(Array.from(c.data.subarray((1 * 4 + 1) * 3, (1 * 4 + 3) * 3))).toEqual([1, 2, 3, 4, 5, 6]);
    expect(c.data.reduce((a, b) => a + b, 0)).toBe(21);
  });
});

describe('image loading', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-img-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const expectDrError = async (p: Promise<unknown> | (() => unknown), re: RegExp) => {
    const e = await (typeof p === 'function' ? Promise.resolve().then(p) : p).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(DrError);
    expect((e as Error).message).toMatch(re);
  };

  it('decodes a real photo to 8-bit RGB', async () => {
    const img = await loadRgb(chelsea);
    expect([img.width, img.height]).toEqual([451, 300]);
    expect(img.data.length).toBe(451 * 300 * 3);
  });

  it('applies EXIF orientation', async () => {
    const f = path.join(tmp, 'rotated.jpg');
    await sharp({ create: { width: 40, height: 20, channels: 3, background: { r: 255, g: 0, b: 0 } } })
      .jpeg()
      .withMetadata({ orientation: 6 })
      .toFile(f);
    const img = await loadRgb(f);
    expect([img.width, img.height]).toEqual([20, 40]);
  });

  it('reduces 16-bit and RGBA PNGs to 8-bit RGB', async () => {
    const f16 = path.join(tmp, 'deep.png');
    await sharp({ create: { width: 5, height: 3, channels: 3, background: { r: 10, g: 200, b: 30 } } })
      .toColourspace('rgb16')
      .png()
      .toFile(f16);
    expect((await sharp(f16).metadata()).depth).toBe('ushort');
    const a = await loadRgb(f16);
    expect([a.width, a.height, a.data.length]).toEqual([5, 3, 45]);
    expect(Array.from(a.data.subarray(0, 3))).toEqual([10, 200, 30]);

    const rgba = path.join(tmp, 'alpha.png');
    await sharp({ create: { width: 4, height: 2, channels: 4, background: { r: 1, g: 2, b: 3, alpha: 0.5 } } })
      .png()
      .toFile(rgba);
    const b = await loadRgb(rgba);
    expect(b.data.length).toBe(4 * 2 * 3);
    expect(Array.from(b.data.subarray(0, 3))).toEqual([1, 2, 3]);
  });

  it('reports unreadable inputs as DrError naming the file', async () => {
    const empty = path.join(tmp, 'empty.png');
    fs.writeFileSync(empty, '');
    await expectDrError(loadRgb(empty), /empty\.png: empty file/);

    const text = path.join(tmp, 'notes.png');
    fs.writeFileSync(text, 'just some notes\n');
    await expectDrError(loadRgb(text), /notes\.png: not a readable image \(unsupported image format\)/);

    const trunc = path.join(tmp, 'cut.png');
    fs.writeFileSync(trunc, fs.readFileSync(chelsea).subarray(0, 5000));
    await expectDrError(loadRgb(trunc), /cut\.png: not a readable image/);

    await expectDrError(loadRgb(path.join(tmp, 'missing.png')), /missing\.png: no such file/);
    await expectDrError(loadRgb(tmp), /is a directory/);
  });

  it('rejects a non-bicubic or missing preprocessor_config.json', async () => {
    const dir = path.join(tmp, 'cfg');
    fs.mkdirSync(dir);
    await expectDrError(() => readClipImageConfig(dir), /cfg\/preprocessor_config\.json: missing/);
    const j = JSON.parse(fs.readFileSync(path.join(clipDir, 'preprocessor_config.json'), 'utf8'));
    fs.writeFileSync(path.join(dir, 'preprocessor_config.json'), JSON.stringify({ ...j, size: 40, crop_size: 36 }));
    expect(readClipImageConfig(dir)).toMatchObject({ shortestEdge: 40, cropHeight: 36, cropWidth: 36 });
    fs.writeFileSync(path.join(dir, 'preprocessor_config.json'), JSON.stringify({ ...j, resample: 2 }));
    await expectDrError(() => readClipImageConfig(dir), /preprocessor_config\.json: resample 2 is not supported/);
  });

  it('lists images in directories', async () => {
    const dir = path.join(tmp, 'photos');
    fs.mkdirSync(dir);
    await expectDrError(() => listImages([dir]), /photos\/: no images \(\.png, \.jpg/);
    for (const f of ['b.JPG', 'a.png', 'c.txt']) fs.writeFileSync(path.join(dir, f), 'x');
    fs.mkdirSync(path.join(dir, 'sub.png'));
    expect(listImages([dir, chelsea])).toEqual([path.join(dir, 'a.png'), path.join(dir, 'b.JPG'), chelsea]);
    await expectDrError(() => listImages([path.join(tmp, 'nope')]), /nope: no such file/);
    expect(isImagePath('x.TIFF')).toBe(true);
    expect(isImagePath('x.bmp')).toBe(false);
  });
});
