// `dr eval` with several --dist folders (a degraded set and restorers' outputs): one table with
// a column group per folder, JSON/CSV of the same shape, the HTML report with every folder's
// image beside the reference, and files missing from a folder reported, never silently dropped.
// Small crops of ../shared/images, psnr/ssim only; runs the compiled CLI (npm test builds it).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dr, ourLines } from './cli_runner.js';
import { SHARED } from './helpers.js';

const IMAGES = ['chelsea', 'coffee', 'rocket'];
let tmp: string;
const dir = (name: string): string => path.join(tmp, name);

/** ref: 48×40 crops; deg: JPEG q10 of them; a, b: two "restorers" (blurs of different strength); dup/a: same folder name as a. */
beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-eval-report-'));
  for (const d of ['ref', 'deg', 'a', 'b', 'dup/a']) fs.mkdirSync(dir(d), { recursive: true });
  for (const name of IMAGES) {
    const crop = sharp(path.join(SHARED, 'images', `${name}.png`)).extract({ left: 40, top: 40, width: 48, height: 40 });
    await crop.clone().png().toFile(path.join(dir('ref'), `${name}.png`));
    await crop.clone().jpeg({ quality: 10 }).toFile(path.join(dir('deg'), `${name}.jpg`));
    await crop.clone().blur(1.2).png().toFile(path.join(dir('a'), `${name}.png`));
    await crop.clone().blur(0.6).png().toFile(path.join(dir('b'), `${name}.png`));
    await crop.clone().blur(2).png().toFile(path.join(dir('dup/a'), `${name}.png`));
  }
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const evalJson = async (...args: string[]): Promise<{ code: number; doc: any }> => {
  const r = await dr('eval', '--ref', dir('ref'), ...args, '--metric', 'psnr,ssim', '--json');
  return { code: r.code, doc: JSON.parse(r.stdout) };
};

describe('dr eval with several --dist folders', () => {
  it('--json: a score group per folder, each equal to that folder scored alone; means per folder', async () => {
    const { code, doc } = await evalJson('--dist', dir('deg'), '--dist', dir('a'), '--dist', dir('b'));
    expect(code).toBe(0);
    expect(doc.folders).toEqual([{ name: 'deg', dir: dir('deg') }, { name: 'a', dir: dir('a') }, { name: 'b', dir: dir('b') }]);
    expect(doc.ref).toBe(dir('ref'));
    expect(doc.missing).toEqual([]);
    expect(doc.results.map((r: any) => r.image)).toEqual(IMAGES);
    for (const f of ['deg', 'a', 'b']) {
      const alone = (await evalJson('--dist', dir(f))).doc;
      expect(alone.folders).toEqual([{ name: f, dir: dir(f) }]);
      for (const [i, r] of doc.results.entries()) {
        expect(r.files[f]).toBe(alone.results[i].files[f]);
        expect(r.scores[f]).toEqual(alone.results[i].scores[f]);
      }
      for (const m of ['psnr', 'ssim']) {
        expect(doc.mean[f][m]).toBeCloseTo(doc.results.reduce((s: number, r: any) => s + r.scores[f][m], 0) / IMAGES.length, 12);
      }
    }
    // the blurs keep more of the picture than JPEG q10, the lighter blur most
    expect(doc.mean.deg.psnr).toBeLessThan(doc.mean.a.psnr);
    expect(doc.mean.a.psnr).toBeLessThan(doc.mean.b.psnr);
  });

  it('the table: folder names over their column groups, a row per image, the means last', async () => {
    const r = await dr('eval', '--ref', dir('ref'), '--dist', dir('deg'), '--dist', dir('a'), '--dist', dir('b'), '--metric', 'psnr,ssim');
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ +deg -+  a -+  b -+$/);
    expect(lines[1].split(/\s{2,}/)).toEqual(['image', 'psnr ↑', 'ssim ↑', 'psnr ↑', 'ssim ↑', 'psnr ↑', 'ssim ↑']);
    // each group name starts at its group's first column and its dashes end at the group's last
    const runs = [...lines[2].matchAll(/-+/g)];
    const groups = [...lines[0].matchAll(/\S+ -+/g)];
    for (const g of [0, 1, 2]) {
      expect(groups[g].index).toBe(runs[1 + 2 * g].index);
      expect(groups[g].index! + groups[g][0].length).toBe(runs[2 + 2 * g].index! + runs[2 + 2 * g][0].length);
    }
    expect(lines.slice(3, 6).map((l) => l.split(/\s+/)[0])).toEqual(IMAGES);
    const { doc } = await evalJson('--dist', dir('deg'), '--dist', dir('a'), '--dist', dir('b'));
    const mean = lines[7].split(/\s+/);
    expect(mean[0]).toBe('mean');
    expect(mean.slice(1).map(Number)).toEqual(['deg', 'a', 'b'].flatMap((f) => [Number(doc.mean[f].psnr.toFixed(4)), Number(doc.mean[f].ssim.toFixed(5))]));
  });

  it('--csv: folder/metric columns for several folders, plain metric names for one; the last row is the mean', async () => {
    const r = await dr('eval', '--ref', dir('ref'), '--dist', dir('deg'), '--dist', dir('b'), '--metric', 'psnr,ssim', '--csv');
    expect(r.code).toBe(0);
    const rows = r.stdout.trimEnd().split('\n').map((l) => l.split(','));
    expect(rows[0]).toEqual(['image', 'deg/psnr', 'deg/ssim', 'b/psnr', 'b/ssim']);
    expect(rows.slice(1).map((l) => l[0])).toEqual([...IMAGES, 'mean']);
    const { doc } = await evalJson('--dist', dir('deg'), '--dist', dir('b'));
    expect(rows[1].slice(1).map(Number)).toEqual([doc.results[0].scores.deg.psnr, doc.results[0].scores.deg.ssim, doc.results[0].scores.b.psnr, doc.results[0].scores.b.ssim]);
    expect(rows[4].slice(1).map(Number)).toEqual([doc.mean.deg.psnr, doc.mean.deg.ssim, doc.mean.b.psnr, doc.mean.b.ssim]);
    const one = await dr('eval', '--ref', dir('ref'), '--dist', dir('deg'), '--metric', 'psnr,ssim', '--csv');
    expect(one.stdout.split('\n')[0]).toBe('image,psnr,ssim');
  });

  it('--report: reference and every folder side by side per image, the grouped table with the best folder in bold', async () => {
    const page = path.join(tmp, 'report.html');
    const r = await dr('eval', '--ref', dir('ref'), '--dist', dir('deg'), '--dist', dir('a'), '--dist', dir('b'), '--metric', 'psnr,ssim', '--report', page);
    expect(r.code).toBe(0);
    const html = fs.readFileSync(page, 'utf8');
    expect(html.match(/src="data:image\/png;base64,/g)).toHaveLength(IMAGES.length * 4);
    for (const name of ['deg', 'a', 'b']) expect(html).toContain(`<th class="g" colspan="2" title="${dir(name)}">${name}</th>`);
    const { doc } = await evalJson('--dist', dir('deg'), '--dist', dir('a'), '--dist', dir('b'));
    for (const image of IMAGES) {
      const card = html.slice(html.indexOf(`<h2>${image}</h2>`)).split('</section>')[0];
      expect([...card.matchAll(/alt="([^"]+)"/g)].map((m) => m[1])).toEqual(['reference', 'deg', 'a', 'b']);
      const i = IMAGES.indexOf(image);
      for (const f of ['deg', 'a', 'b']) expect(card).toContain(`psnr ${doc.results[i].scores[f].psnr.toFixed(4)} · ssim ${doc.results[i].scores[f].ssim.toFixed(5)}`);
    }
    // b (the lightest blur) wins every psnr cell, the mean row included
    expect(html.match(/<b>\d+\.\d{4}<\/b>/g)).toEqual([...doc.results.map((x: any) => `<b>${x.scores.b.psnr.toFixed(4)}</b>`), `<b>${doc.mean.b.psnr.toFixed(4)}</b>`]);
  });

  it('a file missing from one folder: reported, the image left out of every folder, exit code 1', async () => {
    const [partial, extra] = [dir('partial'), dir('extra')];
    fs.cpSync(dir('b'), partial, { recursive: true });
    fs.rmSync(path.join(partial, 'coffee.png'));
    fs.cpSync(dir('a'), extra, { recursive: true });
    fs.copyFileSync(path.join(dir('a'), 'rocket.png'), path.join(extra, 'zebra.png'));
    const args = ['--ref', dir('ref'), '--dist', dir('deg'), '--dist', extra, '--dist', partial, '--metric', 'psnr,ssim'];
    const r = await dr('eval', ...args);
    expect(r.code).toBe(1);
    expect(ourLines(r.stderr)).toEqual([
      `dr: ${path.join(dir('ref'), 'coffee.png')}: no image named coffee.* in ${partial}; coffee is scored in no folder`,
      `dr: ${path.join(extra, 'zebra.png')}: no reference named zebra.* in ${dir('ref')}`,
    ]);
    expect(r.stdout.split('\n').slice(3, 5).map((l) => l.split(/\s+/)[0])).toEqual(['chelsea', 'rocket']);
    const json = await dr('eval', ...args, '--json');
    expect(json.code).toBe(1);
    expect(ourLines(json.stderr)).toEqual([]);
    const doc = JSON.parse(json.stdout);
    expect(doc.results.map((x: any) => x.image)).toEqual(['chelsea', 'rocket']);
    expect(doc.missing).toHaveLength(2);
    const page = path.join(tmp, 'partial.html');
    await dr('eval', ...args, '--report', page);
    expect(fs.readFileSync(page, 'utf8')).toContain(`<li>${path.join(extra, 'zebra.png')}: no reference named zebra.* in ${dir('ref')}</li>`);
  });

  it('two files with one name in a folder: the first is scored, the second reported', async () => {
    const twin = dir('twin');
    fs.cpSync(dir('b'), twin, { recursive: true });
    fs.copyFileSync(path.join(dir('deg'), 'rocket.jpg'), path.join(twin, 'rocket.jpg'));
    const r = await dr('eval', '--ref', dir('ref'), '--dist', twin, '--metric', 'psnr', '--json');
    expect(r.code).toBe(1);
    const doc = JSON.parse(r.stdout);
    expect(doc.missing).toEqual([`${path.join(twin, 'rocket.png')}: not scored, ${path.join(twin, 'rocket.jpg')} has the same name without extension`]);
    expect(doc.results.map((x: any) => x.files.twin)).toEqual(['chelsea.png', 'coffee.png', 'rocket.jpg'].map((f) => path.join(twin, f)));
  });

  it('folders with the same name are named by their paths; the same folder twice is an error', async () => {
    const { code, doc } = await evalJson('--dist', dir('a'), '--dist', dir('dup/a'));
    expect(code).toBe(0);
    expect(doc.folders.map((f: any) => f.name)).toEqual([dir('a'), dir('dup/a')]);
    const twice = await dr('eval', '--ref', dir('ref'), '--dist', dir('a'), '--dist', `${dir('a')}/`, '--metric', 'psnr');
    expect(twice.code).toBe(1);
    expect(ourLines(twice.stderr)).toEqual([`dr: --dist: ${dir('a')}/ is given twice`]);
  });

  it('no name in every folder: one error line naming the folders', async () => {
    const other = dir('other');
    fs.mkdirSync(other);
    fs.copyFileSync(path.join(dir('a'), 'rocket.png'), path.join(other, 'moon.png'));
    const r = await dr('eval', '--ref', dir('ref'), '--dist', dir('a'), '--dist', other, '--metric', 'psnr');
    expect(r.code).toBe(1);
    expect(ourLines(r.stderr)).toEqual([`dr: ${dir('a')}, ${other}: no file name matches one in ${dir('ref')} in every folder (pairs are matched by name without extension)`]);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});
