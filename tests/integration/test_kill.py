#!/usr/bin/python3
"""The kill matrix (issue "Trust", doc/architecture.md "The handoff"): SIGKILL
each stage and each front-end process of snapshot, restore, paused and live
migration at several points, including just before and just after the
commit. Whatever is killed, exactly one of these holds:
  (a) the sender reports success, and the destination is committed and
      bit-exact;
  (b) the sender fails, the source guest is intact and (live) running again,
      and no committed destination exists;
  (c) the sender failed after it told the receiver to commit and before it
      heard back: it exits with status 4 and keeps the source guest stopped
      (live: handed off), and the destination is either committed and
      bit-exact or not committed. Never running in two places.
And nothing is left running, no status file survives `pageferry status`,
and nothing that looks complete is left behind.

Points "before-commit" / "after-commit" stop a front end exactly there
(PAGEFERRY_TEST_FE_HOOK, -Dtest_hooks=true builds); mid-transfer kills use
the "crawl" stage hook, which makes every run take 20 ms."""
import os
import shutil
import signal
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from pftest import (PF, Workspace, checksum_at_pause, dirty_log_pause, free_port, pf, pids, proc_name,  # noqa: E402
                    proc_stat)

SIZE = "256M"
LEASE_MS = 1000
OUTCOME_UNKNOWN = 4  # pageferry's exit status (supervisor/pf_jobs.py)


class Matrix(Workspace):
    guest_size = SIZE
    finish_timeout = 120

    def setUp(self):
        super().setUp()
        self.shm_before = set(os.listdir("/dev/shm"))

    # -- processes ---------------------------------------------------------

    def start(self, args, hook=None, fe_hook=None):
        """pageferry args, with the stage hook and the front-end hook given."""
        env = {}
        if hook:
            env["PAGEFERRY_TEST_HOOK"] = hook
        if fe_hook:
            env["PAGEFERRY_TEST_FE_HOOK"] = fe_hook
        return self.spawn([PF] + list(args), env=env)

    def kill(self, pid):
        os.kill(pid, signal.SIGKILL)

    def assert_nothing_left(self, *fes):
        """No process of ours still runs (the stages die with their front end)
        and `pageferry status` knows no migration, leaving no status file."""
        sessions = {p.pid for p in fes}
        deadline = time.monotonic() + 10
        left = []
        while time.monotonic() < deadline:
            left = [(pid, proc_name(pid)) for pid in pids()
                    if (st := proc_stat(pid)) and st[1] in sessions and proc_name(pid).startswith("pageferry")]
            if not left:
                break
            time.sleep(0.05)
        self.assertEqual(left, [], "processes left running")
        r = pf("status", env=self.env)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertEqual(os.listdir(self.run_dir), [], "status file left")
        # Segments and arenas are memfds, gone with their processes; nothing
        # named may stay either (other tests' files are not ours to judge).
        left = {n for n in set(os.listdir("/dev/shm")) - self.shm_before if n.startswith(("pageferry", "sem."))}
        self.assertEqual(left, set(), "shared-memory files left")

    # -- the invariant -----------------------------------------------------

    def assert_handoff(self, sender_rc, into, source, sender_err=""):
        committed = os.path.exists(into)
        if sender_rc == OUTCOME_UNKNOWN:
            self.assertIn("the destination was told to commit and its answer never came", sender_err)
            if committed:
                self.assert_equal_ram(source, into, "the committed destination differs:")
        elif sender_rc == 0:
            self.assertTrue(committed, "the sender reported success but nothing was committed")
            self.assert_equal_ram(source, into, "the committed destination differs:")
        else:
            self.assertFalse(committed, f"the sender failed ({sender_err.strip()}) but {into} was committed")

    # -- snapshot and restore ------------------------------------------------

    def refused(self, snap):
        into = self.path("probe.ram")
        r = pf("restore", snap, "--into", into)
        self.assertNotEqual(r.returncode, 0, f"restore accepted {snap}")
        self.assertFalse(os.path.exists(into))
        return r.stderr

    def crawl_hook(self, victim):
        """Slow down the victim's own stage (or the snapshot writer), so that
        it is still at work when it is killed. (A migration's writer waits for
        its workers: "worker:crawl" keeps them all busy.)"""
        return "writer:crawl"

    def snapshot_killed(self, victim, fe_hook=None):
        guest = self.guest("random")
        out = os.path.join(tempfile.mkdtemp(dir=self.disk), "s.pfs")
        p = self.start(["snapshot", "--guest", guest, "--out", out, "--workers", 2],
                       hook=None if fe_hook else self.crawl_hook(victim), fe_hook=fe_hook)
        if fe_hook:
            self.wait_stderr(p, f"stopped at {fe_hook}")
            self.kill(p.pid)
        else:
            target = p.pid if victim == "pageferry" else self.wait_child(p, victim)
            time.sleep(0.5)
            self.kill(target)
        rc, _, err = self.finish(p)
        self.assertNotEqual(rc, 0)
        self.assert_nothing_left(p)
        return guest, out, err

    def test_snapshot_kills_mid_transfer(self):
        # (The scanner of a paused guest posts every run within milliseconds
        # and is gone; it is killed mid-way in the live tests. A killed worker
        # is replaced: test_restart.py.)
        for victim in ("pageferry", "pageferry-writer"):
            with self.subTest(victim=victim):
                _, out, err = self.snapshot_killed(victim)
                self.assertFalse(os.path.exists(out), f"{out} committed after {victim} was killed")
                if victim != "pageferry":
                    self.assertIn("killed by signal 9", err)
                    self.assertFalse(os.path.exists(out + ".pf-partial"))
                elif os.path.exists(out + ".pf-partial"):
                    # Left by the killed front end: refused, under any name.
                    self.refused(out + ".pf-partial")
                    shutil.copy(out + ".pf-partial", out + ".renamed")
                    self.assertIn("incomplete", self.refused(out + ".renamed"))

    def test_snapshot_front_end_killed_around_the_commit(self):
        guest, out, _ = self.snapshot_killed(None, fe_hook="snapshot:before-commit")
        self.assertFalse(os.path.exists(out))
        self.assertIn("unfinished snapshot", self.refused(out + ".pf-partial"))
        os.unlink(out + ".pf-partial")
        guest, out, _ = self.snapshot_killed(None, fe_hook="snapshot:after-commit")
        into = self.path("after.ram")
        pf("restore", out, "--into", into, check=0)
        self.assert_equal_ram(guest, into)

    def test_restore_kills(self):
        guest = self.guest("random")
        snap = self.disk_path("r.pfs")
        pf("snapshot", "--guest", guest, "--out", snap, check=0)
        for victim, fe_hook in (("pageferry", None), ("pageferry-restore", None),
                                (None, "restore:before-commit"), (None, "restore:after-commit")):
            with self.subTest(victim=victim, fe_hook=fe_hook):
                into = os.path.join(tempfile.mkdtemp(dir=self.shm), "restored.ram")
                # Restore reads fast: only the hooks stop it at a known point,
                # so the mid-transfer kills land wherever they land.
                p = self.start(["restore", snap, "--into", into, "--workers", 1], fe_hook=fe_hook)
                if fe_hook:
                    self.wait_stderr(p, f"stopped at {fe_hook}")
                    self.kill(p.pid)
                else:
                    target = p.pid if victim == "pageferry" else self.wait_child(p, victim)
                    self.kill(target)
                rc, _, _ = self.finish(p)
                self.assert_nothing_left(p)
                if os.path.exists(into):
                    self.assertEqual(fe_hook, "restore:after-commit", "a killed restore committed")
                    self.assert_equal_ram(guest, into)
                    os.unlink(into)
                else:
                    self.assertNotEqual(fe_hook, "restore:after-commit")
                if os.path.exists(into + ".pf-partial"):
                    os.unlink(into + ".pf-partial")

    # -- paused migration ----------------------------------------------------

    def migration(self, sender_victim=None, receiver_victim=None, fe_hook=None, compress="none"):
        """One paused migration with one kill; returns (sender rc, into, guest)."""
        guest = self.guest("random")
        into = os.path.join(tempfile.mkdtemp(dir=self.shm), "dest.ram")
        port = free_port()
        rx = self.start(["receive", "--listen", f"127.0.0.1:{port}", "--into", into, "--accept-timeout", 30,
                         "--workers", 2], fe_hook=fe_hook)
        tx = self.start(["migrate", "--guest", guest, "--to", f"tcp:127.0.0.1:{port}", "--channels", 2,
                         "--compress", compress, "--workers", 2],
                        hook=None if fe_hook else "worker:crawl")
        if fe_hook:
            self.wait_stderr(rx, f"stopped at {fe_hook}")
            self.kill(rx.pid)
        else:
            fe, victim = (tx, sender_victim) if sender_victim else (rx, receiver_victim)
            target = fe.pid if victim == "pageferry" else self.wait_child(fe, victim)
            time.sleep(0.5)
            self.kill(target)
        rc, _, err = self.finish(tx)
        self.finish(rx)
        self.assert_nothing_left(tx, rx)
        self.assert_handoff(rc, into, guest, err)
        return rc, err, into

    def test_migrate_sender_kills_mid_transfer(self):
        for victim in ("pageferry", "pageferry-writer"):
            with self.subTest(victim=victim):
                rc, _, into = self.migration(sender_victim=victim)
                self.assertNotEqual(rc, 0)
                self.assertFalse(os.path.exists(into + ".pf-partial"))

    def test_migrate_receiver_kills_mid_transfer(self):
        # (A killed inflater is replaced and the transfer completes:
        # tests/integration/test_restart_dest.py.)
        for victim, compress in (("pageferry", "none"), ("pageferry-receive", "none"),
                                 ("pageferry-receive", "zstd")):
            with self.subTest(victim=victim, compress=compress):
                rc, err, _ = self.migration(receiver_victim=victim, compress=compress)
                self.assertNotEqual(rc, 0)
                self.assertIn("pageferry migrate:", err)

    def test_migrate_receiver_front_end_killed_before_the_commit(self):
        rc, err, into = self.migration(fe_hook="receive:before-commit")
        self.assertNotEqual(rc, 0)
        self.assertIn("pageferry migrate:", err)

    def stopped_handoff(self, rx_hook=None, tx_hook=None):
        """A paused migration whose receive or sender stages stop at a stage
        hook: (guest, into, rx, tx)."""
        guest = self.guest("random")
        into = os.path.join(tempfile.mkdtemp(dir=self.shm), "dest.ram")
        port = free_port()
        rx = self.start(["receive", "--listen", f"127.0.0.1:{port}", "--into", into, "--accept-timeout", 30,
                         "--workers", 2], hook=rx_hook)
        tx = self.start(["migrate", "--guest", guest, "--to", f"tcp:127.0.0.1:{port}", "--workers", 2],
                        hook=tx_hook)
        return guest, into, rx, tx

    def test_migrate_writer_killed_after_asking_to_commit(self):
        # The writer stops right after it sent "commit"; the receiver commits
        # and answers into the socket; the writer is killed before it reads
        # that. The sender cannot know: status 4, not a resumed source.
        guest, into, rx, tx = self.stopped_handoff(tx_hook="commit-asked:stop")
        writer = self.wait_child(tx, "pageferry-writer")
        self.stopped(writer)
        rx_rc, _, rx_err = self.finish(rx)
        self.assertEqual(rx_rc, 0, rx_err)
        self.kill(writer)
        rc, _, err = self.finish(tx)
        self.assertEqual(rc, OUTCOME_UNKNOWN, err)
        self.assertIn("the guest is left stopped here", err)
        self.assertNotIn("keeps running", err)
        self.assert_nothing_left(tx, rx)
        self.assertTrue(os.path.exists(into))
        self.assert_handoff(rc, into, guest, err)

    def test_migrate_receive_stage_killed_after_its_answer(self):
        # The receive stage stops right after it sent "committed", before it
        # tells its front end so, and is killed there: the sender heard (0),
        # and the front end, which cannot know that, keeps the commit (4)
        # instead of undoing one the sender reports as done.
        guest, into, rx, tx = self.stopped_handoff(rx_hook="answered:stop")
        stage = self.wait_child(rx, "pageferry-receive")
        self.stopped(stage)
        rc, _, err = self.finish(tx)
        self.assertEqual(rc, 0, err)
        self.kill(stage)
        rx_rc, _, rx_err = self.finish(rx)
        self.assertEqual(rx_rc, OUTCOME_UNKNOWN, rx_err)
        self.assertIn(f"{into} stays committed", rx_err)
        self.assert_nothing_left(tx, rx)
        self.assert_handoff(rc, into, guest, err)

    def test_migrate_receiver_front_end_killed_after_the_commit(self):
        rc, err, into = self.migration(fe_hook="receive:after-commit")
        self.assertEqual(rc, 0, err)

    # -- live migration --------------------------------------------------------

    def assert_guest_runs(self, sim, log):
        """Running again within the lease and a margin: request and ack clear."""
        deadline = time.monotonic() + LEASE_MS / 1000 + 10
        while time.monotonic() < deadline and dirty_log_pause(log) != (0, 0):
            time.sleep(0.05)
        self.assertEqual(dirty_log_pause(log), (0, 0), "the guest stays paused")
        self.assertIsNone(sim.poll(), "guestsim died")

    def live_start(self, rx_hook=None, tx_hook=None, tx_stage_hook=None):
        """A guestsim guest and a live migration of it under way: (sim, log,
        crc, into, rx, tx)."""
        work = tempfile.mkdtemp(dir=self.shm)
        ram, log, crc = (os.path.join(work, n) for n in ("live.ram", "live.log", "live.crc"))
        sim = self.start(["guestsim", "--ram", ram, "--dirty-log", log, "--size", SIZE, "--rate", 8,
                          "--checksum-file", crc])
        self.assertEqual(sim.stdout.readline().strip(), "ready")
        into = os.path.join(work, "live.dst")
        port = free_port()
        rx = self.start(["receive", "--listen", f"127.0.0.1:{port}", "--into", into, "--accept-timeout", 30,
                         "--workers", 2], fe_hook=rx_hook)
        tx = self.start(["migrate", "--guest", ram, "--dirty-log", log, "--to", f"tcp:127.0.0.1:{port}",
                         "--pause-lease", LEASE_MS, "--workers", 2], fe_hook=tx_hook, hook=tx_stage_hook)
        return sim, log, crc, into, rx, tx

    def live(self, tx_hook=None, rx_hook=None, victim=None, tx_stage_hook=None):
        """tx_stage_hook: a "stop" hook of the sender's stages, where the
        victim is killed once it stopped there and the receiver ended."""
        sim, log, crc, into, rx, tx = self.live_start(rx_hook, tx_hook,
                                                      tx_stage_hook or ("worker:crawl" if victim else None))
        if tx_stage_hook:
            target = self.wait_child(tx, victim)
            self.stopped(target)
            rx.wait(timeout=self.finish_timeout)  # committed, its answer in the writer's socket
            self.kill(target)
        elif tx_hook:
            self.wait_stderr(tx, f"stopped at {tx_hook}")
            self.kill(tx.pid)
        elif rx_hook:
            self.wait_stderr(rx, f"stopped at {rx_hook}")
            self.kill(rx.pid)
        else:
            target = self.wait_child(tx, victim)
            time.sleep(0.5)
            self.kill(target)
        rc, _, err = self.finish(tx)
        self.finish(rx)
        self.assert_nothing_left(tx, rx)
        return sim, log, crc, into, rc, err

    def test_live_front_end_killed_while_the_guest_is_paused(self):
        # Stopped at the pause (no lease renewals), then killed: the guest
        # resumes on its own when the lease lapses; nothing is committed.
        sim, log, _, into, rc, _ = self.live(tx_hook="migrate:paused")
        self.assertNotEqual(rc, 0)
        self.assertFalse(os.path.exists(into))
        self.assert_guest_runs(sim, log)

    def test_live_stages_killed(self):
        for victim in ("pageferry-scanner", "pageferry-writer"):
            with self.subTest(victim=victim):
                sim, log, _, into, rc, err = self.live(victim=victim)
                self.assertNotEqual(rc, 0)
                self.assertIn("the guest keeps running on the source", err)
                self.assertFalse(os.path.exists(into))
                self.assert_guest_runs(sim, log)
                sim.kill()
                sim.wait()

    def test_live_receiver_killed_before_the_commit(self):
        # Its front end holds the commit when it is killed: the stage dies
        # with it, mostly before it can answer that it did not commit, and
        # then the sender cannot tell (c) from a lost "committed".
        sim, log, _, into, rc, err = self.live(rx_hook="receive:before-commit")
        self.assertFalse(os.path.exists(into))
        if rc == OUTCOME_UNKNOWN:
            self.assert_kept_stopped(sim, log)
        else:
            self.assertNotEqual(rc, 0)
            self.assert_guest_runs(sim, log)

    def assert_kept_stopped(self, sim, log):
        """Handed off: the source stays paused, even after the lease would lapse."""
        time.sleep(LEASE_MS / 1000 + 0.5)
        self.assertEqual(dirty_log_pause(log)[0], 2)
        self.assertIsNone(sim.poll())

    def test_live_destination_refuses_the_commit(self):
        # The receiver answers that it did not commit (its copy vanished
        # before the rename): a definite answer, so the source resumes.
        sim, log, _, into, rx, tx = self.live_start(rx_hook="receive:before-commit")
        self.wait_stderr(rx, "stopped at receive:before-commit")
        self.stopped(rx.pid)  # said so, and then stopped: SIGCONT before that would be lost
        os.unlink(into + ".pf-partial")
        os.kill(rx.pid, signal.SIGCONT)
        rc, _, err = self.finish(tx)
        rx_rc, _, rx_err = self.finish(rx)
        self.assertEqual(rc, 1, err)
        self.assertIn("the receiver failed on its side", err)
        self.assertIn("the guest keeps running on the source", err)
        self.assertIn("was removed during the transfer; nothing was committed", rx_err)
        self.assertFalse(os.path.exists(into))
        self.assert_guest_runs(sim, log)
        self.assert_nothing_left(tx, rx)

    def test_live_writer_killed_after_asking_to_commit(self):
        sim, log, crc, into, rc, err = self.live(tx_stage_hook="commit-asked:stop", victim="pageferry-writer")
        self.assertEqual(rc, OUTCOME_UNKNOWN, err)
        self.assertNotIn("keeps running", err)
        self.assertTrue(os.path.exists(into))
        self.assertEqual(pf("checksum", into, check=0).stdout.strip(), checksum_at_pause(crc))
        self.assert_kept_stopped(sim, log)

    def test_live_receiver_killed_after_the_commit(self):
        sim, log, crc, into, rc, err = self.live(rx_hook="receive:after-commit")
        self.assertEqual(rc, 0, err)
        at_pause = checksum_at_pause(crc)
        got = pf("checksum", into, check=0).stdout.strip()
        self.assertEqual(got, at_pause)
        self.assert_kept_stopped(sim, log)

    def test_cancel_refuses_a_stale_status_file(self):
        # A status file left by a killed migration whose PID now belongs to
        # another process: cancel must not signal it (SIGUSR1 would kill it).
        other = self.spawn(["sleep", "60"])
        stale = os.path.join(self.run_dir, f"migrate-{other.pid}.json")
        with open(stale, "w") as f:
            f.write('{"pid": %d, "to": "tcp:127.0.0.1:1", "round": 1}' % other.pid)
        r = pf("cancel", "--pid", other.pid, env=self.env)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"no live migration is running with pid {other.pid}", r.stderr)
        self.assertIsNone(other.poll(), "cancel signalled a process that is not a migration")
        self.assertFalse(os.path.exists(stale), "the stale status file was kept")
        other.kill()
        other.wait()


if __name__ == "__main__":
    unittest.main(verbosity=2)
