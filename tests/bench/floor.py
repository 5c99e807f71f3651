"""The floor of a flip: the same two binaries stopped and started by hand (no systemd, no Ansible).

Runs inside a test host. Takes the argv of the unit's running main process, stops the unit (not
measured), starts --from-binary with that argv, optionally holds --held client connections, starts
prober.py, then: SIGTERM to the old process, wait (--handover wait_exit: until it exited;
listeners_closed: until nothing listens on the client port any more), start --to-binary with the
same argv, wait until the port accepts. Stops the prober, ends both processes and starts the unit
again. Every wait is bounded. Prints one JSON line: the prober result plus stop_ms / start_ms.
Secrets in the argv are never printed.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
POLL_S = 0.001


def main_pid(unit):
    out = subprocess.run(['systemctl', 'show', unit, '-p', 'MainPID', '--value'], capture_output=True,
                         text=True, timeout=30, check=False).stdout.strip()
    return int(out or 0)


def cmdline(pid):
    with open('/proc/%d/cmdline' % pid, 'rb') as handle:
        raw = handle.read()
    return [w.decode('utf-8', 'surrogateescape') for w in raw.rstrip(b'\0').split(b'\0')]


def listening(port):
    """True unless a connect to 127.0.0.1:port is refused (reading /proc/net/tcp is slow with the
    prober's thousands of TIME_WAIT sockets)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(0.05)
    try:
        sock.connect(('127.0.0.1', port))
        return True
    except ConnectionRefusedError:
        return False
    except OSError:
        return True
    finally:
        sock.close()


def wait_until(check, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(POLL_S)
    raise SystemExit('floor: %s not within %ss' % (what, timeout))


def spawn(binary, args, workdir):
    return subprocess.Popen([binary] + args, cwd=workdir, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def end(proc, timeout=5.0):
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait(timeout=timeout)


def run(args):
    pid = main_pid(args.unit)
    if not pid:
        raise SystemExit('floor: %s has no main process' % args.unit)
    argv = cmdline(pid)[1:]
    subprocess.run(['systemctl', 'stop', args.unit], timeout=60, check=True)
    wait_until(lambda: not listening(args.port), 10, 'unit stopped')
    old = new = held = prober = None
    stop_file = '/tmp/floor-prober.stop'
    ready_file = '/tmp/floor-prober.ready'
    for path in (stop_file, ready_file):
        if os.path.exists(path):
            os.unlink(path)
    try:
        old = spawn(args.from_binary, argv, args.workdir)
        wait_until(lambda: listening(args.port), 15, 'old binary listening')
        time.sleep(0.3)
        if args.held:
            held = subprocess.Popen([sys.executable, args.client, '--port', str(args.port), '--mode', 'held',
                                     '--secret-file', args.secret_file,
                                     '--count', str(args.held), '--rate', '0', '--hold-seconds', '30',
                                     '--max-seconds', '40'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        prober = subprocess.Popen([sys.executable, os.path.join(HERE, 'prober.py'), '--port', str(args.port),
                                   '--max-seconds', '30', '--stop-file', stop_file, '--ready-file', ready_file],
                                  stdout=subprocess.PIPE, text=True)
        wait_until(lambda: os.path.exists(ready_file), 10, 'prober ready')
        time.sleep(0.1)
        t0 = time.monotonic()
        os.kill(old.pid, signal.SIGTERM)
        if args.handover == 'wait_exit':
            wait_until(lambda: old.poll() is not None, 30, 'old binary exited')
        else:
            wait_until(lambda: old.poll() is not None or not listening(args.port), 30, 'old listeners closed')
        stopped = time.monotonic()
        new = spawn(args.to_binary, argv, args.workdir)
        up = wait_until(lambda: listening(args.port), 15, 'new binary listening')
        time.sleep(0.1)
        open(stop_file, 'w').close()
        out, _err = prober.communicate(timeout=40)
        result = json.loads(out)
        result.update(stop_ms=round((stopped - t0) * 1000, 3), start_ms=round((up - stopped) * 1000, 3),
                      handover=args.handover, held=args.held)
        return result
    finally:
        for proc in (prober, held):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
        end(old)
        end(new)
        subprocess.run(['systemctl', 'start', args.unit], timeout=60, check=False)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--unit', default='MTProxy.service')
    parser.add_argument('--port', type=int, default=443)
    parser.add_argument('--from-binary', required=True)
    parser.add_argument('--to-binary', required=True)
    parser.add_argument('--workdir', default='/opt/MTProxy')
    parser.add_argument('--handover', choices=('wait_exit', 'listeners_closed'), default='wait_exit')
    parser.add_argument('--held', type=int, default=0, help='client connections held open during the flip')
    parser.add_argument('--client', default='/opt/mtproxy-testclient/mtproxy_testclient.py')
    parser.add_argument('--secret-file', default='/opt/mtproxy-testclient/client-secret',
                        help='the client secret of the proxy (held connections open with a real handshake)')
    args = parser.parse_args(argv)
    if not 0 <= args.held <= 1000:
        parser.error('--held must be 0..1000')
    return args


if __name__ == '__main__':
    print(json.dumps(run(parse(sys.argv[1:])), sort_keys=True))
