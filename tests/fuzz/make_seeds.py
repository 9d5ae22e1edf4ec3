#!/usr/bin/python3
"""Seed corpora for the fuzz targets, cut from real transfers.

    python3 tests/fuzz/make_seeds.py BUILD_DIR [SEEDS_DIR]

SEEDS_DIR defaults to tests/fuzz/seeds; each target's directory in it is
replaced.  The seeds are checked in, so the suite never runs this; run it
again when a format changes (doc/formats.md) and check the new files in.

What it runs, all on loopback and with --insecure (plain TCP: a recording
of a TLS channel would hold only ciphertext):
- `pageferry migrate` -> `pageferry receive` through a recording TCP relay:
  a 2 MiB guest of mixed, zero and text pages on one channel (ZERO, RAW
  and SPARSE packets), the same on two channels with zstd (ZSTD and
  ZSTD_SPARSE packets), a live migration of a `pageferry guestsim` guest (rounds: SYNC
  packets, the ROUNDS feature), and one the receiver refuses (--in-place
  into a file of the wrong size: a handshake answer with a status);
- `pageferry snapshot` of small synthetic guests (mixed, text, zero, sparse,
  a size that leaves a partial bitmap word, and a tiny one whose pages are
  kept in the seed so `check`'s extent checksums can pass);
- the guestsim's dirty log, as the VMM lays it out.

The recordings are decoded with the layout of doc/formats.md (the same as
tests/integration/pfwire.py) and cut into each target's input format (the
comment at the top of each tests/fuzz/fuzz_*.c).  Every seed starts with the
flags byte 0: the bytes exactly as they travelled or were stored.  The run
record target has no seeds: no checksum guards it, so it needs none."""
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from pfwire import DATA, END, RESULT, SPARSE, ZSTD_SPARSE  # noqa: E402

HS = 64
HEADER = 48
SNAP_FIELDS = 128
PAGE = 4096
MAX_SEEDS = 30


class Relay:
    """A loopback TCP relay that keeps both directions of every connection
    it carries, in the order they were accepted."""

    def __init__(self, target_port):
        self.target = target_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.conns = []  # [{"up": bytearray, "down": bytearray}]
        self.threads = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            u = self._upstream()
            rec = {"up": bytearray(), "down": bytearray()}
            self.conns.append(rec)
            for src, dst, buf in ((c, u, rec["up"]), (u, c, rec["down"])):
                t = threading.Thread(target=self._pump, args=(src, dst, buf), daemon=True)
                t.start()
                self.threads.append(t)

    def _upstream(self):
        """The receiver: it may still be starting when the sender comes."""
        deadline = time.monotonic() + 10
        while True:
            try:
                return socket.create_connection(("127.0.0.1", self.target))
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @staticmethod
    def _pump(src, dst, buf):
        try:
            while True:
                b = src.recv(1 << 16)
                if not b:
                    break
                buf += b
                dst.sendall(b)
        except OSError:
            pass
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass

    def close(self):
        self.listener.close()
        for t in self.threads:
            t.join(timeout=10)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Seeds:
    def __init__(self, build, out):
        self.pf = os.path.abspath(os.path.join(build, "pageferry"))
        self.out = out
        self.shm = tempfile.mkdtemp(prefix="pf-seeds-", dir="/dev/shm")
        self.disk = tempfile.mkdtemp(prefix="pf-seeds-", dir="/var/tmp")  # O_DIRECT: a real disk
        self.env = dict(os.environ, PAGEFERRY_RUN_DIR=self.shm)
        self.seeds = {"packet": {}, "handshake": {}, "snapfile": {}}
        self.units_seen = set()

    def run(self, *args, **kw):
        return subprocess.run([self.pf] + [str(a) for a in args], capture_output=True, text=True, env=self.env,
                              timeout=120, **kw)

    def add(self, target, name, data):
        if data not in self.seeds[target].values():
            self.seeds[target][name] = bytes(data)

    # -- recordings ------------------------------------------------------------

    def migrate(self, name, guest, args=(), receive_args=(), into=None, expect=0):
        """One migration through the relay, cut into seeds.  expect: the
        sender's exit status (a refused migration exits 1)."""
        port = free_port()
        into = into or os.path.join(self.shm, name + ".dest")
        rx = subprocess.Popen([self.pf, "receive", "--listen", f"127.0.0.1:{port}", "--into", into, "--insecure",
                               "--accept-timeout", "30"] + [str(a) for a in receive_args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env)
        relay = Relay(port)
        try:
            tx = self.run("migrate", "--guest", guest, "--to", f"tcp:127.0.0.1:{relay.port}", "--insecure", *args)
            _, rx_err = rx.communicate(timeout=60)
        finally:
            rx.kill()
            relay.close()
        if tx.returncode != expect or (expect == 0 and rx.returncode != 0):
            raise SystemExit(f"{name}: migrate exit {tx.returncode} ({tx.stderr.strip()}), "
                             f"receive exit {rx.returncode} ({rx_err.strip()})")
        self.cut_recording(name, relay.conns)

    def cut_recording(self, name, conns):
        main = None
        offers = []
        for i, c in enumerate(conns):
            up, down = bytes(c["up"]), bytes(c["down"])
            if len(up) < HS:
                continue
            kind, cid = up[6], up[7]
            tag = f"{name}-{'main' if kind == 0 else f'data{cid}'}"
            if kind == 0:
                main = up[:HS]
            offers.append((up[:HS], kind))
            self.add("handshake", f"{tag}-offer", b"\0" + up[:HS])
            if len(down) >= HS:
                self.add("handshake", f"{tag}-offer-answer", b"\0" + up[:HS] + down[:HS])
            for direction, stream in (("up", up), ("down", down)):
                units = list(elide(stream[HS:]))
                if not units:
                    continue
                hs = stream[:HS]
                self.add("packet", f"{tag}-{direction}-head", b"\0" + hs + b"".join(units[:12]))
                if len(units) > 12:
                    self.add("packet", f"{tag}-{direction}-tail", b"\0" + hs + b"".join(units[-6:]))
                for u in units:  # one seed per kind of packet not yet seen
                    shape = (u[4], u[5])
                    if shape not in self.units_seen:
                        self.units_seen.add(shape)
                        self.add("packet", f"{tag}-{direction}-type{u[4]}-enc{u[5]}", b"\0" + hs + u)
        for offer, kind in offers:
            if main is not None and kind == 1:
                self.add("handshake", f"{name}-main-then-data", b"\0" + main + offer)
                break

    # -- snapshots -------------------------------------------------------------

    def guest(self, name, pattern, size):
        g = os.path.join(self.shm, name + ".ram")
        r = self.run("mkguest", pattern, size, g)
        if r.returncode != 0:
            raise SystemExit(f"mkguest {pattern} {size}: {r.stderr.strip()}")
        return g

    def snapshot(self, name, guest, keep_pages=False):
        snap = os.path.join(self.disk, name + ".pfs")
        r = self.run("snapshot", "--guest", guest, "--out", snap)
        if r.returncode != 0:
            raise SystemExit(f"snapshot {name}: {r.stderr.strip()}")
        with open(snap, "rb") as f:
            fields = f.read(SNAP_FIELDS)
            page = struct.unpack_from("<I", fields, 16)[0]
            bitmap_off, bitmap_len, data_off = struct.unpack_from("<QQQ", fields, 40)
            table_off, count = struct.unpack_from("<QQ", fields, 96)
            f.seek(bitmap_off)
            bitmap = f.read(bitmap_len)
            f.seek(table_off)
            table = f.read(count * 16)
            pages = b""
            if keep_pages:
                for p in range(bitmap_len * 8):
                    if bitmap[p // 8] >> (p % 8) & 1:
                        f.seek(data_off + p * page)
                        pages += f.read(page)
        os.unlink(snap)
        self.add("snapfile", name, b"\0" + fields + bitmap + table + pages)

    def composite(self):
        """2 MiB: mixed pages (SPARSE packets; with zstd ZSTD_SPARSE),
        zero pages written as such (ZERO), text (RAW; with zstd ZSTD)."""
        g = os.path.join(self.shm, "composite.ram")
        with open(g, "wb") as out:
            for name, pattern, size in (("c-mixed", "mixed", "1M"), ("c-zero", "zero", "512K"),
                                        ("c-text", "text", "512K")):
                with open(self.guest(name, pattern, size), "rb") as f:
                    out.write(f.read())
        return g

    def tiny_guest(self):
        """24 pages, five of them data in three runs, the rest zero."""
        g = os.path.join(self.shm, "tiny.ram")
        ram = bytearray(24 * PAGE)
        for p in (1, 2, 3, 9, 20):
            text = (b"pageferry fuzz seed, page %d. " % p) * 100
            ram[p * PAGE:p * PAGE + len(text)] = text
        with open(g, "wb") as f:
            f.write(ram)
        return g

    # -- all of it -------------------------------------------------------------

    def make(self):
        mixed = self.guest("mixed1m", "mixed", "1M")
        self.migrate("plain2m", self.composite(), ["--channels", 1])
        self.migrate("zstd2m", self.composite(), ["--channels", 2, "--compress", "zstd"])
        self.live()
        wrong = os.path.join(self.shm, "wrong-size.ram")
        with open(wrong, "wb") as f:
            f.truncate(2 << 20)
        self.migrate("refused", mixed, ["--channels", 1], ["--in-place"], into=wrong, expect=1)

        self.snapshot("snap-mixed1m", mixed)
        self.snapshot("snap-text256k", self.guest("text256k", "text", "256K"))
        self.snapshot("snap-zero64k", self.guest("zero64k", "zero", "64K"))
        self.snapshot("snap-sparse16m", self.guest("sparse16m", "sparse", "16M"))
        self.snapshot("snap-mixed400k", self.guest("mixed400k", "mixed", "400K"))
        self.snapshot("snap-tiny-with-pages", self.tiny_guest(), keep_pages=True)

    def live(self):
        ram, log, crc = (os.path.join(self.shm, n) for n in ("live.ram", "live.log", "live.crc"))
        g = subprocess.Popen([self.pf, "guestsim", "--ram", ram, "--dirty-log", log, "--size", "8M", "--rate", "16",
                              "--checksum-file", crc], stdout=subprocess.PIPE, text=True, env=self.env)
        try:
            if g.stdout.readline().strip() != "ready":
                raise SystemExit("guestsim did not start")
            with open(log, "rb") as f:
                self.add("snapfile", "dirtylog-8m", b"\0" + f.read())
            self.migrate("live8m", ram, ["--channels", 2, "--dirty-log", log, "--max-rounds", 8])
        finally:
            g.terminate()
            g.wait(timeout=30)

    def write(self):
        for target, seeds in self.seeds.items():
            if len(seeds) > MAX_SEEDS:
                raise SystemExit(f"{target}: {len(seeds)} seeds, more than {MAX_SEEDS}")
            d = os.path.join(self.out, target)
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            for name, data in sorted(seeds.items()):
                with open(os.path.join(d, name), "wb") as f:
                    f.write(data)
            print(f"{target}: {len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes in {d}")

    def cleanup(self):
        shutil.rmtree(self.shm, ignore_errors=True)
        shutil.rmtree(self.disk, ignore_errors=True)


def elide(stream):
    """A channel's packets after the handshake, each as its header followed
    by what the receiver decodes of its payload (fuzz_packet.c's format):
    a SPARSE or ZSTD_SPARSE bitmap, an END or RESULT body; page bytes are
    left out."""
    off = 0
    while len(stream) - off >= HEADER:
        h = stream[off:off + HEADER]
        ptype, enc, n_pages = h[4], h[5], struct.unpack_from("<I", h, 12)[0]
        payload_len = struct.unpack_from("<I", h, 32)[0]
        keep = payload_len if ptype in (END, RESULT) else \
            (n_pages + 63) // 64 * 8 if ptype == DATA and enc in (SPARSE, ZSTD_SPARSE) else 0
        yield h + stream[off + HEADER:off + HEADER + keep]
        off += HEADER + payload_len


def main():
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    out = sys.argv[2] if len(sys.argv) == 3 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
    s = Seeds(sys.argv[1], out)
    try:
        s.make()
        s.write()
    finally:
        s.cleanup()


if __name__ == "__main__":
    main()
