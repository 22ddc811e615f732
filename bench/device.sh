#!/usr/bin/env bash
# One device-machine session (a real GPU): unpack what bench/device_pack.sh packed, print the card
# (nvidia-smi) and the adapter as dr sees it (dr doctor's report), run the parity tests on the
# hardware path, then the benchmarks, each part under its own timeout so the whole stays within
# about 8 minutes; everything goes to $OUT/device.log, benchmark results to $OUT/*.json.
#   here:   bash bench/device_pack.sh
#   device: run with carry [".device"], command "bash bench/device.sh", timeout_s 590
#   bash bench/device.sh --quick   a minute's subset (the pack, the doctor report, one test file,
#                                  one quick benchmark): how the script is checked without a GPU
# A part that fails or times out is logged and the next one runs; the exit status is the number
# of parts that failed.
set -uo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1
OUT=${OUT:-$PWD/.device/out}
mkdir -p "$OUT"
LOG=$OUT/device.log
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1
failed=0
started=$(date +%s)
say() { printf '\n== [%4ds] %s\n' $(($(date +%s) - started)) "$*"; }
# part SECONDS NAME COMMAND...: runs a part under its own timeout and logs how it ended.
part() {
  local limit=$1 name=$2
  shift 2
  say "$name (limit ${limit}s)"
  timeout -k 10 "$limit" bash -c '"$@"' _ "$@" # the command may be one of the functions exported below
  local rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then echo "-- $name: TIMED OUT after ${limit}s"; failed=$((failed + 1))
  elif [ $rc -ne 0 ]; then echo "-- $name: FAILED (exit $rc)"; failed=$((failed + 1))
  else echo "-- $name: ok"; fi
  return 0
}

say "unpack"
if [ ! -d node_modules/webgpu ] || [ ! -f dist/bench/run.js ]; then
  [ -f .device/base.tar.xz ] || { echo "no node_modules/dist and no .device/base.tar.xz: run bench/device_pack.sh here first"; exit 1; }
  tar -xJf .device/base.tar.xz || exit 1
fi
# Node: the machine's own if it is 20 or newer, else the packed one.
if ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' 2>/dev/null; then
  [ -x node/bin/node ] || { echo "no node >= 20 on this machine and none packed (device_pack.sh without --no-node)"; exit 1; }
  export PATH="$PWD/node/bin:$PATH"
fi
echo "node $(node --version) at $(command -v node)"
if [ ! -d ../shared/fixtures ]; then
  mkdir -p ../shared/fixtures
  for f in .device/fixtures-*.tar.xz; do [ -f "$f" ] && tar -C ../shared/fixtures -xJf "$f" && echo "fixtures: $(basename "$f" .tar.xz)"; done
fi
# Vulkan: the packed loader and libglvnd parts where the machine has none (only those, so none
# shadows the machine's own), NVIDIA's driver manifest where none is registered.
mkdir -p /tmp/dr-lib
for lib in .device/lib/*; do
  [ -f "$lib" ] || continue
  if ! ldconfig -p 2>/dev/null | grep -q "$(basename "$lib")"; then cp "$lib" /tmp/dr-lib/ && echo "using the packed $(basename "$lib")"; fi
done
export LD_LIBRARY_PATH="/tmp/dr-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ! ls /usr/share/vulkan/icd.d/*nvidia* /etc/vulkan/icd.d/*nvidia* >/dev/null 2>&1 && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  echo "VK_DRIVER_FILES=$VK_DRIVER_FILES"
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

say "card"
if command -v nvidia-smi >/dev/null; then
  timeout 30 nvidia-smi
  timeout 30 nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.memory,power.limit,driver_version --format=csv
else
  echo "no nvidia-smi here"
fi

# dr doctor's report, without the CLI (its image commands need sharp, which is not packed).
doctor() {
  node --input-type=module -e '
    import { getGpu } from "./dist/src/engine/device.js";
    import { adapterTraits, chooseKernels } from "./dist/src/engine/kernels.js";
    const gpu = await getGpu();
    const traits = adapterTraits(gpu);
    console.log(JSON.stringify({ ...gpu.info, traits, kernels: chooseKernels(traits, process.env.DR_KERNELS) }, null, 2));
    process.exit(0);'
}
export -f doctor
part 40 "dr doctor" doctor

TESTS=(tests/ops.test.ts tests/kernels_cpu.test.ts tests/unet.test.ts tests/vae.test.ts tests/clip.test.ts
  tests/controlnet.test.ts tests/grad_elementwise.test.ts tests/grad_linear_conv.test.ts tests/grad_norm_attention.test.ts
  tests/subgroup_matrix.test.ts)
[ "$quick" = 1 ] && TESTS=(tests/subgroup_matrix.test.ts)
# Fixtures that did not fit the pack: their tests are left out, and said so.
present=()
for t in "${TESTS[@]}"; do
  need=$(grep -o "FIXTURES, '[^'/]*" "$t" | head -1 | sed "s/FIXTURES, '//")
  if [ -n "$need" ] && [ ! -e "../shared/fixtures/$need" ]; then echo "left out $t: fixtures/$need not packed"; else present+=("$t"); fi
done
part $([ "$quick" = 1 ] && echo 120 || echo 150) "parity tests on the hardware path" \
  node node_modules/vitest/vitest.mjs run "${present[@]}" --reporter=default --reporter=json --outputFile="$OUT/tests.json"

bench() { # bench NAME ARGS...: node dist/bench/run.js ARGS --json > $OUT/NAME.json
  local name=$1
  shift
  node dist/bench/run.js "$@" --json > "$OUT/$name.json"
}
# The same f16 matmuls and convolutions on the tiled kernels (no subgroup matrices): the A/B of the matrix units.
bench_tiled() { DR_SUBGROUP_MATRIX=0 bench bench_tiled matmul conv --full --dtype f16; }
export -f bench bench_tiled
export OUT
if [ "$quick" = 1 ]; then
  part 120 "benchmark: matmul, quick" bench bench_quick matmul --quick
else
  part 100 "benchmark: kernels --full" bench bench_kernels kernels --full
  part 60 "benchmark: f16 matmul and conv --full, DR_SUBGROUP_MATRIX=0" bench_tiled
  # Batch 2: one classifier-free-guidance step, what diffusers' per-step figures time.
  part 90 "benchmark: SD 1.5 UNet step, 64x64 latents, batch 2, f16" bench bench_unet unet --latent 64 --dtype f16 --batch 2
  # The CPU-adapter (texture) kernels against the tiled ones on a real GPU: whether they must stay off it.
  part 30 "benchmark: ab_kernels f16 (cpu vs gpu path, 1 round)" node dist/bench/ab_kernels.js matmul conv f16 --rounds 1
fi

say "summary"
node --input-type=module -e '
  import { existsSync, readFileSync } from "node:fs";
  const out = process.argv[1];
  const read = (f) => existsSync(`${out}/${f}`) ? JSON.parse(readFileSync(`${out}/${f}`, "utf8")) : undefined;
  const tests = read("tests.json");
  if (tests) console.log(`tests: ${tests.numPassedTests} passed, ${tests.numFailedTests} failed, ${tests.numPendingTests} skipped of ${tests.numTotalTests}`);
  // Dense peaks by the vendors datasheets (TFLOP/s): f16 on tensor cores with f32 accumulation, plain f32.
  const PEAKS = [[/H200|H100 SXM|H100 80GB HBM3/, 989, 67], [/H100 PCIe|H100 NVL/, 756, 51], [/A100/, 312, 19.5], [/L40S/, 362, 91.6], [/L4\b/, 121, 30.3], [/RTX 4090/, 165, 82.6]];
  for (const f of ["bench_kernels.json", "bench_tiled.json", "bench_unet.json", "bench_quick.json"]) {
    const b = read(f);
    if (!b) continue;
    const card = `${b.adapter?.name ?? ""} ${b.adapter?.description ?? ""}`;
    const peak = PEAKS.find(([re]) => re.test(card));
    console.log(`${f}: ${card.trim()} ${peak ? `(peak ${peak[1]} f16 / ${peak[2]} f32 TFLOP/s)` : "(peak unknown)"}`);
    for (const r of b.results ?? []) {
      if (r.gflops === undefined) { console.log(`  ${r.section ?? ""} ${r.name ?? ""} ${JSON.stringify(r).slice(0, 200)}`); continue; }
      const of = peak ? ` = ${(100 * r.gflops / 1000 / (r.dtype === "f16" ? peak[1] : peak[2])).toFixed(1)} % of peak` : "";
      console.log(`  ${r.section} ${r.name} ${r.dtype}: ${(r.gflops / 1000).toPrecision(3)} TFLOP/s${of}`);
    }
    for (const x of b.failures ?? []) console.log(`  FAILED ${x.benchmark}: ${x.error}`);
  }' "$OUT"
say "done: $failed part(s) failed; log $LOG"
exit $failed
