#!/usr/bin/python3
"""Where one migration's CPU goes: runs one pageferry receive + migrate over
loopback (as bench/migrate.py does) under `perf record -a`, then prints each
process kind's share of the samples on all cores while `migrate` ran (from
its launch to its exit, the receiver's set-up before excluded) and a
timeline of them in 100 ms steps: whether the cores were saturated, and by
whom.

usage: bench/profile.py PATTERN CHANNELS COMPRESS ZEROCOPY [DEST] [SIZE]
  e.g. bench/profile.py mixed 1 none sendfile prealloc 4G
Needs perf (Debian: linux-perf) for the running kernel.
"""
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time

import migrate

KINDS = (("idle", "swapper"), ("writer", "pageferry-write"), ("workers", "pageferry-worke"),
         ("receiver", "pageferry-recei"), ("inflaters", "pageferry-infla"), ("scanner", "pageferry-scann"),
         ("supervisors", "pageferry"))


def kind(comm):
    for name, prefix in KINDS:
        if comm.startswith(prefix):
            return name
    return "other"


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    pattern, channels, compress, zerocopy = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dest = sys.argv[5] if len(sys.argv) > 5 else "prealloc"
    size = sys.argv[6] if len(sys.argv) > 6 else "4G"
    guest = os.path.join(migrate.SHM, f"pf-profile-{pattern}.ram")
    subprocess.run([migrate.PF, "mkguest", pattern, size, guest], check=True)
    fd, data = tempfile.mkstemp(prefix="pf-profile-", suffix=".data")
    os.close(fd)
    try:
        # CLOCK_MONOTONIC timestamps: comparable with the window of the
        # `migrate` command that bench/migrate.py records.
        perf = subprocess.Popen(["perf", "record", "-a", "-k", "CLOCK_MONOTONIC", "-o", data],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        run = migrate.pageferry(guest, channels, compress, zerocopy, dest)
        perf.send_signal(signal.SIGINT)
        perf.wait()
        script = subprocess.run(["perf", "script", "-i", data, "-F", "comm,time"], capture_output=True,
                                text=True, check=True).stdout
    finally:
        os.unlink(guest)
        os.unlink(data)
    print(f"{pattern} {size}, {channels} channel(s), {compress}, --zerocopy {zerocopy}, {dest}: "
          f"{run['seconds']:.2f} s, machine {run['machine_busy'] * 100:.0f}% busy, verified {run['verified']}")
    begin, end = run["migrate_window"]
    samples = []
    for line in script.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        t = float(parts[-1].rstrip(":"))
        if begin <= t <= end:
            samples.append((t, kind(" ".join(parts[:-1]))))
    if not samples:
        sys.exit("perf recorded no samples")
    total = collections.Counter(k for _, k in samples)
    names = [n for n, _ in KINDS] + ["other"]
    print(f"samples while `migrate` ran ({end - begin:.2f} s):")
    print("share of all samples: " + ", ".join(f"{n} {100 * total[n] / len(samples):.1f}%" for n in names))
    steps = collections.defaultdict(collections.Counter)
    for t, k in samples:
        steps[int((t - begin) / 0.1)][k] += 1
    print("time s  " + " ".join(f"{n:>11}" for n in names) + "   (samples per 100 ms, all cores)")
    for step in sorted(steps):
        print(f"{step / 10:6.1f}  " + " ".join(f"{steps[step][n]:>11}" for n in names))


if __name__ == "__main__":
    main()
