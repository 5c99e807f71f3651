"""Connect to HOST:PORT every --interval-ms and report how long the port refused connections.

HOST (--host, default 127.0.0.1, IPv6 written plainly, e.g. ::1) must be where the proxy binds its
client port: its --address when it has one, as the flip's own probes do.

Copied into a test host and run there while a flip happens. Bounded: stops after --max-seconds,
--max-attempts connects, or as soon as --stop-file exists (checked every 50 ms). Stdlib only,
Python 3.8+.

Prints one JSON line: attempts, accepted, refused, other_errors, window_ms (from the first refused
connect until the first accepted connect after the last refused one; 0 when nothing was refused),
runs (refused runs as [start_ms, end_ms] relative to the prober start, at most 20), elapsed_s.
"""
import argparse
import errno
import ipaddress
import json
import os
import socket
import sys
import time

MAX_SECONDS = 300.0
MAX_ATTEMPTS = 400000
MAX_RUNS_SHOWN = 20


def connect_once(host, port, timeout):
    """'ok', 'refused' or 'error' for one TCP connect."""
    sock = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
        return 'ok'
    except ConnectionRefusedError:
        return 'refused'
    except OSError as exc:
        return 'refused' if exc.errno == errno.ECONNREFUSED else 'error'
    finally:
        sock.close()


def probe(host, port, interval, max_seconds, max_attempts, stop_file, timeout=0.2):
    t0 = time.monotonic()
    deadline = t0 + max_seconds
    counts = {'attempts': 0, 'accepted': 0, 'refused': 0, 'other_errors': 0}
    runs = []
    run_start = None
    next_stop_check = t0
    next_at = t0
    while counts['attempts'] < max_attempts:
        now = time.monotonic()
        if now >= deadline:
            break
        if now >= next_stop_check:
            if stop_file and os.path.exists(stop_file):
                break
            next_stop_check = now + 0.05
        started = now
        outcome = connect_once(host, port, timeout)
        counts['attempts'] += 1
        if outcome == 'ok':
            counts['accepted'] += 1
            if run_start is not None:
                runs.append((run_start, started))
                run_start = None
        elif outcome == 'refused':
            counts['refused'] += 1
            if run_start is None:
                run_start = started
        else:
            counts['other_errors'] += 1
        next_at += interval
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            next_at = time.monotonic()
    end = time.monotonic()
    if run_start is not None:
        runs.append((run_start, end))
    window = (runs[-1][1] - runs[0][0]) if runs else 0.0
    result = dict(counts)
    result.update(
        window_ms=round(window * 1000.0, 3),
        unfinished=run_start is not None,
        runs=[[round((a - t0) * 1000.0, 3), round((b - t0) * 1000.0, 3)] for a, b in runs[:MAX_RUNS_SHOWN]],
        run_count=len(runs),
        elapsed_s=round(end - t0, 3),
        # CLOCK_MONOTONIC is the host's: a module's time stamps on the same host compare with it.
        started_monotonic=round(t0, 6),
    )
    return result


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--interval-ms', type=float, default=1.0)
    parser.add_argument('--max-seconds', type=float, default=60.0)
    parser.add_argument('--max-attempts', type=int, default=100000)
    parser.add_argument('--stop-file', default='')
    parser.add_argument('--ready-file', default='', help='created once probing has started')
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error('--host must be a loopback address')
    if not 0 < args.max_seconds <= MAX_SECONDS or not 0 < args.max_attempts <= MAX_ATTEMPTS:
        parser.error('--max-seconds must be in (0, %d], --max-attempts in (0, %d]' % (MAX_SECONDS, MAX_ATTEMPTS))
    if not 0.1 <= args.interval_ms <= 1000:
        parser.error('--interval-ms must be 0.1..1000')
    return args


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.ready_file:
        with open(args.ready_file, 'w') as handle:
            handle.write('%d\n' % os.getpid())
    result = probe(args.host, args.port, args.interval_ms / 1000.0, args.max_seconds, args.max_attempts,
                   args.stop_file)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == '__main__':
    sys.exit(main())
