#!/usr/bin/python3
"""What the page-data checksums (CRC-32C per extent, issue 12 item 4) and the
end-of-copy re-check of the guest (item 5) cost, against whole snapshot and
restore runs.  The product has no switch that turns them off, so their
passes are timed apart (bench/crc_cost.c, one core, guest in memory) and
set against the measured runs:

  snapshot: the workers' extra CRC work plus their re-check (zero check +
            CRC of every data page once more), both spread over the workers;
  restore:  the verification pass (CRC of every stored page), spread over
            the reader threads.
  check:    the whole `pageferry check` run, for reference.

usage: bench/checksum_cost.py [--build DIR] [--size 1G] [--patterns random,mixed,...]
       [--disk DIR] [--workers N] [--reps N]
Prints one JSON object per pattern, then a table.  Run it with nothing else
running; the lead runs the real sizes (a smoke run: --size 64M)."""
import argparse
import json
import os
import shutil
import subprocess
import tempfile


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(here, "..", "build"))
    ap.add_argument("--size", default="1G")
    ap.add_argument("--patterns", default="random,text,mixed,sparse")
    ap.add_argument("--disk", default="/var/tmp")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    pf = os.path.join(a.build, "pageferry")
    tool = os.path.join(a.build, "bench", "pf-crc-cost")
    shm = tempfile.mkdtemp(prefix="pf-crc-", dir="/dev/shm")
    disk = tempfile.mkdtemp(prefix="pf-crc-", dir=a.disk)
    rows = []
    try:
        for pattern in a.patterns.split(","):
            guest = os.path.join(shm, pattern + ".ram")
            run([pf, "mkguest", pattern, a.size, guest])
            snap, into = os.path.join(disk, "s.pfs"), os.path.join(shm, "into.ram")
            t = {"snapshot": [], "restore": [], "check": []}
            for _ in range(a.reps):
                t["snapshot"].append(json.loads(run([pf, "snapshot", "--guest", guest, "--out", snap,
                                                     "--workers", str(a.workers), "--json"]))["seconds"])
                t["restore"].append(json.loads(run([pf, "restore", snap, "--into", into, "--workers",
                                                    str(a.workers), "--json"]))["seconds"])
                t["check"].append(json.loads(run([pf, "check", snap, "--workers", str(a.workers),
                                                  "--json"]))["seconds"])
                os.unlink(into)
            c = json.loads(run([tool, guest, str(a.reps)]))
            extra_workers = max(c["scan+crc_s"] - c["scan_s"], 0) / a.workers
            recheck = c["scan+crc_s"] / a.workers
            snap_s, rest_s = median(t["snapshot"]), median(t["restore"])
            row = {
                "pattern": pattern, "size": a.size, "workers": a.workers,
                "snapshot_s": snap_s, "restore_s": rest_s, "check_s": median(t["check"]),
                "crc_pass": c,
                "snapshot_crc_s": round(extra_workers, 4), "snapshot_recheck_s": round(recheck, 4),
                "snapshot_cost_pct": round(100 * (extra_workers + recheck) / snap_s, 1),
                "restore_verify_s": round(c["crc_s"] / a.workers, 4),
                "restore_cost_pct": round(100 * c["crc_s"] / a.workers / rest_s, 1),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
            os.unlink(snap)
            os.unlink(guest)
    finally:
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(disk, ignore_errors=True)
    print(f"\n{'pattern':8} {'snapshot s':>10} {'crc+recheck s':>13} {'cost':>6} {'restore s':>9} "
          f"{'verify s':>8} {'cost':>6} {'check s':>7}")
    for r in rows:
        print(f"{r['pattern']:8} {r['snapshot_s']:10.3f} {r['snapshot_crc_s'] + r['snapshot_recheck_s']:13.3f} "
              f"{r['snapshot_cost_pct']:5.1f}% {r['restore_s']:9.3f} {r['restore_verify_s']:8.3f} "
              f"{r['restore_cost_pct']:5.1f}% {r['check_s']:7.3f}")


if __name__ == "__main__":
    main()
