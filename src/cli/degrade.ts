import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import sharp from 'sharp';
import { DrError } from '../errors.js';
import { degradationHelp, degrade, parseSpec } from '../degrade/degrade.js';
import { listImageTree, loadRgb } from '../image/load.js';
import { checkOutputFile, checkOutputFolder, ensureDir, Inputs, writeAtomic } from '../atomic.js';
import { Batch } from './batch.js';
import { Progress } from './progress.js';
import { inShard, parseShard, SHARD_HELP, shardNote } from './shard.js';
import { runCommand, SEED_RANGE, seedOption } from './run.js';

interface DegradeOptions {
  output?: string;
  type?: string;
  seed?: string;
  force?: boolean;
  skipExisting?: boolean;
  shard?: string;
  recursive?: boolean;
}

export function degradeCommand(): Command {
  return new Command('degrade')
    .description("synthesise degraded test images (the paper's degradation types), seeded and reproducible")
    .argument('<images...>', 'image files or folders of images')
    .option('-o, --output <dir>', 'output folder (created if missing)')
    .option('-t, --type <list>', 'comma-separated steps applied left to right, e.g. noise:50,jpeg:10 or blur:2,noise:15,jpeg:30')
    .option('--seed <n>', `random seed (an integer in ${SEED_RANGE})`, '0')
    .option('-f, --force', 'overwrite existing outputs')
    .option('--skip-existing', 'skip inputs whose image and recipe both exist (resume an interrupted run)')
    .option('--shard <i/n>', SHARD_HELP)
    .option('--recursive', 'also degrade the images in subfolders of folder inputs (into the same subfolders of the output)')
    .addHelpText('after', `
Types (parameters after colons, in this order; all optional):
${degradationHelp()}

Each input IMG.ext becomes OUT/IMG.png with a sidecar OUT/IMG.json holding the recipe: the
steps with every parameter resolved (random ones included), the seed and the source.
Step k of an image draws from the stream (seed, "IMG.ext#k"): same seed, name and recipe,
same pixels, whatever other images are in the run.

Examples:
  dr degrade ../shared/images -o sets/noise50 --type noise:50 --seed 1
  dr degrade photo.png -o out --type blur:2,noise:15,jpeg:30`)
    .action((images: string[], opts: DegradeOptions) => runCommand(() => run(images, opts)));
}

async function run(inputs: string[], opts: DegradeOptions): Promise<number> {
  if (!opts.output) throw new DrError('-o/--output: an output folder is required');
  if (!opts.type) throw new DrError('--type: give the degradations, e.g. --type noise:50,jpeg:10 (see dr degrade --help)');
  const steps = parseSpec(opts.type);
  const seed = seedOption(opts.seed ?? '0');
  if (opts.force && opts.skipExisting) throw new DrError('--force and --skip-existing contradict each other; choose one');
  const shard = parseShard(opts.shard);
  const listed = listImageTree(inputs, !!opts.recursive);
  const mine = listed.filter((f) => inShard(f.file, shard));
  const files = mine.map((f) => f.file);
  shardNote(shard, files.length, listed.length);
  const outDir = opts.output;

  // Plan every output first: a name clash, an input in the way or an existing file stops the run before any work.
  const inputFiles = new Inputs(files);
  checkOutputFolder(outDir, 'folder', inputFiles);
  const seen = new Map<string, string>();
  const plan = mine.map(({ file, rel }) => {
    // A --recursive input's subfolders are kept: OUT/SUB/IMG.png.
    const stem = path.join(path.dirname(rel), path.parse(rel).name);
    const prev = seen.get(stem);
    if (prev) throw new DrError(`${file}: same output name as ${prev} (${stem}.png); degrade them into different folders`);
    seen.set(stem, file);
    const image = path.join(outDir, `${stem}.png`);
    const recipe = path.join(outDir, `${stem}.json`);
    const skip = !!opts.skipExisting && fs.existsSync(image) && fs.existsSync(recipe);
    if (!skip) {
      ensureDir(path.dirname(image));
      checkOutputFile(image, inputFiles, !!opts.force);
      checkOutputFile(recipe, inputFiles, !!opts.force);
    }
    return { file, image, recipe, skip };
  });
  const todo = plan.filter((p) => !p.skip);
  if (todo.length < plan.length) process.stderr.write(`skipping ${plan.length - todo.length} images whose output exists\n`);

  const bar = new Progress('degrading', todo.length, { unit: 'images', minTotal: 4 });
  const batch = new Batch('written');
  for (const p of todo) {
    if (await batch.item(p.file, () => degradeOne(p, steps, seed, opts.type!))) batch.done++;
    bar.tick();
  }
  bar.stop();
  if (batch.done && !batch.errors.length) process.stderr.write(`dr: wrote ${batch.done} image${batch.done === 1 ? '' : 's'} and recipes to ${outDir}\n`);
  return batch.finish(todo.length);
}

/** One input: its degraded PNG and its recipe, each written atomically. */
async function degradeOne(p: { file: string; image: string; recipe: string }, steps: ReturnType<typeof parseSpec>, seed: number, spec: string): Promise<true> {
  const src = await loadRgb(p.file);
  const { image, steps: resolved } = await degrade(src, steps, seed, path.basename(p.file));
  const png = await sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.length), {
    raw: { width: image.width, height: image.height, channels: 3 },
  }).png().toBuffer();
  const recipe = {
    source: path.resolve(p.file),
    output: path.basename(p.image),
    spec,
    seed,
    stream: `${path.basename(p.file)}#k for step k`,
    steps: resolved,
    size_wh: [image.width, image.height],
    tool: 'dr degrade 0.1.0',
  };
  writeAtomic(p.image, png);
  writeAtomic(p.recipe, `${JSON.stringify(recipe, null, 2)}\n`);
  return true;
}
