"""Status files of running live migrations: `pageferry status` and `cancel`.

A migration's supervisor holds an exclusive flock on its status file for as
long as it lives; the kernel drops the lock when the process ends, however
it ends. So a file whose lock can be taken belongs to no one: readers remove
it instead of trusting it, and `cancel` never signals a PID that has been
reused by another process since the file was written.
"""
import errno
import fcntl
import json
import os
import signal

from pf_jobs import JobError


def _run_dirs():
    """Where status files live: $PAGEFERRY_RUN_DIR, else /run/pageferry (root),
    else a per-user directory."""
    if os.environ.get("PAGEFERRY_RUN_DIR"):
        return [os.environ["PAGEFERRY_RUN_DIR"]]
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return ["/run/pageferry", os.path.join(xdg, "pageferry") if xdg else f"/tmp/pageferry-{os.getuid()}"]


def status_dir():
    for d in _run_dirs():
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            continue
    raise JobError("no writable directory for the migration's status file (set PAGEFERRY_RUN_DIR)")


class StatusFile:
    """Ours, locked while we live; rewritten in place (a new inode per update
    would drop the lock)."""

    def __init__(self):
        self.path = os.path.join(status_dir(), f"migrate-{os.getpid()}.json")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def write(self, status):
        data = json.dumps(status).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def remove(self):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)


def _read_live(path):
    """The status in path if its writer still runs (it holds the lock), else
    None; a file nobody holds is removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno != errno.EWOULDBLOCK:
                raise
            # Held: its writer lives. It rewrites the file in place; a read
            # that caught it half-written is retried.
            for _ in range(20):
                try:
                    return json.loads(os.pread(fd, 65536, 0))
                except ValueError:
                    continue
            return None
        try:
            os.unlink(path)  # left by a supervisor that was killed
        except FileNotFoundError:
            pass
        return None
    finally:
        os.close(fd)


def running_migrations():
    out = []
    for d in _run_dirs():
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            if name.startswith("migrate-") and name.endswith(".json"):
                st = _read_live(os.path.join(d, name))
                if st:
                    st["_path"] = os.path.join(d, name)
                    out.append(st)
    return out


def status(ctx):
    migs = running_migrations()
    for m in migs:
        del m["_path"]
    if ctx.json:
        print(json.dumps(migs, indent=2))
        return 0 if migs else 1
    if not migs:
        print("no live migration is running")
        return 1
    for m in migs:
        ed = m["expected_downtime_ms"]
        print(f"pid {m['pid']} to {m['to']}: round {m['round']}, {m['transferred_bytes'] / 2**20:.0f} MiB sent, "
              f"{m['remaining_bytes'] / 2**20:.0f} MiB dirty, dirty rate {m['dirty_mib_per_s']} MiB/s, "
              f"{m['mib_per_s']:.0f} MiB/s, expected downtime "
              f"{'unknown' if ed is None else f'{ed:.0f} ms'}, throttle {m['throttle_pct']}%")
    return 0


def cancel(ctx, pid):
    migs = [m for m in running_migrations() if pid is None or m["pid"] == pid]
    if not migs:
        raise JobError("no live migration is running" + (f" with pid {pid}" if pid else ""))
    if len(migs) > 1:
        raise JobError("several migrations are running; name one with --pid: " +
                       ", ".join(str(m["pid"]) for m in migs), 2)
    target = migs[0]
    # Pin the process, then check that its file is still held: if it is, the
    # PID cannot have been reused, and the pidfd names the migration itself.
    try:
        pidfd = os.pidfd_open(target["pid"])
    except ProcessLookupError:
        raise JobError(f"migration {target['pid']} has just ended")
    try:
        if _read_live(target["_path"]) is None:
            raise JobError(f"migration {target['pid']} has just ended")
        signal.pidfd_send_signal(pidfd, signal.SIGUSR1)
    finally:
        os.close(pidfd)
    print(f"cancel requested for migration {target['pid']}")
    return 0
