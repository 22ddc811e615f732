import { Command } from 'commander';
import { fetchModel, hubCacheDir, REDUNDANT_GLOBS } from '../weights/hub.js';
import { Progress } from './progress.js';
import { runCommand } from './run.js';

interface FetchCliOptions {
  revision: string;
  include?: string[];
  all?: boolean;
  endpoint?: string;
  json?: boolean;
}

export function fetchCommand(): Command {
  return new Command('fetch')
    .description('download a model from the Hugging Face Hub into the Hugging Face cache (resumable, hash-checked)')
    .argument('<repo>', 'Hugging Face repo id ORG/NAME, e.g. openai/clip-vit-large-patch14')
    .option('-r, --revision <rev>', 'branch, tag or commit', 'main')
    .option('-i, --include <globs...>', 'only files matching these globs (* also matches /; "unet/" is everything below unet/)')
    .option('--all', 'also fetch weight formats that duplicate the safetensors (skipped by default)')
    .option('--endpoint <url>', 'Hub URL (default $HF_ENDPOINT, else https://huggingface.co)')
    .option('--json', 'print {"repo", "revision", "commit", "path", "files"}')
    .addHelpText('after', `
Files go where huggingface_hub puts them, so dr and Python tools share them:
  ${hubCacheDir()}/models--ORG--NAME/snapshots/COMMIT/
(the cache is $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub). Prints that
folder; every --model/--sd/--clip option then takes the repo id itself.

When the repo has .safetensors files, files in other weight formats are skipped:
  ${REDUNDANT_GLOBS.join(' ')}
(dr reads safetensors only); --all fetches them too. Interrupted downloads resume where they
stopped; LFS files are checked against their sha256; files already in the cache are not fetched
again. HF_TOKEN (or the token \`huggingface-cli login\` saved) is sent for gated and private models.

Examples:
  dr fetch openai/clip-vit-large-patch14
  dr fetch stable-diffusion-v1-5/stable-diffusion-v1-5 --include "*.json" "*.txt" "unet/*.safetensors"`)
    .action((repo: string, opts: FetchCliOptions) =>
      runCommand(async () => {
        const r = await fetchModel(repo, {
          revision: opts.revision,
          include: opts.include,
          all: opts.all,
          endpoint: opts.endpoint,
          progress: (total) => new Progress(`fetching ${repo}`, total, { bytes: true, minTotal: 2 ** 20 }),
        });
        if (opts.json) {
          const { repo: id, revision, commit, path, files } = r;
          process.stdout.write(`${JSON.stringify({ repo: id, revision, commit, path, files }, null, 2)}\n`);
          return;
        }
        if (r.skipped.length) process.stderr.write(`skipped ${r.skipped.length} files in weight formats dr does not read (${r.skipped.join(', ')}); --all fetches them\n`);
        process.stdout.write(`${r.path}\n`);
      }));
}
