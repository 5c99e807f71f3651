"""Small helpers of the tests that run processes on 127.0.0.1."""
import os
import socket
import time


# Ports below the kernel's ephemeral range (32768-60999 on Linux), from which bind(port 0) and every
# outgoing connection take theirs, and above the fixed ports the tests name (18xxx): each pytest-xdist
# worker scans a slice of its own, so no other worker and no client socket is given the same port.
# (With bind(port 0), the kernel once gave a stand-in's stats and client ports the same port.)
PORTS = (20000, 32000)
_NEXT = []


def _slice():
    """(first, end) of the ports of this process: its share of PORTS among the xdist workers."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    size = (PORTS[1] - PORTS[0]) // max(count, 1)
    first = PORTS[0] + (index % max(count, 1)) * size
    return first, first + size


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now: the next one of this process's slice
    that binds (in turn, so a port comes back only after the whole slice was given out)."""
    first, end = _slice()
    port = _NEXT[0] if _NEXT and first <= _NEXT[0] < end else first
    for _attempt in range(end - first):
        candidate, port = port, port + 1 if port + 1 < end else first
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        finally:
            sock.close()
        _NEXT[:] = [port]
        return candidate
    raise RuntimeError("no free loopback port in %d-%d" % (first, end - 1))


def wait_for(predicate, timeout=5.0, step=0.05):
    """The first true value of predicate(), polled every ``step`` s; its last value after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)
