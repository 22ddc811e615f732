// Never lose a photo, never waste a run (issue 11, items 1–5), on the built CLI with tiny
// images and the tiny fixtures: no command overwrites its own input (symlinks and hard
// links included, --force or not); outputs are checked before any model loads; Ctrl-C and
// SIGTERM leave the terminal usable and no partial file; --skip-existing resumes a
// default-output run; a bad item in a batch is skipped and summarised in every command.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSafetensors, writeSafetensorsLazy } from '../src/weights/safetensors.js';
import { CLI, dr, expectUserError, ourLines, runDr } from './cli_runner.js';
import { FIXTURES, SHARED } from './helpers.js';

const SD = path.join(FIXTURES, 'sd-tiny');
const CLIP = path.join(FIXTURES, 'clip-tiny');
// Training-free on the tiny fixtures; --steps 2 at the default strength 0.5 runs one step.
const TRAINING_FREE = ['--sd', SD, '--clip', CLIP, '--controlnet', path.join(SD, 'controlnet'), '--steps', '2'];

let tmp: string;
const at = (...parts: string[]) => path.join(tmp, ...parts);
const bytesOf = (p: string) => fs.readFileSync(p);
const temps = (dir: string) => fs.readdirSync(dir).filter((f) => f.endsWith('.tmp'));

/** A 40×40 crop of a test photo. */
async function crop(file: string, left: number): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await sharp(path.join(SHARED, 'images/chelsea.png')).extract({ left, top: 40, width: 40, height: 40 }).png().toFile(file);
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-safety-'));
  fs.chmodSync(tmp, 0o755); // the read-only folder test runs dr as another user
  for (const [name, left] of [['a', 100], ['b', 160], ['c', 220]] as const) await crop(at('photos', `${name}.png`), left);
  writeSafetensors(at('w.safetensors'), [{ name: 'x', dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) }]);
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('no command overwrites its own input, with or without --force', () => {
  /** Every input of the runs below stays byte for byte. */
  const unchanged = (files: string[]) => {
    const before = files.map(bytesOf);
    return () => files.forEach((f, i) => expect(bytesOf(f).equals(before[i]), f).toBe(true));
  };

  it('restore: -o the input itself, a symlink to it, a hard link to it', async () => {
    const a = at('photos/a.png');
    const check = unchanged([a]);
    fs.symlinkSync(a, at('link.png'));
    fs.linkSync(a, at('hard.png'));
    for (const target of [a, at('link.png'), at('hard.png')]) {
      const r = await dr('restore', a, '-o', target, '--force', ...TRAINING_FREE);
      expectUserError(r, target, 'is the input');
      expect(r.stderr).not.toContain('--force');
    }
    check();
  });

  it('restore and degrade: an output folder that is, or links to, the input folder', async () => {
    const check = unchanged(['a', 'b', 'c'].map((n) => at('photos', `${n}.png`)));
    fs.symlinkSync(at('photos'), at('photos-link'));
    for (const out of [at('photos'), `${at('photos-link')}/`]) {
      const r = await dr('restore', at('photos'), '-o', out, '--force', ...TRAINING_FREE);
      expectUserError(r, out, 'is the folder of the input');
      expect(r.stderr).not.toContain('--force');
      expectUserError(await dr('degrade', at('photos'), '-o', out, '--force', '--type', 'noise:5'), out, 'is the folder of the input');
    }
    check();
    expect(fs.readdirSync(at('photos')).sort()).toEqual(['a.png', 'b.png', 'c.png']);
  });

  it('convert A -o A, and -o a folder that holds A; forward --out its --inputs; eval --report over an image', async () => {
    const w = at('w.safetensors');
    const check = unchanged([w, at('photos/a.png')]);
    expectUserError(await dr('convert', w, '-o', w, '--force'), 'is the input');
    expectUserError(await dr('convert', w, '-o', tmp, '--force'), 'holds the input');
    expectUserError(await dr('forward', '--model', path.join(SD, 'vae'), '--inputs', w, '--out', w, '--force'), 'is the input');
    const r = await dr('eval', '--ref', at('photos'), '--dist', at('photos'), '--metric', 'psnr', '--report', at('photos/a.png'), '--force');
    expectUserError(r, 'is the input');
    expect(r.stdout).toBe('');
    check();
  });
});

describe('outputs are checked before any work', () => {
  // The model named here does not exist: on a run that loads it first, that error comes before the output's.
  const NO_MODEL = () => ['--model', at('no-such-model')];

  it('restore: a missing output folder, an output that is a folder', async () => {
    expectUserError(await dr('restore', at('photos/a.png'), '-o', at('nodir/out.png'), ...NO_MODEL()), 'nodir: no such folder');
    fs.mkdirSync(at('taken/a.png'), { recursive: true });
    expectUserError(await dr('restore', at('photos/a.png'), '-o', at('taken/'), ...NO_MODEL()), 'a.png: is a folder');
  });

  it('eval --report into a missing folder or onto a folder: refused before any score is computed', async () => {
    for (const [report, message] of [[at('nodir/r.html'), 'no such folder'], [at('photos'), 'is a folder']]) {
      const r = await dr('eval', '--ref', at('photos'), '--dist', at('photos'), '--metric', 'psnr', '--report', report);
      expectUserError(r, message);
      expect(r.stdout).toBe('');
    }
  });

  it('a read-only output folder, for restore, degrade, eval --report, convert and init', async () => {
    const ro = at('ro');
    fs.mkdirSync(ro);
    fs.chmodSync(ro, 0o555);
    // root writes anywhere: then dr runs as nobody, as a user would meet the folder
    const user = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : undefined;
    const runs = [
      ['restore', at('photos/a.png'), '-o', path.join(ro, 'a.png'), ...NO_MODEL()],
      ['degrade', at('photos/a.png'), '-o', ro, '--type', 'noise:5'],
      ['eval', '--ref', at('photos'), '--dist', at('photos'), '--metric', 'psnr', '--report', path.join(ro, 'r.html')],
      ['convert', at('w.safetensors'), '-o', path.join(ro, 'w.safetensors')],
      ['init', '--sd', SD, '--clip', CLIP, '-o', path.join(ro, 'ckpt')],
    ];
    for (const args of runs) {
      const r = await runDr(args, { user });
      expectUserError(r, `${ro}: folder is not writable`);
      expect(r.stdout).toBe('');
    }
    expect(fs.readdirSync(ro)).toEqual([]);
  });
});

/** Runs dr and sends it `signal` once `when` (asked on each output chunk and every 5 ms) holds. */
function interrupt(args: string[], when: (output: string) => boolean, signal: NodeJS.Signals, viaTerminal = false) {
  // `script` gives dr a terminal, so that its progress bars (which hide the cursor) are drawn.
  const child = viaTerminal
    ? spawn('script', ['-qefc', `sh -c 'echo $$ >&2; exec node ${[CLI, ...args].join(' ')}'`, '/dev/null'])
    : spawn('node', [CLI, ...args]);
  let out = '';
  let sent = false;
  return new Promise<{ code: number | null; out: string; sent: boolean }>((resolve) => {
    const poll = () => {
      if (sent || !when(out)) return;
      sent = true;
      // under script, dr is the shell's pid, printed first; kill it, not script
      process.kill(viaTerminal ? Number(/^(\d+)/.exec(out)![1]) : child.pid!, signal);
    };
    const timer = setInterval(poll, 5);
    const read = (chunk: Buffer) => {
      out += chunk.toString();
      poll();
    };
    child.stdout.on('data', read);
    child.stderr.on('data', read);
    child.on('close', (code) => {
      clearInterval(timer);
      resolve({ code, out, sent });
    });
  });
}

describe('interrupts', () => {
  it('Ctrl-C during a batch: the terminal is restored, "interrupted", exit 130, finished outputs stay, nothing partial', async () => {
    const out = at('interrupted');
    // 4 steps (2 run) per image: enough for a progress bar, which the second image's is interrupted in
    const secondBar = (s: string) => /\[2\/3\] \S+ \[/.test(s);
    const r = await interrupt(['restore', at('photos'), '-o', `${out}/`, ...TRAINING_FREE, '--steps', '4'], secondBar, 'SIGINT', true);
    expect(r.sent, r.out).toBe(true);
    expect(r.code, r.out).toBe(130);
    expect(r.out).toContain('dr: interrupted');
    const last = (code: string) => r.out.lastIndexOf(code);
    expect(last('\x1b[?25l')).toBeGreaterThan(0); // a bar hid the cursor ...
    expect(last('\x1b[?25h')).toBeGreaterThan(last('\x1b[?25l')); // ... and it is shown again
    expect(last('\x1b[?7h')).toBeGreaterThan(last('\x1b[?7l')); // line wrapping likewise
    expect(fs.readdirSync(out)).toEqual(['a.png']);
    expect(await sharp(path.join(out, 'a.png')).metadata()).toMatchObject({ width: 40, height: 40 });
  });

  it('SIGTERM while a file is being written: its temporary is removed, no output, exit 143', async () => {
    // 128 tensors of 1 MiB: written one by one, long enough to be caught in the middle
    const big = at('big.safetensors');
    const mib = new Uint8Array(1 << 20);
    writeSafetensorsLazy(big, Array.from({ length: 128 }, (_, i) => ({ name: `t${i}`, dtype: 'U8' as const, shape: [1 << 20], read: () => mib })));
    const outDir = at('converted');
    fs.mkdirSync(outDir);
    const r = await interrupt(['convert', big, '-o', path.join(outDir, 'big.safetensors')], () => fs.readdirSync(outDir).length > 0, 'SIGTERM');
    expect(r.sent, r.out).toBe(true);
    expect(r.code, r.out).toBe(143);
    expect(ourLines(r.out)).toEqual(['dr: interrupted']);
    expect(fs.readdirSync(outDir)).toEqual([]);
  });

  it('SIGINT during dr init --force over a checkpoint: the old checkpoint stays whole, no temporary folder is left', async () => {
    const parent = at('init-parent');
    const ckpt = path.join(parent, 'ckpt');
    const args = ['init', '--sd', SD, '--clip', CLIP, '--control-channels', '32,32,32,32', '-o', ckpt];
    const made = await dr(...args);
    expect(made.code, made.stderr).toBe(0);
    const weights = path.join(ckpt, 'control/model.safetensors');
    const before = bytesOf(weights);
    const r = await interrupt([...args, '--seed', '1', '--force'], () => fs.readdirSync(parent).length > 1, 'SIGINT');
    expect(r.sent, r.out).toBe(true);
    expect(r.code, r.out).toBe(130);
    expect(fs.readdirSync(parent)).toEqual(['ckpt']);
    expect(bytesOf(weights).equals(before)).toBe(true);
  });

  it('a later run removes stale temporaries of its naming (their process is gone), not live ones', async () => {
    const out = at('stale');
    fs.mkdirSync(out);
    const stale = path.join(out, '.a.png.dr-99999999.tmp'); // above any pid_max
    const live = path.join(out, `.b.png.dr-${process.pid}.tmp`);
    for (const f of [stale, live]) fs.writeFileSync(f, 'partial');
    const r = await dr('degrade', at('photos/a.png'), '-o', out, '--type', 'noise:5');
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readdirSync(out).sort()).toEqual([path.basename(live), 'a.json', 'a.png']);
  });
});

describe('--skip-existing resumes a default-output run', () => {
  it('dr restore DIR twice: the second run writes nothing and takes no *_restored output as an input', async () => {
    const dir = at('resume');
    fs.cpSync(at('photos'), dir, { recursive: true });
    fs.rmSync(path.join(dir, 'c.png'));
    const first = await dr('restore', dir, ...TRAINING_FREE, '--skip-existing', '--json');
    expect(first.code, first.stderr).toBe(0);
    expect(fs.readdirSync(dir).sort()).toEqual(['a.png', 'a_restored.png', 'b.png', 'b_restored.png']);
    const written = ['a', 'b'].map((n) => fs.statSync(path.join(dir, `${n}_restored.png`)).mtimeMs);
    const second = await dr('restore', dir, ...TRAINING_FREE, '--skip-existing', '--json');
    expect(second.code, second.stderr).toBe(0);
    const doc = JSON.parse(second.stdout);
    expect(doc.results).toEqual([]);
    expect(doc.skipped).toEqual(['a.png', 'b.png'].map((f) => path.join(dir, f)));
    expect(fs.readdirSync(dir).sort()).toEqual(['a.png', 'a_restored.png', 'b.png', 'b_restored.png']);
    expect(['a', 'b'].map((n) => fs.statSync(path.join(dir, `${n}_restored.png`)).mtimeMs)).toEqual(written);
  });
});

describe('a bad item in a batch: skipped with one line, the rest processed, a summary, exit 1', () => {
  let mixed: string;
  beforeAll(async () => {
    // sorted first, so a run that stops at it would process nothing else
    mixed = at('mixed');
    fs.cpSync(at('photos'), mixed, { recursive: true });
    fs.rmSync(path.join(mixed, 'c.png'));
    fs.writeFileSync(path.join(mixed, '0bad.png'), 'not an image');
  });
  const bad = () => path.join(mixed, '0bad.png');

  it('restore: an unreadable image, and a truncated one found only after the model loaded', async () => {
    const whole = bytesOf(path.join(mixed, 'a.png'));
    fs.writeFileSync(path.join(mixed, '00cut.png'), whole.subarray(0, whole.length >> 1)); // its header reads, its pixels do not
    const out = at('mixed-restored');
    const r = await dr('restore', mixed, '-o', `${out}/`, ...TRAINING_FREE);
    fs.rmSync(path.join(mixed, '00cut.png'));
    expect(r.code).toBe(1);
    const lines = ourLines(r.stderr).filter((l) => l.startsWith('dr: '));
    expect(lines).toEqual([
      expect.stringMatching(/0bad\.png: not a readable image/),
      expect.stringMatching(/00cut\.png: not a readable image/),
      'dr: 2 written, 2 failed',
    ]);
    expect(fs.readdirSync(out).sort()).toEqual(['a.png', 'b.png']);
  });

  it('degrade', async () => {
    const out = at('mixed-degraded');
    const r = await dr('degrade', mixed, '-o', out, '--type', 'noise:5');
    expect(r.code).toBe(1);
    expect(ourLines(r.stderr)).toEqual([expect.stringMatching(/^dr: .*0bad\.png: not a readable image/), 'dr: 2 written, 1 failed']);
    expect(fs.readdirSync(out).sort()).toEqual(['a.json', 'a.png', 'b.json', 'b.png']);
  });

  it('probe', async () => {
    const r = await dr('probe', mixed, '--model', CLIP);
    expect(r.code).toBe(1);
    expect(ourLines(r.stderr)).toEqual([expect.stringMatching(/^dr: .*0bad\.png: not a readable image/), 'dr: 2 scored, 1 failed']);
    expect(r.stdout.split('\n').filter((l) => l.startsWith(mixed))).toEqual(['a.png', 'b.png'].map((f) => path.join(mixed, f)));
  });

  it('convert of several files', async () => {
    const dir = at('tensors');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, '0bad.pth'), 'not a checkpoint');
    for (const n of ['p', 'q']) fs.copyFileSync(at('w.safetensors'), path.join(dir, `${n}.safetensors`));
    const out = at('tensors-out');
    const r = await dr('convert', ...['0bad.pth', 'p.safetensors', 'q.safetensors'].map((f) => path.join(dir, f)), '-o', out);
    expect(r.code).toBe(1);
    expect(ourLines(r.stderr)).toEqual([expect.stringMatching(/^dr: .*0bad\.pth: /), 'dr: 2 written, 1 failed']);
    expect(fs.readdirSync(out).sort()).toEqual(['p.safetensors', 'q.safetensors']);
    expect(r.stdout.trim().split('\n')).toEqual(['p', 'q'].map((n) => path.join(out, `${n}.safetensors`)));
  });

  it('eval: the scores it could compute are printed, the bad pair listed as not scored', async () => {
    const dist = at('mixed-dist');
    fs.cpSync(at('photos'), dist, { recursive: true });
    await sharp(path.join(dist, 'a.png')).resize(20, 20).toFile(path.join(dist, 'a2.png'));
    fs.renameSync(path.join(dist, 'a2.png'), path.join(dist, 'a.png')); // a.png: 20×20 against a 40×40 reference
    const r = await dr('eval', '--ref', at('photos'), '--dist', dist, '--metric', 'psnr');
    expect(r.code).toBe(1);
    expect(ourLines(r.stderr)).toEqual([expect.stringMatching(/a\.png: 20x20, but its reference .* is 40x40/), 'dr: 2 scored, 1 failed']);
    expect(r.stdout.split('\n').map((l) => l.split(/\s+/)[0])).toEqual(expect.arrayContaining(['b', 'c', 'mean']));
    expect(r.stdout).not.toMatch(/^a\s/m);
    const json = JSON.parse((await dr('eval', '--ref', at('photos'), '--dist', dist, '--metric', 'psnr', '--json')).stdout);
    expect(json.results.map((x: { image: string }) => x.image)).toEqual(['b', 'c']);
    expect(json.missing).toEqual([expect.stringMatching(/a\.png: 20x20/)]);
  });
});
