#!/usr/bin/env bash
# Packs what bench/device.sh needs on a device machine into .device/ (git-ignored), within the
# device tool's 64 MiB for everything that travels (the working tree included). That machine is
# bare and offline (no npm, no node, no ../shared), and node_modules alone is ~220 MB, mostly
# Dawn builds for other platforms, so nothing is carried raw:
#   .device/base.tar.xz        node_modules pruned to what runs there (webgpu's linux-x64 build;
#                              no typescript, @types or sharp: tests and benchmarks need none), dist/
#                              without source maps, and a stripped copy of this machine's node
#   .device/lib/               the Vulkan loader and libglvnd's libGLdispatch/libGLX (NVIDIA's Vulkan
#                              driver needs them), each used only where the machine has none
#   .device/fixtures-*.tar.xz  ../shared fixture subsets, in priority order, each only while it fits
# Then, with the device tool: run with carry [".device"] and command "bash bench/device.sh".
#   bash bench/device_pack.sh [--no-node] [--no-build]
# --no-node leaves node out (where a first run showed node >= 20 on the machine: ~21 MB saved).
set -euo pipefail
cd "$(dirname "$0")/.."
with_node=1
build=1
for a in "$@"; do
  case "$a" in
    --no-node) with_node=0 ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "device_pack.sh: unknown option $a (see --help)" >&2; exit 2 ;;
  esac
done
LIMIT=$((64 * 1024 * 1024))
MARGIN=$((2 * 1024 * 1024)) # files other sessions may add to the tree before the run
SHARED=${DR_SHARED:-../shared}
[ -d node_modules/webgpu/dist/linux-x64 ] || { echo "device_pack.sh: node_modules/webgpu/dist/linux-x64 missing: run npm ci first" >&2; exit 1; }
[ -d "$SHARED/fixtures" ] || { echo "device_pack.sh: $SHARED/fixtures missing (set DR_SHARED)" >&2; exit 1; }
if [ "$build" = 1 ] && ! out=$(npm run build 2>&1); then
  echo "$out" | tail -20 >&2
  echo "device_pack.sh: npm run build failed" >&2
  exit 1
fi
[ -f dist/bench/run.js ] || { echo "device_pack.sh: dist/ not built" >&2; exit 1; }

rm -rf .device
mkdir -p .device
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
XZ="xz -T0 -6"

tree_bytes=$(git ls-files -co --exclude-standard -z | du --files0-from=- -cb 2>/dev/null | tail -1 | cut -f1)
if [ "$with_node" = 1 ]; then
  mkdir -p "$stage/node/bin"
  strip -o "$stage/node/bin/node" "$(command -v node)"
fi
tar -cf - --exclude='node_modules/webgpu/dist/darwin-*' --exclude='node_modules/webgpu/dist/win32-*' \
  --exclude='node_modules/webgpu/dist/linux-arm64' --exclude='node_modules/typescript' --exclude='node_modules/@types' \
  --exclude='node_modules/sharp' --exclude='node_modules/@img' --exclude='node_modules/.vite' --exclude='node_modules/.cache' \
  --exclude='*.map' node_modules dist $([ "$with_node" = 1 ] && echo "-C $stage node") | $XZ > .device/base.tar.xz
mkdir -p .device/lib
for lib in libvulkan.so.1 libGLdispatch.so.0 libGLX.so.0; do
  cp -L "/usr/lib/x86_64-linux-gnu/$lib" .device/lib/ 2>/dev/null || echo "device_pack.sh: no $lib here; the machine's own must do"
done

used=$((tree_bytes + $(du -cb .device | tail -1 | cut -f1)))
# Fixture groups, most useful first: [name]=paths under fixtures/ (the parity tests' inputs).
groups=(
  "grad:train/ops_grad.safetensors"
  "unet:sd-tiny/unet sd-tiny/io/unet_io.safetensors sd-tiny/io/index.json sd-tiny/model_index.json"
  "vae:sd-tiny/vae sd-tiny/io/vae_io.safetensors"
  "controlnet:sd-tiny/controlnet sd-tiny/io/controlnet_io.safetensors"
  "clip:clip-tiny"
)
for g in "${groups[@]}"; do
  name=${g%%:*}
  read -r -a paths <<< "${g#*:}"
  tar -C "$SHARED/fixtures" -cf - "${paths[@]}" | $XZ > "$stage/fixtures-$name.tar.xz"
  size=$(stat -c %s "$stage/fixtures-$name.tar.xz")
  if [ $((used + size + MARGIN)) -le $LIMIT ]; then
    mv "$stage/fixtures-$name.tar.xz" .device/
    used=$((used + size))
  else
    echo "device_pack.sh: fixtures '$name' left out ($((size >> 20)) MiB would pass the 64 MiB limit); its tests are skipped there"
  fi
done
ls -l .device
echo "device_pack.sh: $((used >> 20)) MiB travels (tree $((tree_bytes >> 20)) MiB + .device); limit 64 MiB"
