# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pre-warm a staged binary: run it with the frozen argv on free local ports as a transient unit.

The transient unit gets the vendor unit's WorkingDirectory, User, Group, Environment and
EnvironmentFiles so relative config paths and privileges behave as in production. It is started
with RemainAfterExit=yes so its exit status stays readable after the process is gone; every path
out of this module stops and reset-fails it, so no transient unit is left behind.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import signal
import socket
import time

from ansible_collections.mtproxy.cutover.plugins.module_utils.argv import (
    parse_argv, redact_argv, replace_option_values, replace_program)
from ansible_collections.mtproxy.cutover.plugins.module_utils.manifest import manifest_secrets
from ansible_collections.mtproxy.cutover.plugins.module_utils.scrape import REFUSED, fetch
from ansible_collections.mtproxy.cutover.plugins.module_utils.stats import FLAVOR_GO, StatsParseError, parse_stats
from ansible_collections.mtproxy.cutover.plugins.module_utils.host import (
    Systemd, describe_unit_state, journal_tail, ms, pid_alive, run, show_host, tcp_accepts, write_atomic)
from ansible_collections.mtproxy.cutover.plugins.module_utils.switch import (
    SwitchError, client_hosts_of, frozen_argv, load_manifest, service_state_dir)

PREWARM_LOG = 'prewarm.log'
PREWARM_ENV = 'prewarm.env'
POLL_INTERVAL = 0.02
STATE_CHECK_INTERVAL = 0.2
SHOW_PROPS = ('Id', 'LoadState', 'ActiveState', 'SubState', 'Result', 'MainPID', 'ExecMainCode',
              'ExecMainStatus', 'ExecMainStartTimestampMonotonic')


class PrewarmError(SwitchError):
    """A failure whose message is already redacted."""


def prewarm_unit(service):
    base = service[:-len('.service')] if service.endswith('.service') else service
    return '%s-prewarm.service' % base


def pick_free_ports(count, exclude=(), attempts=50):
    """``count`` distinct TCP ports free on all addresses right now, none of them in ``exclude``.

    All sockets stay bound until every port is chosen so the kernel cannot hand out one twice.
    """
    exclude = set(int(p) for p in exclude)
    held = []
    ports = []
    try:
        for _attempt in range(attempts):
            if len(ports) == count:
                break
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(('0.0.0.0', 0))
            held.append(sock)
            port = sock.getsockname()[1]
            if port not in exclude and port not in ports:
                ports.append(port)
    finally:
        for sock in held:
            sock.close()
    if len(ports) != count:
        raise PrewarmError('could not find %d free local ports' % count)
    return ports


def build_prewarm_argv(argv, binary, stats_port, client_ports, log_path):
    """Frozen argv with the program, -p, every -H port and -l (if present) replaced.

    ``client_ports`` must hold one port per frozen client port; each -H occurrence keeps its
    own number of ports so a comma list stays a comma list.
    """
    parsed = parse_argv(argv)
    frozen_ports = parsed.client_ports
    if len(client_ports) != max(1, len(frozen_ports)):
        raise PrewarmError('need %d client ports, got %d' % (max(1, len(frozen_ports)), len(client_ports)))
    out = replace_program(argv, binary)
    values = {}
    if parsed.has('log'):
        values['log'] = log_path
    uses = parsed.uses('client_ports')
    if len(uses) > 1:
        new = list(client_ports)
        for use in uses:
            count = len([p for p in use.value.split(',') if p.strip()]) if use.value else 0
            chunk, new = new[:count], new[count:]
            out[use.value_index] = out[use.value_index][:use.value_offset] + ','.join(str(p) for p in chunk)
    else:
        values['client_ports'] = ','.join(str(p) for p in client_ports)
    values['stats_port'] = stats_port
    # A missing -p/-H would make the binary use its default port, which production may hold.
    return replace_option_values(out, values, add_missing=True)


def env_file_text(environment):
    """EnvironmentFile= text for a dict, every value double-quoted and escaped (no expansion)."""
    lines = []
    for key in sorted(environment or {}):
        value = str(environment[key])
        for char in ('\\', '"', '$', '`'):
            value = value.replace(char, '\\' + char)
        lines.append('%s="%s"' % (key, value.replace('\n', '\\n')))
    return '\n'.join(lines) + ('\n' if lines else '')


def systemd_run_argv(unit, argv, working_directory=None, user=None, group=None, environment_files=(),
                     description=None):
    """The systemd-run command line that starts ``argv`` as transient ``unit``."""
    cmd = ['systemd-run', '--quiet', '--unit=%s' % unit,
           '--description=%s' % (description or 'mtproxy.cutover pre-warm'),
           '--property=Type=exec', '--property=RemainAfterExit=yes']
    if working_directory:
        cmd.append('--property=WorkingDirectory=%s' % working_directory)
    if user:
        cmd.append('--property=User=%s' % user)
    if group:
        cmd.append('--property=Group=%s' % group)
    for entry in environment_files:
        cmd.append('--property=EnvironmentFile=%s%s' % ('-' if entry.get('optional') else '', entry['path']))
    return cmd + ['--'] + list(argv)


def exit_status(props):
    """(exit_code, exit_signal) from systemctl show ExecMainCode/ExecMainStatus."""
    code = props.get('ExecMainCode')
    try:
        status = int(props.get('ExecMainStatus') or 0)
    except ValueError:
        status = None
    if code == '1':
        return status, None
    if code in ('2', '3'):
        return None, status
    return None, None


def process_gone(props):
    return props.get('LoadState') != 'loaded' or props.get('ActiveState') in ('failed', 'inactive') \
        or props.get('SubState') in ('exited', 'dead', 'failed') or props.get('MainPID') in (None, '', '0')


def since_epoch(props):
    """Wall-clock start of the unit's main process (journal --since) from its monotonic timestamp."""
    try:
        mono = int(props.get('ExecMainStartTimestampMonotonic') or 0) / 1e6
    except ValueError:
        mono = 0
    if not mono:
        return None
    return time.time() - (time.monotonic() - mono) - 1


def cleanup(unit, env_path=None):
    run(['systemctl', 'stop', unit], timeout=60)
    run(['systemctl', 'reset-failed', unit], timeout=30)
    if env_path and os.path.exists(env_path):
        os.unlink(env_path)


class Prewarm:
    """Start or stop the pre-warm of one service."""

    def __init__(self, service, state_dir):
        self.service = service
        self.state_dir = state_dir
        self.manifest = load_manifest(state_dir, service)
        self.secrets = manifest_secrets(self.manifest)
        self.unit = prewarm_unit(service)
        self.systemd = Systemd(self.unit)
        # The pre-warm keeps --address and -6: its client ports are where production's are.
        self.client_hosts = client_hosts_of(self.manifest)
        self.warnings = []
        directory = service_state_dir(state_dir, service)
        self.log_path = os.path.join(directory, PREWARM_LOG)
        self.env_path = os.path.join(directory, PREWARM_ENV)

    def plan(self, binary):
        """(argv, systemd-run argv, stats_port, client_ports) with freshly picked free ports."""
        frozen = frozen_argv(self.manifest)
        taken = [self.manifest.get('stats_port')] + list(self.manifest.get('client_ports') or [])
        wanted = max(1, len(parse_argv(frozen).client_ports))
        ports = pick_free_ports(1 + wanted, exclude=[p for p in taken if p])
        stats_port, client_ports = ports[0], ports[1:]
        argv = build_prewarm_argv(frozen, binary, stats_port, client_ports, self.log_path)
        unit = self.manifest.get('unit') or {}
        env_files = list(unit.get('environment_files') or [])
        if unit.get('environment'):
            env_files.append({'path': self.env_path, 'optional': False})
        command = systemd_run_argv(self.unit, argv, unit.get('working_directory'), unit.get('user'),
                                   unit.get('group'), env_files, 'mtproxy.cutover pre-warm of %s' % binary)
        return argv, command, stats_port, client_ports

    def fail(self, message, since=None, **details):
        journal = journal_tail(self.unit, since, secrets=self.secrets)
        cleanup(self.unit, self.env_path)
        text = '%s. Last journal lines of %s:\n%s' % (message, self.unit, '\n'.join(journal) or '(journal empty)')
        if self.warnings:
            text += '\nWarnings: %s' % '; '.join(self.warnings)
        raise PrewarmError(text, journal=journal, unit=self.unit, **details)

    def start(self, binary, ready_timeout, check_mode=False):
        if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
            raise PrewarmError('binary %s is missing or not executable on the host' % binary)
        argv, command, stats_port, client_ports = self.plan(binary)
        stats_url = 'http://127.0.0.1:%d/stats' % stats_port
        result = {'changed': True, 'unit': self.unit, 'stats_url': stats_url, 'stats_port': stats_port,
                  'client_ports': client_ports, 'client_hosts': self.client_hosts, 'argv': redact_argv(argv),
                  'ready_ms': None, 'pid': None, 'warnings': self.warnings}
        if check_mode:
            return result
        existing = self.systemd.show(*SHOW_PROPS)
        if existing.get('LoadState') == 'loaded':
            result['warnings'].append('a previous pre-warm unit %s was still loaded; it was stopped' % self.unit)
            cleanup(self.unit)
        environment = (self.manifest.get('unit') or {}).get('environment')
        if environment:
            write_atomic(self.env_path, env_file_text(environment), 0o600)
        since = time.time() - 1
        started = time.monotonic()
        rc, _out, err = run(command, timeout=60)
        if rc != 0:
            self.fail('systemd-run could not start %s: %s' % (binary, err.strip()), since)
        deadline = started + ready_timeout
        details = dict(stats_url=stats_url, client_ports=client_ports, stats_port=stats_port)
        ready, stats_seen, why_not = self.wait_ready(stats_url, client_ports, deadline)
        if ready == 'exited':
            self.fail('pre-warm of %s exited during start-up after %d ms (%s)'
                      % (binary, ms(time.monotonic() - started), why_not), since, **details)
        if not ready:
            if not stats_seen:
                reason = ('is running but no stats server answered on %s within %ss (Go keeps running without '
                          'a stats server when its stats port is busy)' % (stats_url, ready_timeout))
            else:
                reason = 'is running but did not become ready within %ss: %s' % (ready_timeout, why_not)
            self.fail('pre-warm of %s %s; it was stopped' % (binary, reason), since, **details)
        result['ready_ms'] = ms(ready - started)
        result['pid'] = self.systemd.main_pid()
        return result

    def wait_ready(self, stats_url, client_ports, deadline):
        """(ready_at | 'exited' | None, stats_answered, reason it is not ready)."""
        stats_ok = False
        stats_seen = False
        why_not = 'no answer yet'
        next_check = time.monotonic()
        while time.monotonic() < deadline:
            if time.monotonic() >= next_check:
                props = self.systemd.show(*SHOW_PROPS)
                if process_gone(props):
                    return 'exited', stats_seen, describe_unit_state(props)
                next_check = time.monotonic() + STATE_CHECK_INTERVAL
            if not stats_ok:
                answer = fetch(stats_url, timeout=1.0)
                if answer.ok:
                    stats_seen = True
                    stats_ok, why_not = stats_ready(answer.body)
                elif answer.error != REFUSED:
                    stats_seen = True
                    why_not = '/stats answered with %s: %s' % (answer.error, answer.detail)
            if stats_ok:
                closed = [p for p in client_ports if not tcp_accepts(p, self.client_hosts)]
                if not closed:
                    return time.monotonic(), stats_seen, None
                why_not = 'client port(s) %s do not accept connections on %s' % (
                    ', '.join(str(p) for p in closed), show_host(self.client_hosts))
            time.sleep(POLL_INTERVAL)
        return None, stats_seen, why_not

    def stop(self, stop_timeout, check_mode=False):
        props = self.systemd.show(*SHOW_PROPS)
        result = {'changed': False, 'unit': self.unit, 'exited': True, 'exit_code': None, 'exit_signal': None,
                  'stop_ms': None, 'journal': []}
        if props.get('LoadState') != 'loaded':
            return result
        result['changed'] = True
        if check_mode:
            return result
        since = since_epoch(props)
        pid = int(props.get('MainPID') or 0)
        if pid and pid_alive(pid):
            sent = time.monotonic()
            os.kill(pid, signal.SIGTERM)
            deadline = sent + stop_timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.005)
            if pid_alive(pid):
                run(['systemctl', 'kill', '--signal=SIGKILL', self.unit], timeout=30)
                result['exited'] = False
                self.fail('pre-warm %s (pid %d) did not exit within %ss after SIGTERM; it was killed'
                          % (self.unit, pid, stop_timeout), since, exited=False, stop_ms=None)
            result['stop_ms'] = ms(time.monotonic() - sent)
            props = self.wait_exit_recorded()
        result['exit_code'], result['exit_signal'] = exit_status(props)
        result['journal'] = journal_tail(self.unit, since, secrets=self.secrets)
        cleanup(self.unit, self.env_path)
        return result

    def wait_exit_recorded(self, limit=5.0):
        """systemd records the exit status shortly after the process is reaped."""
        deadline = time.monotonic() + limit
        props = self.systemd.show(*SHOW_PROPS)
        while props.get('ExecMainCode') in (None, '', '0') and time.monotonic() < deadline:
            time.sleep(0.02)
            props = self.systemd.show(*SHOW_PROPS)
        return props


def stats_ready(body):
    """(ready, reason): a /stats body parses and, if it is Go's, has a current config loaded."""
    try:
        parsed = parse_stats(body)
    except StatsParseError as exc:
        return False, '/stats body is not usable (%s)' % exc.kind
    if parsed.flavor == FLAVOR_GO and parsed.get('has_current_config') != 1:
        return False, '/stats answers but has_current_config is %s (config not loaded)' % parsed.get(
            'has_current_config')
    return True, None
