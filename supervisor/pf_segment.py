"""The control segment as the supervisor sees it: created here (so the
supervisor owns it), formatted by pageferry-mkseg (so the layout lives in C
only), and read here for progress. Every offset, name and number comes from
pf_abi, which the build generates from shm/shm_layout.h
(tools/pf_describe.c). The segment never leaves the host: its fields are in
host byte order ('=')."""
import fcntl
import mmap
import os
import struct

import pf_abi

_STATS = struct.Struct(f"={pf_abi.STAT_COUNT}Q")


class Segment:
    def __init__(self, mkseg, page_size, n_workers, ring_slots, max_run_pages, guest_pages):
        self.fd = os.memfd_create("pageferry-control", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        lifted = fcntl.fcntl(self.fd, fcntl.F_DUPFD_CLOEXEC, 100)
        try:
            pid = os.posix_spawn(mkseg, [mkseg, f"--page-size={page_size}", f"--workers={n_workers}",
                                         f"--ring-slots={ring_slots}", f"--max-run-pages={max_run_pages}",
                                         f"--guest-pages={guest_pages}"], os.environ,
                                 file_actions=[(os.POSIX_SPAWN_DUP2, lifted, pf_abi.fd("mkseg", "segment"))])
        finally:
            os.close(lifted)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise RuntimeError("pageferry-mkseg could not format the control segment")
        size = os.fstat(self.fd).st_size
        self.map = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        if self.header("magic") != pf_abi.SEG_MAGIC or self.header("abi_version") != pf_abi.ABI_VERSION:
            raise RuntimeError("control segment ABI differs from the supervisor's")
        self.stats_offset = self.header("stats_offset")
        self.n_stats = self.header("n_stats")

    def header(self, name):
        """A header field, by its name in struct shm_seg_header."""
        off, fmt = pf_abi.HEADER[name]
        return struct.unpack_from("=" + fmt, self.map, off)[0]

    def values(self, block):
        if not 0 <= block < self.n_stats:
            raise IndexError(f"stats block {block} of {self.n_stats}")
        return _STATS.unpack_from(self.map, self.stats_offset + pf_abi.STATS_BLOCK_SIZE * block)

    def stats(self, block):
        return dict(zip(pf_abi.STAT_NAMES, self.values(block)))

    def round_record(self, n_workers, r):
        """Round r's record (1..MAX_ROUNDS) as {field: value}."""
        return dict(zip(pf_abi.ROUND_FIELDS, self.values(pf_abi.STATS_WORKER0 + n_workers + r - 1)))

    def set_stat(self, block, name, value):
        """Only for a block whose owner is dead and not yet replaced (the
        receive front end resets a dead inflater's state)."""
        self.values(block)  # bounds
        struct.pack_into("=Q", self.map, self.stats_offset + pf_abi.STATS_BLOCK_SIZE * block +
                         8 * pf_abi.STAT_NAMES.index(name), value)

    def set_cancel(self):
        """Ask every stage to stop (shm_seg_header.cancel, on its own line)."""
        off, fmt = pf_abi.HEADER["cancel"]
        struct.pack_into("=" + fmt, self.map, off, 1)

    def close(self):
        self.map.close()
        os.close(self.fd)
