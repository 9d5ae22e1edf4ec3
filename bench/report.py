#!/usr/bin/python3
"""Markdown tables for doc/benchmarks.md from the JSON that bench/migrate.py
and bench/live.py write (doc/migrate-bench.json, doc/live-bench.json)."""
import json
import os
import sys

DOC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "doc")


def migrate():
    with open(os.path.join(DOC, "migrate-bench.json")) as f:
        d = json.load(f)
    link = d["iperf3_bytes_per_s"]
    gib = float(d["size"].rstrip("G"))
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
    print("| guest | destination | compress | channels | zerocopy | pageferry s | sent MiB/s | ratio to reference "
          "| pageferry CPU-s/GiB | machine busy | machine CPU-s per GiB sent | QEMU s | QEMU CPU-s/GiB "
          "| pageferry faster by | verified |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in d["rows"]:
        p, q = r["pf"], r["qemu"]
        rate = p["bytes_sent"] / p["seconds"]
        if r["compress"] == "none":
            ratio = f"{rate / link:.2f} of iperf3"
        elif r["pattern"] in zstd_ref:
            ratio = f"{gib * 2**30 / p['seconds'] / zstd_ref[r['pattern']]:.2f} of zstd -b1"
        else:
            ratio = f"{rate / link:.2f} of iperf3"
        qs = f"{q['seconds']:.2f}" if "seconds" in q else q.get("error", "?")
        qc = f"{q['cpu'] / gib:.2f}" if "cpu" in q else "—"
        sp = f"{q['seconds'] / p['seconds']:.2f}×" if "seconds" in q else "—"
        busy = f"{p['machine_busy'] * 100:.0f}%" if "machine_busy" in p else "—"
        per_sent = (f"{p['machine_cpu_s_per_gib_sent']:.2f}" if "machine_busy" in p and r["compress"] == "none"
                    else "—")
        print(f"| {r['pattern']} | {r.get('dest', 'fresh')} | {r['compress']} | {r['channels']} | {r['zerocopy']} | {p['seconds']:.2f} | "
              f"{rate / 2**20:.0f} | {ratio} | {p['cpu'] / gib:.2f} | {busy} | {per_sent} | {qs} | {qc} | {sp} | "
              f"{'yes' if p['verified'] else 'NO'} |")


def live():
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
