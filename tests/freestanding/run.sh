#!/usr/bin/env bash
# Build the libvmem core (vmem, kmem, the error channel and formatter, the
# statistics tables) with -ffreestanding and no C library headers, check
# with nm that the objects need nothing but the platform interface and the
# four memory functions, link them with the test kernel (own _start, own
# platform, -nostdlib -static) and run it.
#
# usage: run.sh CC SOURCE_DIR WORK_DIR
# Exit 77 (skipped) on hosts other than x86_64 Linux: the test kernel's
# entry point and system calls are written for that one.
set -euo pipefail
cc=$1 src=$2 work=$3
here=$src/tests/freestanding
if [ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]; then
  echo "freestanding test kernel is x86_64 Linux only: skipped"; exit 77
fi
rm -rf "$work"; mkdir -p "$work"
# Two embeddings, as docs/FREESTANDING.md describes them: the whole core,
# and vmem alone (no object caches, no kmem heap).
full_core="vmem error format fault kmem kmem_heap kmem_meta stats_json vmem_print"
vmem_core="vmem error format fault stats_json vmem_print"
base_cflags=(-std=c11 -O2 -g -Wall -Wextra -Werror -ffreestanding -nostdinc
  -isystem "$("$cc" -print-file-name=include)"
  -fno-stack-protector -fno-pie -DVMEM_FREESTANDING
  "-DVMEM_PLATFORM_HEADER=\"$here/fs_platform.h\""
  -I"$src/include" -I"$src/src" -I"$here")
# GCC turns byte loops into memset calls unless told not to (the test
# kernel's own memset must not call itself); Clang has no such flag.
if ! "$cc" --version | grep -qi clang; then
  base_cflags+=(-fno-tree-loop-distribute-patterns)
fi

# build_and_run NAME "FILES" "PLATFORM_FUNCTIONS_NOT_NEEDED" [EXTRA_CFLAGS...]
build_and_run() {
  local name=$1 core=$2 unneeded=$3 dir=$work/$1
  shift 3
  local cflags=("${base_cflags[@]}" "$@") objs=() f
  mkdir -p "$dir"
  for f in $core; do
    "$cc" "${cflags[@]}" -c "$src/src/$f.c" -o "$dir/$f.o"
    objs+=("$dir/$f.o")
  done
  # The core may need only: its own symbols, plat_*, memset/memcpy/memmove/memcmp.
  local defined undefined foreign
  defined=$(nm --defined-only "${objs[@]}" | awk 'NF == 3 {print $3}' | sort -u)
  undefined=$(nm -u "${objs[@]}" | awk 'NF == 2 {print $2}' | sort -u)
  foreign=$(comm -23 <(echo "$undefined") <(echo "$defined") |
    grep -Ev '^(vmem_plat_[a-z_]+|memset|memcpy|memmove|memcmp)$' || true)
  if [ -n "$foreign" ]; then
    echo "$name: core objects reference symbols outside the platform interface:"
    echo "$foreign"; exit 1
  fi
  echo "$name: ${#objs[@]} files checked (${objs[*]##*/}); external references:"
  comm -23 <(echo "$undefined") <(echo "$defined") | tr '\n' ' '; echo
  # What docs/FREESTANDING.md says this embedding's platform may leave out.
  for f in $unneeded; do
    if comm -23 <(echo "$undefined") <(echo "$defined") | grep -qx "$f"; then
      echo "$name: the core needs $f, which the docs say it does not"
      exit 1
    fi
  done
  for f in fs_platform kmain; do
    "$cc" "${cflags[@]}" -c "$here/$f.c" -o "$dir/$f.o"
  done
  "$cc" -static -nostdlib -no-pie -o "$dir/fs_kernel" "$dir/fs_platform.o" \
    "$dir/kmain.o" "${objs[@]}" -lgcc
  # No dynamic section, no interpreter, no libc symbol in the binary.
  if nm "$dir/fs_kernel" |
      grep -Eq ' (U|T) (malloc|printf|vsnprintf|__libc_start_main)$'; then
    echo "$name: libc symbols in the freestanding binary"; exit 1
  fi
  "$dir/fs_kernel"
}

build_and_run full "$full_core" "" -DVMEM_WITH_KMEM
# Pages larger than the core's own 64 KiB chunks: every metadata request
# must still be whole pages (the platform panics otherwise).
build_and_run bigpage "$full_core" "" -DVMEM_WITH_KMEM -DFS_PAGESIZE=131072u
build_and_run vmem "$vmem_core" \
  "vmem_plat_cpu_id vmem_plat_ncpus vmem_plat_cpu_id_method vmem_plat_defer"
