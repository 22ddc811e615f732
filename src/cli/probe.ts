import fs from 'node:fs';
import { Command } from 'commander';
import { DrError } from '../errors.js';
import { Engine } from '../engine/engine.js';
import { DEGRADATION_TEXTS, DegradationProbe, type ProbeScore } from '../graph/clip/probe.js';
import { loadClipPixelValues, readClipImageConfig } from '../graph/clip/preprocess.js';
import { ClipTokenizer } from '../graph/clip/tokenizer.js';
import { listImages } from '../image/load.js';
import { loadClip, modelDir } from './models.js';
import { Batch } from './batch.js';
import { Progress } from './progress.js';
import { ADAPTER_HELP, numberOption, precisionOption, runCommand, warnIfCut } from './run.js';

interface ProbeOptions {
  model?: string;
  texts?: string;
  text: string[];
  textsFile?: string;
  recursive?: boolean;
  scale?: string;
  json?: boolean;
  batch?: string;
  precision?: string;
}

export function probeCommand(): Command {
  return new Command('probe')
    .description("score how strongly each image matches each degradation text (the paper's Eq. 1)")
    .argument('<images...>', 'image files or folders of images (.png .jpg .jpeg .webp .tif .tiff .gif)')
    .option('-m, --model <dir>', 'CLIP model folder, e.g. a download of openai/clip-vit-large-patch14')
    .option('-t, --texts <list>', 'comma-separated texts to compare against (default: the paper\'s 8 degradations)')
    .option('--text <text>', 'one text, commas allowed ("a hazy, foggy photo"); repeat for more', (v: string, prev: string[]) => [...prev, v], [])
    .option('--recursive', 'also probe the images in subfolders of folder inputs')
    .option('--texts-file <file>', 'texts to compare against, one per line (blank lines skipped)')
    .option('-s, --scale <S>', "softmax temperature S (default: the model's learned logit scale, as CLIP-IQA; 1 = Eq. 1 literally)")
    .option('-b, --batch <n>', 'images per GPU batch', '8')
    .option('--adapter <name|index>', ADAPTER_HELP)
    .option('--precision <p>', 'auto | f32 | f16 (auto keeps f16 weights in f16 where the GPU supports it)', 'auto')
    .option('--json', 'print {"model", "texts", "scale", "results": [{"image", "scores": [{"text", "cosine", "probability"}]}]}')
    .addHelpText('after', `
Eq. 1: s_i = exp(S·cos_i) / Σ_j exp(S·cos_j), cos_i = cosine(CLIP image embedding, CLIP text i embedding).

Examples:
  dr probe photo.jpg --model ~/models/clip-vit-large-patch14
  dr probe photos/ --model clip --texts "a blurry photo,a sharp photo" --scale 1 --json
  dr probe photo.jpg --model clip --text "a hazy, foggy photo" --text "a clear photo"
  dr probe photos/ --model clip --texts-file prompts.txt

--texts, --text and --texts-file may be combined: their texts are compared in that order.`)
    .action((images: string[], opts: ProbeOptions) => runCommand(() => probe(images, opts)));
}

async function probe(inputs: string[], opts: ProbeOptions): Promise<number> {
  const dir = modelDir(opts.model, '--model');
  const texts = probeTexts(opts);
  const scaleOpt = numberOption('--scale', opts.scale, (n) => n > 0, 'a positive number');
  const batch = numberOption('--batch', opts.batch, (n) => Number.isInteger(n) && n >= 1, 'a positive integer')!;
  const precision = precisionOption(opts.precision);
  const files = listImages(inputs, !!opts.recursive);
  const imageConfig = readClipImageConfig(dir);
  const tokenizer = ClipTokenizer.fromDir(dir);
  for (const t of texts) warnIfCut('text', t, tokenizer.tokenCount(t), tokenizer.contextLength);

  const e = await Engine.create();
  const model = loadClip(e, dir, precision);
  const S = scaleOpt ?? model.logitScale;
  const prober = new DegradationProbe(e, model, tokenizer, texts);
  const results: { image: string; scores: ProbeScore[] }[] = [];
  const failed = new Batch('scored', opts.json);
  const bar = new Progress('probing', files.length, { unit: 'images', minTotal: 16 });
  const size = model.imageSize;

  for (let start = 0; start < files.length; start += batch) {
    const chunk = files.slice(start, start + batch);
    const loaded: { image: string; pixels: Float32Array }[] = [];
    for (const image of chunk) {
      const pixels = await failed.item(image, () => loadClipPixelValues(image, imageConfig));
      if (pixels) loaded.push({ image, pixels });
    }
    if (loaded.length) {
      const pixels = new Float32Array(loaded.length * 3 * size * size);
      loaded.forEach((l, i) => pixels.set(l.pixels, i * l.pixels.length));
      const scores = await e.tidy(() => prober.score(e.upload(pixels, [loaded.length, 3, size, size]), S));
      loaded.forEach((l, i) => results.push({ image: l.image, scores: scores[i] }));
      failed.done += loaded.length;
    }
    bar.tick(chunk.length);
  }
  bar.stop();

  if (opts.json) {
    const errors = failed.errors.map((x) => ({ image: x.input, error: x.error }));
    process.stdout.write(`${JSON.stringify({ model: dir, texts, scale: S, results, errors }, null, 2)}\n`);
  } else {
    for (const r of results) process.stdout.write(formatTable(r.image, r.scores));
  }
  return failed.finish(files.length);
}

/** --texts (comma-separated), each --text, then --texts-file's lines; the paper's 8 when none is given. */
function probeTexts(opts: ProbeOptions): string[] {
  if (opts.texts === undefined && opts.text.length === 0 && opts.textsFile === undefined) return DEGRADATION_TEXTS;
  const texts = [
    ...(opts.texts ?? '').split(','),
    ...opts.text,
    ...(opts.textsFile === undefined ? [] : readTextsFile(opts.textsFile)),
  ].map((t) => t.trim()).filter(Boolean);
  if (texts.length === 0) throw new DrError('--texts/--text/--texts-file: no texts given (e.g. --texts "a blurry photo,a hazy photo")');
  return texts;
}

function readTextsFile(file: string): string[] {
  let content: string;
  try {
    content = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new DrError(`${file}: cannot read the texts file (${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : code})`);
  }
  const texts = content.split(/\r?\n/).map((t) => t.trim()).filter(Boolean);
  if (texts.length === 0) throw new DrError(`${file}: no texts (one per line)`);
  return texts;
}

function formatTable(image: string, scores: ProbeScore[]): string {
  const sorted = [...scores].sort((a, b) => b.probability - a.probability);
  const width = Math.max(4, ...sorted.map((s) => s.text.length));
  const rows = sorted.map((s) => {
    const bar = '█'.repeat(Math.round(s.probability * 20));
    return `  ${s.text.padEnd(width)}  ${s.cosine.toFixed(4).padStart(7)}  ${(s.probability * 100).toFixed(1).padStart(5)}%  ${bar}`;
  });
  return `${image}\n  ${'text'.padEnd(width)}  ${'cosine'.padStart(7)}  ${'prob'.padStart(6)}\n${rows.join('\n')}\n\n`;
}
