# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The systemctl and journalctl calls the flows need."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import time

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import HostError
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import process
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.files import read_text
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.proc import CGROUP_ROOTS
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import redact_text
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.unit import drop_in_paths, parse_show, parse_show_exec

JOURNAL_LINES = 20


# With a start time, the first lines of that start are kept too: a binary that refuses a flag prints the
# reason first and its usage after it (the Go port's flag package: 30 lines and more).
JOURNAL_HEAD_LINES = 5
JOURNAL_SINCE_LINES = 500
# Lines quoted from one start: room for a refusal, the flag help folded, and systemd's restart lines.
JOURNAL_START_LINES = 40


# '  -u, --user <name>  ...' (the stand-in), '\t-S, --mtproto-secret\t...' (the golang branch's port),
# '  -p int' then '    \tusage' (Go's flag.PrintDefaults, the later port on master).
_FLAG_HELP = re.compile(r'^(\s+--?[A-Za-z0-9]|\s*\t)')


def collapse_usage(lines):
    """``lines`` with every run of flag help lines (``  -u, --user <name> ...``, what a binary prints after
    refusing a flag) replaced by one line saying how many there were, so that the refusal stays in view."""
    out, run = [], 0
    for line in lines + [None]:
        if line is not None and _FLAG_HELP.match(line):
            run += 1
            continue
        if run:
            out.append('  (%d lines of flag help)' % run)
            run = 0
        if line is not None:
            out.append(line)
    return out


def journal_tail(unit, since_epoch=None, lines=None, secrets=(), settle=0.3):
    """Last ``lines`` journal lines of ``unit`` (message text only; default JOURNAL_LINES, with
    ``since_epoch`` JOURNAL_START_LINES), redacted, runs of flag help folded into one line; with
    ``since_epoch``, the first JOURNAL_HEAD_LINES lines since then, ``...`` and the last ones when there are more.

    journald receives a fast-exiting process's output asynchronously, so read again after ``settle``
    seconds and keep the longer answer.
    """
    lines = lines or (JOURNAL_START_LINES if since_epoch else JOURNAL_LINES)
    argv = ['journalctl', '--no-pager', '-o', 'cat', '-u', unit, '-n', str(JOURNAL_SINCE_LINES if since_epoch else lines)]
    if since_epoch:
        argv += ['--since', '@%d' % int(since_epoch)]
    best = []
    for attempt in range(2):
        if attempt:
            time.sleep(settle)
        rc, out, _err = process.run(argv, timeout=15)
        got = [line for line in out.splitlines() if line.strip()] if rc == 0 else []
        if len(got) >= len(best):
            best = got
    best = collapse_usage(best)
    if since_epoch and len(best) > lines > JOURNAL_HEAD_LINES + 1:
        best = best[:JOURNAL_HEAD_LINES] + ['...'] + best[-(lines - JOURNAL_HEAD_LINES - 1):]
    return [redact_text(line, list(secrets)) for line in best[-lines:]]


class Systemd:
    """The few systemctl calls the switch needs."""

    def __init__(self, unit):
        self.unit = unit

    def show(self, *props):
        rc, out, err = process.run(['systemctl', 'show', self.unit, '-p', ','.join(props)], timeout=30)
        if rc != 0:
            raise HostError('systemctl show %s failed: %s' % (self.unit, err.strip()))
        return parse_show(out)

    def main_pid(self):
        try:
            return int(self.show('MainPID').get('MainPID') or 0)
        except ValueError:
            return 0

    def call(self, *args, **kwargs):
        return process.run(['systemctl'] + list(args) + [self.unit], timeout=kwargs.get('timeout', 60))

    def daemon_reload(self):
        rc, _out, err = process.run(['systemctl', 'daemon-reload'], timeout=120)
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
    process.run(['systemctl', 'kill', '--signal=SIGKILL', systemd.unit], timeout=30)
    return 'systemctl'
