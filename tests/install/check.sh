#!/usr/bin/env bash
# Install the build tree into a scratch prefix, then build and run a small
# program against it with pkg-config and with find_package(vmem), and every
# manual page example (man_examples.py); check
# that the shared library exports only the public API.
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
cc $(pkg-config --cflags vmem) "$src/consumer.c" -o "$tmp/pc" $(pkg-config --libs vmem) -Wl,-rpath,"$tmp/prefix/lib"
"$tmp/pc"
# A distribution's layout, staged with DESTDIR: prefix /usr, libdir
# lib/x86_64-linux-gnu (three levels under the prefix). Only vmem.pc
# differs, so configure such a tree for it and stage the installed files.
top=$(cd "$src/../.." && pwd)
cmake -S "$top" -B "$tmp/distro" -DCMAKE_INSTALL_PREFIX=/usr \
  -DCMAKE_INSTALL_LIBDIR=lib/x86_64-linux-gnu -DVMEM_BUILD_TESTS=OFF \
  -DVMEM_BUILD_BENCH=OFF >/dev/null
stage="$tmp/stage/usr"
mkdir -p "$stage/lib/x86_64-linux-gnu/pkgconfig"
cp -r "$tmp/prefix/include" "$stage/"
cp -a "$tmp/prefix/lib/"libvmem* "$stage/lib/x86_64-linux-gnu/"
cp "$tmp/distro/vmem.pc" "$stage/lib/x86_64-linux-gnu/pkgconfig/"
cc $(PKG_CONFIG_PATH="$stage/lib/x86_64-linux-gnu/pkgconfig" pkg-config --cflags vmem) \
  "$src/consumer.c" -o "$tmp/pc_distro" \
  $(PKG_CONFIG_PATH="$stage/lib/x86_64-linux-gnu/pkgconfig" pkg-config --libs vmem) \
  -Wl,-rpath,"$stage/lib/x86_64-linux-gnu"
"$tmp/pc_distro"
# Every manual page's example builds against the installed tree and runs.
if command -v python3 >/dev/null; then
  python3 "$src/man_examples.py" "$top" "$tmp/prefix" "$tmp/man_examples"
else
  echo "install_consumer: python3 not found, manual page examples not checked"
fi
cmake -S "$src" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/cm" >/dev/null
"$tmp/cm/consumer_shared"
"$tmp/cm/consumer_static"
# Exported symbols: only the public prefixes, none of the internal helpers.
bad=$(nm -D --defined-only "$tmp/prefix/lib/libvmem.so" | awk '{print $3}' |
  grep -Ev '^(vmem_|kmem_|segkmem_|segkp_|kthread_|kas_|layout_)' || true)
internal=$(nm -D --defined-only "$tmp/prefix/lib/libvmem.so" | awk '{print $3}' |
  grep -E '^(vmem_error_report|vmem_snprintf|vmem_plat_.*|vmem_kmeta_.*|vmem_fault_hook_.*)$' || true)
# The static library defines nothing outside the library's prefixes, so
# it cannot clash with a program's own names.
bad_static=$(nm -g --defined-only "$tmp/prefix/lib/libvmem.a" 2>/dev/null |
  awk 'NF == 3 {print $3}' |
  grep -Ev '^(vmem_|kmem_|segkmem_|segkp_|kthread_|kas_|layout_)' || true)
if [ -n "$bad_static" ]; then
  echo "libvmem.a defines names outside its prefixes:" $bad_static; exit 1
fi
if [ -n "$bad$internal" ]; then
  echo "non-public symbols exported: $bad $internal"; exit 1
fi
# Every exported name is declared in an installed header.
undeclared=""
for sym in $(nm -D --defined-only "$tmp/prefix/lib/libvmem.so" | awk '{print $3}'); do
  grep -qw -- "$sym" "$tmp/prefix/include/vmem/"*.h || undeclared="$undeclared $sym"
done
if [ -n "$undeclared" ]; then
  echo "exported but in no installed header:$undeclared"; exit 1
fi
echo "1 passed, 0 failed"
