# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pre-warm a staged Go image: a throwaway container with the frozen spec, judged, then removed.

The throwaway container (``<name>.mtproxy-cutover-prewarm``) is the frozen container recreated from
the Go image with three changes that keep it away from production: its own network namespace
(``NetworkMode: none``, no published ports; the proxy's ports are the frozen ones, inside that
namespace), a copy of each mount's content instead of the mount (the official image's run script
writes ``/data/secret`` at every start; a Go image must not write into the production volume while C
still runs from it), and no restart policy. Ready means: ``/stats`` answers as the Go port with a loaded config, the client ports
accept, and the proxy runs the frozen argv (the image's entrypoint accepted the frozen environment
and built the same command line). An entrypoint that refuses the environment is stopped here, with
its output quoted (redacted).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import os
import signal
import time

from ansible_collections.mtproxy.cutover.plugins.module_utils import container as ct
from ansible_collections.mtproxy.cutover.plugins.module_utils import container_host as ch
from ansible_collections.mtproxy.cutover.plugins.module_utils import netns
from ansible_collections.mtproxy.cutover.plugins.module_utils.argv import redact_argv
from ansible_collections.mtproxy.cutover.plugins.module_utils.container_freeze import as_inspect
from ansible_collections.mtproxy.cutover.plugins.module_utils.container_switch import (
    LOG_LINES, PREWARM_SUFFIX, container_logs, resolve_image)
from ansible_collections.mtproxy.cutover.plugins.module_utils.docker_api import Docker, DockerError
from ansible_collections.mtproxy.cutover.plugins.module_utils.host import HostError, ms, pid_alive, tcp_accepts
from ansible_collections.mtproxy.cutover.plugins.module_utils.manifest import manifest_secrets
from ansible_collections.mtproxy.cutover.plugins.module_utils.prewarm import stats_ready
from ansible_collections.mtproxy.cutover.plugins.module_utils.scrape import REFUSED, fetch
from ansible_collections.mtproxy.cutover.plugins.module_utils.stats import FLAVOR_C, StatsParseError, parse_stats
from ansible_collections.mtproxy.cutover.plugins.module_utils.switch import (
    SwitchError, argv_matches, client_hosts_of, explain_mismatch, frozen_argv, load_manifest)

POLL_INTERVAL = 0.02
STATE_CHECK_INTERVAL = 0.2


def answer_flavor(body):
    try:
        return parse_stats(body).flavor
    except StatsParseError:
        return None


class PrewarmError(SwitchError):
    """A failure whose message is already redacted."""


# The largest mount content copied into a pre-warm container (bytes of tar).
MAX_COPY_BYTES = 64 * 1024 * 1024


def prewarm_body(body):
    """The throwaway container's create body: own network namespace, no mounts (copies go in), no restart."""
    out = copy.deepcopy(body)
    host = out.setdefault('HostConfig', {})
    host['NetworkMode'] = 'none'
    host['PortBindings'] = {}
    host['PublishAllPorts'] = False
    host['RestartPolicy'] = {'Name': 'no'}
    host['Binds'] = None
    host['Mounts'] = None
    host['VolumesFrom'] = None
    host.pop('Links', None)
    out.pop('NetworkingConfig', None)
    out.pop('Hostname', None)
    out.pop('ExposedPorts', None)
    out['Labels'] = dict(out.get('Labels') or {}, **{ct.CUTOVER_LABEL: 'prewarm'})
    return out


class ContainerPrewarm:
    """Start or stop the pre-warm container of one proxy container."""

    def __init__(self, service, state_dir, docker=None):
        self.service = service
        self.name = service + PREWARM_SUFFIX
        self.docker = docker or Docker()
        self.manifest = load_manifest(state_dir, service)
        self.secrets = manifest_secrets(self.manifest)
        self.client_hosts = client_hosts_of(self.manifest)
        self.warnings = []

    def fail(self, message, **details):
        logs = container_logs(self.docker, self.name, LOG_LINES, self.secrets)
        self.docker.remove(self.name, force=True, volumes=True)
        raise PrewarmError('%s. Last log lines of %s:\n%s' % (message, self.name, '\n'.join(logs) or '(no output)'),
                           journal=logs, unit=self.name, **details)

    def start(self, image, ready_timeout, check_mode=False):
        go_image = resolve_image(self.docker, image, 'Go')
        stats_url = self.manifest.get('stats_url')
        result = {'changed': True, 'unit': self.name, 'container': self.name, 'image': go_image['Id'],
                  'stats_url': stats_url, 'stats_port': self.manifest.get('stats_port'),
                  'client_ports': self.manifest.get('client_ports') or [], 'client_hosts': self.client_hosts,
                  'argv': redact_argv(frozen_argv(self.manifest)), 'ready_ms': None, 'pid': None,
                  'warnings': self.warnings}
        if check_mode:
            return result
        if self.docker.container_or_none(self.name) is not None:
            self.warnings.append('a previous pre-warm container %s was left; it was removed' % self.name)
            self.docker.remove(self.name, force=True, volumes=True)
        record_container, record_image = as_inspect(self.manifest['container_create'])
        body = prewarm_body(ct.create_body(record_container, record_image, go_image['Id']))
        started = time.monotonic()
        try:
            self.docker.create_container(self.name, body)
            self.copy_mounts()
            self.docker.start(self.name)
        except DockerError as exc:
            self.fail('the pre-warm container of %s could not be started: %s' % (image, exc))
        ready, why = self.wait_ready(stats_url, started + ready_timeout)
        if ready is None:
            self.fail('pre-warm of the Go image %s on %s %s; it was removed' % (image, self.service, why))
        result['ready_ms'] = ms(ready - started)
        result['pid'] = ((self.docker.container_or_none(self.name) or {}).get('State') or {}).get('Pid')
        return result

    def copy_mounts(self):
        """Put the production container's mount contents into the pre-warm container (its own layer)."""
        for mount in self.manifest['container'].get('mounts') or []:
            destination = mount['destination']
            data = self.docker.get_archive(self.service, destination)
            if len(data) > MAX_COPY_BYTES:
                self.fail('the content of %s in %s is %d bytes, more than the %d a pre-warm copies: make a host '
                          'with less data on its mounts the canary (group mtproxy_canary; only canaries are '
                          'pre-warmed)' % (destination, self.service, len(data), MAX_COPY_BYTES))
            parent = destination.rstrip('/').rsplit('/', 1)[0] or '/'
            try:
                self.docker.put_archive(self.name, parent, data)
            except DockerError as exc:
                self.fail('the pre-warm cannot copy the content of %s into its throwaway container (%s); a container '
                          'with a read-only root filesystem (--read-only) cannot be pre-warmed this way: make another '
                          'host the canary (group mtproxy_canary; only canaries are pre-warmed)' % (destination, exc))

    def wait_ready(self, stats_url, deadline):
        """(ready_at or None, why not)."""
        why = 'did not answer within the ready timeout'
        stats_ok = False
        pid = None
        next_check = time.monotonic()
        while time.monotonic() < deadline:
            if time.monotonic() >= next_check or not pid:
                state = (self.docker.container_or_none(self.name) or {}).get('State') or {}
                if not state.get('Running'):
                    return None, 'exited during start-up (ExitCode=%s): its entrypoint refused the frozen spec ' \
                        'or the proxy failed' % state.get('ExitCode')
                pid = state.get('Pid')
                next_check = time.monotonic() + STATE_CHECK_INTERVAL
            try:
                with netns.entered(pid):
                    if not stats_ok:
                        answer = fetch(stats_url, timeout=1.0)
                        if answer.ok and answer_flavor(answer.body) == FLAVOR_C:
                            return None, ('answers /stats as the C binary, not the Go port: the image pinned as Go '
                                          'is a C build (check mtproxy_cutover_go_image_id)')
                        if answer.ok:
                            stats_ok, why = stats_ready(answer.body)
                        elif answer.error != REFUSED:
                            why = '/stats answered with %s: %s' % (answer.error, answer.detail)
                    closed = [p for p in self.manifest.get('client_ports') or []
                              if not tcp_accepts(p, self.client_hosts)] if stats_ok else None
            except netns.NetnsError:
                closed = None  # the container went away between the check and the entry: seen next round
                next_check = 0
            if stats_ok and closed == []:
                matches, argv_why = self.argv_proof(pid)
                if matches:
                    return time.monotonic(), None
                why = 'runs another command line than the frozen one: %s' % argv_why
            elif stats_ok:
                why = 'client port(s) %s do not accept connections' % ', '.join(str(p) for p in closed or [])
            time.sleep(POLL_INTERVAL)
        return None, why

    def argv_proof(self, pid):
        try:
            _proxy_pid, argv = ch.proxy_process(pid)
        except HostError as exc:
            return False, str(exc)
        if argv_matches(argv, frozen_argv(self.manifest)):
            return True, None
        return False, explain_mismatch(argv, frozen_argv(self.manifest), self.secrets)

    def stop(self, stop_timeout, check_mode=False):
        result = {'changed': False, 'unit': self.name, 'container': self.name, 'exited': True, 'exit_code': None,
                  'exit_signal': None, 'stop_ms': None, 'journal': []}
        live = self.docker.container_or_none(self.name)
        if live is None:
            return result
        result['changed'] = True
        if check_mode:
            return result
        # SIGTERM to the proxy itself: the signal check is the binary's, not its entrypoint shell's (a
        # `/bin/sh -c` PID 1 ignores SIGTERM; see container_switch.ContainerSwitch.stop_old).
        pid = (live.get('State') or {}).get('Pid') or 0
        try:
            proxy_pid = ch.proxy_process(pid)[0] if pid else 0
        except HostError:
            proxy_pid = pid
        sent = time.monotonic()
        if proxy_pid:
            try:
                os.kill(proxy_pid, signal.SIGTERM)
            except OSError:
                pass
        while proxy_pid and pid_alive(proxy_pid) and time.monotonic() - sent < stop_timeout:
            time.sleep(0.005)
        result['stop_ms'] = ms(time.monotonic() - sent)
        result['exited'] = not pid_alive(proxy_pid)
        try:
            self.docker.stop(self.name, 1)
        except DockerError as exc:
            self.fail('stopping the pre-warm container failed: %s' % exc)
        state = (self.docker.container_or_none(self.name) or {}).get('State') or {}
        result['exit_code'] = state.get('ExitCode')
        result['journal'] = container_logs(self.docker, self.name, LOG_LINES, self.secrets)
        self.docker.remove(self.name, force=True, volumes=True)
        if not result['exited']:
            raise PrewarmError('pre-warm container %s did not exit within %ss after SIGTERM; it was killed and removed'
                               % (self.name, stop_timeout), **result)
        return result
