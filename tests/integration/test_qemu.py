#!/usr/bin/python3
"""pageferry driving a real QEMU over QMP (issue 15): `snapshot --qmp` and
`restore --qmp` of a booted guest, and `migrate --qmp` to `receive --qmp`
across a veth pair inside TLS (tests/integration/qemu_guest.py: Debian's
cloud kernel, a busybox initramfs, QEMU 10 under TCG, 256 MiB of RAM in a
shared memory-backend-file).

- A running guest is snapshotted and keeps running; restored into a fresh
  QEMU started with -incoming defer, it continues where it was stopped: its
  counter goes on from the snapshot's value, the checksum of its 64 MiB of
  random bytes still matches, and it keeps running. --no-resume leaves the
  destination paused until the test resumes it.
- Refusals, each with its one-line message: RAM QEMU would put in its own
  stream (memory-backend-memfd, share=off), two RAM backends, a snapshot
  without device state, a destination QEMU not waiting for an incoming
  migration. A refused snapshot leaves the guest as it was (a running one
  keeps running), a refused restore leaves the destination QEMU and its RAM
  untouched.

Each guest boot costs ~5 s under TCG, so one booted source and its snapshot
serve every restore test (setUpClass); the refusals that need no running
guest use QEMUs started with -S, which never boot. No timing is asserted:
waits are bounded, and what is checked is what the guests print."""
import hashlib
import json
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import pftest  # noqa: E402
import qemu_guest  # noqa: E402
from pftest import DISK, SHM, pf  # noqa: E402
from qemu_guest import start_guest  # noqa: E402

RAM_BYTES = qemu_guest.RAM_MIB << 20


def status(guest):
    """QEMU's run state (query-status), asked on the test's own QMP
    connection, which is closed again: pageferry needs the socket next."""
    try:
        return guest.qmp().status()
    finally:
        guest.close_qmp()


def digest(path):
    """SHA-256 of a guest RAM file (sparse: holes read as zeros quickly)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Base(pftest.Workspace):
    def initrd(self):
        return qemu_guest.build_initramfs(self.path("initrd.gz"))

    def resume_and_stop_at(self, p, hook, other_qmp):
        """Once pageferry (p, started with PAGEFERRY_TEST_FE_HOOK=hook) has
        stopped itself at hook, another QMP client (other_qmp: a second
        monitor of the same QEMU) resumes the VM and stops it again; then
        pageferry goes on."""
        self.wait_stderr(p, f"stopped at {hook}")
        self.stopped(p.pid)
        other = qemu_guest.QMP(other_qmp)
        other.execute("cont")
        other.execute("stop")
        other.close()
        os.kill(p.pid, signal.SIGCONT)

    def assert_never_paused(self, watcher):
        """The guest behind watcher (a second QMP monitor, connected before
        the job) runs and was never stopped meanwhile: no STOP or RESUME
        event came; closes watcher."""
        self.assertEqual(watcher.status(), "running")  # also reads the events that came meanwhile
        self.assertEqual([e["event"] for e in watcher.events if e["event"] in ("STOP", "RESUME")], [])
        watcher.close()

    def assert_refused(self, r, command, *words):
        """Exit 1 and one line on stderr, from `command`, naming words."""
        self.assertEqual(r.returncode, 1, f"stdout: {r.stdout} stderr: {r.stderr}")
        self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
        self.assertTrue(r.stderr.startswith(f"pageferry {command}: "), r.stderr)
        for w in words:
            self.assertIn(w, r.stderr)


class SnapshotRestore(Base):
    """One booted source, snapshotted once while running; the tests restore
    that snapshot into fresh destination QEMUs."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        shm = cls.class_tempdir(SHM)
        cls.class_env = dict(os.environ, PAGEFERRY_RUN_DIR=cls.class_tempdir(None))
        cls.initrd_path = qemu_guest.build_initramfs(os.path.join(shm, "initrd.gz"))
        # A second QMP monitor: another client of the same QEMU, which
        # pageferry's own connection does not see (test_guest_resumed...).
        cls.other_qmp = os.path.join(shm, "src-other.qmp")
        cls.source = start_guest(shm, "src", os.path.join(shm, "src.ram"), cls.initrd_path,
                                 extra=("-qmp", f"unix:{cls.other_qmp},server=on,wait=off"))
        cls.addClassCleanup(cls.source.kill)
        cls.source.wait_ready()
        # Far enough past 0 that a destination that rebooted (counting from
        # 0 again) cannot pass for one that continued.
        cls.source.wait_for_counter(3)
        cls.snap = os.path.join(cls.class_tempdir(DISK), "src.pfs")
        # The counter k the guest had printed last when pageferry stopped it
        # is unknown to the test: the guest is resumed afterwards and counts
        # on (stopping it later through the test's QMP would not tell k
        # either). It is bracketed instead: lo was printed before the
        # command began, so lo <= k; once the command has returned, the
        # console file holds every line up to k except, at most, line k
        # itself, whose tail may have been in the UART's FIFO at `stop`
        # (those bytes travel in the device state and are sent after
        # `cont`; lines are 0.3 s apart, so only one can be unfinished):
        # k <= hi + 1. A correct destination prints k + 1 first; one
        # restored from an older state, or rebooted, starts at or below lo.
        cls.lo = cls.source.last_counter()
        cls.snapshot_run = pf("snapshot", "--qmp", cls.source.qmp_path, "--out", cls.snap, "--json",
                              env=cls.class_env)
        cls.hi = cls.source.last_counter()

    def snapshot_summary(self):
        r = self.snapshot_run
        self.assertEqual(r.returncode, 0, f"pageferry snapshot --qmp: {r.stderr.strip()}")
        return json.loads(r.stdout)

    def destination(self, name):
        """A fresh QEMU with the source's command line plus -incoming defer,
        its RAM file its own; QMP up and "inmigrate" before pageferry
        connects (pageferry does not retry a socket not yet listening)."""
        self.snapshot_summary()
        g = start_guest(self.shm, name, self.path(f"{name}.ram"), self.initrd_path, procs=self.procs,
                        incoming=True)
        self.assertEqual(status(g), "inmigrate")
        return g

    def restore(self, guest, *args):
        r = pf("restore", self.snap, "--qmp", guest.qmp_path, "--json", *args, env=self.env)
        self.assertEqual(r.returncode, 0, f"pageferry restore --qmp: {r.stderr.strip()}")
        s = json.loads(r.stdout)
        self.assertEqual(s["device_state_bytes"], self.snapshot_summary()["device_state_bytes"])
        return s

    def assert_continues(self, dest, sums=2):
        """dest, running, goes on from the source's state at the snapshot:
        its first counter is k + 1 (see setUpClass for the bracket), its
        counters and the source's up to k form one unbroken sequence, its
        region checksums are OK and equal the source's reference sum, and
        it keeps counting."""
        checks = dest.wait_for_sums(sums)
        seq = dest.counters()
        self.assertTrue(seq, "the destination printed no counter")
        first = seq[0]
        self.assertGreater(first, self.lo, f"the destination started at {first}, before the snapshot")
        self.assertLessEqual(first, self.hi + 2, f"the destination started at {first}, after the snapshot")
        self.assertTrue(qemu_guest.is_consecutive(seq), seq)
        # The source runs on and prints k as well (the test of that is
        # test_source_keeps_running); up to k it is the destination's past.
        self.source.wait_for_counter(first - 1)
        src = self.source.counters()
        self.assertIn(first - 1, src)
        joined = src[:src.index(first - 1) + 1] + seq
        self.assertTrue(qemu_guest.is_consecutive(joined), joined)
        sum0 = self.source.sum0()
        self.assertEqual(checks, [("OK", sum0)] * len(checks))
        dest.wait_for_counter(seq[-1] + 3)
        self.assertEqual(status(dest), "running")

    def test_snapshot_summary(self):
        s = self.snapshot_summary()
        self.assertEqual(s["qmp"], self.source.qmp_path)
        self.assertIsInstance(s["device_state_bytes"], int)
        self.assertGreater(s["device_state_bytes"], 0)
        # The guest was running: stop to cont is the downtime, a number.
        self.assertIsInstance(s["downtime_ms"], (int, float))
        self.assertNotIsInstance(s["downtime_ms"], bool)
        self.assertGreaterEqual(s["downtime_ms"], 0)
        self.assertEqual(s["guest_bytes"], RAM_BYTES)
        self.assertTrue(os.path.exists(self.snap))
        # QEMU held the VM stopped: no re-read of its RAM after the copy.
        self.assertEqual(s["unchanged_guest"], "qemu-kept-it-stopped")

    def test_source_keeps_running(self):
        """pageferry resumed the source it had stopped: it counts on, and
        its region is intact."""
        self.snapshot_summary()
        self.assertEqual(status(self.source), "running")
        self.source.wait_for_counter(self.hi + 3)
        n = len(self.source.wait_for_sums(1))
        checks = self.source.wait_for_sums(n + 1)
        self.assertEqual(checks, [("OK", self.source.sum0())] * len(checks))

    def test_snapshot_keeps_the_users_capabilities(self):
        """A QEMU the user set up for its own multifd migrations: pageferry
        turns multifd off for its pipe (QEMU refuses one with it) and sets
        every capability back afterwards."""
        self.snapshot_summary()
        q = self.source.qmp()
        q.execute("migrate-set-capabilities", capabilities=[{"capability": "multifd", "state": True}])
        self.source.close_qmp()
        out = os.path.join(self.disk, "again.pfs")
        r = pf("snapshot", "--qmp", self.source.qmp_path, "--out", out, env=self.env)
        self.assertEqual(r.returncode, 0, r.stderr)
        caps = {c["capability"]: c["state"] for c in self.source.qmp().execute("query-migrate-capabilities")}
        self.source.close_qmp()
        self.assertEqual((caps["multifd"], caps["x-ignore-shared"]), (True, False))
        q = self.source.qmp()
        q.execute("migrate-set-capabilities", capabilities=[{"capability": "multifd", "state": False}])
        self.source.close_qmp()
        self.assertEqual(status(self.source), "running")

    def test_snapshot_that_cannot_start_never_stops_the_guest(self):
        """The guest is stopped only once the snapshot file is made and the
        writer and workers run: one whose file cannot be created fails
        with the guest running all along (no STOP event on another
        monitor) and leaves no snapshot."""
        self.snapshot_summary()
        watcher = qemu_guest.QMP(self.other_qmp)
        out = os.path.join(self.disk, "no-such-dir", "x.pfs")
        r = pf("snapshot", "--qmp", self.source.qmp_path, "--out", out, env=self.env)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stderr.strip(), f"pageferry snapshot: cannot create snapshot {out}.pf-partial: "
                                           "No such file or directory")
        self.assert_never_paused(watcher)
        now = self.source.last_counter()
        self.source.wait_for_counter(now + 2)

    def test_guest_resumed_while_copied_is_refused(self):
        """Another QMP client resumes the VM (and stops it again) while
        pageferry copies its RAM: pageferry, which skipped the re-read
        because QEMU held the VM stopped, sees the RESUME once every page
        is read and commits nothing; the guest, running before, runs on."""
        self.snapshot_summary()
        out = os.path.join(self.disk, "resumed.pfs")
        p = self.spawn([pftest.PF, "snapshot", "--qmp", self.source.qmp_path, "--out", out],
                       env={"PAGEFERRY_TEST_FE_HOOK": "snapshot:guest-read"})
        self.resume_and_stop_at(p, "snapshot:guest-read", self.other_qmp)
        code, _, err = self.finish(p)
        self.assertEqual(code, 1, err)
        self.assertEqual(err, f"pageferry snapshot: the guest changed while it was copied: QEMU at "
                              f"{self.source.qmp_path} reported RESUME meanwhile (another QMP client?); "
                              "nothing was committed\n")
        self.assertFalse(os.path.exists(out))
        self.assertFalse(os.path.exists(out + ".pf-partial"))
        self.assertEqual(status(self.source), "running")
        self.source.wait_for_counter(self.source.last_counter() + 2)

    def test_guest_runs_again_before_the_snapshot_is_committed(self):
        """Once every page is out of the guest, pageferry resumes it and
        writes the rest meanwhile: at the last step before the commit the
        guest already runs and the snapshot is not yet in place; then it
        is committed."""
        self.snapshot_summary()
        watcher = qemu_guest.QMP(self.other_qmp)
        out = os.path.join(self.disk, "early.pfs")
        p = self.spawn([pftest.PF, "snapshot", "--qmp", self.source.qmp_path, "--out", out, "--json"],
                       env={"PAGEFERRY_TEST_FE_HOOK": "snapshot:before-commit"})
        self.wait_stderr(p, "stopped at snapshot:before-commit")
        self.stopped(p.pid)
        self.assertEqual(watcher.status(), "running")
        self.assertEqual([e["event"] for e in watcher.events if e["event"] in ("STOP", "RESUME")],
                         ["STOP", "RESUME"])
        watcher.close()
        self.assertFalse(os.path.exists(out))
        self.assertTrue(os.path.exists(out + ".pf-partial"))
        os.kill(p.pid, signal.SIGCONT)
        code, stdout, err = self.finish(p)
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(stdout)["unchanged_guest"], "qemu-kept-it-stopped")
        self.assertTrue(os.path.exists(out))
        os.unlink(out)

    def test_snapshot_failing_after_the_guest_runs_again_leaves_it_running(self):
        """The writer is killed once it said every page was read, so the
        guest runs again and the snapshot is never finished: pageferry fails
        with one line naming the writer, leaves no snapshot file, and the
        guest, stopped and resumed once, runs on."""
        self.snapshot_summary()
        watcher = qemu_guest.QMP(self.other_qmp)
        out = os.path.join(self.disk, "killed.pfs")
        p = self.spawn([pftest.PF, "snapshot", "--qmp", self.source.qmp_path, "--out", out],
                       env={"PAGEFERRY_TEST_HOOK": "guest-read:stop"})
        writer = self.wait_child(p, "pageferry-writer")
        self.stopped(writer)
        deadline = time.monotonic() + 30
        while watcher.status() != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(watcher.status(), "running")
        os.kill(writer, signal.SIGKILL)
        code, _, err = self.finish(p)
        self.assertEqual(code, 3, err)
        self.assertEqual(err, "pageferry snapshot: pageferry-writer was killed by signal 9 (SIGKILL)\n")
        self.assertFalse(os.path.exists(out))
        self.assertFalse(os.path.exists(out + ".pf-partial"))
        self.assertEqual(watcher.status(), "running")
        self.assertEqual([e["event"] for e in watcher.events if e["event"] in ("STOP", "RESUME")],
                         ["STOP", "RESUME"])
        watcher.close()
        self.source.wait_for_counter(self.source.last_counter() + 2)

    def test_restore_continues_where_source_stopped(self):
        dest = self.destination("dst")
        s = self.restore(dest)
        self.assertIs(s["resumed"], True)
        self.assert_continues(dest)

    def test_restore_runs_the_guest_before_its_stage_has_ended(self):
        """The restore stage says every page is written before its exit
        (which waits out its AIO contexts' teardown): QEMU loads the state
        and runs meanwhile. The test stops the stage right after that word;
        the destination runs all the same, and the command ends once the
        stage does."""
        self.snapshot_summary()
        other = os.path.join(self.shm, "dst3-other.qmp")  # pageferry holds the first monitor
        dest = start_guest(self.shm, "dst3", self.path("dst3.ram"), self.initrd_path, procs=self.procs,
                           incoming=True, extra=("-qmp", f"unix:{other},server=on,wait=off"))
        self.assertEqual(status(dest), "inmigrate")
        p = self.spawn([pftest.PF, "restore", self.snap, "--qmp", dest.qmp_path, "--json"],
                       env={"PAGEFERRY_TEST_HOOK": "restored:stop"})
        stage = self.wait_child(p, "pageferry-restore")
        self.stopped(stage)
        watcher = qemu_guest.QMP(other)
        deadline = time.monotonic() + 30
        while watcher.status() != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(watcher.status(), "running")
        watcher.close()
        self.assertIsNone(p.poll())
        self.assertFalse(os.path.exists(dest.ram + ".pf-incomplete"))
        os.kill(stage, signal.SIGCONT)
        code, out, err = self.finish(p)
        self.assertEqual(code, 0, err)
        self.assertIs(json.loads(out)["resumed"], True)
        self.assert_continues(dest)

    def test_restore_no_resume_then_snapshot_of_paused_guest(self):
        """--no-resume: the destination is loaded but paused until the
        test's `cont`. Before that, a `snapshot --qmp` of the paused guest
        reports no downtime and leaves it paused."""
        dest = self.destination("dst2")
        s = self.restore(dest, "--no-resume")
        self.assertIs(s["resumed"], False)
        self.assertEqual(status(dest), "paused")
        self.assertEqual(dest.qmp().execute("query-migrate").get("status"), "completed")
        dest.close_qmp()

        again = self.disk_path("dst2.pfs")
        r = pf("snapshot", "--qmp", dest.qmp_path, "--out", again, "--json", env=self.env)
        self.assertEqual(r.returncode, 0, f"pageferry snapshot --qmp (paused guest): {r.stderr.strip()}")
        s = json.loads(r.stdout)
        self.assertIsNone(s["downtime_ms"])
        self.assertGreater(s["device_state_bytes"], 0)
        # After an outgoing migration QEMU says "postmigrate" rather than
        # "paused"; either way the guest does not run.
        self.assertIn(status(dest), ("paused", "postmigrate"))

        dest.qmp().execute("cont")
        dest.qmp().wait_event("RESUME")
        dest.close_qmp()
        self.assert_continues(dest, sums=1)

    def test_restore_needs_incoming_defer(self):
        """A QEMU not waiting for an incoming migration (here one started
        with -S) is refused before its RAM is written."""
        self.snapshot_summary()
        dest = start_guest(self.shm, "noinc", self.path("noinc.ram"), self.initrd_path, procs=self.procs,
                           paused=True)
        self.assertEqual(status(dest), "prelaunch")
        before = digest(dest.ram)
        r = pf("restore", self.snap, "--qmp", dest.qmp_path, env=self.env)
        self.assert_refused(r, "restore", "-incoming defer")
        self.assertEqual(status(dest), "prelaunch")
        self.assertEqual(digest(dest.ram), before, "the refused restore wrote the destination's RAM")
        self.assertFalse(os.path.exists(dest.ram + ".pf-incomplete"), "an untouched RAM file marked incomplete")

    def test_restore_refuses_snapshot_without_device_state(self):
        """A .pfs from plain `snapshot --guest` holds RAM only: restoring it
        with --qmp is refused and the waiting QEMU is left as it was."""
        ram = self.path("plain.ram")
        pf("mkguest", "random", f"{qemu_guest.RAM_MIB}M", ram, check=0)
        plain = self.disk_path("plain.pfs")
        pf("snapshot", "--guest", ram, "--out", plain, check=0)
        dest = self.destination("dst3")
        before = digest(dest.ram)
        r = pf("restore", plain, "--qmp", dest.qmp_path, env=self.env)
        self.assert_refused(r, "restore", "no device state")
        self.assertEqual(status(dest), "inmigrate")
        self.assertEqual(digest(dest.ram), before, "the refused restore wrote the destination's RAM")
        self.assertFalse(os.path.exists(dest.ram + ".pf-incomplete"), "an untouched RAM file marked incomplete")


class SnapshotRefusals(Base):
    """RAM that pageferry cannot move beside QEMU's own stream is refused
    before the guest is stopped."""

    def refuse(self, backend, *words, boot=False):
        """snapshot --qmp of a guest with this backend: refused naming
        words, nothing written; the guest's run state unchanged. A booted
        guest must also go on counting."""
        g = start_guest(self.shm, backend, self.path(f"{backend}.ram"), self.initrd(), procs=self.procs,
                        backend=backend, paused=not boot)
        if boot:
            g.wait_ready()
        state = status(g)
        out = self.disk_path(f"{backend}.pfs")
        r = pf("snapshot", "--qmp", g.qmp_path, "--out", out, env=self.env)
        self.assert_refused(r, "snapshot", *words)
        self.assert_no_output(out)
        self.assertEqual(status(g), state)
        if boot:
            g.wait_for_counter(g.last_counter() + 3)

    def test_memfd_backend(self):
        # Booted: the one refusal that also shows the guest still running.
        self.refuse("memfd", "memory-backend-memfd", "memory-backend-file", boot=True)

    def test_file_backend_without_share(self):
        self.refuse("file-private", "share=off", "share=on")

    def test_two_ram_backends(self):
        self.refuse("numa2", "ram0", "ram1")


class NeverStarted(Base):
    def test_snapshot_of_a_vm_never_started(self):
        """A QEMU created with -S whose VM never ran ("prelaunch") is
        moved as a paused one: its RAM file bit-exact in the snapshot, and
        it is not started."""
        g = start_guest(self.shm, "pre", self.path("pre.ram"), self.initrd(), procs=self.procs, paused=True)
        self.assertEqual(status(g), "prelaunch")
        with open(g.ram, "r+b") as f:
            f.write(os.urandom(1 << 20))  # something to copy besides zeros
        out = self.disk_path("pre.pfs")
        r = pf("snapshot", "--qmp", g.qmp_path, "--out", out, "--json", env=self.env)
        self.assertEqual(r.returncode, 0, r.stderr)
        s = json.loads(r.stdout)
        self.assertIsNone(s["downtime_ms"])
        self.assertEqual(s["unchanged_guest"], "qemu-kept-it-stopped")
        self.assertIn(status(g), ("prelaunch", "postmigrate"))
        into = self.path("pre-restored.ram")
        self.assertEqual(pf("restore", out, "--into", into, env=self.env).returncode, 0)
        self.assert_equal_ram(g.ram, into)


class Migration(pftest.VethWorkspace, Base):
    """migrate --qmp to receive --qmp across a veth pair between two network
    namespaces (10.x addresses inside them only), inside TLS: the two QEMUs
    run outside them (QMP is a unix socket, reachable from both)."""

    veth_name, veth_subnet = "q", "10.203.0"

    def setUp(self):
        super().setUp()
        self.key = self.path("psk")
        with open(self.key, "wb") as f:
            f.write(os.urandom(32))
        self.initrd_path = self.initrd()

    def guests(self):
        # A second QMP monitor on the source: another client of it.
        self.other_qmp = self.path("src-other.qmp")
        src = start_guest(self.shm, "src", self.path("src.ram"), self.initrd_path, procs=self.procs,
                          extra=("-qmp", f"unix:{self.other_qmp},server=on,wait=off"))
        dst = start_guest(self.shm, "dst", self.path("dst.ram"), self.initrd_path, procs=self.procs,
                          incoming=True)
        src.wait_ready()
        src.wait_for_counter(3)  # far from 0: a rebooted guest cannot pass for a moved one
        self.assertEqual(status(dst), "inmigrate")
        return src, dst

    def start_receive(self, dst, *extra):
        port = pftest.free_port()
        rx = self.spawn([pftest.PF, "receive", "--listen", f"{self.veth.addr[1]}:{port}", "--qmp", dst.qmp_path,
                         "--psk-file", self.key, "--accept-timeout", 60, "--json", *extra], ns=self.veth.ns[1])
        return rx, f"tcp:{self.veth.addr[1]}:{port}"

    def migrate(self, src, to, *extra, env=None):
        return self.spawn([pftest.PF, "migrate", "--qmp", src.qmp_path, "--to", to, "--psk-file", self.key,
                           "--json", *extra], ns=self.veth.ns[0], env=env)

    def test_migrate_over_veth_with_tls(self):
        src, dst = self.guests()
        rx, to = self.start_receive(dst)
        tx = self.migrate(src, to)
        tcode, tout, terr = self.finish(tx)
        rcode, rout, rerr = self.finish(rx)
        self.assertEqual((tcode, rcode), (0, 0), f"migrate: {terr} receive: {rerr}")
        sent, received = json.loads(tout), json.loads(rout)
        self.assertEqual(sent["tls"], "psk")
        self.assertEqual(sent["unchanged_guest"], "qemu-kept-it-stopped")
        self.assertGreater(sent["device_state_bytes"], 0)
        self.assertEqual(received["device_state_bytes"], sent["device_state_bytes"])
        self.assertIsInstance(sent["downtime_ms"], (int, float))
        self.assertIs(received["resumed"], True)
        # Both QEMUs keep the user's capabilities: x-ignore-shared was on only for the pipe.
        for g in (src, dst):
            caps = {c["capability"]: c["state"] for c in g.qmp().execute("query-migrate-capabilities")}
            g.close_qmp()
            self.assertIs(caps["x-ignore-shared"], False, g.qmp_path)
        # The source stays stopped, its guest lives on at the destination:
        # the two consoles are one unbroken count, and the region is intact.
        self.assertEqual(status(src), "postmigrate")
        checks = dst.wait_for_sums(2)
        self.assertEqual(checks, [("OK", src.sum0())] * len(checks))
        seq = qemu_guest.counter_sequence(src, dst)
        self.assertTrue(qemu_guest.is_consecutive(seq), seq)
        self.assertGreater(dst.counters()[0], 3)
        dst.wait_for_counter(dst.last_counter() + 3)
        self.assertEqual(status(dst), "running")

    def test_destination_quits_midway_source_runs_again(self):
        src, dst = self.guests()
        rx, to = self.start_receive(dst)
        # 20 ms a run: long enough to kill the destination QEMU meanwhile.
        tx = self.migrate(src, to, env={"PAGEFERRY_TEST_HOOK": "worker:crawl"})
        time.sleep(1.5)
        self.assertIsNone(tx.poll(), "the migration ended before the destination was killed")
        dst.kill()
        tcode, _, terr = self.finish(tx)
        rcode, _, rerr = self.finish(rx)
        self.assertEqual(rcode, 1, rerr)
        self.assertEqual(tcode, 1, terr)
        self.assertNotIn("committed", terr)
        # Never stopped for good: pageferry resumed it.
        self.assertEqual(status(src), "running")
        src.wait_for_counter(src.last_counter() + 3)
        checks = src.wait_for_sums(len(src.sums()) + 1)
        self.assertEqual(checks[-1], ("OK", src.sum0()))

    def test_guest_resumed_while_copied_is_not_committed(self):
        """Another QMP client resumes the source VM (and stops it again)
        after its RAM was sent: the receiver is prepared, but pageferry,
        which skipped the re-read because QEMU held the VM stopped, sees
        the RESUME and calls the commit off; the source runs on."""
        src, dst = self.guests()
        rx, to = self.start_receive(dst)
        tx = self.migrate(src, to, env={"PAGEFERRY_TEST_FE_HOOK": "migrate:before-commit"})
        self.resume_and_stop_at(tx, "migrate:before-commit", self.other_qmp)
        tcode, _, terr = self.finish(tx)
        rcode, _, rerr = self.finish(rx)
        self.assertEqual((tcode, rcode), (1, 1), f"migrate: {terr} receive: {rerr}")
        self.assertEqual(terr, f"pageferry migrate: the guest changed while it was copied: QEMU at "
                               f"{src.qmp_path} reported RESUME meanwhile (another QMP client?); "
                               "nothing was committed\n")
        self.assertIn("the sender gave up the migration", rerr)
        self.assertEqual(status(src), "running")
        self.assertEqual(status(dst), "inmigrate")

    def test_migration_that_cannot_start_never_stops_the_guest(self):
        """The guest is stopped only once every channel is up and the
        receiver has taken the offer: a receiver that refuses it (here one
        without --qmp, which moves RAM only) leaves the source running
        without a pause, as its other QMP monitor sees (no STOP event)."""
        src = start_guest(self.shm, "src", self.path("src.ram"), self.initrd_path, procs=self.procs,
                          extra=("-qmp", f"unix:{self.path('src-other.qmp')},server=on,wait=off"))
        src.wait_ready()
        watcher = qemu_guest.QMP(self.path("src-other.qmp"))
        port = pftest.free_port()
        rx = self.spawn([pftest.PF, "receive", "--listen", f"{self.veth.addr[1]}:{port}", "--into",
                         self.path("plain.ram"), "--psk-file", self.key, "--accept-timeout", 60],
                        ns=self.veth.ns[1])
        tx = self.migrate(src, f"tcp:{self.veth.addr[1]}:{port}")
        tcode, _, terr = self.finish(tx)
        rcode, _, rerr = self.finish(rx)
        why = "the sender sends a VM's device state (migrate --qmp), but the receiver takes RAM only"
        self.assertEqual((tcode, rcode), (1, 1), f"migrate: {terr} receive: {rerr}")
        self.assertIn(why, terr)
        self.assertEqual(status(src), "running")
        self.assert_never_paused(watcher)

    def test_plain_sender_refused_by_a_qmp_receiver(self):
        # receive --qmp moves a whole VM: a sender of RAM only is refused by
        # name at its handshake, on both ends, and QEMU is left waiting.
        dst = start_guest(self.shm, "dst", self.path("dst.ram"), self.initrd_path, procs=self.procs,
                          incoming=True)
        self.assertEqual(status(dst), "inmigrate")
        ram = self.path("plain.ram")
        self.assertEqual(pf("mkguest", "random", f"{qemu_guest.RAM_MIB}M", ram).returncode, 0)
        rx, to = self.start_receive(dst)
        tx = self.spawn([pftest.PF, "migrate", "--guest", ram, "--to", to, "--psk-file", self.key],
                        ns=self.veth.ns[0])
        tcode, _, terr = self.finish(tx)
        rcode, _, rerr = self.finish(rx)
        why = "the receiver needs a VM's device state (receive --qmp), but the sender sends RAM only"
        self.assertEqual((tcode, rcode), (1, 1), f"migrate: {terr} receive: {rerr}")
        self.assertIn(why, terr)
        self.assertIn(why, rerr)
        self.assertEqual(status(dst), "inmigrate")


def prerequisites():
    """QEMU, the kernel and busybox, or a skip (a failure under CI)."""
    qemu_guest.require_qemu()
    qemu_guest.kernel()
    qemu_guest.busybox()


if __name__ == "__main__":
    try:
        prerequisites()
    except unittest.SkipTest as e:
        print(f"SKIP: {e}")
        sys.exit(77)
    unittest.main(verbosity=2)
