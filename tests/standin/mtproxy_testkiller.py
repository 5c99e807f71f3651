#!/usr/bin/env python3
"""Bounded test tool that crashes a service's binary from outside, as the OOM killer does.

Watches one systemd unit (--unit, default MTProxy.service). Whenever the unit's main process runs a
binary whose file name is --binary-name (default mtproto-proxy-go: the Go release the cutover
installs; argv[0] of /proc/PID/cmdline, which the real builds and the stand-in both show as the
path systemd ran), it sends SIGKILL to every process of the unit (``systemctl kill
--signal=SIGKILL``: the whole control group, like an OOM kill of a unit with memory.oom.group)
--after-s seconds (default 1) after it first saw that main process. The unit's own Restart= decides
what follows; every new main process of that binary is killed the same way, so the fault stays
until the unit runs another binary (a rollback to C). The same on any build: nothing in the
binary is asked to fail.

Bounded: at most --max-kills kills (default 50, hard cap 1000), then it only watches; it stops by
itself after --max-seconds (default 3600, hard cap 86400) or on SIGTERM/SIGINT. Polls every
--poll-s (default 0.1 s). Python 3.8+ standard library and systemctl.

One JSON line per kill on stdout ({"killed_pid", "binary", "alive_s", "kills"}, the journal keeps
them) and a summary at the end ({"unit", "binary_name", "kills", "seen", "elapsed_s"}; "seen":
main processes of that binary). With --stats-file PATH the summary is also rewritten there after
each kill (atomically). Exit 0 after a normal run, 2 on bad arguments.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

MAX_SECONDS = 86400.0
MAX_KILLS = 1000
SYSTEMCTL_TIMEOUT_S = 10


def main_pid(unit):
    try:
        out = subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", unit], capture_output=True,
                             text=True, timeout=SYSTEMCTL_TIMEOUT_S, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return int(out) if out.isdigit() else 0


def binary_of(pid):
    """argv[0] of a process, or None when it is gone (or a kernel thread)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    word = raw.split(b"\0", 1)[0]
    return word.decode("utf-8", "replace") if word else None


class Killer(object):
    def __init__(self, unit, binary_name, after_s, max_kills, max_seconds, stats_file=None):
        self.unit = unit
        self.binary_name = binary_name
        self.after_s = after_s
        self.max_kills = max_kills
        self.stats_file = stats_file
        self.t0 = time.monotonic()
        self.deadline = self.t0 + max_seconds
        self.first_seen = {}
        self.kills = 0
        self.stop = False

    def summary(self):
        return {"unit": self.unit, "binary_name": self.binary_name, "kills": self.kills,
                "seen": len(self.first_seen), "elapsed_s": round(time.monotonic() - self.t0, 3)}

    def write_stats(self):
        if not self.stats_file:
            return
        tmp = "%s.%d.tmp" % (self.stats_file, os.getpid())
        with open(tmp, "w") as handle:
            handle.write(json.dumps(self.summary(), sort_keys=True) + "\n")
        os.replace(tmp, self.stats_file)

    def step(self, now):
        pid = main_pid(self.unit)
        if not pid:
            return
        binary = binary_of(pid)
        if binary is None or os.path.basename(binary) != self.binary_name:
            return
        seen = self.first_seen.setdefault(pid, now)
        if self.kills >= self.max_kills or now - seen < self.after_s:
            return
        # Only if the main process is still the one seen: a restart in between starts a new clock.
        if main_pid(self.unit) != pid:
            return
        subprocess.run(["systemctl", "kill", "--signal=SIGKILL", self.unit], capture_output=True,
                       timeout=SYSTEMCTL_TIMEOUT_S, check=False)
        self.kills += 1
        print(json.dumps({"killed_pid": pid, "binary": binary, "alive_s": round(now - seen, 3),
                          "kills": self.kills}, sort_keys=True))
        sys.stdout.flush()
        self.write_stats()

    def run(self, poll_s):
        self.write_stats()
        while not self.stop and time.monotonic() < self.deadline:
            try:
                self.step(time.monotonic())
            except subprocess.TimeoutExpired:
                pass
            time.sleep(poll_s)
        self.write_stats()
        return self.summary()


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--unit", default="MTProxy.service")
    parser.add_argument("--binary-name", default="mtproto-proxy-go",
                        help="file name of the binary whose processes are killed (default mtproto-proxy-go)")
    parser.add_argument("--after-s", type=float, default=1.0, help="seconds a main process lives (default 1)")
    parser.add_argument("--max-kills", type=int, default=50)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--poll-s", type=float, default=0.1)
    parser.add_argument("--stats-file", metavar="PATH")
    args = parser.parse_args(argv)
    if not args.binary_name or "/" in args.binary_name:
        parser.error("--binary-name is a file name, without a directory")
    if not 0 <= args.after_s <= 3600:
        parser.error("--after-s must be in [0, 3600]")
    if not 0 <= args.max_kills <= MAX_KILLS:
        parser.error("--max-kills must be 0..%d" % MAX_KILLS)
    if not 0 < args.max_seconds <= MAX_SECONDS:
        parser.error("--max-seconds must be in (0, %d]" % MAX_SECONDS)
    if not 0.01 <= args.poll_s <= 10:
        parser.error("--poll-s must be in [0.01, 10]")
    return args


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    killer = Killer(args.unit, args.binary_name, args.after_s, args.max_kills, args.max_seconds, args.stats_file)

    def on_signal(signum, frame):
        killer.stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    summary = killer.run(args.poll_s)
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
