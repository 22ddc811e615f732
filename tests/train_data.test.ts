// dr train's data pipeline (src/graph/train/data.ts): batches in the stage<n>_io tensors,
// deterministic by seed and resumable from the data position, chain labels and the mixed-chain
// rule, paired folders with CSV or folder labels, small and unreadable images skipped or upscaled.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { degrade, parseSpec } from '../src/degrade/degrade.js';
import { DrError } from '../src/errors.js';
import { clipPixelValues, readClipImageConfig } from '../src/graph/clip/preprocess.js';
import { batchReader, batchTensors, dataSourceFromCli, parseChain, TrainData, type DataOptions, type DataSource, type TrainBatch } from '../src/graph/train/data.js';
import { batchIndices, batchTensor } from '../src/graph/train/stage.js';
import { loadRgb, type RgbImage } from '../src/image/load.js';
import { SafetensorsFile, writeSafetensors } from '../src/weights/safetensors.js';
import { FIXTURES, REPO, SHARED } from './helpers.js';

const IMAGES = path.join(SHARED, 'images');
const CLIP = readClipImageConfig(path.join(FIXTURES, 'clip-tiny'));
let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-train-data-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function options(source: DataSource, extra: Partial<DataOptions> = {}): DataOptions {
  return { source, size: 64, batch: 3, seed: 7, clip: CLIP, numTrainTimesteps: 1000, latentChannels: 4, latentFactor: 8, warn: () => undefined, ...extra };
}

const synthetic = (chains?: string[], hq = [IMAGES]): DataSource => ({ kind: 'synthetic', hq, chains });

async function batches(data: TrainData, n: number): Promise<TrainBatch[]> {
  const out: TrainBatch[] = [];
  for (let i = 0; i < n; i++) out.push(await data.next());
  return out;
}

/** The 8-bit HWC image of sample b of a [B, 3, S, S] batch array in [0, 1]. */
function sampleU8(a: { shape: number[]; data: Float32Array }, b: number): RgbImage {
  const S = a.shape[2];
  const n = S * S;
  const data = new Uint8Array(3 * n);
  for (let c = 0; c < 3; c++) for (let i = 0; i < n; i++) data[i * 3 + c] = Math.round(a.data[(b * 3 + c) * n + i] * 255);
  return { width: S, height: S, data };
}

async function writePng(file: string, img: RgbImage): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await sharp(Buffer.from(img.data), { raw: { width: img.width, height: img.height, channels: 3 } }).png().toFile(file);
}

/** A w×h image of a smooth deterministic pattern. */
function pattern(w: number, h: number, k: number): RgbImage {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) data[(y * w + x) * 3 + c] = (x * (3 + c) + y * (5 + k) + 40 * c) & 255;
  return { width: w, height: h, data };
}

describe('chain labels', () => {
  it('labels a chain by its first step that is a class; =CLASS overrides; a chain with no class is refused', () => {
    const label = (s: string) => parseChain(s).label;
    expect(['noise:50', 'lowlight', 'haze', 'rain', 'raindrop', 'snow', 'blur', 'jpeg:10'].map(label)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(label('motion:9')).toBe(6);
    expect(label('blur:2,noise:15,jpeg:30')).toBe(6);
    expect(label('downup:4,jpeg:30')).toBe(7);
    expect(label('blur:2,noise:15=noise')).toBe(0);
    expect(label('blur:2=low-light')).toBe(1);
    expect(label('downup:4=3')).toBe(3);
    expect(() => parseChain('downup:4')).toThrow(/no step is a degradation class.*downup:4=CLASS/);
    expect(() => parseChain('noise:50=fog')).toThrow(DrError);
    expect(() => parseChain('noise:50=8')).toThrow(/not a degradation class/);
    expect(() => parseChain('smear:3')).toThrow(/--degrade smear:3: unknown degradation "smear"/);
    // A checkpoint with other classes: only its classes count.
    expect(parseChain('blur:2,noise:15', ['noise', 'jpeg']).label).toBe(0);
  });

  it('each sample carries the label of the chain it drew, and its LQ is that chain applied to its HQ crop', async () => {
    const chains = ['jpeg:10', 'blur:1,noise:15', 'downup:2,jpeg:30'];
    const data = TrainData.open(options(synthetic(chains), { batch: 4 }));
    const drawn = new Set<string>();
    for (const b of await batches(data, 3)) {
      for (let i = 0; i < 4; i++) {
        const chain = chains.find((c) => b.sources[i].endsWith(` ${c}`))!;
        drawn.add(chain);
        expect(b.labels[i]).toBe(parseChain(chain).label);
        if (chain === 'jpeg:10') {
          // jpeg draws nothing from the stream: the LQ is exactly dr degrade's output on the HQ crop.
          const { image } = await degrade(sampleU8(b.pixels_hq, i), parseSpec(chain), 0, 'any');
          expect(sampleU8(b.pixels_lq, i).data).toEqual(image.data);
        }
      }
    }
    expect(drawn.size).toBe(3);
    data.dispose();
  });

  it('the default chains are the paper\'s eight, one per class', async () => {
    const data = TrainData.open(options(synthetic(), { batch: 8 }));
    expect(data.chains.map((c) => c.label)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    data.dispose();
  });
});

describe('batches', () => {
  it('have the stages\' shapes, ranges and CLIP preprocessing; crops are true crops of the decoded photo', async () => {
    const data = TrainData.open(options(synthetic(), { batch: 4, prefetch: false }));
    const b = await data.next();
    expect(b.pixels_hq.shape).toEqual([4, 3, 64, 64]);
    expect(b.pixels_lq.shape).toEqual([4, 3, 64, 64]);
    expect(b.clip_pixel_values.shape).toEqual([4, 3, 32, 32]);
    expect(b.noise.shape).toEqual([4, 4, 8, 8]);
    for (const a of [b.pixels_hq, b.pixels_lq]) {
      expect(a.data.length).toBe(4 * 3 * 64 * 64);
      expect(Math.min(...a.data)).toBeGreaterThanOrEqual(0);
      expect(Math.max(...a.data)).toBeLessThanOrEqual(1);
    }
    expect(b.noise.data.length).toBe(4 * 4 * 8 * 8);
    const mean = b.noise.data.reduce((s, v) => s + v, 0) / b.noise.data.length;
    const sd = Math.sqrt(b.noise.data.reduce((s, v) => s + (v - mean) ** 2, 0) / b.noise.data.length);
    // 1024 standard normals: mean within 4/sqrt(1024), sd within 0.1 of 1.
    expect(Math.abs(mean)).toBeLessThan(0.125);
    expect(Math.abs(sd - 1)).toBeLessThan(0.1);
    for (let i = 0; i < 4; i++) {
      expect(b.timesteps[i]).toBeGreaterThanOrEqual(0);
      expect(b.timesteps[i]).toBeLessThan(1000);
      const clip = clipPixelValues(sampleU8(b.pixels_lq, i), CLIP);
      expect(b.clip_pixel_values.data.subarray(i * clip.length, (i + 1) * clip.length)).toEqual(clip);
      // The HQ crop is a 64² window of the decoded file, mirrored or not.
      const full = await loadRgb(b.sources[i].split(' ')[0]);
      expect(findWindow(full, sampleU8(b.pixels_hq, i))).toBe(true);
    }
    expect(new Set(b.timesteps).size).toBeGreaterThan(1);
  });

  it('crops an EXIF-rotated photo as displayed', async () => {
    const file = path.join(tmp, 'rotated/r.jpg');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const img = pattern(96, 72, 4);
    await sharp(Buffer.from(img.data), { raw: { width: 96, height: 72, channels: 3 } }).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toFile(file);
    const shown = await loadRgb(file);
    expect([shown.width, shown.height]).toEqual([72, 96]);
    for (const b of await batches(TrainData.open(options(synthetic(['blur:1'], [file]), { batch: 2 })), 2)) {
      for (let i = 0; i < 2; i++) expect(findWindow(shown, sampleU8(b.pixels_hq, i))).toBe(true);
    }
  });

  // Chains with random draws (noise, snow, rain's angle) and a deterministic one; cheaper than all eight.
  const CHAINS = ['noise:50', 'snow', 'rain:1', 'jpeg:10'];

  it('the same seed gives the same batches (prefetched or not); another seed others', async () => {
    const a = await batches(TrainData.open(options(synthetic(CHAINS))), 4);
    const b = await batches(TrainData.open(options(synthetic(CHAINS), { prefetch: false })), 4);
    expectSameBatches(b, a);
    const c = await batches(TrainData.open(options(synthetic(CHAINS), { seed: 8 })), 1);
    expect(c[0].pixels_hq.data).not.toEqual(a[0].pixels_hq.data);
    expect(c[0].noise.data).not.toEqual(a[0].noise.data);
  });

  it('resumes the exact sequence from a saved position, across epochs (8 images, batch 3)', async () => {
    const straight = TrainData.open(options(synthetic(CHAINS)));
    const all = await batches(straight, 7); // 21 samples: epochs 0, 1 and part of 2
    expect(all[6].from.epoch).toBe(2);
    const first = TrainData.open(options(synthetic(CHAINS)));
    await batches(first, 3);
    const saved = JSON.parse(JSON.stringify(first.state()));
    expect(saved).toEqual({ epoch: 1, index: 1 });
    const resumed = TrainData.open(options(synthetic(CHAINS)), saved);
    expectSameBatches(await batches(resumed, 4), all.slice(3));
    // Each epoch visits every image once, in its own order.
    const epoch0 = all.flatMap((b) => b.sources).slice(0, 8).map((s) => s.split(' ')[0]);
    const epoch1 = all.flatMap((b) => b.sources).slice(8, 16).map((s) => s.split(' ')[0]);
    expect(new Set(epoch0).size).toBe(8);
    expect([...epoch1].sort()).toEqual([...epoch0].sort());
    expect(epoch1).not.toEqual(epoch0);
    expect(() => resumed.restore({ epoch: 0, index: 8 })).toThrow(/not one of this data set's \(8 images\)/);
  });

  it('writes as a --batch-file the stages read (labels and timesteps int64)', async () => {
    const b = await TrainData.open(options(synthetic(), { prefetch: false })).next();
    const file = path.join(tmp, 'batch.safetensors');
    writeSafetensors(file, batchTensors(b));
    const f = SafetensorsFile.open(file);
    try {
      expect(f.info('labels').dtype).toBe('I64');
      expect(f.readInt32('labels')).toEqual(b.labels);
      expect(f.readInt32('timesteps')).toEqual(b.timesteps);
      expect(Buffer.from(f.readF32('pixels_lq').buffer).equals(Buffer.from(b.pixels_lq.data.buffer))).toBe(true);
      expect(f.info('noise').shape).toEqual([3, 4, 8, 8]);
    } finally {
      f.close();
    }
  });
  it('serves a batch from memory as the stages read a --batch-file', async () => {
    const b = await TrainData.open(options(synthetic(), { prefetch: false })).next();
    const r = batchReader(b);
    expect(Buffer.from(batchTensor(r as SafetensorsFile, 'pixels_lq', [3, 3, 64, 64], 'I_LQ').data.buffer).equals(Buffer.from(b.pixels_lq.data.buffer))).toBe(true);
    expect(batchIndices(r as SafetensorsFile, 'labels', 3, 8, 'classes')).toEqual(b.labels);
    expect(r.info('noise')).toMatchObject({ dtype: 'F32', shape: [3, 4, 8, 8] });
    expect(() => r.info('p_d')).toThrow(/training batch at epoch 0, image 0: no tensor named "p_d"/);
    expect(() => batchIndices(r as SafetensorsFile, 'timesteps', 3, 10, 'timesteps')).toThrow(/training batch.*"timesteps"\[\d\] is \d+, expected 0\.\.9/);
  });
});

describe('worker threads', () => {
  // The pool runs the compiled worker (dist/, as the CLI does: `npm run build` first); from the
  // TypeScript sources every sample is built in this thread. A sample depends only on its position,
  // so both must give the same bytes.
  it('build the same batches as this thread, and report unreadable images alike', async () => {
    const dist = (await import(path.join(REPO, 'dist/src/graph/train/data.js'))) as typeof import('../src/graph/train/data.js');
    const dir = path.join(tmp, 'workers');
    fs.mkdirSync(dir, { recursive: true });
    for (const name of ['astronaut', 'coffee', 'chelsea', 'text']) fs.copyFileSync(path.join(IMAGES, `${name}.png`), path.join(dir, `${name}.png`));
    fs.writeFileSync(path.join(dir, 'junk.png'), 'junk');
    const src = synthetic(['noise:50', 'rain', 'jpeg:10'], [dir]);
    const warned: string[][] = [[], []];
    const pooled = dist.TrainData.open(options(src, { batch: 4, size: 192, workers: 2, warn: (l) => warned[0].push(l) }));
    const here = TrainData.open(options(src, { batch: 4, size: 192, workers: 0, warn: (l) => warned[1].push(l) }));
    try {
      expectSameBatches(await batches(pooled, 3), await batches(here, 3));
      expect(warned[0]).toEqual(warned[1]);
      expect(warned[0]).toEqual([expect.stringMatching(/junk\.png: not a readable image/)]);
      expect(pooled.stats()).toEqual(here.stats());
      expect(pooled.stats().upscaled).toBe(1); // text.png, 172 high
      expect([pooled.threads, here.threads]).toEqual([2, 0]);
    } finally {
      pooled.dispose();
      here.dispose();
    }
  });
});

describe('small and unreadable images', () => {
  let dir: string;
  beforeAll(async () => {
    dir = path.join(tmp, 'mixed');
    await writePng(path.join(dir, 'a.png'), pattern(90, 70, 1));
    await writePng(path.join(dir, 'b.png'), pattern(64, 100, 2));
    await writePng(path.join(dir, 'small.png'), pattern(40, 30, 3));
    fs.writeFileSync(path.join(dir, 'broken.png'), 'not a png at all');
    // A valid header (its size reads) over truncated pixel data: fails only when decoded.
    const whole = fs.readFileSync(path.join(dir, 'a.png'));
    fs.writeFileSync(path.join(dir, 'truncated.png'), whole.subarray(0, Math.floor(whole.length / 2)));
  });

  it('upscales an image smaller than the crop, skips unreadable ones (garbage, truncated pixels) with one warning each, and counts them', async () => {
    const warnings: string[] = [];
    const data = TrainData.open(options(synthetic(['blur:1'], [dir]), { batch: 4, warn: (l) => warnings.push(l) }));
    const all = await batches(data, 4);
    const files = all.flatMap((b) => b.sources.map((s) => path.basename(s.split(' ')[0])));
    expect(files.length).toBe(16);
    expect(new Set(files)).toEqual(new Set(['a.png', 'b.png', 'small.png']));
    expect(warnings.sort()).toEqual([
      expect.stringMatching(/^dr: skipping .*broken\.png: not a readable image/),
      expect.stringMatching(/^dr: skipping .*truncated\.png: not a readable image/),
    ]);
    expect(data.stats()).toEqual({ upscaled: 1, skippedSmall: 0, bad: 2 });
    // The upscaled one is the bicubic 85×64 image (short side to 64), cropped.
    const i = files.indexOf('small.png');
    const b = all[Math.floor(i / 4)];
    expect(b.pixels_hq.shape).toEqual([4, 3, 64, 64]);
    const hq = sampleU8(b.pixels_hq, i % 4);
    const { resizeBicubicU8 } = await import('../src/image/resize.js');
    expect(findWindow(resizeBicubicU8(pattern(40, 30, 3), 85, 64), hq)).toBe(true);
  });

  it('with skip, leaves small images out and counts them', async () => {
    const data = TrainData.open(options(synthetic(['blur:1'], [dir]), { batch: 4, small: 'skip' }));
    const files = (await batches(data, 3)).flatMap((b) => b.sources.map((s) => path.basename(s.split(' ')[0])));
    expect(new Set(files)).toEqual(new Set(['a.png', 'b.png']));
    expect(data.stats()).toEqual({ upscaled: 0, skippedSmall: 1, bad: 2 });
  });

  it('refuses data with no usable image instead of looping', async () => {
    const data = TrainData.open(options(synthetic(['blur:1'], [path.join(dir, 'broken.png'), path.join(dir, 'small.png')]), { small: 'skip' }));
    await expect(data.next()).rejects.toThrow(/no usable image in the data \(2 listed: 1 unreadable, 1 smaller than 64²\)/);
  });
});

describe('paired folders', () => {
  let hq: string;
  beforeAll(async () => {
    // LQ = the HQ negated, so every crop and flip can be checked: lq = 1 − hq pixel for pixel.
    hq = path.join(tmp, 'pairs/hq');
    const lq = path.join(tmp, 'pairs');
    const neg = (img: RgbImage): RgbImage => ({ ...img, data: img.data.map((v) => 255 - v) });
    for (const [k, name] of ['a', 'b', 'c'].entries()) {
      const img = pattern(80 + 8 * k, 72, k);
      await writePng(path.join(hq, `${name}.png`), img);
      await writePng(path.join(lq, 'flat', `${name}.png`), neg(img));
      await writePng(path.join(lq, 'byclass', ['haze', 'jpeg', 'lowlight'][k], `${name}.png`), neg(img));
    }
    await writePng(path.join(tmp, 'pairs/lq-extra/d.png'), pattern(80, 72, 9));
    fs.writeFileSync(path.join(tmp, 'pairs/labels.csv'), 'name,label\na.png,snow\nb.png,2\nc.png,raindrop\n');
    fs.writeFileSync(path.join(tmp, 'pairs/short.csv'), 'a.png,snow\n');
  });

  const pairs = (lq: string, labels?: string): DataSource => ({ kind: 'paired', lq: path.join(tmp, 'pairs', lq), hq, labels: labels && path.join(tmp, 'pairs', labels) });

  it('pairs by file name, crops and flips both alike, labels from the CSV', async () => {
    const data = TrainData.open(options(pairs('flat', 'labels.csv'), { batch: 3 }));
    const want: Record<string, number> = { a: 5, b: 2, c: 4 };
    for (const b of await batches(data, 3)) {
      for (let i = 0; i < 3; i++) {
        expect(b.labels[i]).toBe(want[path.parse(b.sources[i]).name]);
        const h = b.pixels_hq.data.subarray(i * 3 * 64 * 64, (i + 1) * 3 * 64 * 64);
        const l = b.pixels_lq.data.subarray(i * 3 * 64 * 64, (i + 1) * 3 * 64 * 64);
        expect(l.every((v, j) => Math.abs(v + h[j] - 1) < 1e-6)).toBe(true);
      }
    }
  });

  it('labels from the LQ sub-folder names (class or dr degrade type names)', async () => {
    const data = TrainData.open(options(pairs('byclass'), { batch: 3 }));
    const b = await data.next();
    const want: Record<string, number> = { a: 2, b: 7, c: 1 };
    expect(Array.from(b.labels)).toEqual(b.sources.map((s) => want[path.parse(s).name]));
  });

  it('refuses an LQ image without HQ, without a label, or outside a class folder', () => {
    expect(() => TrainData.open(options(pairs('lq-extra', 'labels.csv')))).toThrow(/d\.png: no HQ image of the same name under/);
    expect(() => TrainData.open(options(pairs('flat', 'short.csv')))).toThrow(/short\.csv: no label for .*b\.png/);
    expect(() => TrainData.open(options(pairs('flat')))).toThrow(/flat\/a\.png: not in a class sub-folder/);
  });
});

describe('CLI data flags', () => {
  it('takes --data or --lq/--hq, never both', () => {
    expect(dataSourceFromCli({ data: ['x'], degrade: ['noise:50'] })).toEqual({ kind: 'synthetic', hq: ['x'], chains: ['noise:50'], recursive: undefined });
    expect(dataSourceFromCli({ lq: 'l', hq: 'h', labels: 'c.csv' })).toMatchObject({ kind: 'paired', lq: 'l', hq: 'h', labels: 'c.csv' });
    expect(() => dataSourceFromCli({ data: ['x'], lq: 'l', hq: 'h' })).toThrow(/give one/);
    expect(() => dataSourceFromCli({ lq: 'l' })).toThrow(/--hq: paired data needs both/);
    expect(() => dataSourceFromCli({})).toThrow(/--data HQ_DIR/);
    expect(() => dataSourceFromCli({ lq: 'l', hq: 'h', degrade: ['noise'] })).toThrow(/--degrade/);
  });
});

/** Batches equal bit for bit (typed arrays compared as bytes: toEqual is slow on them). */
function expectSameBatches(a: TrainBatch[], b: TrainBatch[]): void {
  expect(a.length).toBe(b.length);
  const bytes = (v: ArrayBufferView) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  a.forEach((x, i) => {
    const y = b[i];
    expect({ sources: x.sources, from: x.from, shape: x.pixels_hq.shape }).toEqual({ sources: y.sources, from: y.from, shape: y.pixels_hq.shape });
    for (const k of ['pixels_hq', 'pixels_lq', 'clip_pixel_values', 'noise'] as const) expect(bytes(x[k].data).equals(bytes(y[k].data)), k).toBe(true);
    expect(Array.from(x.labels)).toEqual(Array.from(y.labels));
    expect(Array.from(x.timesteps)).toEqual(Array.from(y.timesteps));
  });
}

/** Whether `win` is a window of `img`, as it is or mirrored left-right. */
function findWindow(img: RgbImage, win: RgbImage): boolean {
  const S = win.width;
  for (const flip of [false, true]) {
    const at = (x: number, y: number, c: number) => win.data[(y * S + (flip ? S - 1 - x : x)) * 3 + c];
    for (let top = 0; top + S <= img.height; top++) {
      for (let left = 0; left + S <= img.width; left++) {
        let ok = true;
        for (let y = 0; y < S && ok; y++) {
          for (let x = 0; x < S && ok; x++) for (let c = 0; c < 3 && ok; c++) ok = img.data[((top + y) * img.width + left + x) * 3 + c] === at(x, y, c);
        }
        if (ok) return true;
      }
    }
  }
  return false;
}
