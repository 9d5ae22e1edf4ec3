"""The control segment as the supervisor sees it: created here (so the
supervisor owns it), formatted by pageferry-mkseg (so the layout lives in C
only), and read here for progress. Offsets mirror shm/shm_layout.h
(SHM_ABI_VERSION 3); doc/architecture.md lists them."""
import fcntl
import mmap
import os
import struct

ABI_VERSION = 3
STATS_OFFSET_FIELD = 64   # offsetof(struct shm_seg_header, stats_offset)
CANCEL_OFFSET = 128       # offsetof(struct shm_seg_header, cancel)
STAT_NAMES = ("pages", "zero_pages", "hole_pages", "bytes", "runs", "total_pages", "state", "flags",
              "packets", "zc_sends", "zc_copied", "round", "in_bytes", "out_bytes", "event_us", "sendfile_bytes")
STATS_SIZE = 128  # sizeof(struct shm_stats)
STATS_SCANNER, STATS_WRITER, STATS_WORKER0 = 0, 1, 2
FLAG_DIRECT_IO = 1
FLAG_ZEROCOPY = 2
FLAG_SENDFILE = 4


class Segment:
    def __init__(self, mkseg, page_size, n_workers, ring_slots, max_run_pages, guest_pages):
        self.fd = os.memfd_create("pageferry-control", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        lifted = fcntl.fcntl(self.fd, fcntl.F_DUPFD_CLOEXEC, 100)
        try:
            pid = os.posix_spawn(mkseg, [mkseg, str(page_size), str(n_workers), str(ring_slots),
                                         str(max_run_pages), str(guest_pages)], os.environ,
                                 file_actions=[(os.POSIX_SPAWN_DUP2, lifted, 3)])
        finally:
            os.close(lifted)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise RuntimeError("pageferry-mkseg could not format the control segment")
        size = os.fstat(self.fd).st_size
        self.map = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        magic_abi = struct.unpack_from("<QI", self.map, 0)
        if magic_abi[1] != ABI_VERSION:
            raise RuntimeError("control segment ABI differs from the supervisor's")
        self.stats_offset = struct.unpack_from("<Q", self.map, STATS_OFFSET_FIELD)[0]

    def values(self, block):
        return struct.unpack_from("<16Q", self.map, self.stats_offset + STATS_SIZE * block)

    def stats(self, block):
        return dict(zip(STAT_NAMES, self.values(block)))

    def set_cancel(self):
        """Ask every stage to stop (shm_seg_header.cancel, on line 2)."""
        struct.pack_into("<I", self.map, CANCEL_OFFSET, 1)

    def close(self):
        self.map.close()
        os.close(self.fd)
