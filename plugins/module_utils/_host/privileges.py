# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What user, groups and capabilities a proxy's processes run with, and whether Go would run with more
privilege than C (the privilege parity of the cutover).

Runs on the host, standard library only, no other module_utils import. A process's privileges come from
``/proc/PID/status`` (proc(5): Uid/Gid real, effective, saved, filesystem; Groups; CapInh, CapPrm,
CapEff, CapBnd, CapAmb as hex masks; NoNewPrivs). A proxy is its main process and its workers
(``snapshot_tree``); a snapshot is plain JSON, so C's can be frozen in the manifest and compared later.

Measured on the real builds (tests/fixtures/real-stats/README.md): with ``-u nobody`` started as root, C's
master and workers run as uid/gid 65534 with Groups 65534 and no capability; the Go port ignores ``-u``
and its supervisor and workers stay uid 0 with every capability of the bounding set. Started by systemd
with ``User=nobody``, ``Group=nogroup`` and ``AmbientCapabilities=CAP_NET_BIND_SERVICE`` (``-u nobody``
left in its argv), the Go port binds port 443 and serves, uid 65534, CapEff = CAP_NET_BIND_SERVICE only
(``dropin_lines``). Such a Go reads its config, aes-pwd and secret files as that user: C read them as
root before it dropped privileges (``unreadable_for``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat

# linux/capability.h, bit number -> name
CAPABILITIES = (
    'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID',
    'CAP_SETUID', 'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE', 'CAP_NET_BROADCAST',
    'CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_IPC_LOCK', 'CAP_IPC_OWNER', 'CAP_SYS_MODULE', 'CAP_SYS_RAWIO',
    'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE', 'CAP_SYS_PACCT', 'CAP_SYS_ADMIN', 'CAP_SYS_BOOT', 'CAP_SYS_NICE',
    'CAP_SYS_RESOURCE', 'CAP_SYS_TIME', 'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD', 'CAP_LEASE', 'CAP_AUDIT_WRITE',
    'CAP_AUDIT_CONTROL', 'CAP_SETFCAP', 'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG', 'CAP_WAKE_ALARM',
    'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ', 'CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE')
CAP_FIELDS = ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb')
UNPRIVILEGED_PORT_START = '/proc/sys/net/ipv4/ip_unprivileged_port_start'
MAX_PROCESSES = 256
SHOWN_CAPS = 4


class PrivilegeError(Exception):
    pass


def cap_names(mask):
    """Names of the bits set in a capability mask (int or hex text), in bit order."""
    mask = int(mask, 16) if isinstance(mask, str) else int(mask or 0)
    return [CAPABILITIES[bit] if bit < len(CAPABILITIES) else 'CAP_%d' % bit
            for bit in range(64) if mask >> bit & 1]


def cap_mask(names):
    """The mask of capability names (``CAP_NET_BIND_SERVICE`` or ``net_bind_service``)."""
    mask = 0
    for name in names or ():
        key = name.strip().upper()
        key = key if key.startswith('CAP_') else 'CAP_' + key
        if key not in CAPABILITIES:
            raise PrivilegeError('unknown capability %s' % name)
        mask |= 1 << CAPABILITIES.index(key)
    return mask


def parse_status(text):
    """The privilege fields of a /proc/PID/status text: uid and gid [real, effective, saved, fs],
    groups, the five capability masks as 16-digit hex (lower case), no_new_privs, name."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(':')
        if sep:
            fields[key.strip()] = value.strip()
    try:
        result = {'name': fields.get('Name'),
                  'uid': [int(x) for x in fields['Uid'].split()],
                  'gid': [int(x) for x in fields['Gid'].split()],
                  'groups': sorted(int(x) for x in fields.get('Groups', '').split())}
        for field in CAP_FIELDS:
            result[field.lower()] = '%016x' % int(fields.get(field, '0'), 16)
    except (KeyError, ValueError) as exc:
        raise PrivilegeError('not a /proc/PID/status text (%s)' % exc)
    no_new = fields.get('NoNewPrivs')
    result['no_new_privs'] = int(no_new) if no_new is not None and no_new.isdigit() else None
    return result


def read(pid, proc='/proc'):
    try:
        with open(os.path.join(proc, str(pid), 'status')) as handle:
            return parse_status(handle.read())
    except (IOError, OSError) as exc:
        raise PrivilegeError('cannot read %s/%s/status: %s' % (proc, pid, exc.strerror or exc))


def children(pid, proc='/proc'):
    """Direct children of ``pid`` (from every /proc/N/stat's ppid)."""
    kids = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, 'stat')) as handle:
                stat_text = handle.read()
        except (IOError, OSError):
            continue
        fields = stat_text.rpartition(')')[2].split()
        if len(fields) > 1 and fields[1] == str(pid):
            kids.append(int(entry))
    return sorted(kids)


def snapshot_tree(main_pid, proc='/proc'):
    """Privileges of ``main_pid`` (role ``main``) and its descendants (role ``worker``), at most
    MAX_PROCESSES, as a list of dicts (parse_status plus ``pid`` and ``role``). A worker that is
    gone meanwhile is left out."""
    snapshot = [dict(read(main_pid, proc), pid=int(main_pid), role='main')]
    queue = [int(main_pid)]
    while queue and len(snapshot) < MAX_PROCESSES:
        for kid in children(queue.pop(0), proc):
            try:
                snapshot.append(dict(read(kid, proc), pid=kid, role='worker'))
            except PrivilegeError:
                continue
            queue.append(kid)
    return snapshot


def _passwd_name(uid):
    try:
        import pwd
        return pwd.getpwuid(int(uid)).pw_name
    except (ImportError, KeyError):
        return None


def _group_name(gid):
    try:
        import grp
        return grp.getgrgid(int(gid)).gr_name
    except (ImportError, KeyError):
        return None


def _user(uid, names):
    """``65534 (nobody)``; the name from ``names`` when given, else from this host's user database."""
    name = names.get(uid) if names is not None else _passwd_name(uid)
    return '%d (%s)' % (uid, name) if name else str(uid)


def _group(gid, names):
    name = names.get(gid) if names is not None else _group_name(gid)
    return '%d (%s)' % (gid, name) if name else str(gid)


def _aggregate(procs):
    agg = {'uids': set(), 'euids': set(), 'gids': set(), 'groups': set(), 'caps': 0, 'pids': []}
    for proc in procs:
        agg['uids'].update(proc['uid'])
        agg['euids'].add(proc['uid'][1])
        agg['gids'].update(proc['gid'])
        agg['groups'].update(proc['groups'])
        agg['caps'] |= int(proc['capeff'], 16) | int(proc['capprm'], 16) | int(proc['capamb'], 16)
        agg['pids'].append('%s pid %s' % (proc.get('role', 'process'), proc.get('pid', '?')))
    return agg


def _caps_text(mask):
    names = cap_names(mask)
    if not names:
        return 'no capability'
    if len(names) <= SHOWN_CAPS:
        return ', '.join(names)
    return '%d capabilities (%s, ...)' % (len(names), ', '.join(names[:SHOWN_CAPS]))


def summary(procs, users=None, groups=None):
    """One line: who the processes run as (``uid 65534 (nobody), gid 65534 (nogroup), no capability``)."""
    agg = _aggregate(procs)
    return 'uid %s, gid %s, groups %s, %s' % (
        ', '.join(_user(u, users) for u in sorted(agg['euids'])),
        ', '.join(_group(g, groups) for g in sorted(set(p['gid'][1] for p in procs))),
        ', '.join(_group(g, groups) for g in sorted(agg['groups'])) or 'none',
        _caps_text(agg['caps']))


def compare(c_procs, go_procs, granted=(), users=None, groups=None):
    """Would Go run with more privilege than C? ``c_procs`` / ``go_procs``: snapshot_tree lists (C's as
    frozen). ``granted``: capability names the operator grants Go on purpose (the drop-in's
    AmbientCapabilities=CAP_NET_BIND_SERVICE for a client port below 1024), named but not held against it.

    Returns ``verdict``: ``more`` (Go has root, a root group, or capabilities C has not: refuse),
    ``differs`` (another user or other groups, no more power), ``same``; ``more`` and ``differs`` (the
    reasons), ``granted`` (capabilities Go holds only by that grant), ``c`` / ``go`` (summary lines),
    ``message`` (None when same)."""
    c_agg, go_agg = _aggregate(c_procs), _aggregate(go_procs)
    more, differs = [], []
    if 0 in go_agg['uids'] and 0 not in c_agg['uids']:
        root_in = [p for p in go_procs if 0 in p['uid']]
        more.append('%s run%s as uid 0 (root) where C runs as uid %s' % (
            ' and '.join('%s pid %s' % (p.get('role', 'process'), p.get('pid', '?')) for p in root_in),
            's' if len(root_in) == 1 else '', ', '.join(_user(u, users) for u in sorted(c_agg['euids']))))
    elif go_agg['euids'] != c_agg['euids']:
        differs.append('Go runs as uid %s, C as uid %s' % (
            ', '.join(_user(u, users) for u in sorted(go_agg['euids'])),
            ', '.join(_user(u, users) for u in sorted(c_agg['euids']))))
    go_gids = go_agg['gids'] | go_agg['groups']
    c_gids = c_agg['gids'] | c_agg['groups']
    if 0 in go_gids and 0 not in c_gids:
        more.append('Go has group 0 (root), C has not')
    # Go's own primary group is another identity; a supplementary group C has not (docker, adm, disk: a
    # user's groups systemd's User= adds, where C's setgroups() kept only its gid) is more privilege.
    own = set(proc['gid'][1] for proc in go_procs)
    extra_groups = go_gids - c_gids - {0}
    extra_supplementary = extra_groups - own
    if extra_supplementary:
        more.append('Go has supplementary group%s %s that C has not' % (
            's' if len(extra_supplementary) > 1 else '',
            ', '.join(_group(g, groups) for g in sorted(extra_supplementary))))
    if extra_groups - extra_supplementary:
        differs.append('Go has group%s %s that C has not' % (
            's' if len(extra_groups - extra_supplementary) > 1 else '',
            ', '.join(_group(g, groups) for g in sorted(extra_groups - extra_supplementary))))
    granted_mask = cap_mask(granted)
    extra_caps = go_agg['caps'] & ~c_agg['caps']
    if extra_caps & ~granted_mask:
        more.append('Go holds %s that C does not' % _caps_text(extra_caps & ~granted_mask))
    result = {'verdict': 'more' if more else 'differs' if differs else 'same', 'more': more, 'differs': differs,
              'granted': cap_names(extra_caps & granted_mask),
              'c': summary(c_procs, users, groups), 'go': summary(go_procs, users, groups), 'message': None}
    if more or differs:
        result['message'] = '%s: %s. C runs as %s; Go would run as %s' % (
            'Go would run with more privilege than C' if more else 'Go would run as another identity than C',
            '; '.join(more + differs), result['c'], result['go'])
    return result


def unprivileged_port_start(path=UNPRIVILEGED_PORT_START):
    """The lowest port a process without CAP_NET_BIND_SERVICE may bind (net.ipv4.ip_unprivileged_port_start;
    1024 when unreadable). A container's network namespace often has 0 (the Docker engine sets it)."""
    try:
        with open(path) as handle:
            return int(handle.read().strip())
    except (IOError, OSError, ValueError):
        return 1024


def dropin_lines(user, group, client_ports=(), port_start=1024):
    """The [Service] lines that make systemd start Go as C ends up running: ``User=`` / ``Group=`` of
    C's -u user, and ``AmbientCapabilities=CAP_NET_BIND_SERVICE`` when a client port is below
    ``port_start`` (a non-root Go cannot bind it otherwise: measured, exit status 1). ``-u`` stays in the
    argv (the Go port ignores it, measured; the argv proof stays byte for byte)."""
    lines = ['User=%s' % user, 'Group=%s' % group]
    if needs_bind_capability(client_ports, port_start):
        lines.append('AmbientCapabilities=CAP_NET_BIND_SERVICE')
    return lines


def needs_bind_capability(client_ports, port_start=1024):
    return any(int(port) < int(port_start) for port in client_ports or ())


def _may(st, uid, gids, bit_user, bit_group, bit_other):
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & bit_user)
    if st.st_gid in gids:
        return bool(st.st_mode & bit_group)
    return bool(st.st_mode & bit_other)


def unreadable_for(paths, uid, gids):
    """The files of ``paths`` that ``uid`` with groups ``gids`` cannot read (mode bits of the file and
    search permission of every directory above it; ACLs are not read), as [(path, reason)]."""
    problems = []
    gids = set(gids)
    for path in paths:
        path = os.path.abspath(path)
        try:
            st = os.stat(path)
        except OSError as exc:
            problems.append((path, exc.strerror or str(exc)))
            continue
        reason = None
        parent = os.path.dirname(path)
        while True:
            try:
                dst = os.stat(parent)
            except OSError as exc:
                reason = '%s: %s' % (parent, exc.strerror or exc)
                break
            if not _may(dst, uid, gids, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
                reason = 'directory %s (mode %04o, uid %d, gid %d) is not searchable' % (
                    parent, stat.S_IMODE(dst.st_mode), dst.st_uid, dst.st_gid)
                break
            if parent == os.path.dirname(parent):
                break
            parent = os.path.dirname(parent)
        if reason is None and not _may(st, uid, gids, stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH):
            reason = 'mode %04o, uid %d, gid %d' % (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        if reason:
            problems.append((path, reason))
    return problems


# What a frozen snapshot keeps of each process (no pid: a restart changes it, not the privileges).
FROZEN_FIELDS = ('role', 'name', 'uid', 'gid', 'groups', 'capprm', 'capeff', 'capamb', 'capbnd', 'no_new_privs')


def frozen_form(procs):
    """A snapshot_tree list as the manifest keeps it."""
    return [dict((key, proc.get(key)) for key in FROZEN_FIELDS) for proc in procs]


def main_identity(procs):
    """(uid, gid) the main process of a snapshot runs as (effective ids)."""
    main = next((proc for proc in procs if proc.get('role') == 'main'), procs[0])
    return main['uid'][1], main['gid'][1]


def user_name(uid):
    """The name of ``uid`` on this host, else the number as text (systemd's User= takes either)."""
    return _passwd_name(uid) or str(uid)


def group_name(gid):
    return _group_name(gid) or str(gid)


def not_writable_for(path, uid, gids):
    """Why ``uid`` with groups ``gids`` cannot open ``path`` for appending (the file's mode, or for a
    file not there yet its directory's), or None. Search permission above it is unreadable_for's."""
    gids = set(gids)
    target = path if os.path.exists(path) else os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(target)
    except OSError as exc:
        return '%s: %s' % (target, exc.strerror or exc)
    if _may(st, uid, gids, stat.S_IWUSR, stat.S_IWGRP, stat.S_IWOTH):
        return None
    return '%s %s (mode %04o, uid %d, gid %d) is not writable' % (
        'file' if target == path else 'directory', target, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
