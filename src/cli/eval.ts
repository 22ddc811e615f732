import path from 'node:path';
import { Command } from 'commander';
import sharp from 'sharp';
import { DrError } from '../errors.js';
import { Engine } from '../engine/engine.js';
import { uploadImage } from '../graph/metrics/image.js';
import type { LpipsNet } from '../graph/metrics/lpips.js';
import type { ColorMode } from '../graph/metrics/psnr.js';
import { fidBetween } from '../graph/metrics/fid.js';
import { createFidModel, createMetrics, SET_METRIC_NAMES, isNoReference, metricAvailable, METRIC_NAMES, type Metric, type MetricOptions } from '../graph/metrics/registry.js';
import { listImages, loadRgb, type RgbImage } from '../image/load.js';
import { resizeBicubicU8 } from '../image/resize.js';
import { checkWritable, writeAtomic } from './atomic.js';
import { Progress } from './progress.js';
import { runCommand } from './run.js';

interface EvalOptions {
  metric?: string;
  ref?: string;
  dist?: string;
  color?: string;
  net?: string;
  weights?: string;
  resize?: boolean;
  json?: boolean;
  csv?: boolean;
  report?: string;
  force?: boolean;
}

export function evalCommand(): Command {
  return new Command('eval')
    .description('score images with PSNR, SSIM, LPIPS, DISTS (full-reference) and NIQE, CLIP-IQA, MUSIQ (no-reference), pyiqa conventions')
    .option('--dist <dir>', 'images to score (degraded or restored)')
    .option('--ref <dir>', 'reference images, paired with --dist by file name without extension')
    .option('-m, --metric <list>', `comma-separated: ${METRIC_NAMES.join(', ')} (default: every metric the inputs and weights allow); or fid on its own (folder against folder)`)
    .option('--color <c>', 'psnr/ssim colour: rgb or y (defaults as pyiqa: psnr rgb, ssim y)')
    .option('--net <n>', 'lpips backbone: alex or vgg', 'alex')
    .option('--weights <dir>', 'folder with metric weights (lpips_alex.safetensors, lpips_vgg.safetensors, dists.safetensors, clipiqa_rn50.safetensors, musiq.safetensors)')
    .option('--resize', 'resize a distorted image to its reference size (Pillow bicubic) instead of stopping')
    .option('--json', 'print {"metrics", "results": [{"image", "ref", "dist", "scores"}], "mean", "missing"}')
    .option('--csv', 'print CSV: image,<metric>...; the last row is the mean')
    .option('--report <file>', 'write a self-contained HTML page: reference and distorted side by side with the scores')
    .option('--force', 'overwrite an existing --report file')
    .addHelpText('after', `
Examples:
  dr eval --ref ../shared/images --dist sets/noise50 --metric psnr,ssim,niqe
  dr eval --dist restored/ --metric niqe --csv
  dr eval --ref real/ --dist generated/ --metric fid --weights ~/models/iqa
  dr eval --ref clean --dist restored --metric lpips --net vgg --weights ~/models/iqa --report report.html`)
    .action((opts: EvalOptions) => runCommand(() => evaluate(opts)));
}

interface Row {
  image: string;
  ref?: string;
  dist: string;
  scores: Record<string, number>;
}

async function evaluate(opts: EvalOptions): Promise<number> {
  if (!opts.dist) throw new DrError('--dist: give the folder of images to score (and --ref for full-reference metrics)');
  const color = opts.color as ColorMode | undefined;
  if (color !== undefined && color !== 'rgb' && color !== 'y') throw new DrError(`--color: expected rgb or y, got "${opts.color}"`);
  const net = (opts.net ?? 'alex') as LpipsNet;
  if (net !== 'alex' && net !== 'vgg') throw new DrError(`--net: expected alex or vgg, got "${opts.net}"`);
  const mopts: MetricOptions = { color, net, weightsDir: opts.weights };
  if (opts.json && opts.csv) throw new DrError('--json and --csv: choose one');
  if (opts.report) checkWritable(opts.report, !!opts.force);

  let names: string[];
  if (opts.metric) {
    names = opts.metric.split(',').map((s) => s.trim()).filter(Boolean);
    if (names.some((n) => (SET_METRIC_NAMES as readonly string[]).includes(n))) return fid(opts, mopts, names);
    for (const n of names) if (!(METRIC_NAMES as readonly string[]).includes(n)) throw new DrError(`--metric: unknown metric "${n}" (known: ${[...METRIC_NAMES, ...SET_METRIC_NAMES].join(', ')})`);
    if (!opts.ref && names.some((n) => !isNoReference(n))) {
      throw new DrError(`--ref: ${names.filter((n) => !isNoReference(n)).join(', ')} compare against references; give --ref DIR`);
    }
  } else {
    names = METRIC_NAMES.filter((n) => (opts.ref || isNoReference(n)) && metricAvailable(n, mopts));
  }

  // Pair by name without extension; unpaired files on either side are reported.
  const distFiles = listImages([opts.dist]);
  const missing: string[] = [];
  let pairs: { image: string; ref?: string; dist: string }[];
  if (opts.ref) {
    const refs = new Map(listImages([opts.ref]).map((f) => [path.parse(f).name, f]));
    const seen = new Set<string>();
    pairs = [];
    for (const d of distFiles) {
      const stem = path.parse(d).name;
      const r = refs.get(stem);
      if (r) {
        pairs.push({ image: stem, ref: r, dist: d });
        seen.add(stem);
      } else missing.push(`${d}: no reference named ${stem}.* in ${opts.ref}`);
    }
    for (const [stem, r] of refs) if (!seen.has(stem)) missing.push(`${r}: no distorted image named ${stem}.* in ${opts.dist}`);
    if (pairs.length === 0) throw new DrError(`${opts.dist}: no file name matches one in ${opts.ref} (pairs are matched by name without extension)`);
  } else {
    pairs = distFiles.map((d) => ({ image: path.parse(d).name, dist: d }));
  }
  if (!opts.json) for (const m of missing) process.stderr.write(`dr: ${m}\n`);

  const e = await Engine.create();
  const metrics = createMetrics(e, names, mopts);
  const rows: Row[] = [];
  const thumbs: { ref?: RgbImage; dist: RgbImage }[] = [];
  const bar = new Progress('evaluating', pairs.length, { unit: 'images', minTotal: 2 });
  for (const p of pairs) {
    const refImg = p.ref ? await loadRgb(p.ref) : undefined;
    let distImg = await loadRgb(p.dist);
    if (refImg && (refImg.width !== distImg.width || refImg.height !== distImg.height)) {
      if (!opts.resize) {
        throw new DrError(`${p.dist}: ${distImg.width}x${distImg.height}, but its reference ${p.ref} is ${refImg.width}x${refImg.height} (use --resize to resize it to the reference)`);
      }
      distImg = resizeBicubicU8(distImg, refImg.width, refImg.height);
    }
    const ref = refImg ? uploadImage(e, refImg) : undefined;
    const dist = uploadImage(e, distImg);
    const scores: Record<string, number> = {};
    for (const m of metrics) scores[m.name] = await m.run(e, { ref, dist, distImage: distImg, distFile: p.dist });
    if (ref) e.release(ref);
    e.release(dist);
    rows.push({ ...p, scores });
    if (opts.report) thumbs.push({ ref: refImg, dist: distImg });
    bar.tick();
  }
  bar.stop();

  const mean: Record<string, number> = {};
  for (const m of metrics) mean[m.name] = rows.reduce((s, r) => s + r.scores[m.name], 0) / rows.length;
  if (opts.json) {
    process.stdout.write(`${JSON.stringify({ metrics: metrics.map(describe(mopts)), results: rows, mean, missing }, null, 2)}\n`);
  } else if (opts.csv) {
    const lines = [['image', ...names].join(','), ...rows.map((r) => [csvCell(r.image), ...names.map((n) => String(r.scores[n]))].join(',')), ['mean', ...names.map((n) => String(mean[n]))].join(',')];
    process.stdout.write(`${lines.join('\n')}\n`);
  } else {
    process.stdout.write(table(rows, metrics, mean));
  }
  if (opts.report) writeAtomic(opts.report, await report(rows, thumbs, metrics, mean, missing));
  return missing.length ? 1 : 0;
}

const describe = (o: MetricOptions) => (m: Metric) => ({
  name: m.name,
  kind: m.kind === 'fr' ? 'full-reference' : 'no-reference',
  better: m.higherIsBetter ? 'higher' : 'lower',
  ...(m.name === 'psnr' ? { color: o.color ?? 'rgb' } : m.name === 'ssim' ? { color: o.color ?? 'y' } : m.name === 'lpips' ? { net: o.net } : {}),
});

const csvCell = (s: string): string => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
const fmt = (name: string, v: number): string => (name === 'psnr' || name === 'niqe' ? v.toFixed(4) : v.toFixed(5));

function table(rows: Row[], metrics: Metric[], mean: Record<string, number>): string {
  const head = ['image', ...metrics.map((m) => `${m.name} ${m.higherIsBetter ? '↑' : '↓'}`)];
  const body = rows.map((r) => [r.image, ...metrics.map((m) => fmt(m.name, r.scores[m.name]))]);
  const foot = ['mean', ...metrics.map((m) => fmt(m.name, mean[m.name]))];
  const all = [head, ...body, foot];
  const widths = head.map((_, i) => Math.max(...all.map((r) => [...r[i]].length)));
  const line = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  return `${[line(head), rule, ...body.map(line), rule, line(foot)].join('\n')}\n`;
}

const esc = (s: string): string => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

async function dataUri(img: RgbImage): Promise<string> {
  const png = await sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.data.length), { raw: { width: img.width, height: img.height, channels: 3 } }).png().toBuffer();
  return `data:image/png;base64,${png.toString('base64')}`;
}

async function report(rows: Row[], thumbs: { ref?: RgbImage; dist: RgbImage }[], metrics: Metric[], mean: Record<string, number>, missing: string[]): Promise<string> {
  const cards: string[] = [];
  for (const [i, r] of rows.entries()) {
    const t = thumbs[i];
    const figs = [t.ref ? `<figure><img src="${await dataUri(t.ref)}" alt="reference"><figcaption>reference: ${esc(r.ref!)}</figcaption></figure>` : '',
      `<figure><img src="${await dataUri(t.dist)}" alt="distorted"><figcaption>${esc(r.dist)}</figcaption></figure>`].join('');
    const scores = metrics.map((m) => `<td>${m.name}</td><td>${fmt(m.name, r.scores[m.name])}</td>`).map((c) => `<tr>${c}</tr>`).join('');
    cards.push(`<section><h2>${esc(r.image)}</h2><div class="row">${figs}</div><table>${scores}</table></section>`);
  }
  const head = metrics.map((m) => `<th>${m.name} ${m.higherIsBetter ? '↑' : '↓'}</th>`).join('');
  const summary = rows.map((r) => `<tr><td>${esc(r.image)}</td>${metrics.map((m) => `<td>${fmt(m.name, r.scores[m.name])}</td>`).join('')}</tr>`).join('');
  return `<!doctype html><html><head><meta charset="utf-8"><title>dr eval report</title><style>
body{font-family:system-ui,sans-serif;margin:2em;background:#fafafa}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}
td:first-child{text-align:left}.row{display:flex;gap:1em;flex-wrap:wrap}figure{margin:0}img{max-width:48vw;image-rendering:pixelated}figcaption{font-size:.8em;color:#555}
</style></head><body><h1>dr eval</h1><table><tr><th>image</th>${head}</tr>${summary}<tr><th>mean</th>${metrics.map((m) => `<th>${fmt(m.name, mean[m.name])}</th>`).join('')}</tr></table>
${missing.length ? `<p>Unpaired files:</p><ul>${missing.map((m) => `<li>${esc(m)}</li>`).join('')}</ul>` : ''}
${cards.join('\n')}</body></html>
`;
}

/** --metric fid: every image of --ref against every image of --dist, as two sets (no pairing). */
async function fid(opts: EvalOptions, mopts: MetricOptions, names: string[]): Promise<number> {
  if (names.length > 1) throw new DrError(`--metric: fid compares two folders as sets; run it on its own, not with ${names.filter((n) => n !== 'fid').join(', ')}`);
  if (!opts.ref) throw new DrError('--ref: fid compares the --dist folder against a reference folder; give --ref DIR');
  if (opts.report) throw new DrError('--report: fid is one number for two folders; there is nothing to show side by side');
  const refFiles = listImages([opts.ref]);
  const distFiles = listImages([opts.dist!]);
  for (const [dir, files] of [[opts.ref, refFiles], [opts.dist!, distFiles]] as const) {
    if (files.length < 2) throw new DrError(`${dir}: fid needs at least 2 images per folder, found ${files.length}`);
  }
  const e = await Engine.create();
  const model = createFidModel(e, mopts);
  const bar = new Progress('inception features', refFiles.length + distFiles.length, { unit: 'images', minTotal: 2 });
  const r = await fidBetween(e, model, refFiles, distFiles, () => bar.tick());
  bar.stop();
  const result = { metric: 'fid', better: 'lower', ref: opts.ref, dist: opts.dist, refImages: refFiles.length, distImages: distFiles.length, dims: 2048, fid: r.fid };
  if (opts.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else if (opts.csv) process.stdout.write(`ref,dist,ref_images,dist_images,fid\n${[opts.ref, opts.dist!].map(csvCell).join(',')},${refFiles.length},${distFiles.length},${r.fid}\n`);
  else process.stdout.write(`fid ↓ ${r.fid.toFixed(4)}  (${opts.dist}: ${distFiles.length} images against ${opts.ref}: ${refFiles.length}; pool3, 2048-d)\n`);
  return 0;
}
