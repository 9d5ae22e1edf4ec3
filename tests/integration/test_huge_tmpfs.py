#!/usr/bin/python3
"""A destination on a tmpfs that hands out 2 MiB pages (huge=always, as VMMs
commonly back guest RAM): the receiver and restore map it (dest/ds_place.h)
and take raw pages from the socket, or O_DIRECT reads, straight into it.
Every copy must be bit-exact, fresh and in place over stale bytes, with and
without TLS and zstd; a destination filesystem too small for the guest must
fail with the "no space left" line, which in the mapping comes as SIGBUS (a
copy into it: from the read-ahead buffer, TLS's, or an inflater's) or as
EFAULT (recv or an O_DIRECT read into it), tell a sender that the receiver
failed, and leave no destination behind.
Needs root (mount); where the kernel has no huge pages for tmpfs it exits
77, which meson reports as skipped."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from pftest import PF, Workspace, free_port, main_unless, pf  # noqa: E402

GUEST = "128M"
SHMEM_ENABLED = "/sys/kernel/mm/transparent_hugepage/shmem_enabled"


def mount_tmpfs(where, size):
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},huge=always", "pf-huge-test", where], check=True)


class HugeTmpfs(Workspace):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mnt = cls.class_tempdir(None)
        mount_tmpfs(cls.mnt, "1G")
        cls.addClassCleanup(subprocess.run, ["umount", cls.mnt], capture_output=True)
        cls.key = os.path.join(cls.mnt, "psk")
        with open(cls.key, "wb") as f:
            f.write(os.urandom(32))

    def receive(self, guest, into, *args, tls=False, compress="none"):
        port = free_port()
        creds = ["--psk-file", self.key] if tls else []
        rx = self.spawn([PF, "receive", "--listen", f"127.0.0.1:{port}", "--into", into, "--workers", 2, *creds,
                         *args])
        r = pf("migrate", "--guest", guest, "--to", f"tcp:127.0.0.1:{port}", "--compress", compress, *creds)
        code, out, err = self.finish(rx)
        return r, code, err

    def test_blocksize_says_huge_pages(self):
        # What ds_place.c goes by: without it this test proves nothing.
        path = os.path.join(self.mnt, "probe")
        open(path, "wb").close()
        self.addCleanup(os.unlink, path)
        self.assertEqual(os.stat(path).st_blksize, 2 << 20)

    def test_migrate_into_huge_tmpfs(self):
        for pattern in ("random", "mixed"):
            guest = self.guest(pattern, GUEST)
            for tls in (False, True):
                for compress in ("none", "zstd"):
                    with self.subTest(pattern=pattern, tls=tls, compress=compress):
                        into = os.path.join(self.mnt, "received.ram")
                        r, code, err = self.receive(guest, into, tls=tls, compress=compress)
                        self.assertEqual((r.returncode, code), (0, 0), r.stderr + err)
                        self.assert_equal_ram(guest, into)
                        # A waiting VMM's RAM: stale bytes everywhere first.
                        with open(into, "r+b") as f:
                            f.write(b"\xa5" * os.path.getsize(guest))
                        r, code, err = self.receive(guest, into, "--in-place", tls=tls, compress=compress)
                        self.assertEqual((r.returncode, code), (0, 0), r.stderr + err)
                        self.assert_equal_ram(guest, into)
                        os.unlink(into)
            os.unlink(guest)

    def test_restore_into_huge_tmpfs(self):
        guest = self.guest("mixed", GUEST)
        snap = self.disk_path("huge.pfs")
        r = pf("snapshot", "--guest", guest, "--out", snap)
        self.assertEqual(r.returncode, 0, r.stderr)
        into = os.path.join(self.mnt, "restored.ram")
        self.addCleanup(lambda: os.path.exists(into) and os.unlink(into))
        r = pf("restore", snap, "--into", into)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_equal_ram(guest, into)
        with open(into, "r+b") as f:
            f.write(b"\x5a" * os.path.getsize(guest))
        r = pf("restore", snap, "--into", into, "--in-place")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_equal_ram(guest, into)

    def test_full_destination_fails_with_no_space(self):
        small = self.tempdir(None)
        mount_tmpfs(small, "64M")
        self.addCleanup(subprocess.run, ["umount", small], capture_output=True)
        into = os.path.join(small, "received.ram")
        # Raw pages fault in the receiver (recv or a copy into the mapping);
        # zstd frames of the mixed guest in an inflater, whose death the
        # receiver must still report to the sender, not just hang up.
        for pattern, compress in (("random", "none"), ("mixed", "zstd")):
            guest = self.guest(pattern, GUEST)
            for tls in (False, True):
                with self.subTest(pattern=pattern, tls=tls):
                    r, code, err = self.receive(guest, into, tls=tls, compress=compress)
                    self.assertNotEqual(code, 0)
                    self.assertIn(f"no space left on {into}", err)
                    self.assertIn("(the filesystem is full)", err)
                    self.assertNotEqual(r.returncode, 0)
                    # Raw pages fail in the receive stage, zstd frames in an
                    # inflater, which marks why it died for the receive stage
                    # to say (PROTO_E_DEST_FULL either way): the mixed guest
                    # has both kinds, and whichever fills the filesystem
                    # first must not change what the sender hears.
                    self.assertIn("the receiver's destination has no space left for the guest's pages", r.stderr)
                    self.assertEqual(os.listdir(small), [])
            os.unlink(guest)
        # Restore reads O_DIRECT into the mapping: the read fails (EFAULT).
        guest = self.guest("random", GUEST)
        snap = self.disk_path("full.pfs")
        r = pf("snapshot", "--guest", guest, "--out", snap)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = pf("restore", snap, "--into", into)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stderr.strip(), f"pageferry restore: pageferry-restore: no space left on {into} for the "
                                           "guest's pages (the filesystem is full)")
        self.assertEqual(os.listdir(small), [])


def can_have_huge_tmpfs():
    if os.geteuid() != 0:
        return "needs root to mount a tmpfs"
    try:
        with open(SHMEM_ENABLED) as f:
            modes = f.read()
    except OSError:
        return f"no {SHMEM_ENABLED}: the kernel has no huge pages for tmpfs"
    if "always" not in modes:
        return f"{SHMEM_ENABLED} offers no 'always': {modes.strip()}"
    return None


if __name__ == "__main__":
    main_unless(can_have_huge_tmpfs())
