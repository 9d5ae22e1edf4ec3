#!/usr/bin/python3
"""Whole-VM save, restore and migrate: pageferry --qmp against QEMU's own, on
the same real guest (tests/integration/qemu_guest.py: Debian's cloud kernel,
a busybox initramfs whose 64 MiB region of random bytes is checksummed, 256
MiB of RAM in a shared memory-backend-file, TCG).

Rows, each run interleaved (pageferry, QEMU, then QEMU, pageferry, ...):
- save: pageferry `snapshot --qmp` against QEMU's mapped-ram save (capabilities
  mapped-ram + multifd, 2 channels, direct-io, max-bandwidth 100 GiB/s:
  `migrate file:`), of a running guest, into files on DISK. Downtime:
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
  100 GiB/s), the destination completed, then `cont`.
Every save and every migration moves a guest booted for it (Bench: a guest
QEMU has read through its mapping has its whole RAM file allocated, and
would not be the same guest for the next program; until 2026-12-02 one
guest moved on from run to run). Every restored or migrated guest must
print its region's checksum equal to its source's, or the run fails. Reference: a memory scan is not needed
here: at the default 256 MiB what dominates is fixed cost.

--against BUILD/pageferry puts a second pageferry build where QEMU was, to
measure a change of pageferry's (the columns are then A and B, runs
interleaved the same way); --rows picks the rows.

--ram-mib N gives the VM N MiB of RAM; --workload has its init, before the
counters start, run bench/guest_image.py's workload (write text and program
bytes into a tmpfs filling ~40% of RAM, delete them), so that its RAM holds
data and freed pages as a guest's that has worked does, not mostly holes.

usage: bench/vm.py [--reps 3] [--pageferry build/pageferry] [--disk /var/tmp] [--out DIR]
                   [--ram-mib 256] [--workload] [--rows save,restore,migrate]
                   [--against OTHER_BUILD/pageferry]
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
import destination  # noqa: E402
import guest_image  # noqa: E402
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
    """Every save and every migration gets a source booted for it alone:
    QEMU reads its RAM through a mapping, and on tmpfs a read fault on a hole
    allocates it, so a guest that QEMU has saved or migrated (or received)
    has every page of its RAM file allocated, and a guest handed on from run
    to run would not be the same guest for both programs."""

    def __init__(self, args):
        self.pf = args.pageferry
        self.workload = args.workload
        self.work = tempfile.mkdtemp(prefix="pf-vm-", dir="/dev/shm")
        self.disk = tempfile.mkdtemp(prefix="pf-vm-", dir=args.disk)
        self.initrd = qemu_guest.build_initramfs(os.path.join(self.work, "initrd.gz"))
        self.n = 0
        self.sums = {}  # a saved file -> its guest's region checksum
        self.allocated = []  # each source's RAM file, allocated bytes, before it was moved
        self.guests = []

    def start(self, incoming=False):
        self.n += 1
        name = f"g{self.n}"
        g = qemu_guest.start_guest(self.work, name, os.path.join(self.work, f"{name}.ram"), self.initrd,
                                   incoming=incoming)
        self.guests.append(g)
        return g

    def source(self):
        g = self.start()
        g.wait_ready(timeout=600)
        if self.workload:
            g.wait_for(lambda: "workload done" in g.lines(), "workload", 1800)
        g.wait_for_counter(3)  # far from 0: a rebooted guest cannot pass for a moved one
        self.allocated.append(destination.allocated(g.ram))
        return g

    def done(self, *guests):
        for g in guests:
            g.kill()
            os.unlink(g.ram)
            self.guests.remove(g)

    def kill_all(self):
        for g in list(self.guests):
            g.kill()

    @staticmethod
    def verified(g, sum0):
        """The moved guest runs and its region is intact."""
        n = len(g.sums())
        sums = g.wait_for_sums(n + 1, timeout=120)
        if sums[-1] != ("OK", sum0):
            raise SystemExit(f"the moved guest's region is wrong: {sums[-1]}")
        return True

    # -- save -----------------------------------------------------------------
    def save_pf(self, path, build=None):
        g = self.source()
        s, _ = pf(["snapshot", "--qmp", g.qmp_path, "--out", path, "--json"], build or self.pf)
        self.sums[path] = g.sum0()
        self.done(g)
        return {"downtime_s": s["downtime_ms"] / 1000}

    def save_qemu(self, path):
        g = self.source()
        q = g.qmp()
        qemu_caps(q, True)
        t0 = time.monotonic()
        q.execute("stop")
        q.execute("migrate", uri=f"file:{path}")
        completed(q, "save")
        q.execute("cont")
        t1 = time.monotonic()
        self.sums[path] = g.sum0()
        self.done(g)
        return {"downtime_s": t1 - t0}

    # -- restore --------------------------------------------------------------
    def restore_pf(self, path, build=None):
        g = self.start(incoming=True)
        g.qmp()
        g.close_qmp()
        _, secs = pf(["restore", path, "--qmp", g.qmp_path, "--json"], build or self.pf)
        ok = self.verified(g, self.sums[path])
        self.done(g)
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
        ok = self.verified(g, self.sums[path])
        self.done(g)
        return {"seconds": t1 - t0, "verified": ok}

    # -- migrate --------------------------------------------------------------
    def migrate_pf(self, port, build=None):
        src = self.source()
        dst = self.start(incoming=True)
        dst.qmp()
        dst.close_qmp()
        pf_path = build or self.pf
        rx = subprocess.Popen([pf_path, "receive", "--listen", f"127.0.0.1:{port}", "--qmp", dst.qmp_path,
                               "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)  # listening: its start-up is off the clock, as QEMU's destination's is
        s, _ = pf(["migrate", "--qmp", src.qmp_path, "--to", f"tcp:127.0.0.1:{port}", "--json"], pf_path)
        out, err = rx.communicate(timeout=300)
        if rx.returncode != 0:
            raise SystemExit(f"pageferry receive: {err.strip()}")
        return self.moved(src, dst, {"downtime_s": s["downtime_ms"] / 1000})

    def migrate_qemu(self, port):
        src = self.source()
        dst = self.start(incoming=True)
        qd, qs = dst.qmp(), src.qmp()
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
        dst.close_qmp()
        return self.moved(src, dst, {"downtime_s": t1 - t0})

    def moved(self, src, dst, result):
        result["verified"] = self.verified(dst, src.sum0())
        self.done(src, dst)
        return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pageferry", default=os.path.join(ROOT, "build", "pageferry"))
    ap.add_argument("--against", default=None, metavar="OTHER_BUILD/pageferry",
                    help="a second pageferry build instead of QEMU")
    ap.add_argument("--rows", default="save,restore,migrate")
    ap.add_argument("--disk", default="/var/tmp")
    ap.add_argument("--out", default=None)
    ap.add_argument("--ram-mib", type=int, default=qemu_guest.RAM_MIB)
    ap.add_argument("--workload", action="store_true")
    args = ap.parse_args()
    rows = args.rows.split(",")
    if not rows or set(rows) - {"save", "restore", "migrate"} or ("restore" in rows and "save" not in rows):
        ap.error("--rows: save, restore (which needs save) and migrate")
    # Every QEMU of the run (the source and the destinations, which must
    # match it) gets this RAM; only the source boots and runs the init.
    qemu_guest.RAM_MIB = args.ram_mib
    if args.workload:
        qemu_guest.INIT = guest_image.workload_init(args.ram_mib)
    b = Bench(args)
    # Who runs each row: pageferry against QEMU, or build A against build B.
    if args.against:
        names = ("A", "B")
        runs = {n: {"save": lambda p, build=build: b.save_pf(p, build),
                    "restore": lambda p, build=build: b.restore_pf(p, build),
                    "migrate": lambda port, build=build: b.migrate_pf(port, build)}
                for n, build in zip(names, (args.pageferry, args.against))}
    else:
        names = ("pageferry", "qemu")
        runs = {"pageferry": {"save": b.save_pf, "restore": b.restore_pf, "migrate": b.migrate_pf},
                "qemu": {"save": b.save_qemu, "restore": b.restore_qemu, "migrate": b.migrate_qemu}}
    results = {(job, who): [] for job in rows for who in names}
    key = {"save": "downtime_s", "restore": "seconds", "migrate": "downtime_s"}
    try:
        for rep in range(args.reps):
            order = names if rep % 2 == 0 else names[::-1]
            files = {who: os.path.join(b.disk, f"vm-{rep}-{who}.snap") for who in names}
            for job in rows:
                for who in order:
                    r = runs[who][job](ports.free_port() if job == "migrate" else files[who])
                    results[(job, who)].append(r)
                    what = "s" if job == "restore" else "s stop->cont"
                    print(f"{job:7} rep {rep} {who:9}: {r[key[job]]:.3f} {what}", flush=True)
            for f in files.values():
                if os.path.exists(f):
                    os.unlink(f)
    finally:
        b.kill_all()
        shutil.rmtree(b.work, ignore_errors=True)
        shutil.rmtree(b.disk, ignore_errors=True)
    print(f"\n{args.reps} interleaved runs each, {args.ram_mib} MiB guest"
          f"{' after the workload' if args.workload else ''} "
          f"(its RAM file {statistics.median(b.allocated) / 2**20:.0f} MiB "
          f"allocated before it is moved, a fresh boot for every save and migration), TCG; median [min-max] seconds"
          + (f"; A {args.pageferry}, B {args.against}" if args.against else "") + "\n")
    first, second = names
    print(f"| job | measured | {first} | {second} | {second} / {first} |")
    print("|---|---|---|---|---|")
    table = {}
    for job in rows:
        v = {who: sorted(r[key[job]] for r in results[(job, who)]) for who in names}
        med = {who: statistics.median(x) for who, x in v.items()}
        table[job] = {"measured": key[job], **{who: v[who] for who in v}}
        what = "stop to cont" if key[job] == "downtime_s" else "command to running"
        print(f"| {job} | {what} | {med[first]:.3f} [{v[first][0]:.3f}-{v[first][-1]:.3f}] | "
              f"{med[second]:.3f} [{v[second][0]:.3f}-{v[second][-1]:.3f}] | {med[second] / med[first]:.2f}× |")
    if args.out:
        table["guest"] = {"ram_mib": args.ram_mib, "workload": args.workload,
                          "allocated_bytes": b.allocated}
        if args.against:
            table["builds"] = {"A": args.pageferry, "B": args.against}
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "vm-bench.json"), "w") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
