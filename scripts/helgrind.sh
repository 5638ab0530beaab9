#!/usr/bin/env bash
# The threaded tests under valgrind's helgrind (issue 6), on a build with
# VMEM_HELGRIND=ON: the platform mutex, kmem's CPU slot locks and
# plat_once announce themselves to helgrind, and the few hints read without
# a lock on purpose are marked benign (src/hg.h). Any report fails the run.
# Sizes are those of the sanitizer builds (VMEM_SLOW_BUILD=1), and the fork
# test forks 5 times (each child is checked too). --fair-sched=yes: with
# valgrind's default unfair scheduler a thread spinning in user code can
# keep a thread returning from waitpid() off the CPU for minutes.
#   scripts/helgrind.sh [TEST...]   default: every tests/test_thr_*.c
set -euo pipefail
cd "$(dirname "$0")/.."
if ! [ -f /usr/include/valgrind/helgrind.h ] || ! command -v valgrind >/dev/null 2>&1; then
  VMEM_EXTRA_PACKAGES="valgrind" bash scripts/deps.sh
else
  bash scripts/deps.sh
fi
dir=${BUILD_DIR:-build-helgrind}
jobs=$(nproc 2>/dev/null || echo 2)
echo "=== build $dir (VMEM_HELGRIND=ON)"
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVMEM_HELGRIND=ON \
  -DVMEM_BUILD_TESTS=ON -DVMEM_BUILD_BENCH=OFF >/dev/null
cmake --build "$dir" -j "$jobs" >/dev/null

tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
  for src in tests/test_thr_*.c; do tests+=("$(basename "$src" .c)"); done
fi
logs=$dir/helgrind
mkdir -p "$logs"
run_one() {
  local t=$1 start=$SECONDS rc=0
  VMEM_SLOW_BUILD=1 VMEM_TEST_FORKS=5 valgrind --tool=helgrind \
    --error-exitcode=99 --fair-sched=yes "$dir/tests/$t" >"$logs/$t.log" 2>&1 ||
    rc=$?
  echo "$t: exit $rc, $((SECONDS - start)) s, $(grep -m1 'ERROR SUMMARY' "$logs/$t.log" |
    sed 's/.*ERROR SUMMARY: //')"
  return $rc
}
export -f run_one
export dir logs
echo "=== helgrind (${#tests[@]} tests, $jobs at a time; logs in $logs)"
if ! printf '%s\n' "${tests[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one {}'; then
  for t in "${tests[@]}"; do
    if ! grep -q 'ERROR SUMMARY: 0 errors' "$logs/$t.log"; then
      echo "--- $t" && grep -A30 -m3 'Possible data race\|Lock order\|unlocked\|ERROR' "$logs/$t.log" | head -80
    fi
  done
  exit 1
fi
