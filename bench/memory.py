#!/usr/bin/python3
"""The pipeline's own memory, at several guest sizes: every pageferry
process of a job (front ends and stages), page tables included, the guest's
and the destination's pages not (they are the VM's, not ours).

For each size it runs, one after another, a snapshot (guest in /dev/shm,
file in --disk), a restore of it into /dev/shm, and a migration over
loopback (plain, and with a pre-shared key) into a fresh file in /dev/shm,
and samples every process whose command name starts with "pageferry" every
20 ms: the sum over them of Pss (from /proc/PID/smaps_rollup: memory shared
between our processes, the rings and arenas, is split between them, so the
sum counts it once) less the Pss of their mappings of the guest and the
destination, plus VmPTE (page tables). Reports the peak of that sum per job
and which process held the most at that moment.

Reading smaps costs the sampled processes time: this measures memory, never
speed.

usage: bench/memory.py [--sizes 1G,4G] [--pattern random] [--disk /var/tmp]
                       [--shm /dev/shm] [--dest-dir DIR]
                       [--pageferry build-bench/pageferry] [--out doc/memory-bench.json]

--shm holds the guest (a tmpfs big enough for the largest size: /dev/shm is
half the RAM); --dest-dir the restore's and the migrations' destination
(default: the same tmpfs; a directory on disk lets a guest of more than half
the RAM be measured, its pages then being page cache the kernel can write
back).
"""
import argparse
import json
import os
import subprocess
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def own_kib(pid, exclude):
    """Pss of every mapping but the guest's and the destination's, plus page
    tables, in KiB; None if the process is gone."""
    status = read(f"/proc/{pid}/status")
    smaps = read(f"/proc/{pid}/smaps")
    if not status or not smaps:
        return None
    pte = next((int(l.split()[1]) for l in status.splitlines() if l.startswith("VmPTE:")), 0)
    total, skip = 0, False
    for line in smaps.splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
            path = fields[5] if len(fields) >= 6 else ""
            skip = any(path.startswith(x) for x in exclude)
        elif fields and fields[0] == "Pss:" and not skip:
            total += int(fields[1])
    return total + pte


def ours():
    for pid in os.listdir("/proc"):
        if pid.isdigit() and read(f"/proc/{pid}/comm").startswith("pageferry"):
            yield int(pid), read(f"/proc/{pid}/comm").strip()


class Sampler(threading.Thread):
    def __init__(self, exclude):
        super().__init__(daemon=True)
        self.exclude, self.stop, self.peak, self.at_peak = exclude, False, 0, {}

    def run(self):
        while not self.stop:
            each = {}
            for pid, comm in ours():
                kib = own_kib(pid, self.exclude)
                if kib is not None:
                    each[f"{comm}[{pid}]"] = kib
            total = sum(each.values())
            if total > self.peak:
                self.peak, self.at_peak = total, each
            time.sleep(0.02)


def measured(cmd, exclude, background=None):
    s = Sampler(exclude)
    s.start()
    rx = subprocess.Popen(background, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) \
        if background else None
    if rx:
        time.sleep(0.5)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if rx:
        _, err = rx.communicate(timeout=600)
        if rx.returncode:
            raise SystemExit(f"receive: {err.strip()}")
    s.stop = True
    s.join()
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)}: {r.stderr.strip()}")
    top = max(s.at_peak.items(), key=lambda kv: kv[1]) if s.at_peak else ("-", 0)
    return {"peak_kib": s.peak, "largest": top[0], "largest_kib": top[1], "processes": s.at_peak}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1G,4G")
    ap.add_argument("--pattern", default="random")
    ap.add_argument("--disk", default="/var/tmp")
    ap.add_argument("--shm", default="/dev/shm")
    ap.add_argument("--dest-dir", default=None)
    ap.add_argument("--pageferry", default=os.path.join(ROOT, "build-bench", "pageferry"))
    ap.add_argument("--out", default=os.path.join(ROOT, "doc", "memory-bench.json"))
    a = ap.parse_args()
    pf = a.pageferry
    shm = tempfile.mkdtemp(prefix="pf-mem-", dir=a.shm)
    disk = tempfile.mkdtemp(prefix="pf-mem-", dir=a.disk)
    dest = tempfile.mkdtemp(prefix="pf-mem-", dir=a.dest_dir) if a.dest_dir else shm
    key = os.path.join(shm, "key")
    with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(os.urandom(32))
    rows = []
    try:
        for size in a.sizes.split(","):
            guest, snap, into = os.path.join(shm, "guest.ram"), os.path.join(disk, "s.pfs"), os.path.join(dest, "into.ram")
            subprocess.run([pf, "mkguest", a.pattern, size, guest], check=True, capture_output=True)
            exclude = (guest, into)
            jobs = [("snapshot", [pf, "snapshot", "--guest", guest, "--out", snap], None),
                    ("restore", [pf, "restore", snap, "--into", into], None)]
            for tls in ([], ["--psk-file", key]):
                for compress in ("none", "zstd"):
                    name = f"migrate {compress}{' tls' if tls else ''}"
                    port = str(21000 + len(rows))
                    jobs.append((name, [pf, "migrate", "--guest", guest, "--to", f"tcp:127.0.0.1:{port}",
                                        "--compress", compress] + tls,
                                 [pf, "receive", "--listen", f"127.0.0.1:{port}", "--into", into] + tls))
            for name, cmd, rx in jobs:
                m = measured(cmd, exclude, rx)
                if name != "snapshot" and os.path.exists(into):
                    os.unlink(into)
                row = {"size": size, "job": name, **m}
                rows.append(row)
                print(f"{size:>4} {name:18} peak {m['peak_kib'] / 1024:7.1f} MiB   largest: {m['largest']} "
                      f"{m['largest_kib'] / 1024:.1f} MiB", flush=True)
            os.unlink(guest)
            os.unlink(snap)
    finally:
        subprocess.run(["rm", "-rf", shm, disk, dest])
    with open(a.out, "w") as f:
        json.dump({"pattern": a.pattern, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
