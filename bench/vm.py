#!/usr/bin/python3
"""Whole-VM save, restore and migrate: pageferry --qmp against QEMU's own, on
the same real guest (tests/integration/qemu_guest.py: Debian's cloud kernel,
a busybox initramfs whose 64 MiB region of random bytes is checksummed, 256
MiB of RAM in a shared memory-backend-file, TCG).

Rows, each run interleaved (pageferry, QEMU, then QEMU, pageferry, ...):
- save: pageferry `snapshot --qmp` against QEMU's mapped-ram save (capabilities
  mapped-ram + multifd, 2 channels, direct-io, max-bandwidth 100 GiB/s:
  `migrate file:`), of the one running guest, into files on DISK. Downtime:
  the guest's stop to its `cont` (pageferry's downtime_ms; for QEMU measured
  around its commands).
- restore: each program's file into a fresh QEMU started with -incoming
  defer: pageferry `restore --qmp` (exec to exit, which is after `cont`)
  against `migrate-incoming file:` with the same capabilities, until
  completed, then `cont`.
- migrate: stop and copy over loopback to a fresh -incoming defer QEMU,
  without TLS: pageferry `receive --qmp` + `migrate --qmp` (downtime_ms: the
  stop to the destination's commit, which its `cont` follows at once)
  against QEMU stopped, `migrate tcp:` (multifd, 2 channels, max-bandwidth
  100 GiB/s), the destination completed, then `cont`. The guest moves on
  from destination to destination.
Every restored or migrated guest must print its region's checksum equal to
the original's, or the run fails. Reference: a memory scan is not needed
here: the RAM file is 256 MiB, and what dominates is fixed cost.

usage: bench/vm.py [--reps 3] [--pageferry build/pageferry] [--disk /var/tmp] [--out DIR]
Prints a line per run and a table; writes DIR/vm-bench.json.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import ports  # noqa: E402
import qemu_guest  # noqa: E402

MAX_BANDWIDTH = 100 << 30


def qemu_caps(q, file_mode):
    """QEMU at its best for the row: multifd on 2 channels, max-bandwidth far
    above the link; for a file, mapped-ram and direct-io."""
    caps = [{"capability": "multifd", "state": True}, {"capability": "mapped-ram", "state": file_mode},
            {"capability": "x-ignore-shared", "state": False}]
    q.execute("migrate-set-capabilities", capabilities=caps)
    params = {"multifd-channels": 2, "max-bandwidth": MAX_BANDWIDTH}
    if file_mode:
        params["direct-io"] = True
    q.execute("migrate-set-parameters", **params)


def qemu_caps_off(q):
    q.execute("migrate-set-capabilities", capabilities=[{"capability": "multifd", "state": False},
                                                         {"capability": "mapped-ram", "state": False}])


def completed(q, what):
    r = q.wait_migration(300)
    if r.get("status") != "completed":
        raise SystemExit(f"QEMU {what}: {r.get('status')}: {r.get('error-desc', '')}")


def pf(args, binary):
    t0 = time.monotonic()
    r = subprocess.run([binary] + [str(a) for a in args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"pageferry {args[0]}: {r.stderr.strip()}")
    return json.loads(r.stdout), time.monotonic() - t0


class Bench:
    def __init__(self, args):
        self.pf = args.pageferry
        self.work = tempfile.mkdtemp(prefix="pf-vm-", dir="/dev/shm")
        self.disk = tempfile.mkdtemp(prefix="pf-vm-", dir=args.disk)
        self.initrd = qemu_guest.build_initramfs(os.path.join(self.work, "initrd.gz"))
        self.n = 0
        self.guest = self.start()
        self.guest.wait_ready()
        self.sum0 = self.guest.sum0()
        self.guest.wait_for_counter(3)

    def start(self, incoming=False):
        self.n += 1
        name = f"g{self.n}"
        return qemu_guest.start_guest(self.work, name, os.path.join(self.work, f"{name}.ram"), self.initrd,
                                      incoming=incoming)

    def verified(self, g):
        """The moved guest runs and its region is intact."""
        n = len(g.sums())
        sums = g.wait_for_sums(n + 1, timeout=120)
        if sums[-1] != ("OK", self.sum0):
            raise SystemExit(f"the moved guest's region is wrong: {sums[-1]}")
        return True

    # -- save -----------------------------------------------------------------
    def save_pf(self, path):
        self.guest.close_qmp()
        s, _ = pf(["snapshot", "--qmp", self.guest.qmp_path, "--out", path, "--json"], self.pf)
        return {"downtime_s": s["downtime_ms"] / 1000}

    def save_qemu(self, path):
        q = self.guest.qmp()
        qemu_caps(q, True)
        t0 = time.monotonic()
        q.execute("stop")
        q.execute("migrate", uri=f"file:{path}")
        completed(q, "save")
        q.execute("cont")
        t1 = time.monotonic()
        qemu_caps_off(q)
        self.guest.close_qmp()
        return {"downtime_s": t1 - t0}

    # -- restore --------------------------------------------------------------
    def restore_pf(self, path):
        g = self.start(incoming=True)
        g.qmp()
        g.close_qmp()
        _, secs = pf(["restore", path, "--qmp", g.qmp_path, "--json"], self.pf)
        ok = self.verified(g)
        g.kill()
        return {"seconds": secs, "verified": ok}

    def restore_qemu(self, path):
        g = self.start(incoming=True)
        q = g.qmp()
        qemu_caps(q, True)
        t0 = time.monotonic()
        q.execute("migrate-incoming", uri=f"file:{path}")
        completed(q, "restore")
        q.execute("cont")
        t1 = time.monotonic()
        g.close_qmp()
        ok = self.verified(g)
        g.kill()
        return {"seconds": t1 - t0, "verified": ok}

    # -- migrate --------------------------------------------------------------
    def migrate_pf(self, port):
        dst = self.start(incoming=True)
        dst.qmp()
        dst.close_qmp()
        self.guest.close_qmp()
        rx = subprocess.Popen([self.pf, "receive", "--listen", f"127.0.0.1:{port}", "--qmp", dst.qmp_path,
                               "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)  # listening: its start-up is off the clock, as QEMU's destination's is
        s, _ = pf(["migrate", "--qmp", self.guest.qmp_path, "--to", f"tcp:127.0.0.1:{port}", "--json"], self.pf)
        out, err = rx.communicate(timeout=300)
        if rx.returncode != 0:
            raise SystemExit(f"pageferry receive: {err.strip()}")
        return self.moved(dst, {"downtime_s": s["downtime_ms"] / 1000})

    def migrate_qemu(self, port):
        dst = self.start(incoming=True)
        qd, qs = dst.qmp(), self.guest.qmp()
        qemu_caps(qd, False)
        qemu_caps(qs, False)
        qd.execute("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        t0 = time.monotonic()
        qs.execute("stop")
        qs.execute("migrate", uri=f"tcp:127.0.0.1:{port}")
        completed(qd, "migrate")
        while qd.status() == "inmigrate":
            time.sleep(0.002)
        qd.execute("cont")
        t1 = time.monotonic()
        qemu_caps_off(qd)  # back to the defaults pageferry's next move meets on a QEMU
        dst.close_qmp()
        self.guest.close_qmp()
        return self.moved(dst, {"downtime_s": t1 - t0})

    def moved(self, dst, result):
        result["verified"] = self.verified(dst)
        self.guest.kill()
        self.guest = dst
        return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pageferry", default=os.path.join(ROOT, "build", "pageferry"))
    ap.add_argument("--disk", default="/var/tmp")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    b = Bench(args)
    results = {("save", "pageferry"): [], ("save", "qemu"): [], ("restore", "pageferry"): [],
               ("restore", "qemu"): [], ("migrate", "pageferry"): [], ("migrate", "qemu"): []}
    key = {"save": "downtime_s", "restore": "seconds", "migrate": "downtime_s"}
    try:
        for rep in range(args.reps):
            order = ("pageferry", "qemu") if rep % 2 == 0 else ("qemu", "pageferry")
            files = {"pageferry": os.path.join(b.disk, f"vm-{rep}.pfs"),
                     "qemu": os.path.join(b.disk, f"vm-{rep}.qemu")}
            for who in order:
                r = (b.save_pf if who == "pageferry" else b.save_qemu)(files[who])
                results[("save", who)].append(r)
                print(f"save    rep {rep} {who:9}: {r['downtime_s']:.3f} s stop->cont", flush=True)
            for who in order:
                r = (b.restore_pf if who == "pageferry" else b.restore_qemu)(files[who])
                results[("restore", who)].append(r)
                print(f"restore rep {rep} {who:9}: {r['seconds']:.3f} s", flush=True)
            for who in order:
                r = (b.migrate_pf if who == "pageferry" else b.migrate_qemu)(ports.free_port())
                results[("migrate", who)].append(r)
                print(f"migrate rep {rep} {who:9}: {r['downtime_s']:.3f} s stop->cont", flush=True)
            for f in files.values():
                os.unlink(f)
    finally:
        b.guest.kill()
        shutil.rmtree(b.work, ignore_errors=True)
        shutil.rmtree(b.disk, ignore_errors=True)
    print(f"\n{args.reps} interleaved runs each, 256 MiB guest, TCG; median [min-max] seconds\n")
    print("| job | measured | pageferry | QEMU | QEMU / pageferry |")
    print("|---|---|---|---|---|")
    table = {}
    for job in ("save", "restore", "migrate"):
        v = {who: sorted(r[key[job]] for r in results[(job, who)]) for who in ("pageferry", "qemu")}
        med = {who: statistics.median(x) for who, x in v.items()}
        table[job] = {"measured": key[job], **{who: v[who] for who in v}}
        what = "stop to cont" if key[job] == "downtime_s" else "command to running"
        print(f"| {job} | {what} | {med['pageferry']:.3f} [{v['pageferry'][0]:.3f}-{v['pageferry'][-1]:.3f}] | "
              f"{med['qemu']:.3f} [{v['qemu'][0]:.3f}-{v['qemu'][-1]:.3f}] | {med['qemu'] / med['pageferry']:.2f}× |")
    if args.out:
        with open(os.path.join(args.out, "vm-bench.json"), "w") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
