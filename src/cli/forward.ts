import fs from 'node:fs';
import path from 'node:path';
import { Command, Option } from 'commander';
import { checkOutputFile, Inputs } from '../atomic.js';
import { DrError } from '../errors.js';
import { Engine } from '../engine/engine.js';
import { ConfigFile } from '../graph/config.js';
import { SafetensorsFile, writeSafetensors } from '../weights/safetensors.js';
import { forwardClip, forwardControlNet, forwardScheduler, forwardUNet, forwardVae, Outputs, type ForwardRun } from './forward_models.js';
import { modelDir } from './models.js';
import { ADAPTER_HELP, precisionOption, runCommand } from './run.js';

interface ForwardOptions {
  model?: string;
  inputs?: string;
  output?: string;
  out?: string;
  precision?: string;
  force?: boolean;
  trace?: boolean;
  stats?: boolean;
}

/** Model kinds by the class name in their config (diffusers `_class_name`, transformers `model_type`). */
const RUNNERS: Record<string, (run: ForwardRun) => Promise<void>> = {
  clip: forwardClip,
  UNet2DConditionModel: forwardUNet,
  ControlNetModel: forwardControlNet,
  AutoencoderKL: forwardVae,
  UniPCMultistepScheduler: forwardScheduler,
};

export function forwardCommand(): Command {
  return new Command('forward')
    .description('run one model folder on named input tensors and write its named outputs (debugging and parity)')
    .requiredOption('-m, --model <dir>', 'a model folder: CLIP, or a diffusers unet/, vae/, controlnet/ or scheduler/ folder')
    .requiredOption('-i, --inputs <file>', 'safetensors file with the input tensors')
    .option('-o, --output <file>', 'safetensors file to write the outputs to (--out FILE works too)')
    .addOption(new Option('--out <file>', 'the same as --output').hideHelp())
    .option('--adapter <name|index>', ADAPTER_HELP)
    .option('--precision <p>', 'auto | f32 | f16', 'f32')
    .option('--trace', 'also write every module output as intermediate.<model>.<module path>')
    .option('--stats', 'print seconds per stage and peak GPU memory on stderr')
    .option('-f, --force', 'overwrite the output file if it exists')
    .addHelpText('after', `
Tensor names (those of the fixtures in shared/fixtures):
  CLIPModel    in: pixel_values [B,3,S,S], input_ids [P,L]
               out: vision_last_hidden_state, vision_pooler_output, image_embeds(_normalized),
                    vision_hidden_states.i, text_* likewise, logits_per_image, logits_per_text
  UNet         in: sample, timestep, encoder_hidden_states (+ caseN.* cases; optional
                   down_block_additional_residuals.i, mid_block_additional_residual)   out: output
  ControlNet   in: sample, timestep, encoder_hidden_states, controlnet_cond, [scaleK.]conditioning_scale
               out: [scaleK.]down_block_res_samples.i, [scaleK.]mid_block_res_sample
  VAE          in: image [B,3,H,W] in [-1,1], sample_noise, decode_input_latent_scaled
               out: moments, posterior_mean/logvar/std, latent_mode_scaled, latent_sample_scaled,
                    decoded, decoded_uint8_hwc
  UniPC        in: initial_latent, model_output.i (the folder holds scheduler_config.json;
                   num_inference_steps from the input file's metadata or --steps)
               out: timesteps, sigmas, latent.i

Example:
  dr forward --model sd/unet --inputs unet_io.safetensors -o mine.safetensors --trace --stats`)
    .action((opts: ForwardOptions) => runCommand(() => forward(opts)));
}

async function forward(opts: ForwardOptions): Promise<void> {
  const dir = modelDir(opts.model, '--model');
  if (opts.output !== undefined && opts.out !== undefined && opts.output !== opts.out) throw new DrError('--out is another name for -o/--output: give one');
  const target = opts.output ?? opts.out;
  if (target === undefined) throw new DrError('-o/--output: give the safetensors file to write the outputs to');
  const out = path.resolve(target);
  checkOutputFile(target, new Inputs([opts.inputs!, dir]), !!opts.force);
  const kind = modelKind(dir);
  const inputs = SafetensorsFile.open(opts.inputs!);
  try {
    const e = await Engine.create();
    const run: ForwardRun = { e, dir, inputs, precision: precisionOption(opts.precision), out: new Outputs(), trace: !!opts.trace, timings: {} };
    await RUNNERS[kind](run);
    writeSafetensors(out, await run.out.collect(e), { model: dir, producer: 'dr forward' });
    if (opts.stats) {
      const s = e.pool.stats;
      const mib = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;
      for (const [label, sec] of Object.entries(run.timings)) process.stderr.write(`${label.padEnd(12)} ${sec.toFixed(3)} s\n`);
      process.stderr.write(`peak GPU     ${mib(s.peakBytes)} (weights ${mib(s.weightBytes)})\n`);
    }
  } finally {
    inputs.close();
  }
}

function modelKind(dir: string): string {
  if (fs.existsSync(path.join(dir, 'scheduler_config.json'))) {
    const c = ConfigFile.inDir(dir, 'scheduler_config.json');
    return known(c.str('_class_name', 'unknown'), c.file);
  }
  const c = ConfigFile.inDir(dir);
  return known(c.str('model_type', '') || c.str('_class_name', 'unknown'), c.file);
}

function known(kind: string, file: string): string {
  if (kind in RUNNERS) return kind;
  throw new DrError(`${file}: model "${kind}" is not supported by dr forward (supported: CLIPModel, ${Object.keys(RUNNERS).slice(1).join(', ')})`);
}
