// `dr plot`: a training log (OUT_DIR/log.jsonl as dr train writes it) to loss curves, SVG or
// PNG. The reader and the chart directly, then the built CLI (`npm run build` first).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DrError } from '../src/errors.js';
import { defaultHeight, lossChartSvg, smoothEma } from '../src/plot/chart.js';
import { readTrainingLog, summarise, type TrainingLog } from '../src/plot/log.js';
import { dr, expectUserError } from './cli_runner.js';

let tmp: string;
const at = (...p: string[]) => path.join(tmp, ...p);

const STAGE1 = ['loss', 'loss_diff', 'loss_deg', 'loss_rec'];

/** A stage-1 log of `n` steps whose terms fall from different scales, as dr train writes it. */
function stage1Lines(n: number): string[] {
  const lines: string[] = [];
  for (let step = 1; step <= n; step++) {
    const wobble = 0.05 * Math.sin(step * 1.7);
    const diff = 0.8 * Math.exp(-step / 40) + 0.1 + wobble;
    const deg = 2.1 * Math.exp(-step / 15);
    const rec = 0.05 * Math.exp(-step / 60) + 0.01;
    lines.push(JSON.stringify({ step, loss: diff + deg + rec, loss_diff: diff, loss_deg: deg, loss_rec: rec, lr: 1e-5, seconds: step * 0.5, images: step * 4 }));
  }
  return lines;
}

function writeRun(name: string, text: string): string {
  const dir = at(name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'log.jsonl'), text);
  return dir;
}

/** The SVG elements of one term's panel. */
function panelOf(svg: string, term: string): string {
  const start = svg.indexOf(`<g data-term="${term}">`);
  expect(start, term).toBeGreaterThanOrEqual(0);
  return svg.slice(start, svg.indexOf('</g>', start));
}

const count = (s: string, re: RegExp): number => s.match(re)?.length ?? 0;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-plot-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('reading log.jsonl', () => {
  it('terms in display order; a repeated step keeps its later line; an unfinished last line is ignored; malformed lines counted', () => {
    const file = path.join(writeRun('read', [
      '{"step":1,"loss_deg":2,"loss_diff":1,"loss":3,"lr":1e-5}',
      '{"step":2,"loss":2.5,"loss_diff":0.9,"loss_deg":1.6,"loss_extra":7}',
      'not json',
      '{"step":3,"loss":2,"loss_diff":null,"loss_deg":1}',
      '[1, 2]',
      '{"step":2,"loss":2.4,"loss_diff":0.8,"loss_deg":1.6}', // a resumed run logs step 2 again
      '{"loss":1}', // no step
      '{"step":4,"loss":"1.0"}', // a term that is not a number
      '{"step":5,"loss":1.9,"loss_di',
    ].join('\n')), 'log.jsonl');
    const log = readTrainingLog(file);
    expect(log.steps).toEqual([1, 2, 3]);
    expect([...log.terms.keys()]).toEqual(['loss', 'loss_diff', 'loss_deg', 'loss_extra']);
    expect(log.terms.get('loss')).toEqual([3, 2.4, 2]);
    expect(log.terms.get('loss_diff')).toEqual([1, 0.8, null]); // NaN/Inf are logged as JSON null: a gap
    expect(log.terms.get('loss_extra')).toEqual([null, null, null]); // the later step 2 has none
    expect(log.malformed).toEqual({ count: 4, firstLine: 3 });
    expect(log.partialLast).toBe(true);
    expect(summarise(log).loss).toEqual({ first: 3, last: 2, min: 2, min_step: 3, max: 3 });
    expect(summarise(log).loss_diff).toEqual({ first: 1, last: 0.8, min: 0.8, min_step: 2, max: 1 });
  });

  it.each([
    ['missing', undefined, 'no such file (dr train writes OUT_DIR/log.jsonl'],
    ['empty', '', 'empty, no step logged yet'],
    ['blank', '\n\n', 'empty, no step logged yet'],
    ['garbage', 'abc\n{"loss": 1}\n', 'no line is a JSON object with a numeric "step" (2 malformed, the first at line 1)'],
    ['no-terms', '{"step":1,"lr":1e-5}\n', 'no loss terms'],
  ])('%s log: a DrError naming the file', (name, text, message) => {
    const dir = at(`err-${name}`);
    fs.mkdirSync(dir, { recursive: true });
    if (text !== undefined) fs.writeFileSync(path.join(dir, 'log.jsonl'), text);
    const file = path.join(dir, 'log.jsonl');
    expect(() => readTrainingLog(file)).toThrow(DrError);
    expect(() => readTrainingLog(file)).toThrow(`${file}: ${message}`);
  });
});

describe('the chart', () => {
  const log = () => readTrainingLog(path.join(writeRun('chart', `${stage1Lines(30).join('\n')}\n`), 'log.jsonl'));

  it('one panel per term, each with its raw curve through every logged step; smoothing adds the EMA over a faint raw one', () => {
    const opts = { title: 'chart', log: false, smooth: 0, width: 1200, height: defaultHeight(4) };
    const raw = lossChartSvg(log(), opts);
    const smooth = lossChartSvg(log(), { ...opts, smooth: 0.9 });
    for (const term of STAGE1) {
      const p = panelOf(raw, term);
      expect(count(p, /<path class="raw"/g), term).toBe(1);
      expect(count(p, /<path class="ema"/g), term).toBe(0);
      const d = /<path class="raw"[^>]* d="([^"]+)"/.exec(p)![1];
      expect(count(d, /[ML]/g), term).toBe(30); // one vertex per step: 30 are far fewer than the pixels
      expect(count(p, /<circle class="point"/g), term).toBe(30);
      const s = panelOf(smooth, term);
      expect(count(s, /<path class="ema"/g), term).toBe(1);
      expect(s).toMatch(/<path class="raw"[^>]*stroke-opacity="0.3"/);
    }
    expect(raw).not.toContain('smoothed (EMA');
    expect(smooth).toContain('smoothed (EMA 0.9)');
    expect(raw).toContain('stage 1 · steps 1–30 (30 logged) · 120 images');
  });

  it('log scale: decade ticks; a value ≤ 0 is left out and counted', () => {
    const lines = stage1Lines(30);
    lines[4] = JSON.stringify({ ...JSON.parse(lines[4]), loss_deg: 0 });
    const l = readTrainingLog(path.join(writeRun('logscale', `${lines.join('\n')}\n`), 'log.jsonl'));
    const svg = lossChartSvg(l, { title: 't', log: true, smooth: 0, width: 1200, height: defaultHeight(4) });
    const deg = panelOf(svg, 'loss_deg');
    expect(deg).toContain('1 ≤ 0 not shown');
    const d = /<path class="raw"[^>]* d="([^"]+)"/.exec(deg)![1];
    expect(count(d, /M/g)).toBe(2); // broken where the 0 was
    expect(count(d, /[ML]/g)).toBe(29);
    // loss_deg falls from 1.96 to 0.28: the decades around it.
    const ticks = [...deg.matchAll(/text-anchor="end">([^<]+)</g)].map((m) => m[1]);
    expect(ticks).toEqual(['0.1', '1', '10']);
    // loss_rec spans 0.059 to 0.040, less than a decade: the 1-2-5 ticks around it.
    expect([...panelOf(svg, 'loss_rec').matchAll(/text-anchor="end">([^<]+)</g)].map((m) => m[1])).toEqual(['0.02', '0.05', '0.1']);
  });

  it('log scale within one 1-2-5 step: the finer 1.5-3-7 ticks, so the axis has at least three', () => {
    const l = readTrainingLog(path.join(writeRun('narrow', '{"step":0,"loss":0.45}\n{"step":1,"loss":0.3}\n{"step":2,"loss":0.21}\n'), 'log.jsonl'));
    const svg = lossChartSvg(l, { title: 't', log: true, smooth: 0, width: 800, height: defaultHeight(1) });
    expect([...panelOf(svg, 'loss').matchAll(/text-anchor="end">([^<]+)</g)].map((m) => m[1])).toEqual(['0.2', '0.3', '0.5']);
    expect([...panelOf(svg, 'loss').matchAll(/text-anchor="middle">([^<]+)</g)].map((m) => m[1])).toEqual(['0', '1', '2', 'step']); // whole steps
  });

  it('long runs: the path keeps at most four vertices per pixel column (first, lowest, highest, last)', () => {
    const n = 20000;
    const l = readTrainingLog(path.join(writeRun('long', `${stage1Lines(n).join('\n')}\n`), 'log.jsonl'));
    const svg = lossChartSvg(l, { title: 't', log: false, smooth: 0, width: 1200, height: defaultHeight(4) });
    const d = /<path class="raw"[^>]* d="([^"]+)"/.exec(panelOf(svg, 'loss_diff'))![1];
    const plotWidth = (1200 - 20) / 2 - 74 - 18;
    expect(count(d, /[ML]/g)).toBeLessThanOrEqual(4 * (Math.ceil(plotWidth) + 1));
    expect(count(d, /[ML]/g)).toBeGreaterThan(plotWidth); // still every column
    expect(svg.length).toBeLessThan(300_000);
  });

  it('a small image: the step axis spans the data with at least two ticks, titles drop the term\'s meaning, labels never crowd', () => {
    const l = readTrainingLog(path.join(writeRun('small', `${stage1Lines(600).join('\n')}\n`), 'log.jsonl'));
    const labels = (svg: string, term: string, anchor: string) => [...panelOf(svg, term).matchAll(new RegExp(`text-anchor="${anchor}">([^<]+)<`, 'g'))].map((m) => m[1]);
    const small = lossChartSvg(l, { title: 't', log: false, smooth: 0, width: 660, height: 486 });
    expect(labels(small, 'loss_deg', 'middle')).toEqual(['200', '400', '600', 'step']);
    expect(labels(small, 'loss_deg', 'end').length).toBeLessThanOrEqual(1 + Math.floor((200 - 82) / 24)); // ≥ 24 px apart
    expect(panelOf(small, 'loss_deg')).toMatch(/>loss_deg · last [^<]+<\/text>/);
    const large = lossChartSvg(l, { title: 't', log: false, smooth: 0, width: 1200, height: defaultHeight(4) });
    expect(panelOf(large, 'loss_deg')).toContain('>loss_deg (L_deg, degradation cross-entropy) · last ');
    expect(labels(large, 'loss_deg', 'middle')).toEqual(['100', '200', '300', '400', '500', '600', 'step']);
  });

  it('a million-step run (more values than a call takes arguments) and a term name that is no valid id', () => {
    const n = 1_000_000;
    const steps = Array.from({ length: n }, (_, i) => i);
    const log: TrainingLog = {
      file: 'log.jsonl', steps, terms: new Map([['loss_a "b"', steps.map((i) => 1 / (1 + i))]]), last: {}, malformed: { count: 0 }, partialLast: false,
    };
    const svg = lossChartSvg(log, { title: 't', log: true, smooth: 0, width: 800, height: defaultHeight(1) });
    const panel = panelOf(svg, 'loss_a &quot;b&quot;');
    expect(panel).toContain('<clipPath id="clip-0">');
    expect(panel).toContain('clip-path="url(#clip-0)"');
    expect([...panel.matchAll(/text-anchor="end">([^<]+)</g)].map((m) => m[1])).toEqual(['1e-6', '1e-5', '1e-4', '0.001', '0.01', '0.1', '1']);
  });

  it('EMA starts at the first value and carries over a gap', () => {
    expect(smoothEma([1, 3, null, 5], 0.5)).toEqual([1, 2, null, 3.5]);
  });
});

describe('dr plot', () => {
  let run: string;
  beforeAll(() => {
    run = writeRun('stage1-run', `${stage1Lines(60).join('\n')}\n`);
  });

  it('writes RUN/loss.png by default, replacing its earlier plot; --size sets the PNG size; the log is untouched', async () => {
    const before = fs.readFileSync(path.join(run, 'log.jsonl'));
    for (let i = 0; i < 2; i++) {
      const r = await dr('plot', run);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.trim()).toBe(path.join(run, 'loss.png'));
    }
    const meta = await sharp(path.join(run, 'loss.png')).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 1200, defaultHeight(4)]);
    const sized = at('sized.png');
    const r = await dr('plot', path.join(run, 'log.jsonl'), '--size', '900x700', '--smooth', '0.9', '--log', '-o', sized);
    expect(r.code, r.stderr).toBe(0);
    const m = await sharp(sized).metadata();
    expect([m.format, m.width, m.height]).toEqual(['png', 900, 700]);
    // Not a blank canvas: the curves and labels put dark pixels on the white.
    const { data } = await sharp(sized).greyscale().raw().toBuffer({ resolveWithObject: true });
    expect(data.filter((v) => v < 128).length).toBeGreaterThan(2000);
    expect(fs.readFileSync(path.join(run, 'log.jsonl')).equals(before)).toBe(true);
    expect([...fs.readdirSync(tmp), ...fs.readdirSync(run)].filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('-o .svg writes the SVG; --json prints steps and first, last and smallest value per term', async () => {
    const out = at('curves.svg');
    const r = await dr('plot', run, '-o', out, '--smooth', '0.5', '--json');
    expect(r.code, r.stderr).toBe(0);
    const svg = fs.readFileSync(out, 'utf8');
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg" width="1200"')).toBe(true);
    for (const term of STAGE1) expect(count(panelOf(svg, term), /<path class="(raw|ema)"/g), term).toBe(2);
    expect(svg).toContain('>stage1-run</text>'); // titled by the run's folder
    const s = JSON.parse(r.stdout);
    expect(s).toMatchObject({ steps: 60, first_step: 1, last_step: 60, malformed_lines: 0, output: out });
    expect(Object.keys(s.terms)).toEqual(STAGE1);
    expect(s.terms.loss_deg.first).toBeCloseTo(2.1 * Math.exp(-1 / 15), 12);
    expect(s.terms.loss_deg.last).toBeCloseTo(2.1 * Math.exp(-60 / 15), 12);
    expect(s.terms.loss_deg.min_step).toBe(60);
  });

  it('skips a malformed line with a one-line warning that counts them', async () => {
    const lines = stage1Lines(10);
    lines.splice(3, 0, '{oops', '');
    const dir = writeRun('warn', `${lines.join('\n')}\n`);
    const r = await dr('plot', dir, '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`dr: warning: ${path.join(dir, 'log.jsonl')}: skipped 1 malformed line (the first at line 4)`);
    expect(JSON.parse(r.stdout).steps).toBe(10);
  });

  it.each([
    [['nowhere'], 'nowhere: no such folder or file'],
    [['err-empty'], 'err-empty/log.jsonl: empty, no step logged yet'],
    [['err-missing'], 'err-missing/log.jsonl: no such file'],
    [['stage1-run', '-o', 'x.jpg'], 'x.jpg: the image must be named .png or .svg'],
    [['stage1-run', '-o', 'stage1-run/log.jsonl'], 'the image must be named .png or .svg'],
    [['stage1-run', '--smooth', '1'], '--smooth: expected a number in [0, 1)'],
    [['stage1-run', '--smooth', 'x'], '--smooth: expected a number in [0, 1)'],
    [['stage1-run', '--size', '300x200'], '--size: expected WIDTHxHEIGHT in pixels, from 660x486'],
    [['stage1-run', '--size', 'big'], '--size: expected WIDTHxHEIGHT'],
    [['stage1-run', '-o', 'taken.png'], 'taken.png: already exists (use --force to overwrite)'],
    [['stage1-run', '-o', 'a-folder.png'], 'a-folder.png: is a folder'],
  ])('%j: one clear error, nothing written', async (args, message) => {
    fs.writeFileSync(at('taken.png'), 'keep');
    fs.mkdirSync(at('a-folder.png'), { recursive: true });
    const listing = () => fs.readdirSync(tmp).sort();
    const before = listing();
    // Paths are under tmp; flags and the values of --smooth and --size are as they are.
    const r = await dr('plot', ...args.map((a, i) => (a.startsWith('-') || args[i - 1] === '--smooth' || args[i - 1] === '--size' ? a : at(a))));
    expectUserError(r, message);
    expect(listing()).toEqual(before);
    expect(fs.readFileSync(at('taken.png'), 'utf8')).toBe('keep');
  });

  it('-f replaces a named output', async () => {
    fs.writeFileSync(at('taken.png'), 'keep');
    const r = await dr('plot', run, '-o', at('taken.png'), '-f');
    expect(r.code, r.stderr).toBe(0);
    expect((await sharp(at('taken.png')).metadata()).format).toBe('png');
  });
});
