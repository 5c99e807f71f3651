# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Flip and roll back a proxy container (method=container): recreate it from the other image.

The new container is created (not started) from the target image with the frozen spec before
anything stops, both containers are renamed while the old one still serves (the old one becomes
``<name>.mtproxy-cutover-prev``), and only then is the old one stopped and the new one started:
clients see the stop and the start, nothing else. The client port is probed from inside the
network namespace that holds it (``container_host.netns_pid``), every millisecond, as the systemd
flip does. Proof afterwards: ``docker inspect`` of the new container has the target image ID and
the frozen spec (``container.spec_diff`` empty), the proxy inside runs the frozen argv, and
``/stats`` answers as the target flavour. The stopped old container is removed once the new one is
proven; on a failure it is kept for inspection and removed by the next switch.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import signal
import threading
import time

from ansible_collections.mtproxy.cutover.plugins.module_utils import container as ct
from ansible_collections.mtproxy.cutover.plugins.module_utils import container_host as ch
from ansible_collections.mtproxy.cutover.plugins.module_utils import netns
from ansible_collections.mtproxy.cutover.plugins.module_utils.argv import redact_text
from ansible_collections.mtproxy.cutover.plugins.module_utils.baseline import FLAVORS
from ansible_collections.mtproxy.cutover.plugins.module_utils.container_freeze import METHOD, as_inspect
from ansible_collections.mtproxy.cutover.plugins.module_utils.docker_api import Docker, DockerError
from ansible_collections.mtproxy.cutover.plugins.module_utils.host import ms, now_iso, pid_alive, port_refuses, tcp_accepts
from ansible_collections.mtproxy.cutover.plugins.module_utils.manifest import manifest_secrets
from ansible_collections.mtproxy.cutover.plugins.module_utils.pointing import method_of
from ansible_collections.mtproxy.cutover.plugins.module_utils.switch import (
    HANDOVER_GRACE, HANDOVERS, PROBE_INTERVAL, STATS_CHECK_TIMEOUT, TARGETS, SwitchError, argv_matches,
    client_hosts_of, explain_mismatch, frozen_argv, load_manifest, load_state, read_stats_flavor, save_state,
    state_agrees, transition)

NEXT_SUFFIX = '.mtproxy-cutover-next'
PREV_SUFFIX = '.mtproxy-cutover-prev'
PREWARM_SUFFIX = '.mtproxy-cutover-prewarm'
STATE_CHECK_INTERVAL = 0.2
# The proxy inside a fresh container may still be its entrypoint script (the official run.sh sleeps
# 1 s before it execs the proxy): the argv proof waits this long for the proxy process.
ARGV_WAIT_S = 10.0
LOG_LINES = 20


def resolve_image(docker, ref, what):
    """Inspect document of a local image, SwitchError naming the way forward when it is not there."""
    try:
        image = docker.image_or_none(ref)
    except DockerError as exc:
        raise SwitchError(str(exc))
    if image is None:
        raise SwitchError('the %s image %s is not on this host: %s' % (
            what, ref, 'stage it first (cutover.yml stages it: mtproxy_cutover_go_image_archive or a pinned '
            'registry reference)' if what == 'Go' else 'the rollback needs the frozen C image; load it back with '
            '`docker load` (or pull it by digest) and run rollback.yml again'))
    return image


def proven_spec(docker, container, frozen_spec):
    """[drift entries] between a live container and the frozen spec (image fields aside)."""
    image = docker.image_or_none(container.get('Image')) or {}
    return ct.spec_diff(frozen_spec, ct.spec_of(container, image))


def container_logs(docker, name, lines, secrets):
    try:
        text = docker.logs(name, lines)
    except DockerError as exc:
        return ['(logs of %s unreadable: %s)' % (name, exc)]
    return [redact_text(line, secrets) for line in text.splitlines()[-lines:]]


class ContainerSwitch:
    """One switch of one container (see the module docstring for the order of operations)."""

    def __init__(self, service, state_dir, docker=None):
        self.service = service
        self.state_dir = state_dir
        self.docker = docker or Docker()
        self.manifest = load_manifest(state_dir, service)
        if self.manifest.get('method') != METHOD:
            raise SwitchError('%s was not frozen as a container (its manifest says method=%s): freeze it with '
                              'method=container' % (service, self.manifest.get('method') or 'dropin'))
        self.state = load_state(state_dir, service)
        self.secrets = manifest_secrets(self.manifest)
        self.frozen_spec = self.manifest['container']
        self.client_hosts = client_hosts_of(self.manifest)

    # -- the pieces
    def live(self):
        try:
            return self.docker.container_or_none(self.service)
        except DockerError as exc:
            raise SwitchError(str(exc))

    def netns_of(self, container):
        try:
            return ch.netns_pid(self.docker, container)
        except (DockerError, SwitchError) as exc:
            raise SwitchError('%s: %s' % (self.service, exc))

    def prove_process(self, container, wait_s=0.0):
        """(matches, why) of the proxy argv inside ``container`` against the frozen argv."""
        deadline = time.monotonic() + wait_s
        why = 'no proxy process'
        while True:
            pid = (self.docker.container_or_none(self.service) or {}).get('State', {}).get('Pid') \
                if wait_s else (container.get('State') or {}).get('Pid')
            if pid:
                try:
                    _pid, argv = ch.proxy_process(pid)
                    if argv_matches(argv, frozen_argv(self.manifest)):
                        return True, None
                    why = explain_mismatch(argv, frozen_argv(self.manifest), self.secrets)
                except SwitchError as exc:
                    why = str(exc)
            if time.monotonic() >= deadline:
                return False, why
            time.sleep(0.05)

    def remove_leftovers(self):
        for suffix in (NEXT_SUFFIX, PREV_SUFFIX):
            self.docker.remove(self.service + suffix, force=True)

    def stop_old(self, name, old, stop_timeout, handover, old_flavor, netns_pid, stable):
        """Stop ``name``; returns (gone_at, handover_at, ended_early, finish). Probes only in a stable namespace.

        The client port is watched in ``netns_pid``'s namespace (the old container's own, or the one it
        shares). In a namespace that outlives the container (``stable``) the old container counts as
        gone once its processes are: the port is free then, and the new container starts while the
        engine still finishes ``docker stop`` (about 100 ms measured here). ``finish()`` waits for that
        stop to end and raises its error, if any; call it before the old container is renamed or removed.

        ``docker stop`` signals the container's PID 1, which in the official image is the ``/bin/sh -c``
        of its CMD: a PID 1 without a SIGTERM handler ignores it, and the engine SIGKILLs after the stop
        timeout (measured here: 10 s with the default timeout, every client dropped at the kill). So the
        proxy process itself gets SIGTERM too, as systemd's KillMode=control-group would send it; its
        restart policy is set to ``no`` first, so that the daemon does not restart a container whose
        process exited on its own before ``docker stop`` registered.
        """
        errors = []

        def stop():
            try:
                self.docker.stop(name, stop_timeout)
            except DockerError as exc:
                errors.append(exc)

        pid = (old.get('State') or {}).get('Pid') or 0
        try:
            proxy_pid = ch.proxy_process(pid)[0] if pid else 0
        except SwitchError:
            proxy_pid = 0
        self.docker.update_restart_policy(name, {'Name': 'no'})
        port = (self.manifest.get('client_ports') or [None])[0]
        watch = handover == 'listeners_closed' and port
        grace = HANDOVER_GRACE.get(old_flavor, HANDOVER_GRACE['c'])
        handover_at = None
        ended_early = False
        worker = threading.Thread(target=stop)
        early = stable
        # Entered before anything is signalled: the old container's own namespace goes with its last process.
        with netns.entered(netns_pid or None):
            worker.start()
            if proxy_pid and proxy_pid != pid:
                try:
                    os.kill(proxy_pid, signal.SIGTERM)
                except OSError:
                    pass
            while worker.is_alive():
                if early and not pid_alive(pid) and not pid_alive(proxy_pid):
                    break
                if watch and handover_at is None and port_refuses(int(port), self.client_hosts):
                    handover_at = time.monotonic()
                if handover_at is not None and not ended_early and time.monotonic() - handover_at >= grace \
                        and pid_alive(pid):
                    # Listeners closed, the old proxy still drains: end it, as the systemd flip does.
                    try:
                        self.docker.kill(name, 'SIGKILL')
                    except DockerError:
                        pass
                    ended_early = True
                worker.join(PROBE_INTERVAL)
        gone_at = time.monotonic()

        def finish():
            worker.join(stop_timeout + 60)
            if errors:
                raise SwitchError('stopping container %s failed: %s' % (name, errors[0]))
        if not early:
            finish()
        return gone_at, handover_at, ended_early, finish

    def wait_ready(self, netns_pid, deadline):
        """(accepted_at or None, why not): the new container's client port accepts (its netns)."""
        port = int((self.manifest.get('client_ports') or [0])[0])
        next_check = time.monotonic() + STATE_CHECK_INTERVAL
        with netns.entered(netns_pid):
            while time.monotonic() < deadline:
                if tcp_accepts(port, self.client_hosts):
                    return time.monotonic(), None
                if time.monotonic() >= next_check:
                    state = (self.live() or {}).get('State') or {}
                    if not state.get('Running'):
                        return None, 'the container exited (Status=%s, ExitCode=%s)' % (
                            state.get('Status'), state.get('ExitCode'))
                    next_check = time.monotonic() + STATE_CHECK_INTERVAL
                time.sleep(PROBE_INTERVAL)
        return None, 'client port %d did not accept connections within the listen timeout' % port

    def stats_proof(self, result, target, netns_pid, timeout_s):
        url = self.manifest.get('stats_url')
        if not url:
            raise SwitchError('%s: the manifest has no stats URL to prove the %s image with' % (
                self.service, FLAVORS[target]), **result)
        with netns.entered(netns_pid):
            flavor, version, why = read_stats_flavor(url, timeout_s)
        result.update(stats_flavor=flavor, stats_version=version)
        if flavor != target:
            raise SwitchError('%s should run the %s image now, but %s' % (
                self.service, FLAVORS[target], why or '/stats answers as the %s binary' % FLAVORS.get(flavor, flavor)),
                **result)

    # -- the switch
    def switch(self, target, image=None, listen_timeout=15.0, stop_timeout=30.0, check_mode=False,
               force_restart=False, journal_lines=0, handover='listeners_closed', stats_check=True):
        if target not in TARGETS:
            raise SwitchError('target must be one of %s' % ', '.join(TARGETS))
        if handover not in HANDOVERS:
            raise SwitchError('handover must be one of %s' % ', '.join(HANDOVERS))
        method_of(self.state, target, METHOD)
        if not check_mode:
            # A pre-warm container an interrupted run left (a Go proxy with a copy of the secret) goes first.
            self.docker.remove(self.service + PREWARM_SUFFIX, force=True, volumes=True)
        if target == 'go':
            if not image:
                raise SwitchError('target=go needs image (the staged Go image, by ID or reference)')
            target_image = resolve_image(self.docker, image, 'Go')
        else:
            target_image = resolve_image(self.docker, self.frozen_spec['image_id'], 'C')
        target_id = target_image['Id']
        self.target_image = target_image
        self.go_reference = image if target == 'go' and image != target_id else None
        live = self.live()
        running = bool(live) and (live.get('State') or {}).get('Running')
        live_ok = bool(running) and live.get('Image') == target_id and not proven_spec(self.docker, live,
                                                                                       self.frozen_spec) \
            and self.prove_process(live)[0]
        result = {'changed': False, 'target': target, 'binary': target_id, 'image': target_id, 'method': METHOD,
                  'timings': None, 'argv_matches': bool(live_ok), 'main_pid': (live or {}).get('State', {}).get('Pid'),
                  'restarted': False, 'previous_good': (self.state or {}).get('previous_good'), 'dropin_path': None,
                  'diff': None, 'stats_url': self.manifest.get('stats_url'),
                  'client_ports': self.manifest.get('client_ports') or [], 'stats_flavor': None,
                  'stats_version': None, 'stats_skipped': None, 'client_hosts': self.client_hosts, 'journal': [],
                  'container': self.service}
        extra = {'image': self.frozen_spec['image_id'], 'image_ref': self.frozen_spec.get('image_ref')}
        if live_ok and state_agrees(self.state, target, target_id, METHOD) and not force_restart:
            # Nothing to change; still proven like a switch (a rollback of a host on C reads /stats too).
            if stats_check and not check_mode:
                self.stats_proof(result, target, self.netns_of(live), STATS_CHECK_TIMEOUT)
            return result
        result['changed'] = True
        if check_mode:
            if target == 'go':
                result['previous_good'] = transition(self.state, self.manifest, target, target_id, METHOD, None,
                                                     now_iso(), extra_previous=extra)['previous_good']
            return result
        if live_ok and not force_restart:
            new_state = transition(self.state, self.manifest, target, target_id, METHOD, None, now_iso(), 'recorded',
                                   extra)
            save_state(self.state_dir, self.service, new_state)
            result['previous_good'] = new_state['previous_good']
            if stats_check:
                self.stats_proof(result, target, self.netns_of(live), STATS_CHECK_TIMEOUT)
            return result
        if live is None:
            raise SwitchError('container %s does not exist, so there is nothing to recreate it from here; its frozen '
                              'spec is in %s (container_create): recreate it by hand with that spec (docker run with '
                              'the same options) from the frozen C image %s, then run rollback.yml again'
                              % (self.service, os.path.join(self.state_dir, self.service, 'manifest.json'),
                                 self.frozen_spec['image_id']))
        if journal_lines:
            result['journal'] = container_logs(self.docker, self.service, journal_lines, self.secrets)
        try:
            self._recreate(result, live, target, target_id, extra, listen_timeout, stop_timeout, handover)
        except (DockerError, netns.NetnsError) as exc:
            raise SwitchError(redact_text('%s: %s' % (self.service, exc), self.secrets), changed=True,
                              target=target, binary=target_id, method=METHOD)
        if stats_check:
            netns_pid = self.netns_of(self.live())
            self.stats_proof(result, target, netns_pid, min(float(listen_timeout), STATS_CHECK_TIMEOUT))
        self.docker.remove(self.service + PREV_SUFFIX, force=True)
        return result

    def _recreate(self, result, live, target, target_id, extra, listen_timeout, stop_timeout, handover):
        record_container, record_image = as_inspect(self.manifest['container_create'])
        body = ct.create_body(record_container, record_image, target_id,
                              reference=ct.image_reference(self.target_image, self.frozen_spec.get('image_ref')
                                                           if target == 'c' else self.go_reference))
        self.remove_leftovers()
        t_create = time.monotonic()
        self.docker.create_container(self.service + NEXT_SUFFIX, body)
        create_ms = ms(time.monotonic() - t_create)
        new_state = transition(self.state, self.manifest, target, target_id, METHOD, None, now_iso(), 'pending', extra)
        save_state(self.state_dir, self.service, new_state)
        result['previous_good'] = new_state['previous_good']
        # Both renames while the old container still serves: clients see only the stop and the start.
        self.docker.rename(self.service, self.service + PREV_SUFFIX)
        self.docker.rename(self.service + NEXT_SUFFIX, self.service)
        stable = ch.stable_netns(live)
        netns_pid = self.netns_of(live)
        old_flavor = (self.state or {}).get('current') or 'c'
        t0 = time.monotonic()
        gone_at, handover_at, ended_early, finish_stop = self.stop_old(
            self.service + PREV_SUFFIX, live, stop_timeout, handover, old_flavor, netns_pid, stable)
        self.docker.start(self.service)
        started_at = time.monotonic()
        if not stable:
            netns_pid = self.netns_of(self.live())
        accepted_at, why = self.wait_ready(netns_pid or None, gone_at + float(listen_timeout))
        finish_stop()
        timings = {'stop_ms': ms(gone_at - t0), 'start_ms': None, 'unavailable_ms': None, 'stats_ms': None,
                   'create_ms': create_ms, 'spawn_ms': ms(started_at - gone_at), 'binary_start_ms': None,
                   'killed_after_stop_timeout': False, 'handover': handover,
                   'listeners_closed_ms': ms(handover_at - t0) if handover_at is not None else None,
                   'ended_after_listeners_closed': ended_early}
        failure = why
        if accepted_at is not None:
            timings.update(start_ms=ms(accepted_at - gone_at), unavailable_ms=ms(accepted_at - t0),
                           binary_start_ms=ms(accepted_at - started_at))
        new = self.live() or {}
        result.update(timings=timings, restarted=True, main_pid=(new.get('State') or {}).get('Pid'))
        if failure is None and new.get('Image') != target_id:
            failure = 'the new container runs image %s, not %s' % (new.get('Image'), target_id)
        if failure is None:
            drift = proven_spec(self.docker, new, self.frozen_spec)
            if drift:
                failure = 'docker inspect of the new container differs from the frozen spec: %s' % ', '.join(
                    entry['field'] for entry in drift)
        if failure is None:
            matches, why = self.prove_process(new, ARGV_WAIT_S)
            result['argv_matches'] = matches
            if not matches:
                failure = 'the new container does not run the frozen argv: %s' % why
        new_state['history'][-1].update(result='ok' if failure is None else 'failed', timings=timings)
        save_state(self.state_dir, self.service, new_state)
        if failure is not None:
            logs = container_logs(self.docker, self.service, LOG_LINES, self.secrets)
            raise SwitchError('%s did not come up on the %s image (%s): %s. The container now runs that image; the '
                              'old container is kept stopped as %s. Switch back with target=c. Last log lines of '
                              '%s:\n%s' % (self.service, FLAVORS[target], target_id, redact_text(failure, self.secrets),
                                           self.service + PREV_SUFFIX, self.service, '\n'.join(logs) or '(no logs)'),
                              **dict(result, journal=logs, changed=True))


def frozen_as_container(state_dir, service):
    """True when the service's freeze manifest is a container's (the flip then recreates it)."""
    try:
        return load_manifest(state_dir, service).get('method') == METHOD
    except SwitchError:
        return False


def switch_container(service, state_dir, target, image=None, docker_socket=None, method=None, **options):
    """Module entry point: the result of ``ContainerSwitch.switch`` (argv and env redacted)."""
    if method not in (None, METHOD):
        raise SwitchError('%s was frozen as a container; method=%s contradicts it (a container is switched by '
                          'recreating it): leave the method unset or pass method=container' % (service, method),
                          refused='method_mismatch', changed=False)
    docker = Docker(docker_socket) if docker_socket else None
    return ContainerSwitch(service, state_dir, docker).switch(target, image, **options)
