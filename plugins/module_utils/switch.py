# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Point a proxy service at the Go or the C binary, restart it, time the gap and prove the argv.

Pure parts (drop-in rendering, ExecStart splitting, argv proof, state transitions) are plain
functions; host parts go through ``Systemd`` (systemctl / journalctl via subprocess) and ``/proc``.
Every message that can carry text from the host is passed through ``redact_text`` first.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import errno
import json
import os
import socket
import subprocess
import time

from ansible_collections.mtproxy.cutover.plugins.module_utils.argv import redact_argv, redact_text
from ansible_collections.mtproxy.cutover.plugins.module_utils.baseline import FLAVORS, stats_version, why_unreadable
from ansible_collections.mtproxy.cutover.plugins.module_utils.judge import take_sample
from ansible_collections.mtproxy.cutover.plugins.module_utils.manifest import manifest_secrets
from ansible_collections.mtproxy.cutover.plugins.module_utils.unit import CUTOVER_DROPIN, EXEC_PREFIXES, parse_show

SCHEMA = 1
STATE_FILE = 'state.json'
MANIFEST_FILE = 'manifest.json'
SYSTEMD_DIR = '/etc/systemd/system'
HISTORY_LIMIT = 50
JOURNAL_LINES = 20
TARGETS = ('go', 'c')
METHODS = ('dropin', 'symlink')
DROPIN_HEADER = (
    '# Managed by mtproxy.cutover (mtproxy_switch): runs the Go binary with the unchanged C argv.\n'
    '# Removing this file (then systemctl daemon-reload and a restart) returns the service to the C binary.\n'
)
# How often the client port is probed while the new process starts, and how often systemd is asked
# whether it already gave up (asking costs a process spawn, so not on every probe).
PROBE_INTERVAL = 0.001
STATS_RETRY_INTERVAL = 0.2
STATS_CHECK_TIMEOUT = 5.0
STATE_CHECK_INTERVAL = 0.2
# How the old process is stopped before the new one starts (module option ``handover``):
# wait_exit waits for the unit to stop by itself; listeners_closed ends the old processes as soon as
# the client port refuses connections (the Go port drains open clients for ~2 s after closing it).
HANDOVERS = ('listeners_closed', 'wait_exit')
# A process that exits this soon after closing its listeners (C does in a few ms) ends by itself;
# only one that keeps draining is ended early. The Go port closes its listeners first thing on
# SIGTERM and then drains open clients for ~2 s, so a Go process gets no grace.
HANDOVER_GRACE = {'c': 0.02, 'go': 0.0}
# Where a unit's cgroup (systemctl show -p ControlGroup) can be found: the unified hierarchy, or its
# mount beside the v1 controllers on hybrid hosts.
CGROUP_ROOTS = ('/sys/fs/cgroup', '/sys/fs/cgroup/unified')


class SwitchError(Exception):
    """A failure whose message is already redacted; ``details`` go into the module result."""

    def __init__(self, message, **details):
        super(SwitchError, self).__init__(message)
        self.details = details


# ---------------------------------------------------------------------------------------------
# State directory files
# ---------------------------------------------------------------------------------------------

def service_state_dir(state_dir, service):
    return os.path.join(state_dir, service)


def load_manifest(state_dir, service):
    path = os.path.join(service_state_dir(state_dir, service), MANIFEST_FILE)
    try:
        with open(path) as handle:
            return json.load(handle)
    except (IOError, OSError):
        raise SwitchError('no freeze manifest at %s: run mtproxy_freeze for %s first' % (path, service))
    except ValueError:
        raise SwitchError('freeze manifest %s is not valid JSON' % path)


def load_state(state_dir, service):
    """The switch state, or None when the service was never switched. Never guessed from mtimes."""
    path = os.path.join(service_state_dir(state_dir, service), STATE_FILE)
    try:
        with open(path) as handle:
            state = json.load(handle)
    except (IOError, OSError):
        return None
    except ValueError:
        raise SwitchError('switch state %s is not valid JSON; fix or remove it' % path)
    if not isinstance(state, dict) or state.get('schema') != SCHEMA:
        raise SwitchError('switch state %s has an unknown schema (expected %d)' % (path, SCHEMA))
    return state


def write_atomic(path, data, mode):
    """Write ``data`` (str) to ``path`` via a temporary file in the same directory and rename."""
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, '.%s.tmp.%d' % (os.path.basename(path), os.getpid()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data.encode('utf-8'))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def save_state(state_dir, service, state):
    directory = service_state_dir(state_dir, service)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    os.chmod(directory, 0o700)
    write_atomic(os.path.join(directory, STATE_FILE), json.dumps(state, indent=2, sort_keys=True) + '\n', 0o600)


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).strftime('%Y-%m-%dT%H:%M:%SZ')


def transition(state, manifest, target, binary, method, timings, at, result='ok', extra_previous=None):
    """New state after a switch to ``target`` (pure). ``state`` may be None (first switch)."""
    old = dict(state or {})
    previous_good = old.get('previous_good')
    if target == 'go':
        previous_good = {'flavor': 'c', 'binary': frozen_argv(manifest)[0]}
        if extra_previous:
            previous_good.update(extra_previous)
    history = list(old.get('history') or [])
    history.append({'at': at, 'from': old.get('current'), 'to': target, 'binary': binary,
                    'method': method, 'result': result, 'timings': timings})
    return {
        'schema': SCHEMA,
        'current': target,
        'binary': binary,
        'method': method,
        'previous_good': previous_good,
        'history': history[-HISTORY_LIMIT:],
    }


def state_agrees(state, target, binary, method):
    return bool(state) and state.get('current') == target and state.get('binary') == binary \
        and state.get('method') == method


# ---------------------------------------------------------------------------------------------
# ExecStart and drop-in text
# ---------------------------------------------------------------------------------------------

def split_program(text):
    """(prefix, program, rest) of a raw ExecStart value; ``rest`` keeps every byte after the program.

    ``ExecStart=/opt/MTProxy/mtproto-proxy -u nobody`` -> ('', '/opt/MTProxy/mtproto-proxy', ' -u nobody').
    """
    if text.startswith('ExecStart='):
        text = text[len('ExecStart='):]
    text = text.lstrip(' \t')
    index = 0
    while index < len(text) and text[index] in EXEC_PREFIXES:
        index += 1
    prefix = text[:index]
    body = text[index:]
    if not body:
        raise SwitchError('ExecStart of the unit is empty')
    if body[0] in '"\'':
        end = body.find(body[0], 1)
        if end < 0:
            raise SwitchError('ExecStart program has an unterminated quote')
        return prefix, body[1:end], body[end + 1:]
    end = 0
    while end < len(body) and body[end] not in ' \t\n':
        end += 1
    return prefix, body[:end], body[end:]


def systemd_path_word(path):
    """``path`` written as one ExecStart word: % and $ escaped, quoted when it holds blanks."""
    if not path.startswith('/'):
        raise SwitchError('binary must be an absolute path, got %r' % path)
    if any(ch in path for ch in '"\'\\\n\r'):
        raise SwitchError('binary path contains a quote, backslash or newline: refusing to write it into a unit')
    word = path.replace('%', '%%').replace('$', '$$')
    if ' ' in word or '\t' in word:
        word = '"%s"' % word
    return word


def render_dropin(exec_start, go_binary):
    """Drop-in text that runs ``go_binary`` with the rest of the vendor ExecStart byte-identical."""
    prefix, _program, rest = split_program(exec_start)
    if '@' in prefix:
        # With "@" the next word is argv[0]; keeping it would hide which binary runs, so refuse.
        raise SwitchError('ExecStart uses the "@" prefix (explicit argv[0]); method=dropin does not support it')
    rest = rest.rstrip('\n')
    return '%s[Service]\nExecStart=\nExecStart=%s%s%s\n' % (DROPIN_HEADER, prefix, systemd_path_word(go_binary), rest)


def dropin_path(unit_name, systemd_dir=SYSTEMD_DIR):
    return os.path.join(systemd_dir, unit_name + '.d', CUTOVER_DROPIN)


def read_text(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def write_dropin(path, text, mode):
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    write_atomic(path, text, mode)


def remove_dropin(path):
    """Remove the drop-in and any temporary file a crashed write left behind. True if anything went."""
    removed = False
    directory = os.path.dirname(path)
    names = os.listdir(directory) if os.path.isdir(directory) else []
    tmp_prefix = '.%s.tmp.' % os.path.basename(path)
    for name in names:
        if name == os.path.basename(path) or name.startswith(tmp_prefix):
            os.unlink(os.path.join(directory, name))
            removed = True
    return removed


def fragment_mode(fragment_path):
    """Permission bits of the vendor unit file (the drop-in carries the same secret); 0600 if unknown."""
    try:
        return os.stat(fragment_path).st_mode & 0o777
    except (OSError, TypeError):
        return 0o600


def flip_symlink(link, target):
    """Point ``link`` at ``target`` atomically (new link at a temporary name, renamed over)."""
    tmp = os.path.join(os.path.dirname(link), '.%s.mtproxy-cutover.%d' % (os.path.basename(link), os.getpid()))
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.rename(tmp, link)


# ---------------------------------------------------------------------------------------------
# argv proof
# ---------------------------------------------------------------------------------------------

def read_shebang(path):
    """Interpreter words of a script's ``#!`` line, or None for a binary/unreadable file."""
    try:
        with open(path, 'rb') as handle:
            head = handle.read(256)
    except (IOError, OSError):
        return None
    if not head.startswith(b'#!'):
        return None
    line = head[2:].split(b'\n', 1)[0].decode('utf-8', 'replace').strip()
    if not line:
        return None
    # The kernel passes everything after the interpreter as one optional argument.
    parts = line.split(None, 1)
    return parts


def argv_matches(cmdline, expected):
    """True when the live argv equals ``expected`` word for word."""
    return list(cmdline) == list(expected)


def explain_mismatch(cmdline, expected, secrets):
    """One redacted sentence naming the first differing argv position."""
    live = list(cmdline)
    want = list(expected)
    shown_live = redact_argv(live)
    shown_want = redact_argv(want)
    for index in range(max(len(live), len(want))):
        got = live[index] if index < len(live) else None
        exp = want[index] if index < len(want) else None
        if got == exp:
            continue
        shown_got = shown_live[index] if got is not None else '<missing>'
        shown_exp = shown_want[index] if exp is not None else '<missing>'
        if shown_got == shown_exp:
            return 'argv differs at position %d in a secret value (both redacted)' % index
        return redact_text('argv differs at position %d: expected %r, live process has %r '
                           '(expected %d words, live %d)' % (index, shown_exp, shown_got, len(want), len(live)),
                           secrets)
    return 'argv is equal'


def frozen_argv(manifest):
    """The argv of the C process as frozen from /proc/<MainPID>/cmdline."""
    return list(manifest['argv'])


def expected_argv(manifest, target, binary, method):
    """The argv the restarted MainPID must have."""
    frozen = frozen_argv(manifest)
    if target == 'go' and method == 'dropin':
        return [binary] + frozen[1:]
    return frozen


# ---------------------------------------------------------------------------------------------
# /proc and sockets
# ---------------------------------------------------------------------------------------------

def read_cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            raw = handle.read()
    except (IOError, OSError):
        return None
    if not raw:
        return None
    return [word.decode('utf-8', 'surrogateescape') for word in raw.rstrip(b'\x00').split(b'\x00')]


def proc_exe(pid):
    try:
        return os.path.realpath('/proc/%d/exe' % pid)
    except OSError:
        return None


def pid_alive(pid):
    """False once the process is gone or only a zombie waiting for its reaper."""
    if not pid:
        return False
    try:
        with open('/proc/%d/stat' % pid) as handle:
            stat = handle.read()
    except (IOError, OSError):
        return False
    return stat.rsplit(')', 1)[-1].split()[0] != 'Z'


def parent_pid(pid):
    try:
        with open('/proc/%d/stat' % pid) as handle:
            return int(handle.read().rsplit(')', 1)[-1].split()[1])
    except (IOError, OSError, ValueError, IndexError):
        return None


def tcp_probe(port, host='127.0.0.1', timeout=0.05):
    """One TCP connect: 'accepts', 'refused' (nothing listens) or 'no_answer' (timeout, other error)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
        return 'accepts'
    except socket.timeout:
        return 'no_answer'
    except OSError as exc:
        return 'refused' if exc.errno == errno.ECONNREFUSED else 'no_answer'
    finally:
        sock.close()


def tcp_accepts(port, host='127.0.0.1', timeout=0.05):
    return tcp_probe(port, host, timeout) == 'accepts'


def port_refuses(port, host='127.0.0.1', timeout=0.05):
    """True only when a connect is actively refused; a timeout is not a refusal."""
    return tcp_probe(port, host, timeout) == 'refused'


def listening_inodes(port):
    """Socket inodes listening on TCP ``port`` (IPv4 and IPv6)."""
    inodes = set()
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            with open(table) as handle:
                lines = handle.readlines()[1:]
        except (IOError, OSError):
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == '0A' and int(fields[1].rsplit(':', 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def socket_holders(inodes):
    """PIDs that hold one of the socket ``inodes`` open."""
    wanted = set('socket:[%s]' % inode for inode in inodes)
    holders = set()
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        fd_dir = '/proc/%s/fd' % entry
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(os.path.join(fd_dir, fd)) in wanted:
                    holders.add(int(entry))
                    break
            except OSError:
                continue
    return holders


def descends_from(pid, ancestor, limit=64):
    for _step in range(limit):
        if pid == ancestor:
            return True
        if pid is None or pid <= 1:
            return False
        pid = parent_pid(pid)
    return False


def foreign_listeners(port, main_pid):
    """PIDs listening on ``port`` that are not ``main_pid`` or its descendants."""
    return sorted(pid for pid in socket_holders(listening_inodes(port)) if not descends_from(pid, main_pid))


# ---------------------------------------------------------------------------------------------
# systemd
# ---------------------------------------------------------------------------------------------

def run(argv, timeout=60):
    """(rc, stdout, stderr) of a command; never raises for a missing command or a timeout."""
    env = dict(os.environ, LC_ALL='C', SYSTEMD_PAGER='', SYSTEMD_COLORS='0')
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    except OSError as exc:
        return 127, '', '%s: %s' % (argv[0], exc)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return 124, out.decode('utf-8', 'replace'), 'timed out after %ss' % timeout
    return proc.returncode, out.decode('utf-8', 'replace'), err.decode('utf-8', 'replace')


def journal_tail(unit, since_epoch=None, lines=JOURNAL_LINES, secrets=(), settle=0.3):
    """Last ``lines`` journal lines of ``unit`` (message text only), redacted.

    journald receives a fast-exiting process's output asynchronously, so read again after ``settle``
    seconds and keep the longer answer.
    """
    argv = ['journalctl', '--no-pager', '-o', 'cat', '-u', unit, '-n', str(lines)]
    if since_epoch:
        argv += ['--since', '@%d' % int(since_epoch)]
    best = []
    for attempt in range(2):
        if attempt:
            time.sleep(settle)
        rc, out, _err = run(argv, timeout=15)
        got = [line for line in out.splitlines() if line.strip()] if rc == 0 else []
        if len(got) >= len(best):
            best = got
    return [redact_text(line, list(secrets)) for line in best[-lines:]]


class Systemd:
    """The few systemctl calls the switch needs."""

    def __init__(self, unit):
        self.unit = unit

    def show(self, *props):
        rc, out, err = run(['systemctl', 'show', self.unit, '-p', ','.join(props)], timeout=30)
        if rc != 0:
            raise SwitchError('systemctl show %s failed: %s' % (self.unit, err.strip()))
        return parse_show(out)

    def main_pid(self):
        try:
            return int(self.show('MainPID').get('MainPID') or 0)
        except ValueError:
            return 0

    def call(self, *args, **kwargs):
        return run(['systemctl'] + list(args) + [self.unit], timeout=kwargs.get('timeout', 60))

    def daemon_reload(self):
        rc, _out, err = run(['systemctl', 'daemon-reload'], timeout=120)
        if rc != 0:
            raise SwitchError('systemctl daemon-reload failed: %s' % err.strip())


def describe_unit_state(props):
    """Short host-side cause from systemctl show properties."""
    text = '%s is %s/%s' % (props.get('Id', 'unit'), props.get('ActiveState', '?'), props.get('SubState', '?'))
    if props.get('Result') and props.get('Result') != 'success':
        text += ', result %s' % props['Result']
    code = props.get('ExecMainCode')
    status = props.get('ExecMainStatus')
    if code == '1':
        text += ', main process exited with status %s' % status
    elif code in ('2', '3'):
        text += ', main process killed by signal %s' % status
    return text


# ---------------------------------------------------------------------------------------------
# Restart and measure
# ---------------------------------------------------------------------------------------------

def ms(seconds):
    return round(seconds * 1000.0, 3)


def kill_unit(systemd, cgroup):
    """SIGKILL every process of the unit; returns how ('cgroup.kill' or 'systemctl').

    What ``systemctl kill --signal=SIGKILL`` does, but through the cgroup's ``cgroup.kill`` file when
    the kernel has one (5.14+): no client process to spawn and no D-Bus round trip while clients
    are refused. systemd sees the same thing either way: its processes died of SIGKILL.
    """
    if cgroup:
        for root in CGROUP_ROOTS:
            try:
                with open(os.path.join(root, cgroup.lstrip('/'), 'cgroup.kill'), 'w') as handle:
                    handle.write('1')
                return 'cgroup.kill'
            except (IOError, OSError):
                continue
    run(['systemctl', 'kill', '--signal=SIGKILL', systemd.unit], timeout=30)
    return 'systemctl'


def await_old_exit(systemd, job, old_pid, t0, stop_timeout, watch_port=None, cgroup=None,
                   grace=HANDOVER_GRACE['c']):
    """Follow the stop half of a restart job until the old main process is gone.

    Returns (gone_at, killed, handover_at, ended_early). Past ``stop_timeout`` the unit is
    SIGKILLed via systemctl kill, the same thing systemd's own stop timeout does. With
    ``watch_port`` (a client port the old process listened on) its processes are SIGKILLed (same
    call) once that port refuses connections while the old main process still runs ``grace``
    seconds later (it is draining); ``handover_at`` is then the moment the port
    refused, else None, and ``ended_early`` tells whether that SIGKILL was sent.
    """
    gone_at = None
    handover_at = None
    ended_early = False
    killed = False
    deadline = t0 + stop_timeout
    while True:
        now = time.monotonic()
        # The job before the process: a job that failed while the old process was still seen
        # running failed to stop it; one that ends just after (the start half failing at once) is
        # seen next round, with the process gone, as the failed start it is.
        job_state = job.poll()
        if not pid_alive(old_pid):
            gone_at = now
            break
        if job_state not in (None, 0):
            _out, err = job.communicate()
            raise SwitchError('systemctl restart %s failed while stopping the old process: %s'
                              % (systemd.unit, to_text(err).strip() or 'exit %s' % job.returncode))
        if watch_port and handover_at is None and port_refuses(watch_port):
            handover_at = time.monotonic()
        if (handover_at is not None and not ended_early and not killed
                and now - handover_at >= grace and pid_alive(old_pid)):
            # Listeners are closed and the old process still drains: new clients are refused until
            # the new binary runs, so do not wait for the drain.
            kill_unit(systemd, cgroup)
            ended_early = True
        if now > deadline and not killed:
            run(['systemctl', 'kill', '--signal=SIGKILL', systemd.unit], timeout=30)
            killed = True
            deadline = now + 30
        elif now > deadline:
            job.kill()
            job.communicate()
            raise SwitchError('%s did not stop within %ss even after SIGKILL' % (systemd.unit, stop_timeout + 30))
        time.sleep(PROBE_INTERVAL)
    return gone_at, killed, handover_at, ended_early


def to_text(data):
    return data.decode('utf-8', 'replace') if isinstance(data, bytes) else (data or '')


def wait_listening(systemd, port, deadline, job=None):
    """Probe 127.0.0.1:port until it accepts; (accepted_at or None, last show props or None).

    Gives up early when systemd says the unit failed or stopped; while a restart ``job`` still runs
    the unit passes through inactive/failed on its way from stop to start, so that only counts
    once the job is done (or when there is no job to wait for).
    """
    next_check = time.monotonic() + STATE_CHECK_INTERVAL
    props = None
    while time.monotonic() < deadline:
        if tcp_accepts(port):
            return time.monotonic(), props
        job_state = job.poll() if job is not None else 0
        if job_state not in (None, 0):
            return None, systemd.show(*UNIT_STATE_PROPS)
        if job_state == 0 and time.monotonic() >= next_check:
            props = systemd.show(*UNIT_STATE_PROPS)
            if props.get('ActiveState') in ('failed', 'inactive'):
                return None, props
            next_check = time.monotonic() + STATE_CHECK_INTERVAL
        time.sleep(PROBE_INTERVAL)
    return None, props


UNIT_STATE_PROPS = ('Id', 'ActiveState', 'SubState', 'Result', 'ExecMainCode', 'ExecMainStatus', 'MainPID')


def restart_measured(systemd, client_port, stats_port, listen_timeout, stop_timeout, handover='wait_exit',
                     old_flavor='c'):
    """Restart the unit, wait for the client port (then the stats port). Returns (timings, failure or None).

    One ``systemctl restart`` job: systemd stops the unit (ExecStop=, KillMode=, KillSignal= apply,
    Restart= does not fire) and starts it again as soon as the stop is done, with no client round
    trip in between, which is what clients would otherwise be refused for.
    """
    props = systemd.show('MainPID', 'ControlGroup')
    old_pid = int(props.get('MainPID') or 0)
    # Before the restart: clears the start rate limit and a failed state without adding a systemctl
    # round trip to the time clients are refused.
    run(['systemctl', 'reset-failed', systemd.unit], timeout=30)
    watch_port = client_port if (handover == 'listeners_closed' and pid_alive(old_pid)
                                 and tcp_accepts(client_port)) else None
    t0 = time.monotonic()
    job = subprocess.Popen(['systemctl', 'restart', systemd.unit], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        gone_at, killed, handover_at, ended_early = await_old_exit(systemd, job, old_pid, t0, stop_timeout,
                                                                   watch_port, props.get('ControlGroup'),
                                                                   HANDOVER_GRACE.get(old_flavor, HANDOVER_GRACE['c']))
        deadline = gone_at + listen_timeout
        accepted_at, props = wait_listening(systemd, client_port, deadline, job)
        timings = {'stop_ms': ms(gone_at - t0), 'start_ms': None, 'unavailable_ms': None, 'stats_ms': None,
                   'spawn_ms': None, 'binary_start_ms': None,
                   'killed_after_stop_timeout': killed, 'handover': handover,
                   'listeners_closed_ms': ms(handover_at - t0) if handover_at is not None else None,
                   'ended_after_listeners_closed': ended_early}
        try:
            _out, err = job.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            job.kill()
            _out, err = job.communicate()
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    if accepted_at is None:
        props = systemd.show(*UNIT_STATE_PROPS)
        cause = describe_unit_state(props)
        if job.returncode not in (None, 0) and to_text(err).strip():
            cause += ' (systemctl restart: %s)' % to_text(err).strip().splitlines()[0]
        if props.get('ActiveState') == 'active':
            cause += ', but 127.0.0.1:%d did not accept connections within %ss' % (client_port, listen_timeout)
        return timings, cause
    timings['start_ms'] = ms(accepted_at - gone_at)
    timings['unavailable_ms'] = ms(accepted_at - t0)
    if stats_port:
        stats_at, _props = wait_listening(systemd, stats_port, max(deadline, time.monotonic() + 1.0))
        if stats_at is None:
            return timings, ('client port %d accepts but the stats port 127.0.0.1:%d did not accept within %ss '
                             '(Go keeps running without a stats server when that port is busy)'
                             % (client_port, stats_port, listen_timeout))
        timings['stats_ms'] = ms(stats_at - gone_at)
    timings.update(spawn_split(systemd, t0, gone_at, accepted_at))
    return timings, None


def spawn_split(systemd, t0, gone_at, accepted_at):
    """Split start_ms into systemd's part and the binary's: when systemd forked the new main process.

    systemd stamps ExecMainStartTimestampMonotonic (CLOCK_MONOTONIC, as time.monotonic()) at the
    fork. Read after the port accepts, so it costs clients nothing. None when the stamp is missing
    or not from this restart (before ``t0``, after the accept: another process, another clock).
    ``gone_at`` is when the poll saw the old process gone; a poll that ran late can see that after
    the fork, and then all of start_ms is the binary's.
    """
    try:
        forked_at = int(systemd.show('ExecMainStartTimestampMonotonic').get('ExecMainStartTimestampMonotonic')
                        or 0) / 1e6
    except (SwitchError, ValueError):
        forked_at = 0
    if not t0 <= forked_at <= accepted_at:
        return {'spawn_ms': None, 'binary_start_ms': None}
    forked_at = max(forked_at, gone_at)
    return {'spawn_ms': ms(forked_at - gone_at), 'binary_start_ms': ms(accepted_at - forked_at)}


# ---------------------------------------------------------------------------------------------
# The switch
# ---------------------------------------------------------------------------------------------

class Pointing:
    """Where the unit points now and where it should point: a drop-in text or a symlink target."""

    def __init__(self, method, path, current, desired, mode=None, link_frozen=None):
        self.method = method
        self.path = path
        self.current = current
        self.desired = desired
        self.mode = mode
        self.link_frozen = link_frozen

    @property
    def ok(self):
        if self.method == 'symlink':
            return os.path.realpath(self.path) == os.path.realpath(self.desired)
        return self.current == self.desired

    def diff(self, secrets):
        if self.method == 'symlink':
            return {'before_header': self.path, 'after_header': self.path,
                    'before': '%s -> %s\n' % (self.path, self.current),
                    'after': '%s -> %s\n' % (self.path, self.desired)}
        return {'before_header': self.path if self.current is not None else '%s (absent)' % self.path,
                'after_header': self.path if self.desired is not None else '%s (absent)' % self.path,
                'before': redact_text(self.current or '', secrets),
                'after': redact_text(self.desired or '', secrets)}

    def apply(self):
        if self.method == 'symlink':
            flip_symlink(self.path, self.desired)
        elif self.desired is None:
            remove_dropin(self.path)
        else:
            write_dropin(self.path, self.desired, self.mode)


def exec_program(manifest):
    return split_program(manifest['unit']['exec_start'])[1]


def plan_pointing(manifest, state, target, binary, method, systemd_dir=SYSTEMD_DIR):
    unit = manifest['unit']
    if method == 'dropin':
        path = dropin_path(manifest['unit_name'], systemd_dir)
        desired = render_dropin(unit['exec_start'], binary) if target == 'go' else None
        return Pointing('dropin', path, read_text(path), desired, fragment_mode(unit.get('fragment_path')))
    link = exec_program(manifest)
    if not os.path.islink(link):
        raise SwitchError('method=symlink needs the ExecStart binary %s to be a symlink (current -> release), '
                          'but it is not; use method=dropin or lay the binary out as a symlink first' % link)
    frozen = ((state or {}).get('previous_good') or {}).get('link_target') or manifest.get('binary_realpath')
    desired = binary if target == 'go' else frozen
    return Pointing('symlink', link, os.readlink(link), desired, link_frozen=frozen)


def prove_process(manifest, target, binary, method, pid, secrets):
    """(matches, explanation or None) for the live MainPID."""
    cmdline = read_cmdline(pid) if pid else None
    if not cmdline:
        return False, 'no live main process (MainPID %s)' % pid
    expected = expected_argv(manifest, target, binary, method)
    if not argv_matches(cmdline, expected):
        return False, explain_mismatch(cmdline, expected, secrets)
    if method == 'symlink':
        exec_path = exec_program(manifest)
        want = os.path.realpath(binary if target == 'go' else exec_path)
        exe = proc_exe(pid)
        # A script's /proc/PID/exe is its interpreter; then the link it was started through must resolve.
        if exe != want and not (read_shebang(exec_path) and os.path.realpath(exec_path) == want):
            return False, 'process %d runs %s, expected %s' % (pid, exe, want)
    return True, None


def read_stats_flavor(url, timeout_s, take=None, clock=time.monotonic, sleep=time.sleep):
    """(flavor, version, None) of the binary answering ``url``, or (None, None, why).

    Retries every STATS_RETRY_INTERVAL until a body parses or ``timeout_s`` is spent: a binary that
    just bound its stats port may not serve a full body at once. Bounded by timeout_s plus one scrape.
    """
    take = take or take_sample
    deadline = clock() + timeout_s
    while True:
        sample = take(url)
        if sample.get('parsed') is not None:
            return sample['parsed'].flavor, stats_version([sample]) or None, None
        if clock() + STATS_RETRY_INTERVAL > deadline:
            return None, None, why_unreadable(url, [sample])
        sleep(STATS_RETRY_INTERVAL)


def check_stats_flavor(result, target, timeout_s, service):
    """Prove that the binary answering the manifest's stats URL is ``target``; fills stats_flavor."""
    url = result.get('stats_url')
    if not url:
        raise SwitchError('%s: the manifest has no stats URL to prove the %s binary with (stats_check=false '
                          'skips the proof)' % (service, FLAVORS[target]), **result)
    flavor, version, why = read_stats_flavor(url, timeout_s)
    result.update(stats_flavor=flavor, stats_version=version)
    if flavor != target:
        raise SwitchError('%s should run the %s binary now, but %s' % (
            service, FLAVORS[target], why or '/stats answers as the %s binary' % FLAVORS.get(flavor, flavor)),
            **result)
    return result


def switch_service(service, state_dir, target, binary=None, method='dropin', listen_timeout=15.0,
                   stop_timeout=30.0, check_mode=False, systemd_dir=SYSTEMD_DIR, force_restart=False,
                   journal_lines=0, handover='listeners_closed', stats_check=True):
    """Point ``service`` at ``target`` and restart it; returns the module result (without secrets).

    With ``stats_check`` (not in check mode) the result is then proven by /stats: the binary
    answering the manifest's stats URL must be the target's (``stats_flavor``).
    """
    result = _switch(service, state_dir, target, binary, method, listen_timeout, stop_timeout, check_mode,
                     systemd_dir, force_restart, journal_lines, handover)
    if stats_check and not check_mode:
        check_stats_flavor(result, target, min(float(listen_timeout), STATS_CHECK_TIMEOUT), service)
    return result


def _switch(service, state_dir, target, binary, method, listen_timeout, stop_timeout, check_mode, systemd_dir,
            force_restart, journal_lines, handover):
    if target not in TARGETS:
        raise SwitchError('target must be one of %s' % ', '.join(TARGETS))
    if method not in METHODS:
        raise SwitchError('method must be one of %s' % ', '.join(METHODS))
    if handover not in HANDOVERS:
        raise SwitchError('handover must be one of %s' % ', '.join(HANDOVERS))
    manifest = load_manifest(state_dir, service)
    state = load_state(state_dir, service)
    secrets = manifest_secrets(manifest)
    if target == 'go':
        if not binary:
            raise SwitchError('target=go needs binary (the staged Go binary on the host)')
        if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
            raise SwitchError('Go binary %s is missing or not executable on the host' % binary)
    else:
        binary = frozen_argv(manifest)[0]
    systemd = Systemd(manifest['unit_name'])
    pointing = plan_pointing(manifest, state, target, binary, method, systemd_dir)
    extra_previous = {'link_target': pointing.link_frozen} if method == 'symlink' else None

    props = systemd.show('ActiveState', 'MainPID', 'NeedDaemonReload')
    main_pid = int(props.get('MainPID') or 0)
    live_ok = props.get('ActiveState') == 'active' and props.get('NeedDaemonReload') != 'yes' \
        and prove_process(manifest, target, binary, method, main_pid, secrets)[0]
    result = {
        'changed': False, 'target': target, 'binary': binary, 'method': method, 'timings': None,
        'argv_matches': live_ok, 'main_pid': main_pid, 'restarted': False,
        'previous_good': (state or {}).get('previous_good'),
        'dropin_path': pointing.path if method == 'dropin' else None,
        'diff': pointing.diff(secrets),
        'stats_url': manifest.get('stats_url'),
        'client_ports': manifest.get('client_ports') or [],
        'stats_flavor': None, 'stats_version': None,
        'journal': [],
    }
    in_place = pointing.ok and live_ok and state_agrees(state, target, binary, method)
    if in_place and not force_restart:
        return result
    result['changed'] = True
    if check_mode:
        if target == 'go':
            result['previous_good'] = transition(state, manifest, target, binary, method, None, now_iso(),
                                                 extra_previous=extra_previous)['previous_good']
        return result

    if journal_lines:
        # What the outgoing process logged, for the incident note, before the restart adds to it.
        result['journal'] = journal_tail(systemd.unit, lines=journal_lines, secrets=secrets, settle=0)
    if pointing.ok and live_ok and not force_restart:
        # Unit and process are already right, only the record is missing: no client-visible restart.
        new_state = transition(state, manifest, target, binary, method, None, now_iso(), 'recorded',
                               extra_previous)
        save_state(state_dir, service, new_state)
        result['previous_good'] = new_state['previous_good']
        return result

    pointing.apply()
    systemd.daemon_reload()
    new_state = transition(state, manifest, target, binary, method, None, now_iso(), 'pending', extra_previous)
    save_state(state_dir, service, new_state)
    result['previous_good'] = new_state['previous_good']

    since = time.time() - 1
    client_port = (manifest.get('client_ports') or [None])[0]
    if not client_port:
        raise SwitchError('the manifest has no client port to wait for')
    try:
        timings, failure = restart_measured(systemd, int(client_port), manifest.get('stats_port'),
                                            float(listen_timeout), float(stop_timeout), handover,
                                            old_flavor=(state or {}).get('current') or 'c')
    except SwitchError as exc:
        raise SwitchError(redact_text(str(exc), secrets), changed=True, target=target, binary=binary, method=method)
    result.update(timings=timings, restarted=True)
    main_pid = systemd.main_pid()
    result['main_pid'] = main_pid
    if failure is None:
        foreign = foreign_listeners(int(client_port), main_pid)
        if foreign:
            failure = 'client port %d is held by pid %s outside %s' % (
                client_port, ', '.join(str(p) for p in foreign), systemd.unit)
    if failure is None:
        matches, why = prove_process(manifest, target, binary, method, main_pid, secrets)
        result['argv_matches'] = matches
        if not matches:
            failure = 'the restarted process does not run the expected argv: %s' % why
    new_state['history'][-1].update(result='ok' if failure is None else 'failed', timings=timings)
    save_state(state_dir, service, new_state)
    if failure is not None:
        journal = journal_tail(systemd.unit, since, secrets=secrets)
        message = ('%s did not come up on %s (%s): %s. The unit is left pointed at %s; switch back with '
                   'target=c. Last journal lines of %s:\n%s' % (
                       systemd.unit, target, binary, redact_text(failure, secrets), target, systemd.unit,
                       '\n'.join(journal) or '(journal empty)'))
        details = dict(result)
        # The unit was repointed and restarted even though the new binary failed.
        details.update(journal=journal, changed=True)
        raise SwitchError(message, **details)
    return result
