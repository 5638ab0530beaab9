#!/usr/bin/env bash
# The main job: build libvmem and run kvsim on its default scenario (or,
# in a tree without kvsim, the arena demo). Installs missing Debian
# packages first. Extra arguments go to kvsim.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DVMEM_BUILD_TESTS=OFF -DVMEM_BUILD_BENCH=OFF >/dev/null
cmake --build build-release -j "$(nproc 2>/dev/null || echo 2)" >/dev/null
if [ -x build-release/kvsim ]; then
  exec build-release/kvsim "$@"
fi
exec build-release/vmem-demo
