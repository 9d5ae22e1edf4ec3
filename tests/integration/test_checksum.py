#!/usr/bin/python3
"""Checksummed page data (issue 12 items 4 and 5): snapshot format 2 keeps a
CRC-32C per extent; restore and `pageferry check` verify every one and name
the pages that do not match.  A guest written while it is copied (no
--dirty-log) is caught by the writer's end-of-copy re-check, for snapshots
and for paused migrations.  Real processes, real files, real sockets."""
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from pftest import DISK, PF, SHM, Workspace, crc32c, free_port, pf  # noqa: E402
import pf_abi  # noqa: E402  (on the path pftest set: generated from the C headers)

PAGE = 4096
CORRUPT = re.compile(r"snapshot data is corrupt: pages (\d+)\.\.(\d+) \(extent (\d+)\) do not match their checksum")
CHANGED = "the guest changed while it was copied: stop it first, or give --dirty-log"

# Rewrites a few pages spread over the guest, with new random bytes, until
# killed: a guest that was not stopped.
GUEST_WRITER = r"""
import mmap, os, sys, random
fd = os.open(sys.argv[1], os.O_RDWR)
size = os.fstat(fd).st_size
m = mmap.mmap(fd, size)
pages = [p * 4096 for p in range(7, size // 4096, size // 4096 // 16)]
print("writing", flush=True)
while True:
    for off in pages:
        m[off:off + 64] = os.urandom(64)
"""


def header(path):
    with open(path, "rb") as f:
        h = f.read(128)
    keys = ("version", "n_pages", "data_offset", "pages_present", "table_offset", "extent_count")
    vals = (struct.unpack_from("<I", h, 8)[0], struct.unpack_from("<Q", h, 32)[0],
            struct.unpack_from("<Q", h, 56)[0], struct.unpack_from("<Q", h, 64)[0],
            struct.unpack_from("<Q", h, 96)[0], struct.unpack_from("<Q", h, 104)[0])
    return dict(zip(keys, vals))


def present_pages(path):
    h = header(path)
    with open(path, "rb") as f:
        f.seek(4096)
        bm = f.read((h["n_pages"] + 63) // 64 * 8)
    return [p for p in range(h["n_pages"]) if bm[p >> 3] >> (p & 7) & 1]


def extents(path):
    h = header(path)
    with open(path, "rb") as f:
        f.seek(h["table_offset"])
        table = f.read(16 * h["extent_count"])
    return [struct.unpack_from("<QII", table, 16 * i) for i in range(h["extent_count"])]


class Base(Workspace):
    guest_size = "64M"

    def snapshot(self, guest, name="snap.pfs", env=None):
        out = self.disk_path(name)
        r = pf("snapshot", "--guest", guest, "--out", out, "--workers", 2, env=env)
        return out, r

    def start_guest_writer(self, guest):
        p = self.spawn([sys.executable, "-c", GUEST_WRITER, guest], stderr=None)
        self.assertEqual(p.stdout.readline().strip(), "writing")
        return p


class Format(Base):
    def test_good_snapshot_checks_and_restores(self):
        guest = self.guest("mixed")
        snap, r = self.snapshot(guest)
        self.assertEqual(r.returncode, 0, r.stderr)
        h = header(snap)
        self.assertEqual(h["version"], 2)
        # Every stored page is covered by exactly one extent, and each
        # extent's CRC is the CRC of those pages of the guest.
        ext = extents(snap)
        covered = sorted(p for first, n, _ in ext for p in range(first, first + n))
        self.assertEqual(covered, present_pages(snap))
        with open(guest, "rb") as g:
            for first, n, crc in random.Random(1).sample(ext, 20):
                g.seek(first * PAGE)
                self.assertEqual(crc32c(g.read(n * PAGE)), crc, f"extent at page {first}")
        r = pf("check", snap)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"check .*: good: header, bitmap, extent table and the checksums of "
                                   rf"{h['pages_present']} stored pages")
        self.assertEqual(r.stdout.count("\n"), 1)
        r = pf("check", snap, "--json")
        self.assertTrue(json.loads(r.stdout)["ok"])
        into = self.path("restored.ram")
        r = pf("restore", snap, "--into", into)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(pf("verify", guest, into).returncode, 0)

    def test_version_1_refused_by_name(self):
        guest = self.guest("random", "4M")
        snap, r = self.snapshot(guest)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(snap, "r+b") as f:
            h = bytearray(f.read(128))
            struct.pack_into("<I", h, 8, 1)
            struct.pack_into("<I", h, 124, crc32c(bytes(h[:124])))
            f.seek(0)
            f.write(h)
        into = self.path("v1.ram")
        for args in (("restore", snap, "--into", into), ("check", snap)):
            r = pf(*args)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("snapshot format version 1 is not supported by this pageferry (it reads version 2)",
                          r.stderr)
            self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
        self.assert_no_output(into)

    def test_corrupt_extent_table_refused(self):
        guest = self.guest("mixed", "8M")
        snap, r = self.snapshot(guest)
        self.assertEqual(r.returncode, 0, r.stderr)
        h = header(snap)
        with open(snap, "r+b") as f:
            f.seek(h["table_offset"] + 16 * (h["extent_count"] // 2) + 12)  # an extent's CRC
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 1]))
        into = self.path("t.ram")
        for args in (("restore", snap, "--into", into), ("check", snap)):
            r = pf(*args)
            self.assertEqual(r.returncode, 1)
            self.assertIn("extent table checksum mismatch", r.stderr)
        self.assert_no_output(into)


def restore_reads(path):
    """How many reads restore makes of it at least, as dest/ds_restore.c
    counts them to choose between AIO and one read at a time."""
    h = header(path)
    return h["extent_count"] + h["pages_present"] * PAGE // pf_abi.RESTORE_PIECE


class Corruption(Base):
    """Damage in the data region: restore and check fail naming the pages.
    A mixed guest's thousands of small extents are read through AIO."""
    pattern, size, aio = "mixed", "32M", True

    @classmethod
    def setUpClass(cls):
        guest = os.path.join(cls.class_tempdir(SHM), "guest.ram")
        pf("mkguest", cls.pattern, cls.size, guest, check=0)
        cls.good = os.path.join(cls.class_tempdir(DISK), "good.pfs")
        pf("snapshot", "--guest", guest, "--out", cls.good, check=0)

    def test_read_the_way_it_should_be(self):
        # Else this class tests the other read path twice.
        self.assertEqual(restore_reads(self.good) > pf_abi.RESTORE_SYNC_READS, self.aio)

    def damaged(self):
        snap = self.disk_path("bad.pfs")
        shutil.copyfile(self.good, snap)
        return snap, header(snap)

    def assert_named(self, snap, page):
        into = self.path("into.ram")
        for args in (("restore", snap, "--into", into), ("check", snap)):
            r = pf(*args)
            self.assertEqual(r.returncode, 1, f"{args[0]}: {r.stdout} {r.stderr}")
            self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
            m = CORRUPT.search(r.stderr)
            self.assertIsNotNone(m, r.stderr)
            first, last, index = map(int, m.groups())
            self.assertLessEqual(first, page)
            self.assertGreaterEqual(last, page)
            self.assertEqual(extents(snap)[index][:2], (first, last - first + 1))
        self.assert_no_output(into)

    def test_flipped_bytes_at_several_positions(self):
        present = present_pages(self.good)
        for page, byte in ((present[0], 0), (present[len(present) // 2], 2049), (present[-1], PAGE - 1)):
            with self.subTest(page=page, byte=byte):
                snap, h = self.damaged()
                with open(snap, "r+b") as f:
                    f.seek(h["data_offset"] + page * PAGE + byte)
                    b = f.read(1)
                    f.seek(-1, 1)
                    f.write(bytes([b[0] ^ 0x40]))
                self.assert_named(snap, page)

    def test_punched_hole_in_the_data_region(self):
        present = present_pages(self.good)
        page = present[len(present) // 3]
        snap, h = self.damaged()
        subprocess.run(["fallocate", "--punch-hole", "--offset", str(h["data_offset"] + page * PAGE),
                        "--length", str(PAGE), snap], check=True)
        with open(snap, "rb") as f:
            f.seek(h["data_offset"] + page * PAGE)
            self.assertEqual(f.read(PAGE), bytes(PAGE), "the hole was not punched")
        self.assert_named(snap, page)


class CorruptionReadWithoutAio(Corruption):
    """The same damage in a snapshot with few reads to make (a sparse guest:
    8 MiB in a few extents), read one at a time without AIO."""
    pattern, size, aio = "sparse", "1G", False


class GuestChanging(Base):
    """Without --dirty-log a guest written during the copy must not pass."""

    def test_snapshot_of_a_running_guest_fails(self):
        guest = self.guest("random", "64M")
        self.start_guest_writer(guest)
        snap, r = self.snapshot(guest, env={"PAGEFERRY_TEST_HOOK": "worker:crawl"})
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(CHANGED, r.stderr)
        self.assertRegex(r.stderr, r"pages \d+\.\.\d+ differ from what was copied")
        self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
        self.assert_no_output(snap)

    def test_snapshot_of_a_stopped_guest_passes_the_recheck(self):
        guest = self.guest("mixed", "64M")
        snap, r = self.snapshot(guest, env={"PAGEFERRY_TEST_HOOK": "worker:slow"})
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_paused_migrate_of_a_running_guest_fails(self):
        guest = self.guest("random", "64M")
        into = self.path("into.ram")
        port = free_port()
        rx = self.spawn([PF, "receive", "--listen", f"127.0.0.1:{port}", "--into", into, "--accept-timeout", 30])
        time.sleep(0.5)
        self.start_guest_writer(guest)
        r = pf("migrate", "--guest", guest, "--to", f"tcp:127.0.0.1:{port}",
               env=dict(self.env, PAGEFERRY_TEST_HOOK="worker:crawl"), timeout=300)
        _, err = rx.communicate(timeout=60)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(CHANGED, r.stderr)
        self.assertNotEqual(rx.returncode, 0, err)
        self.assert_no_output(into)


if __name__ == "__main__":
    unittest.main(verbosity=2)
