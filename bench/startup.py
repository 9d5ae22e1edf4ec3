#!/usr/bin/python3
"""What a pageferry command costs outside its transfer (issue 15, item 4):
interpreter start, imports, argument parsing, the summary and exit.

usage: bench/startup.py [--pageferry [LABEL=]PATH ...] [--runs 15] [--size 4M] [--disk /var/tmp]

For each pageferry given (default: build/pageferry), interleaved run by run
(the order of the builds alternates), on a mixed guest of --size in /dev/shm:
- receive: wall time from starting `pageferry receive --in-place` until its
  port listens (/proc/net/tcp polled every 0.5 ms);
- migrate: wall time of `pageferry migrate` to that receiver, exec to exit,
  against the "seconds" of its --json summary;
- snapshot (to --disk, a real disk as snapshots are meant for) and restore
  (into /dev/shm): wall time against their "seconds"; each makes a new
  file (replacing one adds what the filesystem takes to free the old one).
The "seconds" of a summary start when the command begins its job (before
the control segment is made and the stages are started) and end when every
stage has ended; what wall time adds to it is the fixed cost this measures.
The references, measured in the same runs, are `/usr/bin/python3 -c pass`
and `/usr/bin/python3 -IS -c pass` (the flags of pageferry's entry point):
the interpreter alone. Printed: median (min-max) in milliseconds.
Against an older tree: `git worktree add /tmp/pf-base COMMIT`, build it
(meson setup /tmp/pf-base/build /tmp/pf-base && ninja -C /tmp/pf-base/build),
then `--pageferry before=/tmp/pf-base/build/pageferry --pageferry after=build/pageferry`.
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

import ports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wall(cmd):
    """(milliseconds, stdout) of cmd run to completion; it must succeed."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ms = (time.perf_counter() - t0) * 1000
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    return ms, r.stdout


def listening(port):
    """Is a socket listening on 127.0.0.1:port (state 0A in /proc/net/tcp)?"""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":
                return True
    return False


def migrate_round(pf, guest, dest):
    """(ms until the receiver listens, migrate's wall ms, migrate's seconds in ms)."""
    port = ports.free_port()
    t0 = time.perf_counter()
    rx = subprocess.Popen([pf, "receive", "--listen", f"127.0.0.1:{port}", "--into", dest, "--in-place",
                           "--accept-timeout", "30", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    while not listening(port):
        if rx.poll() is not None or time.perf_counter() - t0 > 10:
            rx.kill()
            raise SystemExit(f"receive did not listen: {rx.communicate()[1].strip()}")
        time.sleep(0.0005)
    listen_ms = (time.perf_counter() - t0) * 1000
    time.sleep(0.05)  # let the receiver's inflaters start: not the sender's cost
    ms, out = wall([pf, "migrate", "--guest", guest, "--to", f"tcp:127.0.0.1:{port}", "--json"])
    _, err = rx.communicate(timeout=60)
    if rx.returncode != 0:
        raise SystemExit(f"receive: exit {rx.returncode}: {err.strip()}")
    return listen_ms, ms, json.loads(out)["seconds"] * 1000


def stats(xs):
    xs = sorted(xs)
    return f"{xs[len(xs) // 2]:6.1f} ({xs[0]:.1f}-{xs[-1]:.1f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pageferry", action="append", metavar="[LABEL=]PATH",
                    help="a pageferry command to measure (repeat to compare; default build/pageferry)")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--size", default="4M")
    ap.add_argument("--disk", default="/var/tmp", help="directory for the snapshots")
    a = ap.parse_args()
    builds = {}
    for spec in a.pageferry or [os.path.join(ROOT, "build", "pageferry")]:
        label, _, path = spec.rpartition("=")
        builds[label or path] = os.path.abspath(path)
    shm = tempfile.mkdtemp(prefix="pf-startup-", dir="/dev/shm")
    disk = tempfile.mkdtemp(prefix="pf-startup-", dir=a.disk)
    first = next(iter(builds.values()))
    guest = os.path.join(shm, "guest.ram")
    dest = os.path.join(shm, "dest.ram")
    restored = os.path.join(shm, "restored.ram")
    snap = os.path.join(disk, "guest.pfs")
    rows = ["python3 -c pass", "python3 -IS -c pass", "receive: exec to listening", "migrate: wall", "migrate: seconds",
            "migrate: added", "snapshot: wall", "snapshot: seconds", "snapshot: added", "restore: wall",
            "restore: seconds", "restore: added"]
    res = {b: {r: [] for r in rows} for b in builds}
    try:
        wall([first, "mkguest", "mixed", a.size, guest])
        shutil.copyfile(guest, dest)
        for i in range(a.runs):
            order = list(builds) if i % 2 == 0 else list(reversed(builds))
            for b in order:
                pf, r = builds[b], res[b]
                r["python3 -c pass"].append(wall(["/usr/bin/python3", "-c", "pass"])[0])
                r["python3 -IS -c pass"].append(wall(["/usr/bin/python3", "-IS", "-c", "pass"])[0])
                listen_ms, ms, secs = migrate_round(pf, guest, dest)
                r["receive: exec to listening"].append(listen_ms)
                for job, cmd, made in (("migrate", None, None),
                                       ("snapshot", [pf, "snapshot", "--guest", guest, "--out", snap, "--json"],
                                        snap),
                                       ("restore", [pf, "restore", snap, "--into", restored, "--json"],
                                        restored)):
                    if cmd:
                        # A new file each time: replacing one adds what the
                        # filesystem takes to free it (doc/benchmarks.md).
                        if os.path.exists(made):
                            os.unlink(made)
                        ms, out = wall(cmd)
                        secs = json.loads(out)["seconds"] * 1000
                    r[f"{job}: wall"].append(ms)
                    r[f"{job}: seconds"].append(secs)
                    r[f"{job}: added"].append(ms - secs)
        width = max(len(b) for b in builds)
        print(f"{a.runs} runs, {a.size} mixed guest, milliseconds: median (min-max); "
              f"added = wall - the summary's seconds")
        print(f"{'':28}" + "".join(f"{b:>{max(width, 22)}}  " for b in builds))
        for row in rows:
            print(f"{row:28}" + "".join(f"{stats(res[b][row]):>{max(width, 22)}}  " for b in builds))
    finally:
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(disk, ignore_errors=True)


if __name__ == "__main__":
    main()
