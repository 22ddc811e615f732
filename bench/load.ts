// Checkpoint loading benchmark: writes a random PyTorch zip checkpoint of about
// 2 GB (SD-UNet-sized f32 and f16 tensors) to a temporary folder, then measures in
// fresh child processes, so each peak RSS is that task's alone:
//   - reading every tensor of the .pth (restricted unpickler, tensor by tensor),
//   - converting it to .safetensors (what `dr convert` does),
//   - reading every tensor of that .safetensors, for comparison.
// The folder is deleted afterwards.
//
//   npm run build && node dist/bench/load.js [--gb 2] [--json]
import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Checkpoint, TorchSource } from '../src/weights/checkpoint.js';
import { writeSafetensorsLazy } from '../src/weights/safetensors.js';
import { stateDictPickle, writeTorchZip, type TensorSpec } from './torch_writer.js';

const MiB = 2 ** 20;
const CHUNK = 16 * MiB;

interface Measured {
  task: string;
  seconds: number;
  mibPerSecond: number;
  peakRssMiB: number;
}

/** Random bytes in 16 MiB chunks, so generating never holds a whole tensor. */
function* randomBytes(n: number): Generator<Uint8Array> {
  const buf = new Uint8Array(CHUNK);
  for (let left = n; left > 0; left -= CHUNK) yield randomFillSync(buf.subarray(0, Math.min(CHUNK, left)));
}

/** SD-UNet-like mix: 1280×1280 f32 projections, 3×3 f16 convs, small f32 norms. */
function specs(bytes: number): TensorSpec[] {
  const out: TensorSpec[] = [];
  for (let i = 0, total = 0; total < bytes; i++) {
    const kind = i % 3;
    const shape = kind === 0 ? [1280, 1280] : kind === 1 ? [1280, 1280, 3, 3] : [1280];
    const dtype = kind === 1 ? 'F16' : 'F32';
    const n = shape.reduce((a, b) => a * b, 1) * (dtype === 'F16' ? 2 : 4);
    out.push({ name: `blocks.${i}.${['proj', 'conv', 'norm'][kind]}.weight`, dtype, shape, data: randomBytes(n) });
    total += n;
  }
  return out;
}

/** Runs in the child: one task (`noop`: none, for node's own RSS), then prints its wall time and peak RSS as JSON. */
function child(task: string, file: string, out?: string): void {
  const t0 = performance.now();
  let bytes = 0;
  if (task === 'convert') {
    const ck = Checkpoint.fromSource(file, TorchSource.open(file));
    writeSafetensorsLazy(out!, ck.keys().map((k) => ({ ...ck.info(k), read: () => ck.readBytes(k) })), undefined, (n) => (bytes += n));
    ck.close();
  } else if (task === 'read') {
    const ck = Checkpoint.open(file);
    for (const k of ck.keys()) bytes += ck.readBytes(k).byteLength;
    ck.close();
  }
  const seconds = (performance.now() - t0) / 1000;
  process.stdout.write(JSON.stringify({ seconds, bytes, peakRssKiB: process.resourceUsage().maxRSS }));
}

function measure(task: string, label: string, args: string[], bytes: number): Measured {
  const r = JSON.parse(execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--child', task, ...args], { encoding: 'utf8' }));
  return { task: label, seconds: r.seconds, mibPerSecond: bytes / MiB / r.seconds, peakRssMiB: r.peakRssKiB / 1024 };
}

function main(): void {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') return child(argv[1], argv[2], argv[3]);
  const gbAt = argv.indexOf('--gb');
  const gb = gbAt >= 0 ? Number(argv[gbAt + 1]) : 2;
  if (!(gb > 0 && gb < 4)) throw new Error('--gb takes a size in GB below 4 (the writer makes no ZIP64)');
  const json = argv.includes('--json');
  const log = (s: string): void => void (json ? process.stderr : process.stdout).write(`${s}\n`);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-bench-load-'));
  try {
    const pth = path.join(dir, 'random.pth');
    const st = path.join(dir, 'random.safetensors');
    const tensors = specs(gb * 1e9);
    const t0 = performance.now();
    writeTorchZip(pth, stateDictPickle(tensors), tensors);
    const size = fs.statSync(pth).size;
    log(`wrote ${tensors.length} random tensors, ${(size / MiB).toFixed(0)} MiB, in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const baseline = measure('noop', 'node baseline', [], 1);
    const results = [
      measure('read', 'read .pth (torch zip), every tensor', [pth], size),
      measure('convert', 'convert .pth → .safetensors', [pth, st], size),
      measure('read', 'read .safetensors, every tensor', [st], size),
    ];
    if (json) {
      process.stdout.write(`${JSON.stringify({ fileMiB: size / MiB, tensors: tensors.length, baselineRssMiB: baseline.peakRssMiB, results }, null, 2)}\n`);
      return;
    }
    log(`node's own peak RSS: ${baseline.peakRssMiB.toFixed(0)} MiB`);
    for (const r of results) log(`  ${r.task.padEnd(40)} ${r.seconds.toFixed(2).padStart(6)} s  ${r.mibPerSecond.toFixed(0).padStart(5)} MiB/s  peak RSS ${r.peakRssMiB.toFixed(0)} MiB`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main();
