"""QEMU's QMP, as pageferry's --qmp uses it: one connection to a QMP unix
socket, commands and their answers, asynchronous events kept for later, and
ram_blocks(): the guest RAM backends pageferry has to move.

Everything QEMU sends is untrusted input: each line is bounded in length,
decoded as JSON, and checked field by field before it is used; every read
has a deadline, so a QEMU that hangs or floods fails the command with one
line instead of hanging pageferry.

Decisions:
- Each command carries an "id" and its answer must carry the same one: an
  answer that belongs to another command (or to another client's misuse of
  the socket) is an error, never taken as ours.
- An answer that comes after its command timed out is recognised by its id
  and dropped, so the connection stays usable: resuming the source guest
  after a failure needs it.
- Events are kept in arrival order, at most MAX_EVENTS of them (the oldest
  go first): pageferry waits for a handful (STOP, RESUME, MIGRATION), and a
  QEMU emitting without end must not grow our memory. Apart from them,
  every event's name is numbered as it comes (events_since), also at most
  MAX_EVENTS: enough to tell what happened between two points of a job,
  and to know when more came than can be told.
- ram_blocks reads query-memdev (every memory backend: size, share) and
  then each backend's QOM object for what query-memdev leaves out: its type
  and, for memory-backend-file, its mem-path, offset and discard-data.
  QEMU's x-ignore-shared skips exactly the backends that are
  memory-backend-file with share=on ("ignored" below); any other backend
  (memfd, ram, share=off) would travel, whole, inside QEMU's own stream.
"""
import array
import collections
import json
import re
import socket
import time

from pf_jobs import JobError

MAX_LINE = 1 << 20  # the largest answer pageferry asks for is a few KiB
MAX_EVENTS = 256
DEFAULT_TIMEOUT = 10.0
# QEMU's rule for object ids (id_wellformed): a letter, then letters,
# digits, '-', '.', '_'. Checked before an id goes into a QOM path.
_OBJECT_ID = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,127}")


class _Timeout(JobError):
    pass


class QMPError(JobError):
    """A command QEMU answered with an error; cls and desc are QEMU's."""

    def __init__(self, where, command, cls, desc):
        super().__init__(f"QEMU at {where}: {command} failed: {desc} ({cls})")
        self.command, self.cls, self.desc = command, cls, desc


def _obj(value, what):
    if not isinstance(value, dict):
        raise JobError(f"{what}: not a JSON object")
    return value


_KIND_NAMES = {dict: "a JSON object", list: "a JSON array", int: "an integer", str: "a string",
               bool: "true or false"}


def _field(d, key, kinds, what):
    """d[key], which must exist and be of one of kinds (bool is never taken
    for an int)."""
    if key not in d:
        raise JobError(f"{what}: no \"{key}\"")
    v = d[key]
    if isinstance(v, bool) and bool not in kinds or not isinstance(v, kinds):
        raise JobError(f"{what}: \"{key}\" is not {' or '.join(_KIND_NAMES[k] for k in kinds)}")
    return v


class QMP:
    """A negotiated QMP connection. version is QEMU's (major, minor, micro)."""

    def __init__(self, path, timeout=DEFAULT_TIMEOUT):
        self.where = path
        self.timeout = timeout
        self.events = collections.deque(maxlen=MAX_EVENTS)
        self.n_events = 0
        self._names = collections.deque(maxlen=MAX_EVENTS)  # (number, name)
        self._buf = bytearray()
        self._next_id = 0
        self._abandoned = set()  # ids of commands that timed out
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        except socket.timeout:
            self.sock.close()
            raise JobError(f"cannot connect to QEMU's QMP socket {path}: no answer in {timeout:g} s")
        except OSError as e:
            self.sock.close()
            raise JobError(f"cannot connect to QEMU's QMP socket {path}: {e.strerror or e}")
        try:
            try:
                greeting = self._read_message(time.monotonic() + timeout)
            except _Timeout:
                raise JobError(f"QEMU at {path} sent no QMP greeting within {timeout:g} s (QEMU serves "
                               f"one client at a time on a QMP socket: is another one connected?)")
            self.version = self._greeting(greeting)
            self.execute("qmp_capabilities")
        except BaseException:
            self.sock.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    # -- reading --------------------------------------------------------------

    def _read_line(self, deadline):
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[:nl + 1]
                return line
            if len(self._buf) > MAX_LINE:
                raise JobError(f"QEMU at {self.where} sent a message longer than {MAX_LINE} bytes")
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Timeout(f"QEMU at {self.where} did not answer in time")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue  # the deadline check above reports it
            except OSError as e:
                raise JobError(f"QEMU at {self.where}: QMP connection failed: {e.strerror or e}")
            if not data:
                raise JobError(f"QEMU at {self.where} closed its QMP connection (did it quit?)")
            self._buf += data

    def _read_message(self, deadline):
        line = self._read_line(deadline)
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise JobError(f"QEMU at {self.where} sent a QMP message that is not JSON")
        return _obj(msg, f"QEMU at {self.where}: QMP message")

    def _greeting(self, msg):
        what = f"QEMU at {self.where}: greeting"
        qmp = _obj(_field(msg, "QMP", (dict,), what), what)
        _field(qmp, "capabilities", (list,), what)
        qemu = _obj(_field(_obj(_field(qmp, "version", (dict,), what), what), "qemu", (dict,), what), what)
        return tuple(_field(qemu, k, (int,), what) for k in ("major", "minor", "micro"))

    def _keep_event(self, msg):
        _field(msg, "event", (str,), f"QEMU at {self.where}: event")
        if "data" in msg:
            _field(msg, "data", (dict,), f"QEMU at {self.where}: event {msg['event']}")
        self.events.append(msg)
        self.n_events += 1
        self._names.append((self.n_events, msg["event"]))

    def events_since(self, mark):
        """The names of the events that came after the first `mark`
        (n_events then), in order, as far as they have been read; None when
        more came than are remembered."""
        if self.n_events - mark > MAX_EVENTS:
            return None
        return [name for n, name in self._names if n > mark]

    # -- commands ---------------------------------------------------------------

    def execute(self, name, **args):
        """QEMU's "return" value for command name; QMPError when QEMU
        answers with an error."""
        return self.execute_args(name, args)

    def execute_args(self, name, args, timeout=None, fds=()):
        """execute with a timeout of its own, and with file descriptors
        passed along (SCM_RIGHTS), as `getfd` and `add-fd` expect."""
        self._next_id += 1
        ident = f"pf-{self._next_id}"
        msg = {"execute": name, "id": ident}
        if args:
            msg["arguments"] = args
        data = json.dumps(msg).encode() + b"\n"
        start = time.monotonic()
        deadline = start + (timeout if timeout is not None else self.timeout)
        try:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            if fds:
                sent = self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
                if sent != len(data):
                    self.sock.sendall(data[sent:])
            else:
                self.sock.sendall(data)
        except socket.timeout:
            raise JobError(f"QEMU at {self.where} does not read its QMP socket ({name})")
        except OSError as e:
            raise JobError(f"QEMU at {self.where}: cannot send {name}: {e.strerror or e}")
        while True:
            try:
                reply = self._read_message(deadline)
            except _Timeout:
                self._abandoned.add(ident)
                raise JobError(f"QEMU at {self.where} did not answer {name} within "
                               f"{deadline - start:.3g} s")
            if "event" in reply:
                self._keep_event(reply)
                continue
            what = f"QEMU at {self.where}: answer to {name}"
            if reply.get("id") in self._abandoned:
                self._abandoned.discard(reply["id"])
                continue
            if reply.get("id") != ident:
                raise JobError(f"{what}: it answers another command (id {str(reply.get('id'))[:40]!r})")
            if "error" in reply:
                err = _obj(reply["error"], what)
                raise QMPError(self.where, name, _field(err, "class", (str,), what)[:100],
                               _field(err, "desc", (str,), what)[:500])
            if "return" not in reply:
                raise JobError(f"{what}: neither \"return\" nor \"error\"")
            return reply["return"]

    # -- events -----------------------------------------------------------------

    def wait_event(self, name, timeout=DEFAULT_TIMEOUT, match=None):
        """The first event called name (already kept, or arriving within
        timeout) for which match(data) holds; it is removed from the kept
        events. JobError when none comes."""
        deadline = time.monotonic() + timeout

        def wanted(e):
            return e["event"] == name and (match is None or match(e.get("data", {})))

        for e in list(self.events):
            if wanted(e):
                self.events.remove(e)
                return e
        while True:
            try:
                msg = self._read_message(deadline)
            except _Timeout:
                raise JobError(f"QEMU at {self.where}: no {name} event within {timeout:g} s")
            if "event" not in msg:
                if msg.get("id") in self._abandoned:
                    self._abandoned.discard(msg["id"])
                    continue
                raise JobError(f"QEMU at {self.where} answered a command nobody sent")
            self._keep_event(msg)
            if wanted(msg):
                self.events.remove(msg)
                return msg


def wait_migration(qmp, timeout, poll=0.01):
    """query-migrate's answer once the migration has ended (completed,
    failed or cancelled), whichever side of it qmp is.  The first polls
    come 1, 2, 4 and 8 ms apart, then every `poll` s: a device state is
    saved or loaded in a few ms, and a fixed 10 ms sleep was most of the
    time a small VM's migration spent on it."""
    deadline = time.monotonic() + timeout
    step = 0.001
    while True:
        r = _obj(qmp.execute("query-migrate"), f"QEMU at {qmp.where}: query-migrate")
        status = _field(r, "status", (str,), f"QEMU at {qmp.where}: query-migrate")
        if status in ("completed", "failed", "cancelled"):
            return r
        if time.monotonic() >= deadline:
            raise JobError(f"QEMU at {qmp.where}: its migration is still {status[:40]} after {timeout:g} s")
        time.sleep(min(step, poll))
        step *= 2


def _qom_get(qmp, path, prop, kinds, missing=None):
    """A QOM property of the expected type; missing when this QEMU's object
    has no such property (an older QEMU)."""
    try:
        v = qmp.execute("qom-get", path=path, property=prop)
    except QMPError as e:
        if missing is not None and e.cls == "GenericError" and "not found" in e.desc:
            return missing
        raise
    return _field({prop: v}, prop, kinds, f"QEMU at {qmp.where}: {path} {prop}")


def ram_blocks(qmp):
    """The guest's memory backends, sorted by id, each a dict:
    id, size (bytes), share (bool), type (the QOM type, e.g.
    "memory-backend-file"), mem_path (file backends only, else None),
    offset (into mem_path), discard_data (QEMU empties the file when it
    quits), ignored (x-ignore-shared leaves it out of QEMU's stream: a
    shared named file)."""
    where = f"QEMU at {qmp.where}: query-memdev"
    memdevs = qmp.execute("query-memdev")
    if not isinstance(memdevs, list):
        raise JobError(f"{where}: not a list")
    blocks, seen = [], set()
    for m in memdevs:
        m = _obj(m, where)
        ident = _field(m, "id", (str,), where)
        if not _OBJECT_ID.fullmatch(ident):
            raise JobError(f"{where}: a backend id that is not a QEMU object id: {ident[:60]!r}")
        if ident in seen:
            raise JobError(f"{where}: backend {ident} listed twice")
        seen.add(ident)
        size = _field(m, "size", (int,), f"{where}: {ident}")
        share = _field(m, "share", (bool,), f"{where}: {ident}")
        if size <= 0:
            raise JobError(f"{where}: backend {ident} has size {size}")
        path = f"/objects/{ident}"
        kind = _qom_get(qmp, path, "type", (str,))
        b = {"id": ident, "size": size, "share": share, "type": kind, "mem_path": None, "offset": 0,
             "discard_data": False}
        if kind == "memory-backend-file":
            b["mem_path"] = _qom_get(qmp, path, "mem-path", (str,))
            b["offset"] = _qom_get(qmp, path, "offset", (int,), missing=0)
            b["discard_data"] = _qom_get(qmp, path, "discard-data", (bool,))
            if not b["mem_path"]:
                raise JobError(f"QEMU at {qmp.where}: backend {ident} has no mem-path")
        b["ignored"] = kind == "memory-backend-file" and share
        blocks.append(b)
    return sorted(blocks, key=lambda b: b["id"])
