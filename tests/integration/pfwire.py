"""A hand-rolled pageferry sender for the receiver's bad-input tests: it
speaks doc/formats.md's wire format directly, so each test can break exactly
one field.  Plain TCP: it talks to receivers without credentials (on
loopback); tests that need TLS wrap its bytes in Python's ssl."""
import os
import socket
import struct
import sys
import time

# The build under test (pftest imports it from here).
BUILD = os.environ.get("PAGEFERRY_BUILD_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../build"))
sys.path.insert(0, os.path.join(BUILD, "tools"))
import pf_abi  # noqa: E402  (generated from the C headers)

HS_MAGIC, PK_MAGIC, VERSION = pf_abi.HANDSHAKE_MAGIC, pf_abi.PACKET_MAGIC, pf_abi.WIRE_VERSION
DATA, SYNC, END, RESULT = pf_abi.PKT_DATA, pf_abi.PKT_SYNC, pf_abi.PKT_END, pf_abi.PKT_RESULT
ZERO, RAW, ZSTD, SPARSE = pf_abi.ENC_ZERO, pf_abi.ENC_RAW, pf_abi.ENC_ZSTD, pf_abi.ENC_SPARSE
ZSTD_SPARSE = pf_abi.ENC_ZSTD_SPARSE
F_ZSTD = pf_abi.F_ZSTD
# Refusals a handshake answer may carry (protocol/proto_error.h).
E_MAGIC, E_VERSION, E_SESSION, E_TLS_REQUIRED, E_BUSY = (pf_abi.E_MAGIC, pf_abi.E_VERSION, pf_abi.E_SESSION,
                                                          pf_abi.E_TLS_REQUIRED, pf_abi.E_BUSY)
PAGE = 4096


def _crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 & -(c & 1))
        t.append(c)
    return t


_T = _crc_table()


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _T[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def handshake(kind, cid, session, guest_pages, n_channels=1, features=0, page=PAGE, run=128,
              magic=HS_MAGIC, version=VERSION):
    b = struct.pack("<IHBB16sIIQHHI12x", magic, version, kind, cid, session, page, run, guest_pages,
                    n_channels, 0, features)
    return b + struct.pack("<I", crc32c(b))


def packet(ptype, enc, first, n_pages, seq, payload_len, rnd=1, payload_crc=0):
    """A 48-byte header.  payload_crc: CRC-32C of a DATA packet's page
    payload (version 3); 0 for ZERO, SYNC, END and RESULT."""
    b = struct.pack("<IBBHIIQQIII", PK_MAGIC, ptype, enc, 0, rnd, n_pages, first, seq, payload_len,
                    payload_crc, 0)
    return b + struct.pack("<I", crc32c(b))


def parse_header(h):
    """The fields of a 48-byte packet header, by name."""
    (magic, ptype, enc, flags, rnd, n_pages, first, seq, payload_len, payload_crc, _reserved,
     header_crc) = struct.unpack("<IBBHIIQQIIII", h)
    return dict(magic=magic, type=ptype, encoding=enc, round=rnd, n_pages=n_pages, first_page=first, seq=seq,
                payload_len=payload_len, payload_crc=payload_crc, header_crc=header_crc)


def end_body(packets, pages, payload, crc):
    b = struct.pack("<QQQI", packets, pages, payload, crc)
    return b + struct.pack("<I", crc32c(b))


def result_packet(status):
    """A whole RESULT packet: header, then status and its CRC."""
    body = struct.pack("<I", status)
    return packet(RESULT, 0, 0, 0, 0, 8) + body + struct.pack("<I", crc32c(body))


def read_result(s):
    """The status of the RESULT packet the receiver sends next on s."""
    f = parse_header(recv_exact(s, 48))
    assert f["type"] == RESULT and f["payload_len"] == 8, f
    body = recv_exact(s, 8)
    assert struct.unpack_from("<I", body, 4)[0] == crc32c(body[:4]), body
    return struct.unpack_from("<I", body)[0]


def reply_status(reply):
    """The status of a 64-byte handshake answer: 0 accepted, else the
    enum proto_err of the refusal."""
    return struct.unpack_from("<H", reply, 42)[0]


def connect(port, host="127.0.0.1", timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection((host, port), timeout=timeout)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


class Session:
    """Main channel plus one data channel, handshakes done."""

    def __init__(self, port, guest_pages=1024, features=0, session=None, data=True):
        """data=False: the main channel only, until open_data()."""
        self.port, self.features = port, features
        self.session = session or os.urandom(16)
        self.guest_pages = guest_pages
        self.main = connect(port)
        self.main.sendall(handshake(0, 0, self.session, guest_pages, features=features))
        self.reply = recv_exact(self.main, 64)
        if data:
            self.open_data()
        self.seq = 0
        self.crc = 0
        self.pages = 0
        self.bytes = 0

    def open_data(self):
        self.data = connect(self.port)
        self.data.sendall(handshake(1, 0, self.session, self.guest_pages, features=self.features))
        self.data_reply = recv_exact(self.data, 64)

    def send(self, enc, first, n_pages, payload=b"", payload_len=None, payload_crc=None):
        if payload_crc is None:
            payload_crc = crc32c(payload) if enc != ZERO else 0
        h = packet(DATA, enc, first, n_pages, self.seq, len(payload) if payload_len is None else payload_len,
                   payload_crc=payload_crc)
        self.data.sendall(h + payload)
        self.seq += 1
        self.crc = crc32c(h[44:48], self.crc)
        self.pages += n_pages
        self.bytes += len(payload)

    def end(self):
        self.data.sendall(packet(END, 0, 0, 0, self.seq, 32) + end_body(self.seq, self.pages, self.bytes, self.crc))

    def commit(self):
        """After end(): the handoff (doc/formats.md): the receiver's
        "prepared", our "commit", its "committed".  Both statuses."""
        prepared = read_result(self.main)
        if prepared != 0:
            return prepared, None
        self.main.sendall(result_packet(0))
        return prepared, read_result(self.main)

    def close(self):
        for s in (self.data, self.main):
            try:
                s.close()
            except OSError:
                pass
