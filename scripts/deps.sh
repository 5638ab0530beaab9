#!/usr/bin/env bash
# Install what building and testing libvmem needs, on Debian, if missing.
# Sourced by the other scripts; safe to run again.
set -euo pipefail
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v make >/dev/null 2>&1 || need+=(make)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v mandoc >/dev/null 2>&1 || need+=(mandoc)
command -v man >/dev/null 2>&1 || need+=(man-db)
for extra in ${VMEM_EXTRA_PACKAGES:-}; do need+=("$extra"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
