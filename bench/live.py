#!/usr/bin/python3
"""Live migration of a guestsim guest over loopback: total time, downtime,
rounds and bytes sent per guest byte, for dirty rates of 64 and 256 MiB/s,
uniform and hot-set, plus a chart of the dirty bytes left after each round.

usage: bench/live.py [--size 4G] [--out DIR] [--downtime-limit MS] [--zerocopy off|sendfile|on|auto]
"""
import argparse
import json
import os
import subprocess
import time

import ports

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PF = os.path.join(ROOT, "build", "pageferry")
SHM = "/dev/shm"


def run_one(size, rate, pattern, limit, zerocopy):
    ram, log, crc, dst = (os.path.join(SHM, f"pf-live-bench.{x}") for x in ("ram", "log", "crc", "dst"))
    for f in (crc, dst):
        if os.path.exists(f):
            os.unlink(f)
    sim = subprocess.Popen([PF, "guestsim", "--ram", ram, "--dirty-log", log, "--size", size, "--rate", str(rate),
                            "--pattern", pattern, "--checksum-file", crc], stdout=subprocess.PIPE, text=True)
    try:
        assert sim.stdout.readline().strip() == "ready"
        port = ports.free_port()
        rx = subprocess.Popen([PF, "receive", "--listen", f"127.0.0.1:{port}", "--into", dst, "--workers", "2",
                               "--accept-timeout", "30", "--json"], stdout=subprocess.PIPE, text=True)
        tx = subprocess.run([PF, "migrate", "--guest", ram, "--dirty-log", log, "--to", f"tcp:127.0.0.1:{port}",
                             "--channels", "2", "--workers", "2", "--downtime-limit", str(limit), "--zerocopy", zerocopy, "--json"],
                            capture_output=True, text=True)
        rx.communicate(timeout=120)
        if tx.returncode:
            return {"rate": rate, "pattern": pattern, "converged": False, "error": tx.stderr.strip()}
        s = json.loads(tx.stdout)
        for _ in range(600):
            if os.path.exists(crc):
                break
            time.sleep(0.05)
        same = open(crc).read().strip() == subprocess.run([PF, "checksum", dst], capture_output=True,
                                                          text=True).stdout.strip()
        return {"rate": rate, "pattern": pattern, "converged": True, "seconds": s["seconds"],
                "downtime_ms": s["live"]["downtime_ms"], "rounds": s["live"]["rounds"],
                "bytes_per_guest_byte": s["live"]["bytes_per_guest_byte"], "per_round": s["live"]["per_round"],
                "verified": same}
    finally:
        sim.terminate()
        sim.wait()
        for f in (ram, log, crc, dst):
            if os.path.exists(f):
                os.unlink(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="4G")
    ap.add_argument("--out", default=os.path.join(ROOT, "doc"))
    ap.add_argument("--downtime-limit", type=int, default=300)
    ap.add_argument("--zerocopy", default="off", help="migrate's send mode (its default: off, copies)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for rate in (64, 256):
        for pattern in ("uniform", "hot:256"):
            r = run_one(args.size, rate, pattern, args.downtime_limit, args.zerocopy)
            rows.append(r)
            if r["converged"]:
                print(f"{rate:4} MiB/s {pattern:8}: {r['seconds']:.2f} s total, downtime {r['downtime_ms']:.0f} ms "
                      f"(limit {args.downtime_limit}), {r['rounds']} rounds, {r['bytes_per_guest_byte']:.2f} bytes "
                      f"sent per guest byte, destination {'verified' if r['verified'] else 'DIFFERS'}", flush=True)
            else:
                print(f"{rate:4} MiB/s {pattern:8}: did not converge: {r['error']}", flush=True)
    with open(os.path.join(args.out, "live-bench.json"), "w") as f:
        json.dump({"size": args.size, "downtime_limit_ms": args.downtime_limit, "zerocopy": args.zerocopy,
                   "rows": rows}, f, indent=1)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in rows:
        if r["converged"]:
            ax.plot([x["round"] for x in r["per_round"]],
                    [x["dirty_pages"] * 4096 / 2**20 for x in r["per_round"]], marker="o",
                    label=f"{r['rate']} MiB/s {r['pattern']}")
    ax.set_xlabel("round")
    ax.set_ylabel("dirty MiB left after the round")
    ax.set_yscale("log")
    ax.set_title(f"{args.size} guestsim over loopback, downtime limit {args.downtime_limit} ms")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "live-dirty-per-round.png"), dpi=110)


if __name__ == "__main__":
    main()
