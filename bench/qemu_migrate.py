#!/usr/bin/python3
"""Reference for bench/migrate.py: QEMU migrating the same RAM image.

Source and destination are QEMU processes with the guest RAM as
`-object memory-backend-file,share=on,mem-path=IMAGE`, never started (-S),
so the source is paused. Multifd uses the same channel count and compression
as pageferry, zero-page-detection=multifd, and zero-copy-send where QEMU
allows it (multifd without compression). Prints one JSON line: seconds (QEMU's
own total-time), CPU seconds of each side, and QEMU's version.

usage: qemu_migrate.py IMAGE DEST_IMAGE CHANNELS none|zstd ZEROCOPY(0|1) PORT
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time


class QMP:
    def __init__(self, path):
        deadline = time.monotonic() + 30
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.f = self.s.makefile("rw")
        self.greeting = json.loads(self.f.readline())
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            msg = json.loads(self.f.readline())
            if "return" in msg:
                return msg["return"]
            if "error" in msg:
                raise RuntimeError(f"{name}: {msg['error'].get('desc')}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(image, qmp_path, incoming):
    size = os.path.getsize(image)
    cmd = ["qemu-system-x86_64", "-machine", "q35,memory-backend=ram", "-accel", "kvm" if os.path.exists("/dev/kvm") else "tcg",
           "-m", f"{size // (1 << 20)}M", "-object",
           f"memory-backend-file,id=ram,size={size},mem-path={image},share=on",
           "-nodefaults", "-display", "none", "-S", "-qmp", f"unix:{qmp_path},server=on,wait=off"]
    if incoming:
        cmd += ["-incoming", "defer"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def prefill(path):
    """Write zeros over the whole file, so that its memory is touched before the timed part."""
    chunk = bytes(1 << 20)
    with open(path, "r+b") as f:
        for _ in range(os.path.getsize(path) >> 20):
            f.write(chunk)


def main():
    image, dest, channels, comp, zerocopy, port = sys.argv[1:7]
    prealloc = len(sys.argv) > 7 and sys.argv[7] == "prealloc"
    channels, zerocopy = int(channels), comp == "none" and zerocopy == "1"
    with open(dest, "wb") as f:
        f.truncate(os.path.getsize(image))
    if prealloc:  # a destination VMM that pre-allocated its RAM (design.md: "a trap when measuring here")
        prefill(dest)
    tmp = tempfile.mkdtemp(prefix="pf-qemu-")
    src = start(image, f"{tmp}/src.qmp", False)
    dst = start(dest, f"{tmp}/dst.qmp", True)
    try:
        qs, qd = QMP(f"{tmp}/src.qmp"), QMP(f"{tmp}/dst.qmp")
        for q, is_src in ((qs, True), (qd, False)):
            caps = [{"capability": "multifd", "state": True}]
            if is_src and zerocopy:
                caps.append({"capability": "zero-copy-send", "state": True})
            q.cmd("migrate-set-capabilities", capabilities=caps)
            params = {"multifd-channels": channels, "multifd-compression": comp,
                      "zero-page-detection": "multifd"}
            if comp == "zstd":
                params["multifd-zstd-level"] = 1
            q.cmd("migrate-set-parameters", **params)
        qd.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        c0 = cpu_seconds(src.pid), cpu_seconds(dst.pid)
        qs.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        while True:
            st = qs.cmd("query-migrate")
            if st.get("status") in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.01)
        # The destination finishes loading after the source reports completion.
        while qd.cmd("query-status").get("status") == "inmigrate":
            time.sleep(0.01)
        c1 = cpu_seconds(src.pid), cpu_seconds(dst.pid)
        if st["status"] != "completed":
            raise RuntimeError(f"QEMU migration {st['status']}: {st.get('error-desc', '')}")
        print(json.dumps({"seconds": st["total-time"] / 1000.0, "cpu_src": c1[0] - c0[0],
                          "cpu_dst": c1[1] - c0[1], "ram": st.get("ram", {}),
                          "version": qs.greeting["QMP"]["version"]["qemu"]}))
    finally:
        for p in (src, dst):
            p.kill()
            p.wait()
        os.unlink(dest)
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)


if __name__ == "__main__":
    main()
