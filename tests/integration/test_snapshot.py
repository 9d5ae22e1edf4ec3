#!/usr/bin/python3
"""Snapshot/restore integration tests: the real pipeline, real processes,
real seccomp filters, snapshots with O_DIRECT on the real disk (/var/tmp, not
tmpfs), guests in /dev/shm as a VMM would have them."""
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import pftest  # noqa: E402
from pftest import PF, crc32c, pf  # noqa: E402

SIZE = os.environ.get("PF_TEST_GUEST_SIZE", "1G")


class Workspace(pftest.Workspace):
    guest_size = SIZE

    def snapshot(self, guest, workers=2, name="snap.pfs", **kw):
        out = self.disk_path(name)
        r = pf("snapshot", "--guest", guest, "--out", out, "--workers", workers, "--json", **kw)
        return out, r


class RoundTrip(Workspace):
    def roundtrip(self, pattern):
        guest = self.guest(pattern)
        size = os.stat(guest).st_size
        for workers in (1, 2, 4):
            with self.subTest(pattern=pattern, workers=workers):
                out, r = self.snapshot(guest, workers, check=0)
                s = json.loads(r.stdout)
                self.assertTrue(s["direct_io"], "the data fd was not opened O_DIRECT")
                self.assertEqual(s["guest_bytes"], size)
                p = s["pages"]
                self.assertEqual(p["normal"] + p["zero"] + p["hole"], p["total"])
                self.assertEqual(s["bytes_written"], p["normal"] * 4096)
                # A guest file nobody vouches for is read again after the copy.
                self.assertEqual(s["unchanged_guest"], "re-read")
                into = self.path("restored.ram")
                r = pf("restore", out, "--into", into, "--workers", workers, "--json", check=0)
                self.assertTrue(json.loads(r.stdout)["direct_io"])
                blocks_before = os.stat(guest).st_blocks
                self.assert_equal_ram(guest, into)
                self.assertEqual(os.stat(guest).st_blocks, blocks_before, "verify allocated guest holes")
                os.unlink(into)
                os.unlink(out)
        return s

    def test_zero(self):
        s = self.roundtrip("zero")
        self.assertEqual(s["bytes_written"], 0)
        self.assertEqual(s["pages"]["zero"], s["pages"]["total"])

    def test_random(self):
        s = self.roundtrip("random")
        self.assertEqual(s["pages"]["zero"], 0)

    def test_text(self):
        self.roundtrip("text")

    def test_mixed(self):
        s = self.roundtrip("mixed")
        self.assertGreater(s["pages"]["zero"], s["pages"]["total"] // 3)

    def test_sparse(self):
        s = self.roundtrip("sparse")
        self.assertGreater(s["pages"]["hole"], s["pages"]["total"] // 2)
        self.assertEqual(s["bytes_written"], 8 << 20)


class DiskSpace(Workspace):
    def test_mixed_snapshot_takes_space_only_for_nonzero_pages(self):
        guest = self.guest("mixed")
        out, r = self.snapshot(guest)
        s = json.loads(r.stdout)
        used = os.stat(out).st_blocks * 512
        data = s["pages"]["normal"] * 4096
        self.assertLess(s["pages"]["normal"], s["pages"]["total"] * 0.6)
        # data, plus header, bitmap and the filesystem's extent tree for a
        # file with tens of thousands of extents: a few MiB at most
        self.assertGreaterEqual(used, data)
        self.assertLess(used, data + (4 << 20))

    def test_restored_zero_pages_are_holes(self):
        guest = self.guest("mixed")
        out, _ = self.snapshot(guest)
        into = self.path("restored.ram")
        pf("restore", out, "--into", into, check=0)
        used = os.stat(into).st_blocks * 512
        self.assertLess(used, os.stat(into).st_size * 0.6)


class InPlace(Workspace):
    """restore --in-place: an existing RAM file (a waiting VMM's) written
    where it is. Every page the snapshot has as zero must come out zero,
    whatever the file held."""

    def test_restore_over_a_file_full_of_other_data(self):
        # zero: a snapshot without extents, whose reader has nothing to read
        # (and no AIO context) but every page to clear.
        for pattern in ("mixed", "zero"):
            with self.subTest(pattern=pattern):
                guest = self.guest(pattern, "64M")
                out, _ = self.snapshot(guest)
                into = self.path("vmm.ram")
                with open(into, "wb") as f:
                    f.write(os.urandom(os.stat(guest).st_size))
                inode = os.stat(into).st_ino
                r = pf("restore", out, "--into", into, "--in-place", "--json", check=0)
                s = json.loads(r.stdout)
                self.assertEqual(s["guest_bytes"], os.stat(guest).st_size)
                if pattern == "zero":
                    self.assertEqual(s["bytes_read"], 0)
                self.assertEqual(os.stat(into).st_ino, inode, "the file was replaced, not written in place")
                self.assertFalse(os.path.exists(into + ".pf-incomplete"))
                self.assert_equal_ram(guest, into)
                os.unlink(into)

    def test_zeroed_file_keeps_its_allocation(self):
        """--zeroed: pages absent from the snapshot are left alone (the
        default punches them out, giving up a VMM's pre-allocation)."""
        guest = self.guest("mixed", "64M")
        out, _ = self.snapshot(guest)
        size = os.stat(guest).st_size
        for zeroed, want_full in ((["--zeroed"], True), ([], False)):
            with self.subTest(zeroed=zeroed):
                into = self.path("vmm.ram")
                with open(into, "wb") as f:
                    f.write(bytes(size))
                pf("restore", out, "--into", into, "--in-place", *zeroed, check=0)
                self.assert_equal_ram(guest, into)
                self.assertEqual(os.stat(into).st_blocks * 512 == size, want_full, os.stat(into).st_blocks)
        r = pf("restore", out, "--into", into, "--zeroed")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--zeroed goes with --in-place or --qmp", r.stderr)

    def test_wrong_size_refused_untouched_and_not_marked(self):
        """Refused before the restore stage's lock-down, before a page is
        written: the file is as it was, so no marker stays."""
        out, _ = self.snapshot(self.guest("mixed", "16M"))
        into = self.path("vmm.ram")
        with open(into, "wb") as f:
            f.write(b"\1" * (8 << 20))
        r = pf("restore", out, "--into", into, "--in-place")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stderr, f"pageferry restore: pageferry-restore: the snapshot's guest is {16 << 20} "
                                   f"bytes but the destination is {8 << 20}\n")
        self.assertFalse(os.path.exists(into + ".pf-incomplete"))
        with open(into, "rb") as f:
            self.assertEqual(f.read(), b"\1" * (8 << 20))

    def test_failure_after_pages_were_written_is_marked(self):
        """A snapshot whose page data is corrupt is refused by the readers,
        after lock-down: FILE may hold some of its pages, so it stays marked
        and the error says so."""
        out, _ = self.snapshot(self.guest("random", "16M"))
        with open(out, "r+b") as f:
            f.seek(-(8 << 20), os.SEEK_END)
            f.write(b"\xff" * 4096)
        into = self.path("vmm.ram")
        with open(into, "wb") as f:
            f.write(bytes(16 << 20))
        r = pf("restore", out, "--into", into, "--in-place")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"{into} is incomplete (marked by {into}.pf-incomplete)", r.stderr)
        self.assertTrue(os.path.exists(into + ".pf-incomplete"))

    def test_in_place_needs_into(self):
        out, _ = self.snapshot(self.guest("mixed", "16M"))
        r = pf("restore", out, "--qmp", self.path("qmp.sock"), "--in-place")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--in-place goes with --into", r.stderr)


class BadInput(Workspace):
    def test_missing_guest(self):
        out = self.disk_path("x.pfs")
        r = pf("snapshot", "--guest", "/nonexistent/vm.ram", "--out", out)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.strip(),
                         "pageferry snapshot: cannot open guest /nonexistent/vm.ram: No such file or directory")
        self.assert_no_output(out)

    def test_guest_size_not_a_page_multiple(self):
        guest = self.path("odd.ram")
        with open(guest, "wb") as f:
            f.write(b"x" * 5000)
        r = pf("snapshot", "--guest", guest, "--out", self.disk_path("x.pfs"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("is 5000 bytes, not a multiple of its 4096-byte page size", r.stderr)

    def test_read_only_output(self):
        guest = self.guest("mixed", "16M")
        r = pf("snapshot", "--guest", guest, "--out", "/proc/x.pfs")
        self.assertEqual(r.returncode, 1)
        self.assertTrue(r.stderr.startswith("pageferry snapshot: cannot create snapshot /proc/x.pfs.pf-partial:"),
                        r.stderr)

    def good_snapshot(self):
        guest = self.guest("mixed", "16M")
        out, _ = self.snapshot(guest, check=0)
        return out

    def restore_error(self, snap):
        into = self.path("r.ram")
        r = pf("restore", snap, "--into", into)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assert_no_output(into)
        return r.stderr.strip()

    def test_truncated_snapshot_refused(self):
        snap = self.good_snapshot()
        os.truncate(snap, os.stat(snap).st_size - 4096)
        self.assertEqual(self.restore_error(snap),
                         "pageferry restore: pageferry-restore: snapshot refused: snapshot file is "
                         "shorter than its header says (truncated)")

    def test_corrupt_bitmap_refused(self):
        snap = self.good_snapshot()
        with open(snap, "r+b") as f:
            f.seek(4096 + 10)
            b = f.read(1)
            f.seek(4096 + 10)
            f.write(bytes([b[0] ^ 0x40]))
        self.assertIn("bitmap checksum mismatch", self.restore_error(snap))

    def test_corrupt_header_refused(self):
        snap = self.good_snapshot()
        with open(snap, "r+b") as f:
            f.seek(30)
            f.write(b"\x07")
        self.assertIn("header checksum mismatch", self.restore_error(snap))

    def test_incomplete_snapshot_refused(self):
        snap = self.good_snapshot()
        with open(snap, "r+b") as f:
            hdr = bytearray(f.read(128))
            struct.pack_into("<I", hdr, 12, 1)  # state = WRITING
            struct.pack_into("<I", hdr, 124, crc32c(bytes(hdr[:124])))
            f.seek(0)
            f.write(hdr)
        self.assertIn("snapshot is incomplete", self.restore_error(snap))

    def with_device_state(self, snap, state):
        """SNAP as snapshot --qmp would write it (doc/formats.md): the state
        after the page data, its flag, length and CRC in the header."""
        with open(snap, "r+b") as f:
            hdr = bytearray(f.read(128))
            data_offset, guest_size = struct.unpack_from("<Q", hdr, 56)[0], struct.unpack_from("<Q", hdr, 24)[0]
            f.seek(data_offset + guest_size)
            f.write(state)
            struct.pack_into("<I", hdr, 20, 1)  # DEVICE_STATE
            struct.pack_into("<II", hdr, 112, len(state), crc32c(state))
            struct.pack_into("<I", hdr, 124, crc32c(bytes(hdr[:124])))
            f.seek(0)
            f.write(hdr)
        return data_offset + guest_size

    def test_device_state_checked(self):
        # check and restore verify the section's CRC; one flipped byte is
        # refused by name, and restore then writes nothing.
        snap = self.good_snapshot()
        at = self.with_device_state(snap, os.urandom(5000))
        self.assertEqual(pf("check", snap).returncode, 0)
        with open(snap, "r+b") as f:
            f.seek(at + 4321)
            b = f.read(1)
            f.seek(at + 4321)
            f.write(bytes([b[0] ^ 1]))
        r = pf("check", snap)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.strip(), "pageferry check: pageferry-restore: snapshot refused: "
                                           "device state does not match its checksum")
        self.assertIn("device state does not match its checksum", self.restore_error(snap))
        os.truncate(snap, at + 4999)
        self.assertIn("truncated", self.restore_error(snap))

    def test_not_a_snapshot(self):
        snap = self.disk_path("junk.pfs")
        with open(snap, "wb") as f:
            f.write(os.urandom(8192))
        self.assertIn("bad magic", self.restore_error(snap))


class Failures(Workspace):
    def test_killed_supervisor_leaves_a_snapshot_restore_refuses(self):
        guest = self.guest("random")
        out = self.disk_path("k.pfs")
        p = self.spawn([PF, "snapshot", "--guest", guest, "--out", out],
                       env={"PAGEFERRY_TEST_HOOK": "writer:slow"}, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        p.kill()
        p.wait()
        partial = out + ".pf-partial"
        self.assertTrue(os.path.exists(partial))
        self.assertFalse(os.path.exists(out))
        into = self.path("r.ram")
        r = pf("restore", partial, "--into", into)
        self.assertEqual(r.returncode, 1)
        self.assertIn("unfinished snapshot", r.stderr)
        # Under another name its header still says so: the stages died with
        # the front end before they could finish it.
        renamed = self.disk_path("renamed.pfs")
        os.rename(partial, renamed)
        r = pf("restore", renamed, "--into", into)
        self.assertEqual(r.returncode, 1)
        self.assertIn("snapshot is incomplete", r.stderr)

    def test_writer_killed_mid_snapshot(self):
        # A dead worker is replaced (test_restart.py); the writer is not: it
        # holds the file and the transfer's position.
        guest = self.guest("random")
        out = self.disk_path("w.pfs")
        p = self.spawn([PF, "snapshot", "--guest", guest, "--out", out, "--workers", 2],
                       env={"PAGEFERRY_TEST_HOOK": "writer:slow"})
        time.sleep(0.8)
        os.kill(self.wait_child(p, "pageferry-writer"), signal.SIGKILL)
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 3)
        self.assertRegex(err.strip(), r"^pageferry snapshot: pageferry-writer was killed by signal 9 \(SIGKILL\)$")
        self.assert_no_output(out)

    def test_sandbox_violation_is_reported(self):
        guest = self.guest("mixed", "16M")
        out, r = self.snapshot(guest, env={"PAGEFERRY_TEST_HOOK": "worker:forbidden"})
        self.assertEqual(r.returncode, 3)
        self.assertRegex(r.stderr.strip(), r"^pageferry snapshot: pageferry-worker\[\d\] violated its sandbox "
                                           r"\(a forbidden system call; killed by SIGSYS\)$")
        self.assert_no_output(out)

    def test_full_filesystem(self):
        if os.geteuid() != 0 or not shutil.which("mkfs.ext4"):
            self.skipTest("needs root and mkfs.ext4 for a loop-mounted filesystem")
        img = self.disk_path("small.img")
        mnt = self.disk_path("mnt")
        os.mkdir(mnt)
        with open(img, "wb") as f:
            f.truncate(64 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", img], check=True)
        if subprocess.run(["mount", "-o", "loop", img, mnt]).returncode != 0:
            self.skipTest("cannot loop-mount here")
        try:
            guest = self.guest("random", "256M")
            out = os.path.join(mnt, "full.pfs")
            r = pf("snapshot", "--guest", guest, "--out", out)
            self.assertEqual(r.returncode, 1)
            self.assertRegex(r.stderr.strip(), r"^pageferry snapshot: pageferry-writer: writing page data "
                                               r"to the snapshot: No space left on device$")
            self.assert_no_output(out)
        finally:
            subprocess.run(["umount", mnt])


class Usage(Workspace):
    def test_help_for_every_subcommand(self):
        commands = pf("--help").stdout.split("COMMAND\n", 1)[1].split("\noptions:", 1)[0]
        names = re.findall(r"^    (\w+) ", commands, re.M)
        self.assertIn("snapshot", names)
        self.assertIn("mkguest", names)
        for cmd in names:
            r = pf(cmd, "--help")
            self.assertIn(f"usage: pageferry {cmd}", r.stdout)
            # argparse formats help= strings with %, not descriptions: an
            # escape meant for one must not show up in the other.
            self.assertNotRegex(r.stdout, r"%%|%\(", cmd)

    def test_verify_names_first_differing_page(self):
        a = self.guest("random", "4M")
        b = self.path("b.ram")
        shutil.copy(a, b)
        with open(b, "r+b") as f:
            f.seek(5 * 4096 + 17)
            f.write(b"!")
        r = pf("verify", a, b)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout.strip(), "different: first differing page 5 (offset 20480)")

    def test_bad_worker_count(self):
        r = pf("snapshot", "--guest", "x", "--out", "y", "--workers", "0")
        self.assertEqual(r.returncode, 2)
        self.assertIn("0 is out of range (1..64)", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
