import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { DrError } from '../errors.js';
import { SD_COMPONENTS, SD15_CONFIG_DIR, SingleFileSd, isOriginalSd, type SdComponent } from '../graph/sd/single_file.js';
import { Checkpoint, openTensorFile } from '../weights/checkpoint.js';
import { writeSafetensorsYielding } from '../weights/safetensors.js';
import { beginTemp, checkOutputFile, checkOutputFolder, checkWritable, commitTemp, dropTemp, Inputs } from '../atomic.js';
import { Batch } from './batch.js';
import { Progress } from './progress.js';
import { runCommand } from './run.js';

interface ConvertOptions {
  output?: string;
  config?: string;
  key?: string;
  force?: boolean;
}

const WEIGHTS_FILE: Record<SdComponent, string> = {
  unet: 'diffusion_pytorch_model.safetensors',
  vae: 'diffusion_pytorch_model.safetensors',
  text_encoder: 'model.safetensors',
};

/** Shown as a progress bar only when there is enough to wait for. */
const BAR_MIN_BYTES = 64 * 2 ** 20;

export function convertCommand(): Command {
  return new Command('convert')
    .description('convert a single-file Stable Diffusion checkpoint to a diffusers folder, or any weights file to .safetensors')
    .argument('<inputs...>', '.safetensors, .ckpt, .pth or .bin (pickles are read safely: nothing in them is executed)')
    .requiredOption('-o, --output <path>', 'a folder (diffusers layout, for single-file SD checkpoints) or a .safetensors file; for several inputs, the folder of their .safetensors')
    .option('--config <dir>', 'diffusers folder whose configs, tokenizer and scheduler fit the checkpoint (default: SD 1.5)')
    .option('--key <name>', 'the state dict to convert when a torch file holds several (e.g. state_dict_ema, model/ema)')
    .option('-f, --force', 'overwrite the output if it exists')
    .addHelpText('after', `
A single-file checkpoint in the original CompVis layout (model.diffusion_model.*, first_stage_model.*,
cond_stage_model.*) becomes unet/, vae/, text_encoder/ (config.json + safetensors), tokenizer/,
scheduler/ and model_index.json; keys diffusers does not use (model_ema.*, betas, ...) are left out.
With -o FILE.safetensors any file is converted as it is (same tensor names); several inputs
become OUT/NAME.safetensors each (a file that cannot be converted is reported, the rest go on).

Examples:
  dr convert v1-5-pruned-emaonly.safetensors -o ~/models/sd15
  dr convert alex.pth -o alex.safetensors
  dr convert ckpts/*.pth -o converted/`)
    .action((inputs: string[], opts: ConvertOptions) => runCommand(() => (inputs.length === 1 ? convert(inputs[0], opts) : convertMany(inputs, opts))));
}

/** Several files, each to OUT/NAME.safetensors, with the batch rule for one that fails. */
async function convertMany(files: string[], opts: ConvertOptions): Promise<number> {
  const dir = opts.output!;
  if (dir.endsWith('.safetensors')) throw new DrError(`${dir}: one output file for ${files.length} inputs; give a folder`);
  const inputs = new Inputs(files);
  checkOutputFolder(dir, 'folder', inputs);
  const seen = new Map<string, string>();
  const plan = files.map((input) => {
    const name = path.parse(input).name;
    const prev = seen.get(name);
    if (prev) throw new DrError(`${input}: same output name as ${prev} (${name}.safetensors); convert them into different folders`);
    seen.set(name, input);
    const out = path.join(dir, `${name}.safetensors`);
    checkOutputFile(out, inputs, !!opts.force);
    return { input, out };
  });
  const batch = new Batch('written');
  for (const { input, out } of plan) {
    if (!(await batch.item(input, () => toSafetensors(input, out, opts.key)))) continue;
    batch.done++;
    process.stdout.write(`${out}\n`);
  }
  return batch.finish(plan.length);
}

/** Any tensor file as it is; true once written. */
async function toSafetensors(input: string, out: string, key: string | undefined): Promise<true> {
  const ck = Checkpoint.fromSource(input, openTensorFile(input, key));
  const bar = progress([ck]);
  try {
    await writeAll(out, ck, input, bar);
  } finally {
    bar.stop();
    ck.close();
  }
  return true;
}

async function convert(input: string, opts: ConvertOptions): Promise<void> {
  const out = path.resolve(opts.output!);
  // The input (and --config) may not be the output, nor inside an output folder that replaces it.
  const inputs = new Inputs([input, ...(opts.config ? [opts.config] : [])]);
  if (out.endsWith('.safetensors')) checkOutputFile(opts.output!, inputs, !!opts.force);
  else {
    checkOutputFolder(opts.output!, 'tree', inputs);
    checkWritable(opts.output!, !!opts.force);
  }
  if (out.endsWith('.safetensors')) await toSafetensors(input, out, opts.key);
  else {
    const src = openTensorFile(input, opts.key);
    if (!isOriginalSd(src.tensors.keys())) {
      src.close();
      throw new DrError(`${input}: not a single-file Stable Diffusion checkpoint (no model.diffusion_model.* tensors); to convert its tensors as they are, give -o FILE.safetensors`);
    }
    await toDiffusers(SingleFileSd.fromSource(input, src, opts.config ?? SD15_CONFIG_DIR), out, input);
  }
  process.stdout.write(`${out}\n`);
}

/** Written through a temporary folder and a rename, so a failure leaves no half-made model. */
async function toDiffusers(sd: SingleFileSd, out: string, input: string): Promise<void> {
  const tmp = beginTemp(out);
  try {
    for (const f of ['model_index.json', 'tokenizer', 'scheduler', ...SD_COMPONENTS.map((c) => `${c}/config.json`)]) {
      const from = path.join(sd.configDir, f);
      if (fs.existsSync(from)) fs.cpSync(from, path.join(tmp, f), { recursive: true });
    }
    const parts = SD_COMPONENTS.map((c) => ({ c, ck: sd.component(c) }));
    const bar = progress(parts.map((p) => p.ck));
    try {
      for (const { c, ck } of parts) {
        fs.mkdirSync(path.join(tmp, c), { recursive: true });
        await writeAll(path.join(tmp, c, WEIGHTS_FILE[c]), ck, input, bar);
      }
    } finally {
      bar.stop();
    }
    commitTemp(tmp, out);
  } catch (e) {
    dropTemp(tmp);
    throw e;
  } finally {
    sd.close();
  }
  if (sd.ignored.length) {
    const ema = sd.ignored.some((k) => k.startsWith('model_ema.'));
    process.stderr.write(`left out ${sd.ignored.length} tensors diffusers does not use${ema ? ' (among them the EMA copy model_ema.*; the main weights were converted)' : ''}\n`);
  }
}

function progress(cks: Checkpoint[]): Progress {
  const total = cks.reduce((s, ck) => s + ck.keys().reduce((t, k) => t + ck.info(k).byteLength, 0), 0);
  return new Progress('converting', total, { bytes: true, minTotal: BAR_MIN_BYTES });
}

/** Tensor by tensor: read, write, drop, so memory holds one tensor at a time. */
async function writeAll(file: string, ck: Checkpoint, input: string, bar: Progress): Promise<void> {
  const tensors = ck.keys().map((k) => {
    const { name, dtype, shape } = ck.info(k);
    return { name, dtype, shape, read: () => ck.readBytes(k) };
  });
  await writeSafetensorsYielding(file, tensors, { format: 'pt', producer: 'dr convert', source: path.basename(input) }, (n) => bar.tick(n));
}
