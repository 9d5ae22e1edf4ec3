#!/usr/bin/python3
"""Least privilege (doc/security.md, "Least privilege"): once it has locked
down, every stage of every command runs as the unprivileged user the front
end chose (`--run-as`, default nobody), with no capability in any set, no
supplementary group, no-new-privs and its seccomp filter, on every one of
its threads; the source stages hold the guest read-only.

Each stage is inspected exactly once, in the state it keeps for the rest of
its life: the test hook "locked:stop" (-Dtest_hooks=true builds) makes it
stop itself (SIGSTOP) at the end of stage_lockdown; the test reads
/proc/PID/task/*/status, fdinfo, maps and limits, then lets it go on
(SIGCONT). Nothing races a running stage."""
import json
import os
import pwd
import resource
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import pftest  # noqa: E402
from pftest import PF  # noqa: E402

WORKERS = 2
HOOK = {"PAGEFERRY_TEST_HOOK": "locked:stop"}
NOBODY = pwd.getpwnam("nobody")
SOURCE_STAGES = ("pageferry-scanner", "pageferry-worker", "pageferry-writer")
# No source stage maps the guest: the scanner only looks for its extents,
# the workers read it with pread into their arenas, the writer writes or
# sends from there (or by sendfile from the guest fd).
ZERO_CAPS = ("CapInh", "CapPrm", "CapEff", "CapAmb")
CAP_SYS_RESOURCE = 24


def status_of(path):
    """{field: value} of a /proc status file, or None once it is gone."""
    try:
        with open(path) as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except (FileNotFoundError, ProcessLookupError):
        return None


def threads_of(pid):
    """{tid: status} of every thread of pid."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return {}
    return {tid: st for tid in tids if (st := status_of(f"/proc/{pid}/task/{tid}/status"))}


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None


def own_caps():
    """This process's effective capabilities, as a bit mask."""
    return int(status_of("/proc/self/status")["CapEff"], 16)


def other_user():
    """A user that is neither root nor nobody, with a primary group that is not root's."""
    return next(p for p in pwd.getpwall() if p.pw_uid not in (0, NOBODY.pw_uid) and p.pw_gid != 0)


class Inspecting(pftest.Workspace):
    """Starting front ends, inspecting their stages, checking what was seen."""
    guest_size = "64M"

    def start(self, args, env=None, prefix=(), hook=True):
        """pageferry ARGS (run through the command prefix, e.g. setpriv),
        its stages stopping at lock-down unless hook is False."""
        env = dict(self.env, **(HOOK if hook else {}), **(env or {}))
        p = subprocess.Popen(list(prefix) + [PF] + [str(a) for a in args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
        self.procs.append(p)
        return p

    def inspect(self, fronts, expected, kill_front=None):
        """Until every front end in fronts has ended: each of their stages
        that stopped at the end of its lock-down, inspected and continued.
        expected: the stage names that must all be seen. kill_front: once
        they all are, SIGKILL that front end instead of continuing them.
        Returns {pid: {"name", "threads" ({tid: status}), "fdinfo" (of fd 4),
        "maps", "limits"}}."""
        seen, deadline = {}, time.monotonic() + 120
        while any(p.poll() is None for p in fronts):
            self.assertLess(time.monotonic(), deadline, f"stages seen so far: {seen}")
            for pid in pftest.pids():
                st = pftest.proc_stat(pid)
                name = pftest.proc_name(pid)
                if not st or st[0] not in {p.pid for p in fronts} or pid in seen or \
                        not name.startswith("pageferry-") or name == "pageferry-mkseg":
                    continue
                if (status_of(f"/proc/{pid}/status") or {}).get("State", "").split()[:1] != ["T"]:
                    continue  # not locked down yet
                seen[pid] = {"name": name, "threads": threads_of(pid), "fdinfo": read(f"/proc/{pid}/fdinfo/4"),
                             "maps": read(f"/proc/{pid}/maps"), "limits": read(f"/proc/{pid}/limits")}
                if kill_front is None:
                    os.kill(pid, signal.SIGCONT)
            if kill_front and sorted(v["name"] for v in seen.values()) == sorted(expected):
                # Should they outlive it, they go at the end of the test
                # (by pidfd: never a reused pid).
                for pid in seen:
                    try:
                        self.addCleanup(self.kill_pidfd, os.pidfd_open(pid))
                    except ProcessLookupError:
                        pass
                kill_front.kill()
                kill_front.wait()
                return seen
            time.sleep(0.005)
        self.assertEqual(sorted(v["name"] for v in seen.values()), sorted(expected), "every stage inspected")
        return seen

    @staticmethod
    def kill_pidfd(fd):
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(fd)

    def assert_locked(self, seen, uid, gid, guest=None, bounding=True):
        for pid, v in seen.items():
            name, threads = v["name"], v["threads"]
            with self.subTest(stage=name, pid=pid):
                self.assertTrue(threads, f"{name} vanished while stopped")
                for tid, st in threads.items():
                    where = f"{name} pid {pid} thread {tid}"
                    for cap in ZERO_CAPS + (("CapBnd",) if bounding else ()):
                        self.assertEqual(int(st[cap], 16), 0, f"{where}: {cap} {st[cap]}")
                    self.assertEqual(st["Uid"].split(), [str(uid)] * 4, where)
                    self.assertEqual(st["Gid"].split(), [str(gid)] * 4, where)
                    self.assertEqual(st["Groups"].strip(), "", f"{where}: supplementary groups")
                    self.assertEqual(st["NoNewPrivs"], "1", where)
                    self.assertEqual(st["Seccomp"], "2", where)
                if name in SOURCE_STAGES:
                    flags = int(next(l for l in v["fdinfo"].splitlines() if l.startswith("flags:")).split()[1], 8)
                    self.assertEqual(flags & os.O_ACCMODE, os.O_RDONLY, f"{name}: the guest fd is not read-only")
                    guest_maps = [l for l in v["maps"].splitlines() if l.endswith(guest)]
                    self.assertEqual(guest_maps, [], f"{name} maps the guest")

    def finish_ok(self, *procs):
        outs = []
        for p in procs:
            code, out, err = self.finish(p)
            self.assertEqual(code, 0, err)
            outs.append(out)
        return outs


class AsRoot(Inspecting):
    """pageferry run by root: its stages become the user --run-as names."""

    def test_snapshot_restore_and_check_stages(self):
        guest = self.guest("mixed")
        snap, into = self.disk_path("s.pfs"), self.path("into.ram")
        # The front end's choice wins over anything in its environment.
        p = self.start(["snapshot", "--guest", guest, "--out", snap, "--workers", WORKERS],
                       env={"PAGEFERRY_RUN_AS": "0:0"})
        seen = self.inspect([p], ["pageferry-scanner", "pageferry-writer"] + ["pageferry-worker"] * WORKERS)
        self.finish_ok(p)
        self.assert_locked(seen, NOBODY.pw_uid, NOBODY.pw_gid, guest)

        p = self.start(["restore", snap, "--into", into, "--workers", WORKERS])
        seen = self.inspect([p], ["pageferry-restore"])
        self.finish_ok(p)
        self.assert_locked(seen, NOBODY.pw_uid, NOBODY.pw_gid)
        restore, = seen.values()
        self.assertEqual(len(restore["threads"]), 1 + WORKERS, "the reader threads were inspected too")
        self.assert_equal_ram(guest, into)

        p = self.start(["check", snap, "--workers", WORKERS])
        seen = self.inspect([p], ["pageferry-restore"])
        self.finish_ok(p)
        self.assert_locked(seen, NOBODY.pw_uid, NOBODY.pw_gid)

    def migration(self, both=(), sender=()):
        """A migration over loopback with zstd (so the inflaters take part),
        its stages inspected; both: options for both ends, sender: for
        migrate only. Returns (what was seen, the sender's summary)."""
        guest = self.guest("mixed")
        into = self.path("into.ram")
        port = pftest.free_port()
        rx = self.start(["receive", "--listen", f"127.0.0.1:{port}", "--into", into, "--workers", WORKERS,
                         "--accept-timeout", 60, *both])
        tx = self.start(["migrate", "--guest", guest, "--to", f"tcp:127.0.0.1:{port}", "--workers", WORKERS,
                         "--compress", "zstd", "--connect-timeout", 30, "--json", *both, *sender])
        seen = self.inspect([rx, tx], ["pageferry-scanner", "pageferry-writer", "pageferry-receive"] +
                            ["pageferry-worker", "pageferry-inflater"] * WORKERS)
        out_tx, _ = self.finish_ok(tx, rx)
        self.assert_equal_ram(guest, into)
        self.assert_locked(seen, NOBODY.pw_uid, NOBODY.pw_gid, guest)
        receive = next(v for v in seen.values() if v["name"] == "pageferry-receive")
        self.assertGreater(len(receive["threads"]), 1, "the receive stage's channel threads were inspected too")
        return seen, json.loads(out_tx)

    def test_migration_stages(self):
        """MSG_ZEROCOPY, whose pinned pages the kernel counts against an
        unprivileged writer's RLIMIT_MEMLOCK."""
        seen, summary = self.migration(sender=["--zerocopy", "on"])
        writer = next(v for v in seen.values() if v["name"] == "pageferry-writer")
        # No limit where the writer could lift it (CAP_SYS_RESOURCE, which a
        # container's root may lack), else the hard limit it inherited.
        memlock = next(l for l in writer["limits"].splitlines() if l.startswith("Max locked memory"))
        hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
        want = "unlimited" if own_caps() >> CAP_SYS_RESOURCE & 1 or hard == resource.RLIM_INFINITY else str(hard)
        self.assertEqual(memlock.split()[3:5], [want, want], memlock)
        zc = summary["zerocopy"]
        self.assertTrue(zc["active"], zc)
        self.assertGreater(zc["sends"], 0, zc)

    def test_tls_migration_stages(self):
        """With TLS, the writer's sending threads too."""
        key = self.path("key")
        with open(key, "w") as f:
            f.write("correct horse battery staple\n")
        seen, _ = self.migration(both=["--psk-file", key])
        writer = next(v for v in seen.values() if v["name"] == "pageferry-writer")
        self.assertGreater(len(writer["threads"]), 1, "the writer's TLS threads were inspected too")

    def test_stages_die_with_their_front_end_after_the_switch(self):
        """Changing ids clears PR_SET_PDEATHSIG: it is armed again. With every
        stage stopped after its lock-down, the front end is killed."""
        guest = self.guest("random")
        p = self.start(["snapshot", "--guest", guest, "--out", self.disk_path("s.pfs"), "--workers", WORKERS])
        seen = self.inspect([p], ["pageferry-scanner", "pageferry-writer"] + ["pageferry-worker"] * WORKERS,
                            kill_front=p)
        deadline = time.monotonic() + 10
        while any(pftest.proc_stat(pid) for pid in seen) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual([pid for pid in seen if pftest.proc_stat(pid)], [], "stages outlived their front end")

    def test_run_as_another_user_and_group(self):
        user = other_user()
        guest = self.guest("text")
        for spec, gid in ((user.pw_name, user.pw_gid), (f"{user.pw_name}:{NOBODY.pw_gid}", NOBODY.pw_gid)):
            with self.subTest(run_as=spec):
                p = self.start(["snapshot", "--guest", guest, "--out", self.disk_path("s.pfs"), "--workers", 1,
                                "--run-as", spec])
                seen = self.inspect([p], ["pageferry-scanner", "pageferry-writer", "pageferry-worker"])
                self.finish_ok(p)
                self.assert_locked(seen, user.pw_uid, gid, guest)

    def test_refused_users(self):
        guest = self.guest("zero")
        out = self.disk_path("s.pfs")
        for spec, message in (
                ("no-such-user-pf", "--run-as: there is no user 'no-such-user-pf' on this host"),
                ("nobody:no-such-group-pf", "--run-as: there is no group 'no-such-group-pf' on this host"),
                ("root", "--run-as root: stages never run as root (uid 0 or gid 0): name an unprivileged user"),
                (f"{NOBODY.pw_name}:0", f"--run-as {NOBODY.pw_name}:0: stages never run as root (uid 0 or gid 0)"),
                ("4000000", "--run-as 4000000: uid 4000000 has no entry in the user database, so give its "
                            "group too (--run-as 4000000:GROUP)"),
                ("nobody:", "--run-as 'nobody:': expected USER or USER:GROUP")):
            with self.subTest(run_as=spec):
                r = pftest.pf("snapshot", "--guest", guest, "--out", out, "--run-as", spec, env=self.env)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertEqual(r.stderr.splitlines()[0][:len("pageferry snapshot: ") + len(message)],
                                 "pageferry snapshot: " + message)
                self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
                self.assert_no_output(out)

    def test_root_that_cannot_switch_users_is_refused(self):
        """A root without CAP_SETUID and CAP_SETGID (some containers): its
        stages could not leave uid 0."""
        guest = self.guest("zero")
        out = self.disk_path("s.pfs")
        p = self.start(["snapshot", "--guest", guest, "--out", out], hook=False,
                       prefix=["setpriv", "--bounding-set=-setuid,-setgid", "--inh-caps=-all"])
        code, _, err = self.finish(p)
        self.assertEqual(code, 2, err)
        self.assertEqual(err.strip(), "pageferry snapshot: pageferry runs as root without CAP_SETUID and "
                                      "CAP_SETGID, so its stages could not leave root: give it those "
                                      "capabilities, or run it as another user")
        self.assert_no_output(out)


class WithoutRoot(Inspecting):
    """pageferry run by an unprivileged user (nobody, through setpriv): its
    stages keep that user and drop what capabilities they have."""

    def run_as_nobody(self, args, *caps, hook=True):
        """caps (e.g. "net_bind_service"): ambient capabilities for the front
        end, as a service manager would give them."""
        prefix = ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups"]
        if caps:
            listed = ",".join("+" + c for c in caps)
            prefix += [f"--inh-caps={listed}", f"--ambient-caps={listed}"]
        return self.start(args, prefix=prefix, hook=hook)

    def setUp(self):
        super().setUp()
        for d in (self.shm, self.disk):
            os.chown(d, NOBODY.pw_uid, NOBODY.pw_gid)

    def nobodys_guest(self, pattern):
        g = self.guest(pattern)
        os.chown(g, NOBODY.pw_uid, NOBODY.pw_gid)
        return g

    def test_stages_keep_the_user_and_drop_capabilities(self):
        guest = self.nobodys_guest("mixed")
        snap = self.disk_path("s.pfs")
        p = self.run_as_nobody(["snapshot", "--guest", guest, "--out", snap, "--workers", WORKERS])
        seen = self.inspect([p], ["pageferry-scanner", "pageferry-writer"] + ["pageferry-worker"] * WORKERS)
        self.finish_ok(p)
        # A user without CAP_SETPCAP cannot empty its bounding set.
        self.assert_locked(seen, NOBODY.pw_uid, NOBODY.pw_gid, guest, bounding=False)

    def test_ambient_capabilities_are_dropped(self):
        guest = self.nobodys_guest("text")
        snap = self.disk_path("s.pfs")
        p = self.run_as_nobody(["snapshot", "--guest", guest, "--out", snap, "--workers", 1], "net_bind_service")
        seen = self.inspect([p], ["pageferry-scanner", "pageferry-writer", "pageferry-worker"])
        self.finish_ok(p)
        self.assert_locked(seen, NOBODY.pw_uid, NOBODY.pw_gid, guest, bounding=False)

    def test_threads_of_a_capable_user_drop_them(self):
        """capset acts on one thread, and only leaving uid 0 clears every
        thread's sets: a stage that is not root drops its capabilities
        before it starts a thread (restore's readers here)."""
        guest = self.nobodys_guest("text")
        snap, into = self.disk_path("s.pfs"), self.path("into.ram")
        self.finish_ok(self.run_as_nobody(["snapshot", "--guest", guest, "--out", snap], hook=False))
        p = self.run_as_nobody(["restore", snap, "--into", into, "--workers", WORKERS], "net_bind_service")
        seen = self.inspect([p], ["pageferry-restore"])
        self.finish_ok(p)
        self.assert_locked(seen, NOBODY.pw_uid, NOBODY.pw_gid, bounding=False)
        restore, = seen.values()
        self.assertEqual(len(restore["threads"]), 1 + WORKERS, "the reader threads were inspected too")
        self.assert_equal_ram(guest, into)

    def test_another_user_is_refused(self):
        guest = self.nobodys_guest("zero")
        out = self.disk_path("s.pfs")
        p = self.run_as_nobody(["snapshot", "--guest", guest, "--out", out, "--run-as", other_user().pw_name],
                               hook=False)
        code, _, err = self.finish(p)
        self.assertEqual(code, 2, err)
        self.assertEqual(err.strip(), f"pageferry snapshot: --run-as {other_user().pw_name}: pageferry does not "
                                      f"run as root, so its stages keep its own user (uid {NOBODY.pw_uid}, gid "
                                      f"{NOBODY.pw_gid}); run it as root to choose another")
        self.assert_no_output(out)


if __name__ == "__main__":
    unittest.main()
