#!/usr/bin/env bash
# pageferry's two entry points (see README.md):
#   ./run.sh demo   install what is missing, build, run the demo
#   ./run.sh test   install what is missing (QEMU 10 too), build, run every
#                   test (a normal build, then an AddressSanitizer+UBSan build)
set -euo pipefail
cd "$(dirname "$0")"

# Debian bookworm package names; build and tests use bookworm's own versions.
PACKAGES=(build-essential meson ninja-build pkg-config python3
          libzstd-dev liburcu-dev libseccomp-dev libcmocka-dev libgnutls28-dev
          zstd iproute2 e2fsprogs util-linux clang libclang-rt-14-dev
          gnutls-bin)

install_missing() {
	local missing=()
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "== installing: ${missing[*]}"
	local sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build() { # build DIR [meson options...]
	local dir=$1
	shift
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" "$@" >/dev/null
	else
		meson setup --reconfigure "$dir" "$@" >/dev/null
	fi
	if ! ninja -C "$dir" >"$dir/ninja.log" 2>&1; then
		cat "$dir/ninja.log" >&2
		echo "run.sh: build in $dir failed" >&2
		exit 1
	fi
}

case "${1:-}" in
demo)
	install_missing
	build build
	./build/pageferry demo
	;;
test)
	install_missing
	# QEMU 10 for tests/integration/test_qemu.py: from bookworm-backports.
	bench/install-qemu.sh
	build build -Dwerror=true -Dtest_hooks=true
	# Both builds run whatever the first gave, and the closing line is printed
	# either way; the exit status says whether anything failed.
	status=0
	echo "== tests (normal build)"
	meson test -C build --print-errorlogs --num-processes 2 || status=1
	echo "== tests (AddressSanitizer + UndefinedBehaviorSanitizer build)"
	build build-asan -Dwerror=true -Dtest_hooks=true -Db_sanitize=address,undefined -Db_lundef=false
	PF_TEST_QUICK=1 meson test -C build-asan --print-errorlogs --num-processes 2 || status=1
	# One plain closing line over both builds (each line of testlog.json is a test).
	python3 - build/meson-logs/testlog.json build-asan/meson-logs/testlog.json <<'PY'
import json, sys
ok = bad = skip = 0
for path in sys.argv[1:]:
    for line in open(path):
        r = json.loads(line)["result"]
        ok += r == "OK"
        skip += r == "SKIP"
        bad += r not in ("OK", "SKIP")
print(f"{ok} passed, {bad} failed, {skip} skipped")
PY
	exit $status
	;;
*)
	echo "usage: ./run.sh demo|test" >&2
	exit 2
	;;
esac
