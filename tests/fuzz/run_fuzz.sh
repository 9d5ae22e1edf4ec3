#!/usr/bin/env bash
# Build the libFuzzer targets with clang (libFuzzer + ASan + UBSan) and run
# each for a bounded time, starting from its checked-in seeds
# (tests/fuzz/seeds/<target>/, cut from real transfers by make_seeds.py).
# Fails on any crash, broken invariant, leak, timeout or out-of-memory: the
# input that did it is kept as BUILD_DIR/fuzz/artifacts/<target>-*.
# Exit 77 (skipped) when clang or its fuzzer runtime is not installed.
#
#   usage: tests/fuzz/run_fuzz.sh BUILD_DIR [SECONDS per target] [TARGET...]
#   PF_FUZZ_SEEDS=0 starts from an empty corpus instead (for doc/fuzzing.md).
#
# Each run starts from the seeds alone, in a scratch corpus: a run does not
# depend on what an earlier one found, and its figures can be compared.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
out=$(cd "$1" && pwd)/fuzz
secs=${2:-${PF_FUZZ_SECONDS:-12}}
shift $(($# < 2 ? $# : 2))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(packet handshake snapfile record)

command -v clang >/dev/null || { echo "SKIP: clang not installed"; exit 77; }
mkdir -p "$out/artifacts"
printf 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }\n' >"$out/probe.c"
if ! clang -fsanitize=fuzzer "$out/probe.c" -o "$out/probe" 2>/dev/null; then
	echo "SKIP: clang's libFuzzer runtime is not installed"
	exit 77
fi

p=$src/protocol
# Seeds of another format version are all refused at the version check: the
# run would pass while fuzzing little.  Say so instead.
version() { sed -n "s/^#define $2 \([0-9]*\)u.*/\1/p" "$p/$1"; }
stale() { # FILE OFFSET BYTES WANT
	local got
	got=$(od -An -tu"$3" -j"$2" -N"$3" "$1" | tr -d ' ')
	[ "$got" = "$4" ] || { echo "$1: format version $got, the code's is $4:" \
		"regenerate the seeds (tests/fuzz/make_seeds.py)"; exit 1; }
}
if [ "${PF_FUZZ_SEEDS:-1}" != 0 ]; then
	wire=$(version proto_handshake.h PROTO_VERSION) snap=$(version proto_snapfile.h PROTO_SNAP_VERSION)
	dirty=$(version proto_dirtylog.h PROTO_DIRTYLOG_VERSION)
	for f in "$src"/tests/fuzz/seeds/handshake/* "$src"/tests/fuzz/seeds/packet/*; do
		stale "$f" 5 2 "$wire" # after the flags byte: magic, then the version
	done
	for f in "$src"/tests/fuzz/seeds/snapfile/snap-*; do stale "$f" 9 4 "$snap"; done
	for f in "$src"/tests/fuzz/seeds/snapfile/dirtylog-*; do stale "$f" 9 4 "$dirty"; done
fi

declare -A sources=(
	[packet]="$p/proto_packet.c $p/proto_handshake.c $p/proto_error.c $p/proto_crc32c.c"
	[handshake]="$p/proto_handshake.c $p/proto_state.c $p/proto_error.c $p/proto_crc32c.c"
	[snapfile]="$src/dest/ds_restore.c $src/dest/ds_extents.c $src/dest/ds_place.c $src/dio/dio_sync.c $src/dio/dio_queue.c
		$p/proto_snapfile.c $p/proto_dirtylog.c $p/proto_error.c $p/proto_crc32c.c"
	[record]="$src/workers/wk_record.c $p/proto_desc.c $p/proto_packet.c $p/proto_error.c $p/proto_crc32c.c"
)

# Built in parallel, run one after another: each run's figures are its own.
pids=()
for t in "${targets[@]}"; do
	[ -n "${sources[$t]:-}" ] || { echo "unknown fuzz target: $t" >&2; exit 2; }
	# shellcheck disable=SC2086  # the source lists split on purpose
	clang -std=gnu11 -Wall -Wextra -Werror -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
		-D_GNU_SOURCE -I"$src" \
		"$src/tests/fuzz/fuzz_$t.c" ${sources[$t]} -lpthread -o "$out/fuzz_$t" &
	pids+=($!)
done
for pid in "${pids[@]}"; do
	wait "$pid" || { echo "building the fuzz targets failed" >&2; exit 1; }
done

failed=0
for t in "${targets[@]}"; do
	corpus=$out/corpus-$t
	rm -rf "$corpus"
	mkdir -p "$corpus"
	seeds=()
	from="an empty corpus"
	if [ "${PF_FUZZ_SEEDS:-1}" != 0 ] && [ -d "$src/tests/fuzz/seeds/$t" ]; then
		seeds=("$src/tests/fuzz/seeds/$t")
		from="$(find "${seeds[0]}" -type f | wc -l) seeds"
	fi
	# New inputs go to the scratch corpus (the first directory), never
	# into the checked-in seeds.  A run that finds nothing exits 0.
	log=$out/fuzz_$t.log
	if "$out/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -error_exitcode=1 \
		-timeout_exitcode=1 -print_final_stats=1 -artifact_prefix="$out/artifacts/$t-" \
		"$corpus" "${seeds[@]}" >"$log" 2>&1; then
		# The last status line: coverage (edges), features, corpus.
		last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
		echo "fuzz_$t: ok, ${secs} s from $from: $last"
	else
		failed=1
		echo "fuzz_$t: FAILED (input kept in $out/artifacts/, log $log):"
		grep -E 'ERROR|invariant broken|SUMMARY|Test unit written|^#[0-9]+' "$log" | tail -n 12
	fi
done
exit $failed
