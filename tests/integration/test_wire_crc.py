#!/usr/bin/python3
"""Payload checksums on the wire (since wire protocol 3): a relay on loopback sits
between `pageferry migrate` and `pageferry receive`, forwarding every
connection (main and data channels); it parses the data channels' packet
headers (doc/formats.md) and can flip one byte of one packet's payload.
The receiver must fail naming that packet; an untouched stream must arrive
bit-exact."""
import os
import socket
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import pfwire  # noqa: E402
from pftest import PF, Workspace, free_port, pf  # noqa: E402


class Relay:
    """Listens on a port of its own and forwards each connection to the
    receiver.  `target(cid, header)` says whether to corrupt a DATA packet;
    the first packet it accepts gets one payload byte flipped."""

    def __init__(self, receiver_port, target=None):
        self.receiver_port = receiver_port
        self.target = target
        self.flipped = None  # (channel id, header fields) of the corrupted packet
        self.data_packets = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        for s in [self.sock] + self.conns:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = pfwire.connect(self.receiver_port)
            client.settimeout(None)
            upstream.settimeout(None)
            self.conns += [client, upstream]
            threading.Thread(target=self._copy, args=(upstream, client), daemon=True).start()
            threading.Thread(target=self._forward, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _end(src, dst):
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass

    def _copy(self, src, dst):
        try:
            while True:
                b = src.recv(1 << 16)
                if not b:
                    break
                dst.sendall(b)
        except OSError:
            pass
        self._end(src, dst)

    def _forward(self, src, dst):
        """Sender to receiver: the handshake, then (data channels) packet by
        packet, header parsed, payload forwarded whole."""
        try:
            hs = pfwire.recv_exact(src, 64)
            dst.sendall(hs)
            if hs[6] != 1:  # the main channel: nothing to corrupt
                return self._copy(src, dst)
            cid = hs[7]
            while True:
                h = pfwire.recv_exact(src, 48)
                f = pfwire.parse_header(h)
                payload = bytearray(pfwire.recv_exact(src, f["payload_len"])) if f["payload_len"] else b""
                if f["type"] == pfwire.DATA:
                    with self.lock:
                        self.data_packets += 1
                        if (self.flipped is None and payload and self.target and self.target(cid, f)):
                            payload[len(payload) - 1 - len(payload) // 3] ^= 0x20
                            self.flipped = (cid, f)
                dst.sendall(h + bytes(payload))
        except (OSError, ConnectionError):
            pass
        self._end(src, dst)


class WireChecksum(Workspace):
    guest_size = "64M"

    def setUp(self):
        super().setUp()
        self.relay = None
        self.addCleanup(lambda: self.relay and self.relay.close())

    def through_relay(self, guest, target, *migrate_args):
        """Receive into a fresh destination, migrate through a relay; returns
        (receiver exit, receiver stderr, migrate result, destination)."""
        port = free_port()
        into = self.path("dst.ram")
        rx = self.spawn([PF, "receive", "--listen", f"127.0.0.1:{port}", "--into", into, "--accept-timeout", 30,
                         "--workers", 2])
        self.relay = Relay(port, target)
        tx = pf("migrate", "--guest", guest, "--to", f"tcp:127.0.0.1:{self.relay.port}", *migrate_args,
                env=self.env, timeout=300)
        _, err = rx.communicate(timeout=120)
        return rx.returncode, err, tx, into

    def assert_failed_naming_the_flipped_packet(self, code, err, tx, into, live=False):
        self.assertIsNotNone(self.relay.flipped, "the relay found no packet to corrupt")
        cid, f = self.relay.flipped
        self.assertEqual(code, 1, err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        last = f['first_page'] + f['n_pages'] - 1
        if live:
            # Only after every END: its pages never came again.
            self.assertIn(f"data channel {cid}, packet {f['seq']} (pages {f['first_page']}..{last}, round 1): "
                          f"payload checksum mismatch (corrupted in transit: pages {f['first_page']}..", err)
        else:
            self.assertIn(f"data channel {cid}, packet {f['seq']} (pages {f['first_page']}..{last}): "
                          "payload checksum mismatch (corrupted in transit)", err)
        self.assertNotEqual(tx.returncode, 0, tx.stdout + tx.stderr)
        self.assertEqual(len(tx.stderr.strip().splitlines()), 1, tx.stderr)
        self.assert_no_output(into)

    def test_untouched_stream_arrives_bit_exact(self):
        guest = self.guest("mixed")
        for compress in ("none", "zstd"):
            with self.subTest(compress=compress):
                code, err, tx, into = self.through_relay(guest, None, "--channels", 2, "--compress", compress)
                self.assertEqual((tx.returncode, code), (0, 0), tx.stderr + err)
                self.assertGreater(self.relay.data_packets, 0)
                self.assert_equal_ram(guest, into)
                os.unlink(into)
                self.relay.close()

    def test_flipped_raw_payload_byte_names_the_packet(self):
        # Random pages travel as whole RAW windows; corrupt one in the middle
        # of channel 1's stream.
        def target(cid, f):
            return cid == 1 and f["encoding"] == pfwire.RAW and f["seq"] >= 7
        self.assert_failed_naming_the_flipped_packet(
            *self.through_relay(self.guest("random"), target, "--channels", 2, "--compress", "none"))

    def test_flipped_raw_payload_byte_sendfile(self):
        def target(cid, f):
            return f["encoding"] == pfwire.RAW and f["seq"] >= 3
        self.assert_failed_naming_the_flipped_packet(
            *self.through_relay(self.guest("random"), target, "--channels", 1, "--compress", "none",
                                "--zerocopy", "sendfile"))

    def test_flipped_sparse_payload_byte_names_the_packet(self):
        # A mixed guest's windows are SPARSE: bitmap, then the data pages.
        def target(cid, f):
            return f["encoding"] == pfwire.SPARSE and f["seq"] >= 5
        self.assert_failed_naming_the_flipped_packet(
            *self.through_relay(self.guest("mixed"), target, "--channels", 2, "--compress", "none"))

    def test_flipped_zstd_frame_byte_names_the_packet(self):
        # Checked before the inflater sees the frame: the receiver names the
        # checksum, not a decompression error.
        def target(cid, f):
            return f["encoding"] == pfwire.ZSTD and f["seq"] >= 5
        self.assert_failed_naming_the_flipped_packet(
            *self.through_relay(self.guest("text"), target, "--channels", 2, "--compress", "zstd"))

    def test_flipped_zstd_sparse_frame_byte_names_the_packet(self):
        # A mixed guest's compressed windows leave their zero pages out of
        # the frame: bitmap, then the frame, one checksum over both.
        def target(cid, f):
            return f["encoding"] == pfwire.ZSTD_SPARSE and f["seq"] >= 5
        self.assert_failed_naming_the_flipped_packet(
            *self.through_relay(self.guest("mixed"), target, "--channels", 2, "--compress", "zstd"))

    def test_version_3_receiver_refused_by_name(self):
        # A receiver of wire version 3 (no TLS: an in-band key proof)
        # answers in its version, refusing ours: the sender names the
        # version problem.
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]

        def old_receiver():
            c, _ = srv.accept()
            offer = pfwire.recv_exact(c, 64)
            reply = bytearray(pfwire.handshake(0, 0, offer[8:24], 1, version=3))
            reply[42:44] = (3).to_bytes(2, "little")  # status: PROTO_E_VERSION
            reply[60:64] = pfwire.crc32c(bytes(reply[:60])).to_bytes(4, "little")
            c.sendall(bytes(reply))
            c.close()
        threading.Thread(target=old_receiver, daemon=True).start()
        tx = pf("migrate", "--guest", self.guest("random", "16M"), "--to", f"tcp:127.0.0.1:{port}", env=self.env,
                timeout=120)
        srv.close()
        self.assertEqual(tx.returncode, 1, tx.stderr)
        self.assertIn(f"main channel to 127.0.0.1:{port}: unsupported protocol or format version: the receiver "
                      f"speaks another wire protocol version, this sender version {pfwire.VERSION}", tx.stderr)

    def test_live_flip_in_pages_the_guest_never_rewrites(self):
        # guestsim rewrites only its first 4 MiB.  A mismatch in a live round
        # may be the guest's doing (it wrote a page in flight) until the end;
        # a packet none of whose pages came again is corruption.
        ram, log = self.path("guest.ram"), self.path("guest.log")
        g = self.spawn([PF, "guestsim", "--ram", ram, "--dirty-log", log, "--size", "64M", "--rate", 16,
                        "--pattern", "hot:4"])
        self.assertEqual(g.stdout.readline().strip(), "ready")

        def target(cid, f):
            return f["round"] == 1 and f["encoding"] in (pfwire.RAW, pfwire.SPARSE) and f["first_page"] >= 2048
        code, err, tx, into = self.through_relay(ram, target, "--dirty-log", log, "--channels", 2)
        self.assert_failed_naming_the_flipped_packet(code, err, tx, into, live=True)
        self.assertIn("the guest keeps running on the source", tx.stderr)
        self.assertIsNone(g.poll())


if __name__ == "__main__":
    unittest.main(verbosity=2, warnings="ignore")
