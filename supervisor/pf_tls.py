"""Who may take part in a migration (doc/security.md): the credentials the
network stages get, and the safe default that refuses to talk to or listen
on anything but loopback without them."""
import os
import socket

import pf_jobs
from pf_jobs import JobError

# QEMU's tls-creds-x509 layout: each end needs the CA and its own pair.
X509_FILES = {"client": ("ca-cert.pem", "client-cert.pem", "client-key.pem"),
              "server": ("ca-cert.pem", "server-cert.pem", "server-key.pem")}


def split_hostport(hostport):
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), port


IPV6_LOOPBACK = bytes(15) + b"\1"


def _addresses(host):
    """[(family, address)] that host names. A numeric address is itself: the
    resolver (and the idna codec it would load) is only asked about names."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return [(family, host)]
        except (OSError, ValueError):
            pass
    return [(ai[0], ai[4][0]) for ai in socket.getaddrinfo(host or None, None)]


def _is_loopback(family, address):
    """127.0.0.0/8 or ::1 (what ipaddress calls loopback), without importing
    ipaddress: it alone costs more start-up than this whole module."""
    if family == socket.AF_INET:
        return socket.inet_pton(family, address)[0] == 127
    if family == socket.AF_INET6:
        return socket.inet_pton(family, address.split("%")[0]) == IPV6_LOOPBACK
    return False


def only_loopback(host):
    """Does host name only loopback addresses? A name that does not resolve
    counts as not: the check fails closed."""
    try:
        infos = _addresses(host)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(_is_loopback(family, address) for family, address in infos)


def require_authentication(what, hostport, has_creds, insecure, refusal):
    """Safe default: off loopback, nothing moves without TLS credentials
    unless the user says --insecure."""
    host, _ = split_hostport(hostport)
    if has_creds or insecure or only_loopback(host):
        return
    raise JobError(f"{what} {hostport}: {refusal} is not loopback and neither --psk-file nor --tls-creds was "
                   "given: anyone who can reach it could take part in the migration and read the guest's "
                   "memory. Give --psk-file FILE (the same key on both hosts) or --tls-creds DIR, or "
                   "--insecure on a network you trust completely", 2)


def credentials(run, psk_file, tls_creds, role):
    """(mode, fd) for the stage: ("none", None), ("psk", key file) or
    ("x509", directory), the fd kept open in run until it ends."""
    if psk_file and tls_creds:
        raise JobError("--psk-file and --tls-creds: give one of them", 2)
    if psk_file:
        fd = pf_jobs._open(psk_file, os.O_RDONLY, "open pre-shared key file")
        run.fds.append(fd)
        return "psk", fd
    if not tls_creds:
        return "none", None
    fd = pf_jobs._open(tls_creds, os.O_RDONLY | os.O_DIRECTORY, "open --tls-creds directory")
    run.fds.append(fd)
    for name in X509_FILES[role]:
        try:
            os.close(os.open(name, os.O_RDONLY, dir_fd=fd))
        except OSError as e:
            raise JobError(f"--tls-creds {tls_creds}: {os.path.join(tls_creds, name)}: {e.strerror} (this end, "
                           f"the {role}, needs {', '.join(X509_FILES[role])})", 1)
    return "x509", fd
