import { Command } from 'commander';
import { describeAdapters, getGpu, NO_ADAPTER_HELP } from '../engine/device.js';
import { adapterTraits, chooseKernels } from '../engine/kernels.js';
import { ADAPTER_HELP, runCommand } from './run.js';

export function doctorCommand(): Command {
  return new Command('doctor')
    .description('show the WebGPU adapter dr will use: name, backend, software or hardware, features, limits')
    .option('--list', 'list every adapter Dawn offers (index, backend, name, kind, shader-f16), for --adapter')
    .option('--adapter <name|index>', ADAPTER_HELP)
    .option('--json', 'print the report as JSON')
    .addHelpText('after', `
Exits non-zero and prints the fix when no adapter is found. Environment:
  DR_BACKEND=vulkan|d3d12|metal|opengl   force a Dawn backend
  DR_ROBUST=1                            keep Dawn's bounds checks (slower; for debugging kernels)
  DR_ADAPTER=NAME|INDEX                  the adapter every command uses, as --adapter
  DR_KERNELS=cpu|gpu                     force the CPU-adapter (texture) or GPU (tiled) kernels
  DR_SUBGROUP_MATRIX=0                   no subgroup matrices (tensor cores) for f16 matmuls, and no
                                         allow_unsafe_apis toggle (Dawn lists the feature only under it)`)
    .action((opts: { json?: boolean; list?: boolean }) =>
      runCommand(async () => {
        if (opts.list) return listAdapters(!!opts.json);
        const gpu = await getGpu();
        const { info } = gpu;
        const kernels = chooseKernels(adapterTraits(gpu), process.env.DR_KERNELS);
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
          `matrix units  ${kernels.path === 'gpu' ? kernels.matrix.reason : 'not used on the cpu path'}` +
            (info.subgroupMatrixError ? ` (a device with them failed: ${info.subgroupMatrixError})` : ''),
          `max binding   ${mib(info.limits.maxStorageBufferBindingSize)}`,
          `max buffer    ${mib(info.limits.maxBufferSize)}`,
          `workgroup mem ${info.limits.maxComputeWorkgroupStorageSize} bytes`,
        ];
        process.stdout.write(`${lines.join('\n')}\n`);
      }));
}

async function listAdapters(json: boolean): Promise<number> {
  const all = await describeAdapters();
  if (json) {
    process.stdout.write(`${JSON.stringify(all, null, 2)}\n`);
  } else {
    const w = Math.max(4, ...all.map((a) => a.name.length));
    const rows = all.map((a) => `${String(a.index).padStart(5)}  ${a.backend.padEnd(7)}  ${a.name.padEnd(w)}  ${a.software ? 'software' : 'hardware'}  ${a.features.includes('shader-f16') ? 'yes' : 'no'}`);
    process.stdout.write(`${['index  backend  ' + 'name'.padEnd(w) + '  kind      shader-f16', ...rows].join('\n')}\n`);
  }
  if (all.length === 0) process.stderr.write(`dr: ${NO_ADAPTER_HELP}\n`);
  return all.length ? 0 : 1;
}
