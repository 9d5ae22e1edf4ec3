"""The supervisor's handle on the VMM interface (doc/vmm-interface.md): the
pause lease, and letting the guest run again whatever happened to the stages.

The scanner stores pause_request = 1 when it switches over; from then on the
guest is paused on pageferry's word only while that word is renewed: we bump
lease_beat at least every LEASE_BEAT_S, and a VMM that sees the beat stand
still for lease_ms resumes the guest by itself. So a pageferry that is
killed, or hangs, never leaves a guest paused for ever. Once the destination
has committed, pause_request becomes HANDED_OFF: the guest lives elsewhere
now and the VMM must not resume it on its own.
"""
import mmap
import os
import struct
import time

import pf_abi
import pf_jobs
from pf_abi import (DIRTYLOG_HANDED_OFF as HANDED_OFF, DIRTYLOG_LEASE_BEAT as LEASE_BEAT,
                    DIRTYLOG_LEASE_MS as LEASE_MS, DIRTYLOG_PAUSE_REQUEST as PAUSE_REQUEST,
                    DIRTYLOG_PAUSED as PAUSED, DIRTYLOG_RUN as RUN, DIRTYLOG_THROTTLE as THROTTLE)
from pf_jobs import JobError

LEASE_BEAT_S = 0.1
# The header's first fields (protocol/proto_dirtylog.h): magic, version,
# page_size, n_pages; little-endian by definition.
_HEAD = struct.Struct("<QIIQ")


class DirtyLog:
    def __init__(self, path, page, pages, lease_ms):
        self.fd = pf_jobs._open(path, os.O_RDWR, "open dirty log")
        size = os.fstat(self.fd).st_size
        if size < pf_abi.DIRTYLOG_BITMAP_OFFSET + (pages + 63) // 64 * 8:
            raise JobError(f"dirty log {path} is {size} bytes, too small for {pages} pages")
        self.map = mmap.mmap(self.fd, pf_abi.DIRTYLOG_BITMAP_OFFSET, mmap.MAP_SHARED,
                             mmap.PROT_READ | mmap.PROT_WRITE)
        magic, version, log_page, log_pages = _HEAD.unpack_from(self.map, 0)
        if magic != pf_abi.DIRTYLOG_MAGIC:
            raise JobError(f"dirty log {path}: bad magic: not a pageferry dirty log")
        if version != pf_abi.DIRTYLOG_VERSION:
            raise JobError(f"dirty log {path} is version {version}; this pageferry needs version "
                           f"{pf_abi.DIRTYLOG_VERSION} (the pause lease, doc/vmm-interface.md)")
        if (log_page, log_pages) != (page, pages):
            raise JobError(f"dirty log {path} describes {log_pages} pages of {log_page} bytes, the guest "
                           f"{pages} of {page}")
        self._put(LEASE_MS, lease_ms)
        self.lease_ms = lease_ms
        self.last_beat = 0.0
        self.seen_paused = False

    def _get(self, off):
        return struct.unpack_from("<I", self.map, off)[0]

    def _put(self, off, value):
        struct.pack_into("<I", self.map, off, value)

    def renew(self):
        """Called from the supervisor's watch loop. Raises if the VMM took the
        guest back: it resumed it because our lease lapsed (we were stalled
        for longer than lease_ms), so what we copied may be torn."""
        now = time.monotonic()
        if now - self.last_beat >= LEASE_BEAT_S:
            self._put(LEASE_BEAT, (self._get(LEASE_BEAT) + 1) & 0xffffffff)
            self.last_beat = now
        request = self._get(PAUSE_REQUEST)
        if request == PAUSED:
            self.seen_paused = True
        elif self.seen_paused and request == RUN:
            raise JobError(f"the VMM resumed the guest: pageferry did not renew its pause lease within "
                           f"{self.lease_ms} ms")

    def resume(self):
        self._put(THROTTLE, 0)
        self._put(PAUSE_REQUEST, RUN)

    def hand_off(self):
        self._put(THROTTLE, 0)
        self._put(PAUSE_REQUEST, HANDED_OFF)

    def close(self):
        self.map.close()
        os.close(self.fd)
