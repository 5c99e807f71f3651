# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What talks to the host: systemctl and journalctl, ``/proc`` readers, TCP probes, file writes.

The flip (``switch.py``), the ways of pointing a service at its binary (``pointing.py``) and the
pre-warm (``prewarm.py``) sit above this module; it knows nothing of manifests, targets or methods.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import errno
import os
import socket
import subprocess
import time

from ansible_collections.mtproxy.cutover.plugins.module_utils.argv import LOOPBACK_V4, redact_text, unsplit_cmdline
from ansible_collections.mtproxy.cutover.plugins.module_utils.unit import drop_in_paths, parse_show, parse_show_exec

# Where a unit's cgroup (systemctl show -p ControlGroup) can be found: the unified hierarchy, or its
# mount beside the v1 controllers on hybrid hosts.
CGROUP_ROOTS = ('/sys/fs/cgroup', '/sys/fs/cgroup/unified')


JOURNAL_LINES = 20
# While a bridge handover's redirect is in place (bridge.py) the flip's own TCP probes carry this
# packet mark (SO_MARK, needs CAP_NET_ADMIN), which the redirect skips: they reach the service's own
# socket, never the bridge. 0: probes are unmarked.
PROBE_MARK = 0
SO_MARK = getattr(socket, 'SO_MARK', 36)


class HostError(Exception):
    """A failure whose message is already redacted; ``details`` go into the module result."""

    def __init__(self, message, **details):
        super(HostError, self).__init__(message)
        self.details = details


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


def read_text(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def fragment_mode(fragment_path):
    """Permission bits of the vendor unit file (the drop-in carries the same secret); 0600 if unknown."""
    try:
        return os.stat(fragment_path).st_mode & 0o777
    except (OSError, TypeError):
        return 0o600


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


def read_cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            raw = handle.read()
    except (IOError, OSError):
        return None
    if not raw:
        return None
    return unsplit_cmdline([word.decode('utf-8', 'surrogateescape') for word in raw.rstrip(b'\x00').split(b'\x00')])


def read_comm(pid):
    """The process name (/proc/PID/comm), or None."""
    text = read_text('/proc/%d/comm' % pid)
    return text.rstrip('\n') if text is not None else None


def before_exec(comm):
    """True for the name systemd gives the process it forked for ExecStart= until that process execs
    the program: '(' + the program name shortened to fit, e.g. '(proxy-go)' for mtproto-proxy-go."""
    return bool(comm) and comm.startswith('(')


# How long a main process that has not finished its exec yet is waited for, and how often it is looked at.
EXEC_WAIT = 1.0
EXEC_POLL = 0.005


def read_cmdline_after_exec(pid, timeout=EXEC_WAIT, clock=time.monotonic, sleep=time.sleep):
    """(argv, name) of ``pid`` once it runs its program, at most ``timeout`` seconds later.

    Right after systemd forks a main process, MainPID names that child before its exec: its name
    is '(...)' and its argv is systemd's; during the exec the argv reads empty. Both are read again
    until they settle. (None, None) when the process is gone; after ``timeout`` whatever was read last.
    """
    deadline = clock() + timeout
    while True:
        comm = read_comm(pid)
        cmdline = read_cmdline(pid)
        if comm is None and cmdline is None:
            return None, None
        if cmdline and not before_exec(comm):
            return cmdline, comm
        if clock() >= deadline:
            return cmdline, comm
        sleep(EXEC_POLL)


def proc_exe(pid):
    """The program a process runs, or None when /proc/PID/exe cannot be read: a process of another
    user needs CAP_SYS_PTRACE (the C proxy after -u nobody, in a container without that capability)."""
    try:
        return os.path.realpath(os.readlink('/proc/%d/exe' % pid))
    except OSError:
        return None


def pid_alive(pid):
    """False once the process is gone or only a zombie waiting for its reaper.

    /proc/PID/stat is the state of the process's main thread. When a multi-threaded program exits
    (the real C proxy runs ~25 threads) that thread can be a zombie while the kernel is still ending
    the others, for up to ~20 ms: they share its file descriptors, so its listening sockets still
    accept connections. Such a process is alive until its thread list holds only the zombie.
    """
    if not pid:
        return False
    try:
        with open('/proc/%d/stat' % pid) as handle:
            stat = handle.read()
    except (IOError, OSError):
        return False
    if stat.rsplit(')', 1)[-1].split()[0] != 'Z':
        return True
    try:
        return len(os.listdir('/proc/%d/task' % pid)) > 1
    except OSError:
        return False


def parent_pid(pid):
    try:
        with open('/proc/%d/stat' % pid) as handle:
            return int(handle.read().rsplit(')', 1)[-1].split()[1])
    except (IOError, OSError, ValueError, IndexError):
        return None


def tcp_probe(port, host=LOOPBACK_V4, timeout=0.05):
    """One TCP connect: 'accepts', 'refused' (nothing listens) or 'no_answer' (timeout, other error)."""
    try:
        sock = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return 'no_answer'
    sock.settimeout(timeout)
    if PROBE_MARK:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, PROBE_MARK)
    try:
        sock.connect((host, port))
        return 'accepts'
    except socket.timeout:
        return 'no_answer'
    except OSError as exc:
        return 'refused' if exc.errno == errno.ECONNREFUSED else 'no_answer'
    finally:
        sock.close()


def address_list(host):
    return [host] if isinstance(host, str) else list(host)


def tcp_accepts(port, host=LOOPBACK_V4, timeout=0.05):
    """True when a connect to ``port`` on ``host`` (one address or several: any of them) succeeds."""
    return any(tcp_probe(port, one, timeout) == 'accepts' for one in address_list(host))


def port_refuses(port, host=LOOPBACK_V4, timeout=0.05):
    """True only when a connect is actively refused (on every address given); a timeout is not a refusal."""
    return all(tcp_probe(port, one, timeout) == 'refused' for one in address_list(host))


def ipv6_loopback():
    """Whether this host has ::1 (containers and some hosts run with IPv6 disabled)."""
    try:
        with open('/proc/net/if_inet6') as handle:
            return any(line.split()[0] == '0' * 31 + '1' for line in handle if line.strip())
    except (IOError, OSError, IndexError):
        return False


def show_host(hosts):
    host = address_list(hosts)[0]
    return '[%s]' % host if ':' in host else host


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


def new_listener(port, old_inodes):
    """True when a socket listening on ``port`` is not one of ``old_inodes`` (listening_inodes() taken
    before a restart), or when the kernel's socket tables cannot be read (nothing to tell apart).

    An accepted connect proves nothing by itself: the kernel completes it on any listening socket,
    also on one whose process is exiting and will never accept it.
    """
    if not os.access('/proc/net/tcp', os.R_OK):
        return True
    return bool(listening_inodes(port) - set(old_inodes))


# Where a unit's cgroup.procs can be read: beside CGROUP_ROOTS, systemd's own hierarchy on v1 hosts.
CGROUP_PROCS_ROOTS = CGROUP_ROOTS + ('/sys/fs/cgroup/systemd',)
# KillMode= values with which stopping a unit ends every process of its cgroup ('' is the default).
KILLS_CGROUP = ('', 'control-group', 'mixed')


def cgroup_pids(cgroup):
    """PIDs (processes, not threads) in the cgroup ``cgroup`` (systemctl show -p ControlGroup), or None."""
    if not cgroup:
        return None
    for root in CGROUP_PROCS_ROOTS:
        try:
            with open(os.path.join(root, cgroup.lstrip('/'), 'cgroup.procs')) as handle:
                return set(int(word) for word in handle.read().split())
        except (IOError, OSError, ValueError):
            continue
    return None


def descendants(pid):
    """PIDs whose parent chain leads to ``pid`` (one pass over /proc)."""
    if not pid:
        return set()
    return set(int(entry) for entry in os.listdir('/proc')
               if entry.isdigit() and int(entry) != pid and descends_from(int(entry), pid))


def unit_processes(main_pid, cgroup, kill_mode=''):
    """The processes a stop of the unit ends, so a restart must see gone: with KillMode=control-group
    (the default) or mixed every process of its cgroup (the C proxy's -M workers share its client
    port), else only the main process. Without a readable cgroup, the main process and its descendants.
    """
    pids = set([main_pid]) if main_pid else set()
    if kill_mode not in KILLS_CGROUP:
        return pids
    members = cgroup_pids(cgroup)
    return pids | (members if members is not None else descendants(main_pid))


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
            raise HostError('systemctl show %s failed: %s' % (self.unit, err.strip()))
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
            raise HostError('systemctl daemon-reload failed: %s' % err.strip())


def unit_texts(systemd):
    """[(path, text)] of the unit's fragment and drop-ins in the order systemd applies them, or None."""
    props = systemd.show('FragmentPath', 'DropInPaths')
    if not props.get('FragmentPath'):
        return None
    return [(path, read_text(path) or '') for path in [props['FragmentPath']] + drop_in_paths(props)]


def exec_start_path(systemd):
    """The program systemd runs for ExecStart as loaded now (None: not exactly one command)."""
    commands = parse_show_exec(systemd.show('ExecStart').get('ExecStart'))
    return commands[0]['path'] if len(commands) == 1 else None


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


def ms(seconds):
    return round(seconds * 1000.0, 3)


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).strftime('%Y-%m-%dT%H:%M:%SZ')


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
