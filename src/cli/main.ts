#!/usr/bin/env node
import { Command } from 'commander';
import { convertCommand } from './convert.js';
import { degradeCommand } from './degrade.js';
import { doctorCommand } from './doctor.js';
import { forwardCommand } from './forward.js';
import { inspectCommand } from './inspect.js';
import { probeCommand } from './probe.js';

const program = new Command('dr')
  .description('Diff-Restorer image restoration toolkit on WebGPU: no Python, no CUDA')
  .version('0.1.0')
  .addCommand(probeCommand())
  .addCommand(forwardCommand())
  .addCommand(doctorCommand())
  .addCommand(inspectCommand())
  .addCommand(convertCommand())
  .addCommand(degradeCommand())
  .addHelpText('after', `
Start with \`dr doctor\` to see which GPU dr will use, then e.g.
  dr probe photo.jpg --model path/to/clip-vit-large-patch14`);

program.parseAsync(process.argv);
