#!/usr/bin/python3
"""A dead inflater does not fail the transfer (issue 13, doc/architecture.md
"Replacing an inflater"): SIGKILL an inflater of the receive stage in the
middle of a paused and of a live migration with zstd; the receive's front
end starts a replacement, which places again the frames its predecessor
had not finished, and both sides end with success, the destination
bit-exact and the replacement counted in the receive summary. Past the
limit (3 replacements) the transfer fails as before: one line naming the
stage and the limit, and nothing committed, no partial file left.

The inflaters crawl (PAGEFERRY_TEST_HOOK=inflater:crawl, 20 ms per frame,
or inflater:slow, 2 ms; test builds only) so that the kills land while
frames are in flight; only the receiving side gets the hook.

While an inflater is dead, the receive stage gives new frames only to the
live ones (the table of live inflaters, RCU-protected: dest/ds_live.h); the
receive summary counts the frames so rerouted (`rerouted_frames`)."""
import json
import os
import select
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from pftest import PF, Workspace, free_port, pf, pids, proc_name, proc_stat  # noqa: E402

SIZE = "256M"
# guestsim leaves every fourth page a hole, so its frames are of 3 pages:
# a smaller guest, and 2 ms per frame instead of 20.
LIVE_SIZE = "64M"
LIMIT = 3  # supervisor/pf_stages.py MAX_REPLACEMENTS
# The sending side: the same pageferry.
SENDER = PF


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return []


class RestartDest(Workspace):
    guest_size = SIZE
    finish_timeout = 180

    def receiver(self, hook="inflater:crawl", fe_hook=None):
        self.port = free_port()
        self.into = self.path("dest.ram")
        env = {"PAGEFERRY_TEST_HOOK": hook}
        if fe_hook:
            env["PAGEFERRY_TEST_FE_HOOK"] = fe_hook
        return self.spawn([PF, "receive", "--listen", f"127.0.0.1:{self.port}", "--into", self.into,
                           "--accept-timeout", 30, "--workers", 2, "--json"], env=env)

    def read_stderr_until(self, p, text, timeout=60):
        """p's stderr up to (at least) the line that contains text.  Read
        from the fd, unbuffered, so that finish() gets the rest."""
        deadline, seen = time.monotonic() + timeout, b""
        fd = p.stderr.fileno()
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                seen += chunk
                if text.encode() in seen and seen.endswith(b"\n"):
                    return seen.decode()
        self.fail(f"never saw {text!r} on stderr; got {seen!r}")

    def inflater(self, rx, index, not_in=(), timeout=30):
        """The pid of rx's inflater `index` once it runs, not one of not_in
        (those killed already: wait for their replacement)."""
        deadline = time.monotonic() + timeout
        want = f"--index={index}".encode()
        while time.monotonic() < deadline:
            for pid in pids():
                st = proc_stat(pid)
                if pid not in not_in and st and st[0] == rx.pid and proc_name(pid) == "pageferry-inflater" and \
                        want in cmdline(pid):
                    return pid
            time.sleep(0.01)
        self.fail(f"no pageferry-inflater --index={index} (beyond {list(not_in)}) under pid {rx.pid}")

    def kill_when_busy(self, rx, index=0, after=1.0):
        """SIGKILL inflater `index` some time after it started; its pid."""
        pid = self.inflater(rx, index)
        time.sleep(after)
        os.kill(pid, signal.SIGKILL)
        return pid

    def assert_replaced_once(self, rx_out, rx_err):
        summary = json.loads(rx_out)
        self.assertEqual(summary["replacements"], 1, rx_out)
        self.assertEqual(summary["replaced_stages"], ["pageferry-inflater[0]"])
        self.assertIn("pageferry: pageferry-inflater[0] was killed by signal 9; starting a replacement "
                      f"(1 of at most {LIMIT})", rx_err)

    def test_paused_migration_survives_a_killed_inflater(self):
        guest = self.guest("text")
        rx = self.receiver()
        tx = self.spawn([SENDER, "migrate", "--guest", guest, "--to", f"tcp:127.0.0.1:{self.port}",
                         "--compress", "zstd", "--workers", 2, "--channels", 2])
        self.kill_when_busy(rx)
        tx_rc, _, tx_err = self.finish(tx)
        rx_rc, rx_out, rx_err = self.finish(rx)
        self.assertEqual(tx_rc, 0, tx_err)
        self.assertEqual(rx_rc, 0, rx_err)
        self.assert_replaced_once(rx_out, rx_err)
        self.assert_equal_ram(guest, self.into)
        self.assertFalse(os.path.exists(self.into + ".pf-partial"))

    def test_live_migration_survives_a_killed_inflater(self):
        ram, log, crc = self.path("live.ram"), self.path("live.log"), self.path("live.crc")
        # A small hot set: the rounds after the first are a few frames.
        sim = self.spawn([PF, "guestsim", "--ram", ram, "--dirty-log", log, "--size", LIVE_SIZE, "--rate", 4,
                          "--pattern", "hot:4", "--checksum-file", crc])
        self.assertEqual(sim.stdout.readline().strip(), "ready")
        rx = self.receiver("inflater:slow")
        tx = self.spawn([SENDER, "migrate", "--guest", ram, "--dirty-log", log, "--to",
                         f"tcp:127.0.0.1:{self.port}", "--compress", "zstd", "--workers", 2, "--channels", 2,
                         "--json"])
        self.kill_when_busy(rx)
        tx_rc, tx_out, tx_err = self.finish(tx)
        rx_rc, rx_out, rx_err = self.finish(rx)
        self.assertEqual(tx_rc, 0, tx_err)
        self.assertEqual(rx_rc, 0, rx_err)
        self.assert_replaced_once(rx_out, rx_err)
        self.assertGreaterEqual(json.loads(tx_out)["live"]["rounds"], 2, "no round after the first")
        with open(crc) as f:
            at_pause = f.read().strip()
        self.assertEqual(pf("checksum", self.into, check=0).stdout.strip(), at_pause)

    def test_frames_go_to_the_living_inflater_while_one_is_dead(self):
        guest = self.guest("text")
        # The front end stops itself after telling the receive stage that
        # inflater 0 died and before it starts the replacement: inflater 0
        # stays dead for as long as we like, the stages run on.
        rx = self.receiver(fe_hook="receive:inflater-down")
        tx = self.spawn([SENDER, "migrate", "--guest", guest, "--to", f"tcp:127.0.0.1:{self.port}",
                         "--compress", "zstd", "--workers", 2, "--channels", 2])
        self.kill_when_busy(rx)
        early_err = self.read_stderr_until(rx, "stopped at receive:inflater-down")
        # Wait (no time limit asserted) until inflater 1 has placed more
        # frames than it can hold (16 buffers, 512 KiB frames) and a few
        # more: those were taken while inflater 0 was out of the table.
        partial = self.into + ".pf-partial"
        start = os.stat(partial).st_blocks * 512
        deadline = time.monotonic() + 120
        while os.stat(partial).st_blocks * 512 - start < (16 + 4) * 512 * 1024 and time.monotonic() < deadline:
            time.sleep(0.05)
        if tx.poll() is not None:
            self.fail(f"the transfer ended while inflater 0 was dead: {tx.communicate()[1]}")
        self.stopped(rx.pid)
        os.kill(rx.pid, signal.SIGCONT)
        tx_rc, _, tx_err = self.finish(tx)
        rx_rc, rx_out, rx_err = self.finish(rx)
        self.assertEqual(tx_rc, 0, tx_err)
        self.assertEqual(rx_rc, 0, early_err + rx_err)
        self.assert_replaced_once(rx_out, early_err + rx_err)
        self.assertGreater(json.loads(rx_out)["rerouted_frames"], 0, rx_out)
        self.assert_equal_ram(guest, self.into)

    def test_more_kills_than_the_limit_fail_cleanly(self):
        guest = self.guest("text")
        rx = self.receiver()
        tx = self.spawn([SENDER, "migrate", "--guest", guest, "--to", f"tcp:127.0.0.1:{self.port}",
                         "--compress", "zstd", "--workers", 2, "--channels", 2])
        killed = []
        for _ in range(LIMIT + 1):
            pid = self.inflater(rx, 0, not_in=killed)
            time.sleep(0.3)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        tx_rc, _, tx_err = self.finish(tx)
        rx_rc, _, rx_err = self.finish(rx)
        self.assertNotEqual(tx_rc, 0, "the sender reported success")
        self.assertEqual(rx_rc, 3, rx_err)  # a stage was killed by a signal
        lines = [l for l in rx_err.splitlines() if not l.startswith("pageferry: ")]
        self.assertEqual(len(lines), 1, rx_err)
        self.assertRegex(lines[0], r"^pageferry receive: pageferry-inflater\[0\] was killed by signal 9 "
                                   rf"\(SIGKILL\), after {LIMIT} replacement\(s\), the most allowed")
        self.assertEqual(rx_err.count("starting a replacement"), LIMIT, rx_err)
        self.assertIn("pageferry migrate:", tx_err)
        self.assert_no_output(self.into)
        # Nothing of either side runs on (the stages die with their front end).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
                (st := proc_stat(pid)) and st[1] in (rx.pid, tx.pid) for pid in pids()):
            time.sleep(0.05)
        left = [(pid, proc_name(pid)) for pid in pids() if (st := proc_stat(pid)) and st[1] in (rx.pid, tx.pid)]
        self.assertEqual(left, [], "processes left running")


if __name__ == "__main__":
    unittest.main(verbosity=2)
