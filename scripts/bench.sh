#!/usr/bin/env bash
# The vmem benchmark (docs/BENCH_VMEM.md): builds Release (with symbols, so
# that callgrind can name functions), counts instructions per operation with
# callgrind on reduced operation counts, then times every workload (median
# of 5 runs, glibc malloc in the same run) and prints one markdown table.
#   scripts/bench.sh [--ext] [--no-callgrind] [--runs N] [WORKLOAD...]
#     --ext           also jemalloc and mimalloc (installs the Debian packages)
#     --no-callgrind  skip the instructions/op column
# Environment: CG_OPS (callgrind ops for replace and W7 workloads, default
# 200000), CG_FAIL_OPS (for W5*, default 20000), BUILD_DIR (build-bench).
# Results also go to $BUILD_DIR/results/ (bench.json, bench.md, callgrind
# output files for callgrind_annotate).
set -euo pipefail
cd "$(dirname "$0")/.."

ext=0 callgrind=1 runs=5 workloads=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ext) ext=1 ;;
    --no-callgrind) callgrind=0 ;;
    --runs) runs=$2; shift ;;
    -h|--help) sed -n 2,13p "$0"; exit 0 ;;
    *) workloads+=("$1") ;;
  esac
  shift
done

extra=""
if [ $callgrind = 1 ] && ! command -v valgrind >/dev/null 2>&1; then
  extra+=" valgrind"
fi
if [ $ext = 1 ]; then
  for pkg in libjemalloc2 libmimalloc2.0; do
    dpkg -s "$pkg" >/dev/null 2>&1 || extra+=" $pkg"
  done
fi
VMEM_EXTRA_PACKAGES="$extra" bash scripts/deps.sh

dir=${BUILD_DIR:-build-bench}
echo "=== build $dir (Release)" >&2
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS=-g \
  -DVMEM_BUILD_TESTS=OFF -DVMEM_BUILD_BENCH=ON >/dev/null
cmake --build "$dir" -j "$(nproc 2>/dev/null || echo 2)" --target bench_vmem >/dev/null
bin=$dir/bench/bench_vmem
out=$dir/results
mkdir -p "$out"
: >"$out/instr.txt"

if [ ${#workloads[@]} -eq 0 ]; then
  mapfile -t workloads < <("$bin" --list | awk '{print $1}')
fi

# Instructions per operation: callgrind counts only the timed functions
# (measured_*), so setup and teardown are excluded; total Ir / ops.
if [ $callgrind = 1 ]; then
  for id in "${workloads[@]}"; do
    case "$id" in
      W8|W9|w8|w9) continue ;;            # threads: see W3/W1
      W5*|w5*) impls="vmem"; ops=${CG_FAIL_OPS:-20000} ;;
      *) impls="vmem glibc"; ops=${CG_OPS:-200000} ;;
    esac
    for impl in $impls; do
      cg=$out/callgrind.$id.$impl
      echo "=== callgrind $id $impl ($ops ops)" >&2
      line=$(valgrind --tool=callgrind --toggle-collect='measured_*' \
        --callgrind-out-file="$cg" "$bin" --callgrind --impl "$impl" \
        --ops "$ops" "$id" 2>/dev/null)
      nops=$(awk '{for (i = 1; i < NF; i++) if ($i == "ops") print $(i+1)}' <<<"$line")
      ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$cg")
      if [ -n "$nops" ] && [ "$nops" -gt 0 ] && [ -n "$ir" ]; then
        awk -v id="$id" -v impl="$impl" -v ir="$ir" -v n="$nops" \
          'BEGIN {printf "%s %s %.1f\n", id, impl, ir / n}' >>"$out/instr.txt"
      fi
    done
  done
fi

args=(--runs "$runs" --instr-file "$out/instr.txt" --json-out "$out/bench.json")
[ $ext = 1 ] && args+=(--ext)
echo "=== timing (median of $runs runs)" >&2
"$bin" "${args[@]}" "${workloads[@]}" | tee "$out/bench.md"
