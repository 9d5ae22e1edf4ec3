#!/usr/bin/env bash
# Build the fuzz targets with clang (libFuzzer + ASan + UBSan) and run each
# for a bounded time on its seed corpus.  Exit 77 (skipped) when clang's
# fuzzer runtime is not installed.
#   usage: tests/fuzz/run_fuzz.sh BUILD_DIR [SECONDS per target]
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
out=$1/fuzz
secs=${2:-${PF_FUZZ_SECONDS:-20}}
command -v clang >/dev/null || { echo "SKIP: clang not installed"; exit 77; }
mkdir -p "$out/corpus"
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE -I"$src" \
	"$src/tests/fuzz/fuzz_packet.c" "$src"/protocol/proto_{packet,handshake,desc,error,crc32c}.c \
	-o "$out/fuzz-packet"
cp -n "$src"/tests/fuzz/seeds/* "$out/corpus/" 2>/dev/null || true
"$out/fuzz-packet" -max_total_time="$secs" -print_final_stats=1 "$out/corpus" 2>&1 | tail -n 12
# The run records a worker hands the writer (workers/wk_record.h).
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE -I"$src" \
	"$src/tests/fuzz/fuzz_record.c" "$src"/workers/wk_record.c "$src"/protocol/proto_{packet,error,crc32c}.c \
	-o "$out/fuzz-record"
mkdir -p "$out/corpus-record"
"$out/fuzz-record" -max_total_time="$secs" -print_final_stats=1 "$out/corpus-record" 2>&1 | tail -n 12
