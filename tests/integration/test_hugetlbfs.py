#!/usr/bin/python3
"""2 MiB pages: a guest on hugetlbfs is snapshotted with 2 MiB pages and
restored bit-exact onto hugetlbfs, and migrated onto hugetlbfs (which takes
no write(2): the receiver and its inflaters map it, dest/ds_place.h) and
onto tmpfs (written with pwrite, 2 MiB pages through a smaller buffer).  Needs root and free memory for 2 MiB
huge pages; the test reserves them itself and gives them back.  Where the
machine cannot provide them it exits 77, which meson reports as skipped."""
import json
import mmap
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from pftest import PF, Workspace, free_port, main_unless, pf  # noqa: E402

NR = "/proc/sys/vm/nr_hugepages"
GUEST_MIB = 256
NEEDED = 2 * GUEST_MIB // 2 + 8   # guest + a copy (restored or received), in 2 MiB pages


def huge_pages():
    with open(NR) as f:
        return int(f.read())


def set_huge_pages(n):
    with open(NR, "w") as f:
        f.write(str(n))


def free_huge_pages():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("HugePages_Free:"):
                return int(line.split()[1])
    return 0


class HugePages(Workspace):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Class cleanups run even when this fails half-way: the pages
        # reserved go back.
        cls.addClassCleanup(set_huge_pages, huge_pages())
        set_huge_pages(huge_pages() + NEEDED)
        cls.mnt = cls.class_tempdir(None)
        subprocess.run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "none", cls.mnt], check=True)
        cls.addClassCleanup(subprocess.run, ["umount", cls.mnt], capture_output=True)

    def test_round_trip_with_2mib_pages(self):
        guest = os.path.join(self.mnt, "guest.ram")
        restored = os.path.join(self.mnt, "restored.ram")
        snap = self.disk_path("huge.pfs")
        r = pf("mkguest", "mixed", f"{GUEST_MIB}M", guest)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = pf("snapshot", "--guest", guest, "--out", snap, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        s = json.loads(r.stdout)
        self.assertEqual(s["page_size"], 2 << 20)
        self.assertEqual(s["pages"]["total"], GUEST_MIB // 2)
        self.assertTrue(s["direct_io"])
        r = pf("restore", snap, "--into", restored, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_equal_ram(guest, restored)

    def migrate(self, guest, into, *args, compress="none"):
        port = free_port()
        rx = self.spawn([PF, "receive", "--listen", f"127.0.0.1:{port}", "--into", into, "--workers", 2,
                         "--json", *args])
        r = pf("migrate", "--guest", guest, "--to", f"tcp:127.0.0.1:{port}", "--compress", compress, "--json")
        code, out, err = self.finish(rx)
        self.assertEqual((r.returncode, code), (0, 0), f"migrate: {r.stderr} receive: {err}")
        self.assertEqual(json.loads(r.stdout)["page_size"], 2 << 20)
        self.assert_equal_ram(guest, into)

    def test_migrate_with_2mib_pages(self):
        guest = os.path.join(self.mnt, "guest.ram")
        self.assertEqual(pf("mkguest", "mixed", f"{GUEST_MIB}M", guest).returncode, 0)
        self.addCleanup(os.unlink, guest)
        for compress in ("none", "zstd"):
            for where in ("hugetlbfs", "tmpfs"):
                with self.subTest(compress=compress, where=where):
                    into = os.path.join(self.mnt if where == "hugetlbfs" else self.shm, "received.ram")
                    self.addCleanup(lambda p=into: os.path.exists(p) and os.unlink(p))
                    self.migrate(guest, into, compress=compress)
                    # Into the same file again (a destination VMM's RAM):
                    # stale contents first, so zero pages must be cleared.
                    # Through a mapping: hugetlbfs takes no write(2).
                    with open(into, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
                        m[:] = b"\xa5" * len(m)
                    self.migrate(guest, into, "--in-place", compress=compress)
                    os.unlink(into)


def can_have_huge_pages():
    if os.geteuid() != 0 or not os.path.exists(NR):
        return "needs root and /proc/sys/vm/nr_hugepages"
    saved = huge_pages()
    try:
        set_huge_pages(saved + NEEDED)
    except OSError as e:
        return f"cannot reserve huge pages: {e}"
    try:
        if free_huge_pages() < NEEDED:
            return f"the kernel gave fewer than {NEEDED} free 2 MiB pages"
    finally:
        set_huge_pages(saved)
    return None


if __name__ == "__main__":
    main_unless(can_have_huge_pages())
