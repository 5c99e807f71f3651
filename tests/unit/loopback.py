"""Small helpers of the tests that run processes on 127.0.0.1."""
import collections
import fcntl
import os
import random
import socket
import tempfile
import time


# Ports below the kernel's ephemeral range (32768-60999 on Linux), from which bind(port 0) and every
# outgoing connection take theirs, and above the fixed ports the tests name (18xxx).
PORTS = (20000, 32000)
# A port given out is locked (flock on a file of its own here) until this process gave out KEEP more or
# ended: no other test process on the machine (xdist workers, a second pytest run at once: make test
# runs the unit tests on two ansible-core releases side by side) is given it meanwhile. With
# bind(port 0), the kernel once gave a stand-in's stats and client ports the same port.
LOCK_DIR = os.path.join(tempfile.gettempdir(), "mtproxy-cutover-test-ports-%d" % os.getuid())
KEEP = 64
_HELD = collections.deque()
_RANDOM = random.SystemRandom()


def _bindable(port):
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now and no other test process was given
    lately (see LOCK_DIR), from a random place of PORTS on."""
    if not os.path.isdir(LOCK_DIR):
        os.makedirs(LOCK_DIR, exist_ok=True)
    span = PORTS[1] - PORTS[0]
    start = _RANDOM.randrange(span)
    for offset in range(span):
        port = PORTS[0] + (start + offset) % span
        try:
            handle = os.open(os.path.join(LOCK_DIR, str(port)), os.O_CREAT | os.O_RDWR, 0o600)
        except OSError:
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(handle)
            continue
        if not _bindable(port):
            os.close(handle)
            continue
        _HELD.append(handle)
        while len(_HELD) > KEEP:
            os.close(_HELD.popleft())
        return port
    raise RuntimeError("no free loopback port in %d-%d" % (PORTS[0], PORTS[1] - 1))


def wait_for(predicate, timeout=5.0, step=0.05):
    """The first true value of predicate(), polled every ``step`` s; its last value after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)
