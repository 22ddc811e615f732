import path from 'node:path';
import { Command } from 'commander';
import sharp from 'sharp';
import { DrError, NoScore } from '../errors.js';
import { Engine } from '../engine/engine.js';
import { uploadImage } from '../graph/metrics/image.js';
import type { LpipsNet } from '../graph/metrics/lpips.js';
import type { ColorMode } from '../graph/metrics/psnr.js';
import { featureSet } from '../graph/metrics/fid.js';
import { frechetDistance, type FeatureSet } from '../graph/metrics/frechet.js';
import { createFidModel, createMetrics, SET_METRIC_NAMES, isNoReference, metricAvailable, METRIC_NAMES, type Metric, type MetricOptions } from '../graph/metrics/registry.js';
import { listImages, listImageTree, loadRgb, type RgbImage } from '../image/load.js';
import { resizeBicubicU8 } from '../image/resize.js';
import { checkOutputFile, Inputs, writeAtomic } from '../atomic.js';
import { Batch } from './batch.js';
import { Progress } from './progress.js';
import { inShard, parseShard, SHARD_HELP, type Shard } from './shard.js';
import { ADAPTER_HELP, runCommand } from './run.js';

interface EvalOptions {
  metric?: string;
  ref?: string;
  dist: string[];
  color?: string;
  net?: string;
  weights?: string;
  resize?: boolean;
  json?: boolean;
  csv?: boolean;
  report?: string;
  force?: boolean;
  shard?: string;
  recursive?: boolean;
}

export function evalCommand(): Command {
  return new Command('eval')
    .description('score images with PSNR, SSIM, LPIPS, DISTS (full-reference), NIQE, CLIP-IQA, MUSIQ (no-reference) and FID (folder against folder), pyiqa conventions')
    .option('--dist <dir>', 'images to score (degraded or restored); repeat to compare folders: one column group per folder, named by it', (v: string, prev: string[]) => [...prev, v], [])
    .option('--ref <dir>', 'reference images, paired with each --dist by file name without extension')
    .option('--metric <list>', `comma-separated: ${METRIC_NAMES.join(', ')} (default: every metric the inputs and weights allow); or fid on its own (folder against folder)`)
    .option('--color <c>', 'psnr/ssim colour: rgb or y (defaults as pyiqa: psnr rgb, ssim y)')
    .option('--net <n>', 'lpips backbone: alex or vgg', 'alex')
    .option('--adapter <name|index>', ADAPTER_HELP)
    .option('--weights <dir>', 'folder with metric weights (lpips_alex.safetensors, lpips_vgg.safetensors, dists.safetensors, clipiqa_rn50.safetensors, musiq.safetensors, fid_inception.safetensors)')
    .option('--resize', 'resize a distorted image to its reference size (Pillow bicubic) instead of stopping')
    .option('--json', 'print {"metrics", "ref", "folders": [{"name", "dir"}], "results": [{"image", "ref", "files": {FOLDER: file}, "scores": {FOLDER: {METRIC: value or null}}}], "mean": {FOLDER: {...}}, "count": {FOLDER: {METRIC: images in the mean}}, "missing", "unscored"}')
    .option('--csv', 'print CSV: image,<metric>... (several folders: image,<folder>/<metric>...); the last row is the mean')
    .option('--report <file>', 'write a self-contained HTML page: reference and every --dist folder side by side with the scores')
    .option('-f, --force', 'overwrite an existing --report file')
    .option('--recursive', 'also score the images in subfolders, pairing them by their path below --ref and each --dist')
    .option('--shard <i/n>', `${SHARD_HELP}; each shard's per-image rows (--csv, --json) together are the whole set's`)
    .addHelpText('after', `
Only images present in --ref (when given) and in every --dist folder are scored, so each folder's
mean is over the same images; every other file is listed on stderr and the exit code is 1.

Examples:
  dr eval --ref ../shared/images --dist sets/noise50 --metric psnr,ssim,niqe
  dr eval --ref ../shared/images --dist sets/noise50 --dist restored/dr --dist restored/other --report table.html
  dr eval --dist restored/ --metric niqe --csv
  dr eval --ref real/ --dist generated/ --metric fid --weights ~/models/iqa
  dr eval --ref clean --dist restored --metric lpips --net vgg --weights ~/models/iqa --report report.html`)
    .action((opts: EvalOptions) => runCommand(() => evaluate(opts)));
}

/** One --dist folder: its column-group name (the folder's name, or the path as given when names clash). */
interface Folder {
  name: string;
  dir: string;
}

/** A metric's value per name; null where the metric defines none for the image (NoScore). */
type Scores = Record<string, number | null>;

interface Row {
  image: string;
  ref?: string;
  files: Record<string, string>;
  scores: Record<string, Scores>;
}

function folders(dirs: string[]): Folder[] {
  if (dirs.length === 0) throw new DrError('--dist: give the folder of images to score (and --ref for full-reference metrics)');
  const base = dirs.map((d) => path.basename(path.resolve(d)));
  const out = dirs.map((dir, i) => ({ name: base.filter((b) => b === base[i]).length > 1 ? path.normalize(dir).replace(/\/+$/, '') : base[i], dir }));
  for (const [i, f] of out.entries()) {
    if (out.findIndex((g) => path.resolve(g.dir) === path.resolve(f.dir)) !== i) throw new DrError(`--dist: ${f.dir} is given twice`);
  }
  return out;
}

/** Files of a folder by name without extension; a second file with the same name is reported, not scored. */
function byStem(dir: string, missing: string[], shard: Shard | undefined, recursive: boolean): Map<string, string> {
  const m = new Map<string, string>();
  for (const { file: f, rel } of listImageTree([dir], recursive).filter((t) => inShard(t.file, shard))) {
    // With --recursive, images pair by their path below the folder: SUB/NAME.
    const stem = path.join(path.dirname(rel), path.parse(rel).name);
    const seen = m.get(stem);
    if (seen) missing.push(`${f}: not scored, ${seen} has the same name without extension`);
    else m.set(stem, f);
  }
  return m;
}

/**
 * The images to score: those in --ref (when given) and in every folder, paired by name
 * without extension. Every other file is reported in `missing`.
 */
function pairUp(ref: string | undefined, dists: Folder[], shard?: Shard, recursive = false): { rows: Row[]; missing: string[] } {
  const missing: string[] = [];
  const refs = ref ? byStem(ref, missing, shard, recursive) : undefined;
  const maps = dists.map((f) => byStem(f.dir, missing, shard, recursive));
  const stems = refs ? [...refs.keys()] : [...new Set(maps.flatMap((m) => [...m.keys()]))].sort();
  const rows: Row[] = [];
  for (const stem of stems) {
    const lacking = dists.filter((_, i) => !maps[i].has(stem));
    if (lacking.length === 0) {
      rows.push({ image: stem, ref: refs?.get(stem), files: Object.fromEntries(dists.map((f, i) => [f.name, maps[i].get(stem)!])), scores: {} });
      continue;
    }
    const file = refs?.get(stem) ?? maps.find((m) => m.has(stem))!.get(stem)!;
    const others = dists.length > 1 ? `; ${stem} is scored in no folder` : '';
    for (const f of lacking) missing.push(`${file}: no image named ${stem}.* in ${f.dir}${others}`);
  }
  // A shard may hold no image at all (more shards than images): nothing to score is not an error there.
  if (shard) return { rows, missing };
  if (refs) {
    for (const m of maps) {
      for (const [stem, file] of m) if (!refs.has(stem)) missing.push(`${file}: no reference named ${stem}.* in ${ref}`);
    }
    if (rows.length === 0) throw new DrError(`${dists.map((f) => f.dir).join(', ')}: no file name matches one in ${ref} in every folder (pairs are matched by name without extension)`);
  } else if (rows.length === 0) throw new DrError(`${dists.map((f) => f.dir).join(', ')}: no file name is in every folder (images are matched by name without extension)`);
  return { rows, missing };
}

async function evaluate(opts: EvalOptions): Promise<number> {
  const dists = folders(opts.dist);
  const color = opts.color as ColorMode | undefined;
  if (color !== undefined && color !== 'rgb' && color !== 'y') throw new DrError(`--color: expected rgb or y, got "${opts.color}"`);
  const net = (opts.net ?? 'alex') as LpipsNet;
  if (net !== 'alex' && net !== 'vgg') throw new DrError(`--net: expected alex or vgg, got "${opts.net}"`);
  const mopts: MetricOptions = { color, net, weightsDir: opts.weights };
  if (opts.json && opts.csv) throw new DrError('--json and --csv: choose one');
  const shard = parseShard(opts.shard);

  let names: string[];
  if (opts.metric) {
    names = opts.metric.split(',').map((s) => s.trim()).filter(Boolean);
    if (names.some((n) => (SET_METRIC_NAMES as readonly string[]).includes(n))) return fid(opts, dists, mopts, names);
    for (const n of names) if (!(METRIC_NAMES as readonly string[]).includes(n)) throw new DrError(`--metric: unknown metric "${n}" (known: ${[...METRIC_NAMES, ...SET_METRIC_NAMES].join(', ')})`);
    if (!opts.ref && names.some((n) => !isNoReference(n))) {
      throw new DrError(`--ref: ${names.filter((n) => !isNoReference(n)).join(', ')} compare against references; give --ref DIR`);
    }
  } else {
    names = METRIC_NAMES.filter((n) => (opts.ref || isNoReference(n)) && metricAvailable(n, mopts));
  }

  const { rows: paired, missing } = pairUp(opts.ref, dists, shard, !!opts.recursive);
  if (shard) process.stderr.write(`shard ${shard.index}/${shard.count}: ${paired.length} images\n`);
  if (paired.length === 0) {
    for (const m of missing) process.stderr.write(`dr: ${m}\n`);
    return missing.length ? 1 : 0;
  }
  if (opts.report) checkOutputFile(opts.report, new Inputs(listImages([...(opts.ref ? [opts.ref] : []), ...dists.map((f) => f.dir)])), !!opts.force);
  if (!opts.json) for (const m of missing) process.stderr.write(`dr: ${m}\n`);

  const e = await Engine.create();
  const metrics = createMetrics(e, names, mopts);
  /** PNG data URIs for --report: the reference (key "") and each folder's image, per row. */
  const pictures: Record<string, string>[] = [];
  const bar = new Progress('evaluating', paired.length * dists.length, { unit: 'images', minTotal: 2 });
  // A row that cannot be scored in every folder is left out of all (means stay over the same images).
  const batch = new Batch('scored', opts.json);
  const rows: Row[] = [];
  // Images a metric has no value for: reported, and left out of that metric's mean only.
  const unscored: string[] = [];
  for (const row of paired) {
    const unscoredBefore = unscored.length;
    const pics = await batch.item(row.image, async () => {
      const refImg = row.ref ? await loadRgb(row.ref) : undefined;
      const ref = refImg ? uploadImage(e, refImg) : undefined;
      try {
        const pics: Record<string, string> = refImg && opts.report ? { '': await dataUri(refImg) } : {};
        for (const f of dists) {
          const file = row.files[f.name];
          let distImg = await loadRgb(file);
          if (refImg && (refImg.width !== distImg.width || refImg.height !== distImg.height)) {
            if (!opts.resize) {
              throw new DrError(`${file}: ${distImg.width}x${distImg.height}, but its reference ${row.ref} is ${refImg.width}x${refImg.height} (use --resize to resize it to the reference)`);
            }
            distImg = resizeBicubicU8(distImg, refImg.width, refImg.height);
          }
          const dist = uploadImage(e, distImg);
          const scores: Scores = {};
          try {
            for (const m of metrics) {
              try {
                scores[m.name] = await m.run(e, { ref, dist, distImage: distImg });
              } catch (err) {
                if (!(err instanceof NoScore)) throw err;
                scores[m.name] = null;
                unscored.push(`${file}: no ${m.name} score: ${err.message}`);
              }
            }
          } finally {
            e.release(dist);
          }
          row.scores[f.name] = scores;
          if (opts.report) pics[f.name] = await dataUri(distImg);
          bar.tick();
        }
        return pics;
      } finally {
        if (ref) e.release(ref);
      }
    });
    if (!pics) {
      unscored.length = unscoredBefore; // the row is left out whole
      continue;
    }
    batch.done++;
    rows.push(row);
    pictures.push(pics);
  }
  bar.stop();
  missing.push(...batch.errors.map((x) => x.error));
  if (rows.length === 0) return batch.finish(paired.length);

  if (!opts.json) for (const u of unscored) process.stderr.write(`dr: ${u}\n`);
  const mean: Record<string, Scores> = {};
  const count: Record<string, Record<string, number>> = {};
  for (const f of dists) {
    [mean[f.name], count[f.name]] = [{}, {}];
    for (const m of metrics) {
      const values = rows.map((r) => r.scores[f.name][m.name]).filter((v): v is number => v !== null);
      mean[f.name][m.name] = values.length ? values.reduce((a, v) => a + v, 0) / values.length : null;
      count[f.name][m.name] = values.length;
    }
  }
  if (opts.json) {
    const doc = { metrics: metrics.map(describe(mopts)), ref: opts.ref ?? null, folders: dists, results: rows, mean, count, missing, unscored };
    process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
  } else if (opts.csv) {
    const cols = dists.flatMap((f) => metrics.map((m) => ({ head: dists.length > 1 ? `${f.name}/${m.name}` : m.name, folder: f.name, metric: m.name })));
    const lines = [
      ['image', ...cols.map((c) => c.head)].map(csvCell).join(','),
      ...rows.map((r) => [csvCell(r.image), ...cols.map((c) => String(r.scores[c.folder][c.metric] ?? ''))].join(',')),
      ['mean', ...cols.map((c) => String(mean[c.folder][c.metric] ?? ''))].join(','),
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } else {
    process.stdout.write(table(rows, dists, metrics, mean, count));
  }
  if (opts.report) writeAtomic(opts.report, report(opts.ref, rows, pictures, dists, metrics, mean, missing));
  return batch.finish(paired.length) || (missing.length || unscored.length ? 1 : 0);
}

const describe = (o: MetricOptions) => (m: Metric) => ({
  name: m.name,
  kind: m.kind === 'fr' ? 'full-reference' : 'no-reference',
  better: m.higherIsBetter ? 'higher' : 'lower',
  ...(m.name === 'psnr' ? { color: o.color ?? 'rgb' } : m.name === 'ssim' ? { color: o.color ?? 'y' } : m.name === 'lpips' ? { net: o.net } : {}),
});

const csvCell = (s: string): string => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
const fmt = (name: string, v: number | null): string => (v === null ? '—' : name === 'psnr' || name === 'niqe' ? v.toFixed(4) : v.toFixed(5));
const arrow = (m: Metric): string => (m.higherIsBetter ? '↑' : '↓');

/**
 * A row per image, a column group per folder (a group-name line above when there are several),
 * the means last, and under them the number of images each mean is over when an image had no score.
 */
function table(rows: Row[], dists: Folder[], metrics: Metric[], mean: Record<string, Scores>, count: Record<string, Record<string, number>>): string {
  const head = ['image', ...dists.flatMap(() => metrics.map((m) => `${m.name} ${arrow(m)}`))];
  const cells = (image: string, s: (f: Folder) => Scores, show = fmt): string[] => [image, ...dists.flatMap((f) => metrics.map((m) => show(m.name, s(f)[m.name])))];
  const body = rows.map((r) => cells(r.image, (f) => r.scores[f.name]));
  const counted = dists.some((f) => metrics.some((m) => count[f.name][m.name] < rows.length));
  const foot = [cells('mean', (f) => mean[f.name]), ...(counted ? [cells('images', (f) => count[f.name], (_, v) => String(v))] : [])];
  const all = [head, ...body, ...foot];
  const widths = head.map((_, i) => Math.max(...all.map((r) => [...r[i]].length)));
  const n = metrics.length;
  // widen each group's last column so that the folder name fits over the group
  for (const [g, f] of dists.entries()) {
    const span = widths.slice(1 + g * n, 1 + (g + 1) * n).reduce((a, w) => a + w, 2 * (n - 1));
    if ([...f.name].length > span) widths[(g + 1) * n] += [...f.name].length - span;
  }
  const line = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  const groups = dists.length > 1 ? [[' '.repeat(widths[0]), ...dists.map((f, g) => { const span = widths.slice(1 + g * n, 1 + (g + 1) * n).reduce((a, w) => a + w, 2 * (n - 1)); return `${f.name} `.padEnd(span, '-').slice(0, span); })].join('  ')] : [];
  return `${[...groups, line(head), rule, ...body.map(line), rule, ...foot.map(line)].join('\n')}\n`;
}

const esc = (s: string): string => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

async function dataUri(img: RgbImage): Promise<string> {
  const png = await sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.data.length), { raw: { width: img.width, height: img.height, channels: 3 } }).png().toBuffer();
  return `data:image/png;base64,${png.toString('base64')}`;
}

/** The HTML page: the comparison table (best folder per metric in bold), then each image with every folder's version and scores. */
function report(ref: string | undefined, rows: Row[], pictures: Record<string, string>[], dists: Folder[], metrics: Metric[], mean: Record<string, Scores>, missing: string[]): string {
  const best = (s: (f: Folder) => Scores, f: Folder, m: Metric): boolean =>
    dists.length > 1 && s(f)[m.name] !== null && s(f)[m.name] === (m.higherIsBetter ? Math.max : Math.min)(...dists.map((g) => s(g)[m.name]).filter((v): v is number => v !== null));
  const cells = (s: (f: Folder) => Scores, tag: string): string =>
    dists.map((f) => metrics.map((m) => `<${tag}${m === metrics[0] ? ' class="g"' : ''}>${best(s, f, m) ? `<b>${fmt(m.name, s(f)[m.name])}</b>` : fmt(m.name, s(f)[m.name])}</${tag}>`).join('')).join('');
  const groupHead = `<tr><th rowspan="2">image</th>${dists.map((f) => `<th class="g" colspan="${metrics.length}" title="${esc(f.dir)}">${esc(f.name)}</th>`).join('')}</tr>`;
  const metricHead = `<tr>${dists.map(() => metrics.map((m, i) => `<th${i === 0 ? ' class="g"' : ''}>${m.name} ${arrow(m)}</th>`).join('')).join('')}</tr>`;
  const summary = rows.map((r) => `<tr><td>${esc(r.image)}</td>${cells((f) => r.scores[f.name], 'td')}</tr>`).join('');
  const figure = (src: string, label: string, caption: string, scores?: Scores): string =>
    `<figure><img src="${src}" alt="${esc(label)}"><figcaption><b>${esc(label)}</b> ${esc(caption)}${scores ? `<br>${metrics.map((m) => `${m.name} ${fmt(m.name, scores[m.name])}`).join(' · ')}` : ''}</figcaption></figure>`;
  const cards = rows.map((r, i) => {
    const figs = [r.ref ? figure(pictures[i][''], 'reference', r.ref) : '', ...dists.map((f) => figure(pictures[i][f.name], f.name, r.files[f.name], r.scores[f.name]))];
    return `<section><h2>${esc(r.image)}</h2><div class="row">${figs.join('')}</div></section>`;
  });
  const columns = (ref ? 1 : 0) + dists.length;
  return `<!doctype html><html><head><meta charset="utf-8"><title>dr eval report</title><style>
body{font-family:system-ui,sans-serif;margin:2em;background:#fafafa}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}
td:first-child{text-align:left}.g{border-left:2px solid #888}.row{display:flex;gap:1em;flex-wrap:wrap}figure{margin:0}img{max-width:${Math.floor(96 / Math.min(columns, 4))}vw;image-rendering:pixelated}figcaption{font-size:.8em;color:#555}
</style></head><body><h1>dr eval</h1>${ref ? `<p>reference: ${esc(ref)}</p>` : ''}
<table>${groupHead}${metricHead}${summary}<tr><th>mean</th>${cells((f) => mean[f.name], 'th')}</tr></table>
${missing.length ? `<p>Not scored:</p><ul>${missing.map((m) => `<li>${esc(m)}</li>`).join('')}</ul>` : ''}
${cards.join('\n')}</body></html>
`;
}

/** --metric fid: every image of --ref against every image of each --dist folder, as sets (no pairing). */
async function fid(opts: EvalOptions, dists: Folder[], mopts: MetricOptions, names: string[]): Promise<number> {
  if (names.length > 1) throw new DrError(`--metric: fid compares two folders as sets; run it on its own, not with ${names.filter((n) => n !== 'fid').join(', ')}`);
  if (!opts.ref) throw new DrError('--ref: fid compares each --dist folder against a reference folder; give --ref DIR');
  if (opts.shard) throw new DrError('--shard: fid is one statistic of whole folders; run it without --shard');
  if (opts.report) throw new DrError('--report: fid is one number for two folders; there is nothing to show side by side');
  const sets = [{ name: '', dir: opts.ref }, ...dists].map((f) => ({ ...f, files: listImages([f.dir], !!opts.recursive) }));
  for (const s of sets) if (s.files.length < 2) throw new DrError(`${s.dir}: fid needs at least 2 images per folder, found ${s.files.length}`);
  const e = await Engine.create();
  const model = createFidModel(e, mopts);
  const bar = new Progress('inception features', sets.reduce((n, s) => n + s.files.length, 0), { unit: 'images', minTotal: 2 });
  const features: FeatureSet[] = [];
  for (const s of sets) features.push(await featureSet(e, model, s.files, () => bar.tick()));
  bar.stop();
  const refFiles = sets[0].files;
  const results = dists.map((f, i) => ({ name: f.name, dir: f.dir, images: sets[i + 1].files.length, fid: frechetDistance(features[0], features[i + 1]).fid }));
  if (opts.json) process.stdout.write(`${JSON.stringify({ metric: 'fid', better: 'lower', dims: 2048, ref: opts.ref, refImages: refFiles.length, folders: results }, null, 2)}\n`);
  else if (opts.csv) process.stdout.write(`ref,dist,ref_images,dist_images,fid\n${results.map((r) => `${[opts.ref!, r.dir].map(csvCell).join(',')},${refFiles.length},${r.images},${r.fid}`).join('\n')}\n`);
  else for (const r of results) process.stdout.write(`fid ↓ ${r.fid.toFixed(4)}  (${r.dir}: ${r.images} images against ${opts.ref}: ${refFiles.length}; pool3, 2048-d)\n`);
  return 0;
}
