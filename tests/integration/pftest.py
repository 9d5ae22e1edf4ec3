"""What every integration test needs, in one place: where the pageferry
under test is, a workspace per test (a directory in /dev/shm for guests, one
in /var/tmp on a real disk for O_DIRECT snapshots, a private status-file
directory), processes started in their own session so that a test that
fails never leaves a pipeline running, and two network namespaces joined by
a veth pair.

Decisions:
- Everything a test makes is removed by cleanups registered as it is made,
  so a setUp or setUpClass that fails half-way removes what it did make.
- Each test gets its own PAGEFERRY_RUN_DIR: `pageferry status` and `cancel`
  see only that test's migrations, never a benchmark's or another test's.
- free_port asks the kernel for a port (bind to port 0) instead of guessing:
  random guesses collided with ports in use.
- CRC-32C has one implementation, pfwire.crc32c."""
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest

from pfwire import BUILD, crc32c  # noqa: F401  (re-exported: one implementation)

PF = os.path.abspath(os.path.join(BUILD, "pageferry"))
SHM = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
# Snapshots are written with O_DIRECT: a real disk, not tmpfs.
DISK = "/var/tmp"
# One command longer than this is a hang, whatever the build (sanitizers
# included).
COMMAND_TIMEOUT = 300


def main_unless(why_not):
    """A test file's main: meson's "skipped" (exit 77) with why_not when
    the machine cannot run it, else its tests."""
    if why_not:
        print(f"SKIP: {why_not}")
        raise SystemExit(77)
    unittest.main(verbosity=2)


def pf(*args, env=None, check=None, timeout=COMMAND_TIMEOUT):
    """Run pageferry to completion.  env: variables added to this process's
    environment.  check: the exit status required, if any."""
    r = subprocess.run([PF] + [str(a) for a in args], capture_output=True, text=True,
                       env=dict(os.environ, **(env or {})), timeout=timeout)
    if check is not None and r.returncode != check:
        raise AssertionError(f"pageferry {' '.join(map(str, args))}: exit {r.returncode}, "
                             f"stderr: {r.stderr.strip()}")
    return r


def checksum_at_pause(path, timeout=30):
    """The checksum guestsim publishes once paused.  It acknowledges the
    pause first and checksums its RAM afterwards, on idle CPU only: a fast
    migration can end before the file exists."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(path) as f:
        return f.read().strip()


def free_port():
    """A TCP port free on this machine now: the kernel picks it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_netns(ns, cmd):
    """cmd, run inside network namespace ns when ns is given."""
    cmd = [str(c) for c in cmd]
    return ["ip", "netns", "exec", ns] + cmd if ns else cmd


def pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _stat_fields(pid):
    """The fields of /proc/PID/stat after the command's name (state first),
    or None once pid is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields if len(fields) > 3 else None
    except (FileNotFoundError, ProcessLookupError):
        return None


def proc_stat(pid):
    """(ppid, session) of pid, or None once it is gone."""
    fields = _stat_fields(pid)
    return (int(fields[1]), int(fields[3])) if fields else None


def proc_name(pid):
    """The file name of pid's program ("pageferry-worker"), or ""."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return os.path.basename(f.read().split(b"\0")[0].decode())
    except (FileNotFoundError, ProcessLookupError):
        return ""


def dirty_log_pause(log):
    """(pause_request, pause_ack) of a dirty log (doc/vmm-interface.md,
    "The dirty log"): (0, 0) while the guest runs freely."""
    with open(log, "rb") as f:
        head = f.read(132)
    return struct.unpack_from("<I", head, 64)[0], struct.unpack_from("<I", head, 128)[0]


class Workspace(unittest.TestCase):
    """self.shm (guests, destinations), self.disk (snapshots), self.run_dir
    (status files, in self.env), self.procs (killed with their sessions at
    the end of the test)."""

    guest_size = "256M"
    finish_timeout = 60

    def setUp(self):
        self.procs = []
        self.shm = self.tempdir(SHM)
        self.disk = self.tempdir(DISK)
        self.run_dir = self.tempdir(None)
        self.env = dict(os.environ, PAGEFERRY_RUN_DIR=self.run_dir)
        # For a setUp that fails after starting something (tearDown is not
        # called then).  Cleanups run last in, first out: before the
        # directories go.
        self.addCleanup(self.stop_processes)

    def tearDown(self):
        # Here, before any cleanup a subclass registered: an unmount needs
        # the processes using the filesystem gone.
        self.stop_processes()

    def tempdir(self, where):
        d = tempfile.mkdtemp(prefix="pf-it-", dir=where)
        self.addCleanup(shutil.rmtree, d, ignore_errors=True)
        return d

    @classmethod
    def class_tempdir(cls, where):
        """A directory for the whole class (setUpClass), removed after it."""
        d = tempfile.mkdtemp(prefix="pf-it-", dir=where)
        cls.addClassCleanup(shutil.rmtree, d, ignore_errors=True)
        return d

    def path(self, name):
        return os.path.join(self.shm, name)

    def disk_path(self, name):
        return os.path.join(self.disk, name)

    # -- processes -----------------------------------------------------------

    def spawn(self, cmd, ns=None, env=None, stdout=subprocess.PIPE, stderr=subprocess.PIPE):
        """Start cmd (inside network namespace ns) in a session of its own,
        with self.env plus env; text pipes."""
        p = subprocess.Popen(in_netns(ns, cmd), stdout=stdout, stderr=stderr, text=True,
                             start_new_session=True, env=dict(self.env, **(env or {})))
        self.procs.append(p)
        return p

    def stop_processes(self):
        """SIGKILL every process this test started that still runs, with
        its session (the stages of a pipeline)."""
        procs, self.procs = self.procs, []
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:  # not a group leader
                    p.kill()
                p.wait()
            for f in (p.stdin, p.stdout, p.stderr):
                if f:
                    f.close()

    def wait_child(self, parent, name, timeout=30):
        """The pid of parent's child `name` (a stage) once it runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid in pids():
                st = proc_stat(pid)
                if st and st[0] == parent.pid and proc_name(pid) == name:
                    return pid
            time.sleep(0.02)
        self.fail(f"{name} never started under pid {parent.pid}")

    def wait_stderr(self, p, text, timeout=60):
        """Read p's stderr until a line contains text (the front-end hooks say
        where they stopped)."""
        deadline, seen = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([p.stderr], [], [], 0.2)
            if ready:
                line = p.stderr.readline()
                if not line:
                    break
                seen += line
                if text in line:
                    return
        self.fail(f"never saw {text!r} on stderr; got {seen!r}")

    def stopped(self, pid, timeout=60):
        """Wait until pid is stopped: a hook says so on stderr and then
        raises SIGSTOP, and a SIGCONT sent in between would be lost."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fields = _stat_fields(pid)
            if fields is None:
                self.fail(f"pid {pid} ended before it stopped")
            if fields[0] == "T":
                return
            time.sleep(0.02)
        self.fail(f"pid {pid} never stopped")

    def finish(self, p, timeout=None):
        """(exit status, stdout, stderr) of p once it ends."""
        out, err = p.communicate(timeout=timeout or self.finish_timeout)
        return p.returncode, out, err

    # -- guests and their copies ----------------------------------------------

    def guest(self, pattern, size=None):
        """A guest RAM file from `pageferry mkguest` in self.shm."""
        g = self.path(f"{pattern}.ram")
        pf("mkguest", pattern, size or self.guest_size, g, check=0)
        return g

    def verify(self, a, b):
        """`pageferry verify a b`: exit 0 and "equal" when bit-exact."""
        return pf("verify", a, b)

    def assert_equal_ram(self, a, b, msg=""):
        r = self.verify(a, b)
        self.assertEqual(r.returncode, 0, f"{msg} {r.stdout}{r.stderr}".strip())
        self.assertIn("equal", r.stdout)

    def assert_no_output(self, path):
        """Neither path nor its .pf-partial exists: nothing that could be
        taken for a result."""
        self.assertFalse(os.path.exists(path), f"{path} left behind")
        self.assertFalse(os.path.exists(path + ".pf-partial"), f"{path}.pf-partial left behind")


class VethPair:
    """Two network namespaces joined by a veth pair: side 0 (the source) at
    <subnet>.1, side 1 (the destination) at <subnet>.2; 10.x addresses
    inside them only.  Names carry the pid, so concurrent test files do not
    meet, and one left by a killed earlier run with this pid is replaced."""

    def __init__(self, name, subnet):
        tag = os.getpid() % 100000
        self.ns = (f"pf-{name}src-{tag}", f"pf-{name}dst-{tag}")
        self.dev = (f"pf{name}{tag}a", f"pf{name}{tag}b")
        self.addr = (f"{subnet}.1", f"{subnet}.2")

    @staticmethod
    def _ip(*args, **kw):
        return subprocess.run(["ip"] + [str(a) for a in args], check=True, capture_output=True, text=True,
                              **kw)

    def create(self):
        self.remove()
        try:
            for n in self.ns:
                self._ip("netns", "add", n)
            self._ip("link", "add", self.dev[0], "netns", self.ns[0], "type", "veth", "peer", "name",
                     self.dev[1], "netns", self.ns[1])
            for n, d, a in zip(self.ns, self.dev, self.addr):
                self._ip("-n", n, "addr", "add", f"{a}/24", "dev", d)
                self._ip("-n", n, "link", "set", "lo", "up")
            self.link_up()
        except BaseException:
            self.remove()
            raise

    def remove(self):
        # A namespace takes its end of the pair with it, and the peer goes
        # with that end.
        for n in self.ns:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)

    def link_up(self, timeout=10):
        """Both ends up and usable: each has a carrier."""
        for n, d in zip(self.ns, self.dev):
            self._ip("-n", n, "link", "set", d, "up")
        deadline = time.monotonic() + timeout
        while not all("LOWER_UP" in self._ip("-n", n, "link", "show", "dev", d).stdout
                      for n, d in zip(self.ns, self.dev)):
            if time.monotonic() > deadline:
                raise AssertionError("the veth link did not come up")
            time.sleep(0.05)

    def link_down(self, *sides):
        """Take the given ends down; the time it happened."""
        for i in sides:
            self._ip("-n", self.ns[i], "link", "set", self.dev[i], "down")
        return time.monotonic()

    def netns_exec(self, side, *cmd):
        return self._ip("netns", "exec", self.ns[side], *cmd)


class VethWorkspace(Workspace):
    """A Workspace whose class shares one VethPair (self.veth), removed when
    the class is done, or when setUpClass fails."""

    veth_name, veth_subnet = "v", "10.201.0"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.veth = VethPair(cls.veth_name, cls.veth_subnet)
        cls.addClassCleanup(cls.veth.remove)
        cls.veth.create()
