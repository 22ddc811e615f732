// Reading a training log (`OUT_DIR/log.jsonl`, one JSON object per step as `dr train` writes it)
// into one series per loss term, for `dr plot`.
import fs from 'node:fs';
import { DrError } from '../errors.js';

export interface TrainingLog {
  file: string;
  /** Logged steps, ascending, each once. */
  steps: number[];
  /** Loss terms (`loss` and `loss_*`) in display order, each aligned with `steps`; null where a line lacks it or logged NaN/Inf (JSON null). */
  terms: Map<string, (number | null)[]>;
  /** From the last line: learning rate, seconds and images since the run began, where logged. */
  last: { lr?: number; seconds?: number; images?: number };
  /** Lines that are not a JSON object with a numeric `step`: how many, and the first one's number. */
  malformed: { count: number; firstLine?: number };
  /** The last line was cut short without a newline: a line `dr train` is still writing, ignored. */
  partialLast: boolean;
}

/** Stage 1's terms, then stage 2's, then any other `loss_*` in the order they first appear. */
const ORDER = ['loss', 'loss_diff', 'loss_deg', 'loss_rec', 'loss_mse', 'loss_per', 'loss_adv', 'loss_disc'];

const isTerm = (key: string): boolean => key === 'loss' || key.startsWith('loss_');

export function readTrainingLog(file: string): TrainingLog {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new DrError(`${file}: no such file (dr train writes OUT_DIR/log.jsonl as it runs)`);
    if (code === 'EISDIR') throw new DrError(`${file}: is a folder, not a log`);
    throw new DrError(`${file}: cannot read (${code ?? (err as Error).message})`);
  }
  // Lines decoded one by one: a long run's log may exceed the longest string V8 can hold.
  const lines: string[] = [];
  for (let start = 0; start < bytes.length;) {
    const end = bytes.indexOf(10, start);
    lines.push(bytes.toString('utf8', start, end < 0 ? bytes.length : end));
    start = end < 0 ? bytes.length : end + 1;
  }
  // Training appends while we read: an unterminated last line may be half-written.
  const unterminated = bytes.length && bytes[bytes.length - 1] !== 10 ? lines.length - 1 : -1;
  const byStep = new Map<number, Record<string, unknown>>();
  const seen: string[] = [];
  const malformed: TrainingLog['malformed'] = { count: 0 };
  let partialLast = false;
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i].trim()) continue;
    const rec = parseLine(lines[i]);
    if (!rec) {
      if (i === unterminated) partialLast = true;
      else {
        malformed.count++;
        malformed.firstLine ??= i + 1;
      }
      continue;
    }
    // A run resumed from an earlier checkpoint logs its steps again: the later line wins.
    byStep.set(rec.step as number, rec);
    for (const key of Object.keys(rec)) if (isTerm(key) && !seen.includes(key)) seen.push(key);
  }
  if (!byStep.size) {
    if (!malformed.count) throw new DrError(`${file}: empty, no step logged yet`);
    throw new DrError(`${file}: no line is a JSON object with a numeric "step" (${malformed.count} malformed, the first at line ${malformed.firstLine})`);
  }
  if (!seen.length) throw new DrError(`${file}: no loss terms ("loss", "loss_*") in any line`);
  const names = [...ORDER.filter((k) => seen.includes(k)), ...seen.filter((k) => !ORDER.includes(k))];
  const steps = [...byStep.keys()].sort((a, b) => a - b);
  const terms = new Map(names.map((name) => [name, steps.map((s) => {
    const v = byStep.get(s)![name];
    return typeof v === 'number' ? v : null;
  })]));
  const lastRec = byStep.get(steps[steps.length - 1])!;
  const num = (k: string): number | undefined => (typeof lastRec[k] === 'number' ? (lastRec[k] as number) : undefined);
  return { file, steps, terms, last: { lr: num('lr'), seconds: num('seconds'), images: num('images') }, malformed, partialLast };
}

/** One line as a record, or undefined when it is not an object with a finite `step` and number-or-null loss terms. */
function parseLine(line: string): Record<string, unknown> | undefined {
  let rec: unknown;
  try {
    rec = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) return undefined;
  const r = rec as Record<string, unknown>;
  if (typeof r.step !== 'number' || !Number.isFinite(r.step)) return undefined;
  for (const [k, v] of Object.entries(r)) if (isTerm(k) && v !== null && typeof v !== 'number') return undefined;
  return r;
}

export interface TermSummary {
  first: number | null;
  last: number | null;
  min: number | null;
  min_step: number | null;
  max: number | null;
}

/** First, last, smallest (and where) and largest logged value of each term; nulls skipped. */
export function summarise(log: TrainingLog): Record<string, TermSummary> {
  const out: Record<string, TermSummary> = {};
  for (const [name, values] of log.terms) {
    const s: TermSummary = { first: null, last: null, min: null, min_step: null, max: null };
    values.forEach((v, i) => {
      if (v === null) return;
      s.first ??= v;
      s.last = v;
      if (s.min === null || v < s.min) [s.min, s.min_step] = [v, log.steps[i]];
      if (s.max === null || v > s.max) s.max = v;
    });
    out[name] = s;
  }
  return out;
}
