"""The destination condition a migration benchmark gives both programs alike
(design.md §4: "give both programs the same destination").

This VM's host reclaims free memory, so the first touch of a page costs far
more than the copy into it: a destination whose memory is already there and
one whose memory the migration touches first are different benchmarks, and
comparing one program on each measures the host, not the programs.

  prealloc  a file of the guest's size with zeros written over all of it, as a
            destination VMM that pre-allocates its RAM has;
  fresh     no memory behind the destination yet: no file for a program that
            creates its own (pageferry receive without --in-place), or a file
            of the guest's size with no block allocated (a VMM's RAM file
            that nothing has touched).

check() reads the file's allocated blocks right before a run and refuses a
destination that is not in the condition the row claims.
"""
import os

KINDS = ("prealloc", "fresh")
_ZEROS = bytes(1 << 20)


def remove(path):
    for p in (path, path + ".pf-partial", path + ".pf-incomplete"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def prepare(path, size, kind, sparse_file=True):
    """Make `path` a destination of `kind` for a guest of `size` bytes.  For
    kind fresh, sparse_file=False leaves no file at all."""
    if kind not in KINDS:
        raise ValueError(f"destination kind {kind!r}: expected one of {', '.join(KINDS)}")
    remove(path)
    if kind == "fresh" and not sparse_file:
        return
    with open(path, "wb") as f:
        f.truncate(size)
        if kind == "prealloc":
            left = size
            while left:
                left -= f.write(_ZEROS[:min(left, len(_ZEROS))])


def allocated(path):
    """Bytes of memory or disk behind `path` (0 if it does not exist)."""
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


def check(path, size, kind):
    """Raise unless `path` is in the condition `kind`; returns its allocated
    bytes for the log."""
    have = allocated(path)
    if kind == "prealloc":
        if not os.path.exists(path) or os.path.getsize(path) != size or have < size:
            raise RuntimeError(f"{path}: a prealloc destination must be {size} bytes, all allocated; "
                               f"it has {have} bytes allocated")
    elif have or os.path.exists(path + ".pf-partial"):
        raise RuntimeError(f"{path}: a fresh destination must have no memory behind it; it has {have} bytes")
    return have
