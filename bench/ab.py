#!/usr/bin/python3
"""Two pageferry builds side by side on the same images, interleaved: what a
change costs end to end (e.g. issue 12's checksums, re-check and handoff,
against the commit before them).

usage: bench/ab.py --a BUILD_DIR --b BUILD_DIR [--size 1G] [--patterns random,mixed]
                   [--reps 3] [--disk /var/tmp] [--mem-dir /dev/shm] [--jobs snapshot,restore,migrate]
                   [--restore-into fresh|prealloc]
                   [--tls psk] [--compress zstd]

Both builds must read each other's inputs only through their own commands:
each restores its own snapshot. Migrations are paused, over loopback, into a
pre-zeroed destination (--in-place), 2 channels. Times are each command's own
count ("seconds" of --json), runs alternate A,B,B,A,...; medians and ranges
are printed with the ratio B/A, and each command's CPU-seconds (the whole
command, front end and stages: its rusage; a migration's both ends). Before
each restore dd reads the same snapshot with O_DIRECT, 4 MiB at a time: the
reference for reading it. Build a baseline with
`git worktree add /tmp/pf-base COMMIT && meson setup /tmp/pf-base/build /tmp/pf-base && ninja -C /tmp/pf-base/build`."""
import argparse
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time

import destination


def children_cpu():
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def run(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))}: exit {r.returncode}: {r.stderr.strip()}")
    return json.loads(r.stdout) if r.stdout.strip().startswith("{") else r.stdout


def migrate(pf, guest, dest, port, rx_args, tx_args):
    destination.prepare(dest, os.path.getsize(guest), "prealloc")
    rx = subprocess.Popen([pf, "receive", "--listen", f"127.0.0.1:{port}", "--into", dest, "--in-place",
                           "--accept-timeout", "30", "--json"] + rx_args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    time.sleep(0.3)
    s = run([pf, "migrate", "--guest", guest, "--to", f"tcp:127.0.0.1:{port}", "--json"] + tx_args)
    out, err = rx.communicate(timeout=120)
    if rx.returncode != 0:
        raise SystemExit(f"receive: {err.strip()}")
    return s["seconds"]


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="baseline build dir")
    ap.add_argument("--b", required=True, help="build dir under test")
    ap.add_argument("--size", default="1G")
    ap.add_argument("--patterns", default="random,mixed")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--disk", default="/var/tmp")
    ap.add_argument("--mem-dir", default="/dev/shm", help="where guests and destinations live (a huge= tmpfs, say)")
    ap.add_argument("--restore-into", choices=("fresh", "prealloc"), default="fresh",
                    help="restore into a new file, or in place into a zeroed one (--in-place --zeroed)")
    ap.add_argument("--jobs", default="snapshot,restore,migrate")
    ap.add_argument("--tls", default="none", help="migrations: none, or psk (both ends, one key)")
    ap.add_argument("--compress", default="none", help="migrations: none or zstd")
    a = ap.parse_args()
    builds = {"A": os.path.join(a.a, "pageferry"), "B": os.path.join(a.b, "pageferry")}
    shm = tempfile.mkdtemp(prefix="pf-ab-", dir=a.mem_dir)
    disk = tempfile.mkdtemp(prefix="pf-ab-", dir=a.disk)
    jobs = a.jobs.split(",")
    rx_args, tx_args = [], ["--compress", a.compress]
    if a.tls == "psk":
        key = os.path.join(shm, "key.psk")
        with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(os.urandom(32))
        rx_args += ["--psk-file", key]
        tx_args += ["--psk-file", key]
    rows = []
    try:
        for pattern in a.patterns.split(","):
            guest = os.path.join(shm, pattern + ".ram")
            run([builds["B"], "mkguest", pattern, a.size, guest])
            t = {(j, k): [] for j in jobs + ["snapshot"] for k in builds}
            cpu = {(j, k): [] for j in jobs + ["snapshot"] for k in builds}
            dd = []

            def timed(j, k, fn):
                before = children_cpu()
                t[(j, k)].append(fn())
                cpu[(j, k)].append(children_cpu() - before)

            for rep in range(a.reps):
                for k in ("A", "B") if rep % 2 == 0 else ("B", "A"):
                    pf, snap, into = builds[k], os.path.join(disk, f"{k}.pfs"), os.path.join(shm, "into.ram")
                    if "snapshot" in jobs or "restore" in jobs:
                        timed("snapshot", k, lambda: run([pf, "snapshot", "--guest", guest, "--out", snap,
                                                          "--json"])["seconds"])
                    if "restore" in jobs:
                        # The reference: the same file read by dd with O_DIRECT.
                        start = time.monotonic()
                        subprocess.run(["dd", f"if={snap}", "of=/dev/null", "bs=4M", "iflag=direct",
                                        "status=none"], check=True)
                        dd.append(time.monotonic() - start)
                        # fresh: no file; prealloc: a waiting VMM's RAM, zeros written over it.
                        destination.prepare(into, os.path.getsize(guest), a.restore_into, sparse_file=False)
                        timed("restore", k, lambda: run([pf, "restore", snap, "--into", into, "--json"] + (
                            ["--in-place", "--zeroed"] if a.restore_into == "prealloc" else []))["seconds"])
                        os.unlink(into)
                    if "migrate" in jobs:
                        timed("migrate", k, lambda: migrate(pf, guest, into, 20000 + os.getpid() % 20000 + rep,
                                                            rx_args, tx_args))
                        os.unlink(into)
            for j in jobs:
                ma, mb = median(t[(j, "A")]), median(t[(j, "B")])
                row = {"pattern": pattern, "job": j, "size": a.size, "a_s": t[(j, "A")], "b_s": t[(j, "B")],
                       "a_median": ma, "b_median": mb, "b_over_a": round(mb / ma, 3),
                       "a_cpu": cpu[(j, "A")], "b_cpu": cpu[(j, "B")],
                       "a_cpu_median": median(cpu[(j, "A")]), "b_cpu_median": median(cpu[(j, "B")])}
                if j == "restore":
                    row["dd_direct_s"] = dd
                    row["dd_median"] = median(dd)
                rows.append(row)
                print(json.dumps(row), flush=True)
            os.unlink(guest)
    finally:
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(disk, ignore_errors=True)
    print(f"\n{'pattern':8} {'job':9} {'A median [range] s':>22} {'B median [range] s':>22} {'B/A':>6}"
          f" {'A cpu-s':>8} {'B cpu-s':>8}  reference")
    for r in rows:
        fa = f"{r['a_median']:.3f} [{min(r['a_s']):.3f}-{max(r['a_s']):.3f}]"
        fb = f"{r['b_median']:.3f} [{min(r['b_s']):.3f}-{max(r['b_s']):.3f}]"
        ref = (f"dd iflag=direct {r['dd_median']:.3f} [{min(r['dd_direct_s']):.3f}-{max(r['dd_direct_s']):.3f}] s"
               if "dd_median" in r else "")
        print(f"{r['pattern']:8} {r['job']:9} {fa:>22} {fb:>22} {r['b_over_a']:6.2f}"
              f" {r['a_cpu_median']:8.2f} {r['b_cpu_median']:8.2f}  {ref}")


if __name__ == "__main__":
    main()
