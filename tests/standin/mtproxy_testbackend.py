#!/usr/bin/env python3
"""Bounded TCP sink that plays the MTProxy backends (proxy_for targets) for the stand-in.

Listens on loopback ports only (127.0.0.0/8), accepts connections, reads and discards everything,
never answers. With it running, the stand-in's backend targets on those ports are reachable and
client packets count as forwarded; stop it and they are dropped again. Python 3.8+ stdlib only.

Ports: --port (repeatable, or comma-separated) on --host, and/or --from-config PATH: every
``proxy_for N host:port;`` / ``proxy host:port;`` target of a proxy-multi.conf whose host is in
127.0.0.0/8 (others are skipped). Always stops by itself: after --max-seconds (default 3600, hard
cap 86400), or on SIGTERM/SIGINT. At most --max-connections (default 256, hard cap 4096) are open at
once; further connections are accepted and closed at once (counted as "rejected").

Prints one JSON line when listening: {"listening": ["127.0.0.1:PORT", ...]}, and one at the end:
{"listening", "accepted", "rejected", "bytes", "max_open", "elapsed_s"}. Exit 0 after a normal
run, 1 when a port cannot be bound (message on stderr), 2 on bad arguments.
"""
import argparse
import ipaddress
import json
import re
import selectors
import signal
import socket
import sys
import time

MAX_SECONDS = 86400.0
MAX_CONNECTIONS = 4096
TICK_S = 0.2
TARGET_RE = re.compile(r"^\s*proxy(?:_for\s+-?\d+)?\s+(\S+?)\s*;", re.MULTILINE)


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


class Sink(object):
    def __init__(self, targets, max_connections, max_seconds):
        self.targets = targets
        self.max_connections = max_connections
        self.deadline = time.monotonic() + max_seconds
        self.sel = selectors.DefaultSelector()
        self.open = set()
        self.stop = False
        self.stats = {"listening": ["%s:%d" % t for t in targets], "accepted": 0, "rejected": 0,
                      "bytes": 0, "max_open": 0}

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
                sock, _peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(self.open) >= self.max_connections:
                self.stats["rejected"] += 1
                sock.close()
                continue
            self.stats["accepted"] += 1
            sock.setblocking(False)
            self.open.add(sock)
            self.stats["max_open"] = max(self.stats["max_open"], len(self.open))
            self.sel.register(sock, selectors.EVENT_READ, self.on_read)

    def on_read(self, sock):
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            self.stats["bytes"] += len(data)
            return
        self.sel.unregister(sock)
        self.open.discard(sock)
        sock.close()

    def run(self):
        t0 = time.monotonic()
        while not self.stop and time.monotonic() < self.deadline:
            for key, _mask in self.sel.select(TICK_S):
                key.data(key.fileobj)
        for _round in range(16):  # count what already arrived before closing (bounded)
            events = self.sel.select(0)
            if not events:
                break
            for key, _mask in events:
                key.data(key.fileobj)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        self.stats["elapsed_s"] = round(time.monotonic() - t0, 3)
        return self.stats


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback address for --port (default 127.0.0.1)")
    parser.add_argument("--port", action="append", default=[], help="port(s) to listen on; repeatable, comma lists ok")
    parser.add_argument("--from-config", metavar="PATH", help="also listen on the loopback targets of this proxy-multi.conf")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--max-connections", type=int, default=256)
    args = parser.parse_args(argv)
    if not loopback(args.host):
        parser.error("--host must be an IPv4 loopback address (127.0.0.0/8)")
    if not 0 < args.max_seconds <= MAX_SECONDS:
        parser.error("--max-seconds must be in (0, %d]" % MAX_SECONDS)
    if not 1 <= args.max_connections <= MAX_CONNECTIONS:
        parser.error("--max-connections must be 1..%d" % MAX_CONNECTIONS)
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
    sink = Sink(args.targets, args.max_connections, args.max_seconds)

    def on_signal(signum, frame):
        sink.stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sink.listen()
    except OSError as exc:
        sys.stderr.write("mtproxy_testbackend: %s\n" % exc.strerror)
        return 1
    print(json.dumps({"listening": sink.stats["listening"]}))
    sys.stdout.flush()
    stats = sink.run()
    print(json.dumps(stats, sort_keys=True))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
