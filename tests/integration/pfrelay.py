"""Raw connections for the TLS tests (test_tls.py): a relay between a
sender and a receiver that can record or alter what passes, a connection
that trickles one byte a second, and a check that the peer closed one."""
import select
import socket
import struct
import threading

import pfwire


class Relay:
    """A TCP relay on loopback: every connection a sender opens to
    self.port is forwarded to the receiver's port, in its own pair of
    threads.  Connections are numbered in the order they come (the writer
    opens the main channel, then the data channels, one after the other).

    record: keep every byte both ways (self.streams[i] = [to the receiver,
    to the sender]).  flip: (connection number, offset): flip one bit of
    that byte of what the sender sends on it.  flip_commit: flip one bit of
    the first bytes the sender sends on the main channel once a data
    channel exists: its RESULT, the "commit" (the handshake and offer are
    all sent before the first data channel connects)."""

    def __init__(self, receiver_port, record=False, flip=None, flip_commit=False):
        self.receiver_port, self.record, self.flip = receiver_port, record, flip
        self.flip_commit = flip_commit
        self.flipped = False
        self.streams = []
        self.socks = []
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        for s in [self.listener] + self.socks:
            try:
                s.close()
            except OSError:
                pass

    def recorded(self):
        return b"".join(bytes(s) for pair in self.streams for s in pair)

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = pfwire.connect(self.receiver_port)
            with self.lock:
                n = len(self.streams)
                self.streams.append([bytearray(), bytearray()])
                self.socks += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, n, 0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, n, 1), daemon=True).start()

    def _pipe(self, src, dst, n, direction):
        at = 0
        try:
            while True:
                chunk = src.recv(1 << 16)
                if not chunk:
                    break
                if self.flip and direction == 0 and self.flip[0] == n and at <= self.flip[1] < at + len(chunk):
                    chunk = bytearray(chunk)
                    chunk[self.flip[1] - at] ^= 0x04
                    self.flipped = True
                if self.flip_commit and (n, direction) == (0, 0) and len(self.streams) > 1 and not self.flipped:
                    chunk = bytearray(chunk)
                    chunk[len(chunk) // 2] ^= 0x04
                    self.flipped = True
                at += len(chunk)
                if self.record:
                    self.streams[n][direction] += chunk
                dst.sendall(chunk)
        except OSError:
            # One end is gone: so is the path, as the end's own close would
            # be seen without a relay (a reset, not a stall).  The shutdown
            # wakes the other direction's thread.
            for s in (src, dst):
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            return
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


class Trickle(threading.Thread):
    """A connection that sends `data` one byte a second until the receiver
    closes it: self.sent bytes had gone by then (self.closed set)."""

    def __init__(self, port, data):
        super().__init__(daemon=True)
        self.sock = pfwire.connect(port)
        self.data = data
        self.sent = 0
        self.closed = threading.Event()
        self.start()

    def run(self):
        try:
            for b in self.data:
                readable, _, _ = select.select([self.sock], [], [], 1.0)
                if readable and not self.sock.recv(4096):
                    break
                self.sock.send(bytes([b]))
                self.sent += 1
            while self.sock.recv(4096):  # it sent all: whatever comes, until the close
                pass
        except OSError:
            pass
        self.closed.set()


def closed_by_peer(sock, timeout):
    """True once the peer closed sock (read or reset), within timeout s;
    whatever it sent first is read and dropped."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
