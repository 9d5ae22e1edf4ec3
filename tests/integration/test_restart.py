#!/usr/bin/python3
"""A dead worker does not fail the transfer (issue "Architecture", item 3;
doc/architecture.md "Replacing a stage"). A worker killed with SIGKILL in the
middle of a snapshot, a paused or a live migration is replaced by the front
end; the replacement redoes the runs its predecessor had not answered, and
the result is bit-exact, with the replacement counted in the summary. More
deaths than the limit fail the transfer with the Trust issue's invariant:
nothing committed, nothing left running.

Runs are slowed by the "worker:crawl" stage hook (20 ms each; "slow", 2 ms,
where live rounds must converge), so that a worker is still at work when it
is killed; which runs were in flight is wherever the kill lands."""
import json
import os
import signal
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from pftest import PF, Workspace, free_port, pf, pids, proc_name, proc_stat  # noqa: E402

SIZE = "256M"


class Restart(Workspace):
    guest_size = SIZE
    finish_timeout = 180

    def start(self, args, hook="worker:crawl"):
        return self.spawn([PF] + [str(a) for a in args], env={"PAGEFERRY_TEST_HOOK": hook} if hook else None)

    def workers_of(self, fe):
        return sorted(pid for pid in pids()
                      if (st := proc_stat(pid)) and st[0] == fe.pid and proc_name(pid) == "pageferry-worker")

    def kill_workers(self, fe, times, n_workers=2):
        """SIGKILL one of fe's workers `times` times, each time once the
        previous one's replacement runs; returns the pids killed."""
        killed = []
        for k in range(times):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                alive = [p for p in self.workers_of(fe) if p not in killed]
                if len(alive) == n_workers:
                    break
                time.sleep(0.02)
            else:
                self.fail(f"kill {k + 1}: {n_workers} workers never ran again under {fe.pid}")
            time.sleep(0.3)  # let it take runs from its ring first
            os.kill(alive[k % n_workers], signal.SIGKILL)
            killed.append(alive[k % n_workers])
        return killed

    def assert_replaced(self, rc, out, err, times):
        self.assertEqual(rc, 0, err)
        s = json.loads(out)
        self.assertEqual(s["replacements"], times, s)
        self.assertEqual(len(s["replaced_stages"]), times)
        self.assertTrue(all(x.startswith("pageferry-worker[") for x in s["replaced_stages"]), s)
        self.assertEqual(err.count("starting a replacement"), times, err)

    def test_snapshot_survives_a_dead_worker(self):
        for compress_guest in ("random", "mixed"):
            with self.subTest(guest=compress_guest):
                guest = self.guest(compress_guest)
                out = os.path.join(tempfile.mkdtemp(dir=self.disk), "s.pfs")
                p = self.start(["snapshot", "--guest", guest, "--out", out, "--workers", 2, "--json"])
                self.kill_workers(p, 2)
                rc, stdout, err = self.finish(p)
                self.assert_replaced(rc, stdout, err, 2)
                self.assert_zero_pages_counted_once(guest, stdout)
                into = self.path("restored.ram")
                pf("restore", out, "--into", into, check=0)
                self.assert_equal_ram(guest, into)
                os.unlink(into)

    def migrate(self, compress, kills, guest_pattern="mixed"):
        guest = self.guest(guest_pattern)
        into = os.path.join(tempfile.mkdtemp(dir=self.shm), "dest.ram")
        port = free_port()
        rx = self.start(["receive", "--listen", f"127.0.0.1:{port}", "--into", into, "--accept-timeout", 30,
                         "--workers", 2], hook=None)
        tx = self.start(["migrate", "--guest", guest, "--to", f"tcp:127.0.0.1:{port}", "--channels", 2,
                         "--compress", compress, "--workers", 2, "--json"])
        self.kill_workers(tx, kills)
        rc, out, err = self.finish(tx)
        rx_rc, _, rx_err = self.finish(rx)
        return guest, into, rc, out, err, rx_rc, rx_err

    def test_paused_migration_survives_a_dead_worker(self):
        for compress in ("none", "zstd"):
            with self.subTest(compress=compress):
                guest, into, rc, out, err, rx_rc, rx_err = self.migrate(compress, 1)
                self.assert_replaced(rc, out, err, 1)
                self.assertEqual(rx_rc, 0, rx_err)
                self.assert_equal_ram(guest, into)
                self.assert_zero_pages_counted_once(guest, out)

    def test_compressed_bytes_counted_once_after_a_dead_worker(self):
        """Every run of a text guest goes out as one zstd frame: the summary's
        compressed bytes are exactly the guest's pages and the bytes sent,
        though the worker that died had compressed runs its replacement
        compressed again."""
        guest, into, rc, out, err, rx_rc, rx_err = self.migrate("zstd", 1, "text")
        self.assert_replaced(rc, out, err, 1)
        self.assertEqual(rx_rc, 0, rx_err)
        self.assert_equal_ram(guest, into)
        s = json.loads(out)
        self.assertEqual(s["compressed"]["in_bytes"], s["pages"]["normal"] * s["page_size"], s)
        self.assertEqual(s["compressed"]["out_bytes"], s["bytes_sent"], s)

    def assert_zero_pages_counted_once(self, guest, out):
        """The summary counts the guest's zero pages once, though the worker
        that died had checked runs its replacement checked again."""
        s = json.loads(out)
        page, zero = s["page_size"], 0
        with open(guest, "rb") as f:
            while chunk := f.read(page * 256):
                zero += sum(1 for k in range(0, len(chunk), page) if chunk[k:k + page].count(0) == page)
        self.assertEqual(s["pages"]["hole"], 0)  # the mixed guest is written whole
        self.assertEqual(s["pages"]["zero"], zero, s["pages"])
        self.assertEqual(s["pages"]["normal"], s["pages"]["total"] - zero)

    def test_more_deaths_than_the_limit_fail_cleanly(self):
        guest, into, rc, out, err, rx_rc, _ = self.migrate("none", 4)
        self.assertNotEqual(rc, 0)
        self.assertIn("killed by signal 9", err)
        self.assertIn("after 3 replacement(s), the most allowed", err)
        self.assertNotEqual(rx_rc, 0)
        self.assert_no_output(into)
        # Nothing of ours left running.
        time.sleep(0.5)
        self.assertEqual([p for p in pids() if proc_name(p).startswith("pageferry") and
                          (st := proc_stat(p)) and st[1] in {x.pid for x in self.procs}], [])

    def test_live_migration_survives_a_dead_worker(self):
        work = tempfile.mkdtemp(dir=self.shm)
        ram, log, crc = (os.path.join(work, n) for n in ("live.ram", "live.log", "live.crc"))
        sim = self.start(["guestsim", "--ram", ram, "--dirty-log", log, "--size", SIZE, "--rate", 8,
                          "--checksum-file", crc], hook=None)
        self.assertEqual(sim.stdout.readline().strip(), "ready")
        into = os.path.join(work, "live.dst")
        port = free_port()
        rx = self.start(["receive", "--listen", f"127.0.0.1:{port}", "--into", into, "--accept-timeout", 30,
                         "--workers", 2], hook=None)
        # Rounds must converge although every run, even of one dirty page,
        # takes 2 ms more: a downtime limit that the second round meets.
        tx = self.start(["migrate", "--guest", ram, "--dirty-log", log, "--to", f"tcp:127.0.0.1:{port}",
                         "--workers", 2, "--downtime-limit", 60000, "--json"], hook="worker:slow")
        self.kill_workers(tx, 1)
        rc, out, err = self.finish(tx)
        rx_rc, _, rx_err = self.finish(rx)
        self.assert_replaced(rc, out, err, 1)
        self.assertEqual(rx_rc, 0, rx_err)
        with open(crc) as f:
            at_pause = f.read().strip()
        self.assertEqual(pf("checksum", into, check=0).stdout.strip(), at_pause)
        sim.kill()
        sim.wait()


if __name__ == "__main__":
    unittest.main(verbosity=2)
