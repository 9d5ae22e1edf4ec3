#!/usr/bin/python3
"""A real guest's RAM image for the benchmarks: the test guest of
tests/integration/qemu_guest.py (Debian's cloud kernel, a busybox
initramfs, TCG), given SIZE of RAM in a shared memory-backend-file, booted,
made to leave freed and zero pages behind, stopped; its RAM file is the
image.

The workload, run by the guest's init before its usual counters: the 64 MiB
random region the tests checksum, then files of text (/proc/kallsyms) and
program bytes (busybox) written to a tmpfs filling about 40% of RAM and
deleted again, so that the guest's free memory holds what freed memory holds
on a real machine: stale data, not zeros. The kernel's own pages, the page
cache of the initramfs and the never-touched rest (zero) make up the
remainder. What the image ends up holding (zero pages, holes) is printed.

usage: bench/guest_image.py SIZE OUT   (e.g. 1G /dev/shm/guest.ram)
"""
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import qemu_guest  # noqa: E402

WORKLOAD = """
mkdir -p /scratch
mount -t tmpfs -o size=60% tmpfs /scratch
i=0
while [ $i -lt {files} ]; do
  cat /proc/kallsyms /bin/busybox /proc/kallsyms > /scratch/f$i
  i=$((i + 1))
done
rm -f /scratch/f*
echo "workload done"
"""


def workload_init(mib):
    """The test guest's init with the workload, for a guest of mib MiB;
    it prints "workload done" before its counters."""
    # ~13 MiB a file (kallsyms twice, busybox once): about 40% of RAM.
    files = max(1, int(mib * 0.4 / 13))
    init = qemu_guest.INIT.replace('echo "sum 0 $s0"\n', 'echo "sum 0 $s0"\n' + WORKLOAD.format(files=files), 1)
    if init == qemu_guest.INIT:
        raise SystemExit("qemu_guest.INIT changed: the workload has nowhere to go")
    return init


def build(size, out):
    mib = size >> 20
    init = workload_init(mib)
    work = tempfile.mkdtemp(prefix="pf-guest-image-", dir="/dev/shm")
    old = qemu_guest.RAM_MIB, qemu_guest.INIT
    qemu_guest.RAM_MIB, qemu_guest.INIT = mib, init
    g = None
    try:
        initrd = qemu_guest.build_initramfs(os.path.join(work, "initrd.gz"))
        ram = os.path.join(work, "guest.ram")
        g = qemu_guest.start_guest(work, "image", ram, initrd)
        g.wait_ready(timeout=600)
        g.wait_for(lambda: "workload done" in g.lines(), "workload", 1200)
        g.wait_for_counter(g.last_counter() + 3, timeout=120)
        g.qmp().execute("stop")
        g.kill()
        g = None
        shutil.move(ram, out)
    finally:
        qemu_guest.RAM_MIB, qemu_guest.INIT = old
        if g:
            g.kill()
        shutil.rmtree(work, ignore_errors=True)
    st = os.stat(out)
    print(f"{out}: {st.st_size >> 20} MiB of guest RAM, {st.st_blocks * 512 >> 20} MiB allocated")


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.strip().splitlines()[-1])
    size = int(subprocess.run(["numfmt", "--from=iec", sys.argv[1]], capture_output=True, text=True,
                              check=True).stdout)
    build(size, sys.argv[2])


if __name__ == "__main__":
    main()
