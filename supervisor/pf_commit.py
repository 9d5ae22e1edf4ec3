"""The destination's commit: the last step of the handoff (doc/architecture.md,
"The handoff").

The receiver stage, once every check passed and the data is durable, hands
us the main channel and two ready-made answers (dest/ds_commit.h). We
commit — rename FILE.pf-partial into place, or remove the in-place marker,
and sync the directory — and only then send the success answer. So the
sender reports success only for a committed destination, and a destination
whose sender has gone is not committed.
"""
import os
import select
import socket
import struct

import pf_jobs
import pf_stages
from pf_abi import COMMIT_MAGIC as MAGIC
from pf_jobs import JobError


class Handover:
    def __init__(self, sock):
        """sock: our end of the commit socket; the receiver stage has exited."""
        try:
            data, anc, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(4), socket.MSG_DONTWAIT)
        except BlockingIOError:
            data, anc = b"", []
        fds = [struct.unpack("i", d[:4])[0] for lvl, typ, d in anc
               if lvl == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS]
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 2 or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise JobError("the receiver ended without handing over its result")
        n = struct.unpack_from("<H", data, len(MAGIC))[0]
        answers = data[len(MAGIC) + 2:]
        if len(answers) != 2 * n:
            os.close(fds[0])
            raise JobError("the receiver handed over a malformed result")
        self.main = socket.socket(fileno=fds[0])
        self.ok, self.failed = answers[:n], answers[n:]

    def sender_gone(self):
        """Before committing: anything readable on the main channel means the
        sender closed it or gave up (a cancellation): then we must not commit."""
        readable, _, _ = select.select([self.main], [], [], 0)
        return bool(readable)

    def answer(self, ok):
        self.main.setblocking(True)
        self.main.settimeout(10)
        self.main.sendall(self.ok if ok else self.failed)

    def close(self):
        self.main.close()


def commit(handover, partial, into, marker):
    """Commit the received copy and tell the sender. Raises JobError, with
    nothing committed, when either cannot be done."""
    if handover.sender_gone():
        raise JobError("the sender went away before the commit; nothing was committed")
    pf_stages.test_hook("receive:before-commit")
    try:
        if marker:
            os.unlink(marker)
        else:
            os.rename(partial, into)
        pf_jobs._fsync_dir(into)
    except FileNotFoundError:
        _answer_failure(handover)
        raise JobError(f"the destination {marker or partial} was removed during the transfer; "
                       "nothing was committed")
    except OSError as e:
        _answer_failure(handover)
        raise JobError(f"committing {into}: {e.strerror}; nothing was committed")
    try:
        handover.answer(True)
    except OSError as e:
        # The sender cannot learn of the commit: undo it, so that it is not
        # both failed there and committed here.
        _undo(partial, into, marker)
        raise JobError(f"the sender went away during the commit ({e.strerror}); the commit was undone")
    pf_stages.test_hook("receive:after-commit")


def _answer_failure(handover):
    try:
        handover.answer(False)
    except OSError:
        pass


def write_marker(marker, into):
    with open(marker, "w") as f:
        f.write(f"pageferry receive --in-place is writing {into}: its contents are not a whole guest "
                "until this file is gone\n")


def _undo(partial, into, marker):
    if marker:
        write_marker(marker, into)
    else:
        os.rename(into, partial)
    pf_jobs._fsync_dir(into)
