"""A source image kept in the same state for every run of a benchmark.

QEMU reads its RAM through a mapping, and on tmpfs a read fault on a hole
allocates a page: after one QEMU migration or save of an image with holes
(a sparse guest, a real guest's never-touched memory), every hole is
allocated zero pages. pageferry finds data with SEEK_DATA and reads with
pread, which allocates nothing, so it would see a different image in every
run after QEMU's first: 1 GiB of zero pages to read instead of holes to
skip. Pristine notes where the image's holes are when it is made and punches
them again before each run (the bytes there read as zeros either way), then
checks the allocation is what it was.
"""
import ctypes
import ctypes.util
import errno
import os

from destination import allocated

_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]


def holes(path):
    """(offset, length) of every hole in `path`."""
    found = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size, pos = os.fstat(fd).st_size, 0
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                data = size
            if data > pos:
                found.append((pos, data - pos))
            if data >= size:
                break
            pos = os.lseek(fd, data, os.SEEK_HOLE)
    finally:
        os.close(fd)
    return found


class Pristine:
    """`path` as it is now: reset() brings its holes back."""

    def __init__(self, path):
        self.path, self.holes, self.allocated = path, holes(path), allocated(path)

    def reset(self):
        """Punch the holes the image had; returns its allocated bytes, which
        must be what they were when it was made."""
        if allocated(self.path) != self.allocated:
            fd = os.open(self.path, os.O_WRONLY)
            try:
                for off, length in self.holes:
                    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, off, length):
                        e = ctypes.get_errno()
                        raise OSError(e, f"punching {self.path} at {off}+{length}: {os.strerror(e)}")
            finally:
                os.close(fd)
        now = allocated(self.path)
        if now != self.allocated:
            raise RuntimeError(f"{self.path}: {now} bytes allocated after putting its holes back, "
                               f"{self.allocated} when it was made")
        return now
