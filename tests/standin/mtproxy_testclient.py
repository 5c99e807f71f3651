#!/usr/bin/env python3
"""Bounded test client for the MTProxy stand-in: makes the client-side counters move.

Connects only to loopback (127.0.0.0/8) and always stops by itself: at most --count connections
(hard cap 10000), at most --max-seconds of run time (hard cap 600), --rate connections per second
(hard cap 1000). Python 3.8+ standard library only.

Modes:
  junk  each connection sends 64 random bytes (never a valid handshake) and closes:
        Go ingress_invalid_frames +1 per connection; C shows no trace (as measured).
  obf   each connection sends a stand-in-valid obfuscated2 header (intermediate transport,
        unencrypted) and --packets frames of --payload-bytes, then closes. Per packet, with a
        reachable backend (tests/standin/mtproxy_testbackend.py): C tot_forwarded_queries, Go
        forward_successful/outbound_sends +1; without: C dropped_queries, Go dataplane_packets_dropped.
  mixed steady traffic for a service during SLO windows: keeps opening connections at --rate
        until --count or --max-seconds is reached; each one is junk with probability --junk-share
        (default 0.1), else obf (as above). Connections are made one after the other, so --rate is
        a ceiling (an obf connection with the default 2 packets takes ~20 ms); refused connects
        (proxy restarting) are counted and the run goes on.
  held  opens --count connections (valid header unless --held-junk: nothing sent) and keeps them
        all open for --hold-seconds after the last one opened, then closes them
        (Go ingress_active_connections / C total_special_connections = count meanwhile).

As a service during an SLO window, e.g.:
  mtproxy_testclient.py --port 443 --mode mixed --rate 20 --junk-share 0.1 --count 10000 --max-seconds 600

Prints one JSON line at the end: {"mode", "attempted", "connected", "refused", "errors",
"packets_sent", "junk", "obf", "elapsed_s"} ("junk"/"obf": connections of each kind that connected).
Exit 0 when at least one connection succeeded (or --count 0), 1 otherwise, 2 on bad arguments.
SIGTERM/SIGINT end the run early and still print the summary (held connections are closed).
"""
import argparse
import ipaddress
import json
import os
import random
import signal
import socket
import struct
import sys
import time

MAX_COUNT = 10000
MAX_SECONDS = 600.0
MAX_RATE = 1000.0
INTERMEDIATE_TAG = b"\xee\xee\xee\xee"
VALID_TAGS = (b"\xef\xef\xef\xef", b"\xee\xee\xee\xee", b"\xdd\xdd\xdd\xdd")


def junk_header():
    while True:
        data = os.urandom(64)
        if data[56:60] not in VALID_TAGS:
            return data


def valid_header():
    return os.urandom(56) + INTERMEDIATE_TAG + os.urandom(4)


def frame(payload_bytes):
    return struct.pack("<I", payload_bytes) + os.urandom(payload_bytes)


class Run(object):
    def __init__(self, args):
        self.args = args
        self.stats = {"mode": args.mode, "attempted": 0, "connected": 0, "refused": 0, "errors": 0,
                      "packets_sent": 0, "junk": 0, "obf": 0}
        self.stop = False
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.max_seconds

    def left(self):
        return self.deadline - time.monotonic()

    def connect(self):
        self.stats["attempted"] += 1
        try:
            sock = socket.create_connection((self.args.host, self.args.port),
                                            timeout=max(0.1, min(3.0, self.left())))
        except ConnectionRefusedError:
            self.stats["refused"] += 1
            return None
        except OSError:
            self.stats["errors"] += 1
            return None
        self.stats["connected"] += 1
        return sock

    def pace(self, index):
        """Sleep until connection number `index` is due at --rate; False when time is up."""
        if self.args.rate > 0:
            due = self.t0 + index / self.args.rate
            while not self.stop and time.monotonic() < due:
                if self.left() <= 0:
                    return False
                time.sleep(min(0.05, max(0.0, due - time.monotonic())))
        return not self.stop and self.left() > 0

    def kind(self):
        if self.args.mode == "mixed":
            return "junk" if random.random() < self.args.junk_share else "obf"
        return self.args.mode

    def one_shot(self, sock):
        kind = self.kind()
        self.stats[kind] += 1
        try:
            if kind == "junk":
                sock.sendall(junk_header())
            else:
                sock.sendall(valid_header())
                for _packet in range(self.args.packets):
                    if self.stop or self.left() <= 0:
                        break
                    time.sleep(0.005)
                    sock.sendall(frame(self.args.payload_bytes))
                    self.stats["packets_sent"] += 1
                time.sleep(0.01)
        except OSError:
            self.stats["errors"] += 1
        finally:
            sock.close()

    def run(self):
        held = []
        try:
            for index in range(self.args.count):
                if not self.pace(index):
                    break
                sock = self.connect()
                if sock is None:
                    continue
                if self.args.mode != "held":
                    self.one_shot(sock)
                    continue
                try:
                    if not self.args.held_junk:
                        sock.sendall(valid_header())
                except OSError:
                    self.stats["errors"] += 1
                held.append(sock)
            if held:
                until = min(self.deadline, time.monotonic() + self.args.hold_seconds)
                while not self.stop and time.monotonic() < until:
                    time.sleep(min(0.05, max(0.0, until - time.monotonic())))
        finally:
            for sock in held:
                sock.close()
        self.stats["elapsed_s"] = round(time.monotonic() - self.t0, 3)
        return self.stats


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("junk", "obf", "mixed", "held"), default="junk")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--rate", type=float, default=100.0, help="connections per second (0 = no pacing)")
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--hold-seconds", type=float, default=5.0)
    parser.add_argument("--packets", type=int, default=2)
    parser.add_argument("--payload-bytes", type=int, default=40)
    parser.add_argument("--held-junk", action="store_true", help="held connections send nothing")
    parser.add_argument("--junk-share", type=float, default=0.1, help="mixed: share of junk connections (0..1)")
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
    if not 0 <= args.packets <= 1000 or not 0 <= args.payload_bytes <= 65536:
        parser.error("--packets must be 0..1000 and --payload-bytes 0..65536")
    if not 0.0 <= args.junk_share <= 1.0:
        parser.error("--junk-share must be 0..1")
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
