"""A TCP port for a benchmark's listener: chosen at random below the
kernel's ephemeral range (the outgoing connections of the runs before, in
TIME_WAIT or still open, hold ports inside it) and free when chosen."""
import random
import socket


def free_port():
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    for _ in range(100):
        port = random.randint(10000, low - 1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free TCP port found between 10000 and {low - 1}")
