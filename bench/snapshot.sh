#!/usr/bin/env bash
# Snapshot/restore bandwidth against dd with O_DIRECT, on the same filesystem,
# in one run.  Usage: bench/snapshot.sh [DIR on a real disk] [GUEST SIZE]
# Prints pageferry's bandwidth for the bytes it had to move as a ratio of dd's.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-/var/tmp}
SIZE=${2:-4G}
PF=./build/pageferry
[ -x "$PF" ] || { echo "build first: ./run.sh demo" >&2; exit 1; }
WORK=$(mktemp -d "$DIR/pf-bench-XXXXXX")
SHM=$(mktemp -d /dev/shm/pf-bench-XXXXXX)
trap 'rm -rf "$WORK" "$SHM"' EXIT
MIB=$(( $(numfmt --from=iec "$SIZE") / 1048576 ))

mibs() { /usr/bin/python3 -c "import sys; print(round(float(sys.argv[1]) / float(sys.argv[2]), 2))" "$@"; }

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r), $(df -T "$DIR" | awk 'NR==2{print $2}') at $DIR"
# dd reference: write and read $MIB MiB with O_DIRECT, 1 MiB blocks
t0=$(date +%s.%N); dd if=/dev/zero of="$WORK/dd" bs=1M count="$MIB" oflag=direct conv=fdatasync status=none; t1=$(date +%s.%N)
DDW=$(mibs "$MIB" "$(echo "$t1 - $t0" | bc)")
t0=$(date +%s.%N); dd if="$WORK/dd" of=/dev/null bs=1M iflag=direct status=none; t1=$(date +%s.%N)
DDR=$(mibs "$MIB" "$(echo "$t1 - $t0" | bc)")
rm -f "$WORK/dd"
echo "dd oflag=direct bs=1M: write $DDW MiB/s, read $DDR MiB/s"

for pattern in mixed random; do
	"$PF" mkguest "$pattern" "$SIZE" "$SHM/guest.ram"
	S=$("$PF" snapshot --guest "$SHM/guest.ram" --out "$WORK/snap.pfs" --json)
	W=$(/usr/bin/python3 -c "import json,sys; print(json.loads(sys.argv[1])['write_mib_per_s'])" "$S")
	# Touch the destination first: this VM's host reclaims free memory, and
	# first-touch costs would be charged to restore alone (design.md, 'A trap').
	"$PF" mkguest zero "$SIZE" "$SHM/restored.ram" && rm -f "$SHM/restored.ram"
	R=$("$PF" restore "$WORK/snap.pfs" --into "$SHM/restored.ram" --json)
	RR=$(/usr/bin/python3 -c "import json,sys; print(json.loads(sys.argv[1])['read_mib_per_s'])" "$R")
	"$PF" verify "$SHM/guest.ram" "$SHM/restored.ram" >/dev/null
	echo "$pattern $SIZE: snapshot writes $W MiB/s (ratio to dd $(mibs "$W" "$DDW")), restore reads $RR MiB/s (ratio to dd $(mibs "$RR" "$DDR"))"
	# Second reference: the same scattered writes and reads, 128 in flight,
	# with nothing but the disk in the way (bench/scatter_ref.c).
	read -r SW SR < <(./build/bench/pf-scatter-ref "$SHM/guest.ram" "$WORK/scatter" 128)
	echo "$pattern $SIZE: same writes/reads alone (pf-scatter-ref, depth 128): $SW / $SR MiB/s; pageferry's ratio to them $(mibs "$W" "$SW") / $(mibs "$RR" "$SR")"
	rm -f "$SHM"/*.ram "$WORK/snap.pfs"
done
