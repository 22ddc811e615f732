/**
 * The training data of `dr train`: batches of random crops in the tensors the stages read
 * (`stage<n>_io` names and conventions, shared/fixtures/train/README.md), from clean photos
 * degraded on the fly by `dr degrade`'s code, or from paired LQ/HQ folders.
 *
 * Every sample is a pure function of (seed, epoch, index): the file (a seeded permutation per
 * epoch), the chain, the crop, the flip, the timestep and the noise each come from their own
 * seeded stream (src/degrade/prng.ts). So the data order is resumed exactly from the small
 * position object `DataState` alone, and a seed gives the same batches on every machine
 * (decoding and the jpeg step aside: they are libvips's and libjpeg-turbo's).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import sharp from 'sharp';
import { DrError } from '../../errors.js';
import { degrade, parseSpec, type Step } from '../../degrade/degrade.js';
import { Rng } from '../../degrade/prng.js';
import { checkImageFile, listImageTree, loadRgb, unreadable, type RgbImage } from '../../image/load.js';
import { resizeBicubicU8 } from '../../image/resize.js';
import type { SafetensorsFile, TensorToWrite } from '../../weights/safetensors.js';
import { clipPixelValues, type ClipImageConfig } from '../clip/preprocess.js';
import { DEGRADATIONS } from '../diffrestorer/prompt_processor.js';

/** The class a `dr degrade` type teaches L_deg; `downup` (resolution loss) is none of the eight. */
const TYPE_CLASS: Record<string, string> = {
  noise: 'noise', lowlight: 'low-light', haze: 'haze', rain: 'rain', raindrop: 'raindrop', snow: 'snow', blur: 'blur', motion: 'blur', jpeg: 'jpeg',
};

/** The paper's eight degradations, one chain per class, with `dr degrade`'s defaults (noise σ 50, JPEG 10 as the paper). */
export const DEFAULT_CHAINS = ['noise:50', 'lowlight', 'haze', 'rain', 'raindrop', 'snow', 'blur', 'jpeg:10'];

/** Help text for the data options (`dr train --help`). */
export const DATA_HELP = `
Data: --data HQ_DIR (repeatable; --recursive for subfolders) synthesises each sample's LQ image
  from a random crop of a clean photo with one --degrade CHAIN drawn uniformly (a dr degrade
  --type string; default: ${DEFAULT_CHAINS.join(' ')}, one per class).
  Label of a chain (L_deg): the class of its FIRST step that has one (noise, lowlight→low-light,
  haze, rain, raindrop, snow, blur and motion→blur, jpeg); downup has none and is passed over, so
  blur:2,noise:15,jpeg:30 is "blur" and downup:4,jpeg:30 is "jpeg". CHAIN=CLASS sets the label
  (a class name or index): --degrade blur:2,noise:15=noise. A chain with no class is refused.
  Or paired folders --lq DIR --hq DIR: each LQ image is paired with the HQ image of the same file
  name (extension aside) anywhere under --hq; labels from --labels FILE.csv (lines "name,label",
  name the LQ file's path under --lq or its file name, label a class name or index; a header line
  "name,label" is allowed) or, without --labels, from the LQ sub-folder names (LQ/noise/x.png).
  Crops of --size (default 512) at a random place, flipped horizontally half the time; an image
  with a side under --size is upscaled (bicubic, short side to --size) or, with --skip-small,
  left out; both are counted. An unreadable image is skipped with a warning.
  --workers N threads build the samples (default: up to 8, leaving two cores); the batches are the
  same for any N, and a --seed gives the same batches on every machine.`;

export interface Chain {
  /** The `--degrade` text as given. */
  spec: string;
  steps: Step[];
  label: number;
}

function classIndex(name: string, classes: readonly string[], what: string): number {
  const direct = classes.indexOf(name);
  if (direct >= 0) return direct;
  const viaType = TYPE_CLASS[name] !== undefined ? classes.indexOf(TYPE_CLASS[name]) : -1;
  if (viaType >= 0) return viaType;
  if (/^\d+$/.test(name) && Number(name) < classes.length) return Number(name);
  throw new DrError(`${what}: "${name}" is not a degradation class (${classes.map((c, i) => `${i} ${c}`).join(', ')})`);
}

/** A `--degrade` chain and its label (see DATA_HELP for the rule). */
export function parseChain(spec: string, classes: readonly string[] = DEGRADATIONS): Chain {
  const eq = spec.lastIndexOf('=');
  const chain = eq >= 0 ? spec.slice(0, eq) : spec;
  let steps: Step[];
  try {
    steps = parseSpec(chain);
  } catch (e) {
    throw e instanceof DrError ? new DrError(`--degrade ${spec}: ${e.message.replace(/^--type: /, '')}`) : e;
  }
  if (eq >= 0) return { spec, steps, label: classIndex(spec.slice(eq + 1).trim(), classes, `--degrade ${spec}`) };
  const first = steps.find((s) => TYPE_CLASS[s.type] !== undefined && classes.includes(TYPE_CLASS[s.type]));
  if (!first) throw new DrError(`--degrade ${spec}: no step is a degradation class (${classes.join(', ')}); give one as ${chain}=CLASS`);
  return { spec, steps, label: classes.indexOf(TYPE_CLASS[first.type]) };
}

/** Where the samples come from. */
export type DataSource =
  | { kind: 'synthetic'; hq: string[]; recursive?: boolean; chains?: string[] }
  | { kind: 'paired'; lq: string; hq: string; recursive?: boolean; labels?: string };

/** The CLI's data flags as one source, their combinations checked. */
export function dataSourceFromCli(o: { data?: string[]; degrade?: string[]; lq?: string; hq?: string; labels?: string; recursive?: boolean }): DataSource {
  const paired = o.lq !== undefined || o.hq !== undefined;
  if (paired && o.data?.length) throw new DrError('--data and --lq/--hq are two kinds of data: give one');
  if (paired) {
    if (!o.lq || !o.hq) throw new DrError(`--${o.lq ? 'hq' : 'lq'}: paired data needs both --lq DIR and --hq DIR`);
    if (o.degrade?.length) throw new DrError('--degrade synthesises LQ images from --data; paired --lq images are used as they are');
    return { kind: 'paired', lq: o.lq, hq: o.hq, labels: o.labels, recursive: o.recursive };
  }
  if (!o.data?.length) throw new DrError('--data HQ_DIR (clean photos) or --lq DIR --hq DIR (pairs) is required');
  if (o.labels) throw new DrError('--labels is for paired --lq/--hq folders; --data labels come from the --degrade chains');
  return { kind: 'synthetic', hq: o.data, recursive: o.recursive, chains: o.degrade };
}

export interface DataOptions {
  source: DataSource;
  /** Crop side in pixels (a multiple of latentFactor). */
  size: number;
  batch: number;
  seed: number;
  /** Images with a side under `size`: upscaled (default) or left out. */
  small?: 'upscale' | 'skip';
  /** The checkpoint's class names (prompt_processor config `degradations`), in label order. */
  classes?: readonly string[];
  /** CLIP's preprocessing (`readClipImageConfig` of the CLIP folder). */
  clip: ClipImageConfig;
  /** The scheduler's `num_train_timesteps`: timesteps are drawn uniformly from 0..N−1. */
  numTrainTimesteps: number;
  /** The VAE's latent channels and downsampling factor: the noise is [B, channels, size/f, size/f]. */
  latentChannels: number;
  latentFactor: number;
  /** Builds the next batch while the caller works on this one (default true). */
  prefetch?: boolean;
  /**
   * Worker threads building samples (0: all in this thread; default: up to 8, two cores left
   * free). Batches are the same whatever the count: a sample depends only on its position.
   */
  workers?: number;
  /** Receives each warning line (default: stderr). */
  warn?: (line: string) => void;
}

/** The data-order position: the next sample is item `index` of epoch `epoch`'s permutation. JSON-able. */
export interface DataState {
  epoch: number;
  index: number;
}

export interface BatchArray {
  shape: number[];
  data: Float32Array;
}

/** One batch in the tensors (names, layouts, ranges) of the fixtures' stage<n>_io files. */
export interface TrainBatch {
  /** I_HQ, RGB in [0, 1], [B, 3, size, size]. */
  pixels_hq: BatchArray;
  /** I_LQ, RGB in [0, 1], [B, 3, size, size]. */
  pixels_lq: BatchArray;
  /** CLIP's preprocessed I_LQ, [B, 3, S, S]. */
  clip_pixel_values: BatchArray;
  /** ε, standard normal, [B, latentChannels, size/f, size/f]. */
  noise: BatchArray;
  /** Class per sample, [B]. */
  labels: Int32Array;
  /** Training timestep per sample, [B]. */
  timesteps: Int32Array;
  /** Each sample's source (file and, synthesised, chain), for logs. */
  sources: string[];
  /** The position of this batch's first sample. */
  from: DataState;
}

/** Files seen so far that were upscaled, left out as too small, or unreadable. */
export interface DataStats {
  upscaled: number;
  skippedSmall: number;
  bad: number;
}

/** One training image: a clean photo, or an LQ/HQ pair with its label. */
export interface Item {
  hq: string;
  lq?: string;
  label?: number;
}

/** What a sample is made from besides its item and position: plain data, so it crosses to worker threads. */
export interface SampleContext {
  seed: number;
  size: number;
  small: 'upscale' | 'skip';
  numTrainTimesteps: number;
  latentChannels: number;
  latentFactor: number;
  clip: ClipImageConfig;
  /** The synthetic source's chains (empty for pairs, whose items carry their labels). */
  chains: Chain[];
}

/** One sample, its images already as [3, size, size] planes in [0, 1]. */
export interface Sample {
  hq: Float32Array;
  lq: Float32Array;
  clip: Float32Array;
  noise: Float32Array;
  label: number;
  timestep: number;
  source: string;
  upscaled: boolean;
}

export type SampleResult = { sample: Sample } | { skipped: 'small' } | { skipped: 'bad'; message: string };

/**
 * The sample at a position: a pure function of (context, item, position), run in the calling
 * thread or a worker. Streams: `train-sample#E#I` draws the chain, the crop place, the flip and
 * the timestep (always in that order and number); the chain's steps draw from `train#E#I#k`
 * (dr degrade's streams under that name); the noise from `train-noise#E#I`.
 */
export async function makeSample(ctx: SampleContext, item: Item, at: DataState): Promise<SampleResult> {
  const { seed, size } = ctx;
  const stream = `${at.epoch}#${at.index}`;
  const rng = new Rng(seed, `train-sample#${stream}`);
  const chain = ctx.chains.length ? ctx.chains[Math.floor(rng.uniform() * ctx.chains.length)] : undefined;
  const u = { x: rng.uniform(), y: rng.uniform(), flip: rng.uniform() < 0.5 };
  const timestep = Math.floor(rng.uniform() * ctx.numTrainTimesteps);
  let hq: RgbImage;
  let lq: RgbImage;
  let upscaled: boolean;
  try {
    const dims = await imageSize(item.hq);
    upscaled = Math.min(dims.width, dims.height) < size;
    if (upscaled && ctx.small === 'skip') return { skipped: 'small' };
    if (item.lq) {
      const lqDims = await imageSize(item.lq);
      if (lqDims.width !== dims.width || lqDims.height !== dims.height) {
        throw new DrError(`${item.lq}: ${lqDims.width}×${lqDims.height}, but its HQ ${item.hq} is ${dims.width}×${dims.height}`);
      }
      [hq, lq] = await Promise.all([crop(item.hq, dims, u, size), crop(item.lq, lqDims, u, size)]);
    } else {
      hq = await crop(item.hq, dims, u, size);
      lq = (await degrade(hq, chain!.steps, seed, `train#${stream}`)).image;
    }
  } catch (e) {
    if (e instanceof DrError) return { skipped: 'bad', message: e.message };
    throw e;
  }
  const noise = new Float32Array(ctx.latentChannels * (size / ctx.latentFactor) ** 2);
  const nrng = new Rng(seed, `train-noise#${stream}`);
  for (let i = 0; i < noise.length; i++) noise[i] = nrng.normal();
  return {
    sample: {
      hq: planes(hq),
      lq: planes(lq),
      clip: clipPixelValues(lq, ctx.clip),
      noise,
      label: chain ? chain.label : item.label!,
      timestep,
      source: chain ? `${item.hq} ${chain.spec}` : item.lq!,
      upscaled,
    },
  };
}

/** HWC 8-bit → CHW in [0, 1]. */
function planes(img: RgbImage): Float32Array {
  const n = img.width * img.height;
  const out = new Float32Array(3 * n);
  for (let c = 0; c < 3; c++) for (let i = 0; i < n; i++) out[c * n + i] = img.data[i * 3 + c] / 255;
  return out;
}

/** The S² crop at the drawn place (upscaled first if a side is short), flipped if drawn. */
async function crop(file: string, dims: { width: number; height: number; rotated: boolean }, u: { x: number; y: number; flip: boolean }, S: number): Promise<RgbImage> {
  let img: RgbImage;
  if (Math.min(dims.width, dims.height) < S) {
    const full = await loadRgb(file);
    const k = S / Math.min(full.width, full.height);
    const big = resizeBicubicU8(full, Math.max(S, Math.round(full.width * k)), Math.max(S, Math.round(full.height * k)));
    img = cropU8(big, Math.floor(u.x * (big.width - S + 1)), Math.floor(u.y * (big.height - S + 1)), S);
  } else {
    const left = Math.floor(u.x * (dims.width - S + 1));
    const top = Math.floor(u.y * (dims.height - S + 1));
    checkImageFile(file);
    // Only the crop is decoded out (a big JPEG ~2× faster than whole); rotate() costs, so only when EXIF asks.
    const res = await (dims.rotated ? sharp(file).rotate() : sharp(file))
      .extract({ left, top, width: S, height: S })
      .toColourspace('srgb')
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true })
      .catch(unreadable(file));
    if (res.info.channels !== 3) throw new DrError(`${file}: decoded to ${res.info.channels} channels, expected RGB`);
    img = { width: S, height: S, data: new Uint8Array(res.data.buffer, res.data.byteOffset, res.data.length) };
  }
  return u.flip ? flipU8(img) : img;
}

/** Worker threads building samples (data_worker.ts), each job to the least busy; idle workers keep no process alive. */
class SamplePool {
  private readonly workers: { w: Worker; busy: number }[];
  private readonly jobs = new Map<number, { resolve: (r: SampleResult) => void; reject: (e: Error) => void; slot: { busy: number } }>();
  private nextId = 0;
  private failed?: Error;

  constructor(script: string, n: number, ctx: SampleContext) {
    this.workers = Array.from({ length: n }, () => {
      const slot = { w: new Worker(script, { workerData: ctx }), busy: 0 };
      slot.w.on('message', (m: { id: number; result?: SampleResult; error?: string }) => {
        const job = this.jobs.get(m.id)!;
        this.jobs.delete(m.id);
        job.slot.busy--;
        if (m.error !== undefined) job.reject(new Error(`training data worker: ${m.error}`));
        else job.resolve(m.result!);
        if (!this.jobs.size) for (const x of this.workers) x.w.unref();
      });
      slot.w.on('error', (e) => this.fail(e));
      slot.w.unref();
      return slot;
    });
  }

  run(item: Item, at: DataState): Promise<SampleResult> {
    if (this.failed) return Promise.reject(this.failed);
    if (!this.jobs.size) for (const x of this.workers) x.w.ref();
    const slot = this.workers.reduce((a, b) => (b.busy < a.busy ? b : a));
    slot.busy++;
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.jobs.set(id, { resolve, reject, slot });
      slot.w.postMessage({ id, item, at });
    });
  }

  close(): void {
    for (const { w } of this.workers) void w.terminate();
  }

  private fail(e: Error): void {
    this.failed = e;
    for (const job of this.jobs.values()) job.reject(e);
    this.jobs.clear();
  }
}

export class TrainData {
  private pos: DataState = { epoch: 0, index: 0 };
  private pending?: Promise<{ batch: TrainBatch; after: DataState }>;
  private orders = new Map<number, Uint32Array>();
  private readonly upscaled = new Set<string>();
  private readonly small = new Set<string>();
  private readonly bad = new Set<string>();
  private readonly warn: (line: string) => void;
  private readonly ctx: SampleContext;
  private pool?: SamplePool;

  private constructor(readonly o: DataOptions, readonly items: readonly Item[], readonly chains: readonly Chain[]) {
    this.warn = o.warn ?? ((line) => process.stderr.write(`${line}\n`));
    const { seed, size, numTrainTimesteps, latentChannels, latentFactor, clip } = o;
    this.ctx = { seed, size, small: o.small ?? 'upscale', numTrainTimesteps, latentChannels, latentFactor, clip, chains: [...chains] };
  }

  /** Lists (and pairs, and labels) the images; a configuration mistake is a DrError here, before any training. */
  static open(o: DataOptions, state?: DataState): TrainData {
    const classes = o.classes ?? DEGRADATIONS;
    if (!Number.isInteger(o.size) || o.size < o.latentFactor || o.size % o.latentFactor) {
      throw new DrError(`--size: ${o.size} must be a positive multiple of ${o.latentFactor} (the VAE's downsampling)`);
    }
    if (!Number.isInteger(o.batch) || o.batch < 1) throw new DrError(`--batch: ${o.batch} must be a positive integer`);
    const s = o.source;
    let data: TrainData;
    if (s.kind === 'synthetic') {
      const chains = (s.chains?.length ? s.chains : DEFAULT_CHAINS).map((c) => parseChain(c, classes));
      data = new TrainData(o, listImageTree(s.hq, !!s.recursive).map(({ file }) => ({ hq: file })), chains);
    } else {
      data = new TrainData(o, pairItems(s, classes), []);
    }
    if (state) data.restore(state);
    return data;
  }

  /** The position of the next batch `next()` returns (save it with a checkpoint). */
  state(): DataState {
    return { ...this.pos };
  }

  /** Continues from a saved position: the batches that follow are those the saved run would have had. */
  restore(s: DataState): void {
    if (!Number.isInteger(s.epoch) || s.epoch < 0 || !Number.isInteger(s.index) || s.index < 0 || s.index >= this.items.length) {
      throw new DrError(`data position ${JSON.stringify(s)} is not one of this data set's (${this.items.length} images)`);
    }
    this.pending = undefined;
    this.pos = { epoch: s.epoch, index: s.index };
  }

  stats(): DataStats {
    return { upscaled: this.upscaled.size, skippedSmall: this.small.size, bad: this.bad.size };
  }

  /** Worker threads building samples now (0: this thread; the pool starts with the first batch). */
  get threads(): number {
    return this.pool ? workerCount(this.o.workers) : 0;
  }

  /** The batch at the current position; the position moves past it (and the next one starts building). */
  async next(): Promise<TrainBatch> {
    const p = this.pending ?? this.build(this.pos);
    this.pending = undefined;
    const { batch, after } = await p;
    this.pos = after;
    if (this.o.prefetch ?? true) {
      this.pending = this.build(after);
      this.pending.catch(() => undefined); // surfaces from the next next(), not as an unhandled rejection
    }
    return batch;
  }

  /** Drops a batch being prefetched and stops the worker threads. */
  dispose(): void {
    this.pending = undefined;
    this.pool?.close();
    this.pool = undefined;
  }

  /** Item order of an epoch: a Fisher–Yates permutation from its own stream. */
  private order(epoch: number): Uint32Array {
    let p = this.orders.get(epoch);
    if (!p) {
      p = Uint32Array.from(this.items.keys());
      const rng = new Rng(this.o.seed, `train-order#${epoch}`);
      for (let i = p.length - 1; i > 0; i--) {
        const j = Math.floor(rng.uniform() * (i + 1));
        [p[i], p[j]] = [p[j], p[i]];
      }
      if (this.orders.size > 2) this.orders.clear();
      this.orders.set(epoch, p);
    }
    return p;
  }

  private async build(from: DataState): Promise<{ batch: TrainBatch; after: DataState }> {
    const B = this.o.batch;
    const samples: Sample[] = [];
    let pos = { ...from };
    let misses = 0;
    while (samples.length < B) {
      // The positions still needed are built together (on the workers, or sharp's threads); taken in order.
      const want: DataState[] = [];
      for (let k = 0; k < B - samples.length; k++) {
        want.push(pos);
        pos = pos.index + 1 < this.items.length ? { epoch: pos.epoch, index: pos.index + 1 } : { epoch: pos.epoch + 1, index: 0 };
      }
      for (const s of await Promise.all(want.map((w) => this.sample(w)))) {
        if (s) {
          samples.push(s);
          misses = 0;
        } else if (++misses >= 2 * this.items.length) {
          // 2N positions in a row hold a whole epoch: every image is unusable.
          throw new DrError(`no usable image in the data (${this.items.length} listed: ${this.stats().bad} unreadable, ${this.stats().skippedSmall} smaller than ${this.o.size}²)`);
        }
      }
    }
    return { batch: this.assemble(samples, from), after: pos };
  }

  /** The sample at a position, or undefined when its image is unreadable or skipped as too small. */
  private async sample(at: DataState): Promise<Sample | undefined> {
    const item = this.items[this.order(at.epoch)[at.index]];
    const key = item.lq ?? item.hq;
    if (this.bad.has(key) || this.small.has(key)) return undefined;
    const r = await (this.workerPool()?.run(item, at) ?? makeSample(this.ctx, item, at));
    if ('sample' in r) {
      if (r.sample.upscaled) this.upscaled.add(key);
      return r.sample;
    }
    if (r.skipped === 'small') this.small.add(key);
    else {
      if (!this.bad.has(key)) this.warn(`dr: skipping ${r.message}`);
      this.bad.add(key);
    }
    return undefined;
  }

  /** The pool, started on first use; none when running from TypeScript sources (the tests), where no compiled worker exists. */
  private workerPool(): SamplePool | undefined {
    const n = workerCount(this.o.workers);
    if (!this.pool && n > 0 && fs.existsSync(WORKER_SCRIPT)) this.pool = new SamplePool(WORKER_SCRIPT, n, this.ctx);
    return this.pool;
  }

  private assemble(samples: Sample[], from: DataState): TrainBatch {
    const B = samples.length;
    const S = this.o.size;
    const stack = (pick: (s: Sample) => Float32Array): Float32Array => {
      const len = pick(samples[0]).length;
      const out = new Float32Array(B * len);
      samples.forEach((s, b) => out.set(pick(s), b * len));
      return out;
    };
    const c = this.o.clip;
    const crop = c.doCenterCrop ? [c.cropHeight, c.cropWidth] : c.doResize ? [c.shortestEdge, c.shortestEdge] : [S, S];
    const L = S / this.o.latentFactor;
    return {
      pixels_hq: { shape: [B, 3, S, S], data: stack((s) => s.hq) },
      pixels_lq: { shape: [B, 3, S, S], data: stack((s) => s.lq) },
      clip_pixel_values: { shape: [B, 3, crop[0], crop[1]], data: stack((s) => s.clip) },
      noise: { shape: [B, this.o.latentChannels, L, L], data: stack((s) => s.noise) },
      labels: Int32Array.from(samples, (s) => s.label),
      timesteps: Int32Array.from(samples, (s) => s.timestep),
      sources: samples.map((s) => s.source),
      from,
    };
  }
}

/** The compiled worker beside this module (dist/); absent when running from sources. */
const WORKER_SCRIPT = fileURLToPath(new URL('./data_worker.js', import.meta.url));

/** --workers: given, or up to 8 leaving two cores to the main thread and the GPU driver. */
function workerCount(given: number | undefined): number {
  return given ?? Math.max(0, Math.min(8, os.availableParallelism() - 2));
}

/** A batch as the tensors of a `--batch-file` (labels and timesteps int64, as the fixtures store them). */
export function batchTensors(b: TrainBatch): TensorToWrite[] {
  const f32 = (name: string, a: BatchArray): TensorToWrite => ({ name, dtype: 'F32', shape: a.shape, data: a.data });
  const i64 = (name: string, v: Int32Array): TensorToWrite => ({ name, dtype: 'I64', shape: [v.length], data: BigInt64Array.from(v, (x) => BigInt(x)) });
  return [
    f32('pixels_hq', b.pixels_hq), f32('pixels_lq', b.pixels_lq), f32('clip_pixel_values', b.clip_pixel_values), f32('noise', b.noise),
    i64('labels', b.labels), i64('timesteps', b.timesteps),
  ];
}

/** The reading side of a `--batch-file` that the stages' `batchTensor`/`batchIndices` use. */
export type BatchReader = Pick<SafetensorsFile, 'path' | 'info' | 'readF32' | 'readInt32'>;

/** A batch served as if read from its `--batch-file` (no file written): what a stage built from a file takes. */
export function batchReader(b: TrainBatch): BatchReader {
  const where = `training batch at epoch ${b.from.epoch}, image ${b.from.index}`;
  const tensors = new Map(batchTensors(b).map((t) => [t.name, t]));
  const get = (name: string): TensorToWrite => {
    const t = tensors.get(name);
    if (!t) throw new DrError(`${where}: no tensor named "${name}"`);
    return t;
  };
  return {
    path: where,
    info: (name) => {
      const t = get(name);
      return { name, dtype: t.dtype, shape: [...t.shape], byteLength: t.data.byteLength, file: where, fileOffset: 0 };
    },
    readF32: (name) => {
      const t = get(name);
      if (!(t.data instanceof Float32Array)) throw new DrError(`${where}: tensor "${name}" is ${t.dtype}, not F32`);
      return t.data.slice();
    },
    readInt32: (name) => {
      const t = get(name);
      if (t.dtype !== 'I64') throw new DrError(`${where}: tensor "${name}" is ${t.dtype}, not an integer tensor`);
      return Int32Array.from(t.data as BigInt64Array, (v) => Number(v));
    },
  };
}

/** Width and height as displayed (EXIF orientation applied), from the header only. */
async function imageSize(file: string): Promise<{ width: number; height: number; rotated: boolean }> {
  checkImageFile(file);
  const m = await sharp(file).metadata().catch(unreadable(file));
  if (!m.width || !m.height) throw new DrError(`${file}: not a readable image (no size in its header)`);
  const o = m.orientation ?? 1;
  return o >= 5 ? { width: m.height, height: m.width, rotated: true } : { width: m.width, height: m.height, rotated: o > 1 };
}

function cropU8(img: RgbImage, left: number, top: number, S: number): RgbImage {
  const data = new Uint8Array(S * S * 3);
  for (let y = 0; y < S; y++) data.set(img.data.subarray(((top + y) * img.width + left) * 3, ((top + y) * img.width + left + S) * 3), y * S * 3);
  return { width: S, height: S, data };
}

function flipU8(img: RgbImage): RgbImage {
  const { width: W, height: H } = img;
  const data = new Uint8Array(img.data.length);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const s = (y * W + x) * 3;
      const d = (y * W + W - 1 - x) * 3;
      data[d] = img.data[s];
      data[d + 1] = img.data[s + 1];
      data[d + 2] = img.data[s + 2];
    }
  }
  return { width: W, height: H, data };
}

/** Paired LQ/HQ items: HQ matched by file name (extension aside), labels from the CSV or LQ sub-folders. */
function pairItems(s: Extract<DataSource, { kind: 'paired' }>, classes: readonly string[]): Item[] {
  const byStem = new Map<string, string>();
  for (const { file } of listImageTree([s.hq], !!s.recursive)) {
    const stem = path.parse(file).name;
    const prev = byStem.get(stem);
    if (prev) throw new DrError(`${file}: same name as ${prev}; --hq images are matched by file name, so names must be unique`);
    byStem.set(stem, file);
  }
  // Folder labels need the sub-folders, so --lq is then always listed recursively.
  const lqs = listImageTree([s.lq], !!s.recursive || !s.labels);
  const csv = s.labels ? readLabels(s.labels, classes) : undefined;
  const missing = lqs.filter(({ file }) => !byStem.has(path.parse(file).name));
  if (missing.length) {
    throw new DrError(`${missing[0].file}: no HQ image of the same name under ${s.hq}${missing.length > 1 ? ` (nor for ${missing.length - 1} more LQ images)` : ''}`);
  }
  return lqs.map(({ file, rel }) => {
    const relPosix = rel.split(path.sep).join('/');
    let label: number;
    if (csv) {
      const l = csv.get(relPosix) ?? csv.get(path.basename(rel));
      if (l === undefined) throw new DrError(`${s.labels}: no label for ${file} (a line "${relPosix},CLASS")`);
      label = l;
    } else {
      const dir = relPosix.split('/')[0];
      if (dir === relPosix) throw new DrError(`${file}: not in a class sub-folder of ${s.lq} (LQ/noise/x.png), and no --labels CSV`);
      label = classIndex(dir, classes, `${path.join(s.lq, dir)}/ (folder name as label)`);
    }
    return { hq: byStem.get(path.parse(file).name)!, lq: file, label };
  });
}

/** `name,label` lines; the label a class name or index. */
function readLabels(file: string, classes: readonly string[]): Map<string, number> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new DrError(`${file}: cannot read the labels file`);
  }
  const out = new Map<string, number>();
  text.split(/\r?\n/).forEach((line, i) => {
    if (!line.trim()) return;
    const cut = line.lastIndexOf(',');
    const [name, label] = cut < 0 ? [line, ''] : [line.slice(0, cut).trim(), line.slice(cut + 1).trim()];
    if (i === 0 && name === 'name' && label === 'label') return;
    if (!name || !label) throw new DrError(`${file}:${i + 1}: expected "name,label", got "${line}"`);
    if (out.has(name)) throw new DrError(`${file}:${i + 1}: "${name}" is labelled twice`);
    out.set(name, classIndex(label, classes, `${file}:${i + 1}`));
  });
  return out;
}
