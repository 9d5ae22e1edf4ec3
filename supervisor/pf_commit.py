"""The destination's commit: the last step of the handoff (doc/architecture.md,
"The handoff").

The receiver stage, once every check passed, the data is durable and the
sender said "commit", asks us on the commit socket (dest/ds_commit.h). We
commit — rename FILE.pf-partial into place, or remove the in-place marker,
and sync the directory — and say so; the stage tells the sender (inside TLS,
which only it speaks) and then tells us it has (PFANSWER). When it says
it could not (PFUNSENT), the sender cannot know of the commit: we undo
it. When it says neither (killed in between), nobody here knows whether
the sender heard: the commit stays, and we say so with exit status 4, as
the sender does when it did not hear (doc/architecture.md, "The
handoff"). So the sender reports success only for a committed
destination, and a guest is never left runnable in two places.
"""
import errno
import os
import socket

import pf_jobs
import pf_stages
from pf_abi import ANSWERED_MAGIC, COMMIT_MAGIC, DECISION_COMMITTED, DECISION_FAILED, NOTICE_SIZE, UNSENT_MAGIC
from pf_jobs import JobError

# The stage sends its answer within its own timeouts (--io-timeout); this
# only bounds a stage that hangs.
ANSWERED_WAIT_S = 300


class AnswerUnknown(OSError):
    """The stage ended without saying whether the sender has its answer."""


class Handover:
    def __init__(self, sock):
        """sock: our end of the commit socket, readable: the stage asks."""
        try:
            data = sock.recv(len(COMMIT_MAGIC), socket.MSG_DONTWAIT)
        except BlockingIOError:
            data = b""
        if data != COMMIT_MAGIC:
            raise JobError("the receiver ended without handing over its result")
        self.sock = sock

    def answer(self, ok):
        kind = DECISION_COMMITTED if ok else DECISION_FAILED
        self.sock.setblocking(True)
        self.sock.sendall(kind + bytes(NOTICE_SIZE - 1))

    def wait_answered(self):
        """The stage has told the sender; OSError when it could not,
        AnswerUnknown when it ended without saying."""
        self.sock.settimeout(ANSWERED_WAIT_S)
        data = b""
        while len(data) < len(ANSWERED_MAGIC):
            more = self.sock.recv(len(ANSWERED_MAGIC) - len(data))
            if not more:
                raise AnswerUnknown(0, "the receiver stage ended without saying whether the sender has the answer")
            data += more
        if data == UNSENT_MAGIC:
            raise OSError(0, "the receiver could not send the answer")
        if data != ANSWERED_MAGIC:
            raise OSError(0, "the receiver sent something else than its answer")


def commit(handover, partial, into, marker, prepare=None):
    """Commit the received copy and tell the sender. Raises JobError, with
    nothing committed, when either cannot be done. prepare(): a last step
    that may refuse the commit by raising JobError (receive --qmp: QEMU
    loads the device state)."""
    pf_stages.test_hook("receive:before-commit")
    if prepare:
        try:
            prepare()
        except JobError:
            _answer_failure(handover)
            raise
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
        handover.wait_answered()
    except AnswerUnknown as e:
        raise JobError(f"{e.strerror}: {into} stays committed; the sender's exit status says whether it knows "
                       f"(0) or not (4)", pf_jobs.OUTCOME_UNKNOWN_EXIT)
    except OSError as e:
        # The sender cannot learn of the commit: undo it, so that it is not
        # both failed there and committed here.
        _undo(partial, into, marker)
        raise JobError(f"the sender went away during the commit ({e.strerror}); the commit was undone")
    pf_stages.test_hook("receive:after-commit")


def _answer_failure(handover):
    """Say F and wait until the stage has told the sender: our failure kills
    the stages, and a sender that never reads the refusal cannot tell it
    from a commit it did not hear of (it then keeps its guest stopped)."""
    try:
        handover.answer(False)
        handover.wait_answered()
    except OSError:
        pass


def write_marker(marker, into):
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, f"pageferry receive --in-place is writing {into}: its contents are not a whole guest "
                     "until this file is gone\n".encode())
    except OSError as e:
        # hugetlbfs takes no write(2): there the empty file's name is the mark.
        if e.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def _undo(partial, into, marker):
    if marker:
        write_marker(marker, into)
    else:
        os.rename(into, partial)
    pf_jobs._fsync_dir(into)
