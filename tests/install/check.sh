#!/usr/bin/env bash
# Install the build tree into a scratch prefix, then build and run a small
# program against it with pkg-config and with find_package(vmem); check
# that the shared library exports only the public API.
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
cc $(pkg-config --cflags vmem) "$src/consumer.c" -o "$tmp/pc" $(pkg-config --libs vmem) -Wl,-rpath,"$tmp/prefix/lib"
"$tmp/pc"
cmake -S "$src" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/cm" >/dev/null
"$tmp/cm/consumer_shared"
"$tmp/cm/consumer_static"
# Exported symbols: only the public prefixes, none of the internal helpers.
bad=$(nm -D --defined-only "$tmp/prefix/lib/libvmem.so" | awk '{print $3}' |
  grep -Ev '^(vmem_|kmem_|segkmem_|segkp_|kthread_|kas_|layout_)' || true)
internal=$(nm -D --defined-only "$tmp/prefix/lib/libvmem.so" | awk '{print $3}' |
  grep -E '^(vmem_error_report|vmem_snprintf)$' || true)
if [ -n "$bad$internal" ]; then
  echo "non-public symbols exported: $bad $internal"; exit 1
fi
echo "1 passed, 0 failed"
