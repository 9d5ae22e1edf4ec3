#!/usr/bin/python3
"""A stage sees only the fds of its map (stage/stage_fds.h), whatever the
front end inherited: a real snapshot and a real migration (zstd, so the
arenas and inflaters take part) run with two extra fds inherited from the
test, 42 and 5 (5 is a hole of the map when no pre-shared key is given),
both open on a file of the test's. While the scanner crawls
(PAGEFERRY_TEST_HOOK=scanner:crawl keeps the whole pipeline running), every
stage is inspected from outside, in /proc/PID/fd, once its seccomp filter
is on (start-up is over by then)."""
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import pftest  # noqa: E402
from pftest import PF  # noqa: E402

sys.path.insert(0, os.path.join(pftest.BUILD, "tools"))
import pf_abi  # noqa: E402  (generated: the fd map the stages use)

WORKERS = 2
HOOK = {"PAGEFERRY_TEST_HOOK": "scanner:crawl"}
EXTRA_FDS = (5, 42)


def documented(name, mode):
    """The fds stage `name` ("pageferry-worker") must hold, from the map:
    its fixed ones and those of each of WORKERS workers."""
    n = WORKERS
    fd = pf_abi.fd
    std = {0, 1, 2}
    if name == "pageferry-scanner":
        return std | {fd("scanner", "segment"), fd("scanner", "guest")} | \
            {fd("scanner", "ring", i) for i in range(n)}
    if name == "pageferry-worker":
        return std | {fd("worker", k) for k in ("segment", "guest", "in", "out", "back", "arena")}
    if name == "pageferry-writer":
        rings = {fd("writer", r, i) for r in ("ring_in", "ring_back") for i in range(n)} | \
            {fd("writer", "arena", i, n) for i in range(n)}
        if mode == "snapshot":
            return std | rings | {fd("writer", k) for k in ("segment", "guest", "meta", "data")}
        return std | rings | {fd("writer", k) for k in ("segment", "guest", "commit")}
    if name == "pageferry-receive":
        return std | {fd("receive", k) for k in ("segment", "dest", "commit")} | \
            {fd("receive", "ring", i) for i in range(n)} | {fd("receive", "arena", i, n) for i in range(n)}
    if name == "pageferry-inflater":
        return std | {fd("inflater", k) for k in ("segment", "dest", "in", "arena")}
    raise AssertionError(f"unexpected stage {name}")


def seccomp_mode(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Seccomp:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


def open_fds(pid):
    """{fd: what it is open on} of pid, or None once it is gone."""
    d = f"/proc/{pid}/fd"
    try:
        out = {}
        for name in os.listdir(d):
            try:
                out[int(name)] = os.readlink(f"{d}/{name}")
            except FileNotFoundError:
                pass
        return out
    except (FileNotFoundError, ProcessLookupError):
        return None


class StageFds(pftest.Workspace):
    def start(self, args, decoy):
        """pageferry ARGS with the decoy file open on every fd of EXTRA_FDS,
        inherited as a careless parent would leave it. (close_fds=False:
        subprocess closes fds after preexec_fn runs; ours are all
        close-on-exec but these.)"""
        def inherit():
            for fd in EXTRA_FDS:
                os.dup2(decoy, fd)  # inheritable
        p = subprocess.Popen([PF] + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True, close_fds=False, preexec_fn=inherit,
                             env=dict(self.env, **HOOK))
        self.procs.append(p)
        return p

    def decoy(self):
        path = self.path("inherited-decoy")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.addCleanup(os.close, fd)
        return path, fd

    def inspect(self, fronts, decoy_path):
        """Until every front end in fronts {Popen: mode} has ended: the fds of
        each of their stages, once its filter is on. Returns
        {(front end pid, stage pid): (name, mode, {fd: target})}."""
        seen = {}
        while any(p.poll() is None for p in fronts):
            for pid in pftest.pids():
                st = pftest.proc_stat(pid)
                front = next((p for p in fronts if st and st[0] == p.pid), None)
                if front is None or (front.pid, pid) in seen:
                    continue
                name = pftest.proc_name(pid)
                if not name.startswith("pageferry-") or name == "pageferry-mkseg":
                    continue
                if seccomp_mode(pid) != 2:
                    continue  # still starting: it has not closed anything yet
                fds = open_fds(pid)
                if fds is not None:
                    seen[(front.pid, pid)] = (name, fronts[front], fds)
            time.sleep(0.01)
        return seen

    def check(self, seen, expected_names, decoy_path):
        names = sorted(name for name, _, _ in seen.values())
        self.assertEqual(names, sorted(expected_names), "every stage inspected while it ran")
        for (_, pid), (name, mode, fds) in seen.items():
            want = documented(name, mode)
            with self.subTest(stage=name, pid=pid):
                self.assertNotIn(decoy_path, fds.values(), f"{name} holds the front end's inherited file")
                self.assertEqual(want - set(fds), set(), f"{name} lacks fds of its map: {fds}")
                # Beyond the map: only the network stages' own sockets (and
                # the receive stage's wake-up pipe), which may also fill a hole
                # of the map, such as 5 without a key; the snapshot writer's
                # eventfd for its write completions; nothing for the rest.
                extra = {fd: t for fd, t in fds.items() if fd not in want}
                if mode == "migrate" and name in ("pageferry-writer", "pageferry-receive"):
                    for fd, target in extra.items():
                        self.assertRegex(target, r"^(socket|pipe):\[", f"{name} fd {fd} is {target}")
                elif mode == "snapshot" and name == "pageferry-writer":
                    self.assertEqual(list(extra.values()), ["anon_inode:[eventfd]"], f"{name}: {extra}")
                else:
                    self.assertEqual(extra, {}, f"{name} holds fds beyond its map")

    def test_snapshot_stages_hold_only_their_fds(self):
        guest = self.guest("random", "128M")
        decoy_path, decoy = self.decoy()
        p = self.start(["snapshot", "--guest", guest, "--out", self.disk_path("s.pfs"),
                        "--workers", WORKERS], decoy)
        seen = self.inspect({p: "snapshot"}, decoy_path)
        code, out, err = self.finish(p)
        self.assertEqual(code, 0, err)
        self.check(seen, ["pageferry-scanner", "pageferry-writer"] + ["pageferry-worker"] * WORKERS,
                   decoy_path)

    def test_migration_stages_hold_only_their_fds(self):
        guest = self.guest("text", "128M")
        key = self.path("key")
        with open(key, "w") as f:
            f.write("0123456789abcdef-a-pre-shared-key\n")
        # With TLS, the network stages have read their credentials before
        # lock-down and hold the key file no more: only sockets and pipes
        # beyond the map.
        for tls in ([], ["--psk-file", key]):
            with self.subTest(tls=tls):
                into = self.path(f"into{len(tls)}.ram")
                decoy_path, decoy = self.decoy()
                port = pftest.free_port()
                rx = self.start(["receive", "--listen", f"127.0.0.1:{port}", "--into", into, "--workers", WORKERS,
                                 "--accept-timeout", 60] + tls, decoy)
                tx = self.start(["migrate", "--guest", guest, "--to", f"tcp:127.0.0.1:{port}", "--workers",
                                 WORKERS, "--compress", "zstd", "--connect-timeout", 30] + tls, decoy)
                seen = self.inspect({rx: "migrate", tx: "migrate"}, decoy_path)
                for p in (tx, rx):
                    code, out, err = self.finish(p)
                    self.assertEqual(code, 0, err)
                self.assert_equal_ram(guest, into)
                self.check(seen, ["pageferry-scanner", "pageferry-writer", "pageferry-receive"] +
                           ["pageferry-worker"] * WORKERS + ["pageferry-inflater"] * WORKERS, decoy_path)


if __name__ == "__main__":
    unittest.main()
