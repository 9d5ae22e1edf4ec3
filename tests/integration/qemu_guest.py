"""A small real QEMU guest for the QEMU integration tests (no tests here).

The guest: a Debian cloud kernel and busybox-static, both fetched from
Debian's archive with `apt-get download` (by package name, nothing from
anywhere else) and cached outside the source tree; an initramfs built here;
QEMU under TCG with 256 MiB of RAM in a shared memory-backend-file.

Its /init fills a 64 MiB tmpfs file with random bytes (resident in guest
RAM: there is no swap), prints "sum 0 <md5>" once, then prints "counter N"
about every 0.3 s and, from a second loop, "sum OK <md5>" or "sum BAD <md5>"
each time it has re-read the region (a few seconds apart under TCG). After a
correct move the counter continues where it stopped and the sums stay OK.

Decisions:
- The bytes are random, not seeded: the guest keeps its own reference sum
  (the "sum 0" line) and tests compare sum lines with it; random bytes also defeat the
  zero-page and compression shortcuts, like real guest memory.
- The console goes to a file (-serial file:): a test reads it at any time
  without a reader thread. Bytes the UART had not yet sent when the guest
  stopped travel in the device state, so a source's console followed by
  its destination's is one unbroken stream (counter_sequence).
- loglevel=1: only KERN_EMERG (panics) reaches the console, so kernel
  messages cannot split a counter line.
- -no-reboot with panic=-1: a guest whose init dies, or whose memory came
  back wrong enough to crash it, makes QEMU exit instead of booting again
  (a reboot would restart the counter and could look like progress).
- Missing prerequisites (QEMU, Debian's archive) skip the test with the
  reason, except under CI (CI set): CI has both, and a test that may skip
  there silently cannot fail.
- Its own QMP client, not the product's supervisor/pf_qmp.py: the tests
  check the product with code they do not share with it.
"""
import array
import fcntl
import functools
import glob
import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

CACHE = os.environ.get("PAGEFERRY_TEST_CACHE", "/var/cache/pageferry-tests")
QEMU = "qemu-system-x86_64"
KERNEL_META = "linux-image-cloud-amd64"
BUSYBOX_PKG = "busybox-static"
RAM_MIB = 256
REGION_MIB = 64
CMDLINE = "console=ttyS0 panic=-1 quiet loglevel=1"

_KERNEL_PKG = re.compile(r"linux-image-[0-9][0-9a-z.+~-]*-cloud-amd64")
_COUNTER = re.compile(r"^counter (\d+)$")
_SUM = re.compile(r"^sum (OK|BAD|0) ([0-9a-f]{32})$")

INIT = f"""#!/bin/sh
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t devtmpfs devtmpfs /dev
busybox --install -s /bin
mkdir -p /mem
mount -t tmpfs -o size={REGION_MIB + 16}m tmpfs /mem
dd if=/dev/urandom of=/mem/region bs=1M count={REGION_MIB} 2>/dev/null
s0=$(md5sum /mem/region)
s0=${{s0%% *}}
echo "sum 0 $s0"
(
  while :; do
    sleep 1
    s=$(md5sum /mem/region)
    s=${{s%% *}}
    if [ "$s" = "$s0" ]; then echo "sum OK $s"; else echo "sum BAD $s"; fi
  done
) &
n=0
while :; do
  echo "counter $n"
  n=$((n + 1))
  sleep 0.3
done
"""


def unavailable(reason):
    """Skip the test with reason; fail it under CI, where it must run."""
    if os.environ.get("CI"):
        raise AssertionError(f"QEMU guest unavailable under CI: {reason}")
    raise unittest.SkipTest(reason)


# -- kernel and busybox from Debian's archive --------------------------------

def _run(cmd, what, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
        unavailable(f"{what}: {' '.join(cmd)} exited {r.returncode}: {last}")
    return r.stdout


def kernel_package():
    """The versioned package linux-image-cloud-amd64 depends on now
    (linux-image-6.1.0-NN-cloud-amd64), from the local package index."""
    out = _run(["apt-cache", "show", "--no-all-versions", KERNEL_META], f"cannot resolve {KERNEL_META}")
    for line in out.splitlines():
        if line.startswith("Depends:"):
            for dep in line[len("Depends:"):].split(","):
                name = dep.split("(")[0].strip()
                if _KERNEL_PKG.fullmatch(name):
                    return name
    unavailable(f"{KERNEL_META} depends on no linux-image-*-cloud-amd64 package")


def _fetch(pkg, member, name):
    """CACHE/<pkg>/<name>: `member` (a glob inside the package) of Debian
    package pkg, downloaded and unpacked once; later runs reuse it. A
    package name that changes (a new kernel ABI) is a new directory."""
    dest = os.path.join(CACHE, pkg, name)
    if os.path.exists(dest):
        return dest
    try:
        os.makedirs(CACHE, exist_ok=True)
    except OSError as e:
        unavailable(f"cannot create the cache {CACHE} (set PAGEFERRY_TEST_CACHE): {e.strerror}")
    # Test files may run at once: one fetches, the other waits and reuses.
    with open(os.path.join(CACHE, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(dest):
            return dest
        work = tempfile.mkdtemp(prefix=f".{pkg}.", dir=CACHE)
        try:
            # As root, apt's sandbox user cannot write into our directory.
            sandbox = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
            _run(["apt-get", "download", "-q"] + sandbox + [pkg],
                 f"cannot download {pkg} from Debian's archive (is the package index current?)", cwd=work)
            debs = glob.glob(os.path.join(work, f"{pkg}_*.deb"))
            if len(debs) != 1:
                unavailable(f"apt-get download {pkg} left {len(debs)} .deb files")
            _run(["dpkg-deb", "-x", debs[0], os.path.join(work, "root")], f"cannot unpack {debs[0]}")
            found = glob.glob(os.path.join(work, "root", member))
            if len(found) != 1:
                unavailable(f"{pkg} has {len(found)} files matching {member}")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(found[0], dest + ".tmp")
            os.chmod(dest + ".tmp", 0o755)
            os.rename(dest + ".tmp", dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dest


@functools.lru_cache(maxsize=None)
def kernel():
    pkg = kernel_package()
    return _fetch(pkg, "boot/vmlinuz-*", "vmlinuz")


@functools.lru_cache(maxsize=None)
def busybox():
    return _fetch(BUSYBOX_PKG, "bin/busybox", "busybox")


# -- the initramfs -----------------------------------------------------------

def _cpio_newc(entries):
    """A cpio "newc" archive (what the kernel unpacks) of entries
    (name, mode, data, (rdev major, rdev minor)); written here because
    neither cpio nor root is needed to put a device node in it."""
    out = bytearray()

    def pad():
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data, rdev) in enumerate(entries + [("TRAILER!!!", 0, b"", (0, 0))], 1):
        nm = name.encode() + b"\0"
        nlink = 2 if mode & 0o040000 else 1
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(nm), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + nm
        pad()
        out += data
        pad()
    return bytes(out)


def build_initramfs(path):
    """A gzip'd initramfs at path: busybox and INIT; nothing else."""
    with open(busybox(), "rb") as f:
        bb = f.read()
    d, x = 0o040755, 0o100755
    entries = [(n, d, b"", (0, 0)) for n in ("bin", "dev", "proc", "mem")]
    # The kernel opens /dev/console for init before anything is mounted.
    entries.append(("dev/console", 0o020600, b"", (5, 1)))
    entries.append(("bin/busybox", x, bb, (0, 0)))
    entries.append(("bin/sh", 0o120777, b"busybox", (0, 0)))
    entries.append(("init", x, INIT.encode(), (0, 0)))
    with open(path, "wb") as f:
        f.write(gzip.compress(_cpio_newc(entries), compresslevel=6))
    return path


# -- QMP, minimal and strict enough for tests ---------------------------------

class QMPError(Exception):
    def __init__(self, command, error):
        self.cls = error.get("class", "")
        self.desc = error.get("desc", "")
        super().__init__(f"{command}: {self.cls}: {self.desc}")


class QMP:
    """One QMP connection: greeting checked, capabilities negotiated.
    Events are kept in self.events in arrival order."""

    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:  # QEMU creates the socket a moment after it starts
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.buf = b""
        self.events = []
        greeting = self._read()
        if "QMP" not in greeting:
            raise AssertionError(f"not a QMP greeting: {greeting}")
        self.execute("qmp_capabilities")

    def _read(self):
        """One message; socket.timeout leaves a partial line buffered, so
        the connection stays usable after a wait that timed out."""
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("QMP connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, command, fds=(), **args):
        """QEMU's "return" value; QMPError for its "error". fds are sent
        with the command (SCM_RIGHTS), as `getfd` and `add-fd` expect."""
        msg = {"execute": command}
        if args:
            msg["arguments"] = args
        data = json.dumps(msg).encode() + b"\n"
        if fds:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        else:
            self.sock.sendall(data)
        while True:
            r = self._read()
            if "event" in r:
                self.events.append(r)
            elif "error" in r:
                raise QMPError(command, r["error"])
            else:
                return r.get("return")

    def wait_event(self, name, timeout=60):
        """The first event `name` (kept or arriving), removed from
        self.events."""
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("event") == name:
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no QMP event {name} within {timeout} s")
            self.sock.settimeout(left)
            try:
                self.events.append(self._read())
            except socket.timeout:
                pass
            finally:
                self.sock.settimeout(timeout)

    def wait_migration(self, timeout=120):
        """query-migrate once it has ended: completed, failed or cancelled."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.execute("query-migrate")
            if r.get("status") in ("completed", "failed", "cancelled"):
                return r
            if time.monotonic() > deadline:
                raise AssertionError(f"migration still {r.get('status')} after {timeout} s")
            time.sleep(0.02)

    def status(self):
        return self.execute("query-status")["status"]

    def close(self):
        self.sock.close()


# -- the guest ----------------------------------------------------------------

class Guest:
    """A QEMU process and its files: ram (the memory-backend-file), qmp
    (socket path), serial (console log). Start with start_guest."""

    def __init__(self, workdir, name, ram, initrd, backend="file", incoming=False, paused=False,
                 extra=()):
        self.dir, self.name, self.ram = workdir, name, ram
        self.qmp_path = os.path.join(workdir, f"{name}.qmp")
        self.serial = os.path.join(workdir, f"{name}.serial")
        self.stderr = os.path.join(workdir, f"{name}.stderr")
        self._qmp = None
        self.cmd = qemu_command(ram, kernel(), initrd, self.qmp_path, self.serial, backend, incoming,
                                paused, extra)
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         start_new_session=True)

    # console
    def lines(self):
        """The console's complete lines so far (a line being written is
        left out)."""
        try:
            with open(self.serial, "rb") as f:
                text = f.read().decode("ascii", "replace").replace("\r", "")
        except FileNotFoundError:
            return []
        return text.split("\n")[:-1]

    def counters(self):
        return [int(m.group(1)) for m in map(_COUNTER.match, self.lines()) if m]

    def last_counter(self):
        c = self.counters()
        return c[-1] if c else None

    def sums(self):
        """[(kind, md5)]: kind "0" for the reference, "OK" or "BAD"."""
        return [(m.group(1), m.group(2)) for m in map(_SUM.match, self.lines()) if m]

    def last_sum(self):
        s = [x for x in self.sums() if x[0] != "0"]
        return s[-1] if s else None

    def sum0(self):
        s = [x[1] for x in self.sums() if x[0] == "0"]
        return s[0] if s else None

    def _check_alive(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"QEMU {self.name} exited {self.proc.returncode}: {self.tail()}")

    def tail(self):
        with open(self.stderr, "rb") as f:
            err = f.read().decode(errors="replace").strip()
        return f"stderr: {err[-400:]!r}; console: {self.lines()[-5:]}"

    def wait_for(self, pred, what, timeout):
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            self._check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"QEMU {self.name}: no {what} within {timeout} s; {self.tail()}")
            time.sleep(0.05)

    def wait_ready(self, timeout=120):
        """Booted: the reference sum and a first counter are out."""
        self.wait_for(lambda: self.sum0() and self.last_counter() is not None, "boot", timeout)

    def wait_for_counter(self, n, timeout=120):
        """The latest counter once it is at least n."""
        def reached():
            c = self.last_counter()
            return c is not None and c >= n
        self.wait_for(reached, f"counter {n}", timeout)
        return self.last_counter()

    def wait_for_sums(self, count, timeout=120):
        """The sum lines (OK or BAD) once there are at least count."""
        checks = lambda: [s for s in self.sums() if s[0] != "0"]  # noqa: E731
        self.wait_for(lambda: len(checks()) >= count, f"{count} sum lines", timeout)
        return checks()

    # control
    def qmp(self):
        """This guest's QMP connection (one, opened on first use)."""
        if self._qmp is None:
            self._qmp = QMP(self.qmp_path)
        return self._qmp

    def close_qmp(self):
        """Hang up this guest's QMP connection: QEMU serves one client at a
        time, so a test closes its own before pageferry connects."""
        if self._qmp:
            self._qmp.close()
            self._qmp = None

    def kill(self):
        self.close_qmp()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self, timeout=10):
        """Ask QEMU to quit; kill it if it does not."""
        if self.proc.poll() is None:
            try:
                self.qmp().execute("quit")
                self.proc.wait(timeout)
            except (OSError, EOFError, QMPError, AssertionError, subprocess.TimeoutExpired):
                pass
        self.kill()


def require_qemu():
    if shutil.which(QEMU) is None:
        unavailable(f"{QEMU} is not installed (qemu-system-x86 from bookworm-backports)")


def qemu_command(ram, kernel_path, initrd, qmp, serial, backend="file", incoming=False, paused=False,
                 extra=()):
    """QEMU's command line for the test guest. backend: "file" (shared
    memory-backend-file at ram), "file-private" (the same, share=off),
    "memfd" (memory-backend-memfd, share=on; ram unused), or "numa2" (two
    shared file backends of half the size, ram + ".0" and ram + ".1", one
    per NUMA node)."""
    size = f"{RAM_MIB}M"
    if backend == "numa2":
        half = f"{RAM_MIB // 2}M"
        mem = ["-m", size]
        for i in (0, 1):
            mem += ["-object", f"memory-backend-file,id=ram{i},size={half},mem-path={ram}.{i},share=on",
                    "-numa", f"node,nodeid={i},memdev=ram{i}"]
        machine = "q35"
    else:
        obj = {"file": f"memory-backend-file,id=ram,size={size},mem-path={ram},share=on",
               "file-private": f"memory-backend-file,id=ram,size={size},mem-path={ram},share=off",
               "memfd": f"memory-backend-memfd,id=ram,size={size},share=on"}[backend]
        mem = ["-m", size, "-object", obj]
        machine = "q35,memory-backend=ram"
    require_qemu()
    cmd = [QEMU, "-accel", "tcg", "-machine", machine] + mem + [
        "-kernel", kernel_path, "-initrd", initrd, "-append", CMDLINE,
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", f"file:{serial}", "-qmp", f"unix:{qmp},server=on,wait=off"]
    if incoming:
        cmd += ["-incoming", "defer"]
    if paused:
        cmd.append("-S")
    return cmd + list(extra)


def start_guest(workdir, name, ram, initrd, procs=None, **kw):
    """A Guest started now; its Popen is appended to procs (a Workspace's
    self.procs kills it, with its session, at the end of the test)."""
    g = Guest(workdir, name, ram, initrd, **kw)
    if procs is not None:
        procs.append(g.proc)
    return g


def counter_sequence(*guests):
    """The counters of the guests' consoles read as one stream (a source,
    then its destination): a move that kept the guest's state gives
    consecutive numbers; a restarted guest starts again at 0."""
    text = ""
    for g in guests:
        try:
            with open(g.serial, "rb") as f:
                text += f.read().decode("ascii", "replace").replace("\r", "")
        except FileNotFoundError:
            pass
    return [int(m.group(1)) for m in map(_COUNTER.match, text.split("\n")) if m]


def is_consecutive(seq):
    return bool(seq) and seq == list(range(seq[0], seq[0] + len(seq)))
