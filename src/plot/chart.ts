// Loss curves as a hand-written SVG: one panel per loss term (the terms differ by orders of
// magnitude, so a shared axis would flatten all but the largest), ticks, grid and labels.
// `dr plot` writes it as is or renders it to PNG with sharp (librsvg).
import type { TrainingLog } from './log.js';

export interface ChartOptions {
  title: string;
  /** Log-scale y axes; values ≤ 0 cannot be drawn there and are left out (counted in the panel title). */
  log: boolean;
  /** EMA factor in [0, 1): 0 draws the raw curve only; otherwise the smoothed curve over a faint raw one. */
  smooth: number;
  width: number;
  height: number;
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];

/** What each term is, as the design names it. */
const MEANING: Record<string, string> = {
  loss: 'total',
  loss_diff: 'L_diff, noise MSE',
  loss_deg: 'L_deg, degradation cross-entropy',
  loss_rec: 'L_rec, control decoder MSE',
  loss_mse: 'decoder MSE',
  loss_per: 'L_per, VGG-19 perceptual',
  loss_adv: 'L_adv, generator adversarial',
  loss_disc: 'discriminator',
};

const HEADER = 78; // title, subtitle, legend
const PANEL_H = 300;
const FOOT = 8;
export const DEFAULT_WIDTH = 1200;

/** Columns of panels: one term fills the width, more go two to a row. */
const columns = (terms: number): number => (terms === 1 ? 1 : 2);

/** The image height that gives every panel its default height at any width. */
export function defaultHeight(terms: number): number {
  return HEADER + Math.ceil(terms / columns(terms)) * PANEL_H + FOOT;
}

/** The smallest image whose panels still hold their labels and some curve. */
export function minSize(terms: number): [number, number] {
  const cols = columns(terms);
  return [20 + cols * 320, HEADER + Math.ceil(terms / cols) * 200 + FOOT];
}

export function lossChartSvg(log: TrainingLog, o: ChartOptions): string {
  const names = [...log.terms.keys()];
  const cols = columns(names.length);
  const rows = Math.ceil(names.length / cols);
  const panelW = (o.width - 20) / cols;
  const panelH = (o.height - HEADER - FOOT) / rows;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${o.width}" height="${o.height}" viewBox="0 0 ${o.width} ${o.height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="20" y="30" font-size="20" font-weight="bold" fill="#222">${esc(o.title)}</text>`,
    `<text x="20" y="54" font-size="13" fill="#555">${esc(subtitle(log, o))}</text>`,
  ];
  if (o.smooth > 0) out.push(legend(o.width - 20, 30, o.smooth));
  names.forEach((name, i) => {
    const x = 10 + (i % cols) * panelW;
    const y = HEADER + Math.floor(i / cols) * panelH;
    out.push(panel(log, name, i, { x, y, w: panelW, h: panelH }, o));
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

function subtitle(log: TrainingLog, o: ChartOptions): string {
  const stage = log.terms.has('loss_diff') ? 'stage 1' : log.terms.has('loss_mse') ? 'stage 2' : undefined;
  const first = log.steps[0];
  const last = log.steps[log.steps.length - 1];
  const parts = [stage, first === last ? `step ${first}` : `steps ${first}–${last} (${log.steps.length} logged)`];
  if (log.last.images !== undefined) parts.push(`${log.last.images.toLocaleString('en-US')} images`);
  if (log.last.seconds !== undefined) parts.push(duration(log.last.seconds));
  if (log.last.lr !== undefined) parts.push(`lr ${num(log.last.lr)}`);
  parts.push(o.log ? 'log scale' : 'linear scale');
  return parts.filter(Boolean).join(' · ');
}

/** Right-aligned key: what the faint and the solid line are. */
function legend(right: number, y: number, smooth: number): string {
  const text = `EMA ${smooth}`;
  const x = right - 250;
  return [
    `<g font-size="13" fill="#333">`,
    `<line x1="${x}" y1="${y - 4}" x2="${x + 28}" y2="${y - 4}" stroke="#444" stroke-width="1" stroke-opacity="0.3"/>`,
    `<text x="${x + 34}" y="${y}">raw</text>`,
    `<line x1="${x + 80}" y1="${y - 4}" x2="${x + 108}" y2="${y - 4}" stroke="#444" stroke-width="2"/>`,
    `<text x="${x + 114}" y="${y}">smoothed (${text})</text>`,
    `</g>`,
  ].join('');
}

interface Box { x: number; y: number; w: number; h: number }

function panel(log: TrainingLog, name: string, index: number, b: Box, o: ChartOptions): string {
  const color = PALETTE[index % PALETTE.length];
  const raw = log.terms.get(name)!;
  const values = raw.map((v) => (v === null || !Number.isFinite(v) || (o.log && v <= 0) ? null : v));
  const hidden = raw.filter((v) => v !== null && v <= 0).length;
  const shown = values.filter((v): v is number => v !== null);
  const ema = o.smooth > 0 ? smoothEma(values, o.smooth) : undefined;
  // Plot area inside the panel: room for the y tick labels on the left, the x ticks and axis name below.
  const p = { x: b.x + 74, y: b.y + 30, w: b.w - 74 - 18, h: b.h - 30 - 52 };
  // Tick counts follow the plot's size, so labels (about 50 px wide, 12 px high) never touch.
  const sx = linearScale(log.steps[0], log.steps[log.steps.length - 1], Math.min(6, Math.floor(p.w / 80)), 1, true);
  const yTicks = Math.min(5, Math.floor(p.h / 36));
  // Not Math.min(...shown): a long run's values would overflow the call stack as arguments.
  const [lo, hi] = shown.reduce(([a, b], v) => [Math.min(a, v), Math.max(b, v)], [Infinity, -Infinity]);
  const sy = shown.length ? (o.log ? logScale(lo, hi) : linearScale(lo, hi, yTicks)) : linearScale(0, 1, yTicks);
  const X = (s: number) => p.x + ((s - sx.lo) / (sx.hi - sx.lo)) * p.w;
  const Y = (v: number) => p.y + p.h - ((sy.map(v) - sy.map(sy.lo)) / (sy.map(sy.hi) - sy.map(sy.lo))) * p.h;
  const last = [...values].reverse().find((v) => v !== null);
  const notes = [last !== undefined && last !== null ? `last ${num(last)}` : '', hidden && o.log ? `${hidden} ≤ 0 not shown` : ''].filter(Boolean);
  // The title as long as the panel allows (bold 14 px DejaVu Sans: about 8.1 px a character, measured): the term's meaning goes first.
  const room = (b.x + b.w - p.x) / 8.5;
  const full = [`${name} (${MEANING[name] ?? 'loss term'})`, ...notes].join(' · ');
  const head = full.length <= room ? full : [name, ...notes].join(' · ');
  const g: string[] = [
    `<g data-term="${esc(name)}">`,
    `<text x="${p.x}" y="${b.y + 20}" font-size="14" font-weight="bold" fill="${color}">${esc(head)}</text>`,
    `<rect x="${p.x}" y="${p.y}" width="${p.w}" height="${p.h}" fill="#fafafa" stroke="#999" stroke-width="1"/>`,
  ];
  for (const t of sy.ticks) {
    const ty = r(Y(t));
    g.push(`<line x1="${p.x}" y1="${ty}" x2="${r(p.x + p.w)}" y2="${ty}" stroke="#e2e2e2"/>`);
    g.push(`<line x1="${p.x - 5}" y1="${ty}" x2="${p.x}" y2="${ty}" stroke="#777"/>`);
    g.push(`<text x="${p.x - 8}" y="${ty + 4}" font-size="12" fill="#333" text-anchor="end">${num(t)}</text>`);
  }
  for (const t of sx.ticks) {
    const tx = r(X(t));
    g.push(`<line x1="${tx}" y1="${p.y}" x2="${tx}" y2="${r(p.y + p.h)}" stroke="#e2e2e2"/>`);
    g.push(`<line x1="${tx}" y1="${r(p.y + p.h)}" x2="${tx}" y2="${r(p.y + p.h + 5)}" stroke="#777"/>`);
    g.push(`<text x="${tx}" y="${r(p.y + p.h + 19)}" font-size="12" fill="#333" text-anchor="middle">${stepLabel(t)}</text>`);
  }
  g.push(`<text x="${r(p.x + p.w / 2)}" y="${r(p.y + p.h + 40)}" font-size="13" fill="#333" text-anchor="middle">step</text>`);
  const clip = `clip-${index}`; // an id, whatever characters the term's name has
  g.push(`<clipPath id="${clip}"><rect x="${p.x}" y="${p.y}" width="${p.w}" height="${p.h}"/></clipPath>`);
  const d = pathData(log.steps, values, X, Y, p.w);
  if (d) g.push(`<path class="raw" clip-path="url(#${clip})" d="${d}" fill="none" stroke="${color}" stroke-width="${ema ? 1 : 1.6}"${ema ? ' stroke-opacity="0.3"' : ''} stroke-linejoin="round"/>`);
  const de = ema && pathData(log.steps, ema, X, Y, p.w);
  // A short run (a test, the first steps) shows each logged value; a lone one would draw no line at all.
  if (log.steps.length <= 50) {
    values.forEach((v, i) => {
      if (v !== null) g.push(`<circle class="point" cx="${r(X(log.steps[i]))}" cy="${r(Y(v))}" r="2.5" fill="${color}"${ema ? ' fill-opacity="0.4"' : ''}/>`);
    });
  }
  if (de) g.push(`<path class="ema" clip-path="url(#${clip})" d="${de}" fill="none" stroke="${color}" stroke-width="2" stroke-linejoin="round"/>`);
  g.push('</g>');
  return g.join('\n');
}

/** Exponential moving average, started at the first value (no bias towards 0); a gap keeps the average. */
export function smoothEma(values: readonly (number | null)[], a: number): (number | null)[] {
  let s: number | undefined;
  return values.map((v) => {
    if (v === null) return null;
    s = s === undefined ? v : a * s + (1 - a) * v;
    return s;
  });
}

/**
 * SVG path of a series, broken at gaps. Long runs are reduced to the first, lowest, highest and
 * last point of each pixel column, which draws the same picture as every point.
 */
function pathData(steps: number[], values: readonly (number | null)[], X: (s: number) => number, Y: (v: number) => number, width: number): string {
  const parts: string[] = [];
  let pen = false;
  let column: { px: number; pts: [number, number][] } | undefined;
  const flush = () => {
    if (!column) return;
    const pts = column.pts;
    let lo = pts[0];
    let hi = pts[0];
    for (const q of pts) {
      if (q[1] < lo[1]) lo = q;
      if (q[1] > hi[1]) hi = q;
    }
    const keep = pts.length <= 4 ? pts : [pts[0], ...(lo[0] <= hi[0] ? [lo, hi] : [hi, lo]), pts[pts.length - 1]];
    for (const [x, y] of keep) {
      parts.push(`${pen ? 'L' : 'M'}${r(x)} ${r(y)}`);
      pen = true;
    }
    column = undefined;
  };
  const dense = steps.length > 2 * width;
  values.forEach((v, i) => {
    if (v === null) {
      flush();
      pen = false;
      return;
    }
    const pt: [number, number] = [X(steps[i]), Y(v)];
    const px = dense ? Math.floor(pt[0]) : i;
    if (column && column.px !== px) flush();
    column ??= { px, pts: [] };
    column.pts.push(pt);
  });
  flush();
  return parts.join('');
}

interface Scale { lo: number; hi: number; ticks: number[]; map: (v: number) => number }

/**
 * A range with "nice" ticks (1, 2, 5 × 10^k steps), about `count` of them, spaced at least `minStep`
 * (steps are whole): widened out to the ticks around the data, or `tight` to the data itself.
 */
function linearScale(min: number, max: number, count: number, minStep = 0, tight = false): Scale {
  if (min === max) {
    const pad = Math.abs(min) * 0.1 || 1;
    [min, max] = [min - pad, max + pad];
  }
  const step = Math.max(niceStep((max - min) / count), minStep);
  const lo = tight ? min : Math.floor(min / step) * step;
  const hi = tight ? max : Math.ceil(max / step) * step;
  const ticks: number[] = [];
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) ticks.push(clean(k * step));
  return { lo, hi, ticks, map: (v) => v };
}

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  const f = raw / p;
  // The nearest nice step, not the next larger: a tight axis keeps at least two ticks.
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p;
}

/** Log10 axis from a decade boundary (or a 2/5 step when the data spans less than one) to the next. */
function logScale(min: number, max: number): Scale {
  const map = Math.log10;
  let ticks: number[] = [];
  // Finer multiples only when the data lies within a few of the coarser ticks; 1.5…7 stay ≥ 0.12 decade apart (labels never collide).
  for (const mult of [[1], [1, 2, 5], [1, 1.5, 2, 3, 5, 7]]) {
    const all: number[] = [];
    for (let k = Math.floor(map(min)) - 1; k <= Math.ceil(map(max)) + 1; k++) for (const m of mult) all.push(clean(m * 10 ** k));
    const below = all.filter((t) => t <= min).pop() ?? min;
    const above = all.find((t) => t >= max) ?? max;
    ticks = all.filter((t) => t >= below && t <= above);
    if (ticks.length >= 3) break;
  }
  let lo = ticks[0];
  let hi = ticks[ticks.length - 1];
  if (lo === hi) [lo, hi] = [lo / 2, hi * 2];
  return { lo, hi, ticks, map };
}

/** 0.30000000000000004 → 0.3. */
const clean = (v: number): number => Number(v.toPrecision(12));

/** Compact number: 4 significant digits, exponent form when very small or large. */
export function num(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a < 1e-3 || a >= 1e5) return v.toExponential(2).replace(/\.?0+e/, 'e').replace('e+', 'e');
  return String(Number(v.toPrecision(4)));
}

/** Step ticks: 12000 → 12k. */
const stepLabel = (s: number): string => (Math.abs(s) >= 10000 && s % 100 === 0 ? `${clean(s / 1000)}k` : String(clean(s)));

function duration(seconds: number): string {
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.round(seconds / 60);
  return m < 60 ? `${m} min` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

const r = (v: number): number => Math.round(v * 10) / 10;

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}
