#!/usr/bin/python3
"""Markdown tables for doc/benchmarks.md from the JSON that bench/migrate.py
and bench/live.py write (doc/migrate-bench.json, doc/live-bench.json)."""
import json
import os
import subprocess
import sys

DOC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "doc")


def migrate():
    with open(os.path.join(DOC, "migrate-bench.json")) as f:
        d = json.load(f)
    link = d["iperf3_bytes_per_s"]
    gib = int(subprocess.run(["numfmt", "--from=iec", d["size"]], capture_output=True, text=True,
                         check=True).stdout) / 2**30
    zstd_ref = d.get("zstd_b1_bytes_per_s", {})
    runs = d.get("iperf3_runs", [])
    if runs:
        each = " and ".join(f"{x['bytes_per_s'] / 2**20:.0f}" for x in runs)
        cost = " and ".join(f"{x['machine_cpu_s_per_gib']:.2f}" for x in runs)
        print(f"iperf3, one stream over loopback: **{link / 2**20:.0f} MiB/s**, the mean of {each} MiB/s measured "
              f"before and after the rows; it costs the machine {cost} CPU-s per GiB sent "
              f"({d.get('cpus', '?')} cores). Guests of {d['size']}.")
    else:
        print(f"iperf3, one stream over loopback: **{link / 2**20:.0f} MiB/s**. Guests of {d['size']}.")
    for pattern, rate in zstd_ref.items():
        print(f"`zstd -b1`, one core, on the {pattern} guest: **{rate / 2**20:.0f} MiB/s** of guest bytes.")
    print("\nReference: compression none, bytes sent per second against iperf3; zstd, guest bytes handled per "
          "second against `zstd -b1` on one core.\n")
    if d.get("reps"):
        print(f"Each figure is the median of {d['reps']} runs of each program, interleaved, with the [min-max] "
              "range; time is end to end on a wall clock.\n")
    print("| guest | destination | compress | channels | zerocopy | TLS | pageferry s | sent MiB/s | ratio to reference "
          "| pageferry CPU-s/GiB | machine busy | machine CPU-s per GiB sent | QEMU s | QEMU CPU-s/GiB "
          "| QEMU s / pageferry s | verified |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    faster = clearly = cheaper = compared = 0
    for r in d["rows"]:
        p, q = r["pf"], r["qemu"]
        head = (f"| {r['pattern']} | {r.get('dest', 'fresh')} | {r['compress']} | {r['channels']} | {r['zerocopy']} "
                f"| {r.get('tls', 'none')} |")
        if "error" in p:
            print(f"{head} failed: {p['error']} | | | | | | | | | |")
            continue
        rate = p["bytes_sent"] / p["seconds"]
        if p["bytes_sent"] < gib * 2**30 / 100:
            ratio = "— (next to nothing sent)"
        elif r["compress"] == "none":
            ratio = f"{rate / link:.2f} of iperf3"
        elif r["pattern"] in zstd_ref:
            ratio = f"{gib * 2**30 / p['seconds'] / zstd_ref[r['pattern']]:.2f} of zstd -b1"
        else:
            ratio = f"{rate / link:.2f} of iperf3"
        qs = timed(q) if "seconds" in q else q.get("error", "?")
        qc = f"{q['cpu'] / gib:.2f}" if "cpu" in q else "—"
        sp = f"{q['seconds'] / p['seconds']:.2f}×" if "seconds" in q else "—"
        busy = f"{p['machine_busy'] * 100:.0f}%" if "machine_busy" in p else "—"
        per_sent = (f"{p['machine_cpu_s_per_gib_sent']:.2f}"
                    if p.get("machine_cpu_s_per_gib_sent") is not None and r["compress"] == "none" else "—")
        ok = p["verified"] and q.get("verified", True)
        print(f"{head} {timed(p)} | {rate / 2**20:.0f} | {ratio} | {p['cpu'] / gib:.2f} | {busy} | {per_sent} | "
              f"{qs} | {qc} | {sp} | {'yes' if ok else 'NO'} |")
        if "seconds" in q:
            compared += 1
            faster += p["seconds"] < q["seconds"]
            clearly += p.get("seconds_range", [0, p["seconds"]])[1] < q.get("seconds_range", [q["seconds"], 0])[0]
            cheaper += p["cpu"] < q["cpu"]
    print(f"\npageferry's median time is below QEMU's in {faster} of {compared} rows; its slowest run beats QEMU's "
          f"fastest in {clearly}; it uses fewer CPU-seconds in {cheaper} of {compared}.")


def timed(x):
    """Median seconds, with the [min-max] range when there were several runs."""
    lo, hi = x.get("seconds_range", [x["seconds"]] * 2)
    return f"{x['seconds']:.2f}" + (f" [{lo:.2f}-{hi:.2f}]" if hi > lo else "")

def live():
    if not os.path.exists(os.path.join(DOC, "live-bench.json")):
        return
    with open(os.path.join(DOC, "live-bench.json")) as f:
        d = json.load(f)
    print(f"\nGuest {d['size']}, downtime limit {d['downtime_limit_ms']} ms, 2 channels, 2 workers.\n")
    print("| dirty rate | pattern | total s | downtime ms | rounds | bytes sent / guest size | dirty MiB after each "
          "round | destination = guest at pause |")
    print("|---|---|---|---|---|---|---|---|")
    for r in d["rows"]:
        if not r["converged"]:
            print(f"| {r['rate']} MiB/s | {r['pattern']} | did not converge: {r['error']} | | | | | |")
            continue
        left = ", ".join(f"{x['dirty_pages'] * 4096 / 2**20:.0f}" for x in r["per_round"])
        print(f"| {r['rate']} MiB/s | {r['pattern']} | {r['seconds']:.2f} | {r['downtime_ms']:.0f} | {r['rounds']} | "
              f"{r['bytes_per_guest_byte']:.2f} | {left} | {'yes' if r['verified'] else 'NO'} |")


if __name__ == "__main__":
    migrate()
    live()
