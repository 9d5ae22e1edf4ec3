#!/usr/bin/env bash
# Installs QEMU 10 (qemu-system-x86) from Debian's bookworm-backports unless a
# QEMU 10 or later is already there: bookworm's own QEMU is 7.2, too old for
# what the QEMU tests and benchmarks use. Called by run.sh (tests) and
# bench/install-deps.sh (benchmarks), so that both install it the same way.
# Backports is enabled by adding that suite to the Debian source entry this
# machine already has (deb822 or one-line format); no host name is written
# anywhere. apt-get update runs only when QEMU has to be installed.
set -euo pipefail
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo

enable_backports() {
	local f=/etc/apt/sources.list.d/debian.sources
	if [ -f "$f" ]; then
		grep -q 'bookworm-backports' "$f" && return 0
		# The stanza whose Suites list plain "bookworm" gets the backports suite too.
		$sudo sed -i -E '/^Suites:/{/(^|[[:space:]])bookworm([[:space:]]|$)/s/$/ bookworm-backports/}' "$f"
	elif [ -f /etc/apt/sources.list ]; then
		grep -q 'bookworm-backports' /etc/apt/sources.list && return 0
		local line
		line=$(grep -E '^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+[[:space:]]+bookworm[[:space:]]' /etc/apt/sources.list | head -1)
		[ -n "$line" ] || { echo "no bookworm entry to extend in /etc/apt/sources.list" >&2; exit 1; }
		echo "${line/ bookworm / bookworm-backports }" | $sudo tee -a /etc/apt/sources.list >/dev/null
	else
		echo "no Debian source entry found to add bookworm-backports to" >&2
		exit 1
	fi
}

qemu-system-x86_64 --version 2>/dev/null | grep -qE 'version ([1-9][0-9])\.' && exit 0
echo "== installing: qemu-system-x86 (bookworm-backports)"
enable_backports
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
	-t bookworm-backports qemu-system-x86 >/dev/null
