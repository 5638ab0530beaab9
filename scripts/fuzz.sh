#!/usr/bin/env bash
# Build the libFuzzer targets in fuzz/ with clang (ASan + UBSan) and run
# each for FUZZ_SECONDS (default 60) with libFuzzer seed FUZZ_SEED (default
# 1, so CI runs are repeatable). Usage: scripts/fuzz.sh [target...]
# (targets: vmem kmem trace segkp; default all). New inputs go to
# build-fuzz/corpus/<target> (the committed seeds in fuzz/corpus/<target>
# are read, never written); crashes are written to build-fuzz/ and make the
# script fail. Replay them with the fuzz_replay_* CTest tests after copying
# them to fuzz/crashes/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-60}
OUT=build-fuzz
TARGETS=${*:-vmem kmem trace segkp}

# clang, and libFuzzer's runtime (only a Recommends of clang on Debian).
if ! command -v clang >/dev/null ||
    [ ! -e "$(clang -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null)" ] &&
    ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq clang libclang-rt-dev >/dev/null
fi

SAN="-fsanitize=address,undefined -fno-sanitize-recover=all"
CFLAGS="-std=c11 -g -O1 -D_GNU_SOURCE -DVMEM_WITH_KMEM -Iinclude -Isrc -Itools/kvsim"
mkdir -p "$OUT/obj"

# The library, instrumented for coverage (no main).
for src in src/*.c src/platform/posix.c; do
	clang $CFLAGS $SAN -fsanitize=fuzzer-no-link -c "$src" \
	    -o "$OUT/obj/$(basename "$src" .c).o"
done
rm -f "$OUT/libvmem_fuzz.a"
ar rcs "$OUT/libvmem_fuzz.a" "$OUT"/obj/*.o

status=0
for t in $TARGETS; do
	extra=""
	[ "$t" = trace ] && extra=tools/kvsim/trace.c
	clang $CFLAGS $SAN -fsanitize=fuzzer "fuzz/fuzz_$t.c" $extra \
	    "$OUT/libvmem_fuzz.a" -lpthread -o "$OUT/fuzz_$t"
	mkdir -p "$OUT/corpus/$t"
	echo "== fuzz_$t: ${SECONDS_EACH}s"
	if ! "$OUT/fuzz_$t" -max_total_time="$SECONDS_EACH" -timeout=20 -max_len=4096 -seed="${FUZZ_SEED:-1}" \
	    -rss_limit_mb=2048 -artifact_prefix="$OUT/$t-" \
	    -print_final_stats=1 "$OUT/corpus/$t" "fuzz/corpus/$t" \
	    > "$OUT/fuzz_$t.log" 2>&1; then
		echo "fuzz_$t FAILED: see $OUT/fuzz_$t.log and $OUT/$t-*"
		grep -E "fuzz check failed|ERROR|SUMMARY" "$OUT/fuzz_$t.log" | head -5
		status=1
	fi
	grep -E "stat::number_of_executed_units|stat::new_units_added" \
	    "$OUT/fuzz_$t.log" | sed "s/^/  /"
done
exit $status
