import { Command } from 'commander';
import { getGpu } from '../engine/device.js';
import { adapterTraits, chooseKernels } from '../engine/kernels.js';
import { runCommand } from './run.js';

export function doctorCommand(): Command {
  return new Command('doctor')
    .description('show the WebGPU adapter dr will use: name, backend, software or hardware, features, limits')
    .option('--json', 'print the report as JSON')
    .addHelpText('after', `
Exits non-zero and prints the fix when no adapter is found. Environment:
  DR_BACKEND=vulkan|d3d12|metal|opengl   force a Dawn backend
  DR_ROBUST=1                            keep Dawn's bounds checks (slower; for debugging kernels)
  DR_KERNELS=cpu|gpu                     force the CPU-adapter (texture) or GPU (tiled) kernels`)
    .action((opts: { json?: boolean }) =>
      runCommand(async () => {
        const gpu = await getGpu();
        const { info } = gpu;
        const kernels = chooseKernels(adapterTraits(gpu));
        if (opts.json) {
          process.stdout.write(`${JSON.stringify({ ...info, kernels }, null, 2)}\n`);
          return;
        }
        const mib = (n: number): string => `${(n / 2 ** 20).toFixed(0)} MiB`;
        const lines = [
          `adapter       ${info.adapter}`,
          `description   ${info.description || '-'}`,
          `vendor        ${info.vendor || '-'} (${info.architecture || '-'})`,
          `backend       ${info.backend}`,
          `kind          ${info.software ? 'software (CPU) — correct but slow; use a GPU for real images' : 'hardware'}`,
          `shader-f16    ${info.features.includes('shader-f16') ? 'yes (f16 weights stay f16)' : 'no (weights computed in f32)'}`,
          `features      ${info.features.join(', ')}`,
          `kernels       ${kernels.path} (${kernels.reason})`,
          `max binding   ${mib(info.limits.maxStorageBufferBindingSize)}`,
          `max buffer    ${mib(info.limits.maxBufferSize)}`,
          `workgroup mem ${info.limits.maxComputeWorkgroupStorageSize} bytes`,
        ];
        process.stdout.write(`${lines.join('\n')}\n`);
      }));
}
