#!/usr/bin/python3
"""TLS 1.3 on every migration channel, and no denial of service before
authentication (issue 14, items 1-3; doc/security.md).

- Real receivers and senders with `--psk-file` (TLS-PSK) and `--tls-creds`
  (X.509, made here with certtool: tests/integration/pfcerts.py) migrate
  bit-exact, on loopback and across a veth pair between two network
  namespaces.
- A relay on loopback between them (pfrelay.py) forwards every
  connection: flipping one byte of a data channel, or of the sender's
  "commit", fails both ends with a TLS error and commits nothing;
  recording every byte both ways finds no piece of the guest, where the
  same relay on a plain transfer finds every piece it looks for.
- Wrong, missing or mismatched credentials are refused with a message at
  the sender and a notice at the receiver, which goes on waiting: the
  right sender then gets in, or the receiver ends at --accept-timeout.
- Denial of service: idle, garbage, trickling and wrong-session
  connections, and a second sender, against one receiver; the real
  transfer completes bit-exact each time.

Raw TLS clients are Python's ssl module with the X.509 credentials (it
cannot do TLS-PSK before Python 3.13); raw plain clients are pfwire.py.
No timing is asserted: waits are bounded, and what is checked is what
happened (which connection was closed, by whom, after how many bytes)."""
import json
import os
import random
import re
import signal
import ssl
import subprocess
import sys
import shutil
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import pfcerts  # noqa: E402
import pfwire  # noqa: E402
from pfrelay import Relay, Trickle, closed_by_peer  # noqa: E402
from pftest import PF, VethWorkspace, Workspace, free_port, in_netns  # noqa: E402

SIZE = "32M"
VETH_SUBNET = "10.202.0"
# The receiver's deadline for a connection to authenticate (dest/ds_session.c).
AUTH_DEADLINE_S = 10
# What a sender adds when TLS refuses its credentials (writer/wr_net.c).
# The hints a refusal's message ends with (net/net_tls.c).
SAME_KIND = "(do both ends use the same kind of credentials, --psk-file or --tls-creds?)"
NOT_ACCEPTED = (": it did not accept our certificate (expired, not signed by its CA, or not naming the host it "
                "connected to?)")
KEYS = {}    # name -> pre-shared key file
CREDS = {}   # name -> --tls-creds directory


def setUpModule():
    """Every credential the tests use, made once: a CA with the receiver's
    and the sender's certificates, and the ones wrong in one way each."""
    work = tempfile.mkdtemp(prefix="pf-it-tls-")
    unittest.addModuleCleanup(shutil.rmtree, work, ignore_errors=True)
    ca, other = pfcerts.CA(work, "main"), pfcerts.CA(work, "other")
    server_ips = ("127.0.0.1", f"{VETH_SUBNET}.2")
    made = {
        "server": ("server", ca.issue("server", "server", ips=server_ips)),
        "client": ("client", ca.issue("client", "client")),
        "client-expired": ("client", ca.issue("expired-client", "client", validity=pfcerts.EXPIRED)),
        "client-other-ca": ("client", other.issue("client", "client")),
        "server-expired": ("server", ca.issue("expired-server", "server", ips=server_ips,
                                              validity=pfcerts.EXPIRED)),
        "server-other-ca": ("server", other.issue("server", "server", ips=server_ips)),
        "server-other-host": ("server", ca.issue("elsewhere", "server", ips=("127.0.0.2",),
                                                 dns=("elsewhere.example",))),
    }
    for name, (role, (cert, key)) in made.items():
        CREDS[name] = pfcerts.creds_dir(os.path.join(work, name), role, ca.cert, cert, key)
    for name, text in (("good", "0123456789abcdef-the-right-key\n"), ("wrong", "0123456789abcdef-the-wrong-key\n")):
        KEYS[name] = os.path.join(work, f"{name}.key")
        with open(KEYS[name], "w") as f:
            f.write(text)


PSK = lambda name="good": ["--psk-file", KEYS[name]]  # noqa: E731
X509 = lambda name: ["--tls-creds", CREDS[name]]  # noqa: E731


def notice_re(why, peer=r"127\.0\.0\.1:\d+"):
    """A receiver's notice line about a connection it refused or closed."""
    return rf"(?m)^pageferry-receive: notice: (refused|closed) (a|the) connection from {peer}: {why}$"


class TlsBase(Workspace):
    guest_size = SIZE

    def receiver(self, *creds, accept_timeout=30, netns=None, addr="127.0.0.1", port=None):
        """A receiver of a fresh destination (self.into) on self.port."""
        self.port = port or free_port()
        self.into = self.path(f"dst-{self.port}.ram")
        return self.spawn([PF, "receive", "--listen", f"{addr}:{self.port}", "--into", self.into,
                           "--accept-timeout", accept_timeout, "--workers", 1] + list(creds), ns=netns)

    def migrate(self, guest, *args, port=None, addr="127.0.0.1", netns=None, env=None):
        cmd = in_netns(netns, [PF, "migrate", "--guest", guest, "--to", f"tcp:{addr}:{port or self.port}",
                               "--channels", 2, "--workers", 1] + list(args))
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(self.env, **(env or {})))

    def assert_migrated(self, rx, r, guest):
        """Both ends succeeded and the destination is bit-exact: the
        receiver's stderr."""
        code, out, err = self.finish(rx)
        self.assertEqual((r.returncode, code), (0, 0), r.stderr + err)
        self.assertIn("totals and checksums match", out)
        self.assert_equal_ram(guest, self.into)
        self.assertFalse(os.path.exists(self.into + ".pf-partial"))
        return err

    def assert_nothing_yet(self):
        """Nothing committed while the receiver waits, and what was refused
        did not even size the copy in progress."""
        self.assertFalse(os.path.exists(self.into))
        self.assertEqual(os.path.getsize(self.into + ".pf-partial"), 0)

    def real_transfer(self, rx, *creds, guest=None):
        """The right sender, after whatever was refused: bit-exact.  The
        receiver's stderr."""
        self.assert_nothing_yet()
        guest = guest or self.guest("random")
        return self.assert_migrated(rx, self.migrate(guest, *creds), guest)

    def assert_timed_out(self, rx):
        """Nobody else came: the receiver ends at --accept-timeout, nothing
        written.  Its stderr."""
        code, _, err = self.finish(rx)
        self.assertEqual(code, 1, err)
        self.assertRegex(err.strip().splitlines()[-1],
                         r"^pageferry receive: pageferry-receive: no main channel connected within \d+ s$")
        self.assert_no_output(self.into)
        return err


class Transfers(TlsBase):
    def test_psk_and_x509_bit_exact(self):
        guest = self.guest("mixed")
        for kind, rx_creds, tx_creds in (("psk", PSK(), PSK()), ("x509", X509("server"), X509("client"))):
            for compress in ("none", "zstd"):
                with self.subTest(kind=kind, compress=compress):
                    rx = self.receiver(*rx_creds)
                    r = self.migrate(guest, "--compress", compress, "--json", *tx_creds)
                    self.assert_migrated(rx, r, guest)
                    s = json.loads(r.stdout)
                    self.assertEqual(s["tls"], kind)
                    self.assertFalse(s["zerocopy"]["sendfile"] or s["zerocopy"]["active"])

    def test_summary_says_tls(self):
        guest = self.guest("random", "16M")
        for rx_creds, tx_creds, text in ((PSK(), PSK(), "TLS 1.3 with a pre-shared key"),
                                         (X509("server"), X509("client"), "TLS 1.3 with X.509 certificates")):
            with self.subTest(text=text):
                rx = self.receiver(*rx_creds)
                r = self.migrate(guest, *tx_creds)
                self.assert_migrated(rx, r, guest)
                self.assertIn(f"; {text}; the destination committed it", r.stdout)
                self.assertNotIn("not encrypted", r.stdout)
        # And the plain path says it is not.
        rx = self.receiver()
        r = self.migrate(guest)
        self.assert_migrated(rx, r, guest)
        self.assertIn("; not encrypted, zerocopy ", r.stdout)

    def test_receiver_killed_mid_transfer(self):
        # Stopped first, so that the sender is blocked in a send with full
        # socket buffers when the receiver's sockets go: what it says is
        # the reset, as on the plain path (test_migrate.py), and nothing is
        # committed.
        guest = self.guest("random", "128M")
        rx = self.receiver(*PSK())
        stage = self.wait_child(rx, "pageferry-receive")
        tx = self.spawn([PF, "migrate", "--guest", guest, "--to", f"tcp:127.0.0.1:{self.port}", "--channels", 2]
                        + PSK())
        deadline = time.monotonic() + 60
        while os.path.getsize(self.into + ".pf-partial") == 0:  # sized: the sender is in
            self.assertLess(time.monotonic(), deadline, "the sender never got in")
            time.sleep(0.02)
        os.kill(stage, signal.SIGSTOP)
        time.sleep(1.0)
        os.killpg(rx.pid, signal.SIGKILL)
        code, _, err = self.finish(tx)
        self.assertEqual(code, 1, err)
        self.assertRegex(err.strip(), r"^pageferry migrate: pageferry-writer: sending to the receiver: "
                                      r"(Connection reset by peer|Broken pipe)$")
        self.assertFalse(os.path.exists(self.into))

    def test_zerocopy_on_refused_with_tls(self):
        r = self.migrate(self.guest("zero", "4M"), "--zerocopy", "on", *PSK(), port=free_port())
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("--zerocopy on cannot be used with TLS: the pages are encrypted in user space", r.stderr)


class Veth(VethWorkspace, TlsBase):
    """X.509 between two network namespaces: the receiver's certificate
    names its 10.x address, which is what the sender checks."""

    veth_name, veth_subnet = "t", VETH_SUBNET

    def test_x509_across_veth(self):
        guest = self.guest("mixed")
        rx = self.receiver(*X509("server"), netns=self.veth.ns[1], addr=self.veth.addr[1])
        r = self.migrate(guest, *X509("client"), "--compress", "zstd", netns=self.veth.ns[0], addr=self.veth.addr[1])
        self.assert_migrated(rx, r, guest)
        self.assertIn("TLS 1.3 with X.509 certificates", r.stdout)


class Relays(TlsBase):
    def through_relay(self, guest, rx_creds, tx_creds, **relay_args):
        rx = self.receiver(*rx_creds)
        relay = Relay(self.port, **relay_args)
        self.addCleanup(relay.close)
        r = self.migrate(guest, *tx_creds, port=relay.port)
        return rx, r, relay

    def test_flipped_byte_fails_both_ends(self):
        guest = self.guest("random")
        for kind, rx_creds, tx_creds in (("psk", PSK(), PSK()), ("x509", X509("server"), X509("client"))):
            with self.subTest(kind=kind):
                # Connection 1 is data channel 0; 1 MiB in is the middle
                # of its pages (16 MiB of them).
                rx, r, relay = self.through_relay(guest, rx_creds, tx_creds, flip=(1, 1 << 20))
                code, _, err = self.finish(rx)
                self.assertTrue(relay.flipped, "the relay never saw the byte to flip")
                self.assertEqual(code, 1, err)
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertRegex(err, r"^pageferry receive: pageferry-receive: data channel 0: receiving [a-z ]+: "
                                      r"TLS: .+")
                self.assert_sender_told(r)
                self.assert_no_output(self.into)

    def assert_sender_told(self, r):
        """The sender failed with the receiver's refusal or a TLS error of
        its own: not a dead link, not a bare reset."""
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertRegex(r.stderr.strip(), r"^pageferry migrate: pageferry-writer: (the receiver refused the "
                                           r"transfer: a TLS record did not authenticate \(the stream was altered "
                                           r"in transit\)|.*TLS: .+)$")

    def test_flipped_commit_commits_nothing(self):
        # The last word, the sender's "commit", altered: the receiver cannot
        # read it and commits nothing. The sender cannot tell that from an
        # answer altered after a commit: the outcome is unknown to it (exit 4,
        # doc/architecture.md "The handoff"), so it keeps the guest stopped.
        guest = self.guest("random", "16M")
        rx, r, relay = self.through_relay(guest, PSK(), PSK(), flip_commit=True)
        code, _, err = self.finish(rx)
        self.assertTrue(relay.flipped)
        self.assertEqual(code, 1, err)
        self.assertRegex(err.strip(), r"^pageferry receive: pageferry-receive: main channel: TLS: .+$")
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn("its answer never came", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertRegex(r.stderr, r"TLS")
        self.assert_no_output(self.into)

    def samples(self, guest, pages=200, per_page=3, width=64):
        """width-byte pieces of the guest at random places of random pages."""
        rnd = random.Random(14)
        with open(guest, "rb") as f:
            data = f.read()
        out = []
        for page in rnd.sample(range(len(data) // 4096), pages):
            for _ in range(per_page):
                at = page * 4096 + rnd.randrange(4096 - width)
                out.append(data[at:at + width])
        return out

    def test_recording_holds_no_guest_page(self):
        guest = self.guest("random")
        pieces = self.samples(guest)
        for kind, rx_creds, tx_creds in (("psk", PSK(), PSK()), ("x509", X509("server"), X509("client")),
                                         ("plain", [], [])):
            with self.subTest(kind=kind):
                rx, r, relay = self.through_relay(guest, rx_creds, tx_creds, record=True)
                self.assert_migrated(rx, r, guest)
                recording = relay.recorded()
                self.assertGreater(len(recording), os.path.getsize(guest))
                found = sum(p in recording for p in pieces)
                if kind == "plain":
                    # The control: the same relay and search find the pages
                    # of a transfer that is not encrypted.
                    self.assertEqual(found, len(pieces))
                else:
                    self.assertEqual(found, 0, f"{found} pieces of the guest travelled in the clear")


class Refusals(TlsBase):
    """Each credential problem: the sender fails with a message saying
    what, the receiver logs a notice and keeps waiting, nothing is
    committed."""

    def refused(self, rx_creds, tx_creds, sender_says, notice_says, accept_timeout=30):
        """A receiver with rx_creds refuses a sender with tx_creds: the
        sender's one line matches sender_says, the receiver's notice
        notice_says.  The receiver, still running."""
        rx = self.receiver(*rx_creds, accept_timeout=accept_timeout)
        r = self.migrate(self.guest("random", "16M"), *tx_creds)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertRegex(r.stderr, sender_says)
        self.assertIsNone(rx.poll())
        self.assert_nothing_yet()
        self.rx_notice = notice_says
        return rx

    def then_the_right_sender(self, rx, *creds):
        err = self.real_transfer(rx, *creds)
        self.assertRegex(err, notice_re(self.rx_notice))

    def then_timeout(self, rx):
        self.assertRegex(self.assert_timed_out(rx), notice_re(self.rx_notice))

    def test_wrong_psk(self):
        rx = self.refused(PSK(), PSK("wrong"), r"main channel to 127\.0\.0\.1:\d+: TLS handshake: the peer refused "
                          r"with the alert \"Illegal parameter\": the pre-shared keys differ \(--psk-file\)$",
                          r"TLS handshake: .+" + re.escape("(the peer's pre-shared key differs from this one, --psk-file)"))
        self.then_the_right_sender(rx, *PSK())

    def test_plain_sender_to_tls_receivers(self):
        for kind, rx_creds, tx_creds in (("psk", PSK(), PSK()), ("x509", X509("server"), X509("client"))):
            with self.subTest(kind=kind):
                rx = self.refused(rx_creds, [], r"main channel to 127\.0\.0\.1:\d+: the receiver refused it: the "
                                  r"receiver requires TLS: give the sender the same --psk-file or --tls-creds$",
                                  r"it does not use TLS, and this receiver requires it")
                self.then_the_right_sender(rx, *tx_creds)

    def test_tls_sender_to_a_plain_receiver(self):
        for kind, tx_creds in (("psk", PSK()), ("x509", X509("client"))):
            with self.subTest(kind=kind):
                rx = self.refused([], tx_creds, r"TLS handshake on main channel to 127\.0\.0\.1:\d+ \(the receiver "
                                  r"closed the connection: it serves another sender, or it does not use TLS with the "
                                  r"same kind of credentials\)",
                                  re.escape("it speaks TLS, but this receiver was started without credentials "
                                            "(--psk-file or --tls-creds)"))
                self.then_the_right_sender(rx)

    def test_psk_sender_to_an_x509_receiver_and_back(self):
        rx = self.refused(X509("server"), PSK(), r"main channel to 127\.0\.0\.1:\d+: TLS handshake: .+"
                          + re.escape(SAME_KIND), r"TLS handshake: .+")
        self.then_the_right_sender(rx, *X509("client"))
        rx = self.refused(PSK(), X509("client"), r"main channel to 127\.0\.0\.1:\d+: TLS handshake: .+"
                          + re.escape(SAME_KIND), r"TLS handshake: .+")
        self.then_the_right_sender(rx, *PSK())

    def test_expired_client_certificate(self):
        rx = self.refused(X509("server"), X509("client-expired"), r"main channel to 127\.0\.0\.1:\d+: TLS: the peer "
                          r"refused with the alert \"[^\"]+\"" + re.escape(NOT_ACCEPTED) + "$",
                          r"TLS handshake: the peer's certificate was refused: .*expired.*")
        self.then_the_right_sender(rx, *X509("client"))

    def test_client_certificate_from_another_ca(self):
        # GnuTLS does not even offer a certificate the receiver's CA list
        # does not cover: the receiver sees none.
        rx = self.refused(X509("server"), X509("client-other-ca"), r"main channel to 127\.0\.0\.1:\d+: TLS: the peer "
                          r"refused with the alert \"Certificate is required\"",
                          r"TLS handshake: Certificate is required\. \(the peer sent no certificate signed by this "
                          r"end's CA, ca-cert\.pem\)")
        self.then_the_right_sender(rx, *X509("client"))

    def test_expired_receiver_certificate(self):
        rx = self.refused(X509("server-expired"), X509("client"), r"main channel to 127\.0\.0\.1:\d+: TLS handshake: "
                          r"the peer's certificate was refused: .*expired.*",
                          r"TLS handshake: the peer refused with the alert \"[^\"]+\"" + re.escape(NOT_ACCEPTED),
                          accept_timeout=3)
        self.then_timeout(rx)

    def test_receiver_certificate_from_another_ca(self):
        rx = self.refused(X509("server-other-ca"), X509("client"), r"main channel to 127\.0\.0\.1:\d+: TLS "
                          r"handshake: the peer's certificate was refused: .*issuer is unknown",
                          r"TLS handshake: .+", accept_timeout=3)
        self.then_timeout(rx)

    def test_receiver_certificate_naming_another_host(self):
        rx = self.refused(X509("server-other-host"), X509("client"), r"main channel to 127\.0\.0\.1:\d+: TLS "
                          r"handshake: the peer's certificate was refused: .*name in the certificate does not match",
                          r"TLS handshake: the peer refused with the alert \"[^\"]+\"" + re.escape(NOT_ACCEPTED),
                          accept_timeout=3)
        self.then_timeout(rx)

    def test_missing_credential_file_named(self):
        # The front end checks the layout before anything starts.
        partial = os.path.join(self.shm, "creds")
        os.makedirs(partial)
        shutil.copy(os.path.join(CREDS["server"], "ca-cert.pem"), partial)
        into = self.path("never.ram")
        r = subprocess.run([PF, "receive", "--listen", f"127.0.0.1:{free_port()}", "--into", into,
                            "--tls-creds", partial], capture_output=True, text=True, timeout=60, env=self.env)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"--tls-creds {partial}: {partial}/server-cert.pem: No such file or directory", r.stderr)
        self.assert_no_output(into)


class DenialOfService(TlsBase):
    """Nothing unauthenticated ends or stalls the real transfer (TLS-PSK
    receivers unless a raw TLS client is needed)."""

    def connections(self, n):
        socks = [pfwire.connect(self.port) for _ in range(n)]
        self.addCleanup(lambda: [s.close() for s in socks])
        return socks

    def test_100_idle_connections_held_open(self):
        rx = self.receiver(*PSK())
        idle = self.connections(100)
        self.real_transfer(rx, *PSK())
        # Still not one byte from them: closed when the receive was done.
        self.assertTrue(all(closed_by_peer(s, 30) for s in idle))

    def test_more_idle_connections_than_may_wait(self):
        # 150 > 128: the oldest 22 are closed to make room; the real sender,
        # newest, gets in.
        rx = self.receiver(*PSK())
        idle = self.connections(150)
        self.assertTrue(all(closed_by_peer(s, 30) for s in idle[:22]))
        err = self.real_transfer(rx, *PSK())
        for port in (s.getsockname()[1] for s in idle[:22]):
            self.assertRegex(err, notice_re("128 connections are waiting to authenticate, the most allowed",
                                            rf"127\.0\.0\.1:{port}"))

    def test_garbage_connections(self):
        rx = self.receiver(*PSK())
        rnd = random.Random(3)
        socks = self.connections(20)
        for k, s in enumerate(socks):
            junk = bytes(rnd.randrange(256) for _ in range(300))
            if k % 2 == 0:
                # Anything but a TLS record, or a plain offer, at first.
                s.sendall(bytes([rnd.choice([b for b in range(256) if b not in (0x16, ord("P"))])]) + junk)
            elif k % 4 == 1:
                s.sendall(b"\x16" + junk)  # looks like TLS for one byte
            else:
                # A handshake record holding a ClientHello of the right
                # length, nonsense inside.
                hello = b"\x01" + len(junk).to_bytes(3, "big") + junk
                s.sendall(b"\x16\x03\x01" + len(hello).to_bytes(2, "big") + hello)
        # Each is refused (or, were it to wait, closed at its deadline).
        for s in socks:
            self.assertTrue(closed_by_peer(s, AUTH_DEADLINE_S + 20))
        err = self.real_transfer(rx, *PSK())
        for k, s in enumerate(socks):
            why = "not a TLS handshake" if k % 2 == 0 else "TLS handshake: .+"
            self.assertRegex(err, notice_re(why, rf"127\.0\.0\.1:{s.getsockname()[1]}"))

    def test_notices_are_counted_past_50(self):
        # A flood is not logged line by line: 50 notices, then one count.
        rx = self.receiver(*PSK())
        socks = self.connections(60)
        for s in socks:
            s.sendall(b"\x00garbage")
        for s in socks:
            self.assertTrue(closed_by_peer(s, AUTH_DEADLINE_S + 20))
        err = self.real_transfer(rx, *PSK())
        notices = [line for line in err.splitlines() if ": notice: " in line]
        self.assertEqual(len(notices), 51, err)
        self.assertEqual(len(re.findall(notice_re("not a TLS handshake"), err)), 50, err)
        self.assertEqual(notices[-1], "pageferry-receive: notice: 10 more connections were refused or closed (not "
                                      "logged one by one)")

    def test_notices_are_counted_when_no_sender_comes(self):
        # The count is not lost when the receive ends at --accept-timeout.
        rx = self.receiver(*PSK(), accept_timeout=3)
        socks = self.connections(55)
        for s in socks:
            s.sendall(b"\x00garbage")
        err = self.assert_timed_out(rx)
        self.assertEqual(len(re.findall(notice_re("not a TLS handshake"), err)), 50, err)
        self.assertIn("pageferry-receive: notice: 5 more connections were refused or closed (not logged one by "
                      "one)\n", err)

    def test_one_byte_a_second_does_not_hold_the_receiver(self):
        # The real sender comes right after, while the trickle goes on.
        rx = self.receiver(*PSK())
        t = Trickle(self.port, b"\x16\x03\x01\x02\x00" + bytes(512))
        self.addCleanup(t.sock.close)
        self.real_transfer(rx, *PSK())
        self.assertTrue(t.closed.wait(30))
        self.assertLess(t.sent, 5 + 512)

    def test_trickle_closed_at_its_deadline_not_renewed_by_bytes(self):
        # A well-formed offer, one byte a second: the deadline from its
        # accept closes it long before the 64th byte, and the receiver
        # goes on to take the real sender.
        rx = self.receiver()
        t = Trickle(self.port, pfwire.handshake(0, 0, os.urandom(16), 4096))
        self.addCleanup(t.sock.close)
        self.assertTrue(t.closed.wait(AUTH_DEADLINE_S + 40), "the trickle was never closed")
        self.assertLess(t.sent, 64)
        self.assertIsNone(rx.poll())
        err = self.real_transfer(rx)
        self.assertRegex(err, notice_re(f"it did not authenticate within {AUTH_DEADLINE_S} s",
                                        rf"127\.0\.0\.1:{t.sock.getsockname()[1]}"))

    def test_two_senders_racing(self):
        # Both start together and crawl (20 ms a run), so that both are
        # connecting while the other is: one wins, the other is told why.
        rx = self.receiver(*PSK())
        guests = [self.guest("random"), self.guest("text")]
        txs = [self.spawn([PF, "migrate", "--guest", g, "--to", f"tcp:127.0.0.1:{self.port}", "--channels", 2,
                           "--workers", 1] + PSK(), env={"PAGEFERRY_TEST_HOOK": "worker:crawl"}) for g in guests]
        results = [self.finish(tx) for tx in txs]
        codes = sorted(code for code, _, _ in results)
        self.assertEqual(codes, [0, 1], results)
        winner = [code for code, _, _ in results].index(0)
        loser_err = results[1 - winner][2]
        self.assertEqual(len(loser_err.strip().splitlines()), 1, loser_err)
        # During the winner's set-up the loser is refused as busy; once the
        # winner's channels are all in, the receiver has stopped listening
        # (doc/security.md), and a connection still in its accept queue
        # then is closed, at whatever step of its set-up it is: which one
        # the loser meets depends on timing.
        busy = "another sender's migration to this receiver is under way"
        closed = r" \(the receiver closed the connection: it serves another sender"
        self.assertRegex(loser_err, r"(main channel to 127\.0\.0\.1:\d+: the receiver refused it: " + re.escape(busy)
                         + r"|connect 127\.0\.0\.1:\d+: Connection refused"
                         + r"|connect 127\.0\.0\.1:\d+" + closed + r"\): Connection reset by peer"
                         + r"|TLS handshake on main channel to 127\.0\.0\.1:\d+" + closed
                         + r", or it does not use TLS with the same kind of credentials\): "
                         + r"(Broken pipe|Connection reset by peer)"
                         + r"|handshake on main channel to 127\.0\.0\.1:\d+" + closed + r"\): "
                         + r"(Broken pipe|Connection reset by peer))$")
        code, _, err = self.finish(rx)
        self.assertEqual(code, 0, err)
        if "refused it" in loser_err:
            self.assertRegex(err, notice_re(busy))
        self.assert_equal_ram(guests[winner], self.into)

    def tls_client(self, creds="client"):
        """A raw TLS connection to the receiver with X.509 credentials."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(os.path.join(CREDS[creds], "ca-cert.pem"))
        ctx.load_cert_chain(os.path.join(CREDS[creds], "client-cert.pem"),
                            os.path.join(CREDS[creds], "client-key.pem"))
        s = ctx.wrap_socket(pfwire.connect(self.port), server_hostname="127.0.0.1")
        self.addCleanup(s.close)
        return s

    def test_authenticated_but_wrong_offers_over_tls(self):
        # Past TLS, our handshake still decides: a bad magic is refused at
        # once, a data channel of another session once the real main
        # channel has come (until then it waits for one); both read the
        # refusal inside TLS, and the real transfer goes on.
        rx = self.receiver(*X509("server"))
        bad = self.tls_client()
        bad.sendall(pfwire.handshake(0, 0, os.urandom(16), 4096, magic=0x12345678))
        self.assertEqual(pfwire.reply_status(pfwire.recv_exact(bad, 64)), pfwire.E_MAGIC)
        stranger = self.tls_client()
        stranger.sendall(pfwire.handshake(1, 0, os.urandom(16), 4096))
        # The receiver has taken it in by the time this answer comes.
        probe = self.tls_client()
        probe.sendall(pfwire.handshake(0, 0, os.urandom(16), 4096, version=3))
        self.assertEqual(pfwire.reply_status(pfwire.recv_exact(probe, 64)), pfwire.E_VERSION)
        guest = self.guest("random")
        tx = self.spawn([PF, "migrate", "--guest", guest, "--to", f"tcp:127.0.0.1:{self.port}", "--channels", 2,
                         "--workers", 1] + X509("client"))
        self.assertEqual(pfwire.reply_status(pfwire.recv_exact(stranger, 64)), pfwire.E_SESSION)
        code, _, tx_err = self.finish(tx)
        self.assertEqual(code, 0, tx_err)
        err = self.assert_migrated(rx, subprocess.CompletedProcess([], 0, "", tx_err), guest)
        self.assertRegex(err, notice_re("bad magic: not a pageferry message"))
        self.assertRegex(err, notice_re("session id does not match this transfer"))


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("SKIP: network namespaces need root")
        sys.exit(77)
    if not shutil.which("certtool"):
        print("SKIP: certtool (gnutls-bin) is not installed")
        sys.exit(77)
    unittest.main(verbosity=2, warnings="ignore")
