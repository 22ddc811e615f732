import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { DrError } from '../errors.js';
import { ConfigFile } from '../graph/config.js';
import { isOriginalSd } from '../graph/sd/single_file.js';
import { Checkpoint, TorchSource, openTensorFile, type TensorEntry } from '../weights/checkpoint.js';
import { runCommand } from './run.js';

interface InspectOptions {
  json?: boolean;
  key?: string;
}

/** One weights file or model folder of what was inspected. */
interface Part {
  path: string;
  /** safetensors, sharded safetensors, torch zip, torch legacy */
  format: string;
  /** Where the state dict sat inside a torch file ('' = top level), and a removed `module.` prefix. */
  stateDict?: { where: string; strippedPrefix: string };
  layout: string;
  tensors: { name: string; dtype: string; shape: number[]; bytes: number }[];
  parameters: number;
  bytes: number;
}

export function inspectCommand(): Command {
  return new Command('inspect')
    .description('list the tensors of a weights file or model folder and detect its layout')
    .argument('<path>', '.safetensors, .pth/.ckpt/.bin (read safely, nothing executed), a model folder or a diffusers pipeline folder')
    .option('--key <name>', 'the state dict to list when a torch file holds several (e.g. state_dict_ema, model/ema)')
    .option('--json', 'print {"path", "layout", "parts": [{path, format, stateDict, layout, tensors: [{name, dtype, shape, bytes}], parameters, bytes}], "parameters", "bytes"}')
    .addHelpText('after', `
Layouts: diffusers pipeline folder, diffusers <class> (unet/, vae/, ...), transformers <model_type>,
original single-file Stable Diffusion (CompVis keys; use it with --sd FILE or dr convert),
transformers CLIP, lpips (linear heads), diffusers UNet / VAE weights, unknown.

Examples:
  dr inspect v1-5-pruned-emaonly.safetensors
  dr inspect ~/models/stable-diffusion-v1-5 --json`)
    .action((target: string, opts: InspectOptions) => runCommand(async () => inspect(target, opts)));
}

function inspect(target: string, opts: InspectOptions): void {
  const stat = fs.statSync(target, { throwIfNoEntry: false });
  if (!stat) throw new DrError(`${target}: no such file or folder`);
  let layout: string;
  let parts: Part[];
  if (stat.isDirectory() && opts.key !== undefined) throw new DrError(`--key ${opts.key}: ${target} is a folder; --key picks a state dict in a PyTorch file (.pth, .ckpt, .bin)`);
  if (stat.isDirectory() && fs.existsSync(path.join(target, 'model_index.json'))) {
    layout = 'diffusers pipeline folder';
    // The components model_index.json names ([library, class] entries), those with weights.
    const index = ConfigFile.inDir(target, 'model_index.json').raw;
    parts = Object.keys(index).sort()
      .filter((k) => Array.isArray(index[k]) && (index[k] as unknown[])[0] !== null && hasWeights(path.join(target, k)))
      .map((k) => folderPart(path.join(target, k)));
  } else {
    parts = [stat.isDirectory() ? folderPart(target) : filePart(target, opts.key)];
    layout = parts[0].layout;
  }
  const parameters = parts.reduce((s, p) => s + p.parameters, 0);
  const bytes = parts.reduce((s, p) => s + p.bytes, 0);
  if (opts.json) {
    process.stdout.write(`${JSON.stringify({ path: target, layout, parts, parameters, bytes }, null, 2)}\n`);
    return;
  }
  const out: string[] = parts.length > 1 ? [`${target}: ${layout}`, ''] : [];
  for (const p of parts) {
    const where = p.stateDict ? ` (state dict ${p.stateDict.where ? `under "${p.stateDict.where}"` : 'at the top level'}${p.stateDict.strippedPrefix ? `, "${p.stateDict.strippedPrefix}" prefix removed` : ''})` : '';
    out.push(`${p.path}: ${p.format}${where}, ${p.layout}`);
    const w = Math.max(4, ...p.tensors.map((t) => t.name.length));
    const shapes = p.tensors.map((t) => `[${t.shape.join(', ')}]`);
    const sw = Math.max(5, ...shapes.map((s) => s.length));
    out.push(`  ${'name'.padEnd(w)}  dtype  ${'shape'.padEnd(sw)}  bytes`);
    p.tensors.forEach((t, i) => out.push(`  ${t.name.padEnd(w)}  ${t.dtype.padEnd(5)}  ${shapes[i].padEnd(sw)}  ${t.bytes}`));
    out.push(`  ${p.tensors.length} tensors, ${count(p.parameters)} parameters, ${size(p.bytes)}`, '');
  }
  out.push(parts.length > 1 ? `total: ${count(parameters)} parameters, ${size(bytes)}` : '');
  process.stdout.write(`${out.join('\n').trimEnd()}\n`);
}

function hasWeights(dir: string): boolean {
  return fs.readdirSync(dir).some((n) => /\.(safetensors|bin|pth|pt|ckpt)$/.test(n) || n.endsWith('.safetensors.index.json'));
}

function filePart(file: string, key?: string): Part {
  const src = openTensorFile(file, key);
  try {
    const torch = src instanceof TorchSource ? src : undefined;
    return part(file, torch ? torch.format : 'safetensors', detectLayout([...src.tensors.keys()]), [...src.tensors.values()],
      torch && { where: torch.stateDict.where, strippedPrefix: torch.stateDict.strippedPrefix });
  } finally {
    src.close();
  }
}

function folderPart(dir: string): Part {
  const ck = Checkpoint.open(dir);
  try {
    const keys = ck.keys();
    const format = fs.readdirSync(dir).some((n) => n.endsWith('.safetensors.index.json')) ? 'sharded safetensors' : 'safetensors';
    return part(dir, format, folderLayout(dir) ?? detectLayout(keys), keys.map((k) => ck.info(k)));
  } finally {
    ck.close();
  }
}

function part(p: string, format: string, layout: string, entries: TensorEntry[], stateDict?: Part['stateDict']): Part {
  const tensors = entries.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, bytes: t.byteLength }));
  return {
    path: p, format, ...(stateDict ? { stateDict } : {}), layout, tensors,
    parameters: entries.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0),
    bytes: entries.reduce((s, t) => s + t.byteLength, 0),
  };
}

/** From the folder's config.json: diffusers `_class_name` or transformers `model_type`. */
function folderLayout(dir: string): string | undefined {
  if (!fs.existsSync(path.join(dir, 'config.json'))) return undefined;
  const c = ConfigFile.inDir(dir);
  if (c.has('_class_name')) return `diffusers ${c.str('_class_name')}`;
  if (c.has('model_type')) return `transformers ${c.str('model_type')}`;
  return undefined;
}

/** What the tensor names say the file is. */
export function detectLayout(keys: string[]): string {
  const has = (k: string): boolean => keys.includes(k);
  const some = (re: RegExp): boolean => keys.some((k) => re.test(k));
  if (isOriginalSd(keys)) {
    const n = (p: string): number => keys.filter((k) => k.startsWith(p)).length;
    return `original single-file Stable Diffusion (UNet ${n('model.diffusion_model.')}, VAE ${n('first_stage_model.')}, text encoder ${n('cond_stage_model.')} tensors, ${keys.length - n('model.diffusion_model.') - n('first_stage_model.') - n('cond_stage_model.')} others)`;
  }
  if (some(/^(text_model|vision_model)\./) || has('embeddings.token_embedding.weight')) return 'transformers CLIP';
  if (keys.length && keys.every((k) => /^lin\d+\.model\.1\.weight$/.test(k))) return 'lpips (linear heads)';
  if (has('time_embedding.linear_1.weight') && some(/^down_blocks\./)) return 'diffusers UNet';
  if (has('encoder.conv_in.weight') && has('decoder.conv_in.weight')) return 'diffusers VAE';
  return 'unknown';
}

const count = (n: number): string => n.toLocaleString('en-US');
const size = (b: number): string => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : b >= 2 ** 20 ? `${(b / 2 ** 20).toFixed(1)} MiB` : `${b} bytes`);
