#!/usr/bin/python3
"""2 MiB pages: a guest on hugetlbfs is snapshotted with 2 MiB pages and
restored bit-exact onto hugetlbfs.  Needs root and free memory for 2 MiB
huge pages; the test reserves them itself and gives them back.  Where the
machine cannot provide them it exits 77, which meson reports as skipped."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

BUILD = os.environ.get("PAGEFERRY_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
PF = os.path.join(BUILD, "pageferry")
NR = "/proc/sys/vm/nr_hugepages"
GUEST_MIB = 256
NEEDED = 2 * GUEST_MIB // 2 + 8   # guest + restored copy, in 2 MiB pages


def pf(*args):
    return subprocess.run([PF] + [str(a) for a in args], capture_output=True, text=True)


def free_huge_pages():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("HugePages_Free:"):
                return int(line.split()[1])
    return 0


class HugePages(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(NR) as f:
            cls.saved = int(f.read())
        with open(NR, "w") as f:
            f.write(str(cls.saved + NEEDED))
        cls.mnt = tempfile.mkdtemp(prefix="pf-huge-")
        subprocess.run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "none", cls.mnt], check=True)
        cls.disk = tempfile.mkdtemp(prefix="pf-huge-", dir="/var/tmp")

    @classmethod
    def tearDownClass(cls):
        subprocess.run(["umount", cls.mnt], capture_output=True)
        os.rmdir(cls.mnt)
        shutil.rmtree(cls.disk, ignore_errors=True)
        with open(NR, "w") as f:
            f.write(str(cls.saved))

    def test_round_trip_with_2mib_pages(self):
        guest = os.path.join(self.mnt, "guest.ram")
        restored = os.path.join(self.mnt, "restored.ram")
        snap = os.path.join(self.disk, "huge.pfs")
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
        r = pf("verify", guest, restored)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("equal", r.stdout)


def can_have_huge_pages():
    if os.geteuid() != 0 or not os.path.exists(NR):
        return "needs root and /proc/sys/vm/nr_hugepages"
    with open(NR) as f:
        saved = int(f.read())
    try:
        with open(NR, "w") as f:
            f.write(str(saved + NEEDED))
    except OSError as e:
        return f"cannot reserve huge pages: {e}"
    if free_huge_pages() < NEEDED:
        with open(NR, "w") as f:
            f.write(str(saved))
        return f"the kernel gave fewer than {NEEDED} free 2 MiB pages"
    with open(NR, "w") as f:
        f.write(str(saved))
    return None


if __name__ == "__main__":
    why_not = can_have_huge_pages()
    if why_not:
        print(f"SKIP: {why_not}")
        sys.exit(77)
    unittest.main(verbosity=2)
