import { Command } from 'commander';
import fs from 'node:fs';
import path from 'node:path';
import { checkOutputFolder, Inputs } from '../atomic.js';
import { DrError } from '../errors.js';
import { DEFAULT_CONTEXT_TOKENS, initDiffRestorer } from '../graph/diffrestorer/init.js';
import { modelDir, sdModel } from './models.js';
import { numberOption, runCommand, SEED_RANGE, seedOption } from './run.js';

interface InitCliOptions {
  sd?: string;
  clip?: string;
  output?: string;
  seed?: string;
  controlChannels?: string;
  contextTokens?: string;
  force?: boolean;
  json?: boolean;
}

export function initCommand(): Command {
  return new Command('init')
    .description('create a fresh Diff-Restorer checkpoint from SD 1.5 and CLIP, the way training starts')
    .option('--sd <dir|repo|file>', 'Stable Diffusion 1.5 folder or repo id (unet/, vae/, scheduler/ in diffusers layout), or a single-file checkpoint', 'stable-diffusion-v1-5/stable-diffusion-v1-5')
    .option('--clip <dir|repo>', 'CLIP folder or repo id (transformers CLIPModel layout)', 'openai/clip-vit-large-patch14')
    .option('-o, --output <dir>', 'the new checkpoint folder (must not exist, or be empty)')
    .option('--seed <n>', `seed of the new layers' initialisation, an integer in ${SEED_RANGE}`, '0')
    .option('--control-channels <list>', 'control encoder widths per level, comma-separated (design default 64,128,256,256)')
    .option('--context-tokens <n>', `tokens of the semantic prompt P_S, the UNet's cross-attention context, 1 to 77 (SD 1.5's text length); 1 is the paper's literal reading but leaves every cross-attention's query and key without gradient`, String(DEFAULT_CONTEXT_TOKENS))
    .option('-f, --force', 'replace an existing checkpoint there (a folder with model_index.json; any other non-empty folder is refused)')
    .option('--json', 'print {"output", "sd", "clip"}')
    .addHelpText('after', `
The checkpoint has model_index.json (recording --sd and --clip, see below), prompt_processor/,
control/ (the UNet's encoder and mid block copied, zero convolutions at zero) and decoder/ (the
SD VAE decoder plus degradation-aware blocks that start as the identity). A fresh checkpoint
therefore restores like plain SD 1.5 + the SD VAE; its new layers are what training learns.

model_index.json records each base model as given: a repo id as a repo id, an absolute path as
it is, and a relative path (given relative to the current folder) relative to the checkpoint
folder, e.g. "--sd models/sd15 -o models/dr-fresh" records "../sd15". Copy the checkpoint
together with relatively named base models, keeping their places, and it still finds them.

Example:
  dr init --sd ~/models/stable-diffusion-v1-5 --clip ~/models/clip-vit-large-patch14 -o dr-fresh
  dr restore photo.jpg --model dr-fresh -o restored.png`)
    .action((opts: InitCliOptions) => runCommand(() => init(opts)));
}

async function init(opts: InitCliOptions): Promise<void> {
  if (!opts.output) throw new DrError('-o/--output is required: the folder of the new checkpoint');
  const seed = seedOption(opts.seed!);
  let controlChannels: number[] | undefined;
  if (opts.controlChannels !== undefined) {
    controlChannels = opts.controlChannels.split(',').map((s) => Number(s.trim()));
    // Four stages: three stride-2 convolutions take the image to the latent's H/8; the group norms have 32 groups.
    if (controlChannels.length !== 4 || controlChannels.some((c) => !Number.isInteger(c) || c < 1 || c % 32)) {
      throw new DrError(`--control-channels: expected 4 multiples of 32 separated by commas, got "${opts.controlChannels}"`);
    }
  }
  const contextTokens = numberOption('--context-tokens', opts.contextTokens, (n) => Number.isInteger(n) && n >= 1 && n <= 77, 'a whole number from 1 to 77');
  const sd = sdModel(opts.sd, '--sd');
  const clip = modelDir(opts.clip, '--clip');
  const out = path.resolve(opts.output);
  // Before minutes of copying weights: not over its own base models, in a folder it may write.
  checkOutputFolder(opts.output, 'tree', new Inputs([sd, clip]));
  // The old checkpoint goes only when the new one is complete: a failed or interrupted run keeps it.
  const replace = !!opts.force && fs.existsSync(path.join(out, 'model_index.json'));
  await initDiffRestorer({
    sd, clip, sdSpec: specOf(opts.sd!, out), clipSpec: specOf(opts.clip!, out), out, replace, seed, controlChannels, contextTokens,
    onProgress: opts.json ? undefined : (part) => process.stderr.write(`writing ${part}\n`),
  });
  if (opts.json) process.stdout.write(`${JSON.stringify({ output: out, sd, clip }, null, 2)}\n`);
  else process.stdout.write(`${out}\n`);
}

/**
 * A base model as model_index.json records it: a repo id or an absolute path as given; a relative
 * path re-expressed relative to the checkpoint folder `out` (what readModelIndex resolves it against).
 */
function specOf(spec: string, out: string): string {
  if (!fs.existsSync(spec) || path.isAbsolute(spec)) return spec;
  const rel = path.relative(out, path.resolve(spec)).split(path.sep).join('/');
  return rel.startsWith('../') || rel === '..' ? rel : `./${rel}`;
}
