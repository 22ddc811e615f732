import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import sharp from 'sharp';
import { checkOutputFile, Inputs, writeAtomic } from '../atomic.js';
import { DrError } from '../errors.js';
import { DEFAULT_WIDTH, defaultHeight, lossChartSvg, minSize } from '../plot/chart.js';
import { readTrainingLog, summarise } from '../plot/log.js';
import { numberOption, runCommand } from './run.js';

interface PlotOptions {
  output?: string;
  log?: boolean;
  smooth?: string;
  size?: string;
  force?: boolean;
  json?: boolean;
}

export function plotCommand(): Command {
  return new Command('plot')
    .description("draw a training run's loss curves (OUT_DIR/log.jsonl of dr train) as a PNG or SVG image")
    .argument('<run>', 'the training output folder (or its log.jsonl)')
    .option('-o, --output <file.png|file.svg>', 'the image to write; .png or .svg (default RUN/loss.png)')
    .option('--log', 'logarithmic y axes (values ≤ 0 are left out and counted)')
    .option('--smooth <a>', 'exponential moving average factor in [0, 1), drawn over the faint raw curve; 0 draws the raw curve only', '0')
    .option('--size <WxH>', `image size in pixels (default ${DEFAULT_WIDTH} wide, 300 px high per row of panels)`)
    .option('-f, --force', 'overwrite an existing -o file (the default RUN/loss.png is always replaced: it is a view of the log)')
    .option('--json', 'also print a summary: steps, and the first, last and smallest value of each loss term')
    .addHelpText('after', `
One panel per loss term (stage 1: loss, loss_diff, loss_deg, loss_rec; stage 2: loss,
loss_mse, loss_per, loss_adv, loss_disc; any other loss_* too), each with its own y axis.
The log may be read while dr train writes it: an unfinished last line is ignored; a
malformed line elsewhere is skipped and counted in a warning; a step logged twice (a run
resumed from an earlier checkpoint) is drawn with its later value.

Examples:
  dr plot runs/stage1                           (writes runs/stage1/loss.png)
  dr plot runs/stage1 --smooth 0.9 --log -o stage1.svg`)
    .action((run: string, opts: PlotOptions) => runCommand(() => plot(run, opts)));
}

async function plot(run: string, opts: PlotOptions): Promise<void> {
  const smooth = numberOption('--smooth', opts.smooth ?? '0', (n) => n >= 0 && n < 1, 'a number in [0, 1), e.g. 0.9')!;
  if (!fs.existsSync(run)) throw new DrError(`${run}: no such folder or file`);
  const logFile = isFolder(run) ? path.join(run, 'log.jsonl') : run;
  const output = opts.output ?? path.join(path.dirname(logFile), 'loss.png');
  const format = path.extname(output).toLowerCase();
  if (format !== '.png' && format !== '.svg') throw new DrError(`${output}: the image must be named .png or .svg`);
  const log = readTrainingLog(logFile);
  const size = opts.size === undefined ? undefined : parseSize(opts.size, minSize(log.terms.size));
  // The default output is replaced each time (the run's plot, remade as the log grows); a named one needs --force.
  checkOutputFile(output, new Inputs([logFile]), opts.output === undefined ? undefined : !!opts.force);
  if (log.malformed.count) {
    process.stderr.write(`dr: warning: ${logFile}: skipped ${log.malformed.count} malformed line${log.malformed.count === 1 ? '' : 's'} (the first at line ${log.malformed.firstLine})\n`);
  }
  const svg = lossChartSvg(log, {
    title: path.basename(path.resolve(path.dirname(logFile))),
    log: !!opts.log,
    smooth,
    width: size?.[0] ?? DEFAULT_WIDTH,
    height: size?.[1] ?? defaultHeight(log.terms.size),
  });
  writeAtomic(output, format === '.svg' ? svg : await sharp(Buffer.from(svg)).png().toBuffer());
  if (opts.json) {
    const summary = {
      log: path.resolve(logFile),
      output: path.resolve(output),
      steps: log.steps.length,
      first_step: log.steps[0],
      last_step: log.steps[log.steps.length - 1],
      malformed_lines: log.malformed.count,
      terms: summarise(log),
    };
    process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  } else process.stdout.write(`${output}\n`);
}

function isFolder(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** WxH, at least `min` (below it the labels no longer fit the panels of this log). */
function parseSize(s: string, min: [number, number]): [number, number] {
  const m = /^(\d+)x(\d+)$/.exec(s);
  const [w, h] = m ? [Number(m[1]), Number(m[2])] : [NaN, NaN];
  if (!(w >= min[0] && h >= min[1] && w <= 10000 && h <= 10000)) {
    throw new DrError(`--size: expected WIDTHxHEIGHT in pixels, from ${min[0]}x${min[1]} (for this log's panels) to 10000x10000, got "${s}"`);
  }
  return [w, h];
}
