#!/usr/bin/env bash
# kvsim's command line as a user meets it: a refused placement still runs
# the other one; --svg without frontier points fails and leaves no file; a
# failed replay is shown in the table; a trace stack size that is not
# whole pages is a trace error (exit 2), not an abort.
# usage: kvsim_cli.sh KVSIM
set -uo pipefail
kvsim=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
check() { if ! eval "$2"; then echo "FAIL: $1"; fail=1; fi; }

out=$("$kvsim" --quiet --segkpsize 700M --workload storm 2>"$tmp/err"); rc=$?
check "refused fixed placement exits 1" '[ $rc = 1 ]'
check "refusal reported" 'grep -q "leaves no room for heap_arena" "$tmp/err"'
check "fromheap still runs" 'echo "$out" | grep -Eq "^fromheap +620.0 MiB +49165 "'

"$kvsim" --quiet --svg "$tmp/none.svg" --workload none >/dev/null 2>&1; rc=$?
check "--svg without points exits 1" '[ $rc = 1 ]'
check "--svg without points writes no file" '[ ! -e "$tmp/none.svg" ]'
"$kvsim" --quiet --svg "$tmp/storm.svg" --workload storm >/dev/null 2>&1; rc=$?
check "--svg with storm only exits 1, no file" '[ $rc = 1 ] && [ ! -e "$tmp/storm.svg" ]'

for i in $(seq 1 17000); do echo "$i thread_create 0 $i"; done > "$tmp/many.tr"
out=$("$kvsim" --quiet --trace "$tmp/many.tr" --workload replay 2>&1); rc=$?
check "failed replay shown in the table" 'echo "$out" | grep -q "replay: 16000 events applied, then line 16001 (thread_create) failed"'
check "complete replay shown" 'echo "$out" | grep -q "replay: all 17000 events applied"'

echo "0 thread_create 6000 1" > "$tmp/bad.tr"
"$kvsim" --quiet --trace "$tmp/bad.tr" --workload replay >/dev/null 2>"$tmp/err"; rc=$?
check "stack size not whole pages: exit 2" '[ $rc = 2 ]'
check "stack size message" 'grep -q "line 1: thread_create stack SIZE 6000 is not a multiple of the 4096-byte page" "$tmp/err"'

[ $fail = 0 ] && echo "1 passed, 0 failed" || echo "0 passed, 1 failed"
exit $fail
