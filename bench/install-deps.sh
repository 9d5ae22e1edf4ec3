#!/usr/bin/env bash
# Installs what the benchmarks compare against, from Debian's archive only:
# iperf3 and matplotlib from bookworm, QEMU 10 (qemu-system-x86) from
# bookworm-backports (bench/install-qemu.sh, which run.sh uses too).
set -euo pipefail
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo

need=()
command -v iperf3 >/dev/null || need+=(iperf3)
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || need+=(python3-matplotlib)
if [ ${#need[@]} -gt 0 ]; then
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
"$(dirname "$0")/install-qemu.sh"
qemu-system-x86_64 --version | head -1
iperf3 --version | head -1
