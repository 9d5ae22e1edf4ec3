"""pageferry: the user-facing command (the supervisor).

Exit codes: 0 success; 1 the job failed (the message says why); 2 bad usage;
3 a stage process was killed by a signal (a sandbox violation among them);
130 interrupted."""
import argparse
import os
import sys

# Only what every command needs is imported here: each command imports its
# own modules (and subprocess, json, ...) when it runs, since a command's
# fixed cost is paid on every transfer (doc/benchmarks.md, "Start-up cost").
import pf_jobs
import pf_privs


class Context:
    def __init__(self, stage_dirs, as_json=False):
        self.stage_dirs = stage_dirs
        self.json = as_json

    def stage(self, name):
        return pf_jobs.pf_stages.find_stage(name, self.stage_dirs)


PSK_HELP = ("TLS 1.3 with a pre-shared key: a file of 16..1024 bytes both ends hold; every channel is "
            "authenticated and encrypted")
TLS_CREDS_HELP = ("TLS 1.3 with X.509 certificates, in the layout of QEMU's tls-creds-x509: DIR holds "
                  "ca-cert.pem and this end's %s-cert.pem and %s-key.pem; the peer's certificate must be signed "
                  "by that CA%s")


ZEROED_HELP = ("with --in-place or --qmp: FILE is known to read as zeros (a VMM's newly allocated RAM, "
               "pre-allocated or not), so pages that are zero at the source are neither looked at nor written "
               "there (the default %s). If it held anything else, those pages keep it")
RUN_AS_HELP = ("the user (and group) every stage process becomes once it has opened what it needs; it also "
               "drops every capability (default: nobody, with its primary group). Needs root: when pageferry "
               "does not run as root, its stages keep its user and only drop their capabilities")


def add_privilege_options(parser):
    """--run-as, on every command that starts stages (pf_privs)."""
    parser.add_argument("--run-as", metavar="USER[:GROUP]", help=RUN_AS_HELP)


def apply_privilege_options(args):
    """The stages' user, chosen once, before any stage starts."""
    if hasattr(args, "run_as"):
        try:
            pf_privs.choose(args.run_as)
        except pf_privs.Refused as e:
            raise pf_jobs.JobError(str(e), 2) from None


def positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number")
    if not 1 <= v <= 64:
        raise argparse.ArgumentTypeError(f"{v} is out of range (1..64)")
    return v


def io_timeout(text):
    try:
        v = float(text)
    except ValueError:
        v = 0
    if not 1 <= v <= 86400:
        raise argparse.ArgumentTypeError(f"expected seconds between 1 and 86400, not '{text}'")
    return v


def default_workers():
    return max(1, min(4, os.cpu_count() or 1))


class _Unused:
    """The parser of a command that is not being run: what is added to it goes nowhere."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: self


class _OneCommand:
    """Adds only the subparser of the command being run. Parsing its command
    line needs no other (argparse hands everything after the command's name
    to its subparser), and making the dozen others costs every command
    ~1.5 ms (doc/benchmarks.md, "Start-up cost")."""

    def __init__(self, sub, name):
        self.sub, self.name, self.found = sub, name, False

    def add_parser(self, name, **kwargs):
        if name != self.name:
            return _Unused()
        self.found = True
        return self.sub.add_parser(name, **kwargs)


def add_guest_or_qmp(p, qmp_note):
    """What a source command moves: a guest RAM file, or a whole QEMU VM."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--guest", metavar="FILE", help="the guest RAM file (memfd, /dev/shm, hugetlbfs)")
    src.add_argument("--qmp", metavar="SOCKET",
                     help="a running QEMU's QMP unix socket: the whole VM (its RAM must be one "
                          f"memory-backend-file with share=on{qmp_note})")


def build_parser(only=None):
    """only: the command's name, when the command line starts with it."""
    p = argparse.ArgumentParser(
        prog="pageferry",
        description="Move a virtual machine's RAM: snapshot it to a file and restore it, or migrate "
                    "it over TCP to a pageferry receiver; verify copies.",
        epilog="Exit status: 0 ok, 1 failed (one line says why), 2 usage, 3 a stage process was "
               "killed (e.g. a sandbox violation), 4 a migration failed after the destination was told "
               "to commit and before it answered (it may hold the guest; the source keeps it stopped), "
               "130 interrupted.")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    if only is not None:
        sub = _OneCommand(sub, only)

    s = sub.add_parser("snapshot", help="write a paused guest's RAM file to a snapshot file",
                       description="Snapshot a paused guest's RAM file. Zero pages and holes are not "
                                   "written (the snapshot is sparse); page data goes to the file with "
                                   "O_DIRECT where the filesystem supports it. The snapshot is written "
                                   "to OUT.pf-partial and renamed to OUT only once complete and durable. "
                                   "Every extent of page data carries a CRC-32C (restore and check "
                                   "verify them); a guest that changed while it was copied fails the "
                                   "snapshot. With --qmp, pageferry asks QEMU for its RAM file, stops the "
                                   "guest, stores QEMU's device state in the snapshot too, and resumes the "
                                   "guest if it was running, as soon as every page has been read (the rest "
                                   "is written while it runs); a VM that did not stay stopped (another QMP "
                                   "client resumed or reset it) fails the snapshot (doc/qemu.md).")
    add_guest_or_qmp(s, "")
    s.add_argument("--out", required=True, metavar="SNAP", help="snapshot file to create (replaced on success)")
    s.add_argument("--workers", type=positive_int, default=default_workers(), metavar="N",
                   help="zero-checking worker processes (default: %(default)s)")
    s.add_argument("--json", action="store_true", help="print a JSON summary instead of a line")
    add_privilege_options(s)

    r = sub.add_parser("restore", help="restore a snapshot into a RAM file",
                       description="Restore SNAP into FILE: page data is read with O_DIRECT and written "
                                   "into FILE, each extent checked against its CRC-32C; zero pages stay "
                                   "holes. Incomplete, truncated or "
                                   "corrupt snapshots are refused. FILE is written as FILE.pf-partial "
                                   "and renamed only on success; with --in-place, FILE is an existing "
                                   "RAM file of the guest's size (a waiting VMM's, pre-allocated or not) "
                                   "written where it is and marked by FILE.pf-incomplete until the "
                                   "restore is complete. With --qmp, SNAP (from snapshot --qmp) "
                                   "goes into a QEMU started with -incoming defer: its RAM file is written "
                                   "in place, then QEMU loads the device state and the guest runs "
                                   "(doc/qemu.md).")
    r.add_argument("snapshot", metavar="SNAP")
    dst = r.add_mutually_exclusive_group(required=True)
    dst.add_argument("--into", metavar="FILE", help="destination RAM file (replaced on success)")
    dst.add_argument("--qmp", metavar="SOCKET",
                     help="the QMP unix socket of a QEMU waiting with -incoming defer")
    r.add_argument("--in-place", action="store_true",
                   help="with --into: write into the existing FILE instead of creating it; its size must "
                        "be the guest's, and its pages that are zero in the snapshot are zeroed")
    r.add_argument("--zeroed", action="store_true",
                   help=ZEROED_HELP % "punches them out of FILE")
    r.add_argument("--no-resume", action="store_true",
                   help="with --qmp: leave the restored guest paused (default: resume it)")
    r.add_argument("--workers", type=positive_int, default=default_workers(), metavar="N",
                   help="parallel reader threads (default: %(default)s)")
    r.add_argument("--json", action="store_true", help="print a JSON summary instead of a line")
    add_privilege_options(r)

    chk = sub.add_parser("check", help="verify a snapshot without restoring it",
                         description="Verify SNAP without restoring it: header, bitmap and extent table "
                                     "are checked, then every stored page is read (O_DIRECT where the "
                                     "filesystem supports it) and each extent's CRC-32C compared. Exit 0 "
                                     "with one summary line when it is good; 1 with one line naming what "
                                     "is wrong (for page data: the pages that do not match).")
    chk.add_argument("snapshot", metavar="SNAP")
    chk.add_argument("--workers", type=positive_int, default=default_workers(), metavar="N",
                     help="parallel reader threads (default: %(default)s)")
    chk.add_argument("--json", action="store_true", help="print a JSON summary instead of a line")
    add_privilege_options(chk)

    g = sub.add_parser("migrate", help="send a paused guest's RAM to a pageferry receiver over TCP",
                       description="Migrate a paused guest's RAM file to `pageferry receive` on another "
                                   "host: a main channel plus N data channels, each inside TLS 1.3 "
                                   "(--psk-file or --tls-creds; plain TCP only on loopback or with "
                                   "--insecure) and checked by a handshake. Zero pages and "
                                   "holes travel as markers only; every packet's payload carries a "
                                   "CRC-32C. Without --dirty-log the guest must be paused: one that "
                                   "changed while it was copied fails the migration. Succeeds only "
                                   "once the receiver has checked everything and committed its copy "
                                   "(a two-phase handoff); on any failure nothing is committed there and "
                                   "a live guest runs on here. With --qmp, the whole QEMU VM: once every channel "
                                   "is up, pageferry stops it (a migration that cannot start never does), "
                                   "sends its device state inside the same TLS session, and leaves it "
                                   "stopped once the destination (receive --qmp) has loaded it; on any "
                                   "failure before that (a VM that did not stay stopped among them) it "
                                   "resumes it (doc/qemu.md).")
    add_guest_or_qmp(g, "; not with --dirty-log")
    g.add_argument("--to", required=True, metavar="tcp:HOST:PORT", help="where `pageferry receive` listens")
    g.add_argument("--channels", type=positive_int, default=2, metavar="N",
                   help="data connections (default: %(default)s)")
    g.add_argument("--compress", default="none", metavar="none|zstd[:LEVEL]",
                   help="zstd per packet (level 1..19, default 1); pages that do not shrink go raw "
                        "(default: none)")
    g.add_argument("--zerocopy", choices=["auto", "on", "sendfile", "off"], default="off",
                   help="how guest pages reach the socket: off copies them from the buffer the worker "
                        "checked them in (measured fastest over loopback, doc/architecture.md); "
                        "sendfile splices them from the guest file, on is MSG_ZEROCOPY, each failing where "
                        "the kernel refuses it; auto takes sendfile, else MSG_ZEROCOPY, else copies; the "
                        "summary says which (default: off)")
    g.add_argument("--workers", type=positive_int, default=default_workers(), metavar="N",
                   help="zero-checking / compressing worker processes (default: %(default)s)")
    g.add_argument("--psk-file", metavar="FILE", help=PSK_HELP)
    g.add_argument("--tls-creds", metavar="DIR", help=TLS_CREDS_HELP % ("client", "client",
                                                                        " and name the host of --to"))
    g.add_argument("--insecure", action="store_true",
                   help="send to a receiver that is not on this host without TLS: anyone on the path could "
                        "read the guest's memory or pose as the receiver (refused otherwise)")
    g.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="keep retrying a refused connection this long (default: %(default)s)")
    g.add_argument("--io-timeout", type=io_timeout, default=30, metavar="SECONDS",
                   help="give up when the receiver makes no progress this long: a dead link ends the "
                        "migration within it, and a live guest keeps running (1..86400, default: %(default)s)")
    g.add_argument("--dirty-log", metavar="LOG",
                   help="live migration: the VMM's dirty log (doc/vmm-interface.md); without it the guest "
                        "must be paused")
    g.add_argument("--downtime-limit", type=int, default=300, metavar="MS",
                   help="live: switch over once the dirty pages left fit in this many ms (default: %(default)s)")
    g.add_argument("--max-bandwidth", type=float, default=0, metavar="MIB/S",
                   help="live: cap on what is read and sent per second (default: no cap)")
    g.add_argument("--auto-converge", action="store_true",
                   help="live: ask the VMM to throttle the guest while it dirties faster than half the link")
    g.add_argument("--max-rounds", type=int, default=30, metavar="N",
                   help="live: give up (the guest keeps running) after N rounds (2..64, default: %(default)s)")
    g.add_argument("--pause-timeout", type=int, default=5000, metavar="MS",
                   help="live: how long the VMM may take to acknowledge a pause (default: %(default)s)")
    g.add_argument("--pause-lease", type=int, default=5000, metavar="MS",
                   help="live: while the guest is paused, pageferry renews a lease in the dirty log; a VMM "
                        "that sees it lapse for this long resumes the guest by itself, so a killed or hung "
                        "pageferry never leaves it paused (500..3600000, default: %(default)s)")
    g.add_argument("--json", action="store_true", help="print a JSON summary instead of a line")
    add_privilege_options(g)

    st = sub.add_parser("status", help="show running live migrations",
                        description="Round, bytes sent, dirty bytes left, dirty rate, throughput and "
                                    "expected downtime of each running live migration. Exit 1 when none runs.")
    st.add_argument("--json", action="store_true", help="print JSON")
    cn = sub.add_parser("cancel", help="cancel a running live migration",
                        description="Stop a running live migration: the guest resumes on the source, the "
                                    "destination reports the cancellation and keeps nothing.")
    cn.add_argument("--pid", type=int, help="which migration, when several run")

    gs = sub.add_parser("guestsim", help="run a synthetic guest that dirties its RAM (for live migration)",
                        description="Create RAM and LOG, then rewrite pages at RATE MiB/s, marking each in the "
                                    "dirty log as a VMM would, obeying pause/resume and throttle requests. "
                                    "On pause, writes the CRC-32C of its RAM to --checksum-file. Runs until "
                                    "SIGTERM/SIGINT.")
    gs.add_argument("--ram", required=True, metavar="FILE")
    gs.add_argument("--dirty-log", required=True, metavar="LOG")
    gs.add_argument("--size", default="1G")
    gs.add_argument("--rate", type=float, default=64, metavar="MIB/S", help="dirty rate (default: %(default)s)")
    gs.add_argument("--pattern", default="uniform", metavar="uniform|hot:MIB|sweep",
                    help="which pages get written (default: %(default)s)")
    gs.add_argument("--checksum-file", default="/dev/null", metavar="FILE")
    gs.add_argument("--seed", type=int, default=1)
    ck = sub.add_parser("checksum", help="print the CRC-32C of a RAM file (as guestsim does)")
    ck.add_argument("file")

    c = sub.add_parser("receive", help="receive a migration into a RAM file",
                       description="Listen for one `pageferry migrate` and write the guest RAM into FILE "
                                   "(sized from the sender's handshake). Connections are accepted and "
                                   "authenticated concurrently (TLS 1.3 with --psk-file or --tls-creds); "
                                   "one that does not authenticate within 10 s, or belongs to another "
                                   "sender, is closed with a log line and does not end the receive. "
                                   "Every packet is checked against "
                                   "the agreed geometry, and its payload against its CRC-32C, before use. "
                                   "FILE is written as FILE.pf-partial and renamed into place only when "
                                   "every channel's totals and checksums match and the sender confirms "
                                   "the commit. "
                                   "With --in-place, FILE is an existing RAM file of the guest's size (the "
                                   "destination VMM's, pre-allocated or not) written where it is; it is "
                                   "marked by FILE.pf-incomplete until the transfer is complete. With "
                                   "--qmp, into a QEMU started with -incoming defer: its RAM file in place, "
                                   "then its device state from the sender (migrate --qmp), then the guest "
                                   "runs (doc/qemu.md).")
    c.add_argument("--listen", required=True, metavar="ADDR:PORT",
                   help="address to listen on, e.g. 0.0.0.0:4444 (not loopback: needs --psk-file, --tls-creds "
                        "or --insecure)")
    cdst = c.add_mutually_exclusive_group(required=True)
    cdst.add_argument("--into", metavar="FILE",
                      help="destination RAM file (replaced on success; with --in-place, overwritten)")
    cdst.add_argument("--qmp", metavar="SOCKET",
                      help="the QMP unix socket of a QEMU waiting with -incoming defer")
    c.add_argument("--in-place", action="store_true",
                   help="write into the existing FILE instead of creating it: its size must be the guest's; "
                        "which of its pages hold data is learned before the sender connects, and pages "
                        "that are zero at the source are zeroed in it")
    c.add_argument("--zeroed", action="store_true",
                   help=ZEROED_HELP % "reads FILE before the sender connects")
    c.add_argument("--no-resume", action="store_true",
                   help="with --qmp: leave the received guest paused (default: resume it)")
    c.add_argument("--workers", type=positive_int, default=default_workers(), metavar="N",
                   help="decompressing worker processes (default: %(default)s)")
    c.add_argument("--psk-file", metavar="FILE", help=PSK_HELP)
    c.add_argument("--tls-creds", metavar="DIR", help=TLS_CREDS_HELP % ("server", "server", ""))
    c.add_argument("--insecure", action="store_true",
                   help="listen on an address other than loopback without TLS: anyone who can connect could "
                        "write this RAM file, and anyone on the path read it (refused otherwise)")
    c.add_argument("--accept-timeout", type=float, default=0, metavar="SECONDS",
                   help="give up when no sender connects this long (default: wait forever)")
    c.add_argument("--io-timeout", type=io_timeout, default=30, metavar="SECONDS",
                   help="give up when the sender makes no progress this long: a dead link is noticed within "
                        "it, a silent sender on a live link a little later (1..86400, default: %(default)s)")
    # The receiver's former name for it.
    c.add_argument("--idle-timeout", dest="io_timeout", type=io_timeout, default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)
    c.add_argument("--json", action="store_true", help="print a JSON summary instead of a line")
    add_privilege_options(c)

    v = sub.add_parser("verify", help="compare two RAM files (exit 0 equal, 1 different)",
                       description="Compare two RAM files and name the first differing page. "
                                   "Exit 0 when equal, 1 when different, 2 when they cannot be read.")
    v.add_argument("a", metavar="A")
    v.add_argument("b", metavar="B")
    v.add_argument("--page-size", type=int, default=4096, help="page size for reporting (default 4096)")

    m = sub.add_parser("mkguest", help="make a synthetic guest RAM file",
                       description="Make a synthetic guest RAM image: zero, random, text (English-like), "
                                   "mixed (scattered 50% zero / 30% text / 20% random pages) or sparse "
                                   "(mostly holes).")
    m.add_argument("pattern", choices=["zero", "random", "text", "mixed", "sparse"])
    m.add_argument("size", help="size with K/M/G suffix, a multiple of 4 KiB")
    m.add_argument("file")
    m.add_argument("--seed", type=int, default=1)

    d = sub.add_parser("demo", help="snapshot, restore, migrate and live-migrate a synthetic 1 GiB guest",
                       description="Make a synthetic mixed 1 GiB guest in /dev/shm, snapshot it to a "
                                   "file on disk, restore it into /dev/shm, migrate it over loopback "
                                   "to a receiver, then live-migrate a guestsim guest that keeps "
                                   "writing 64 MiB/s; verify each copy, print the summaries and "
                                   "clean up.")
    d.add_argument("--size", default="1G", help="guest size (default 1G)")
    d.add_argument("--dir", default=None, help="directory on a real disk for the snapshot "
                                              "(default: a temporary directory under /var/tmp)")
    d.add_argument("--workers", type=positive_int, default=default_workers(), metavar="N")
    if only is not None and not sub.found:
        return build_parser()  # not a command: the full parser says which there are
    return p


def tool(ctx, name, args):
    import subprocess
    return subprocess.run([ctx.stage(name)] + args).returncode


def demo(ctx, args):
    import shutil
    import subprocess
    import tempfile

    import pf_migrate
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    work = tempfile.mkdtemp(prefix="pageferry-demo-", dir=args.dir or "/var/tmp")
    guest = os.path.join(shm, f"pageferry-demo-{os.getpid()}.ram")
    copy = guest + ".restored"
    migrated = guest + ".migrated"
    live_ram, live_log, live_crc = guest + ".live", guest + ".dirtylog", guest + ".crc"
    snap = os.path.join(work, "demo.pfs")
    try:
        print(f"== making a {args.size} mixed guest: {guest}", flush=True)
        if tool(ctx, "pageferry-mkguest", ["mixed", args.size, guest]) != 0:
            return 1
        print(f"== snapshot to {snap}", flush=True)
        pf_jobs.snapshot(ctx, guest, snap, args.workers)
        usage = os.stat(snap).st_blocks * 512
        print(f"   snapshot takes {usage / 2**20:.0f} MiB on disk for a {os.stat(guest).st_size / 2**20:.0f} MiB guest")
        print(f"== restore into {copy}", flush=True)
        pf_jobs.restore(ctx, snap, copy, args.workers)
        print("== verify", flush=True)
        rc = tool(ctx, "pageferry-verify", [guest, copy])
        if rc != 0:
            print("demo: FAILED, the restored copy differs")
            return rc
        os.unlink(copy)
        port = 20000 + os.getpid() % 20000
        print(f"== migrate over loopback (127.0.0.1:{port}, 2 channels, zstd) into {migrated}", flush=True)
        rx = subprocess.Popen([sys.argv[0], "receive", "--listen", f"127.0.0.1:{port}", "--into", migrated,
                               "--accept-timeout", "30"])
        try:
            pf_migrate.migrate(ctx, guest, f"tcp:127.0.0.1:{port}", 2, "zstd", "auto", args.workers, None, 10)
        finally:
            if rx.wait(timeout=60) != 0:
                print("demo: FAILED, the receiver failed")
                return 1
        print("== verify", flush=True)
        rc = tool(ctx, "pageferry-verify", [guest, migrated])
        if rc != 0:
            print("demo: FAILED, the migrated copy differs")
            return rc
        os.unlink(migrated)
        return demo_live(ctx, args, live_ram, live_log, live_crc, migrated, port + 1)
    finally:
        for f in (guest, copy, migrated, live_ram, live_log, live_crc):
            if os.path.exists(f):
                os.unlink(f)
        shutil.rmtree(work, ignore_errors=True)


def demo_live(ctx, args, ram, log, crc, into, port):
    import subprocess
    import time

    import pf_migrate
    print(f"== live migration: guestsim writes 64 MiB/s into {args.size} of RAM while it moves "
          f"(127.0.0.1:{port})", flush=True)
    sim = subprocess.Popen([ctx.stage("pageferry-guestsim"), "run", ram, log, args.size, "64", "uniform", crc, "1"],
                           stdout=subprocess.PIPE, text=True)
    rx = None
    try:
        if sim.stdout.readline().strip() != "ready":
            print("demo: FAILED, guestsim did not start")
            return 1
        rx = subprocess.Popen([sys.argv[0], "receive", "--listen", f"127.0.0.1:{port}", "--into", into,
                               "--accept-timeout", "30"])
        pf_migrate.migrate(ctx, ram, f"tcp:127.0.0.1:{port}", 2, "none", "auto", args.workers, None, 10,
                           {"dirty_log": log, "downtime_limit": 300, "max_bandwidth": 0, "auto_converge": True,
                            "max_rounds": 30, "pause_timeout": 5000, "pause_lease": 5000})
        if rx.wait(timeout=60) != 0:
            print("demo: FAILED, the receiver failed")
            return 1
        for _ in range(600):
            if os.path.exists(crc):
                break
            time.sleep(0.05)
        with open(crc) as f:
            at_pause = f.read().strip()
        got = subprocess.run([ctx.stage("pageferry-guestsim"), "checksum", into], capture_output=True,
                             text=True).stdout.strip()
        print(f"== guest RAM at the pause: crc32c {at_pause}; destination: {got}")
        print("demo: OK" if got == at_pause else "demo: FAILED, the live copy differs")
        return 0 if got == at_pause else 1
    finally:
        sim.terminate()
        sim.wait()
        if rx and rx.poll() is None:
            rx.kill()


def main(stage_dirs, argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv and not argv[0].startswith("-") else None).parse_args(argv)
    ctx = Context(stage_dirs, getattr(args, "json", False))
    try:
        apply_privilege_options(args)
        if args.cmd == "snapshot" and args.qmp:
            import pf_qemu
            pf_qemu.snapshot(ctx, args.qmp, args.out, args.workers)
        elif args.cmd == "snapshot":
            pf_jobs.snapshot(ctx, args.guest, args.out, args.workers)
        elif args.cmd == "restore" and args.qmp:
            if args.in_place:
                raise pf_jobs.JobError("--in-place goes with --into (with --qmp the VMM's RAM file is "
                                       "always written in place)", 2)
            import pf_qemu
            pf_qemu.restore(ctx, args.snapshot, args.qmp, args.workers, resume_guest=not args.no_resume,
                            zeroed=args.zeroed)
        elif args.cmd == "restore":
            if args.no_resume:
                raise pf_jobs.JobError("--no-resume goes with --qmp", 2)
            if args.zeroed and not args.in_place:
                raise pf_jobs.JobError("--zeroed goes with --in-place or --qmp", 2)
            pf_jobs.restore(ctx, args.snapshot, args.into, args.workers, in_place=args.in_place,
                            zeroed=args.zeroed)
        elif args.cmd == "check":
            import pf_check
            pf_check.check(ctx, args.snapshot, args.workers)
        elif args.cmd == "migrate":
            import pf_migrate
            live = None
            if args.dirty_log:
                if not 2 <= args.max_rounds <= 64:
                    raise pf_jobs.JobError("--max-rounds must be 2..64", 2)
                if not 500 <= args.pause_lease <= 3600000:
                    raise pf_jobs.JobError("--pause-lease must be 500..3600000 ms", 2)
                live = {"dirty_log": args.dirty_log, "downtime_limit": args.downtime_limit,
                        "max_bandwidth": args.max_bandwidth, "auto_converge": args.auto_converge,
                        "max_rounds": args.max_rounds, "pause_timeout": args.pause_timeout,
                        "pause_lease": args.pause_lease}
            def job(guest, take_device_state=None, finish=None, held_stopped=None):
                pf_migrate.migrate(ctx, guest, args.to, args.channels, args.compress, args.zerocopy,
                                   args.workers, args.psk_file, args.connect_timeout, live, args.io_timeout,
                                   args.insecure, args.tls_creds, take_device_state, finish, held_stopped)
            if args.qmp and live:
                raise pf_jobs.JobError("--qmp moves a stopped VM: it does not go with --dirty-log", 2)
            if args.qmp:
                import pf_qemu
                pf_qemu.migrate(ctx, args.qmp, job)
            else:
                job(args.guest)
        elif args.cmd == "status":
            import pf_status
            return pf_status.status(ctx)
        elif args.cmd == "cancel":
            import pf_status
            return pf_status.cancel(ctx, args.pid)
        elif args.cmd == "guestsim":
            # Become the guest: signals sent to `pageferry guestsim` must reach it.
            binary = ctx.stage("pageferry-guestsim")
            sys.stdout.flush()
            os.execv(binary, [binary, "run", args.ram, args.dirty_log, args.size, str(args.rate), args.pattern,
                              args.checksum_file, str(args.seed)])
        elif args.cmd == "checksum":
            return tool(ctx, "pageferry-guestsim", ["checksum", args.file])
        elif args.cmd == "receive":
            import pf_migrate
            def job(into, load_state=None, finish=None):
                pf_migrate.receive(ctx, args.listen, into, args.workers, args.psk_file, args.accept_timeout,
                                   args.io_timeout, args.in_place or bool(load_state), args.insecure,
                                   args.tls_creds, load_state, finish, zeroed=args.zeroed)
            if args.no_resume and not args.qmp:
                raise pf_jobs.JobError("--no-resume goes with --qmp", 2)
            if args.zeroed and not (args.in_place or args.qmp):
                raise pf_jobs.JobError("--zeroed goes with --in-place or --qmp", 2)
            if args.qmp:
                import pf_qemu
                pf_qemu.receive(ctx, args.qmp, job, resume_guest=not args.no_resume)
            else:
                job(args.into)
        elif args.cmd == "verify":
            return tool(ctx, "pageferry-verify", ["--page-size", str(args.page_size), args.a, args.b])
        elif args.cmd == "mkguest":
            return tool(ctx, "pageferry-mkguest", [args.pattern, args.size, args.file, str(args.seed)])
        elif args.cmd == "demo":
            return demo(ctx, args)
    except pf_jobs.JobError as e:
        print(f"pageferry {args.cmd}: {e}", file=sys.stderr)
        return e.exit_code
    except (FileNotFoundError, RuntimeError) as e:
        # RuntimeError: the control segment could not be made (pf_segment),
        # e.g. stage binaries from a different build than this script.
        print(f"pageferry {args.cmd}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pageferry {args.cmd}: interrupted", file=sys.stderr)
        return 130
    return 0
