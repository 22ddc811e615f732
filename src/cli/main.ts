#!/usr/bin/env node
import { Command } from 'commander';
import { convertCommand } from './convert.js';
import { degradeCommand } from './degrade.js';
import { doctorCommand } from './doctor.js';
import { evalCommand } from './eval.js';
import { fetchCommand } from './fetch.js';
import { forwardCommand } from './forward.js';
import { initCommand } from './init.js';
import { inspectCommand } from './inspect.js';
import { plotCommand } from './plot.js';
import { probeCommand } from './probe.js';
import { restoreCommand } from './restore.js';
import { trainCommand } from './train.js';

const program = new Command('dr')
  .description('Diff-Restorer image restoration toolkit on WebGPU: no Python, no CUDA')
  .version('0.1.0')
  .addCommand(restoreCommand())
  .addCommand(initCommand())
  .addCommand(probeCommand())
  .addCommand(forwardCommand())
  .addCommand(doctorCommand())
  .addCommand(inspectCommand())
  .addCommand(convertCommand())
  .addCommand(degradeCommand())
  .addCommand(evalCommand())
  .addCommand(fetchCommand())
  .addCommand(trainCommand())
  .addCommand(plotCommand())
  .addHelpText('after', `
Start with \`dr doctor\` to see which GPU dr will use, then e.g.
  dr fetch stable-diffusion-v1-5/stable-diffusion-v1-5     (once, with internet; see dr restore --help)
  dr restore photo.jpg -o restored.png
  dr probe photo.jpg --model openai/clip-vit-large-patch14`);

// --adapter of any command reaches the device module the way the environment variable does.
program.hook('preAction', (_, action) => {
  const adapter: unknown = action.opts().adapter;
  if (typeof adapter === 'string') process.env.DR_ADAPTER = adapter;
});

program.parseAsync(process.argv);
