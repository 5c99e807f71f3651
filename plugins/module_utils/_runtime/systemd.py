# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Proxies run by a systemd unit: ``SystemdRuntime``, its candidate (a transient unit) and its restart.

The unit is pointed at a binary by a method of ``_runtime/pointing.py`` (a drop-in, a symlink). A
switch is one ``systemctl restart`` job: systemd stops the old generation (ExecStop=, KillMode=,
KillSignal= apply) and starts the new one as soon as the stop is done; the client port is probed
meanwhile to time the gap. A candidate (pre-warm, bridge) is a transient unit started with
``systemd-run`` and the unit's own credentials, limits, sandboxing and environment, as its
``ExecStart`` prefix grants them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import json
import os
import signal
import socket
import time

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import (
    CutoverError, FreezeError, HostError, PrewarmError, SwitchError)
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow.proof import (
    argv_matches, client_hosts_of, explain_mismatch, frozen_argv, read_stats_flavor)
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import proc, probe, process
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import privileges as pv
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.files import read_shebang
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.systemd import (
    Systemd, describe_unit_state, exec_start_path, journal_tail, kill_unit, unit_texts)
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import manifest as mf
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import refusals as rf
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import unit as un
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import (
    ArgvError, parse_argv, redact_argv, redact_text, replace_option_values, replace_program, secret_values,
    unsplit_cmdline)
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime import pointing as pt
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.base import (
    HANDOVER_GRACE, PROBE_INTERVAL, ListenerWatch, Runtime, wait_accepting)
from ansible_collections.mtproxy.cutover.plugins.module_utils._state import (
    BRIDGE_ENV, BRIDGE_LOG, PREWARM_ENV, PREWARM_LOG)

STATE_CHECK_INTERVAL = 0.2
USER_LOG_DIR = '/run/mtproxy-cutover'
UNIT_STATE_PROPS = ('Id', 'ActiveState', 'SubState', 'Result', 'ExecMainCode', 'ExecMainStatus', 'MainPID')
CANDIDATE_PROPS = ('Id', 'LoadState', 'ActiveState', 'SubState', 'Result', 'MainPID', 'ExecMainCode',
                   'ExecMainStatus', 'ExecMainStartTimestampMonotonic', 'Transient', 'FragmentPath')
# What a candidate takes from the service's unit beside its working directory and environment
# (systemd.exec(5)): credentials, resource limits and sandboxing, as `systemctl show` prints them.
CREDENTIAL_PROPS = ('User', 'Group', 'SupplementaryGroups', 'DynamicUser')
LIMIT_PROPS = ('LimitNOFILE', 'LimitNPROC', 'LimitCORE', 'LimitMEMLOCK', 'LimitSTACK', 'LimitAS')
PRIVILEGE_PROPS = ('AmbientCapabilities', 'CapabilityBoundingSet', 'NoNewPrivileges', 'SecureBits')
SANDBOX_PROPS = ('PrivateTmp', 'PrivateDevices', 'ProtectSystem', 'ProtectHome', 'ProtectKernelTunables',
                 'ProtectKernelModules', 'ProtectControlGroups', 'ReadWritePaths', 'ReadOnlyPaths',
                 'InaccessiblePaths', 'UMask', 'RestrictAddressFamilies')
# systemd.service(5), ExecStart= prefixes: '+' runs the command with full privileges (no User=,
# no capability or sandboxing settings); '!' and '!!' (on a systemd with ambient capabilities, i.e.
# every supported one, '!!' acts as '!') leave the credential change to the process: no User=/Group=.
FULL_PRIVILEGE_PREFIX = '+'
OWN_CREDENTIALS_PREFIX = '!'


def candidate_unit(service, role):
    """The transient unit of a candidate: '<unit>-<role>.service', never an instance of a template.

    A name with '@' would be an instance of the service's own template (``mtproxy@eu\\x2d1-prewarm``
    of ``mtproxy@.service``), which systemd refuses to start as a transient unit: '@' becomes '-'.
    """
    base = service[:-len('.service')] if service.endswith('.service') else service
    return '%s-%s.service' % (base.replace('@', '-'), role)


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


def exec_prefix(manifest):
    """The ExecStart prefix characters of the frozen vendor command ('' without any)."""
    exec_start = (manifest.get('unit') or {}).get('exec_start')
    return pt.split_program(exec_start)[0] if exec_start else ''


def service_properties(show, prefix):
    """``--property=`` values that give a candidate the service's credentials, limits and sandboxing.

    ``show`` is ``systemctl show`` of the service for CREDENTIAL/LIMIT/PRIVILEGE/SANDBOX_PROPS (each
    limit with its ``...Soft`` twin). A '+' prefix drops all of them but the limits (the command runs
    with full privileges), a '!' prefix drops the credentials (the process changes them itself).
    """
    wanted = list(LIMIT_PROPS)
    if FULL_PRIVILEGE_PREFIX not in prefix:
        wanted += list(PRIVILEGE_PROPS) + list(SANDBOX_PROPS)
        if OWN_CREDENTIALS_PREFIX not in prefix:
            wanted = list(CREDENTIAL_PROPS) + wanted
    out = []
    for name in wanted:
        value = show.get(name)
        if value in (None, '', '[not set]') or (name == 'DynamicUser' and value == 'no'):
            continue
        if name in LIMIT_PROPS:
            soft = show.get(name + 'Soft')
            value = '%s:%s' % (soft, value) if soft not in (None, '') else value
        out.append('--property=%s=%s' % (name, value))
    return out


def systemd_run_argv(unit, argv, working_directory=None, environment_files=(), description=None,
                     properties=()):
    """The systemd-run command line that starts ``argv`` as transient ``unit``."""
    cmd = ['systemd-run', '--quiet', '--unit=%s' % unit,
           '--description=%s' % (description or 'mtproxy.cutover pre-warm'),
           '--property=Type=exec', '--property=RemainAfterExit=yes']
    if working_directory:
        cmd.append('--property=WorkingDirectory=%s' % working_directory)
    cmd += list(properties)
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
    process.run(['systemctl', 'stop', unit], timeout=60)
    process.run(['systemctl', 'reset-failed', unit], timeout=30)
    if env_path and os.path.exists(env_path):
        os.unlink(env_path)


def user_log_path(unit, manifest, run_dir=USER_LOG_DIR):
    """The pre-warm's -l file when systemd runs it as C's user (privilege_drop=service): the state
    directory is root's alone, so it goes to ``run_dir``/<unit>/, a directory of that user."""
    uid, gid = pv.main_identity(manifest['privileges'])
    directory = os.path.join(run_dir, unit)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    os.chown(directory, uid, gid)
    return os.path.join(directory, PREWARM_LOG)


class UnitCandidate:
    """A candidate as a transient unit: the frozen argv on free ports, run as the service would run it.

    Started with RemainAfterExit=yes so its exit status stays readable after the process is gone;
    every path out stops and reset-fails it. ``role`` is 'prewarm' or 'bridge'; ``unit_properties``
    adds properties (the bridge's lifetime and teardown).
    """

    def __init__(self, runtime, role='prewarm', flavor='go', unit_properties=(), description=None):
        self.runtime = runtime
        self.service = runtime.service
        self.manifest = runtime.manifest
        self.secrets = runtime.secrets
        self.role = role
        self.what = 'pre-warm' if role == 'prewarm' else role
        self.flavor = flavor
        self.unit = candidate_unit(runtime.service, role)
        self.systemd = Systemd(self.unit)
        # A candidate keeps --address and -6: its client ports are where production's are.
        self.client_hosts = runtime.client_hosts
        self.unit_properties = list(unit_properties)
        self.description = description
        self.warnings = []
        self.log_path = runtime.store.file(BRIDGE_LOG if role == 'bridge' else PREWARM_LOG)
        self.env_path = runtime.store.file(BRIDGE_ENV if role == 'bridge' else PREWARM_ENV)
        self.binary = self.argv = None
        self.stats_port = self.stats_url = None
        self.client_ports = []
        self.since = None

    def plan(self, binary):
        """(argv, stats_port, client_ports) with freshly picked free ports."""
        frozen = frozen_argv(self.manifest)
        taken = [self.manifest.get('stats_port')] + list(self.manifest.get('client_ports') or [])
        wanted = max(1, len(parse_argv(frozen).client_ports))
        ports = pick_free_ports(1 + wanted, exclude=[p for p in taken if p])
        stats_port, client_ports = ports[0], ports[1:]
        return build_prewarm_argv(frozen, binary, stats_port, client_ports, self.log_path), stats_port, client_ports

    def command(self):
        """The systemd-run command line: the unit's credentials, limits and sandboxing as its ExecStart gets them."""
        unit = self.manifest.get('unit') or {}
        env_files = list(unit.get('environment_files') or [])
        if unit.get('environment'):
            env_files.append({'path': self.env_path, 'optional': False})
        show = self.runtime.show(*self.runtime.candidate_show_props())
        if self.flavor == 'c':
            show = self.runtime.vendor_credentials(show)
        properties = service_properties(show, exec_prefix(self.manifest)) + self.unit_properties
        if self.flavor == 'go':
            # Exactly as the cutover drop-in will run Go (privilege_drop=service), a bridge too.
            properties += ['--property=%s' % line for line in self.runtime.service_lines]
        return systemd_run_argv(self.unit, self.argv, unit.get('working_directory'), env_files,
                                self.description or 'mtproxy.cutover %s of %s' % (self.what, self.binary), properties)

    def prepare(self, binary):
        if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
            raise PrewarmError('binary %s is missing or not executable on the host' % binary)
        self.binary = binary
        if self.flavor == 'go' and self.runtime.service_lines and parse_argv(frozen_argv(self.manifest)).has('log'):
            self.log_path = user_log_path(self.unit, self.manifest)
        self.argv, self.stats_port, self.client_ports = self.plan(binary)
        self.stats_url = 'http://127.0.0.1:%d/stats' % self.stats_port
        return {'changed': True, 'unit': self.unit, 'stats_url': self.stats_url, 'stats_port': self.stats_port,
                'client_ports': self.client_ports, 'client_hosts': self.client_hosts,
                'argv': redact_argv(self.argv), 'ready_ms': None, 'pid': None, 'warnings': self.warnings}

    def start(self):
        existing = self.systemd.show(*CANDIDATE_PROPS)
        if existing.get('LoadState') == 'loaded':
            if existing.get('Transient') != 'yes' and existing.get('FragmentPath'):
                raise PrewarmError('%s: the %s unit name %s is taken by a unit of the host (%s); nothing was '
                                   'started. Rename that unit, or set mtproxy_cutover_service to the unit that '
                                   'runs the proxy' % (self.service, self.what, self.unit, existing['FragmentPath']))
            self.warnings.append('a previous %s unit %s was still loaded; it was stopped' % (self.what, self.unit))
            cleanup(self.unit)
        environment = (self.manifest.get('unit') or {}).get('environment')
        if environment:
            self.runtime.store.write_text(os.path.basename(self.env_path), env_file_text(environment))
        command = self.command()
        self.since = time.time() - 1
        rc, _out, err = process.run(command, timeout=60)
        if rc != 0 and self.systemd.show(*CANDIDATE_PROPS).get('ExecMainCode') in (None, '', '0'):
            # With Type=exec a process that fails within a few ms fails the start job too (systemd-run exits 1):
            # it did run, and how it ended is recorded; only a start that never ran it is a failure here.
            self.fail('systemd-run could not start %s: %s' % (self.binary, err.strip() or 'exit status %d' % rc))

    def gone(self):
        props = self.systemd.show(*CANDIDATE_PROPS)
        return describe_unit_state(props) if process_gone(props) else None

    @staticmethod
    def netns():
        return _null()

    @staticmethod
    def argv_proof():
        # systemd-run starts the argv given, word for word: nothing stands between it and the process.
        return True, None

    def pid(self):
        return self.systemd.main_pid()

    def processes(self):
        return self.runtime.proxy_processes(self.pid())

    def fail(self, message, **details):
        journal = journal_tail(self.unit, self.since, secrets=self.secrets)
        cleanup(self.unit, self.env_path)
        text = '%s. Last journal lines of %s:\n%s' % (message, self.unit, '\n'.join(journal) or '(journal empty)')
        if self.warnings:
            text += '\nWarnings: %s' % '; '.join(self.warnings)
        raise PrewarmError(text, journal=journal, unit=self.unit, **details)

    def exists(self):
        return self.systemd.show(*CANDIDATE_PROPS).get('LoadState') == 'loaded'

    def stop_result(self, changed):
        return {'changed': changed, 'unit': self.unit, 'exited': True, 'exit_code': None, 'exit_signal': None,
                'stop_ms': None, 'journal': []}

    def stop(self, stop_timeout):
        props = self.systemd.show(*CANDIDATE_PROPS)
        result = self.stop_result(changed=True)
        since = since_epoch(props)
        pid = int(props.get('MainPID') or 0)
        if pid and proc.pid_alive(pid):
            sent = time.monotonic()
            os.kill(pid, signal.SIGTERM)
            deadline = sent + stop_timeout
            while proc.pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.005)
            if proc.pid_alive(pid):
                process.run(['systemctl', 'kill', '--signal=SIGKILL', self.unit], timeout=30)
                result['exited'] = False
                self.since = since
                self.fail('%s %s (pid %d) did not exit within %ss after SIGTERM; it was killed'
                          % (self.what, self.unit, pid, stop_timeout), exited=False, stop_ms=None)
            result['stop_ms'] = process.ms(time.monotonic() - sent)
            props = self.wait_exit_recorded()
        result['exit_code'], result['exit_signal'] = exit_status(props)
        result['journal'] = journal_tail(self.unit, since, secrets=self.secrets)
        cleanup(self.unit, self.env_path)
        return result

    def wait_exit_recorded(self, limit=5.0):
        """systemd records the exit status shortly after the process is reaped."""
        deadline = time.monotonic() + limit
        props = self.systemd.show(*CANDIDATE_PROPS)
        while props.get('ExecMainCode') in (None, '', '0') and time.monotonic() < deadline:
            time.sleep(0.02)
            props = self.systemd.show(*CANDIDATE_PROPS)
        return props

    def remove(self):
        cleanup(self.unit, self.env_path)


@contextlib.contextmanager
def _null():
    yield


# ---------------------------------------------------------------------------------------------
# The restart: one systemctl restart job, timed from the clients' side
# ---------------------------------------------------------------------------------------------

def to_text(data):
    return data.decode('utf-8', 'replace') if isinstance(data, bytes) else (data or '')


class RestartJob:
    """``systemctl restart --no-block``: systemd's restart job, followed through the unit's ``Job`` property.

    ``poll()`` is None while the job runs, then 0 (the unit is active again) or 1; systemd is asked at
    most every STATE_CHECK_INTERVAL seconds (each ask spawns systemctl), in between the last answer
    stands. ``communicate()`` waits for the end (bounded) and returns ('', why it failed).
    """

    JOB_PROPS = ('Job', 'ActiveState', 'SubState', 'Result')

    def __init__(self, systemd, clock=time.monotonic):
        self.systemd = systemd
        self.clock = clock
        self.returncode = None
        self.err = ''
        self.asked_at = None
        rc, _out, err = process.run(['systemctl', 'restart', '--no-block', systemd.unit], timeout=30)
        if rc != 0:
            self.returncode = rc
            self.err = err.strip() or 'systemctl restart exited %d' % rc

    def poll(self):
        if self.returncode is not None:
            return self.returncode
        now = self.clock()
        if self.asked_at is not None and now - self.asked_at < STATE_CHECK_INTERVAL:
            return None
        self.asked_at = now
        props = self.systemd.show(*self.JOB_PROPS)
        if props.get('Job'):
            return None
        self.returncode = 0 if props.get('ActiveState') in ('active', 'activating', 'reloading') else 1
        if self.returncode:
            self.err = describe_unit_state(props)
        return self.returncode

    def communicate(self, timeout=None):
        deadline = self.clock() + (timeout or 30)
        while self.poll() is None and self.clock() < deadline:
            time.sleep(STATE_CHECK_INTERVAL)
        return '', self.err

    def kill(self):
        """The job is systemd's: a restart that is given up on is left to systemd."""


def await_old_exit(systemd, job, old_pids, t0, stop_timeout, watch_port=None, cgroup=None,
                   grace=HANDOVER_GRACE['c'], watch_host=None):
    """Follow the stop half of a restart job until every process of the old generation is gone.

    ``old_pids``: the main process first, then the other processes the stop ends (unit_processes():
    the C proxy's -M workers share its client port, so the old proxy is gone only with the last of
    them). Returns (gone_at, killed, handover_at, ended_early). Past ``stop_timeout`` the unit is
    SIGKILLed via systemctl kill, the same thing systemd's own stop timeout does. With
    ``watch_port`` (a client port the old process listened on) its processes are SIGKILLed (same
    call) once that port refuses connections while an old process still runs ``grace``
    seconds later (it is draining); ``handover_at`` is then the moment the port
    refused, else None, and ``ended_early`` tells whether that SIGKILL was sent.
    """
    alive = list(old_pids)
    watch = ListenerWatch(watch_port, watch_host or probe.LOOPBACK_V4, grace,
                          lambda: kill_unit(systemd, cgroup))
    killed = False
    deadline = t0 + stop_timeout
    while True:
        now = time.monotonic()
        # The job before the processes: a job that failed while an old process was still seen
        # running failed to stop it; one that ends just after (the start half failing at once) is
        # seen next round, with the processes gone, as the failed start it is.
        job_state = job.poll()
        alive = [pid for pid in alive if proc.pid_alive(pid)]
        if not alive:
            gone_at = now
            break
        if job_state not in (None, 0):
            _out, err = job.communicate()
            raise SwitchError('systemctl restart %s failed while stopping the old process: %s'
                              % (systemd.unit, to_text(err).strip() or 'exit %s' % job.returncode))
        if not killed:
            watch.poll(lambda: any(proc.pid_alive(pid) for pid in alive))
        if now > deadline and not killed:
            process.run(['systemctl', 'kill', '--signal=SIGKILL', systemd.unit], timeout=30)
            killed = True
            deadline = now + 30
        elif now > deadline:
            job.kill()
            raise SwitchError('%s did not stop within %ss even after SIGKILL (still running: pid %s)' % (
                systemd.unit, stop_timeout + 30, ', '.join(str(pid) for pid in alive)))
        time.sleep(PROBE_INTERVAL)
    return gone_at, killed, watch.handover_at, watch.ended_early


def wait_listening(systemd, port, deadline, job=None, host=probe.LOOPBACK_V4, old_listeners=None):
    """Probe ``host``:port until it accepts; (accepted_at or None, last show props or None).

    With ``old_listeners`` (listening_inodes() of the port before the restart) an accept counts
    only once a socket that is not one of them listens: the new process's, not an old one that is
    still open (the kernel completes a connect on it all the same).
    Gives up early when systemd says the unit failed or stopped; while a restart ``job`` still runs
    the unit passes through inactive/failed on its way from stop to start, so that only counts
    once the job is done (or when there is no job to wait for).
    """
    seen = {'props': None}

    def gave_up(periodic):
        job_state = job.poll() if job is not None else 0
        if job_state not in (None, 0):
            seen['props'] = systemd.show(*UNIT_STATE_PROPS)
            return 'job failed'
        if job_state == 0 and periodic:
            seen['props'] = systemd.show(*UNIT_STATE_PROPS)
            if seen['props'].get('ActiveState') in ('failed', 'inactive'):
                return 'unit stopped'
        return None

    accepted = (lambda: proc.new_listener(port, old_listeners)) if old_listeners else None
    accepted_at, _why = wait_accepting(port, host, deadline, accepted, gave_up)
    return accepted_at, seen['props']


def restart_measured(systemd, client_port, stats_port, listen_timeout, stop_timeout, stop_mode='wait_exit',
                     old_flavor='c', client_hosts=(probe.LOOPBACK_V4,)):
    """Restart the unit, wait for the client port (then the stats port). Returns (timings, failure or None).

    One ``systemctl restart`` job: systemd stops the unit (ExecStop=, KillMode=, KillSignal= apply,
    Restart= does not fire) and starts it again as soon as the stop is done, with no client round
    trip in between, which is what clients would otherwise be refused for. The client port is
    probed on ``client_hosts`` (where the proxy binds it, see client_hosts_of()); the stats port,
    which both binaries bind on 127.0.0.1, only when ``stats_port`` is given.
    """
    props = systemd.show('MainPID', 'ControlGroup', 'KillMode')
    old_pid = int(props.get('MainPID') or 0)
    # What the stop ends and the sockets it listens on: the old binary is gone when the last of those
    # processes is, and up when a socket it did not have accepts (await_old_exit, wait_listening).
    old_pids = sorted(proc.unit_processes(old_pid, props.get('ControlGroup'), props.get('KillMode', '')),
                      key=lambda pid: pid != old_pid)
    old_client = proc.listening_inodes(client_port)
    old_stats = proc.listening_inodes(stats_port) if stats_port else set()
    # Before the restart: clears the start rate limit and a failed state without adding a systemctl
    # round trip to the time clients are refused.
    process.run(['systemctl', 'reset-failed', systemd.unit], timeout=30)
    watch_port = client_port if (stop_mode == 'listeners_closed' and proc.pid_alive(old_pid)
                                 and probe.tcp_accepts(client_port, client_hosts)) else None
    t0 = time.monotonic()
    job = RestartJob(systemd)
    err = ''
    try:
        gone_at, killed, handover_at, ended_early = await_old_exit(systemd, job, old_pids, t0, stop_timeout,
                                                                   watch_port, props.get('ControlGroup'),
                                                                   HANDOVER_GRACE.get(old_flavor, HANDOVER_GRACE['c']),
                                                                   client_hosts)
        deadline = gone_at + listen_timeout
        accepted_at, props = wait_listening(systemd, client_port, deadline, job, client_hosts, old_client)
        timings = {'stop_ms': process.ms(gone_at - t0), 'start_ms': None, 'unavailable_ms': None, 'stats_ms': None,
                   'spawn_ms': None, 'binary_start_ms': None,
                   'killed_after_stop_timeout': killed, 'stop_mode': stop_mode,
                   'listeners_closed_ms': process.ms(handover_at - t0) if handover_at is not None else None,
                   'ended_after_listeners_closed': ended_early}
        _out, err = job.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if job.poll() is None:
            job.kill()
    if accepted_at is None:
        props = systemd.show(*UNIT_STATE_PROPS)
        cause = describe_unit_state(props)
        if job.returncode not in (None, 0) and to_text(err).strip():
            cause += ' (systemctl restart: %s)' % to_text(err).strip().splitlines()[0]
        if proc.listening_inodes(client_port) & old_client and not proc.new_listener(client_port, old_client):
            cause += (', and port %d still has only the listening socket the old processes had: a process the '
                      'stop did not end holds it (ss -ltnp sport = :%d names it); end it and switch again'
                      % (client_port, client_port))
        elif props.get('ActiveState') == 'active':
            cause += ', but %s:%d did not accept connections within %ss' % (
                probe.show_host(client_hosts), client_port, listen_timeout)
        return timings, cause
    timings['start_ms'] = process.ms(accepted_at - gone_at)
    timings['unavailable_ms'] = process.ms(accepted_at - t0)
    if stats_port:
        stats_at, _props = wait_listening(systemd, stats_port, max(deadline, time.monotonic() + 1.0),
                                          old_listeners=old_stats)
        if stats_at is None:
            return timings, ('client port %d accepts but the stats port 127.0.0.1:%d did not accept within %ss '
                             '(Go keeps running without a stats server when that port is busy)'
                             % (client_port, stats_port, listen_timeout))
        timings['stats_ms'] = process.ms(stats_at - gone_at)
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
    except (HostError, ValueError):
        forked_at = 0
    if not t0 <= forked_at <= accepted_at:
        return {'spawn_ms': None, 'binary_start_ms': None}
    forked_at = max(forked_at, gone_at)
    return {'spawn_ms': process.ms(forked_at - gone_at), 'binary_start_ms': process.ms(accepted_at - forked_at)}


# ---------------------------------------------------------------------------------------------
# The freeze's reading of a unit
# ---------------------------------------------------------------------------------------------

def read_file_text(path):
    with open(path, 'r', errors='surrogateescape') as handle:
        return handle.read()


def read_live_cmdline(pid):
    """The argv of ``pid`` (trailing NULs are setproctitle-style padding, not empty arguments)."""
    with open('/proc/%d/cmdline' % pid, 'rb') as handle:
        data = handle.read()
    words = [os.fsdecode(part) for part in data.rstrip(b'\0').split(b'\0')] if data.strip(b'\0') else []
    return unsplit_cmdline(words)


def gather_environment(show):
    """Environment as systemd gives it to ExecStart, and the env files' identity."""
    env = un.parse_show_environment(show.get('Environment'))
    listed = dict(env)
    files = []
    for entry in un.parse_environment_files(show.get('EnvironmentFiles')):
        digest = mf.sha256_file(entry['path'])
        files.append({'path': entry['path'], 'sha256': digest, 'optional': entry['optional']})
        if digest is not None:
            env.update(un.parse_environment_file(read_file_text(entry['path'])))
    return env, listed, files


def gather_unit(show, name):
    fragment = show.get('FragmentPath')
    if not fragment:
        raise FreezeError('%s has no unit file (FragmentPath is empty)' % name)
    drop_ins = un.drop_in_paths(show)
    texts = [(fragment, read_file_text(fragment))] + [(p, read_file_text(p)) for p in drop_ins]
    vendor_texts = [t for t in texts if not un.is_cutover_dropin(t[0])]
    env, listed_env, env_files = gather_environment(show)
    host = un.host_specifiers(fragment)
    try:
        effective = un.parse_exec_command(un.exec_start_from_unit_texts(texts), name, env, host)
        vendor_raw = un.exec_start_from_unit_texts(vendor_texts)
        vendor = un.parse_exec_command(vendor_raw, name, env, host)
    except un.UnitError as exc:
        raise FreezeError('%s: %s' % (name, exc))
    cutover_present = any(un.is_cutover_dropin(p) for p in drop_ins)
    if cutover_present:
        # The cutover drop-in may set User=/Group= for Go (privilege_drop=service): C's are the vendor's.
        user, group = un.service_setting(vendor_texts, 'User'), un.service_setting(vendor_texts, 'Group')
    else:
        user, group = show.get('User') or None, show.get('Group') or None
    working_directory, _missing_ok = un.show_working_directory(show.get('WorkingDirectory'), user)
    unit = {
        'fragment_path': fragment,
        'fragment_sha256': mf.sha256_file(fragment),
        'drop_ins': [{'path': p, 'sha256': mf.sha256_file(p)} for p in un.vendor_drop_ins(drop_ins)],
        'exec_start': vendor_raw,
        'exec_start_argv': vendor['argv'],
        'user': user,
        'group': group,
        'working_directory': working_directory,
        'environment': listed_env,
        'environment_files': env_files,
    }
    return {
        'unit': unit,
        'texts': texts,
        'vendor': vendor,
        'effective': effective,
        'effective_argv': effective['argv'],
        'from_cutover': un.is_cutover_dropin(un.exec_start_source(texts) or ''),
        'cutover_present': cutover_present,
    }


def binary_facts(path, pid, warnings):
    realpath = os.path.realpath(path)
    if pid:
        try:
            if os.readlink('/proc/%d/exe' % pid).endswith(' (deleted)'):
                warnings.append('the running binary was replaced or deleted on disk since the service started')
        except OSError:
            pass
    return realpath, mf.sha256_file(realpath)


def differing_positions(unit_argv, live_argv):
    secrets = secret_values(unit_argv) + secret_values(live_argv)
    unit_r = [redact_text(w, secrets) for w in redact_argv(unit_argv)]
    live_r = [redact_text(w, secrets) for w in redact_argv(live_argv)]
    out = []
    for index in range(max(len(unit_r), len(live_r))):
        unit_word = unit_argv[index] if index < len(unit_argv) else None
        live_word = live_argv[index] if index < len(live_argv) else None
        if unit_word != live_word:
            out.append({'index': index, 'unit': unit_r[index] if index < len(unit_r) else None,
                        'live': live_r[index] if index < len(live_r) else None})
    return out


def process_started_at(show):
    """Wall-clock start of the main process, from systemd's monotonic stamp (None when unknown)."""
    try:
        mono = int(show.get('ExecMainStartTimestampMonotonic') or 0) / 1e6
    except ValueError:
        return None
    return time.time() - (time.monotonic() - mono) if mono else None


def changed_since(paths, started_at):
    """The files of ``paths`` modified after ``started_at`` (epoch seconds)."""
    changed = []
    for path in paths:
        try:
            if started_at is not None and os.stat(path).st_mtime > started_at:
                changed.append(path)
        except OSError:
            continue
    return changed


def check_live_argv(show, name, gathered, live_argv):
    """Refuse, with the true cause, a live process that does not run the effective ExecStart."""
    if live_argv == gathered['effective_argv']:
        return
    effective = gathered['effective']
    refusal = rf.wrapper_refusal(effective, live_argv, read_shebang(effective['path']), name)
    if refusal is None:
        unit_files = [path for path, _text in gathered['texts']]
        unit_files += [entry['path'] for entry in gathered['unit']['environment_files']]
        refusal = rf.argv_refusal(name, json.dumps(differing_positions(gathered['effective_argv'], live_argv)),
                                  changed_since(unit_files, process_started_at(show)),
                                  show.get('NeedDaemonReload') == 'yes')
    raise refusal


def is_go_binary(argv0, go_binaries):
    known = set(os.path.realpath(p) for p in go_binaries) | set(go_binaries)
    return argv0 in known or os.path.realpath(argv0) in known


# ---------------------------------------------------------------------------------------------
# The runtime
# ---------------------------------------------------------------------------------------------

class SystemdRuntime(Runtime):
    """A proxy run by a systemd unit, pointed at its binary by a drop-in or a symlink."""

    kind = 'systemd'
    methods = tuple(sorted(pt.METHODS))
    host_options = ('systemd_dir',)
    supports_bridge = True

    def __init__(self, store, manifest=None, state=None, systemd_dir=pt.SYSTEMD_DIR):
        super(SystemdRuntime, self).__init__(store, manifest, state)
        self.systemd_dir = systemd_dir
        self.unit = (manifest or {}).get('unit_name') or un.unit_name(store.service)
        self.systemd = Systemd(self.unit)
        self.secrets = mf.manifest_secrets(manifest) if manifest else []
        self.client_hosts = client_hosts_of(manifest, probe.ipv6_loopback()) if manifest else []

    @property
    def name(self):
        return self.unit

    def show(self, *props):
        return self.systemd.show(*props)

    def vendor_credentials(self, show):
        """``show`` with User=, Group= and AmbientCapabilities= as the unit's own files set them: while the
        cutover drop-in is there, the ones it sets (privilege_drop=service) are Go's, not C's."""
        texts = unit_texts(self.systemd) or []
        if not any(un.is_cutover_dropin(path) for path, _text in texts):
            return show
        vendor = [(path, text) for path, text in texts if not un.is_cutover_dropin(path)]
        out = dict(show)
        for name in ('User', 'Group', 'AmbientCapabilities'):
            out[name] = un.service_setting(vendor, name) or ''
        return out

    @staticmethod
    def candidate_show_props():
        return CREDENTIAL_PROPS + LIMIT_PROPS + tuple(p + 'Soft' for p in LIMIT_PROPS) + PRIVILEGE_PROPS \
            + SANDBOX_PROPS

    # -- freeze ------------------------------------------------------------------------------------

    def read_for_freeze(self, params, run_command, now, warnings, method_class):
        """What runs now and what it would be frozen as; nothing is written.

        Returns the freeze flow's reading: ``result`` (the module result so far), ``frozen`` (the
        manifest on the host or None), ``live`` (the manifest of what runs now), ``flipped`` (the unit
        runs the recorded Go release the way its method points it), ``live_is_go``, ``cutover_present``
        and ``argv`` (the C command line the /stats checks are decided on).
        """
        name = self.unit
        show = un.systemctl_show(run_command, params['service'])
        pid = un.main_pid(show)
        if show.get('LoadState') != 'loaded' or show.get('ActiveState') != 'active' or pid <= 0:
            raise FreezeError('service %s is not running (LoadState=%s, ActiveState=%s, SubState=%s, MainPID=%d)'
                              % (name, show.get('LoadState'), show.get('ActiveState'), show.get('SubState'), pid))
        live_argv = read_live_cmdline(pid)
        gathered = gather_unit(show, name)
        check_live_argv(show, name, gathered, live_argv)
        refusal = rf.exec_prefix_refusal(pt.split_program(gathered['unit']['exec_start'])[0], method_class.method,
                                         name)
        if refusal is not None:
            raise refusal
        frozen = self.store.manifest(required=False)
        state = self.store.state() or {}
        refusal = method_class.takes_effect_refusal(gathered['texts'], name)
        if refusal is not None:
            raise refusal
        if show.get('NeedDaemonReload') == 'yes':
            warnings.append('unit files of %s changed on disk; systemctl daemon-reload is pending' % name)
        unit = gathered['unit']
        flipped = bool(frozen) and method_class.runs_go(frozen, state, live_argv, gathered['from_cutover'])
        facts_argv = list(frozen['argv']) if flipped else live_argv
        # On Go the C binary is checked where the method left it (the frozen argv[0], the link's frozen target).
        program = method_class.c_binary(frozen, state) if flipped else gathered['vendor']['path']
        realpath, digest = binary_facts(program, None if flipped else pid, warnings)
        try:
            files = mf.file_entries(mf.parse_argv(live_argv), unit['working_directory'])
            live = mf.build_manifest(params['service'], name, now, unit, facts_argv, realpath, digest,
                                     files, warnings, pid)
        except ArgvError as exc:
            raise FreezeError('cannot parse the command line of %s like the C proxy: %s' % (name, exc))
        warnings[:] = live['warnings']
        return {'result': {'current': 'go' if flipped else 'c', 'drift': [], 'manifest_path': self.store.manifest_path,
                           'method': method_class.method},
                'frozen': frozen, 'live': live, 'flipped': flipped, 'state': state,
                'live_is_go': is_go_binary(live_argv[0], params['go_binaries']),
                'cutover_present': gathered['cutover_present'], 'skip': ('argv',) if flipped else (),
                'argv': facts_argv, 'netns_pid': None, 'ipv6_loopback': probe.ipv6_loopback(), 'main_pid': pid}

    # -- candidates --------------------------------------------------------------------------------

    def candidate(self, role='prewarm', flavor='go', **options):
        """``options``: ``unit_properties`` (more systemd-run properties), ``description``."""
        return UnitCandidate(self, role, flavor, options.get('unit_properties', ()), options.get('description'))

    # -- switch ------------------------------------------------------------------------------------

    def plan(self, target, release, method=None):
        """The pointing of the method ``method_of`` chooses, planned for ``target``."""
        return pt.pointing_for(self.manifest, self.state, target, release, method, self.systemd_dir,
                               self.service_lines if target == 'go' else ())

    def live_status(self, plan):
        """(main_pid, the running process is what ``plan`` intends) before the switch."""
        props = self.systemd.show('ActiveState', 'MainPID', 'NeedDaemonReload')
        main_pid = int(props.get('MainPID') or 0)
        live_ok = props.get('ActiveState') == 'active' and props.get('NeedDaemonReload') != 'yes' \
            and self.prove_process(plan, main_pid)[0]
        return main_pid, bool(live_ok)

    def check_takes_effect(self, plan):
        """Before anything is written: refuse a pointing that another unit file would override."""
        if plan.desired is None:
            return
        texts = unit_texts(self.systemd)
        refusal = plan.takes_effect_refusal(texts, plan.manifest['unit_name'], plan.desired,
                                            plan.systemd_dir) if texts else None
        if refusal is not None:
            raise SwitchError(refusal.message(self.unit), refused=refusal.kind, changed=False)

    def apply(self, plan):
        """Point the unit, reload, and make sure systemd now runs the intended program (else undo, refuse)."""
        plan.apply()
        self.systemd.daemon_reload()
        want = plan.exec_path()
        got = exec_start_path(self.systemd)
        if got == want:
            return
        texts = unit_texts(self.systemd)
        winner = un.exec_start_winner(texts) if texts else None
        plan.revert()
        self.systemd.daemon_reload()
        refusal = rf.exec_start_refusal(want, got, winner, texts[0][0] if texts else None)
        raise SwitchError(refusal.message(self.unit), refused=refusal.kind, changed=False)

    def logs(self, lines, since=None):
        return journal_tail(self.unit, since, lines=lines, secrets=self.secrets, settle=0 if since is None else 0.3)

    def restart(self, plan, stop_mode, listen_timeout, stop_timeout, stats_port, old_flavor):
        """Restart the unit measured; then check that no process outside it holds the client port."""
        client_port = int((self.manifest.get('client_ports') or [None])[0])
        timings, failure = restart_measured(self.systemd, client_port, stats_port, float(listen_timeout),
                                            float(stop_timeout), stop_mode, old_flavor=old_flavor,
                                            client_hosts=self.client_hosts)
        main_pid = self.systemd.main_pid()
        if failure is None:
            foreign = proc.foreign_listeners(client_port, main_pid)
            if foreign:
                failure = 'client port %d is held by pid %s outside %s' % (
                    client_port, ', '.join(str(p) for p in foreign), self.unit)
        return timings, failure, main_pid

    def prove_process(self, plan, pid):
        """(matches, explanation or None) for the live MainPID, once it has finished its exec (bounded)."""
        cmdline, comm = proc.read_cmdline_after_exec(pid) if pid else (None, None)
        if proc.before_exec(comm):
            return False, ('MainPID %s had not exec\'d its program after %ss: it still had the name %r systemd '
                           'gives the process it forked; look at the unit\'s journal for what held the exec up'
                           % (pid, proc.EXEC_WAIT, comm))
        if not cmdline:
            return False, 'no live main process (MainPID %s)' % pid
        expected = plan.expected_argv()
        if not argv_matches(cmdline, expected):
            return False, explain_mismatch(cmdline, expected, self.secrets)
        why = plan.exe_mismatch(pid)
        return why is None, why

    def prove(self, plan, wait_s=0.0):
        """(matches, why) of the unit's main process against ``plan``."""
        return self.prove_process(plan, self.systemd.main_pid())

    def failure_message(self, target, binary, failure, since):
        journal = journal_tail(self.unit, since, secrets=self.secrets)
        return ('%s did not come up on %s (%s): %s. The unit is left pointed at %s; switch back with '
                'target=c. Last journal lines of %s:\n%s' % (
                    self.unit, target, binary, redact_text(failure, self.secrets), target, self.unit,
                    '\n'.join(journal) or '(journal empty)')), journal

    @staticmethod
    def stats_reader():
        return read_stats_flavor

    # -- what runs now (mtproxy_info) ------------------------------------------------------------

    def recorded_method(self):
        return (self.state or {}).get('method') or pt.DEFAULT_METHOD

    def identify(self, go_binaries):
        """Which binary the unit runs now: {flavor (c, go or None), binary, main_pid, argv_matches, reason}.

        The MainPID must run the frozen argv with the frozen C binary or one of ``go_binaries`` (the Go
        releases state.json names) as the switch would have pointed it; with the symlink method the
        program is told apart by /proc/PID/exe.
        """
        seen = {'flavor': None, 'binary': None, 'main_pid': None, 'argv_matches': False, 'reason': None}
        props = self.systemd.show(*UNIT_STATE_PROPS)
        pid = int(props.get('MainPID') or 0)
        seen['main_pid'] = pid or None
        if props.get('ActiveState') != 'active' or not pid:
            seen['reason'] = 'the unit is not active: %s' % describe_unit_state(props)
            return seen
        why_not = {}
        for flavor, binary in [('c', frozen_argv(self.manifest)[0])] + [('go', go) for go in go_binaries]:
            try:
                plan = pt.pointing_for(self.manifest, self.state, flavor, binary, None, self.systemd_dir)
                if plan.method == pt.Symlink.method:
                    # The switch checks the program against where the link points after its own swap;
                    # here the link may point elsewhere than what runs (swapped, not restarted).
                    plan.exe_mismatch = lambda pid, flavor=flavor, binary=binary: self.symlink_mismatch(
                        flavor, binary, pid)
                matches, why = self.prove_process(plan, pid)
            except CutoverError as exc:
                matches, why = False, str(exc)
            if matches:
                seen.update(flavor=flavor, binary=binary, argv_matches=True)
                return seen
            why_not.setdefault(flavor, why)
        seen['reason'] = 'MainPID %d runs neither the frozen C binary nor a Go release state.json names: %s' % (
            pid, why_not.get((self.state or {}).get('current') or 'c') or why_not['c'])
        return seen

    def symlink_mismatch(self, flavor, binary, pid):
        """Why process ``pid`` of a symlink-pointed unit does not run ``flavor``'s release, or None.

        Both binaries run the same argv (the link's path is argv[0]), so the program tells them apart:
        /proc/PID/exe; for a script (exe is its interpreter) or an unreadable exe, where the link resolves to.
        """
        link = pt.exec_program(self.manifest)
        want = os.path.realpath(binary) if flavor == 'go' else pt.Symlink.c_binary(self.manifest, self.state)
        exe = pt.proc_exe(pid)
        if exe == want:
            return None
        resolved = os.path.realpath(link)
        if (exe is None or pt.read_shebang(link)) and resolved == os.path.realpath(want):
            return None
        return 'process %d runs %s, expected %s' % (pid, exe or resolved, want)
