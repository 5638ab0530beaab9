#!/usr/bin/env bash
# The test command: builds libvmem and runs every test with CTest, then
# again under ASan+UBSan (randomized tests sized down), then the threaded
# tests under TSan and under valgrind's helgrind (scripts/helgrind.sh), then
# each libFuzzer target for FUZZ_SECONDS (default 60, fixed seed). Installs
# missing Debian packages first.
#   scripts/test.sh            all three builds
#   scripts/test.sh quick      the normal build only
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
jobs=$(nproc 2>/dev/null || echo 2)
mode=${1:-all}

run_build() { # dir, extra cmake args..., -- ctest args...
  local dir=$1; shift
  local cmake_args=() ctest_args=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do cmake_args+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  ctest_args=("$@")
  echo "=== build $dir ${cmake_args[*]}"
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVMEM_BUILD_TESTS=ON "${cmake_args[@]}" >/dev/null
  cmake --build "$dir" -j "$jobs" >/dev/null
  echo "=== test $dir"
  (cd "$dir" && ctest --output-on-failure -j "$jobs" "${ctest_args[@]}")
}

run_build build -DVMEM_BUILD_BENCH=ON --
if [ "$mode" = all ]; then
  VMEM_SLOW_BUILD=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_build build-asan -DVMEM_SANITIZE=address,undefined -DVMEM_BUILD_BENCH=OFF --
  VMEM_SLOW_BUILD=1 TSAN_OPTIONS=halt_on_error=1 \
    run_build build-tsan -DVMEM_SANITIZE=thread -DVMEM_BUILD_BENCH=OFF -- -L threads
  bash scripts/helgrind.sh
  echo "=== fuzz (${FUZZ_SECONDS:-60} s per target)"
  FUZZ_SECONDS=${FUZZ_SECONDS:-60} bash scripts/fuzz.sh
fi
