#!/usr/bin/env bash
# The figures in doc/fuzzing.md: each fuzz target run for a bounded time
# from its seeds and from an empty corpus (libFuzzer's final cov: and ft:),
# then the seeded run's corpus replayed through a source-coverage build,
# reported per function of the code under test (llvm-cov).
#   usage: tests/fuzz/coverage.sh BUILD_DIR [SECONDS per run]
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "$1" && pwd)
secs=${2:-12}
out=$build/fuzz
run=$src/tests/fuzz/run_fuzz.sh
targets=(packet handshake snapfile record)

echo "== ${secs} s per target from an empty corpus"
PF_FUZZ_SEEDS=0 "$run" "$build" "$secs"
echo "== ${secs} s per target from the seeds"
"$run" "$build" "$secs"

# The same sources run_fuzz.sh builds, from its table.
# shellcheck disable=SC2016  # the pattern's $ is sed's
eval "$(sed -n '/^p=\$src\/protocol$/p; /^declare -A sources=(/,/^)$/p' "$run")"
for t in "${targets[@]}"; do
	bin=$out/cov_$t
	# shellcheck disable=SC2086,SC2154  # sources: from run_fuzz.sh
	clang -std=gnu11 -O1 -fsanitize=fuzzer -fprofile-instr-generate -fcoverage-mapping -D_GNU_SOURCE \
		-I"$src" "$src/tests/fuzz/fuzz_$t.c" ${sources[$t]} -lpthread -o "$bin"
	seeds=()
	[ -d "$src/tests/fuzz/seeds/$t" ] && seeds=("$src/tests/fuzz/seeds/$t")
	LLVM_PROFILE_FILE=$bin.profraw "$bin" -runs=0 "$out/corpus-$t" "${seeds[@]}" >/dev/null 2>&1
	llvm-profdata merge -sparse "$bin.profraw" -o "$bin.profdata"
	echo "== fuzz_$t: functions of the code under test (regions, lines, branches covered by the seeded run's corpus)"
	# shellcheck disable=SC2086
	llvm-cov report "$bin" -instr-profile="$bin.profdata" -show-functions ${sources[$t]} |
		awk 'NF == 10 && $1 !~ /^(Name|-)/ && $1 != "TOTAL" {
			printf "  %-34s regions %3d/%-3d lines %3d/%-3d branches %3d/%d\n",
				$1, $2 - $3, $2, $5 - $6, $5, $8 - $9, $8 }'
done
