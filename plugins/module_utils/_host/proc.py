# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What ``/proc`` says about processes, cgroups and TCP sockets (the one reader of /proc/net/tcp)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket
import time

from ansible_collections.mtproxy.cutover.plugins.module_utils._host.files import read_text
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import unsplit_cmdline


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


def descends_from(pid, ancestor, limit=64):
    for _step in range(limit):
        if pid == ancestor:
            return True
        if pid is None or pid <= 1:
            return False
        pid = parent_pid(pid)
    return False


def descendants(pid):
    """PIDs whose parent chain leads to ``pid`` (one pass over /proc)."""
    if not pid:
        return set()
    return set(int(entry) for entry in os.listdir('/proc')
               if entry.isdigit() and int(entry) != pid and descends_from(int(entry), pid))


# Where a unit's cgroup (systemctl show -p ControlGroup) can be found: the unified hierarchy, or its
# mount beside the v1 controllers on hybrid hosts.
CGROUP_ROOTS = ('/sys/fs/cgroup', '/sys/fs/cgroup/unified')
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


# /proc/net/tcp{,6}: the kernel's TCP sockets, one line each (proc_net_tcp(5)). State codes used here.
TCP_TABLES = ('/proc/net/tcp', '/proc/net/tcp6')
TCP_ESTABLISHED = '01'
TCP_TIME_WAIT = '06'
TCP_LISTEN = '0A'


def tcp_tables_text():
    """The text of /proc/net/tcp and /proc/net/tcp6 ('' for a table that cannot be read)."""
    return ''.join(read_text(path) or '' for path in TCP_TABLES)


def proc_address(text):
    """'0100007F' (/proc/net/tcp) -> '127.0.0.1'; 32 hex digits (tcp6) -> the IPv6 address."""
    raw = bytes(bytearray.fromhex(text))
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b''.join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = socket.inet_ntop(socket.AF_INET6, words)
    return address[7:] if address.startswith('::ffff:') and '.' in address else address


def tcp_sockets(text=None):
    """Every TCP socket of /proc/net/tcp{,6} text (read now when None): dicts of local_port, peer (hex
    address text), peer_port, state (the kernel's two hex digits) and inode. The one parser of the tables."""
    found = []
    for line in (tcp_tables_text() if text is None else text).splitlines():
        fields = line.split()
        if len(fields) < 4 or ':' not in fields[1] or fields[3] == 'st':
            continue
        try:
            local_port = int(fields[1].rsplit(':', 1)[1], 16)
            peer, peer_port = fields[2].rsplit(':', 1)
            found.append({'local_port': local_port, 'peer': peer, 'peer_port': int(peer_port, 16),
                          'state': fields[3], 'inode': fields[9] if len(fields) > 9 else None})
        except ValueError:
            continue
    return found


def listening_inodes(port, text=None):
    """Socket inodes listening on TCP ``port`` (IPv4 and IPv6)."""
    return set(sock['inode'] for sock in tcp_sockets(text)
               if sock['state'] == TCP_LISTEN and sock['local_port'] == port and sock['inode'])


def established(ports, text=None):
    """How many established TCP sockets have one of ``ports`` as their local port."""
    wanted = set(int(p) for p in ports)
    return len([sock for sock in tcp_sockets(text) if sock['state'] == TCP_ESTABLISHED
                and sock['local_port'] in wanted])


def open_sockets(text=None):
    """(peer address, peer port, local port) of every TCP socket that is neither listening nor in TIME_WAIT."""
    found = set()
    for sock in tcp_sockets(text):
        if sock['state'] in (TCP_LISTEN, TCP_TIME_WAIT):
            continue
        try:
            found.add((proc_address(sock['peer']), sock['peer_port'], sock['local_port']))
        except ValueError:
            continue
    return found


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
