#!/usr/bin/env bash
# Do the fuzz targets catch real bugs?  Each line below breaks one rule in a
# copy of a decoder (the tree is not touched), builds the target that covers
# it against the copy and fuzzes it as the suite does, from the seeds.  A
# mutant the target does not catch within SECONDS is a target too weak to
# trust; doc/fuzzing.md lists the results.  Not part of the suite (about
# 30 runs of SECONDS each).
#   usage: tests/fuzz/mutants.sh BUILD_DIR [SECONDS]
# A mutant whose text no longer matches its source fails loudly: update it.
set -uo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
out=$(cd "$1" && pwd)/fuzz/mutants
secs=${2:-12}
# shellcheck disable=SC2034  # p: used by the sources table
p=$src/protocol
eval "$(sed -n '/^declare -A sources=(/,/^)$/p' "$src/tests/fuzz/run_fuzz.sh")"
rm -rf "$out"
mkdir -p "$out"
caught=0 missed=0

# NAME TARGET FILE OLD NEW: FILE (relative to the tree) with OLD replaced by NEW.
mutant() {
	local name=$1 t=$2 file=$3 dir=$out/$1
	mkdir -p "$dir"
	local srcs=()
	# shellcheck disable=SC2154  # sources: from run_fuzz.sh
	for f in ${sources[$t]}; do
		mkdir -p "$dir/$(dirname "${f#"$src"/}")"
		cp "$f" "$dir/${f#"$src"/}"
		srcs+=("$dir/${f#"$src"/}")
	done
	python3 - "$dir/$file" "$4" "$5" <<-'EOF' || exit 1
		import sys
		path, old, new = sys.argv[1:]
		s = open(path).read()
		if s.count(old) != 1:
		    sys.exit(f"{path}: the mutant's text occurs {s.count(old)} times, not once")
		open(path, "w").write(s.replace(old, new))
	EOF
	clang -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE \
		-I"$src" "$src/tests/fuzz/fuzz_$t.c" "${srcs[@]}" -lpthread -o "$dir/fuzz" || exit 1
	local seeds=()
	[ -d "$src/tests/fuzz/seeds/$t" ] && seeds=("$src/tests/fuzz/seeds/$t")
	mkdir -p "$dir/corpus"
	if "$dir/fuzz" -max_total_time="$secs" -error_exitcode=1 -artifact_prefix="$dir/" "$dir/corpus" \
		"${seeds[@]}" >"$dir/log" 2>&1; then
		missed=$((missed + 1))
		echo "MISSED $name ($t)"
	else
		caught=$((caught + 1))
		local at why
		at=$(grep -E '^#[0-9]+' "$dir/log" | tail -n 1 | grep -o '^#[0-9]*' || true)
		why=$(grep -m1 -E 'invariant broken|ERROR: AddressSanitizer|runtime error' "$dir/log" |
			sed 's|.*/tests/fuzz/||; s|==[0-9]*==||' | cut -c1-110)
		echo "caught $name ($t) after ${at:-loading the corpus}: $why"
	fi
}

P=protocol/proto_packet.c H=protocol/proto_handshake.c S=protocol/proto_snapfile.c
mutant sparse-tail packet $P 'if (valid < 64 && (w >> valid))' 'if (0)'
mutant sparse-count packet $P 'return set == present ? PROTO_OK' 'return set >= present ? PROTO_OK'
mutant page-bound packet $P 'p->n_pages > geo->guest_pages - p->first_page' \
	'p->n_pages > geo->guest_pages - p->first_page + 1'
mutant sparse-all packet $P '(p->payload_len - bitmap) / geo->page_size < p->n_pages ?' \
	'(p->payload_len - bitmap) / geo->page_size <= p->n_pages ?'
mutant zstd-len packet $P 'p->payload_len >= 1 && p->payload_len < raw ?' 'p->payload_len >= 1 && p->payload_len <= raw ?'
mutant control-first packet $P 'else if (p.first_page != 0)' 'else if (0)'
mutant end-crc packet $P 'if (get_le32(buf + 28) != proto_crc32c(0, buf, 28))' \
	'if (get_le32(buf + 28) != proto_crc32c(0, buf, 27))'
mutant result-status packet $P 'if (st >= _PROTO_E_MAX && st != PROTO_RESULT_LOCAL_FAILURE)' \
	'if (st > _PROTO_E_MAX && st != PROTO_RESULT_LOCAL_FAILURE)'
mutant hs-channel-id handshake $H 'if (h.channel_id >= h.n_channels ||' 'if (h.channel_id > h.n_channels ||'
mutant hs-reserved handshake $H 'if (!all_zero(buf + 48, 12))' 'if (!all_zero(buf + 48, 11))'
mutant hs-status handshake $H 'if (h.status >= _PROTO_E_MAX)' 'if (h.status > _PROTO_E_MAX)'
mutant hs-match-run handshake $H 'if (peer->geo.max_run_pages != ours->geo.max_run_pages)' 'if (0)'
mutant snap-extent-count snapfile $S 'if (h.extent_count > h.pages_present)' 'if (h.extent_count > h.pages_present + 1)'
mutant snap-file-size snapfile $S 'if (file_size < h.data_offset + h.guest_size)' \
	'if (file_size < h.data_offset + h.guest_size - 1)'
mutant snap-bitmap-tail snapfile $S 'for (uint64_t bit = h->n_pages; bit < h->bitmap_len * 8; bit++)' \
	'for (uint64_t bit = h->n_pages + 1; bit < h->bitmap_len * 8; bit++)'
mutant snap-extent-range snapfile $S 'e.n_pages > h->n_pages - e.first_page)' 'e.n_pages > h->n_pages - e.first_page + 1)'
mutant snap-overlap snapfile $S '		if (proto_bitmap_test(seen, p))
			return PROTO_E_EXTENT_OVERLAP;' ''
mutant snap-total snapfile $S 'if (total != h->pages_present)' 'if (total > h->pages_present)'
mutant table-crc-first snapfile dest/ds_extents.c '	if (crc != h->extent_crc)
		BAD(PROTO_E_EXTENT_CHECKSUM);' ''
mutant restore-short-read snapfile dest/ds_restore.c '(p - run) * page, r->hdr.data_offset + run * page, run);' \
	'(p - run - (p - run > 1)) * page, r->hdr.data_offset + run * page, run);'
mutant check-lowest-extent snapfile dest/ds_restore.c 'while ((cur == 0 || index + 1 < cur) &&' \
	'while ((cur == 0 || index + 1 > cur) &&'
mutant dirtylog-size snapfile protocol/proto_dirtylog.c 'if (file_size < proto_dirtylog_size(n_pages))' \
	'if (file_size + 8 < proto_dirtylog_size(n_pages))'
mutant dirtylog-offset snapfile protocol/proto_dirtylog.c 'if (get_le64(base + 24) != PROTO_DIRTYLOG_BITMAP_OFFSET)' 'if (0)'
mutant desc-zstd-len record protocol/proto_desc.c 'd.payload_len >= (uint64_t)d.n_pages * geo->page_size)))' \
	'd.payload_len > (uint64_t)d.n_pages * geo->page_size)))'
mutant desc-buffer record protocol/proto_desc.c '		if (d.buffer >= n_buffers)
			return PROTO_E_DESC_BUFFER;
		break;' '		break;'
mutant record-all-present record workers/wk_record.c 'return present > 0 && present < n_pages && extents == n_extents &&' \
	'return present > 0 && present <= n_pages && extents == n_extents &&'
mutant record-fingerprint record workers/wk_record.c 'if (f.chunk < lo || f.chunk > hi)' 'if (f.chunk < lo || f.chunk > hi + 1)'

echo "$caught caught, $missed missed"
[ "$missed" = 0 ]
