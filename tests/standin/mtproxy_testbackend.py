#!/usr/bin/env python3
"""Bounded test backend that plays the MTProxy ``proxy_for`` targets, in both real protocols.

Listens on loopback ports only (127.0.0.0/8) and tells each accepted connection's protocol by its
first bytes (mtproxy_wire.is_rpc_nonce_start):

* the C proxy's middle-proxy RPC (the connection opens with a 44-byte RPC_NONCE frame): nonce
  exchange keyed by the proxy's ``--aes-pwd`` file (--aes-pwd here), AES-256-CBC, handshake (ours
  only after the proxy's: a backend that sends it with its nonce is dropped by the real proxy),
  then every RPC_PROXY_REQ is answered with RPC_PROXY_ANS (flags 0, same ext_conn_id, the client
  packet echoed), every RPC_PING with RPC_PONG; RPC_CLOSE_CONN is counted. With no usable
  --aes-pwd (not given, unreadable, not 32..256 bytes), or when the proxy's nonce or handshake
  cannot be read with it (another aes-pwd: a different key signature, or frames that do not
  decrypt), the error is counted in "errors", a stderr line says why, and the connection is kept
  but never answered: the real C gives up on a handshake after 3 s and reconnects (8 connections
  every 3 s with -M 1), where closing at once makes it reconnect in a tight loop (measured: about
  2,700 connections a second). A protocol violation after the handshake closes the connection.
* anything else is the Go port's plain frames (LE32 length + client packet): every request frame
  is answered at once on the same connection with one frame echoing it. Such a connection is never
  closed by the backend while it runs (the Go port marks a target unhealthy for good on a reset);
  bytes that break the framing (a length above 8 MiB) are counted in "errors" and read and
  discarded from then on.

With ``--reset-go-after N`` the backend fails the Go port's framing only (a fault of the environment
that the C proxy's RPC on the same ports does not see): each Go connection has its first N request
frames answered, and on the next one the backend resets it (SO_LINGER 0: an RST, not a FIN). The
real Go port (checked on the golang build) counts that exchange as an error (outbound_response_errors,
dataplane_packets_outbound_errors, dataplane_packets_dropped +1) and marks the target unhealthy
until it restarts, so every later packet of that DC's cluster is dropped as a route error
(forward_failed, dataplane_packets_route_errors, dataplane_packets_dropped +1 each): the counters
its SLO judge reads. Counted in "go_resets". SIGUSR1 lifts the fault for the connections that come
after it (a test removes it once the Go canary was rolled back), and says so on stderr.

With ``--answer none`` nothing is ever sent (everything read is discarded, like a silent sink):
the C proxy's targets never become ready, the Go port times out each request after 250 ms.
Sources of the protocol facts: tests/standin/mtproxy_wire.py and the notes it cites (both
checked against the real C and Go builds). Python 3.8+; the RPC crypto needs ``cryptography``.

Ports: --port (repeatable, or comma-separated) on --host, and/or --from-config PATH: every
``proxy_for N host:port;`` / ``proxy host:port;`` target of a proxy-multi.conf whose host is in
127.0.0.0/8 (others are skipped). Always stops by itself: after --max-seconds (default 3600, hard
cap 86400), or on SIGTERM/SIGINT. At most --max-connections (default 256, hard cap 4096) are open at
once; further connections are accepted and closed at once (counted as "rejected"). One thread, one
selector loop; each write is a blocking send bounded by 2 s (replies are small).

Prints one JSON line when listening: {"listening": ["127.0.0.1:PORT", ...]}, and one at the end:
{"listening", "accepted", "rejected", "bytes", "max_open", "elapsed_s", "rpc_connections",
"rpc_ready", "rpc_queries", "rpc_answers", "rpc_close_conn", "go_connections", "go_frames",
"go_replies", "go_resets", "errors"} ("bytes": everything read; "rpc_ready": RPC handshakes completed;
"rpc_queries": RPC_PROXY_REQ received; "go_frames": Go request frames received). With
--stats-file PATH the same JSON is also written there (atomically: a temporary file renamed over
it) when listening, then at most once a second while counts change, and at the end. Exit 0 after a
normal run, 1 when a port cannot be bound (message on stderr), 2 on bad arguments.
"""
import argparse
import ipaddress
import json
import os
import re
import selectors
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mtproxy_wire as wire  # noqa: E402  (installed next to this file)

MAX_SECONDS = 86400.0
MAX_CONNECTIONS = 4096
TICK_S = 0.2
SEND_TIMEOUT_S = 2.0
STATS_FILE_INTERVAL_S = 1.0
MAX_ERROR_LINES = 200
SILENT_RPC_CLOSE_S = 30.0
TARGET_RE = re.compile(r"^\s*proxy(?:_for\s+-?\d+)?\s+(\S+?)\s*;", re.MULTILINE)
RPC_START = struct.pack("<iiI", wire.RPC_NONCE_FRAME_LEN, -2, wire.RPC_NONCE)
COUNTERS = ("accepted", "rejected", "bytes", "max_open", "rpc_connections", "rpc_ready", "rpc_queries",
            "rpc_answers", "rpc_close_conn", "go_connections", "go_frames", "go_replies", "go_resets", "errors")


def loopback(host):
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.version == 4 and ip.is_loopback


def config_targets(path):
    """Loopback (host, port) targets of a proxy-multi.conf, in file order, without repeats."""
    with open(path) as handle:
        text = re.sub(r"#[^\n]*", "", handle.read())
    found = []
    for addr in TARGET_RE.findall(text):
        host, _sep, port = addr.rpartition(":")
        try:
            port = int(port)
        except ValueError:
            continue
        if loopback(host) and 0 < port < 65536 and (host, port) not in found:
            found.append((host, port))
    return found


def classify(first):
    """"rpc", "go", or None while the first bytes could still be either."""
    if len(first) >= len(RPC_START):
        return "rpc" if wire.is_rpc_nonce_start(first) else "go"
    return None if bytes(first) == RPC_START[:len(first)] else "go"


def read_aes_pwd(path):
    """(the --aes-pwd secret, None) or (None, why it cannot be used)."""
    if not path:
        return None, "no --aes-pwd given"
    try:
        with open(path, "rb") as handle:
            data = handle.read(257)
    except (IOError, OSError) as exc:
        return None, "cannot read --aes-pwd: %s" % (exc.strerror or exc)
    if not 32 <= len(data) <= 256:
        return None, "the --aes-pwd file has %s bytes, not 32..256" % (len(data) if len(data) <= 256 else "over 256")
    return data, None


class Conn(object):
    def __init__(self, sock, label):
        self.sock = sock
        self.label = label
        self.kind = None
        self.first = bytearray()
        self.session = None
        self.reader = None
        self.answered = 0
        self.opened = time.monotonic()


class Backend(object):
    def __init__(self, targets, max_connections, max_seconds, answer="echo", aes_pwd_path=None, stats_file=None,
                 reset_go_after=None):
        self.targets = targets
        self.max_connections = max_connections
        self.answer = answer
        self.reset_go_after = reset_go_after
        self.aes_pwd_path = aes_pwd_path
        self.stats_file = stats_file
        self.t0 = time.monotonic()
        self.deadline = self.t0 + max_seconds
        self.sel = selectors.DefaultSelector()
        self.open = {}
        self.stop = False
        self.error_lines = 0
        self.stats = {"listening": ["%s:%d" % t for t in targets]}
        self.stats.update((key, 0) for key in COUNTERS)
        self.written = None
        self.written_at = 0.0

    # -- bookkeeping
    def count(self, key, n=1):
        self.stats[key] += n

    def error(self, conn, why):
        self.stats["errors"] += 1
        if self.error_lines < MAX_ERROR_LINES:
            self.error_lines += 1
            sys.stderr.write("mtproxy_testbackend: %s: %s%s\n" % (
                conn.label, why, "" if self.error_lines < MAX_ERROR_LINES else " (no more error lines)"))
            sys.stderr.flush()

    def snapshot(self):
        stats = dict(self.stats)
        stats["elapsed_s"] = round(time.monotonic() - self.t0, 3)
        return stats

    def write_stats_file(self, force=False, stats=None):
        """Write ``stats`` (default: a fresh snapshot) when the counts moved, at most every
        STATS_FILE_INTERVAL_S unless ``force``; the final call passes the exit summary itself."""
        if not self.stats_file:
            return
        now = time.monotonic()
        counts = [self.stats[key] for key in COUNTERS]
        if not force and (counts == self.written or now - self.written_at < STATS_FILE_INTERVAL_S):
            return
        tmp = "%s.%d.tmp" % (self.stats_file, os.getpid())
        try:
            with open(tmp, "w") as handle:
                handle.write(json.dumps(stats or self.snapshot(), sort_keys=True) + "\n")
            os.replace(tmp, self.stats_file)
        except (IOError, OSError) as exc:
            self.stats_file = None
            sys.stderr.write("mtproxy_testbackend: cannot write --stats-file: %s (not written again)\n" % exc)
            return
        self.written, self.written_at = counts, now

    # -- sockets
    def listen(self):
        for host, port in self.targets:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                sock.close()
                raise OSError(exc.errno, "cannot listen on %s:%d: %s" % (host, port, exc.strerror))
            sock.listen(128)
            sock.setblocking(False)
            self.sel.register(sock, selectors.EVENT_READ, self.on_accept)

    def on_accept(self, lsock):
        for _attempt in range(64):
            try:
                sock, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(self.open) >= self.max_connections:
                self.count("rejected")
                sock.close()
                continue
            self.count("accepted")
            sock.setblocking(False)
            local = sock.getsockname()
            conn = Conn(sock, "%s:%d <- %s:%d" % (local[0], local[1], peer[0], peer[1]))
            self.open[sock] = conn
            self.stats["max_open"] = max(self.stats["max_open"], len(self.open))
            self.sel.register(sock, selectors.EVENT_READ, self.on_read)

    def close(self, conn):
        """Close after reading what is already there (bounded), so the close is a FIN, not a reset."""
        if conn.sock not in self.open:
            return
        self.sel.unregister(conn.sock)
        del self.open[conn.sock]
        for _round in range(64):
            try:
                data = conn.sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            self.count("bytes", len(data))
        conn.sock.close()

    def reset(self, conn):
        """Close with an RST: SO_LINGER on with a zero timeout drops what is unread and unsent."""
        if conn.sock not in self.open:
            return
        self.sel.unregister(conn.sock)
        del self.open[conn.sock]
        try:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        conn.sock.close()

    def send(self, conn, data):
        if not data:
            return True
        try:
            conn.sock.settimeout(SEND_TIMEOUT_S)
            conn.sock.sendall(data)
            conn.sock.setblocking(False)
        except OSError as exc:
            self.error(conn, "send failed: %s; closing" % (exc.strerror or exc.__class__.__name__))
            self.close(conn)
            return False
        return True

    def on_read(self, sock):
        conn = self.open.get(sock)
        if conn is None:
            return
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close(conn)
            return
        self.count("bytes", len(data))
        if conn.kind is None:
            conn.first += data
            kind = classify(conn.first)
            if kind is None:
                return
            data, conn.first = bytes(conn.first), None
            self.start(conn, kind)
            if conn.sock not in self.open:
                return
        if conn.kind == "rpc":
            self.on_rpc(conn, data)
        elif conn.kind == "go":
            self.on_go(conn, data)

    def silent(self, conn, why):
        """Count and say why, then keep the RPC connection without answering until the proxy's own
        3 s handshake limit ends it (closing now would make the real C reconnect at once)."""
        self.error(conn, "%s; not answering (the proxy gives up after 3 s)" % why)
        conn.kind = "discard"

    def start(self, conn, kind):
        conn.kind = kind
        if kind == "go":
            self.count("go_connections")
            conn.reader = wire.GoFrameReader()
            return
        self.count("rpc_connections")
        if self.answer == "none":
            conn.kind = "discard"
            return
        aes_pwd, why = read_aes_pwd(self.aes_pwd_path)
        if aes_pwd is None:
            self.silent(conn, "a C middle-proxy RPC connection, but %s" % why)
            return
        try:
            conn.session = wire.RpcSession("backend", conn.sock.getsockname(), conn.sock.getpeername(), aes_pwd)
        except (wire.WireError, OSError) as exc:
            self.silent(conn, "cannot start an RPC session: %s" % exc)

    def on_rpc(self, conn, data):
        session = conn.session
        was_ready = session.ready
        try:
            out, messages = session.feed(data)
        except wire.WireError as exc:
            if session.ready:
                self.error(conn, "RPC: %s; closing" % exc)
                self.close(conn)
            elif session.decrypt is not None:
                self.silent(conn, "RPC: cannot read the proxy's handshake (%s): its --aes-pwd is not this "
                                  "backend's --aes-pwd" % exc)
            else:
                self.silent(conn, "RPC: %s" % exc)
            return
        if not self.send(conn, out):
            return
        if session.ready and not was_ready:
            self.count("rpc_ready")
        replies = []
        for payload in messages:
            op = wire.op_of(payload)
            if op == wire.RPC_PROXY_REQ:
                self.count("rpc_queries")
                try:
                    _flags, ext_conn_id, packet = wire.parse_proxy_req(payload)
                except (wire.WireError, struct.error) as exc:
                    self.error(conn, "RPC: %s (not answered)" % exc)
                    continue
                if len(packet) % 4:
                    self.error(conn, "RPC_PROXY_REQ with a %d-byte packet (not a multiple of 4; not answered)"
                               % len(packet))
                    continue
                replies.append(session.send(wire.proxy_ans(ext_conn_id, packet)))
                self.count("rpc_answers")
            elif op == wire.RPC_PING and len(payload) == 12:
                replies.append(session.send(struct.pack("<I", wire.RPC_PONG) + payload[4:12]))
            elif op == wire.RPC_CLOSE_CONN:
                self.count("rpc_close_conn")
        self.send(conn, b"".join(replies))

    def on_go(self, conn, data):
        try:
            frames = conn.reader.feed(data)
        except wire.WireError as exc:
            self.error(conn, "Go frames: %s; reading and discarding from now on" % exc)
            conn.kind = "discard"
            return
        self.count("go_frames", len(frames))
        if self.answer == "none" or not frames:
            return
        if self.reset_go_after is not None and conn.answered + len(frames) > self.reset_go_after:
            answer = frames[:max(0, self.reset_go_after - conn.answered)]
            if answer and self.send(conn, b"".join(wire.go_frame(payload) for payload in answer)):
                self.count("go_replies", len(answer))
            self.count("go_resets")
            self.reset(conn)
            return
        if self.send(conn, b"".join(wire.go_frame(payload) for payload in frames)):
            conn.answered += len(frames)
            self.count("go_replies", len(frames))

    def expire_handshakes(self):
        """Stop answering RPC connections whose handshake is not done after 3 s, the C proxy's own
        limit (a wrong aes-pwd with the right key signature can decrypt to a frame length that never
        comes), and close silent RPC connections the proxy left open for 30 s."""
        now = time.monotonic()
        for conn in list(self.open.values()):
            if conn.kind == "rpc" and not conn.session.ready and conn.opened < now - wire.RPC_HANDSHAKE_TIMEOUT_S:
                self.silent(conn, "RPC handshake not finished within %g s" % wire.RPC_HANDSHAKE_TIMEOUT_S)
            elif (conn.kind == "discard" and conn.reader is None and self.answer != "none"
                  and conn.opened < now - SILENT_RPC_CLOSE_S):
                self.close(conn)

    def run(self):
        self.write_stats_file(force=True)
        while not self.stop and time.monotonic() < self.deadline:
            for key, _mask in self.sel.select(TICK_S):
                key.data(key.fileobj)
            self.expire_handshakes()
            self.write_stats_file()
        for _round in range(16):  # count what already arrived before closing (bounded)
            events = self.sel.select(0)
            if not events:
                break
            for key, _mask in events:
                key.data(key.fileobj)
        for conn in list(self.open.values()):
            self.close(conn)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        stats = self.snapshot()
        self.write_stats_file(force=True, stats=stats)
        return stats


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback address for --port (default 127.0.0.1)")
    parser.add_argument("--port", action="append", default=[], help="port(s) to listen on; repeatable, comma lists ok")
    parser.add_argument("--from-config", metavar="PATH", help="also listen on the loopback targets of this proxy-multi.conf")
    parser.add_argument("--aes-pwd", metavar="PATH", help="the proxy's --aes-pwd file (32..256 bytes), for C RPC connections")
    parser.add_argument("--answer", choices=("echo", "none"), default="echo",
                        help="echo: answer every request (default); none: read and discard, never answer")
    parser.add_argument("--reset-go-after", type=int, metavar="N",
                        help="answer the first N frames of each Go connection, then reset it (an RST)")
    parser.add_argument("--stats-file", metavar="PATH", help="rewrite the summary JSON here at most once a second")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--max-connections", type=int, default=256)
    args = parser.parse_args(argv)
    if not loopback(args.host):
        parser.error("--host must be an IPv4 loopback address (127.0.0.0/8)")
    if not 0 < args.max_seconds <= MAX_SECONDS:
        parser.error("--max-seconds must be in (0, %d]" % MAX_SECONDS)
    if not 1 <= args.max_connections <= MAX_CONNECTIONS:
        parser.error("--max-connections must be 1..%d" % MAX_CONNECTIONS)
    if args.reset_go_after is not None and args.reset_go_after < 0:
        parser.error("--reset-go-after must be 0 or more")
    targets = []
    for value in args.port:
        for part in value.split(","):
            try:
                port = int(part)
            except ValueError:
                parser.error("bad --port %r" % part)
            if not 0 < port < 65536:
                parser.error("bad --port %r" % part)
            if (args.host, port) not in targets:
                targets.append((args.host, port))
    if args.from_config:
        try:
            for target in config_targets(args.from_config):
                if target not in targets:
                    targets.append(target)
        except (IOError, OSError) as exc:
            parser.error("cannot read --from-config: %s" % exc.strerror)
    if not targets:
        parser.error("nothing to listen on: give --port or a --from-config with loopback targets")
    args.targets = targets
    return args


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    backend = Backend(args.targets, args.max_connections, args.max_seconds, args.answer, args.aes_pwd,
                      args.stats_file, args.reset_go_after)

    def on_signal(signum, frame):
        backend.stop = True

    def lift_fault(signum, frame):
        if backend.reset_go_after is not None:
            backend.reset_go_after = None
            sys.stderr.write("mtproxy_testbackend: SIGUSR1: Go connections are no longer reset\n")
            sys.stderr.flush()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGUSR1, lift_fault)
    if args.answer == "echo":
        _aes_pwd, why = read_aes_pwd(args.aes_pwd)
        if why and args.aes_pwd:
            sys.stderr.write("mtproxy_testbackend: %s: C middle-proxy RPC connections will be closed\n" % why)
    try:
        backend.listen()
    except OSError as exc:
        sys.stderr.write("mtproxy_testbackend: %s\n" % exc.strerror)
        return 1
    print(json.dumps({"listening": backend.stats["listening"]}))
    sys.stdout.flush()
    stats = backend.run()
    print(json.dumps(stats, sort_keys=True))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
