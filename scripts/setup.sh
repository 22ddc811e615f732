#!/usr/bin/env bash
# Installs dr on this machine: npm dependencies, the build, the `dr` command, and
# — only when no WebGPU adapter is found — Mesa's software Vulkan driver (lavapipe),
# which lets dr run (slowly) on machines without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

npm ci --no-audit --no-fund
npm run build

if node dist/src/cli/main.js doctor >/dev/null 2>&1; then
  echo "setup: WebGPU adapter found"
else
  echo "setup: no WebGPU adapter; installing Mesa's software Vulkan driver (lavapipe)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  . /etc/os-release
  if [ "${VERSION_CODENAME:-}" = "bookworm" ]; then
    # Debian 12's Mesa 22.3 is rejected by Dawn; bookworm-backports has Mesa 25.
    $sudo tee /etc/apt/sources.list.d/backports.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    $sudo apt-get update -q
    $sudo apt-get install -y -q -t bookworm-backports libvulkan1 mesa-vulkan-drivers
  else
    # Ubuntu 24.04 and Debian 13 ship a recent enough Mesa in their main archive.
    $sudo apt-get update -q
    $sudo apt-get install -y -q libvulkan1 mesa-vulkan-drivers
  fi
  node dist/src/cli/main.js doctor
fi

# `dr` on the PATH.
npm link --no-audit --no-fund >/dev/null
echo "setup: done — try \`dr doctor\`"
