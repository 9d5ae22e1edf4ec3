#!/usr/bin/python3
"""Migration throughput and CPU cost, in one run, as ratios:

  - iperf3, one stream over loopback, before and after the rows: the link's
    reference bandwidth (their mean), and what moving a GiB costs the whole
    machine in CPU-seconds;
  - `zstd -b1` on 1 GiB of each guest, one core: the reference for zstd rows
    (their bytes on the wire are few; what bounds them is compression);
  - pageferry migrate -> receive over loopback for each guest, compression
    (none, zstd:1), channel count (1, 2, 4) and how pages reach the socket
    (--zerocopy on = MSG_ZEROCOPY, sendfile, off = copies);
  - QEMU's multifd migrating the same RAM image with the same channels and
    compression (bench/qemu_migrate.py).

Guests are made in /dev/shm.  Destinations (design.md, "a trap when measuring
here") are, on both sides alike, either fresh files (the memory is touched
for the first time by the migration) or pre-allocated ones (zeros written
over the file first, as a destination VMM that pre-allocates its RAM does;
pageferry receives --in-place, QEMU loads into that file).  iperf3 reuses
one warm buffer, so the pre-allocated rows are the ones to hold against it.
For every pageferry row it also records how busy the whole machine was
(/proc/stat) and its CPU-seconds per GiB sent: beside iperf3's, that says
whether a row is bound by the CPU it needs or waits on something.
Prints a table, writes JSON and a PNG chart.
usage: bench/migrate.py [--size 4G] [--out DIR] [--dest prealloc,fresh]
"""
import argparse
import itertools
import json
import os
import random
import re
import subprocess
import sys
import time

import qemu_migrate

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PF = os.path.join(ROOT, "build", "pageferry")
SHM = "/dev/shm"


def machine_cpu():
    """(busy, total) CPU-seconds of the whole machine so far, all cores, from
    /proc/stat: what a command costs including the kernel's softirq work,
    which on loopback lands on whichever process happens to run."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / hz, sum(v[:8]) / hz


def machine_load(run):
    """Run `run()`; returns (its result, (start, end) CLOCK_MONOTONIC seconds,
    machine CPU-seconds busy meanwhile, fraction of all cores busy)."""
    b0, t0 = machine_cpu()
    window = [time.monotonic()]
    result = run()
    window.append(time.monotonic())
    b1, t1 = machine_cpu()
    return result, tuple(window), b1 - b0, (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0


def iperf3():
    """One stream over loopback: bytes per second, and what it costs the
    machine per GiB sent (sender, receiver and the kernel between them)."""
    srv = subprocess.Popen(["iperf3", "-s", "-1", "-p", "5299"], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    r, _, busy, load = machine_load(lambda: subprocess.run(
        ["iperf3", "-c", "127.0.0.1", "-p", "5299", "-t", "5", "-J"], capture_output=True, text=True, check=True))
    srv.wait(timeout=10)
    end = json.loads(r.stdout)["end"]["sum_received"]
    return {"bytes_per_s": end["bits_per_second"] / 8, "machine_cpu_s_per_gib": busy / (end["bytes"] / 2**30),
            "machine_busy": load}


def zstd_bench(guest):
    """Guest bytes per second that `zstd -b1` compresses on one core, on the
    guest's first GiB (the patterns repeat their mix throughout)."""
    sample = guest + ".sample"
    try:
        with open(guest, "rb") as src, open(sample, "wb") as dst:
            for _ in range(1024):
                dst.write(src.read(1 << 20))
        r = subprocess.run(["zstd", "-b1", "-i3", sample], capture_output=True, text=True, check=True)
    finally:
        os.unlink(sample)
    speeds = re.findall(r"\(x[\d.]+\),\s*([\d.]+) MB/s", r.stdout + r.stderr)
    if not speeds:
        raise RuntimeError(f"zstd -b1 printed no speed: {(r.stdout + r.stderr)[-200:]}")
    return float(speeds[-1]) * 1e6


def wait_listening(port, rx, timeout=60):
    """An in-place receiver maps its destination before it listens: start the
    clock only once it does, as a destination that was set up ahead would."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and rx.poll() is None:
        r = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True)
        if r.stdout.strip():
            return
        time.sleep(0.05)
    raise RuntimeError("the receiver did not start listening")


def pageferry(guest, channels, compress, zerocopy, dest):
    port = random.randint(20000, 60000)
    into = guest + ".dst"
    extra = []
    if dest == "prealloc":
        with open(into, "wb") as f:
            f.truncate(os.path.getsize(guest))
        qemu_migrate.prefill(into)
        extra = ["--in-place"]
    rx = subprocess.Popen([PF, "receive", "--listen", f"127.0.0.1:{port}", "--into", into, "--workers", "2",
                           "--json", "--accept-timeout", "30"] + extra, stdout=subprocess.PIPE, text=True)
    wait_listening(port, rx)
    tx, window, busy, load = machine_load(lambda: subprocess.run(
        [PF, "migrate", "--guest", guest, "--to", f"tcp:127.0.0.1:{port}", "--channels", str(channels),
         "--compress", compress, "--zerocopy", zerocopy, "--workers", "2", "--json"], capture_output=True, text=True))
    out, _ = rx.communicate(timeout=600)
    if tx.returncode or rx.returncode:
        raise RuntimeError(f"pageferry failed: {tx.stderr.strip()}")
    ok = subprocess.run([PF, "verify", guest, into], capture_output=True).returncode == 0
    os.unlink(into)
    s, r = json.loads(tx.stdout), json.loads(out)
    cpu = sum(s["cpu_seconds"].values()) + sum(r["cpu_seconds"].values())
    return {"seconds": s["seconds"], "bytes_sent": s["bytes_sent"], "cpu": cpu,
            "cpu_src": sum(s["cpu_seconds"].values()), "cpu_dst": sum(r["cpu_seconds"].values()),
            "zc_copied": s["zerocopy"]["copied_by_kernel"], "zc_sends": s["zerocopy"]["sends"], "verified": ok,
            "machine_busy": load, "machine_cpu_s_per_gib_sent": busy / (s["bytes_sent"] / 2**30),
            "migrate_window": window}


def qemu(guest, channels, compress, zerocopy, dest):
    port = random.randint(20000, 60000)
    dest = guest + ".qemu"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "qemu_migrate.py"), guest, dest,
                        str(channels), compress, "1" if zerocopy == "on" else "0", str(port), dest],
                       capture_output=True, text=True)
    if r.returncode:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"}
    q = json.loads(r.stdout)
    q["cpu"] = q["cpu_src"] + q["cpu_dst"]
    return q


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="4G")
    ap.add_argument("--out", default=os.path.join(ROOT, "doc"))
    ap.add_argument("--patterns", default="mixed,random")
    ap.add_argument("--dest", default="prealloc,fresh", help="destination kinds to run: prealloc, fresh")
    args = ap.parse_args()
    gib = int(subprocess.run(["numfmt", "--from=iec", args.size], capture_output=True, text=True).stdout) / (1 << 30)
    iperf_start = iperf3()
    print(f"iperf3 loopback, one stream, before: {iperf_start['bytes_per_s'] / 2**20:.0f} MiB/s, "
          f"{iperf_start['machine_cpu_s_per_gib']:.2f} machine CPU-s per GiB, "
          f"{iperf_start['machine_busy'] * 100:.0f}% of the machine busy", flush=True)
    # The reference for this run's rows: the mean of this reading and one
    # taken after them (this VM's loopback moves by tens of percent).
    link = iperf_start["bytes_per_s"]
    rows, zstd_ref = [], {}
    for pattern in args.patterns.split(","):
        guest = os.path.join(SHM, f"pf-bench-{pattern}.ram")
        subprocess.run([PF, "mkguest", pattern, args.size, guest], check=True)
        try:
            zstd_ref[pattern] = zstd_bench(guest)
            print(f"zstd -b1, one core, {pattern} guest: {zstd_ref[pattern] / 2**20:.0f} MiB/s", flush=True)
            for dest, compress, channels in itertools.product(args.dest.split(","), ("none", "zstd"), (1, 2, 4)):
                q = qemu(guest, channels, compress, "on", dest)
                for zc in ("on", "sendfile", "off"):
                    p = pageferry(guest, channels, compress, zc, dest)
                    row = {"pattern": pattern, "dest": dest, "compress": compress, "channels": channels,
                           "zerocopy": zc, "pf": p, "qemu": q}
                    rows.append(row)
                    sent_rate = p["bytes_sent"] / p["seconds"]
                    if compress == "none":
                        ref = f"sent {sent_rate / 2**20:.0f} MiB/s = {sent_rate / link:.2f} of iperf3"
                    else:
                        guest_rate = gib * 2**30 / p["seconds"]
                        ref = (f"guest {guest_rate / 2**20:.0f} MiB/s = {guest_rate / zstd_ref[pattern]:.2f} of "
                               f"zstd -b1")
                    qtxt = (f"QEMU {q['seconds']:.2f} s {q['cpu'] / gib:.2f} cpu-s/GiB  speed-up "
                            f"{q['seconds'] / p['seconds']:.2f}x" if "error" not in q else f"QEMU: {q['error']}")
                    print(f"{pattern:6} {dest:8} {compress:4} ch={channels} zc={zc:8}: pageferry {p['seconds']:.2f} s "
                          f"{p['cpu'] / gib:.2f} cpu-s/GiB, {ref}, machine {p['machine_busy'] * 100:.0f}% busy "
                          f"{p['machine_cpu_s_per_gib_sent']:.2f} cpu-s/GiB sent {'' if p['verified'] else '(VERIFY FAILED) '}"
                          f"| {qtxt}", flush=True)
        finally:
            os.unlink(guest)
    iperf_end = iperf3()
    link = (iperf_start["bytes_per_s"] + iperf_end["bytes_per_s"]) / 2
    print(f"iperf3 loopback, one stream, after: {iperf_end['bytes_per_s'] / 2**20:.0f} MiB/s, "
          f"{iperf_end['machine_cpu_s_per_gib']:.2f} machine CPU-s per GiB; mean of both {link / 2**20:.0f} MiB/s "
          f"(the rows above used the first)")
    with open(os.path.join(args.out, "migrate-bench.json"), "w") as f:
        json.dump({"iperf3_bytes_per_s": link, "iperf3_runs": [iperf_start, iperf_end], "cpus": os.cpu_count(),
                   "zstd_b1_bytes_per_s": zstd_ref, "size": args.size, "rows": rows}, f, indent=1)
    chart(rows, link, os.path.join(args.out, "migrate-throughput.png"), args.size)


def chart(rows, link, path, size):
    """One panel per guest and destination kind, a pair of bars per configuration."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no chart")
        return
    panels = sorted({(r["pattern"], r.get("dest", "fresh")) for r in rows})
    fig, axes = plt.subplots(len(panels), 1, figsize=(14, 3.2 * len(panels)), squeeze=False)
    for ax, (pattern, dest) in zip(axes[:, 0], panels):
        sel = [r for r in rows if r["pattern"] == pattern and r.get("dest", "fresh") == dest]
        x = range(len(sel))
        ax.bar([i - 0.2 for i in x], [r["pf"]["seconds"] for r in sel], 0.4, label="pageferry")
        ax.bar([i + 0.2 for i in x], [r["qemu"].get("seconds", 0) for r in sel], 0.4, label="QEMU multifd")
        ax.set_xticks(list(x))
        ax.set_xticklabels([f"{r['compress']} ch{r['channels']}\n{r['zerocopy']}" for r in sel], fontsize=7)
        ax.set_ylabel("seconds (lower is better)", fontsize=8)
        ax.set_title(f"{pattern} guest, {dest} destination", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{size} guest over loopback; iperf3 one stream: {link / 2**20:.0f} MiB/s (mean of two runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"chart: {path}")


if __name__ == "__main__":
    main()
