"""Starting, watching and stopping the pipeline's stage processes.

Each stage is exec'd (posix_spawn) with exactly the fds it needs, dup'ed
onto the numbers its main file documents; everything else the supervisor
holds is close-on-exec. Its stderr goes to a pipe we read, so that when a
run fails we can report the root cause in one line instead of every
stage's consequential complaints. Each stage learns from its environment
the unprivileged user it becomes when it locks down (pf_privs).
"""
import fcntl
import os
import select
import signal
import socket
import sys
import time

import pf_abi
import pf_privs

HIGH_FD = 100
TEST_HOOKS = False   # set by the entry point of -Dtest_hooks=true builds
# A worker or inflater that dies is replaced this many times per transfer at
# most; past that the transfer fails as it would have without replacements.
MAX_REPLACEMENTS = 3
# Deaths that are somebody's decision, not an accident: a sandbox violation
# (a subverted stage is not restarted into the same input) and the signals
# a user or the system sends to stop the whole job.
NOT_REPLACED = {signal.SIGSYS, signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}


def test_hook(point):
    """Tests only: with PAGEFERRY_TEST_FE_HOOK=POINT, the front end stops
    itself (SIGSTOP) at POINT, after saying so on stderr, so that a test can
    kill it exactly there or let it go on (SIGCONT). The stages keep running."""
    if TEST_HOOKS and os.environ.get("PAGEFERRY_TEST_FE_HOOK") == point:
        sys.stderr.write(f"pageferry: test hook: stopped at {point}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGSTOP)


def find_stage(name, search_dirs):
    for d in search_dirs:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    raise FileNotFoundError(f"stage binary {name} not found in {', '.join(search_dirs)}")


# A stage's stderr line that is news, not a failure (e.g. a refused
# connection): shown at once, never taken for the reason a run failed.
NOTICE = ": notice: "


def _forward_notices(before, chunk):
    start = before.rfind(b"\n") + 1
    for line in (before[start:] + chunk).split(b"\n")[:-1]:
        if NOTICE.encode() in line:
            sys.stderr.write(line.decode(errors="replace") + "\n")
            sys.stderr.flush()


class Stage:
    def __init__(self, label, pid, err_fd):
        self.label = label
        self.pid = pid
        self.err_fd = err_fd
        self.err = b""
        self.status = None
        self.pidfd = None
        self.rusage = None
        self.ended_at = None
        self.respawn = None     # restartable: (binary, args, {target: fd we keep})
        self.restartable = False
        self.replaced = False   # died and a replacement took over

    def message(self):
        lines = [l for l in self.err.decode(errors="replace").splitlines() if l.strip() and NOTICE not in l]
        return lines[-1] if lines else ""

    def describe_failure(self):
        st = self.status
        if os.WIFSIGNALED(st):
            sig = os.WTERMSIG(st)
            if sig == signal.SIGSYS:
                return (f"{self.label} violated its sandbox (a forbidden system call; "
                        f"killed by SIGSYS)")
            return f"{self.label} was killed by signal {sig} ({signal.Signals(sig).name})"
        msg = self.message()
        return msg or f"{self.label} exited with status {os.WEXITSTATUS(st)}"

    def failed(self):
        return (self.status is not None and not self.replaced and
                not (os.WIFEXITED(self.status) and os.WEXITSTATUS(self.status) == 0))

    def replaceable(self):
        return (self.restartable and os.WIFSIGNALED(self.status) and
                os.WTERMSIG(self.status) not in NOT_REPLACED and not getattr(self, "killed_by_us", False))


class Pipeline:
    def __init__(self, search_dirs):
        self.search_dirs = search_dirs
        self.stages = []
        self.watched = {}  # fd -> callback, run when fd is readable
        self._devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.replacements = []  # labels of the stages replaced, in order
        self.stopping = False   # a failure or a stop: nothing is replaced any more
        # fn(dead, new): a restartable stage died and is about to be replaced
        # (new None), then its replacement was started (new: its Stage).
        self.on_replace = None

    def watch_fd(self, fd, callback):
        """Run callback() from poll() whenever fd is readable (a stage asking
        the front end something)."""
        self.watched[fd] = callback

    def watch_word(self, fd, word, callback):
        """Run callback() once, when a stage writes the byte `word` on fd (its
        notice pipe), ahead of its exit; not if it ends without it (the
        pipeline reports why)."""
        def read():
            said = os.read(fd, 1)
            self.watched.pop(fd)
            if said == word:
                callback()
        self.watch_fd(fd, read)

    def spawn(self, label, binary, args, fds, restartable=False):
        """fds: {target_fd_number: fd_we_hold}. restartable: a stage whose
        death by an accident (a signal not in NOT_REPLACED) is repaired by
        starting it again with the same arguments and fds, up to
        MAX_REPLACEMENTS per pipeline; we keep its fds open meanwhile, so that
        its peers do not see it hang up. The stage must be able to resume
        from what it finds in its rings (the replacement learns it is one
        from PAGEFERRY_RESTARTED=K)."""
        st = self._spawn(label, binary, args, fds, {})
        if restartable:
            st.restartable = True
            st.respawn = (binary, list(args), {t: fcntl.fcntl(f, fcntl.F_DUPFD_CLOEXEC, HIGH_FD)
                                               for t, f in fds.items()})
        return st

    def _spawn(self, label, binary, args, fds, extra_env):
        path = find_stage(binary, self.search_dirs)
        run_as = pf_privs.stage_env()
        r, w = os.pipe2(os.O_CLOEXEC)
        # Lift every source above the targets first, so no dup2 clobbers a
        # source that a later dup2 still needs.
        lifted = {t: fcntl.fcntl(f, fcntl.F_DUPFD_CLOEXEC, HIGH_FD) for t, f in fds.items()}
        err = fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, HIGH_FD)
        null = fcntl.fcntl(self._devnull, fcntl.F_DUPFD_CLOEXEC, HIGH_FD)
        actions = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1),
                   (os.POSIX_SPAWN_DUP2, err, 2)]
        actions += [(os.POSIX_SPAWN_DUP2, src, t) for t, src in sorted(lifted.items())]
        try:
            # The stage checks that we are still its parent (stage_tie_to_supervisor),
            # and becomes the user pf_privs chose when it locks down (ours
            # override whatever the environment says).
            env = dict(os.environ, PAGEFERRY_SUPERVISOR_PID=str(os.getpid()), **run_as, **extra_env)
            pid = os.posix_spawn(path, [binary] + [str(a) for a in args], env,
                                 file_actions=actions, setsigdef=(signal.SIGINT, signal.SIGTERM, signal.SIGPIPE))
        finally:
            for f in list(lifted.values()) + [err, null, w]:
                os.close(f)
        os.set_blocking(r, False)
        st = Stage(label, pid, r)
        st.pidfd = os.pidfd_open(pid)
        self.stages.append(st)
        return st

    def running(self):
        return [s for s in self.stages if s.status is None]

    def _read_errors(self, timeout):
        # A stage's pidfd turns readable the moment it exits: the end of a
        # transfer (and the handoff, which waits on it) is seen at once,
        # not at the next timeout.
        fds = [s.err_fd for s in self.stages if s.err_fd is not None] + list(self.watched)
        fds += [s.pidfd for s in self.stages if s.pidfd is not None and s.status is None]
        if not fds:
            time.sleep(timeout)
            return
        ready, _, _ = select.select(fds, [], [], timeout)
        for fd in ready:
            if fd in self.watched:
                self.watched[fd]()
        for s in self.stages:
            if s.err_fd in ready:
                try:
                    chunk = os.read(s.err_fd, 65536)
                except BlockingIOError:
                    continue
                if chunk:
                    _forward_notices(s.err, chunk)
                    s.err = (s.err + chunk)[-8192:]
                else:
                    os.close(s.err_fd)
                    s.err_fd = None

    def _reap(self):
        while True:
            try:
                pid, status, ru = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for s in list(self.stages):
                if s.pid == pid:
                    s.status, s.rusage, s.ended_at = status, ru, time.monotonic()
                    if s.pidfd is not None:
                        os.close(s.pidfd)
                        s.pidfd = None
                    if s.replaceable() and not self.stopping and len(self.replacements) < MAX_REPLACEMENTS:
                        self._replace(s)
                    else:
                        # Ended for good (done, failed, or past the limit):
                        # its peers must now see it hang up.
                        self._release(s)

    @staticmethod
    def _release(s):
        if s.respawn:
            for f in s.respawn[2].values():
                os.close(f)
            s.respawn = None

    def _replace(self, dead):
        binary, args, fds = dead.respawn
        self.replacements.append(dead.label)
        sys.stderr.write(f"pageferry: {dead.label} was killed by signal {os.WTERMSIG(dead.status)}; "
                         f"starting a replacement ({len(self.replacements)} of at most {MAX_REPLACEMENTS})\n")
        if self.on_replace:
            self.on_replace(dead, None)
        new = self._spawn(dead.label, binary, args, fds,
                          {"PAGEFERRY_RESTARTED": str(len(self.replacements))})
        new.respawn, dead.respawn = dead.respawn, None
        new.restartable = True
        dead.replaced = True
        if self.on_replace:
            self.on_replace(dead, new)

    def poll(self, timeout=0.25):
        """Wait up to timeout; returns the stages that have failed so far."""
        self._read_errors(timeout)
        self._reap()
        return [s for s in self.stages if s.failed()]

    def kill_all(self, grace=1.0):
        """After a failure: the others usually end by themselves within a
        moment (their rings hang up), each with its own reason, and the one
        that failed first may still be writing its message; then SIGKILL.
        Nothing a stage asks from now on is answered: a run that fails does
        not decide a commit, and a stage that dies is not replaced."""
        self.watched = {}
        self.stopping = True
        deadline = time.monotonic() + grace
        while self.running() and time.monotonic() < deadline:
            self.poll(0.05)
        for s in self.running():
            try:
                s.killed_by_us = True
                os.kill(s.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self.running() and time.monotonic() < deadline:
            self.poll(0.05)

    def drain(self):
        """After every stage ended: collect the rest of their stderr."""
        end = time.monotonic() + 1
        while any(s.err_fd is not None for s in self.stages) and time.monotonic() < end:
            self._read_errors(0.05)

    def root_cause(self):
        failed = sorted((s for s in self.stages if s.failed()), key=lambda s: s.ended_at)
        if not failed:
            return None
        # A stage we killed after the failure, or one that only saw its peer
        # go, is not the cause.
        for s in failed:
            if not getattr(s, "killed_by_us", False) and not (os.WIFEXITED(s.status) and
                                                              os.WEXITSTATUS(s.status) == pf_abi.STAGE_EXIT_PEER):
                return s
        return failed[0]

    def close(self):
        for s in self.stages:
            for attr in ("err_fd", "pidfd"):
                if getattr(s, attr) is not None:
                    os.close(getattr(s, attr))
                    setattr(s, attr, None)
            self._release(s)
        os.close(self._devnull)


def word_pipe(keep, args, flag, fds, target):
    """A pipe on which a stage says one byte to us ahead of its exit
    (Pipeline.watch_word): its write end goes to the stage on fd target,
    with flag in its args; the read end is ours, kept in keep (closed with
    the run). Returns (read end, write end): close the write end once the
    stage is spawned, so that its death reads as end of file."""
    r, w = os.pipe2(os.O_CLOEXEC)
    keep.append(r)
    args.append(flag)
    fds[target] = w
    return r, w


def memfd(name, size):
    """A memfd of size bytes (an arena): shared with stages by fd, gone with the last of them."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd


def wake_pair():
    """One socketpair per ring: wake-ups both ways, and hang-up on death."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return a, b
