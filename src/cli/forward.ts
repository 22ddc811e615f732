import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { DrError } from '../errors.js';
import { Engine } from '../engine/engine.js';
import type { Tensor } from '../engine/tensor.js';
import { l2Normalize } from '../engine/ops/norms.js';
import { ConfigFile } from '../graph/config.js';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../weights/safetensors.js';
import { loadClip, modelDir } from './models.js';
import { precisionOption, runCommand } from './run.js';

interface ForwardOptions {
  model?: string;
  inputs?: string;
  out?: string;
  precision?: string;
  force?: boolean;
}

export function forwardCommand(): Command {
  return new Command('forward')
    .description('run one model folder on named input tensors and write its named outputs (debugging and parity)')
    .requiredOption('-m, --model <dir>', 'Hugging Face model folder (config.json + *.safetensors)')
    .requiredOption('-i, --inputs <file>', 'safetensors file with the input tensors')
    .requiredOption('-o, --out <file>', 'safetensors file to write the outputs to')
    .option('--precision <p>', 'auto | f32 | f16', 'f32')
    .option('-f, --force', 'overwrite --out if it exists')
    .addHelpText('after', `
CLIPModel folders: inputs pixel_values [B,3,S,S] (normalised) and/or input_ids [P,L] (int);
outputs vision_last_hidden_state, vision_pooler_output, image_embeds(_normalized),
vision_hidden_states.i, text_last_hidden_state, text_pooler_output, text_embeds(_normalized),
text_hidden_states.i, and with both inputs logits_per_image, logits_per_text, logit_scale —
the names of transformers' CLIPModel outputs, as in the clip-tiny fixture.`)
    .action((opts: ForwardOptions) => runCommand(() => forward(opts)));
}

async function forward(opts: ForwardOptions): Promise<void> {
  const dir = modelDir(opts.model, '--model');
  const out = path.resolve(opts.out!);
  if (fs.existsSync(out) && !opts.force) throw new DrError(`${opts.out}: already exists (use --force to overwrite)`);
  const config = ConfigFile.inDir(dir);
  const type = config.str('model_type', '') || config.str('_class_name', 'unknown');
  if (type !== 'clip') {
    throw new DrError(`${config.file}: model "${type}" is not supported by dr forward yet (supported: CLIPModel folders)`);
  }
  const inputs = SafetensorsFile.open(opts.inputs!);
  try {
    const e = await Engine.create();
    const model = loadClip(e, dir, precisionOption(opts.precision));
    const outputs: { name: string; t: Tensor }[] = [];
    const add = (name: string, t: Tensor): void => void outputs.push({ name, t });
    let image: Tensor | undefined;
    let text: Tensor | undefined;

    if (inputs.tensors.has('pixel_values')) {
      const info = inputs.info('pixel_values');
      const v = model.encodeImage(e, e.upload(inputs.readF32('pixel_values'), info.shape), true);
      v.hiddenStates.forEach((h, i) => add(`vision_hidden_states.${i}`, h));
      add('vision_last_hidden_state', v.lastHiddenState);
      add('vision_pooler_output', v.pooled);
      add('image_embeds', (image = v.embeds));
      add('image_embeds_normalized', l2Normalize(e, image));
    }
    if (inputs.tensors.has('input_ids')) {
      const info = inputs.info('input_ids');
      if (info.shape.length !== 2) throw new DrError(`${opts.inputs}: input_ids must be [P, L], got [${info.shape}]`);
      const t = model.encodeText(e, inputs.readInt32('input_ids'), info.shape[1], true);
      t.hiddenStates.forEach((h, i) => add(`text_hidden_states.${i}`, h));
      add('text_last_hidden_state', t.lastHiddenState);
      add('text_pooler_output', t.pooled);
      add('text_embeds', (text = t.embeds));
      add('text_embeds_normalized', l2Normalize(e, text));
    }
    if (!image && !text) throw new DrError(`${opts.inputs}: no pixel_values or input_ids tensor`);
    if (image && text) {
      add('logits_per_image', model.logits(e, model.cosine(e, image, text)));
      add('logits_per_text', model.logits(e, model.cosine(e, text, image)));
    }
    const tensors: TensorToWrite[] = [];
    for (const { name, t } of outputs) tensors.push({ name, dtype: 'F32', shape: [...t.shape], data: await e.read(t) });
    if (image && text) tensors.push({ name: 'logit_scale', dtype: 'F32', shape: [1], data: model.logit_scale.hostValue });
    writeSafetensors(out, tensors, { model: dir, producer: 'dr forward' });
  } finally {
    inputs.close();
  }
}
