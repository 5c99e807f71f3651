#!/usr/bin/env python3
"""Bounded MTProxy test client: real obfuscated2 clients (and junk) that make the counters move.

Connects only to loopback (127.0.0.0/8) and always stops by itself: at most --count connections
(hard cap 10000), at most --max-seconds of run time (hard cap 600), --rate connections per second
(hard cap 1000), at most --concurrency connections in flight (default 4, hard cap 64). Python 3.8+;
the obfuscated2 crypto needs ``cryptography`` (mtproxy_wire.py, installed next to this file).

Valid connections do what a real client does, for the proxy's secret (--secret HEX or
--secret-file PATH: a file like the binaries' --mtproto-secret-file, secrets separated by commas or
whitespace, the first one is used; required by every mode that makes valid connections, exit 2
without it; the secret is never printed): an obfuscated2 handshake for DC --dc (default 2) and
transport --transport (intermediate, default, or padded), then --packets encrypted MTProto
``req_pq_multi`` packets of 40 bytes (what both binaries forward; --payload-bytes is accepted for
old command lines and ignored). It then reads and decrypts the replies until it has one per packet
or --reply-timeout (default 0.3 s) has passed since its last packet, and keeps the connection
until at least --linger (default 0.15 s) after that packet before closing: the real C proxy
counts a packet (forwarded or dropped) only if its client is still connected some tens of ms
later (measured: 20 ms nothing, 100 ms all; with --reply-timeout 0 --linger 0, 10 packets on 5
connections moved no C counter and never reached the backend, while the Go port forwarded and
got answers for all 10 and counted ingress_write_errors +2..+5 (three runs) for replies to
clients already gone), and a reply left unread turns the close into a reset (the Go port counts
an ingress read error).

Modes:
  junk  each connection sends 64 random bytes (no secret yields a transport tag from them) and
        waits up to --linger for the proxy to close: Go ingress_invalid_frames +1 per connection;
        C shows no trace (as measured).
  obf   each connection is valid (as above). Per packet, with a reachable backend
        (tests/standin/mtproxy_testbackend.py): C tot_forwarded_queries (+ tot_forwarded_responses
        when it answers), Go forward_successful/outbound_sends (+ outbound_responses); without:
        C dropped_queries, Go dataplane_packets_dropped.
  mixed steady traffic for a service during SLO windows: keeps opening connections at --rate
        until --count or --max-seconds is reached; each one is junk with probability --junk-share
        (default 0.1), else valid. --rate is a ceiling: --concurrency worker threads share the
        connections, so slow or missing replies cost throughput only when all are waiting.
        Refused connects (proxy restarting) are counted and the run goes on.
  held  opens --count connections (the obfuscated2 handshake only, no packets; with --held-junk
        nothing is sent) and keeps them all open for --hold-seconds after the last one opened,
        then closes them (Go ingress_active_connections / C total_special_connections = count
        meanwhile).
junk and obf run their --count connections on the same --rate / --concurrency workers as mixed.

As a service during an SLO window, e.g.:
  mtproxy_testclient.py --port 443 --secret-file /etc/mtproxy/secret --mode mixed --rate 20 \
      --junk-share 0.1 --count 10000 --max-seconds 600

Prints one JSON line at the end: {"mode", "attempted", "connected", "refused", "errors",
"packets_sent", "junk", "obf", "handshakes", "replies", "unanswered", "closed_by_proxy",
"elapsed_s"} ("junk"/"obf": connections of each kind that connected; "handshakes": obfuscated2
headers sent; "replies": reply frames read and decrypted; "unanswered": packets sent without a
reply; "closed_by_proxy": obfuscated2 connections the proxy closed before their last reply, as the
Go port does to a handshake it cannot read, e.g. for another secret: the real C keeps such a
connection open, so there a wrong secret shows as unanswered packets). Sockets are TCP_NODELAY, as
real clients' are: each packet leaves at once instead of waiting behind the previous one's ACK.
Exit 0 when at least one connection succeeded (or --count 0), 1 otherwise, 2 on bad arguments
(a missing or malformed secret included). SIGTERM/SIGINT end the run early and still print the
summary (held connections are closed).
Sources: tests/standin/mtproxy_wire.py and the notes it cites (checked on the real C and Go builds).
"""
import argparse
import re
import ipaddress
import json
import os
import random
import re
import select
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mtproxy_wire as wire  # noqa: E402  (installed next to this file)

MAX_COUNT = 10000
MAX_SECONDS = 600.0
MAX_RATE = 1000.0
MAX_CONCURRENCY = 64
MAX_WAIT_S = 10.0
SECRET_RE = re.compile(r"(?i)\b(?:dd|ee)?[0-9a-f]{32}\b")
TRANSPORTS = {"intermediate": wire.TAG_INTERMEDIATE, "padded": wire.TAG_PADDED}
PLAIN_STARTS = (wire.TAG_INTERMEDIATE, wire.TAG_PADDED)


def junk_header(secret):
    """64 random bytes that are no handshake: no plain transport start, and no tag after
    decryption with the secret (nor without one, for a proxy without -S)."""
    secrets = [secret] if secret else []
    for _attempt in range(1000):
        data = os.urandom(64)
        if data[0] == 0xEF or data[:4] in PLAIN_STARTS:
            continue
        if wire.accept_handshake(data, secrets) is None and (not secrets or wire.accept_handshake(data, []) is None):
            return data
    raise RuntimeError("no junk header in 1000 draws")


def read_secret_file(path):
    """The first secret of a --mtproto-secret-file style file (ValueError/OSError otherwise)."""
    with open(path) as handle:
        words = [w for w in re.split(r"[\s,]+", handle.read()) if w]
    if not words:
        raise ValueError("no secret in the file")
    return wire.parse_secret(words[0])


class Run(object):
    def __init__(self, args):
        self.args = args
        self.secret = args.secret_bytes
        self.tag = TRANSPORTS[args.transport]
        self.stats = {"mode": args.mode, "attempted": 0, "connected": 0, "refused": 0, "errors": 0,
                      "packets_sent": 0, "junk": 0, "obf": 0, "handshakes": 0, "replies": 0, "unanswered": 0,
                      "closed_by_proxy": 0}
        self.lock = threading.Lock()
        self.stop = False
        self.next_index = 0
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.max_seconds

    def count(self, key, n=1):
        with self.lock:
            self.stats[key] += n

    def left(self):
        return self.deadline - time.monotonic()

    def over(self):
        return self.stop or self.left() <= 0

    def connect(self):
        self.count("attempted")
        try:
            sock = socket.create_connection((self.args.host, self.args.port),
                                            timeout=max(0.1, min(3.0, self.left())))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except ConnectionRefusedError:
            self.count("refused")
            return None
        except OSError:
            self.count("errors")
            return None
        self.count("connected")
        return sock

    def pace(self, index):
        """Sleep until connection number `index` is due at --rate; False when time is up."""
        if self.args.rate > 0:
            due = self.t0 + index / self.args.rate
            while not self.over() and time.monotonic() < due:
                time.sleep(min(0.05, max(0.0, due - time.monotonic())))
        return not self.over()

    def kind(self):
        if self.args.mode == "mixed":
            return "junk" if random.random() < self.args.junk_share else "obf"
        return self.args.mode

    def wait_readable(self, sock, until):
        """Wait for data (or EOF) on sock until the monotonic time `until`; False on timeout."""
        timeout = min(until, self.deadline) - time.monotonic()
        if timeout <= 0 or self.stop:
            return False
        readable, _w, _x = select.select([sock], [], [], min(timeout, 0.05))
        return bool(readable)

    def junk(self, sock):
        sock.sendall(junk_header(self.secret))
        until = time.monotonic() + self.args.linger
        while time.monotonic() < until and not self.over():
            if self.wait_readable(sock, until):
                try:
                    if not sock.recv(4096):
                        return  # the proxy closed it
                except ConnectionResetError:
                    return  # closed with a reset: just as rejected

    def obf(self, sock):
        header, encrypt, decrypt = wire.client_handshake(self.secret, self.tag, self.args.dc)
        sock.sendall(header)
        self.count("handshakes")
        reader = wire.FrameReader(self.tag)
        sent = replies = 0
        closed = False

        def read():
            """Reply frames in what arrived, None when the proxy closed (or reset) the connection."""
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                return None
            return len(reader.feed(decrypt.update(data))) if data else None

        try:
            for _packet in range(self.args.packets):
                if self.over():
                    break
                sock.sendall(encrypt.update(wire.encode_frame(self.tag, wire.req_pq_multi())))
                sent += 1
                self.count("packets_sent")
            last = time.monotonic()
            reply_until = last + self.args.reply_timeout
            while replies < sent and self.wait_readable_loop(sock, reply_until):
                got = read()
                if got is None:
                    closed = True
                    break
                replies += got
            linger_until = last + self.args.linger
            while not closed and time.monotonic() < linger_until and not self.over():
                if self.wait_readable(sock, linger_until):
                    got = read()
                    if got is None:
                        closed = True
                        break
                    replies += got
        except (BrokenPipeError, ConnectionResetError):
            closed = True  # the proxy had closed it before a packet went out
        except wire.WireError:
            self.count("errors")
        finally:
            self.count("replies", replies)
            self.count("unanswered", max(0, sent - replies))
            if closed and replies < sent:
                self.count("closed_by_proxy")

    def wait_readable_loop(self, sock, until):
        while time.monotonic() < until and not self.over():
            if self.wait_readable(sock, until):
                return True
        return False

    def one_shot(self, sock):
        kind = self.kind()
        self.count(kind)
        try:
            if kind == "junk":
                self.junk(sock)
            else:
                self.obf(sock)
        except OSError:
            self.count("errors")
        finally:
            close_quietly(sock)

    def worker(self):
        while True:
            with self.lock:
                index = self.next_index
                if index >= self.args.count:
                    return
                self.next_index += 1
            if not self.pace(index):
                return
            sock = self.connect()
            if sock is not None:
                self.one_shot(sock)

    def run_workers(self):
        threads = [threading.Thread(target=self.worker, daemon=True)
                   for _n in range(min(self.args.concurrency, max(1, self.args.count)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            # bounded: every step of a worker stops at the deadline; a little slack for a connect
            while thread.is_alive() and time.monotonic() < self.deadline + 5.0:
                thread.join(0.1)

    def run_held(self):
        held = []
        try:
            for index in range(self.args.count):
                if not self.pace(index):
                    break
                sock = self.connect()
                if sock is None:
                    continue
                try:
                    if not self.args.held_junk:
                        header, _encrypt, _decrypt = wire.client_handshake(self.secret, self.tag, self.args.dc)
                        sock.sendall(header)
                        self.count("handshakes")
                        self.count("obf")
                    else:
                        self.count("junk")
                except OSError:
                    self.count("errors")
                held.append(sock)
            if held:
                until = min(self.deadline, time.monotonic() + self.args.hold_seconds)
                while not self.stop and time.monotonic() < until:
                    time.sleep(min(0.05, max(0.0, until - time.monotonic())))
        finally:
            for sock in held:
                close_quietly(sock)

    def run(self):
        if self.args.mode == "held":
            self.run_held()
        else:
            self.run_workers()
        with self.lock:
            stats = dict(self.stats)
        stats["elapsed_s"] = round(time.monotonic() - self.t0, 3)
        return stats


def close_quietly(sock):
    """Read what already arrived (so the close is a FIN, not a reset), then close."""
    try:
        sock.setblocking(False)
        for _round in range(16):
            if not sock.recv(65536):
                break
    except OSError:
        pass
    sock.close()


def needs_secret(args):
    if args.mode == "obf":
        return True
    if args.mode == "mixed":
        return args.junk_share < 1.0
    return args.mode == "held" and not args.held_junk


class Parser(argparse.ArgumentParser):
    """argparse that never echoes a secret: a mistyped option (``--secrte HEX``) is quoted back
    with its hex value blanked out."""

    def error(self, message):
        super(Parser, self).error(SECRET_RE.sub("<redacted>", message))


def parse(argv):
    parser = Parser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("junk", "obf", "mixed", "held"), default="junk")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--rate", type=float, default=100.0, help="connections per second (0 = no pacing)")
    parser.add_argument("--concurrency", type=int, default=4, help="connections in flight (1..%d)" % MAX_CONCURRENCY)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--hold-seconds", type=float, default=5.0)
    parser.add_argument("--packets", type=int, default=2)
    parser.add_argument("--payload-bytes", type=int, default=40, help="ignored: packets are 40-byte req_pq_multi")
    parser.add_argument("--held-junk", action="store_true", help="held connections send nothing")
    parser.add_argument("--junk-share", type=float, default=0.1, help="mixed: share of junk connections (0..1)")
    parser.add_argument("--secret", metavar="HEX", help="the proxy's secret (32 hex digits)")
    parser.add_argument("--secret-file", metavar="PATH", help="file with the proxy's secrets; the first is used")
    parser.add_argument("--transport", choices=sorted(TRANSPORTS), default="intermediate")
    parser.add_argument("--dc", type=int, default=2, help="DC in the handshake (default 2)")
    parser.add_argument("--reply-timeout", type=float, default=0.3, help="seconds to wait for the replies")
    parser.add_argument("--linger", type=float, default=0.15, help="seconds a connection stays after its last packet")
    args = parser.parse_args(argv)
    try:
        if not ipaddress.ip_address(args.host).is_loopback:
            parser.error("--host must be a loopback address")
    except ValueError:
        parser.error("--host must be an IP address")
    if not 0 <= args.count <= MAX_COUNT:
        parser.error("--count must be 0..%d" % MAX_COUNT)
    if not 0 < args.max_seconds <= MAX_SECONDS:
        parser.error("--max-seconds must be in (0, %d]" % MAX_SECONDS)
    if not 0 <= args.rate <= MAX_RATE:
        parser.error("--rate must be 0..%d" % MAX_RATE)
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        parser.error("--concurrency must be 1..%d" % MAX_CONCURRENCY)
    if not 0 <= args.packets <= 1000 or not 0 <= args.payload_bytes <= 65536:
        parser.error("--packets must be 0..1000 and --payload-bytes 0..65536")
    if not 0.0 <= args.junk_share <= 1.0:
        parser.error("--junk-share must be 0..1")
    if not -32768 <= args.dc <= 32767:
        parser.error("--dc must be a 16-bit signed number")
    if not 0 <= args.reply_timeout <= MAX_WAIT_S or not 0 <= args.linger <= MAX_WAIT_S:
        parser.error("--reply-timeout and --linger must be 0..%d seconds" % MAX_WAIT_S)
    if args.secret and args.secret_file:
        parser.error("give --secret or --secret-file, not both")
    args.secret_bytes = None
    if args.secret:
        try:
            args.secret_bytes = wire.parse_secret(args.secret)
        except ValueError:
            parser.error("--secret must be 32 hex digits (optionally with a dd/ee prefix)")
    elif args.secret_file:
        try:
            args.secret_bytes = read_secret_file(args.secret_file)
        except (IOError, OSError) as exc:
            parser.error("cannot read --secret-file: %s" % (exc.strerror or exc))
        except ValueError:
            parser.error("--secret-file: the first secret is not 32 hex digits")
    if args.secret_bytes is None and needs_secret(args):
        parser.error("mode %s makes obfuscated2 connections: give the proxy's secret with --secret or --secret-file"
                     % args.mode)
    args.hold_seconds = max(0.0, min(args.hold_seconds, args.max_seconds))
    return args


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    run = Run(args)

    def on_signal(signum, frame):
        run.stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stats = run.run()
    print(json.dumps(stats, sort_keys=True))
    sys.stdout.flush()
    return 0 if stats["connected"] or args.count == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
