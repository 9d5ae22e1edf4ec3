"""X.509 credentials for the TLS tests, made with certtool (gnutls-bin) in
a directory of the test's own, and laid out as `--tls-creds DIR` expects
(QEMU's tls-creds-x509 layout): ca-cert.pem, server-cert.pem and
server-key.pem for a receiver, client-cert.pem and client-key.pem for a
sender.

Decisions:
- ECDSA P-256 keys: generated in milliseconds, where RSA keys would cost
  the suite seconds.
- A certificate that is wrong in exactly one way (expired, from another
  CA, naming another host) is made by the same code as a good one, with
  one template line changed, so a refusal can only be about that line."""
import os
import subprocess

# Far in the past, for a certificate that expired long ago.
EXPIRED = ('activation_date = "2001-01-01 00:00:00"', 'expiration_date = "2001-02-01 00:00:00"')


def _certtool(*args):
    subprocess.run(["certtool"] + [str(a) for a in args], check=True, capture_output=True, text=True)


def _key(path):
    _certtool("--generate-privkey", "--key-type", "ecdsa", "--curve", "secp256r1", "--outfile", path)
    return path


class CA:
    """A certificate authority of its own: cert and key in workdir/name-*."""

    def __init__(self, workdir, name):
        self.workdir, self.name = workdir, name
        self.key = _key(os.path.join(workdir, f"{name}-ca-key.pem"))
        self.cert = os.path.join(workdir, f"{name}-ca-cert.pem")
        template = self._template(f"{name} test CA", ["ca", "cert_signing_key", "expiration_days = 30"])
        _certtool("--generate-self-signed", "--load-privkey", self.key, "--template", template,
                  "--outfile", self.cert)

    def _template(self, cn, lines):
        path = os.path.join(self.workdir, f"{cn.replace(' ', '_')}.tmpl")
        with open(path, "w") as f:
            f.write(f'cn = "{cn}"\n' + "".join(line + "\n" for line in lines))
        return path

    def issue(self, cn, role, ips=(), dns=(), validity=("expiration_days = 30",)):
        """(cert, key) signed by this CA.  role: "server" (TLS server use)
        or "client"; ips, dns: the names a server certificate carries."""
        key = _key(os.path.join(self.workdir, f"{self.name}-{cn}-key.pem"))
        cert = os.path.join(self.workdir, f"{self.name}-{cn}-cert.pem")
        lines = [f'ip_address = "{ip}"' for ip in ips] + [f'dns_name = "{d}"' for d in dns]
        lines += ["tls_www_server" if role == "server" else "tls_www_client", "signing_key", "encryption_key"]
        lines += list(validity)
        _certtool("--generate-certificate", "--load-privkey", key, "--load-ca-certificate", self.cert,
                  "--load-ca-privkey", self.key, "--template", self._template(f"{self.name} {cn}", lines),
                  "--outfile", cert)
        return cert, key


def creds_dir(path, role, ca_cert, cert, key):
    """A --tls-creds directory at path for role ("server" or "client"):
    the CA this end trusts, and this end's own certificate and key."""
    os.makedirs(path)
    for name, src in (("ca-cert.pem", ca_cert), (f"{role}-cert.pem", cert), (f"{role}-key.pem", key)):
        with open(src, "rb") as f, open(os.path.join(path, name), "wb") as g:
            g.write(f.read())
    return path
