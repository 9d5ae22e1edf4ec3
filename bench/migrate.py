#!/usr/bin/python3
"""Migration throughput and CPU cost against iperf3 and QEMU, in one run, as ratios:

  - iperf3, one stream over loopback, before and after the rows: the link's
    reference bandwidth (their mean), and what moving a GiB costs the whole
    machine in CPU-seconds;
  - `zstd -b1` on (up to) 1 GiB of each guest, one core: the reference for
    zstd rows (their bytes on the wire are few; what bounds them is
    compression);
  - pageferry migrate -> receive over loopback, and QEMU 10 multifd migrating
    the same RAM image (bench/qemu_migrate.py, max-bandwidth set far above the
    link), for each guest, destination kind, compression (none, zstd:1),
    channel count, pageferry --zerocopy mode and TLS (none, or psk: both
    with a pre-shared key, QEMU through tls-creds-psk objects, each preferring
    AES-128-GCM in TLS 1.3).

Every row runs --reps times per program, interleaved (pageferry, QEMU, then
QEMU, pageferry, ...: this VM's speed drifts within minutes), and reports the
median with the min-max range.  Time is end to end on a wall clock: for
pageferry from launching `migrate` (its receiver already listening) to its
exit, which follows the receiver's confirmation; for QEMU from its `migrate`
command (its destination already waiting) to the destination leaving
`inmigrate`.  CPU-seconds: pageferry's two commands over their whole lives
(supervisors and every stage, from wait4), QEMU's two processes over the
migration.  Both destinations are checked bit-exact against the guest after
each run.

Destinations (bench/destination.py; design.md §4, the first-touch trap) are
the same condition for both programs and checked (allocated blocks) before
each run: prealloc = zeros written over a file of the guest's size
(pageferry receive --in-place, QEMU loads into it with prealloc=on); fresh =
memory the migration touches first.  iperf3 reuses one warm buffer, so the
prealloc rows are the ones to hold against it.  For every pageferry run it
also records how busy the whole machine was (/proc/stat) and its CPU-seconds
per GiB sent: beside iperf3's, that says whether a row is bound by the CPU
it needs or waits on something.
Prints the estimated duration first, a line per run and per row, writes
JSON (DIR/migrate-bench.json) and a PNG chart.

usage: bench/migrate.py [--size 1G] [--patterns mixed,random,zero,text]
         [--dest prealloc,fresh] [--compress none,zstd] [--channels 2]
         [--zerocopy off] [--tls none,psk] [--reps 3] [--pageferry build/pageferry]
         [--out DIR]
"""
import argparse
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import destination
import ports
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
    if rx.poll() is not None:
        rx.finish()
        raise RuntimeError(f"the receiver exited: {rx.stderr.strip()[-300:]}")
    raise RuntimeError("the receiver did not start listening")


class Command:
    """A command whose output goes to files and whose CPU is read from
    wait4: the process's own and that of every process it reaped (a
    pageferry front end reaps its stages).  Reaped only here, never by
    Popen, so that the rusage is not lost."""

    def __init__(self, argv):
        self.out, self.err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=self.err, text=True)
        self.returncode = None

    def _wait(self, flags):
        if self.returncode is None:
            pid, status, ru = os.wait4(self.proc.pid, flags)
            if pid:
                self.returncode = self.proc.returncode = os.waitstatus_to_exitcode(status)
                self.cpu = ru.ru_utime + ru.ru_stime
        return self.returncode

    def poll(self):
        return self._wait(os.WNOHANG)

    def finish(self):
        self._wait(0)
        self.out.seek(0)
        self.err.seek(0)
        self.stdout, self.stderr = self.out.read(), self.err.read()
        self.out.close()
        self.err.close()
        return self


def verify(guest, dest):
    return subprocess.run([PF, "verify", guest, dest], capture_output=True).returncode == 0


def pageferry(guest, channels, compress, zerocopy, dest, tls="none", zeroed=False, vm=False):
    """One pageferry receive + migrate of `guest` into a `dest` destination
    (destination.KINDS); compress is none or zstd (level 1); tls none or psk;
    zeroed: tell the receiver a prealloc destination reads as zeros, as
    QEMU's destination assumes of its RAM (receive --zeroed); vm: move the
    whole VM as QEMU's rows do (qemu_migrate.run): a QEMU never started whose
    RAM is `guest`, `migrate --qmp`, to `receive --qmp --no-resume` into a
    QEMU waiting with -incoming defer whose RAM is the destination (with
    prealloc=on for prealloc); their CPU over the migration counts too."""
    into = guest + ".dst"
    size = os.path.getsize(guest)
    destination.prepare(into, size, dest, sparse_file=False)
    allocated = destination.check(into, size, dest)
    try:
        with qemu_migrate.qemus(*([(guest, False, False), (into, True, dest == "prealloc")] if vm else [])) as (
                qmp, qemu_cpu):
            c0 = qemu_cpu()
            r = _pageferry(guest, into, channels, compress, zerocopy, dest, tls, zeroed, allocated, qmp)
            r["cpu_qemu"] = qemu_cpu() - c0
            r["cpu"] += r["cpu_qemu"]
            return r
    finally:
        destination.remove(into)


def _pageferry(guest, into, channels, compress, zerocopy, dest, tls, zeroed, allocated, qmp):
    """pageferry() with its destination ready; qmp: the (source,
    destination) QMP sockets of a vm run, empty otherwise."""
    port = ports.free_port()
    creds = ["--psk-file", qemu_migrate.psk_file()] if tls == "psk" else []
    source = ["--qmp", qmp[0]] if qmp else ["--guest", guest]
    target = ["--qmp", qmp[1], "--no-resume"] if qmp else ["--into", into] + (
        ["--in-place"] if dest == "prealloc" else [])
    rx = Command([PF, "receive", "--listen", f"127.0.0.1:{port}", "--workers", "2", "--json",
                  "--accept-timeout", "30"] + target + (["--zeroed"] if zeroed and dest == "prealloc" else []) + creds)
    try:
        wait_listening(port, rx)
    except RuntimeError:
        if rx.poll() is None:
            rx.proc.kill()
            rx.finish()
        raise
    tx, window, busy, load = machine_load(lambda: Command(
        [PF, "migrate"] + source + ["--to", f"tcp:127.0.0.1:{port}", "--channels", str(channels),
         "--compress", "zstd:1" if compress == "zstd" else compress, "--zerocopy", zerocopy,
         "--workers", "2", "--json"] + creds).finish())
    rx.finish()
    if tx.returncode or rx.returncode:
        raise RuntimeError(f"pageferry failed: {tx.stderr.strip()[-300:]} {rx.stderr.strip()[-300:]}".strip())
    ok = verify(guest, into)
    s, r = json.loads(tx.stdout), json.loads(rx.stdout)
    return {"seconds": window[1] - window[0], "self_seconds": s["seconds"], "bytes_sent": s["bytes_sent"],
            "cpu": tx.cpu + rx.cpu, "cpu_src": tx.cpu, "cpu_dst": rx.cpu,
            "cpu_stages": sum(s["cpu_seconds"].values()) + sum(r["cpu_seconds"].values()),
            "zc_copied": s["zerocopy"]["copied_by_kernel"], "zc_sends": s["zerocopy"]["sends"], "verified": ok,
            "machine_busy": load,
            "machine_cpu_s_per_gib_sent": busy / (s["bytes_sent"] / 2**30) if s["bytes_sent"] else None,
            "migrate_window": window, "dest_allocated_before": allocated,
            "unchanged_guest": s["unchanged_guest"]}


def qemu(guest, channels, compress, zerocopy, dest, tls="none"):
    """One QEMU migration of the same image into the same kind of destination."""
    into = guest + ".dst"
    try:
        q = qemu_migrate.run(guest, into, channels, compress, zerocopy, ports.free_port(), dest,
                             tls=tls)
        q["verified"] = verify(guest, into)
        return q
    finally:
        destination.remove(into)


# Medians and ranges of these; the rest of a summary comes from the median run.
SUMMED = ("seconds", "cpu", "cpu_src", "cpu_dst", "self_seconds", "qemu_total_time_s", "machine_busy",
          "machine_cpu_s_per_gib_sent")


def summarize(runs):
    """The median run's fields, the median and [min, max] of each SUMMED
    figure, verified only if every run was, and the runs themselves."""
    if any("error" in r for r in runs):
        return {"error": next(r["error"] for r in runs if "error" in r), "runs": runs}
    by_time = sorted(runs, key=lambda r: r["seconds"])
    out = dict(by_time[len(by_time) // 2])
    for k in SUMMED:
        if all(r.get(k) is not None for r in runs):
            vals = [r[k] for r in runs]
            out[k] = statistics.median(vals)
            out[k + "_range"] = [min(vals), max(vals)]
    out["verified"] = all(r.get("verified") for r in runs)
    out["runs"] = runs
    return out


def estimate_s(gib, patterns, rows, reps):
    """A guess from runs on this 2-core VM (prepare + run + verify + QEMU's
    start-up), to say at the start what the chosen matrix will cost."""
    per_pattern = 3 + 18 * gib  # mkguest, zstd -b1 three rounds
    per_pair = 2 + 8 * gib  # one pageferry and one QEMU run, prepared and verified
    return 12 + patterns * per_pattern + rows * reps * per_pair


def fmt_range(d, key, scale=1.0, prec=2):
    lo, hi = d.get(key + "_range", [d[key], d[key]])
    return f"{d[key] / scale:.{prec}f} [{lo / scale:.{prec}f}-{hi / scale:.{prec}f}]"


def main():
    global PF
    ap = argparse.ArgumentParser(description="pageferry vs iperf3 and QEMU multifd; see the module docstring")
    ap.add_argument("--size", default="1G")
    ap.add_argument("--out", default=os.path.join(ROOT, "doc"))
    ap.add_argument("--patterns", default="mixed,random,zero,text")
    ap.add_argument("--dest", default="prealloc,fresh", help="destination kinds: prealloc, fresh")
    ap.add_argument("--compress", default="none,zstd", help="none, zstd (level 1)")
    ap.add_argument("--channels", default="2", help="channel counts, e.g. 1,2,4")
    ap.add_argument("--zerocopy", default="off", help="pageferry --zerocopy modes, e.g. off,sendfile,on,auto")
    ap.add_argument("--qemu-zerocopy", action="store_true", help="QEMU zero-copy-send on uncompressed rows")
    ap.add_argument("--tls", default="none", help="none, psk (TLS 1.3 with a pre-shared key on both programs)")
    ap.add_argument("--reps", type=int, default=3, help="runs of each program per row (median, range)")
    ap.add_argument("--pageferry", default=PF, help="the pageferry command to measure")
    args = ap.parse_args()
    PF = os.path.abspath(args.pageferry)
    size = int(subprocess.run(["numfmt", "--from=iec", args.size], capture_output=True, text=True,
                              check=True).stdout)
    gib = size / (1 << 30)
    patterns = args.patterns.split(",")
    dests = args.dest.split(",")
    for d in dests:
        if d not in destination.KINDS:
            sys.exit(f"--dest {d}: expected {', '.join(destination.KINDS)}")
    matrix = list(itertools.product(dests, args.compress.split(","), [int(c) for c in args.channels.split(",")],
                                    args.zerocopy.split(","), args.tls.split(",")))
    rows_total = len(patterns) * len(matrix)
    est = estimate_s(gib, len(patterns), rows_total, args.reps)
    t_start = time.monotonic()
    print(f"{rows_total} rows x {args.reps} runs of each program, {args.size} guests, {PF}: "
          f"estimated {est / 60:.0f} min", flush=True)
    iperf_start = iperf3()
    print(f"iperf3 loopback, one stream, before: {iperf_start['bytes_per_s'] / 2**20:.0f} MiB/s, "
          f"{iperf_start['machine_cpu_s_per_gib']:.2f} machine CPU-s per GiB, "
          f"{iperf_start['machine_busy'] * 100:.0f}% of the machine busy", flush=True)
    # The reference for this run's rows: the mean of this reading and one
    # taken after them (this VM's loopback moves by tens of percent).
    link = iperf_start["bytes_per_s"]
    rows, zstd_ref, qemu_params_shown = [], {}, False
    for pattern in patterns:
        guest = os.path.join(SHM, f"pf-bench-{pattern}.ram")
        subprocess.run([PF, "mkguest", pattern, args.size, guest], check=True)
        try:
            zstd_ref[pattern] = zstd_bench(guest)
            print(f"zstd -b1, one core, {pattern} guest: {zstd_ref[pattern] / 2**20:.0f} MiB/s", flush=True)
            for dest, compress, channels, zc, tls in matrix:
                runs = {"pf": [], "qemu": []}
                for rep in range(args.reps):
                    order = ("pf", "qemu") if rep % 2 == 0 else ("qemu", "pf")
                    for prog in order:
                        try:
                            if prog == "pf":
                                r = pageferry(guest, channels, compress, zc, dest, tls)
                            else:
                                r = qemu(guest, channels, compress, args.qemu_zerocopy and tls == "none", dest, tls)
                        except RuntimeError as e:
                            r = {"error": str(e)}
                        runs[prog].append(r)
                        if "error" in r:
                            print(f"  run {rep + 1} {prog}: FAILED: {r['error']}", flush=True)
                            continue
                        own = r.get("self_seconds", r.get("qemu_total_time_s"))
                        print(f"  run {rep + 1} {prog:4}: {r['seconds']:.2f} s ({own:.2f} s by its own count), "
                              f"{r['cpu']:.2f} cpu-s, dest allocated "
                              f"before {r['dest_allocated_before'] >> 20} MiB"
                              f"{'' if r['verified'] else ', VERIFY FAILED'}", flush=True)
                        if prog == "qemu" and not qemu_params_shown:
                            print(f"  QEMU {'.'.join(str(r['version'][k]) for k in ('major', 'minor', 'micro'))} query-migrate-parameters: " +
                                  ", ".join(f"{k}={v}" for k, v in r["params"].items()) +
                                  "; capabilities: " + ", ".join(f"{k}={v}" for k, v in r["capabilities"].items()),
                                  flush=True)
                            qemu_params_shown = True
                p, q = summarize(runs["pf"]), summarize(runs["qemu"])
                rows.append({"pattern": pattern, "dest": dest, "compress": compress, "channels": channels,
                             "zerocopy": zc, "tls": tls, "pf": p, "qemu": q})
                label = f"{pattern:6} {dest:8} {compress:4} ch={channels} zc={zc:8} tls={tls:4}"
                if "error" in p:
                    print(f"{label}: pageferry FAILED: {p['error']}", flush=True)
                    continue
                sent_rate = p["bytes_sent"] / p["seconds"]
                if compress == "none":
                    ref = f"sent {sent_rate / 2**20:.0f} MiB/s = {sent_rate / link:.2f} of iperf3"
                else:
                    guest_rate = size / p["seconds"]
                    ref = f"guest {guest_rate / 2**20:.0f} MiB/s = {guest_rate / zstd_ref[pattern]:.2f} of zstd -b1"
                qtxt = (f"QEMU {fmt_range(q, 'seconds')} s {fmt_range(q, 'cpu', gib)} cpu-s/GiB  "
                        f"QEMU/pageferry time {q['seconds'] / p['seconds']:.2f}x"
                        f"{'' if q['verified'] else ' (QEMU VERIFY FAILED)'}"
                        if "error" not in q else f"QEMU: {q['error']}")
                per_sent = (f" {p['machine_cpu_s_per_gib_sent']:.2f} cpu-s/GiB sent"
                            if p.get("machine_cpu_s_per_gib_sent") is not None else "")
                done = len(rows)
                spent = time.monotonic() - t_start
                print(f"{label}: pageferry {fmt_range(p, 'seconds')} s {fmt_range(p, 'cpu', gib)} cpu-s/GiB, {ref}, "
      f"machine {p['machine_busy'] * 100:.0f}% busy{per_sent} "
                      f"{'' if p['verified'] else '(VERIFY FAILED) '}| {qtxt}  "
                      f"[{done}/{rows_total} rows, {spent / 60:.1f} min, "
                      f"~{spent / done * (rows_total - done) / 60:.1f} min left]", flush=True)
        finally:
            os.unlink(guest)
    iperf_end = iperf3()
    link = (iperf_start["bytes_per_s"] + iperf_end["bytes_per_s"]) / 2
    print(f"iperf3 loopback, one stream, after: {iperf_end['bytes_per_s'] / 2**20:.0f} MiB/s, "
          f"{iperf_end['machine_cpu_s_per_gib']:.2f} machine CPU-s per GiB; mean of both {link / 2**20:.0f} MiB/s "
          f"(the rows above used the first); {(time.monotonic() - t_start) / 60:.1f} min in all")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "migrate-bench.json"), "w") as f:
        json.dump({"iperf3_bytes_per_s": link, "iperf3_runs": [iperf_start, iperf_end], "cpus": os.cpu_count(),
                   "zstd_b1_bytes_per_s": zstd_ref, "size": args.size, "reps": args.reps,
                   "timing": "wall clock, end to end; median of reps, [min, max]", "rows": rows}, f, indent=1)
    chart(rows, link, os.path.join(args.out, "migrate-throughput.png"), args.size)


def chart(rows, link, path, size):
    """One panel per guest, a pair of bars (median, min-max whiskers) per
    destination, compression, channel count and zerocopy mode."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no chart")
        return
    panels = list(dict.fromkeys(r["pattern"] for r in rows))
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 3.0 * len(panels)), squeeze=False)
    for ax, pattern in zip(axes[:, 0], panels):
        sel = [r for r in rows if r["pattern"] == pattern]
        x = range(len(sel))
        for shift, prog, name in ((-0.2, "pf", "pageferry"), (0.2, "qemu", "QEMU multifd")):
            med = [r[prog].get("seconds", 0) for r in sel]
            rng = [r[prog].get("seconds_range", [m, m]) for r, m in zip(sel, med)]
            ax.bar([i + shift for i in x], med, 0.4, label=name,
                   yerr=[[m - lo for m, (lo, _) in zip(med, rng)], [hi - m for m, (_, hi) in zip(med, rng)]],
                   capsize=2)
        ax.set_xticks(list(x))
        ax.set_xticklabels([f"{r.get('dest', 'fresh')} {r['compress']}\nch{r['channels']} {r['zerocopy']}"
                            for r in sel], fontsize=7)
        ax.set_ylabel("seconds (lower is better)", fontsize=8)
        ax.set_title(f"{pattern} guest", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{size} guest over loopback, median and min-max; "
                 f"iperf3 one stream: {link / 2**20:.0f} MiB/s (mean of two runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"chart: {path}")

if __name__ == "__main__":
    main()
