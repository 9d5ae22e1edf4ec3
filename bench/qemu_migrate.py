#!/usr/bin/python3
"""Reference for bench/migrate.py: QEMU migrating the same RAM image.

Source and destination are QEMU processes with the guest RAM as
`-object memory-backend-file,share=on,mem-path=IMAGE`, never started (-S),
so the source is paused. Multifd uses the same channel count and compression
as pageferry and zero-page-detection=multifd; zero-copy-send only if asked
(QEMU's default is off; on loopback the kernel copies zero-copy sends anyway).

QEMU's defaults would not measure QEMU: max-bandwidth is 128 MiB/s unless set,
so it is set far above any link here (MAX_BANDWIDTH), and downtime-limit is
set to QEMU's maximum, because a paused source has nothing to converge: QEMU
goes to its completion phase as soon as it has a bandwidth estimate instead
of syncing the dirty bitmap again. The parameters are read back
(query-migrate-parameters) and a run whose max-bandwidth did not take is
refused.

The destination is the same condition pageferry gets (bench/destination.py),
checked before QEMU starts: prealloc = zeros written over a file of the guest's
size and the destination QEMU started with prealloc=on (its RAM mapped before
the clock starts, as `pageferry receive --in-place` maps its file before it
listens); fresh = a file of the guest's size with nothing allocated.

Time: from the `migrate` command until the destination has left `inmigrate`
(the whole image loaded), wall clock; QEMU's own total-time is recorded too.
CPU: both QEMU processes over that window.

usage: qemu_migrate.py IMAGE DEST --dest-kind prealloc|fresh [--channels N]
                       [--compress none|zstd] [--zerocopy] [--port P]
Prints one JSON object. DEST is removed afterwards.
"""
import argparse
import contextlib
import json
import os
import socket
import subprocess
import tempfile
import time

import destination
import ports

MAX_BANDWIDTH = 100 << 30  # bytes/s: far above loopback's few GiB/s
# TLS rows: the same pre-shared key for both programs, and the same cipher
# preference as pageferry (net/net_tls.c): TLS 1.3, AES-128-GCM first.
# QEMU appends its PSK key exchanges to this.
TLS_PRIORITY = "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305"
PSK_DIR = os.path.join(tempfile.gettempdir(), "pf-bench-psk")
PSK_USER = "qemu"  # tls-creds-psk's default username


def psk_file():
    """The bench's key: DIR/key for pageferry, DIR/keys.psk for QEMU."""
    path = os.path.join(PSK_DIR, "key")
    if not os.path.exists(path):
        os.makedirs(PSK_DIR, mode=0o700, exist_ok=True)
        key = os.urandom(32)
        with open(path, "wb") as f:
            f.write(key)
        with open(os.path.join(PSK_DIR, "keys.psk"), "w") as f:
            f.write(f"{PSK_USER}:{key.hex()}\n")
    return path
DOWNTIME_LIMIT_MS = 2000 * 1000  # QEMU's maximum


class QMP:
    def __init__(self, path, proc):
        deadline = time.monotonic() + 30
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"QEMU did not open its QMP socket {path}")
                time.sleep(0.05)
        self.f = self.s.makefile("rw")
        self.greeting = json.loads(self.f.readline())
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            line = self.f.readline()
            if not line:
                raise RuntimeError(f"{name}: QEMU closed its QMP socket")
            msg = json.loads(line)
            if "return" in msg:
                return msg["return"]
            if "error" in msg:
                raise RuntimeError(f"{name}: {msg['error'].get('desc')}")


def cpu_seconds(pid):
    """utime + stime of the whole process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(image, qmp_path, incoming, log, prealloc=False, tls="none"):
    size = os.path.getsize(image)
    backend = f"memory-backend-file,id=ram,size={size},mem-path={image},share=on"
    if prealloc:
        backend += ",prealloc=on"
    cmd = ["qemu-system-x86_64", "-machine", "q35,memory-backend=ram",
           "-accel", "kvm" if os.path.exists("/dev/kvm") else "tcg",
           "-m", f"{size // (1 << 20)}M", "-object", backend,
           "-nodefaults", "-display", "none", "-S", "-qmp", f"unix:{qmp_path},server=on,wait=off"]
    if incoming:
        cmd += ["-incoming", "defer"]
    if tls == "psk":
        psk_file()
        cmd += ["-object", f"tls-creds-psk,id=tls0,endpoint={'server' if incoming else 'client'},dir={PSK_DIR},"
                + ("" if incoming else f"username={PSK_USER},") + f"priority={TLS_PRIORITY}"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)


def stop(procs, logs, tmp):
    """Kill the QEMU processes, close their logs and remove their scratch
    directory (sockets, logs)."""
    for p in procs:
        p.kill()
        p.wait()
    for f in logs:
        f.close()
    for name in os.listdir(tmp):
        os.unlink(os.path.join(tmp, name))
    os.rmdir(tmp)


@contextlib.contextmanager
def qemus(*rams):
    """QEMU processes for pageferry's --qmp runs, started as start() does
    (-S: never run), one per (ram, incoming, prealloc); yields their QMP
    socket paths, each up and free for pageferry (one client at a time), and
    cpu(): their CPU-seconds so far, all together. No rams: no QEMU, cpu()
    is 0 (a run of pageferry on the image file itself)."""
    tmp = tempfile.mkdtemp(prefix="pf-qemu-vm-")
    procs, logs = [], []
    try:
        paths = []
        for i, (ram, incoming, prealloc) in enumerate(rams):
            path = f"{tmp}/{i}.qmp"
            logs.append(open(f"{tmp}/{i}.log", "w+"))
            procs.append(start(ram, path, incoming, logs[-1], prealloc=prealloc))
            q = QMP(path, procs[-1])
            q.f.close()
            q.s.close()
            paths.append(path)
        yield paths, lambda: sum(cpu_seconds(p.pid) for p in procs)
    finally:
        stop(procs, logs, tmp)


def wait_completed(q, t0, timeout, what="migration"):
    """Poll query-migrate on q until it ends; returns its status, raises
    unless it completed (or after timeout seconds from t0)."""
    while True:
        st = q.cmd("query-migrate")
        if st.get("status") in ("completed", "failed", "cancelled"):
            break
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"QEMU {what} still {st.get('status')} after {timeout} s")
        time.sleep(0.005)
    if st["status"] != "completed":
        raise RuntimeError(f"QEMU {what} {st['status']}: {st.get('error-desc', '')}")
    return st


def configure(q, is_src, channels, comp, zerocopy, tls="none"):
    caps = [{"capability": "multifd", "state": True},
            {"capability": "x-ignore-shared", "state": False}]  # share=on RAM must still be sent
    if is_src:
        caps.append({"capability": "zero-copy-send", "state": zerocopy})
    q.cmd("migrate-set-capabilities", capabilities=caps)
    params = {"multifd-channels": channels, "multifd-compression": comp, "zero-page-detection": "multifd"}
    if comp == "zstd":
        params["multifd-zstd-level"] = 1
    if tls != "none":
        params["tls-creds"] = "tls0"
    if is_src:
        params["max-bandwidth"] = MAX_BANDWIDTH
        params["downtime-limit"] = DOWNTIME_LIMIT_MS
    q.cmd("migrate-set-parameters", **params)


def run(image, dest, channels, comp, zerocopy, port, dest_kind, timeout=900, tls="none"):
    """One QEMU migration of IMAGE into DEST (prepared here as `dest_kind`);
    DEST is left in place for the caller to verify and remove."""
    zerocopy = bool(zerocopy) and comp == "none"  # QEMU refuses zero-copy-send with compression
    size = os.path.getsize(image)
    destination.prepare(dest, size, dest_kind)
    allocated = destination.check(dest, size, dest_kind)
    tmp = tempfile.mkdtemp(prefix="pf-qemu-")
    logs = {side: open(f"{tmp}/{side}.log", "w+") for side in ("src", "dst")}
    procs = {}
    try:
        procs["src"] = start(image, f"{tmp}/src.qmp", False, logs["src"], tls=tls)
        procs["dst"] = start(dest, f"{tmp}/dst.qmp", True, logs["dst"], prealloc=dest_kind == "prealloc", tls=tls)
        qs, qd = QMP(f"{tmp}/src.qmp", procs["src"]), QMP(f"{tmp}/dst.qmp", procs["dst"])
        configure(qs, True, channels, comp, zerocopy, tls)
        configure(qd, False, channels, comp, zerocopy, tls)
        params = qs.cmd("query-migrate-parameters")
        if params["max-bandwidth"] != MAX_BANDWIDTH:
            raise RuntimeError(f"QEMU kept max-bandwidth at {params['max-bandwidth']} bytes/s")
        caps = {c["capability"]: c["state"] for c in qs.cmd("query-migrate-capabilities")}
        qd.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        c0 = cpu_seconds(procs["src"].pid), cpu_seconds(procs["dst"].pid)
        t0 = time.monotonic()
        qs.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        st = wait_completed(qs, t0, timeout)
        # The destination finishes loading after the source reports completion.
        while qd.cmd("query-status").get("status") == "inmigrate":
            if time.monotonic() - t0 > timeout:
                raise RuntimeError("the QEMU destination never left inmigrate")
            time.sleep(0.005)
        t1 = time.monotonic()
        c1 = cpu_seconds(procs["src"].pid), cpu_seconds(procs["dst"].pid)
        return {"seconds": t1 - t0, "qemu_total_time_s": st["total-time"] / 1000.0,
                "cpu_src": c1[0] - c0[0], "cpu_dst": c1[1] - c0[1], "cpu": c1[0] - c0[0] + c1[1] - c0[1],
                "ram": st.get("ram", {}), "version": qs.greeting["QMP"]["version"]["qemu"],
                "dest": dest_kind, "dest_allocated_before": allocated,
                "params": {k: params.get(k) for k in ("max-bandwidth", "downtime-limit", "multifd-channels",
                                                      "multifd-compression", "multifd-zstd-level",
                                                      "zero-page-detection", "tls-creds")},
                "capabilities": {k: caps[k] for k in ("multifd", "zero-copy-send", "x-ignore-shared")}}
    except RuntimeError as e:
        tails = []
        for side, f in logs.items():
            f.seek(0)
            text = f.read().strip()
            if text:
                tails.append(f"{side} QEMU: {text.splitlines()[-1]}")
        raise RuntimeError("; ".join([str(e)] + tails)) from None
    finally:
        stop(procs.values(), logs.values(), tmp)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image")
    ap.add_argument("dest")
    ap.add_argument("--dest-kind", required=True, choices=destination.KINDS)
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--compress", choices=("none", "zstd"), default="none")
    ap.add_argument("--zerocopy", action="store_true")
    ap.add_argument("--tls", choices=("none", "psk"), default="none")
    ap.add_argument("--port", type=int, default=ports.free_port())
    a = ap.parse_args()
    try:
        print(json.dumps(run(a.image, a.dest, a.channels, a.compress, a.zerocopy, a.port, a.dest_kind, tls=a.tls)))
    finally:
        destination.remove(a.dest)


if __name__ == "__main__":
    main()
