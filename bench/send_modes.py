#!/usr/bin/python3
"""How the writer should hand guest pages to TCP: pageferry `migrate
--zerocopy` modes side by side, interleaved with QEMU's own migration of the
same image, over loopback.

Each rep runs every mode once and QEMU once, the order rotating from rep to
rep (this VM's speed drifts within minutes); a row reports each one's
median time and CPU-seconds with their ranges, and the ratio of QEMU's
median time to each mode's.  iperf3 (one stream) before and after is the
link's reference.  Runs are as bench/matrix.py's TCP rows: 2 channels,
pre-allocated destinations (`receive --zeroed` for pageferry, prealloc=on
for QEMU), and by default pageferry moves a never-started QEMU VM
(migrate --qmp) as QEMU does (--pageferry-moves file: the guest file).
Every destination is checked bit-exact.

usage: bench/send_modes.py [--modes off,sendfile,on] [--patterns random,text,mixed]
         [--compress none] [--size 1G] [--mem-dir /dev/shm] [--reps 5]
         [--pageferry-moves vm|file] [--pageferry build/pageferry] [--out FILE.json]
"""
import argparse
import json
import os
import subprocess
import sys

import migrate


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modes", default="off,sendfile,on")
    ap.add_argument("--patterns", default="random,text,mixed")
    ap.add_argument("--compress", default="none", help="none or zstd (level 1)")
    ap.add_argument("--size", default="1G")
    ap.add_argument("--mem-dir", default=migrate.SHM, help="where the guest images live (a huge= tmpfs, say)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--pageferry-moves", choices=("vm", "file"), default="vm")
    ap.add_argument("--pageferry", default=migrate.PF)
    ap.add_argument("--out", help="write every run as JSON here")
    args = ap.parse_args()
    migrate.PF = os.path.abspath(args.pageferry)
    modes, vm = args.modes.split(","), args.pageferry_moves == "vm"
    link = [migrate.iperf3()["bytes_per_s"]]
    print(f"iperf3 loopback, one stream, before: {link[0] / 2**20:.0f} MiB/s", flush=True)
    rows = []
    for pattern in args.patterns.split(","):
        guest = os.path.join(args.mem_dir, f"pf-sendmodes-{pattern}.ram")
        subprocess.run([migrate.PF, "mkguest", pattern, args.size, guest], check=True)
        runs = {m: [] for m in modes + ["qemu"]}
        try:
            for rep in range(args.reps):
                order = modes + ["qemu"]
                order = order[rep % len(order):] + order[:rep % len(order)]
                for who in order:
                    if who == "qemu":
                        r = migrate.qemu(guest, 2, args.compress, False, "prealloc")
                    else:
                        r = migrate.pageferry(guest, 2, args.compress, who, "prealloc", zeroed=True, vm=vm)
                    if not r["verified"]:
                        sys.exit(f"{pattern} {who}: the destination differs from the guest")
                    runs[who].append({"seconds": r["seconds"], "cpu": r["cpu"]})
                    print(f"  {pattern} {args.size} run {rep + 1} {who:8}: {r['seconds']:.3f} s, "
                          f"{r['cpu']:.2f} cpu-s", flush=True)
        finally:
            os.unlink(guest)
        sums = {who: migrate.summarize(runs[who]) for who in runs}
        for who in modes + ["qemu"]:
            d = sums[who]
            print(f"{pattern:6} {args.size} {args.compress:4} {who:8}: {migrate.fmt_range(d, 'seconds', prec=3)} s, "
                  f"{migrate.fmt_range(d, 'cpu', prec=3)} cpu-s, "
                  f"QEMU's time / this {sums['qemu']['seconds'] / d['seconds']:.2f}", flush=True)
        rows.append({"pattern": pattern, "size": args.size, "compress": args.compress, "runs": runs})
    link.append(migrate.iperf3()["bytes_per_s"])
    print(f"iperf3 loopback, one stream, after: {link[1] / 2**20:.0f} MiB/s", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "iperf3_bytes_per_s": link, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
