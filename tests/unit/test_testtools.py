"""The test backend and the test client, run for real on 127.0.0.1 against the protocol peers
built from tests/standin/mtproxy_wire.py: a C-proxy-side RpcSession, Go-port frames, and a small
obfuscated2 server made from accept_handshake."""
import importlib.util
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from loopback import free_port, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
STANDIN_DIR = os.path.join(os.path.dirname(HERE), "standin")
TESTCLIENT = os.path.join(STANDIN_DIR, "mtproxy_testclient.py")
TESTBACKEND = os.path.join(STANDIN_DIR, "mtproxy_testbackend.py")
SECRET = "00112233445566778899aabbccddeeff"
OTHER_SECRET = "ffeeddccbbaa99887766554433221100"
AES_PWD = bytes(range(7, 7 + 128))

if STANDIN_DIR not in sys.path:
    sys.path.insert(0, STANDIN_DIR)
import mtproxy_wire as wire  # noqa: E402


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


testbackend = load(TESTBACKEND, "mtproxy_testbackend")
testclient = load(TESTCLIENT, "mtproxy_testclient")


def recv_exactly(sock, size, timeout=3.0):
    sock.settimeout(timeout)
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def closed_by_peer(sock, timeout=3.0):
    """True when the peer closed (EOF or reset) within timeout; reads and drops any data."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
    return False


def silent(sock, seconds):
    readable, _w, _x = select.select([sock], [], [], seconds)
    return not readable


# ---------------------------------------------------------------- the backend process

class Backend(object):
    """mtproxy_testbackend.py on one port with a --stats-file; summary() stops it."""

    def __init__(self, tmp_path, *extra, port=None):
        self.port = port or free_port()
        self.stats_path = str(tmp_path / ("backend-%d.json" % self.port))
        self.err_path = str(tmp_path / ("backend-%d.stderr" % self.port))
        args = [sys.executable, TESTBACKEND, "--port", str(self.port), "--max-seconds", "60",
                "--stats-file", self.stats_path] + list(extra)
        with open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err)
        self.ready = json.loads(self.proc.stdout.readline().decode() or "null")

    def stats(self):
        try:
            with open(self.stats_path) as handle:
                return json.load(handle)
        except (IOError, OSError, ValueError):
            return None

    def stats_when(self, predicate, timeout=5.0):
        def matching():
            current = self.stats()
            return current if current and predicate(current) else None
        return wait_for(matching, timeout)

    def stderr(self):
        with open(self.err_path) as handle:
            return handle.read()

    def summary(self):
        self.proc.send_signal(signal.SIGTERM)
        out, _err = self.proc.communicate(timeout=10)
        return json.loads(out.decode().splitlines()[-1])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


@pytest.fixture
def backends(tmp_path):
    started = []

    def start(*extra, **kwargs):
        backend = Backend(tmp_path, *extra, **kwargs)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.kill()


@pytest.fixture
def aes_pwd(tmp_path):
    path = tmp_path / "aes-pwd"
    path.write_bytes(AES_PWD)
    return str(path)


# ---------------------------------------------------------------- a C-proxy-side RPC peer

def rpc_open(port, secret=AES_PWD, timeout=3.0):
    """Connect as the C proxy does and finish the RPC handshake: (socket, session)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    session = wire.RpcSession("proxy", sock.getsockname(), sock.getpeername(), secret)
    sock.sendall(session.start())
    deadline = time.monotonic() + timeout
    while not session.ready and time.monotonic() < deadline:
        data = sock.recv(65536)
        assert data, "the backend closed during the handshake"
        out, messages = session.feed(data)
        assert messages == []
        sock.sendall(out)
    assert session.ready
    return sock, session


def rpc_read(sock, session, count, timeout=3.0):
    messages = []
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while len(messages) < count and time.monotonic() < deadline:
        data = sock.recv(65536)
        assert data, "the backend closed the RPC connection"
        out, got = session.feed(data)
        assert out == b""
        messages += got
    return messages


def test_testbackend_answers_rpc_proxy_req_with_ans_and_ping_with_pong(backends, aes_pwd):
    backend = backends("--aes-pwd", aes_pwd)
    sock, session = rpc_open(backend.port)
    try:
        packets = [wire.req_pq_multi(), wire.req_pq_multi() + b"\0" * 4]
        ids = [0x40000C, 0x80000D]
        data = b"".join(session.send(wire.proxy_req(conn_id, ("127.0.0.1", 40000 + n), ("127.0.0.1", 443), packet))
                        for n, (conn_id, packet) in enumerate(zip(ids, packets)))
        data += session.send(struct.pack("<I", wire.RPC_PING) + b"pingid!!")
        sock.sendall(data)
        answers = rpc_read(sock, session, 3)
        assert [wire.op_of(m) for m in answers] == [wire.RPC_PROXY_ANS, wire.RPC_PROXY_ANS, wire.RPC_PONG]
        for answer, conn_id, packet in zip(answers, ids, packets):
            assert struct.unpack("<IiQ", answer[:16]) == (wire.RPC_PROXY_ANS, 0, conn_id)
            assert answer[16:] == packet
        assert answers[2] == struct.pack("<I", wire.RPC_PONG) + b"pingid!!"
        # a proxy-tag REQ (flags 0x8: extra section) is answered with the packet only
        tagged = wire.proxy_req(7, ("127.0.0.1", 1), ("127.0.0.1", 443), b"")[:56]
        tagged = tagged[:4] + struct.pack("<i", 0x2002100A) + tagged[8:]
        extra = struct.pack("<I", 0xDB1E26AE) + b"\x10" + b"T" * 16 + b"\0" * 3
        sock.sendall(session.send(tagged + struct.pack("<i", len(extra)) + extra + packets[0]))
        sock.sendall(session.send(wire.close_conn(0x40000C)))
        (tag_answer,) = rpc_read(sock, session, 1)
        assert tag_answer == wire.proxy_ans(7, packets[0])
        assert backend.stats_when(lambda s: s["rpc_close_conn"] == 1), backend.stats()
        assert silent(sock, 0.2), "the backend sent something unasked"
    finally:
        sock.close()
    summary = backend.summary()
    want = {"rpc_connections": 1, "rpc_ready": 1, "rpc_queries": 3, "rpc_answers": 3, "rpc_close_conn": 1,
            "go_connections": 0, "go_frames": 0, "go_replies": 0, "errors": 0, "accepted": 1}
    assert dict((k, summary[k]) for k in want) == want
    assert backend.stderr() == ""


def test_testbackend_sends_its_rpc_handshake_only_after_the_proxys(backends, aes_pwd):
    """The real C proxy drops a backend whose handshake comes with its nonce (reconnect storm)."""
    backend = backends("--aes-pwd", aes_pwd)
    sock = socket.create_connection(("127.0.0.1", backend.port), timeout=3)
    try:
        session = wire.RpcSession("proxy", sock.getsockname(), sock.getpeername(), AES_PWD)
        assert silent(sock, 0.2), "the backend spoke first"
        sock.sendall(session.start())
        nonce = recv_exactly(sock, wire.RPC_NONCE_FRAME_LEN)
        assert wire.is_rpc_nonce_start(nonce) and len(nonce) == 44
        assert silent(sock, 0.4), "the backend sent more than its nonce before the proxy's handshake"
        out, _messages = session.feed(nonce)
        sock.sendall(out)  # the proxy's handshake
        sock.settimeout(3)
        while not session.ready:
            data = sock.recv(65536)
            assert data
            assert session.feed(data) == (b"", [])
        sock.sendall(session.send(wire.proxy_req(1, ("127.0.0.1", 2), ("127.0.0.1", 3), wire.req_pq_multi())))
        assert [wire.op_of(m) for m in rpc_read(sock, session, 1)] == [wire.RPC_PROXY_ANS]
    finally:
        sock.close()
    assert backend.summary()["rpc_ready"] == 1


def bad_key_select(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=3)
    other = b"\x01\x02\x03\x04" + AES_PWD[4:]
    sock.sendall(wire.RpcSession("proxy", sock.getsockname(), sock.getpeername(), other).start())
    return sock


def bad_crc(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=3)
    nonce = bytearray(wire.RpcSession("proxy", sock.getsockname(), sock.getpeername(), AES_PWD).start())
    nonce[-1] ^= 0xFF
    sock.sendall(bytes(nonce))
    return sock


def wrong_key_same_signature(port):
    """Same first 4 bytes (key signature), different rest: the handshake decrypts to garbage."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=3)
    other = AES_PWD[:4] + bytes(124)
    session = wire.RpcSession("proxy", sock.getsockname(), sock.getpeername(), other)
    sock.sendall(session.start())
    out, _messages = session.feed(recv_exactly(sock, wire.RPC_NONCE_FRAME_LEN))
    sock.sendall(out)
    return sock


@pytest.mark.parametrize("opener, reasons", [
    (bad_key_select, ["another aes-pwd"]),
    (bad_crc, ["CRC"]),
    # garbage may read as a frame length that never comes: then the 3 s limit says it
    (wrong_key_same_signature, ["is not this backend's --aes-pwd", "handshake not finished within 3 s"]),
])
def test_testbackend_stays_silent_on_an_rpc_handshake_it_cannot_read(backends, aes_pwd, opener, reasons):
    # Closing at once makes the real C reconnect in a tight loop (~2,700 connections a second,
    # measured); kept silent, it gives up after its own 3 s and retries at that pace.
    backend = backends("--aes-pwd", aes_pwd)
    sock = opener(backend.port)
    try:
        assert silent(sock, 1.0), "the backend answered or closed a broken RPC handshake"
        assert backend.stats_when(lambda s: s["errors"] == 1, timeout=6.0)
    finally:
        sock.close()
    good, _session = rpc_open(backend.port)  # the backend itself goes on
    good.close()
    summary = backend.summary()
    assert (summary["errors"], summary["rpc_connections"], summary["rpc_ready"]) == (1, 2, 1)
    stderr = backend.stderr()
    assert any(reason in stderr for reason in reasons) and "not answering" in stderr
    assert AES_PWD[:4].hex() not in stderr and "%#x" % int.from_bytes(AES_PWD[:4], "little") not in stderr


def test_testbackend_stops_answering_an_rpc_handshake_left_unfinished_after_3_s(backends, aes_pwd):
    backend = backends("--aes-pwd", aes_pwd)
    sock = socket.create_connection(("127.0.0.1", backend.port), timeout=3)
    try:
        sock.sendall(wire.RpcSession("proxy", sock.getsockname(), sock.getpeername(), AES_PWD).start())
        assert len(recv_exactly(sock, wire.RPC_NONCE_FRAME_LEN)) == 44
        started = time.monotonic()
        assert backend.stats_when(lambda s: s["errors"] == 1, timeout=6.0)
        assert 2.0 < time.monotonic() - started < 4.5
        assert silent(sock, 0.2)
    finally:
        sock.close()
    assert backend.summary()["errors"] == 1
    assert "handshake not finished within 3 s" in backend.stderr()


@pytest.mark.parametrize("extra, reason", [((), "no --aes-pwd given"),
                                           (("--aes-pwd", "/nonexistent/aes-pwd"), "cannot read --aes-pwd"),
                                           (("--aes-pwd", "SHORT"), "not 32..256")])
def test_testbackend_without_a_usable_aes_pwd_never_answers_rpc(backends, tmp_path, extra, reason):
    if "SHORT" in extra:
        short = tmp_path / "short"
        short.write_bytes(b"x" * 31)
        extra = ("--aes-pwd", str(short))
    backend = backends(*extra)
    sock = socket.create_connection(("127.0.0.1", backend.port), timeout=3)
    try:
        sock.sendall(wire.RpcSession("proxy", sock.getsockname(), sock.getpeername(), AES_PWD).start())
        assert silent(sock, 1.0)
    finally:
        sock.close()
    go = socket.create_connection(("127.0.0.1", backend.port), timeout=3)  # Go frames need no key
    try:
        go.sendall(wire.go_frame(b"ping"))
        assert recv_exactly(go, 8) == wire.go_frame(b"ping")
    finally:
        go.close()
    summary = backend.summary()
    assert (summary["errors"], summary["rpc_connections"], summary["go_replies"]) == (1, 1, 1)
    assert reason in backend.stderr()


# ---------------------------------------------------------------- Go-port frames

def read_go_frames(sock, count, timeout=3.0):
    reader, frames = wire.GoFrameReader(), []
    sock.settimeout(timeout)
    while len(frames) < count:
        data = sock.recv(65536)
        assert data, "the backend closed a Go connection"
        frames += reader.feed(data)
    return frames


def test_testbackend_echoes_go_frames_in_order_for_clients_sharing_a_connection(backends):
    backend = backends()
    shared = socket.create_connection(("127.0.0.1", backend.port), timeout=3)
    second = socket.create_connection(("127.0.0.1", backend.port), timeout=3)
    try:
        # the Go port multiplexes every client over one connection, one request at a time
        for client in ("A", "B", "C", "A", "C"):
            packet = wire.req_pq_multi(nonce=(client * 16).encode())
            shared.sendall(wire.go_frame(packet))
            assert read_go_frames(shared, 1) == [packet]
        # a burst (and a frame split across writes) is answered frame by frame, in order
        burst = [os.urandom(4 * n) for n in (10, 11, 1, 0, 300)]
        data = b"".join(wire.go_frame(p) for p in burst)
        second.sendall(data[:3])
        time.sleep(0.05)
        second.sendall(data[3:50])
        time.sleep(0.05)
        second.sendall(data[50:])
        assert read_go_frames(second, 5) == burst
        assert silent(shared, 0.3) and silent(second, 0.01), "the backend sent more than one reply per frame"
    finally:
        shared.close()
        second.close()
    summary = backend.summary()
    want = {"go_connections": 2, "go_frames": 10, "go_replies": 10, "rpc_connections": 0, "errors": 0}
    assert dict((k, summary[k]) for k in want) == want


def test_testbackend_never_closes_a_go_connection_by_itself(backends):
    backend = backends()
    sock = socket.create_connection(("127.0.0.1", backend.port), timeout=3)
    try:
        sock.sendall(wire.go_frame(wire.req_pq_multi()))
        read_go_frames(sock, 1)
        assert silent(sock, 1.0)  # no EOF, no reset: still open
        sock.sendall(wire.go_frame(b"more"))
        assert read_go_frames(sock, 1) == [b"more"]
        sock.sendall(struct.pack("<I", wire.MAX_BACKEND_FRAME + 1) + b"x" * 60)  # breaks the framing
        assert silent(sock, 0.5), "a broken Go stream was closed or answered"
    finally:
        sock.close()
    summary = backend.summary()
    assert (summary["go_frames"], summary["go_replies"], summary["errors"]) == (2, 2, 1)
    assert "8 MiB" in backend.stderr()


def test_testbackend_reset_go_after_resets_go_connections_and_still_answers_rpc(backends, aes_pwd):
    # The environment's fault for the Go port's backend path: N frames answered per Go connection,
    # then an RST (what the real Go port counts as a response error and marks the target for).
    backend = backends("--aes-pwd", aes_pwd, "--reset-go-after", "2")
    go = socket.create_connection(("127.0.0.1", backend.port), timeout=3)
    rpc, session = rpc_open(backend.port)
    try:
        packets = [wire.req_pq_multi(nonce=bytes([n]) * 16) for n in range(3)]
        for packet in packets[:2]:
            go.sendall(wire.go_frame(packet))
            assert read_go_frames(go, 1) == [packet]
        go.sendall(wire.go_frame(packets[2]))
        go.settimeout(3)
        with pytest.raises(ConnectionResetError):
            while go.recv(65536):
                pass
        # a new Go connection gets its own N answers; C's RPC on the same port is not touched
        again = socket.create_connection(("127.0.0.1", backend.port), timeout=3)
        again.sendall(wire.go_frame(packets[0]))
        assert read_go_frames(again, 1) == [packets[0]]
        again.close()
        rpc.sendall(session.send(wire.proxy_req(7, ("127.0.0.1", 4000), ("127.0.0.1", 443), packets[0])))
        answers = rpc_read(rpc, session, 1)
        assert wire.op_of(answers[0]) == wire.RPC_PROXY_ANS
    finally:
        go.close()
        rpc.close()
    summary = backend.summary()
    want = {"go_connections": 2, "go_frames": 4, "go_replies": 3, "go_resets": 1, "rpc_answers": 1, "errors": 0}
    assert dict((k, summary[k]) for k in want) == want


def test_testbackend_reset_go_after_zero_resets_at_the_first_frame(backends):
    backend = backends("--reset-go-after", "0")
    sock = socket.create_connection(("127.0.0.1", backend.port), timeout=3)
    try:
        sock.sendall(wire.go_frame(wire.req_pq_multi()))
        assert closed_by_peer(sock)
    finally:
        sock.close()
    summary = backend.summary()
    assert (summary["go_frames"], summary["go_replies"], summary["go_resets"]) == (1, 0, 1)
    bad = subprocess.run([sys.executable, TESTBACKEND, "--port", "1", "--reset-go-after", "-1"],
                         capture_output=True, timeout=30, check=False)
    assert bad.returncode == 2 and b"--reset-go-after" in bad.stderr


def test_testbackend_sigusr1_lifts_the_reset_fault_for_later_go_connections(backends):
    backend = backends("--reset-go-after", "0")
    before = socket.create_connection(("127.0.0.1", backend.port), timeout=3)
    try:
        before.sendall(wire.go_frame(wire.req_pq_multi()))
        assert closed_by_peer(before)
    finally:
        before.close()
    backend.proc.send_signal(signal.SIGUSR1)
    assert wait_for(lambda: "no longer reset" in backend.stderr(), 5), backend.stderr()
    after = socket.create_connection(("127.0.0.1", backend.port), timeout=3)
    packet = wire.req_pq_multi()
    try:
        after.sendall(wire.go_frame(packet))
        assert read_go_frames(after, 1) == [packet]
    finally:
        after.close()
    summary = backend.summary()
    assert (summary["go_frames"], summary["go_replies"], summary["go_resets"]) == (2, 1, 1)


def test_first_bytes_tell_rpc_from_go_frames():
    classify = testbackend.classify
    nonce = wire.RpcSession("proxy", ("127.0.0.1", 1), ("127.0.0.1", 2), AES_PWD).start()
    for size in range(12):
        assert classify(nonce[:size]) is None, size
    assert classify(nonce) == classify(nonce[:12]) == "rpc"
    # a Go frame of 44 bytes starts like the nonce frame, then differs (auth_key_id 0)
    go44 = wire.go_frame(wire.req_pq_multi() + b"\0" * 4)
    assert classify(go44[:4]) is None and classify(go44[:5]) == "go" and classify(go44) == "go"
    assert classify(wire.go_frame(b"abcd")) == "go" and classify(b"\x28") == "go"


def test_testbackend_dispatches_byte_by_byte_openings(backends, aes_pwd):
    backend = backends("--aes-pwd", aes_pwd)
    rpc = socket.create_connection(("127.0.0.1", backend.port), timeout=3)
    go = socket.create_connection(("127.0.0.1", backend.port), timeout=3)
    try:
        session = wire.RpcSession("proxy", rpc.getsockname(), rpc.getpeername(), AES_PWD)
        frame44 = wire.go_frame(wire.req_pq_multi() + b"\0" * 4)
        for rpc_byte, go_byte in zip(session.start(), frame44):
            rpc.sendall(bytes([rpc_byte]))
            go.sendall(bytes([go_byte]))
            time.sleep(0.002)
        go.sendall(frame44[44:])
        out, _messages = session.feed(recv_exactly(rpc, 44))
        rpc.sendall(out)
        rpc.settimeout(3)
        while not session.ready:
            session.feed(rpc.recv(65536))
        assert read_go_frames(go, 1) == [frame44[4:]]
    finally:
        rpc.close()
        go.close()
    summary = backend.summary()
    assert (summary["rpc_connections"], summary["rpc_ready"], summary["go_connections"]) == (1, 1, 1)


def test_testbackend_answer_none_stays_silent_and_still_counts(backends, aes_pwd):
    backend = backends("--aes-pwd", aes_pwd, "--answer", "none")
    go = socket.create_connection(("127.0.0.1", backend.port), timeout=3)
    rpc = socket.create_connection(("127.0.0.1", backend.port), timeout=3)
    try:
        go.sendall(wire.go_frame(wire.req_pq_multi()) * 3)
        rpc.sendall(wire.RpcSession("proxy", rpc.getsockname(), rpc.getpeername(), AES_PWD).start())
        assert backend.stats_when(lambda s: s["go_frames"] == 3 and s["rpc_connections"] == 1)
        assert silent(go, 0.4) and silent(rpc, 0.01)  # no reply, no close
    finally:
        go.close()
        rpc.close()
    summary = backend.summary()
    want = {"go_frames": 3, "go_replies": 0, "rpc_connections": 1, "rpc_ready": 0, "errors": 0, "bytes": 3 * 44 + 44}
    assert dict((k, summary[k]) for k in want) == want


def test_testbackend_stats_file_follows_the_counts_while_it_runs(backends):
    backend = backends()
    first = backend.stats_when(lambda s: True)
    assert first and first["go_frames"] == 0 and first["listening"] == ["127.0.0.1:%d" % backend.port]
    sock = socket.create_connection(("127.0.0.1", backend.port), timeout=3)
    try:
        for _n in range(4):
            sock.sendall(wire.go_frame(b"1234"))
            read_go_frames(sock, 1)
        moved = backend.stats_when(lambda s: s["go_replies"] == 4, timeout=5.0)
        assert moved, "the stats file did not follow the counts"
    finally:
        sock.close()
    summary = backend.summary()
    assert sorted(summary) == sorted(moved)
    assert backend.stats() == summary
    assert not [name for name in os.listdir(os.path.dirname(backend.stats_path)) if name.endswith(".tmp")]


def test_testbackend_reads_loopback_targets_from_config_and_bounds_connections(tmp_path, backends):
    ports = [free_port(), free_port()]
    conf = tmp_path / "proxy-multi.conf"
    conf.write_text("# proxy_for 9 127.0.0.1:1;\nproxy_for 1 127.0.0.1:%d;\nproxy_for -1 127.0.0.1:%d;\n"
                    "proxy_for 2 192.0.2.50:8888;\nproxy 127.0.0.1:%d;\ndefault 1;\n" % (ports[0], ports[0], ports[1]))
    backend = backends("--from-config", str(conf), "--max-connections", "2", port=ports[0])
    assert backend.ready == {"listening": ["127.0.0.1:%d" % p for p in ports]}
    held = [socket.create_connection(("127.0.0.1", ports[0]), timeout=2) for _client in range(3)]
    try:
        held[0].sendall(b"x" * 100)
        assert held[2].recv(1) == b""  # the third one is closed at once
    finally:
        for sock in held:
            sock.close()
    summary = backend.summary()
    assert (summary["accepted"], summary["rejected"], summary["bytes"], summary["max_open"]) == (2, 1, 100, 2)
    assert (summary["go_connections"], summary["errors"]) == (1, 1)  # "xxxx" is a length above 8 MiB


def test_testbackend_stops_by_itself_and_refuses_bad_arguments():
    started = time.monotonic()
    out = subprocess.run([sys.executable, TESTBACKEND, "--port", str(free_port()), "--max-seconds", "0.3"],
                         stdout=subprocess.PIPE, timeout=30, check=False)
    assert out.returncode == 0 and json.loads(out.stdout.decode().splitlines()[-1])["accepted"] == 0
    assert time.monotonic() - started < 5
    for args, text in ((["--host", "192.0.2.1", "--port", "1"], b"loopback"),
                       (["--port", "1", "--answer", "later"], b"--answer"),
                       (["--port", "1", "--max-connections", "0"], b"--max-connections"),
                       (["--port", "1", "--max-seconds", "86401"], b"--max-seconds")):
        bad = subprocess.run([sys.executable, TESTBACKEND] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             timeout=30, check=False)
        assert bad.returncode == 2 and text in bad.stderr, args


def test_testbackend_cannot_bind_exits_1():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        out = subprocess.run([sys.executable, TESTBACKEND, "--port", str(holder.getsockname()[1]),
                              "--max-seconds", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             timeout=30, check=False)
    finally:
        holder.close()
    assert out.returncode == 1 and b"cannot listen" in out.stderr


# ---------------------------------------------------------------- an obfuscated2 server for the client

class ObfServer(object):
    """A small obfuscated2 proxy: accept_handshake with its secrets, then per packet `answer`:
    "echo" (one reply each), "none", or "odd" (replies to the 1st, 3rd, ... packet only)."""

    def __init__(self, secrets=(SECRET,), answer="echo"):
        self.secrets = [bytes.fromhex(s) for s in secrets]
        self.answer = answer
        self.lock = threading.Lock()
        self.handshakes, self.packets = [], []
        self.invalid = self.short = self.resets = self.eofs = self.open = self.max_open = 0
        self.lingers = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stop = False
        self.threads = []
        self.acceptor = threading.Thread(target=self.accept_loop, daemon=True)
        self.acceptor.start()

    def accept_loop(self):
        while not self.stop:
            try:
                conn, _peer = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self.serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def serve(self, conn):
        with self.lock:
            self.open += 1
            self.max_open = max(self.max_open, self.open)
        conn.settimeout(0.1)
        deadline = time.monotonic() + 20
        header, accepted, reader, last = b"", None, None, time.monotonic()
        count = 0
        try:
            while not self.stop and time.monotonic() < deadline:
                try:
                    data = conn.recv(65536)
                except socket.timeout:
                    continue
                except ConnectionResetError:
                    with self.lock:
                        self.resets += 1
                    return
                if not data:
                    with self.lock:
                        self.eofs += 1
                        if len(header) < 64:
                            self.short += 1
                        elif count:
                            self.lingers.append(time.monotonic() - last)
                    return
                if accepted is None:
                    header += data
                    if len(header) < 64:
                        continue
                    accepted = wire.accept_handshake(header[:64], self.secrets)
                    if accepted is None:
                        with self.lock:
                            self.invalid += 1
                        return
                    tag, dc, _index, receive, send = accepted
                    with self.lock:
                        self.handshakes.append((tag, dc))
                    reader = wire.FrameReader(tag)
                    data = header[64:]
                for packet in reader.feed(receive.update(data)):
                    count += 1
                    last = time.monotonic()
                    with self.lock:
                        self.packets.append(packet)
                    if self.answer == "echo" or (self.answer == "odd" and count % 2):
                        conn.sendall(send.update(wire.encode_frame(tag, packet)))
        finally:
            with self.lock:
                self.open -= 1
            conn.close()

    def close(self):
        self.stop = True
        self.listener.close()
        self.acceptor.join(2)
        for thread in self.threads:
            thread.join(2)


@pytest.fixture
def servers():
    started = []

    def start(*args, **kwargs):
        server = ObfServer(*args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def client(port, *args, check=True, timeout=60):
    out = subprocess.run([sys.executable, TESTCLIENT, "--port", str(port)] + list(args),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, check=False)
    if check:
        assert out.returncode == 0, out.stderr.decode()
        return json.loads(out.stdout.decode())
    return out


def settled(server, connections):
    assert wait_for(lambda: server.eofs + server.resets + server.invalid >= connections and server.open == 0), \
        (server.eofs, server.resets, server.invalid, server.open)


def test_testclient_obf_handshakes_and_reads_one_reply_per_packet(servers):
    server = servers()
    out = client(server.port, "--mode", "obf", "--count", "3", "--packets", "4", "--secret", SECRET)
    want = {"attempted": 3, "connected": 3, "obf": 3, "junk": 0, "handshakes": 3, "packets_sent": 12,
            "replies": 12, "unanswered": 0, "errors": 0, "refused": 0, "mode": "obf"}
    assert dict((k, out[k]) for k in want) == want
    settled(server, 3)
    assert server.handshakes == [(wire.TAG_INTERMEDIATE, 2)] * 3
    assert len(server.packets) == 12 and all(len(p) == 40 and wire.forwardable(p) for p in server.packets)
    assert [struct.unpack("<I", p[20:24])[0] for p in server.packets] == [wire.REQ_PQ_MULTI] * 12
    assert (server.resets, server.invalid, server.eofs) == (0, 0, 3)  # read replies, clean closes
    assert SECRET not in json.dumps(out)


def test_testclient_padded_transport_and_dc(servers):
    server = servers()
    out = client(server.port, "--mode", "obf", "--count", "2", "--packets", "3", "--secret", SECRET,
                 "--transport", "padded", "--dc", "-2")
    assert (out["handshakes"], out["packets_sent"], out["replies"], out["unanswered"]) == (2, 6, 6, 0)
    settled(server, 2)
    assert server.handshakes == [(wire.TAG_PADDED, -2)] * 2
    # under 4 bytes of padding: both binaries cut only what is past a multiple of 4, so a longer
    # pad would be forwarded as part of the packet (measured)
    assert all(len(p) == 40 and wire.forwardable(p) for p in server.packets)


def test_testclient_counts_unanswered_packets_and_waits_for_replies_only_so_long(servers):
    none = servers(answer="none")
    started = time.monotonic()
    out = client(none.port, "--mode", "obf", "--count", "2", "--packets", "3", "--secret", SECRET,
                 "--reply-timeout", "0.2", "--concurrency", "1")
    took = time.monotonic() - started
    assert (out["packets_sent"], out["replies"], out["unanswered"]) == (6, 0, 6)
    assert out["elapsed_s"] >= 2 * 0.2 and took < 10
    odd = servers(answer="odd")
    out = client(odd.port, "--mode", "obf", "--count", "2", "--packets", "3", "--secret", SECRET,
                 "--reply-timeout", "0.2")
    assert (out["packets_sent"], out["replies"], out["unanswered"]) == (6, 4, 2)


def test_testclient_lingers_after_its_last_packet(servers):
    server = servers()
    client(server.port, "--mode", "obf", "--count", "2", "--packets", "1", "--secret", SECRET, "--linger", "0.4")
    settled(server, 2)
    assert len(server.lingers) == 2 and min(server.lingers) >= 0.35, server.lingers
    quick = servers()
    client(quick.port, "--mode", "obf", "--count", "2", "--packets", "1", "--secret", SECRET, "--linger", "0")
    settled(quick, 2)
    assert max(quick.lingers) < 0.3, quick.lingers


def test_testclient_junk_is_rejected_by_every_secret(servers):
    server = servers(secrets=(SECRET,))
    out = client(server.port, "--mode", "junk", "--count", "6", "--linger", "0.05")
    assert (out["junk"], out["obf"], out["handshakes"], out["packets_sent"], out["connected"]) == (6, 0, 0, 0, 6)
    settled(server, 6)
    assert (server.invalid, server.handshakes) == (6, [])
    secret = bytes.fromhex(SECRET)
    for _n in range(200):
        data = testclient.junk_header(secret)
        assert len(data) == 64 and data[0] != 0xEF and data[:4] not in testclient.PLAIN_STARTS
        assert wire.accept_handshake(data, [secret]) is None and wire.accept_handshake(data, []) is None


def test_testclient_with_a_wrong_secret_is_invalid(servers):
    server = servers(secrets=(OTHER_SECRET,))
    out = client(server.port, "--mode", "obf", "--count", "2", "--packets", "1", "--secret", SECRET)
    assert (out["handshakes"], out["replies"], out["unanswered"], out["closed_by_proxy"]) == (2, 0, 2, 2)
    settled(server, 2)
    assert server.invalid == 2


def test_testclient_secret_file_uses_the_first_secret(servers, tmp_path):
    path = tmp_path / "secret"
    path.write_text("\n  dd%s , %s\n%s\n" % (SECRET, OTHER_SECRET, OTHER_SECRET))
    assert testclient.read_secret_file(str(path)) == bytes.fromhex(SECRET)
    first = servers(secrets=(SECRET,))
    out = client(first.port, "--mode", "obf", "--count", "1", "--packets", "2", "--secret-file", str(path))
    assert (out["handshakes"], out["replies"]) == (1, 2)
    second_only = servers(secrets=(OTHER_SECRET,))
    out = client(second_only.port, "--mode", "obf", "--count", "1", "--packets", "2", "--secret-file", str(path))
    assert out["replies"] == 0
    settled(second_only, 1)
    assert second_only.invalid == 1


@pytest.mark.parametrize("args, text", [
    (["--mode", "obf"], "--secret"),
    (["--mode", "mixed"], "--secret"),
    (["--mode", "held"], "--secret"),
    (["--mode", "obf", "--secret", "zz" + SECRET[2:]], "32 hex digits"),
    (["--mode", "obf", "--secret-file", "/nonexistent/secret"], "cannot read --secret-file"),
    (["--mode", "obf", "--secret", SECRET, "--secret-file", "/x"], "not both"),
    (["--mode", "obf", "--secret", SECRET, "--concurrency", "65"], "--concurrency"),
    (["--mode", "obf", "--secret", SECRET, "--transport", "abridged"], "--transport"),
    (["--mode", "obf", "--secret", SECRET, "--reply-timeout", "11"], "--reply-timeout"),
    (["--mode", "junk", "--dc", "40000"], "--dc"),
    (["--mode", "obf", "--secrte", SECRET], "unrecognized arguments: --secrte <redacted>"),
])
def test_testclient_bad_arguments_exit_2_without_printing_the_secret(args, text):
    out = client(1, *args, check=False)
    assert out.returncode == 2 and text in out.stderr.decode(), out.stderr
    assert SECRET[2:] not in out.stderr.decode() + out.stdout.decode()


def test_testclient_needs_no_secret_for_junk_only_runs(servers):
    server = servers()
    junk_only = (["--mode", "junk"], ["--mode", "mixed", "--junk-share", "1"],
                 ["--mode", "held", "--held-junk", "--hold-seconds", "0.1"])
    for args in junk_only:
        out = client(server.port, "--count", "2", "--linger", "0", *args)
        assert out["connected"] == 2 and out["handshakes"] == 0, args


def test_testclient_mixed_concurrency_keeps_the_rate_when_replies_are_slow(servers):
    server = servers(answer="none")
    out = client(server.port, "--mode", "mixed", "--count", "16", "--rate", "0", "--junk-share", "0",
                 "--concurrency", "8", "--packets", "1", "--reply-timeout", "0.3", "--secret", SECRET)
    assert (out["obf"], out["packets_sent"], out["unanswered"]) == (16, 16, 16)
    assert out["elapsed_s"] < 16 * 0.3 / 2, out  # one after the other would take 4.8 s
    assert server.max_open > 1
    mixed = servers()
    out = client(mixed.port, "--mode", "mixed", "--count", "40", "--rate", "0", "--junk-share", "0.5",
                 "--secret", SECRET, "--linger", "0.02")
    assert out["junk"] + out["obf"] == 40 and out["junk"] > 0 and out["obf"] > 0
    assert (out["handshakes"], out["packets_sent"], out["replies"]) == (out["obf"], 2 * out["obf"], 2 * out["obf"])
    settled(mixed, 40)
    assert (mixed.invalid, len(mixed.handshakes), mixed.resets) == (out["junk"], out["obf"], 0)


def test_testclient_rate_is_a_ceiling_and_time_bounds_the_run(servers):
    server = servers()
    out = client(server.port, "--mode", "mixed", "--rate", "4", "--count", "10000", "--max-seconds", "1",
                 "--secret", SECRET, "--concurrency", "16")
    assert 1 <= out["attempted"] <= 5 and out["elapsed_s"] < 3  # rate x max-seconds (+ the one at t=0)
    slow = servers(answer="none")
    out = client(slow.port, "--mode", "obf", "--count", "100", "--rate", "0", "--packets", "1",
                 "--reply-timeout", "5", "--max-seconds", "0.5", "--secret", SECRET, "--concurrency", "2")
    assert out["elapsed_s"] < 2.5 and out["attempted"] <= 4, out


def test_testclient_held_connections_handshake_and_stay_open(servers):
    server = servers()
    holder = subprocess.Popen([sys.executable, TESTCLIENT, "--port", str(server.port), "--mode", "held", "--count", "3",
                               "--hold-seconds", "10", "--max-seconds", "20", "--secret", SECRET, "--rate", "0"],
                              stdout=subprocess.PIPE)
    try:
        assert wait_for(lambda: len(server.handshakes) == 3 and server.open == 3)
        time.sleep(0.3)
        assert server.open == 3 and server.packets == []
    finally:
        holder.send_signal(signal.SIGTERM)
        stdout, _err = holder.communicate(timeout=10)
    out = json.loads(stdout.decode())
    assert holder.returncode == 0 and (out["connected"], out["handshakes"], out["mode"]) == (3, 3, "held")
    settled(server, 3)


def test_testclient_prints_its_summary_on_sigterm(servers):
    server = servers(answer="none")
    runner = subprocess.Popen([sys.executable, TESTCLIENT, "--port", str(server.port), "--mode", "mixed", "--rate", "20",
                               "--count", "10000", "--max-seconds", "60", "--secret", SECRET],
                              stdout=subprocess.PIPE)
    try:
        assert wait_for(lambda: len(server.packets) >= 2)
    finally:
        runner.send_signal(signal.SIGTERM)
        stdout, _err = runner.communicate(timeout=10)
    summary = json.loads(stdout.decode())
    assert runner.returncode == 0 and summary["mode"] == "mixed" and summary["packets_sent"] >= 2
    assert summary["replies"] == 0 and summary["unanswered"] == summary["packets_sent"]


def test_testclient_counts_refused_connects_and_exits_1():
    out = client(free_port(), "--mode", "junk", "--count", "3", check=False)
    summary = json.loads(out.stdout.decode())
    assert out.returncode == 1 and (summary["refused"], summary["connected"]) == (3, 0)


# ---------------------------------------------------------------- the test killer

TESTKILLER = os.path.join(STANDIN_DIR, "mtproxy_testkiller.py")
# systemctl as the killer uses it: `show -p MainPID --value UNIT` prints the pid in $FAKE_MAIN_PID_FILE,
# `kill --signal=SIGKILL UNIT` kills that pid and logs the call.
FAKE_SYSTEMCTL = """#!/bin/sh
pid=$(cat "$FAKE_MAIN_PID_FILE" 2>/dev/null || echo 0)
case "$1" in
  show) echo "$pid" ;;
  kill) echo "$*" >>"$FAKE_SYSTEMCTL_LOG"; kill -KILL "$pid" 2>/dev/null ;;
esac
"""


def test_testkiller_kills_the_named_binary_after_its_time_and_spares_others(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bin_dir / "systemctl").chmod(0o755)
    pid_file, log = tmp_path / "main.pid", tmp_path / "systemctl.log"
    env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]), FAKE_MAIN_PID_FILE=str(pid_file),
               FAKE_SYSTEMCTL_LOG=str(log))

    def service(argv0):
        """A main process whose argv[0] is argv0 (exec -a), as systemd would run that binary."""
        proc = subprocess.Popen(["bash", "-c", 'exec -a "$0" sleep 30', argv0])
        pid_file.write_text(str(proc.pid))
        return proc

    c_binary = service("/opt/MTProxy/mtproto-proxy")
    killer = subprocess.Popen([sys.executable, TESTKILLER, "--after-s", "0.6", "--max-kills", "2",
                               "--max-seconds", "20", "--poll-s", "0.05", "--stats-file", str(tmp_path / "k.json")],
                              stdout=subprocess.PIPE, env=env)
    try:
        time.sleep(1.0)
        assert c_binary.poll() is None, "the C binary was killed"
        c_binary.kill()
        c_binary.wait()
        kills = []
        for _restart in range(3):  # every start of the Go binary dies, up to --max-kills
            go = service("/opt/MTProxy/releases/go-0123456789ab/mtproto-proxy-go")
            started = time.monotonic()
            if wait_for(lambda: go.poll() is not None, 5):
                kills.append((go.returncode, time.monotonic() - started))
            else:
                go.kill()
                go.wait()
        assert [code for code, _alive in kills] == [-signal.SIGKILL] * 2
        assert all(0.5 <= alive < 3.0 for _code, alive in kills), kills
    finally:
        killer.send_signal(signal.SIGTERM)
        out, _err = killer.communicate(timeout=10)
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [line.get("kills") for line in lines] == [1, 2, 2]
    assert lines[0]["binary"].endswith("/mtproto-proxy-go") and lines[0]["alive_s"] >= 0.6
    assert log.read_text().split("\n")[:2] == ["kill --signal=SIGKILL MTProxy.service"] * 2
    assert json.loads((tmp_path / "k.json").read_text())["kills"] == 2


def test_testkiller_refuses_bad_arguments():
    for bad in (["--binary-name", "a/b"], ["--max-kills", "1001"], ["--max-seconds", "0"], ["--after-s", "-1"]):
        out = subprocess.run([sys.executable, TESTKILLER] + bad, capture_output=True, timeout=30, check=False)
        assert out.returncode == 2, bad


def test_free_port_skips_ports_another_process_holds_or_something_listens_on(monkeypatch, tmp_path):
    # The kernel gave the same port to two binds in a row once (a stand-in's stats and client ports).
    import fcntl

    import loopback
    monkeypatch.setattr(loopback, "LOCK_DIR", str(tmp_path))
    monkeypatch.setattr(loopback, "_HELD", __import__("collections").deque())
    monkeypatch.setattr(loopback, "KEEP", 2)
    monkeypatch.setattr(loopback._RANDOM, "randrange", lambda span: 0)
    monkeypatch.setattr(loopback, "_bindable", lambda port: port != 20002)  # something listens on 20002
    # Another process holds 20000 (a lock on its own open file: flock conflicts as between processes).
    other = os.open(str(tmp_path / "20000"), os.O_CREAT | os.O_RDWR)
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        assert [loopback.free_port() for _call in range(3)] == [20001, 20003, 20004]
        # KEEP = 2: the oldest (20001) was let go, the two latest are still held
        assert loopback.free_port() == 20001
    finally:
        os.close(other)
        while loopback._HELD:
            os.close(loopback._HELD.popleft())
    monkeypatch.setattr(loopback, "PORTS", (20000, 20002))
    monkeypatch.setattr(loopback, "_bindable", lambda port: False)
    with pytest.raises(RuntimeError, match="no free loopback port in 20000-20001"):
        loopback.free_port()
