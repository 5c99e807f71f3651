# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Privilege parity: Go must not run with more privilege than the C it replaces.

The freeze keeps what C runs as (``privileges`` in the manifest: its processes' uid, gid, groups and
capabilities from /proc). The pre-warm and the flip read the same of Go, as the service runs it, and
judge it by the operator's ``privilege_drop``:

- ``binary``: the Go binary must drop privileges itself, as C does with ``-u``; a Go with more
  privilege (root, a root group, capabilities C has not) is refused. The real Go port ignores ``-u``
  and stays root (tests/fixtures/real-stats/README.md), so this refuses it on a ``-u nobody`` host.
- ``service``: systemd drops them for it: the cutover drop-in (and the pre-warm unit) get ``User=`` /
  ``Group=`` of C's user and group, and ``AmbientCapabilities=CAP_NET_BIND_SERVICE`` when a client port
  is below net.ipv4.ip_unprivileged_port_start; then judged as ``binary``. Systemd units with the
  drop-in method only.
- ``ignore``: judged and recorded, never refused.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.mtproxy.cutover.plugins.module_utils._host import privileges as pv

MODES = ('binary', 'service', 'ignore')
DEFAULT_MODE = 'binary'
BIND_CAPABILITY = 'CAP_NET_BIND_SERVICE'


class PrivilegeDropError(Exception):
    """A privilege_drop the service cannot have; the message names the way forward."""


def frozen_privileges(manifest):
    """C's processes as frozen (a list), or None for a manifest frozen before privileges were kept."""
    return (manifest or {}).get('privileges') or None


def service_identity(manifest):
    """(user, group) C's main process runs as, by name when the host knows it."""
    uid, gid = pv.main_identity(frozen_privileges(manifest))
    return pv.user_name(uid), pv.group_name(gid)


def service_lines(mode, manifest, runtime_kind, method=None, port_start=None):
    """The [Service] lines that make systemd run Go as C runs (``privilege_drop=service``), else [].
    ``method``: the switch's pointing (None: not known yet, the pre-warm).

    PrivilegeDropError when the service cannot be given them."""
    if mode != 'service':
        return []
    name = (manifest or {}).get('unit_name') or (manifest or {}).get('service')
    if runtime_kind != 'systemd' or method not in (None, 'dropin'):
        raise PrivilegeDropError(
            'privilege_drop=service sets User=/Group= in the cutover drop-in, but %s is %s: use '
            'privilege_drop=binary (a Go that drops privileges itself) or ignore (recorded in the report)'
            % (name, 'a %s service' % runtime_kind if runtime_kind != 'systemd' else 'pointed with method=%s' % method))
    if frozen_privileges(manifest) is None:
        raise PrivilegeDropError('the manifest of %s does not say what C runs as (frozen by an older version): '
                                 'run the freeze on C again with mtproxy_cutover_refreeze=true' % name)
    if pv.main_identity(frozen_privileges(manifest))[0] == 0:
        return []  # C runs as root: nothing to keep
    user, group = service_identity(manifest)
    if port_start is None:
        port_start = pv.unprivileged_port_start()
    return pv.dropin_lines(user, group, manifest.get('client_ports') or (), port_start)


def file_problems(mode, manifest):
    """Why Go, run as C's user by ``privilege_drop=service``, could not use the files of the frozen
    command line: C read its config, aes-pwd and secret file as root before it dropped to that user,
    and opened its -l log as root. [] when it could, or for another mode."""
    c_procs = frozen_privileges(manifest)
    if mode != 'service' or c_procs is None:
        return []
    uid, gid = pv.main_identity(c_procs)
    if uid == 0:
        return []
    gids = set(group for proc in c_procs for group in proc['groups']) | {gid}
    problems = []
    for entry in manifest.get('files') or []:
        path = entry.get('resolved') or entry.get('path')
        if entry.get('role') == 'log':
            reason = pv.not_writable_for(path, uid, gids)
            unreadable = [(path, reason)] if reason else pv.unreadable_for([os.path.dirname(path)], uid, gids)
        else:
            unreadable = pv.unreadable_for([path], uid, gids)
        problems.extend('%s %s: %s' % (entry.get('role'), where, why) for where, why in unreadable)
    return problems


def file_refusal(mode, manifest):
    """The text that refuses privilege_drop=service for the files of file_problems, or None."""
    problems = file_problems(mode, manifest)
    if not problems:
        return None
    user, group = service_identity(manifest)
    return ('privilege_drop=service would run Go as %s:%s, which cannot use these files: %s. C read its files as root '
            'before it dropped to that user; Go opens them as that user. Way forward: make them readable for that '
            'user or group (the -l log writable: e.g. root:%s 0640, a log 0660), or use privilege_drop=binary or '
            'ignore' % (user, group, '; '.join(problems), group))


def judge(mode, manifest, go_procs, lines=(), runtime_kind='systemd'):
    """Compare Go's processes with C's frozen ones. Returns privileges.compare's dict plus ``mode``,
    ``refused`` (bool) and, for a refusal, ``message`` with the way forward."""
    c_procs = frozen_privileges(manifest)
    if c_procs is None:
        return {'verdict': 'unknown', 'mode': mode, 'refused': False, 'more': [], 'differs': [], 'granted': [],
                'c': None, 'go': pv.summary(go_procs),
                'message': 'what C runs as was not frozen (a manifest of an older version): Go runs as %s, not '
                           'compared' % pv.summary(go_procs)}
    granted = [BIND_CAPABILITY] if 'AmbientCapabilities=%s' % BIND_CAPABILITY in lines else []
    result = pv.compare(c_procs, go_procs, granted)
    result['mode'] = mode
    result['refused'] = result['verdict'] == 'more' and mode != 'ignore'
    if result['refused']:
        user, group = service_identity(manifest)
        if runtime_kind != 'systemd':
            forward = ('run the Go image as %s:%s (its USER, or the container\'s user: in the compose file or '
                       'docker run --user), as C runs inside it' % (user, group))
        elif mode == 'service':
            forward = 'check the drop-in\'s User=/Group= and the unit\'s own settings'
        else:
            forward = ('mtproxy_cutover_privilege_drop=service has systemd start Go as %s:%s (and with %s for a '
                       'client port below 1024), proven by the pre-warm' % (user, group, BIND_CAPABILITY))
        result['message'] += ('. Way forward: %s; or a Go build that drops privileges itself; '
                              'mtproxy_cutover_privilege_drop=ignore accepts it (the report records it)' % forward)
    return result
