#!/usr/bin/python3
"""pageferry against QEMU 10 on the whole matrix of issue 16, in one run.

For each guest size and image (all-zero, random, text, mixed, sparse: mostly
never touched, and `guest`: a real guest's RAM, bench/guest_image.py):

  - TCP rows, for each compression (none, zstd:1) and TLS (none, psk): one
    pageferry receive --in-place --zeroed + migrate against one QEMU multifd
    migration of the same image (bench/migrate.py and bench/qemu_migrate.py:
    2 channels, max-bandwidth 100 GiB/s, both destinations pre-zeroed; both
    programs told so: QEMU assumes it of a destination's RAM, pageferry is
    told with --zeroed);
  - snapshot: pageferry snapshot against QEMU's mapped-ram save (`migrate
    file:` with the capabilities mapped-ram and multifd, 2 channels,
    direct-io, max-bandwidth 100 GiB/s) from a paused QEMU whose RAM is the
    image, both into files on --disk;
  - restore, fresh and pre-allocated: pageferry restore --into (a new file;
    pre-allocated: --in-place into zeros written over a file of the guest's
    size, with --zeroed as for TCP) against a QEMU started with -incoming
    defer (RAM: a file of the guest's size with nothing allocated;
    pre-allocated: the zeroed file with prealloc=on) loading its own
    snapshot with `migrate-incoming file:`.

How pageferry moves the image (--pageferry-moves): `vm` (the default since
2026-12-02), as QEMU's rows move it: a QEMU never started (-S) whose RAM is
the image (memory-backend-file, share=on), `migrate --qmp` to `receive --qmp
--no-resume --zeroed` into a QEMU waiting with -incoming defer whose RAM is
the pre-zeroed destination (prealloc=on), and `snapshot --qmp`; the device
state travels too, both QEMUs' CPU over the command counts, and pageferry
does not read the guest a second time (QEMU holds it stopped: doc/qemu.md).
`file`: the image file itself (`migrate --guest`, `receive --in-place`,
`snapshot --guest`), which pageferry reads again after the copy since
nothing vouches that it did not change. Restore rows read pageferry's
snapshot into a file either way.

Before every TCP and snapshot run the image's holes are punched again
(bench/source_image.py): QEMU reads its RAM through a mapping, which on
tmpfs allocates every hole it touches, so without this every run after
QEMU's first would move a different image (a sparse guest become an
all-zero one).

Every run of a row alternates the programs (pageferry, QEMU, then QEMU,
pageferry, ...); each row reports the median of --reps with its range, and
CPU-seconds per GiB of guest on both sides (pageferry: both its commands,
front ends and stages, from wait4; QEMU: its processes over the operation).
Every destination is compared with the image (pageferry verify) after every
run, for both programs. Time for pageferry is its whole command (its
receiver already listening for TCP); for QEMU from its command to the
operation's completion (destination out of inmigrate), QEMU already running.

References measured in the same run: iperf3 over loopback before and after
(TCP rows), `zstd -b1` on each image (zstd rows), `dd` with O_DIRECT writing
and reading the image's size on --disk (snapshot and restore rows; restore
as a ratio of dd's time for the bytes pageferry had to read), and a memory
scan: one core reading the image (`dd bs=1M of=/dev/null`: the all-zero
guest's target is within 2x of it).

usage: bench/matrix.py [--sizes 1G] [--images zero,random,text,mixed,sparse,guest]
                       [--compress none,zstd] [--tls none,psk] [--jobs tcp,snapshot,restore]
                       [--reps 3] [--disk /var/tmp] [--mem-dir /dev/shm]
                       [--pageferry build/pageferry] [--pageferry-moves vm|file] [--out doc]
                       [--max-mapping-cost 0.6] [--even-if-mappings-slow]
       bench/matrix.py --report OUT/matrix-bench[-NAME].json   (the table and chart, OUT/matrix[-NAME].png, again)
Prints a line per run and a table; writes OUT/matrix-bench.json and
OUT/matrix.png (QEMU's time over pageferry's, per row).
Run it with nothing else running on the machine.

First it asks `pf-place-cost` (built next to --pageferry, bench/place_cost.c)
what writing a populated mapping costs on --mem-dir now: this VM sometimes
makes a page's first touch through a new mapping 4-5x slower than usual
(1.3-1.9 s per GiB instead of 0.32-0.36) for hours, which QEMU, which maps
the guest, pays and pageferry, which copies with pread/pwrite, mostly does
not, so a run then compares the VM's mood, not the programs
(doc/benchmarks.md, "at a moment of slow mappings"). Above
--max-mapping-cost it refuses to start unless --even-if-mappings-slow; the
figure, measured again at the end, goes into the log and the JSON.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import destination
import guest_image
import migrate
import qemu_migrate
import source_image

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PF = os.path.join(ROOT, "build", "pageferry")
GIB = 1 << 30


def timed_command(argv):
    """(Command finished, wall seconds): pageferry's whole command."""
    t0 = time.monotonic()
    c = migrate.Command([str(a) for a in argv]).finish()
    t1 = time.monotonic()
    if c.returncode:
        raise RuntimeError(f"{argv[1]}: {c.stderr.strip()[-300:]}")
    return c, t1 - t0


def mapping_cost(mem_dir):
    """pf-place-cost on a 1 GiB file in mem_dir: seconds per GiB of writing
    a populated mapping and of pwrite, medians of 3."""
    tool = os.path.join(os.path.dirname(PF), "bench", "pf-place-cost")
    path = os.path.join(mem_dir, "pf-matrix-place-cost.ram")
    try:
        with open(path, "wb") as f:
            f.truncate(GIB)
        out = subprocess.run([tool, path, "3"], capture_output=True, text=True, check=True).stdout
    finally:
        if os.path.exists(path):
            os.unlink(path)
    got = {}
    for line in out.splitlines():
        for key, name in (("mapping_s_per_gib", "mapping, MADV_POPULATE_WRITE first"),
                          ("pwrite_s_per_gib", "pwrite from a")):
            if name in line:
                got[key] = float(line.split(name, 1)[1].split()[-2])
    if len(got) != 2:
        raise RuntimeError(f"{tool} printed nothing this script understands:\n{out}")
    return got


def describe_mapping_cost(m):
    return (f"a populated mapping written at {m['mapping_s_per_gib']:.3f} s per GiB, "
            f"pwrite {m['pwrite_s_per_gib']:.3f}")


def dd_seconds(args):
    t0 = time.monotonic()
    subprocess.run(["dd"] + args + ["status=none"], check=True)
    return time.monotonic() - t0


def references(image, disk):
    """The machine's own speed for this image, measured now."""
    size = os.path.getsize(image)
    ref = os.path.join(disk, "pf-matrix-dd")
    try:
        write = dd_seconds([f"if={image}", f"of={ref}", "bs=4M", "oflag=direct", "conv=fdatasync"])
        read = dd_seconds([f"if={ref}", "of=/dev/null", "bs=4M", "iflag=direct"])
    finally:
        os.unlink(ref)
    scan = dd_seconds([f"if={image}", "of=/dev/null", "bs=1M"])
    return {"dd_write_s": write, "dd_read_s": read, "scan_s": scan, "zstd_b1_bytes_per_s": migrate.zstd_bench(image),
            "bytes": size}


# -- QEMU with files (mapped-ram) ------------------------------------------------

def qemu_file_caps(q):
    q.cmd("migrate-set-capabilities", capabilities=[
        {"capability": "multifd", "state": True}, {"capability": "mapped-ram", "state": True},
        {"capability": "x-ignore-shared", "state": False}])
    q.cmd("migrate-set-parameters", **{"multifd-channels": 2, "direct-io": True,
                                        "max-bandwidth": qemu_migrate.MAX_BANDWIDTH})
    got = q.cmd("query-migrate-parameters")
    if got["max-bandwidth"] != qemu_migrate.MAX_BANDWIDTH or not got.get("direct-io"):
        raise RuntimeError(f"QEMU kept max-bandwidth {got['max-bandwidth']}, direct-io {got.get('direct-io')}")


def qemu_file_op(ram, incoming, uri, prealloc=False, timeout=900):
    """Save (a paused QEMU whose RAM is `ram`, `migrate`) or load (a QEMU with
    -incoming defer, `migrate-incoming`) through `uri`; returns the time and
    CPU of the operation."""
    tmp = tempfile.mkdtemp(prefix="pf-matrix-qemu-")
    log = open(os.path.join(tmp, "qemu.log"), "w+")
    proc = qemu_migrate.start(ram, os.path.join(tmp, "qmp"), incoming, log, prealloc=prealloc)
    try:
        q = qemu_migrate.QMP(os.path.join(tmp, "qmp"), proc)
        qemu_file_caps(q)
        c0, t0 = qemu_migrate.cpu_seconds(proc.pid), time.monotonic()
        q.cmd("migrate-incoming" if incoming else "migrate", uri=uri)
        qemu_migrate.wait_completed(q, t0, timeout, "load" if incoming else "save")
        while incoming and q.cmd("query-status").get("status") == "inmigrate":
            time.sleep(0.005)
        t1, c1 = time.monotonic(), qemu_migrate.cpu_seconds(proc.pid)
        return {"seconds": t1 - t0, "cpu": c1 - c0, "version": q.greeting["QMP"]["version"]["qemu"]}
    except RuntimeError as e:
        log.seek(0)
        tail = log.read().strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"{e} {tail[0]}".strip()) from None
    finally:
        qemu_migrate.stop([proc], [log], tmp)


# -- one run of each kind, for each program -----------------------------------------

class Image:
    """An image and the files its rows leave for the next ones."""

    def __init__(self, path, disk):
        self.path, self.size = path, os.path.getsize(path)
        self.pristine = source_image.Pristine(path)
        self.snap = {"pf": os.path.join(disk, "pf-matrix.pfs"), "qemu": os.path.join(disk, "pf-matrix.qemu")}
        self.dest = path + ".dst"

    def verified(self):
        return migrate.verify(self.path, self.dest)

    def reset(self):
        """The image's holes back where they were (QEMU's last run allocated
        them): its allocated bytes, the same before every run."""
        return self.pristine.reset()


def snapshot_run(img, prog, vm):
    src_allocated = img.reset()
    out = img.snap[prog]
    for p in (out, out + ".pf-partial"):
        if os.path.exists(p):
            os.unlink(p)
    if prog == "pf":
        with qemu_migrate.qemus(*([(img.path, False, False)] if vm else [])) as (qmp, qemu_cpu):
            c0 = qemu_cpu()
            source = ["--qmp", qmp[0]] if vm else ["--guest", img.path]
            c, secs = timed_command([PF, "snapshot"] + source + ["--out", out, "--workers", 2, "--json"])
            cpu_qemu = qemu_cpu() - c0
        s = json.loads(c.stdout)
        return {"seconds": secs, "cpu": c.cpu + cpu_qemu, "cpu_qemu": cpu_qemu, "bytes_written": s["bytes_written"],
                "verified": True, "src_allocated_before": src_allocated, "unchanged_guest": s["unchanged_guest"]}
    r = qemu_file_op(img.path, False, f"file:{out}")
    r["verified"] = True  # checked by the restore rows, which load it
    r["src_allocated_before"] = src_allocated
    return r


def restore_run(img, prog, kind):
    destination.prepare(img.dest, img.size, kind, sparse_file=prog == "qemu")
    allocated = destination.check(img.dest, img.size, kind)
    try:
        if prog == "pf":
            c, secs = timed_command([PF, "restore", img.snap["pf"], "--into", img.dest, "--workers", 2, "--json"] +
                                    (["--in-place", "--zeroed"] if kind == "prealloc" else []))
            r = {"seconds": secs, "cpu": c.cpu, "bytes_read": json.loads(c.stdout)["bytes_read"]}
        else:
            r = qemu_file_op(img.dest, True, f"file:{img.snap['qemu']}", prealloc=kind == "prealloc")
        r["verified"] = img.verified()
        r["dest_allocated_before"] = allocated
        return r
    finally:
        destination.remove(img.dest)


def tcp_run(img, prog, compress, tls, vm):
    src_allocated = img.reset()
    if prog == "pf":
        r = migrate.pageferry(img.path, 2, compress, "off", "prealloc", tls, zeroed=True, vm=vm)
    else:
        r = migrate.qemu(img.path, 2, compress, False, "prealloc", tls)
    r["src_allocated_before"] = src_allocated
    return r


def row(label, reps, fn):
    """reps runs of each program, interleaved; their summaries."""
    runs = {"pf": [], "qemu": []}
    for rep in range(reps):
        for prog in (("pf", "qemu") if rep % 2 == 0 else ("qemu", "pf")):
            try:
                r = fn(prog)
            except RuntimeError as e:
                r = {"error": str(e)}
            runs[prog].append(r)
            state = (f"FAILED: {r['error']}" if "error" in r else
                     f"{r['seconds']:.3f} s, {r['cpu']:.2f} cpu-s{'' if r['verified'] else ', VERIFY FAILED'}")
            print(f"  {label} run {rep + 1} {prog:4}: {state}", flush=True)
    return migrate.summarize(runs["pf"]), migrate.summarize(runs["qemu"])


def make_image(name, size, mem_dir):
    path = os.path.join(mem_dir, f"pf-matrix-{name}.ram")
    if name == "guest":
        guest_image.build(size, path)
    else:
        subprocess.run([PF, "mkguest", name, str(size), path], check=True, stdout=subprocess.DEVNULL)
    return path


def describe(r, gib, refs, link):
    """The row's line: times, CPU per GiB, the ratio and the reference."""
    p, q = r["pf"], r["qemu"]
    if "error" in p or "error" in q:
        return f"{r['label']}: {'pageferry' if 'error' in p else 'QEMU'} FAILED: {(p if 'error' in p else q)['error']}"
    ratio = q["seconds"] / p["seconds"]
    text = (f"{r['label']}: pageferry {migrate.fmt_range(p, 'seconds', prec=3)} s {p['cpu'] / gib:.2f} cpu-s/GiB | "
            f"QEMU {migrate.fmt_range(q, 'seconds', prec=3)} s {q['cpu'] / gib:.2f} cpu-s/GiB | "
            f"{ratio:.2f}x QEMU's speed")
    if not (p["verified"] and q["verified"]):
        text += " (VERIFY FAILED)"
    kind = r["kind"]
    if kind == "tcp" and r["compress"] == "none":
        text += f"; sent {p['bytes_sent'] / p['seconds'] / link:.2f} of iperf3"
    elif kind == "tcp":
        text += f"; {refs['bytes'] / p['seconds'] / refs['zstd_b1_bytes_per_s']:.2f} of zstd -b1's guest rate"
    elif kind == "snapshot":
        text += f"; {refs['dd_write_s'] * p['bytes_written'] / refs['bytes'] / p['seconds']:.2f} of dd oflag=direct"
    else:
        text += f"; {refs['dd_read_s'] * p['bytes_read'] / refs['bytes'] / p['seconds']:.2f} of dd iflag=direct"
    if r["image"] == "zero" and kind == "tcp":
        text += f"; {p['seconds'] / refs['scan_s']:.2f}x a one-core memory scan"
    return text


def main():
    global PF
    ap = argparse.ArgumentParser(description="pageferry against QEMU on issue 16's matrix; see the docstring")
    ap.add_argument("--sizes", default="1G")
    ap.add_argument("--images", default="zero,random,text,mixed,sparse,guest")
    ap.add_argument("--compress", default="none,zstd")
    ap.add_argument("--tls", default="none,psk")
    ap.add_argument("--jobs", default="tcp,snapshot,restore")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--disk", default="/var/tmp", help="a directory on a real disk, for the snapshot files")
    ap.add_argument("--mem-dir", default="/dev/shm",
                    help="where images and destinations live: a tmpfs (mounted huge=always for huge-page rows)")
    ap.add_argument("--pageferry", default=PF)
    ap.add_argument("--pageferry-moves", choices=("vm", "file"), default="vm",
                    help="vm: pageferry's TCP and snapshot rows move a QEMU VM whose RAM is the image "
                         "(--qmp), as QEMU's rows do; file: the image file itself (--guest)")
    ap.add_argument("--max-mapping-cost", type=float, default=0.6, metavar="S_PER_GIB",
                    help="refuse to run when writing a populated mapping costs more (usual: 0.32-0.36)")
    ap.add_argument("--even-if-mappings-slow", action="store_true",
                    help="run anyway, the figure recorded: not a fair comparison")
    ap.add_argument("--out", default=os.path.join(ROOT, "doc"))
    ap.add_argument("--report", metavar="JSON", help="print the table and draw the chart of an earlier run")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            d = json.load(f)
        print(table(d["rows"], d["references"], d["iperf3_bytes_per_s"]))
        # OUT/matrix-bench-4g.json draws OUT/matrix-4g.png, and so on.
        name = os.path.basename(args.report).replace("matrix-bench", "matrix").removesuffix(".json") + ".png"
        chart(d["rows"], os.path.join(os.path.dirname(os.path.abspath(args.report)), name),
              f"images and destinations on {d.get('mem_dir_mount') or d['mem_dir']}")
        return
    PF = migrate.PF = os.path.abspath(args.pageferry)
    migrate.SHM = args.mem_dir
    jobs = args.jobs.split(",")
    vm = args.pageferry_moves == "vm"
    mappings = [mapping_cost(args.mem_dir)]
    print(f"pf-place-cost on {args.mem_dir}: {describe_mapping_cost(mappings[0])}", flush=True)
    if mappings[0]["mapping_s_per_gib"] > args.max_mapping_cost:
        if not args.even_if_mappings_slow:
            sys.exit(f"matrix.py: this VM makes new mappings slow now ({mappings[0]['mapping_s_per_gib']:.2f} s per "
                     f"GiB written, above --max-mapping-cost {args.max_mapping_cost}): QEMU would pay for it and "
                     "pageferry mostly not, so the rows would not compare the programs. Try later, or run with "
                     "--even-if-mappings-slow to record it anyway.")
        print("NOT A FAIR COMPARISON: new mappings are slow on this VM now (--even-if-mappings-slow)", flush=True)
    t_start = time.monotonic()
    iperf = [migrate.iperf3()]
    link = iperf[0]["bytes_per_s"]
    print(f"iperf3 loopback, one stream: {link / 2**20:.0f} MiB/s", flush=True)
    rows, refs_by = [], {}
    for size_arg in args.sizes.split(","):
        size = int(subprocess.run(["numfmt", "--from=iec", size_arg], capture_output=True, text=True,
                                  check=True).stdout)
        gib = size / GIB
        for name in args.images.split(","):
            img = Image(make_image(name, size, args.mem_dir), args.disk)
            try:
                refs = refs_by[f"{name} {size_arg}"] = references(img.path, args.disk)
                print(f"{name} {size_arg}: dd write {refs['dd_write_s']:.2f} s, read {refs['dd_read_s']:.2f} s, "
                      f"scan {refs['scan_s']:.3f} s, zstd -b1 {refs['zstd_b1_bytes_per_s'] / 2**20:.0f} MiB/s, "
                      f"{os.stat(img.path).st_blocks * 512 >> 20} MiB allocated", flush=True)
                plan = []
                if "tcp" in jobs:
                    plan += [("tcp", c, t) for t in args.tls.split(",") for c in args.compress.split(",")]
                if "snapshot" in jobs or "restore" in jobs:
                    plan.append(("snapshot", None, None))
                if "restore" in jobs:
                    plan += [("restore", "fresh", None), ("restore", "prealloc", None)]
                for kind, opt, tls in plan:
                    label = (f"{name:6} {size_arg} " + (f"tcp {opt:4} tls={tls}" if kind == "tcp" else
                                                        f"{kind} {opt or ''}".strip()))
                    if kind == "tcp":
                        p, q = row(label, args.reps, lambda prog: tcp_run(img, prog, opt, tls, vm))
                    elif kind == "snapshot":
                        p, q = row(label, args.reps, lambda prog: snapshot_run(img, prog, vm))
                    else:
                        p, q = row(label, args.reps, lambda prog: restore_run(img, prog, opt))
                    r = {"label": label, "image": name, "size": size_arg, "kind": kind,
                         "compress": opt if kind == "tcp" else None, "tls": tls,
                         "dest": opt if kind == "restore" else "prealloc" if kind == "tcp" else None,
                         "pf": p, "qemu": q}
                    rows.append(r)
                    print(describe(r, gib, refs, link), f"[{(time.monotonic() - t_start) / 60:.1f} min]", flush=True)
            finally:
                for p in [img.path] + list(img.snap.values()):
                    if os.path.exists(p):
                        os.unlink(p)
    iperf.append(migrate.iperf3())
    mappings.append(mapping_cost(args.mem_dir))
    print(f"pf-place-cost after: {describe_mapping_cost(mappings[1])}", flush=True)
    link = statistics.mean(i["bytes_per_s"] for i in iperf)
    print(f"iperf3 after: {iperf[1]['bytes_per_s'] / 2**20:.0f} MiB/s; {(time.monotonic() - t_start) / 60:.1f} min "
          "in all\n")
    print(table(rows, refs_by, link))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "matrix-bench.json"), "w") as f:
        json.dump({"iperf3_bytes_per_s": link, "iperf3_runs": iperf, "mapping_cost": mappings,
                   "references": refs_by, "reps": args.reps,
                   "mem_dir": args.mem_dir, "mem_dir_mount": mount_of(args.mem_dir),
                   "pageferry_moves": args.pageferry_moves, "cpus": os.cpu_count(),
                   "timing": "wall clock; median of reps, [min, max]", "rows": rows}, f, indent=1)
    chart(rows, os.path.join(args.out, "matrix.png"), f"images and destinations on {mount_of(args.mem_dir)}")


def mount_of(path):
    """The filesystem `path` is on, with its options ("tmpfs /dev/shm
    rw,...,huge=always"): whether the images had huge pages."""
    path, best = os.path.realpath(path), ("", "")
    with open("/proc/self/mounts") as f:
        for line in f:
            _, point, fstype, opts = line.split()[:4]
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
                best = (point, f"{fstype} {point} {opts}")
    return best[1]


def chart(rows, path, title):
    """QEMU's time over pageferry's for every row (above 1: pageferry is
    faster), whiskers from the two programs' ranges."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no chart")
        return
    ok = [r for r in rows if "error" not in r["pf"] and "error" not in r["qemu"]]
    ratio = [r["qemu"]["seconds"] / r["pf"]["seconds"] for r in ok]
    lo = [r["qemu"]["seconds_range"][0] / r["pf"]["seconds_range"][1] for r in ok]
    hi = [r["qemu"]["seconds_range"][1] / r["pf"]["seconds_range"][0] for r in ok]
    fig, ax = plt.subplots(figsize=(9, 0.22 * len(ok) + 1.5))
    y = range(len(ok))
    ax.barh(list(y), ratio, xerr=[[m - a for m, a in zip(ratio, lo)], [b - m for m, b in zip(ratio, hi)]],
            color=["tab:green" if v >= 1.5 else "tab:olive" if v >= 1 else "tab:red" for v in ratio], capsize=2)
    ax.set_yticks(list(y))
    ax.set_yticklabels([" ".join(r["label"].split()) for r in ok], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    for x, style in ((1, "-"), (1.5, "--")):
        ax.axvline(x, color="black", linestyle=style, linewidth=0.8)
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("QEMU's time / pageferry's (above 1: pageferry faster; dashed: the 1.5x target)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"chart: {path}")


def table(rows, refs_by, link):
    """A markdown table: one line per row."""
    out = ["| row | pageferry s | QEMU s | QEMU/pageferry | pageferry cpu-s/GiB | QEMU cpu-s/GiB | reference |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        p, q = r["pf"], r["qemu"]
        if "error" in p or "error" in q:
            out.append(f"| {r['label']} | {'FAILED' if 'error' in p else ''} | {'FAILED' if 'error' in q else ''} "
                       "| | | | |")
            continue
        refs = refs_by[f"{r['image']} {r['size']}"]
        gib = refs["bytes"] / GIB
        ref = describe(r, gib, refs, link).split("QEMU's speed", 1)[1].lstrip("; ").replace(" (VERIFY FAILED)", "")
        out.append(f"| {r['label']} | {migrate.fmt_range(p, 'seconds', prec=3)} | "
                   f"{migrate.fmt_range(q, 'seconds', prec=3)} | {q['seconds'] / p['seconds']:.2f} | "
                   f"{p['cpu'] / gib:.2f} | {q['cpu'] / gib:.2f} | {ref} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
