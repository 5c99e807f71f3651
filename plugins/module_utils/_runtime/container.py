# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Proxies run as containers (method=container): ``ContainerRuntime`` and its throwaway candidate.

The freeze records the container's spec (``_proxy/container_spec.py``: image by ID, command,
entrypoint, environment, labels, mounts, ports, restart policy, network, user) and the inspect
document a switch recreates it from (``container_create``). A switch creates the new container
(not started) from the target image with the frozen spec before anything stops, renames both
while the old one still serves (the old one becomes ``<name>.mtproxy-cutover-prev``), then stops
the old one and starts the new one: clients see the stop and the start, nothing else. The client
port is probed from inside the network namespace that holds it. Proof: ``docker inspect`` of the
new container has the target image ID and the frozen spec, the proxy inside runs the frozen argv,
``/stats`` answers as the target flavour. The old container is removed once the new one is proven.

A candidate is a throwaway container ``<name>.mtproxy-cutover-prewarm`` recreated from the Go
image with three changes that keep it away from production: its own network namespace (``none``,
no published ports), a copy of each mount's content instead of the mount (the official image's
run script writes ``/data/secret`` at every start), and no restart policy.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import os
import signal
import threading
import time

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import (
    DockerError, FreezeError, HostError, PrewarmError, SwitchError)
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow.proof import (
    argv_matches, client_hosts_of, explain_mismatch, frozen_argv, read_stats_flavor)
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import container_proc as ch
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import netns, proc
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import privileges as pv
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.docker_api import Docker
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.process import ms
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import container_spec as ct
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import manifest as mf
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import ArgvError, redact_argv, redact_text
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.baseline import FLAVORS
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.base import (
    HANDOVER_GRACE, PROBE_INTERVAL, ListenerWatch, Runtime, wait_accepting)

METHOD = 'container'
NEXT_SUFFIX = '.mtproxy-cutover-next'
PREV_SUFFIX = '.mtproxy-cutover-prev'
PREWARM_SUFFIX = '.mtproxy-cutover-prewarm'
STATE_CHECK_INTERVAL = 0.2
# The proxy inside a fresh container may still be its entrypoint script (the official run.sh sleeps
# 1 s before it execs the proxy): the argv proof waits this long for the proxy process.
ARGV_WAIT_S = 10.0
LOG_LINES = 20
# The largest mount content copied into a pre-warm container (bytes of tar).
MAX_COPY_BYTES = 64 * 1024 * 1024


def create_record(container, image):
    """What the flip needs to recreate the container (kept on the host only: it holds the env)."""
    return {
        'id': container.get('Id'),
        'config': container.get('Config'),
        'host_config': container.get('HostConfig'),
        'mounts': container.get('Mounts'),
        'networks': (container.get('NetworkSettings') or {}).get('Networks'),
        'image_config': dict((key, ((image or {}).get('Config') or {}).get(key))
                             for key in ('Env', 'Labels', 'ExposedPorts')),
    }


def as_inspect(record):
    """The (container, image) documents ``create_record`` came from, enough for ``ct.create_body``."""
    container = {'Id': record.get('id'), 'Config': record.get('config'), 'HostConfig': record.get('host_config'),
                 'Mounts': record.get('mounts'), 'NetworkSettings': {'Networks': record.get('networks')}}
    return container, {'Config': record.get('image_config') or {}}


def on_mount(path, mounts):
    return any(path == m['destination'] or path.startswith(m['destination'].rstrip('/') + '/') for m in mounts)


def container_files(parsed, proxy_pid, working_dir, mounts):
    """File entries as the container sees them, checksummed through /proc/PID/root."""
    entries = mf.file_entries(parsed, working_dir or '/',
                              checksum=lambda path: mf.sha256_file(ch.in_root(proxy_pid, path)))
    for entry in entries:
        entry['on_mount'] = on_mount(entry['resolved'], mounts)
    return entries


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
    # Not a container of any compose project: compose would count it as a replica of the service.
    labels = dict((k, v) for k, v in (out.get('Labels') or {}).items() if not k.startswith(ct.COMPOSE_LABEL_PREFIX))
    out['Labels'] = dict(labels, **{ct.CUTOVER_LABEL: 'prewarm'})
    return out


def container_logs(docker, name, lines, secrets):
    try:
        text = docker.logs(name, lines)
    except DockerError as exc:
        return ['(logs of %s unreadable: %s)' % (name, exc)]
    return [redact_text(line, secrets) for line in text.splitlines()[-lines:]]


def resolve_image(docker, ref, what, error=SwitchError):
    """Inspect document of a local image, ``error`` naming the way forward when it is not there."""
    try:
        image = docker.image_or_none(ref)
    except DockerError as exc:
        raise error(str(exc))
    if image is None:
        raise error('the %s image %s is not on this host: %s' % (
            what, ref, 'stage it first (cutover.yml stages it: mtproxy_cutover_go_image_archive or a pinned '
            'registry reference)' if what == 'Go' else 'the rollback needs the frozen C image; load it back with '
            '`docker load` (or pull it by digest) and run rollback.yml again'))
    return image


class ContainerPlan:
    """A switch of a container to ``target``: the image it will run and what the state keeps."""

    method = METHOD
    dropin_path = None

    def __init__(self, runtime, target, image):
        self.runtime = runtime
        self.target = target
        if target == 'go':
            if not image:
                raise SwitchError('target=go needs image (the staged Go image, by ID or reference)')
            self.image = resolve_image(runtime.docker, image, 'Go')
        else:
            self.image = resolve_image(runtime.docker, runtime.frozen_spec['image_id'], 'C')
        self.image_id = self.image['Id']
        self.go_reference = image if target == 'go' and image != self.image_id else None
        self.binary = self.image_id
        self.ok = False

    @staticmethod
    def diff(_secrets):
        return None

    def previous_good_extra(self):
        spec = self.runtime.frozen_spec
        return {'image': spec['image_id'], 'image_ref': spec.get('image_ref')}


class ContainerCandidate:
    """A candidate as a throwaway container with the frozen spec, its own network namespace and no mounts."""

    what = 'pre-warm'

    def __init__(self, runtime, role='prewarm', flavor='go'):
        self.runtime = runtime
        self.docker = runtime.docker
        self.service = runtime.service
        self.container = runtime.container
        self.manifest = runtime.manifest
        self.secrets = runtime.secrets
        self.role = role
        self.flavor = flavor
        self.name = runtime.container + PREWARM_SUFFIX
        self.client_hosts = runtime.client_hosts
        self.client_ports = list(self.manifest.get('client_ports') or [])
        self.stats_url = self.manifest.get('stats_url')
        self.warnings = []
        self.image = None
        self.container_pid = None

    def prepare(self, image):
        self.image = resolve_image(self.docker, image, 'Go', PrewarmError)
        self.release = image
        return {'changed': True, 'unit': self.name, 'container': self.name, 'image': self.image['Id'],
                'stats_url': self.stats_url, 'stats_port': self.manifest.get('stats_port'),
                'client_ports': self.client_ports, 'client_hosts': self.client_hosts,
                'argv': redact_argv(frozen_argv(self.manifest)), 'ready_ms': None, 'pid': None,
                'warnings': self.warnings}

    def start(self):
        if self.docker.container_or_none(self.name) is not None:
            self.warnings.append('a previous pre-warm container %s was left; it was removed' % self.name)
            self.docker.remove(self.name, force=True, volumes=True)
        record_container, record_image = as_inspect(self.manifest['container_create'])
        body = prewarm_body(ct.create_body(record_container, record_image, self.image['Id']))
        try:
            self.docker.create_container(self.name, body)
            self.copy_mounts()
            self.docker.start(self.name)
        except DockerError as exc:
            self.fail('the pre-warm container of %s could not be started: %s' % (self.release, exc))

    def copy_mounts(self):
        """Put the production container's mount contents into the pre-warm container (its own layer)."""
        for mount in self.manifest['container'].get('mounts') or []:
            destination = mount['destination']
            data = self.docker.get_archive(self.container, destination)
            if len(data) > MAX_COPY_BYTES:
                self.fail('the content of %s in %s is %d bytes, more than the %d a pre-warm copies: make a host '
                          'with less data on its mounts the canary (only canaries are pre-warmed)'
                          % (destination, self.container, len(data), MAX_COPY_BYTES))
            parent = destination.rstrip('/').rsplit('/', 1)[0] or '/'
            try:
                self.docker.put_archive(self.name, parent, data)
            except DockerError as exc:
                self.fail('the pre-warm cannot copy the content of %s into its throwaway container (%s); a container '
                          'with a read-only root filesystem (--read-only) cannot be pre-warmed this way: make another '
                          'host the canary (only canaries are pre-warmed)' % (destination, exc))

    def gone(self):
        state = (self.docker.container_or_none(self.name) or {}).get('State') or {}
        if not state.get('Running'):
            return ('exited during start-up (ExitCode=%s): its entrypoint refused the frozen spec or the proxy '
                    'failed' % state.get('ExitCode'))
        self.container_pid = state.get('Pid')
        return None

    def netns(self):
        if not self.container_pid:
            self.gone()
        return netns.entered(self.container_pid)

    def argv_proof(self):
        try:
            _proxy_pid, argv = ch.proxy_process(self.container_pid)
        except HostError as exc:
            return False, str(exc)
        if argv_matches(argv, frozen_argv(self.manifest)):
            return True, None
        return False, explain_mismatch(argv, frozen_argv(self.manifest), self.secrets)

    def pid(self):
        return ((self.docker.container_or_none(self.name) or {}).get('State') or {}).get('Pid')

    def processes(self):
        return self.runtime.proxy_processes(self.pid())

    def fail(self, message, **details):
        logs = container_logs(self.docker, self.name, LOG_LINES, self.secrets)
        self.docker.remove(self.name, force=True, volumes=True)
        raise PrewarmError('%s. Last log lines of %s:\n%s' % (message, self.name, '\n'.join(logs) or '(no output)'),
                           journal=logs, unit=self.name, **details)

    def exists(self):
        return self.docker.container_or_none(self.name) is not None

    def stop_result(self, changed):
        return {'changed': changed, 'unit': self.name, 'container': self.name, 'exited': True, 'exit_code': None,
                'exit_signal': None, 'stop_ms': None, 'journal': []}

    def stop(self, stop_timeout):
        result = self.stop_result(changed=True)
        live = self.docker.container_or_none(self.name) or {}
        # SIGTERM to the proxy itself: the signal check is the binary's, not its entrypoint shell's (a
        # `/bin/sh -c` PID 1 ignores SIGTERM; see ContainerRuntime.stop_old).
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
        while proxy_pid and proc.pid_alive(proxy_pid) and time.monotonic() - sent < stop_timeout:
            time.sleep(0.005)
        result['stop_ms'] = ms(time.monotonic() - sent)
        result['exited'] = not proc.pid_alive(proxy_pid)
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

    def remove(self):
        self.docker.remove(self.name, force=True, volumes=True)


def inspect_running(docker, name, error):
    """(container, image) inspect documents of a running container; ``error`` class raised otherwise."""
    try:
        container = docker.container_or_none(name)
        if container is None:
            raise error('container %s does not exist on this host (docker inspect: no such container); set '
                        'mtproxy_cutover_service to the name of the proxy container' % name)
        state = container.get('State') or {}
        if not state.get('Running') or not state.get('Pid'):
            previous = docker.container_or_none(name + PREV_SUFFIX)
            if previous is not None:
                raise error('container %s is not running (Status=%s) and %s%s is there: a switch was interrupted '
                            'between its stop and its start. Run rollback.yml for this host (it recreates %s from '
                            'the frozen C image and removes the leftover), then cut over again'
                            % (name, state.get('Status'), name, PREV_SUFFIX, name))
            shown = (name, state.get('Status'), state.get('ExitCode'), name)
            raise error('container %s is not running (Status=%s, ExitCode=%s): start it (docker start %s) and check '
                        'it serves before the cutover freezes it' % shown)
        image = docker.image_or_none(container.get('Image'))
    except DockerError as exc:
        raise error(str(exc))
    return container, image


class ContainerRuntime(Runtime):
    """A proxy run as a container of the Docker engine (or Podman's Docker-compatible socket)."""

    kind = 'container'
    methods = (METHOD,)
    release_kind = 'image'
    host_options = ('docker_socket',)
    supports_bridge = False
    bridge_refusal = ('runs as a container: the bridge handover is for the systemd methods (dropin, symlink); a '
                      'container is switched by recreating it. Leave mtproxy_cutover_handover at restart for '
                      'container hosts')

    def __init__(self, store, manifest=None, state=None, docker=None, docker_socket=None):
        super(ContainerRuntime, self).__init__(store, manifest, state)
        self.container = self.service
        self.docker = docker or Docker(docker_socket or '/var/run/docker.sock')
        self.secrets = mf.manifest_secrets(manifest) if manifest else []
        self.frozen_spec = (manifest or {}).get('container') or {}
        self.client_hosts = client_hosts_of(manifest) if manifest else []

    # -- pieces --------------------------------------------------------------------------------

    def live(self):
        try:
            return self.docker.container_or_none(self.container)
        except DockerError as exc:
            raise SwitchError(str(exc))

    def netns_of(self, container):
        try:
            return ch.netns_pid(self.docker, container)
        except HostError as exc:
            raise SwitchError('%s: %s' % (self.container, exc))

    def proven_spec(self, container):
        """[drift entries] between a live container and the frozen spec (image fields aside)."""
        image = self.docker.image_or_none(container.get('Image')) or {}
        return ct.spec_diff(self.frozen_spec, self.spec_of(container, image))

    @staticmethod
    def spec_of(container, image):
        """The comparable spec of a container of this runtime (``container_spec.spec_of``)."""
        return ct.spec_of(container, image)

    def owner_refusal(self, container):
        """Why the container must not be recreated by this runtime (its owner would undo it), or None."""
        return ct.owner_refusal(container, ch.units_naming(self.container))

    def prove_process(self, container, wait_s=0.0):
        """(matches, why) of the proxy argv inside ``container`` against the frozen argv."""
        deadline = time.monotonic() + wait_s
        why = 'no proxy process'
        while True:
            pid = (self.docker.container_or_none(self.container) or {}).get('State', {}).get('Pid') \
                if wait_s else (container.get('State') or {}).get('Pid')
            if pid:
                try:
                    _pid, argv = ch.proxy_process(pid)
                    if argv_matches(argv, frozen_argv(self.manifest)):
                        return True, None
                    why = explain_mismatch(argv, frozen_argv(self.manifest), self.secrets)
                except HostError as exc:
                    why = str(exc)
            if time.monotonic() >= deadline:
                return False, why
            time.sleep(0.05)

    # -- freeze --------------------------------------------------------------------------------

    def read_for_freeze(self, params, run_command, now, warnings, method_class=None):
        """What runs now and what it would be frozen as (see SystemdRuntime.read_for_freeze)."""
        name = self.container
        container, image = inspect_running(self.docker, name, FreezeError)
        refusal = self.owner_refusal(container)
        if refusal:
            raise FreezeError(refusal)
        try:
            pid, live_argv = ch.proxy_process(container['State']['Pid'])
            netns_pid = ch.netns_pid(self.docker, container)
        except HostError as exc:
            raise FreezeError('%s: %s' % (name, exc))
        frozen = self.store.manifest(required=False)
        state = self.store.state() or {}
        spec = self.spec_of(container, image)
        flipped = bool(frozen) and state.get('current') == 'go' and state.get('method') in self.methods \
            and container.get('Image') == state.get('binary')
        if state.get('current') == 'go' and not flipped:
            raise FreezeError('state.json of %s says it runs the Go image %s, but the container runs image %s: '
                              'roll back (rollback.yml) or remove the container\'s state directory %s if it was '
                              'recreated by hand' % (name, state.get('binary'), container.get('Image'),
                                                     self.store.path))
        live_is_go = container.get('Image') in set(params.get('go_images') or [])
        parsed_argv = frozen['argv'] if flipped else live_argv
        try:
            parsed = mf.parse_argv(live_argv)
            files = container_files(parsed, pid, spec['working_dir'], spec['mounts'])
            if flipped:
                c_image = frozen.get('container', {}).get('image_id')
                try:
                    if self.docker.image_or_none(c_image) is None:
                        warnings.append('the frozen C image %s is no longer on this host: a rollback needs it '
                                        '(docker load it back before rolling back)' % c_image)
                except DockerError as exc:
                    warnings.append(str(exc))
                realpath, digest = frozen.get('binary_realpath'), frozen.get('binary_sha256')
                # Files baked into the image are the Go image's now; files on mounts are the ones to compare.
                baked = [e for e in frozen.get('files') or [] if not e.get('on_mount')]
                files = [e for e in files if e.get('on_mount')] + baked
            else:
                realpath = live_argv[0]
                digest = mf.sha256_file(ch.in_root(pid, live_argv[0]))
            live = mf.build_manifest(self.service, name, now, {}, parsed_argv, realpath, digest, files, warnings, pid)
        except ArgvError as exc:
            raise FreezeError('cannot parse the command line of the proxy in container %s like the C proxy: %s'
                              % (name, exc))
        live['method'] = self.methods[0]
        live['container'] = spec
        live['container_create'] = create_record(container, image) if not flipped else frozen.get('container_create')
        if flipped and live_argv != frozen['argv']:
            live['argv'] = live_argv  # compared as drift: the Go container must run the frozen argv
        warnings[:] = live['warnings']
        return {'result': {'current': 'go' if flipped else 'c', 'drift': [], 'manifest_path': self.store.manifest_path,
                           'method': self.methods[0]},
                'frozen': frozen, 'live': live, 'flipped': flipped, 'state': state, 'live_is_go': live_is_go,
                # On Go the image fields differ by design; everything else, argv included, must be as frozen.
                'cutover_present': False, 'skip': ('container.image',) if flipped else (),
                'argv': frozen['argv'] if flipped else live_argv, 'netns_pid': netns_pid, 'ipv6_loopback': False,
                'main_pid': pid}

    # -- candidates ----------------------------------------------------------------------------

    @staticmethod
    def proxy_processes(main_pid):
        """From the container's first process: the proxy (an entrypoint shell that forks is not it)."""
        try:
            pid = ch.proxy_process(main_pid)[0]
        except HostError as exc:
            raise pv.PrivilegeError(str(exc))
        return pv.snapshot_tree(pid)

    def candidate(self, role='prewarm', flavor='go', **_options):
        if role != 'prewarm':
            raise PrewarmError('%s %s' % (self.container, self.bridge_refusal), refused='bridge_unsupported',
                               changed=False)
        return ContainerCandidate(self, role, flavor)

    # -- switch --------------------------------------------------------------------------------

    def plan(self, target, release, method=None):
        if method not in (None, METHOD):
            raise SwitchError('%s was frozen as a container; method=%s contradicts it (a container is switched by '
                              'recreating it): leave the method unset or pass method=container' % (self.container, method),
                              refused='method_mismatch', changed=False)
        return ContainerPlan(self, target, release)

    def live_status(self, plan):
        live = self.live()
        running = bool(live) and (live.get('State') or {}).get('Running')
        live_ok = bool(running) and live.get('Image') == plan.image_id and not self.proven_spec(live) \
            and self.prove_process(live)[0]
        plan.ok = bool(live_ok)
        self.live_container = live
        return (live or {}).get('State', {}).get('Pid'), bool(live_ok)

    @staticmethod
    def check_takes_effect(plan):
        """A recreated container always runs what it was created from."""

    def clear_leftovers(self):
        # A pre-warm container an interrupted run left (a Go proxy with a copy of the secret) goes first.
        self.docker.remove(self.container + PREWARM_SUFFIX, force=True, volumes=True)

    def logs(self, lines, since=None):
        return container_logs(self.docker, self.container, lines, self.secrets)

    def apply(self, plan):
        """Create the new container (not started) and rename both while the old one still serves."""
        live = self.live_container
        if live is None:
            raise SwitchError('container %s does not exist, so there is nothing to recreate it from here; its frozen '
                              'spec is in %s (container_create): recreate it by hand with that spec (docker run with '
                              'the same options) from the frozen C image %s, then run rollback.yml again'
                              % (self.container, self.store.manifest_path, self.frozen_spec['image_id']))
        record_container, record_image = as_inspect(self.manifest['container_create'])
        body = ct.create_body(record_container, record_image, plan.image_id,
                              reference=ct.image_reference(plan.image, self.frozen_spec.get('image_ref')
                                                           if plan.target == 'c' else plan.go_reference))
        for suffix in (NEXT_SUFFIX, PREV_SUFFIX):
            self.docker.remove(self.container + suffix, force=True)
        t_create = time.monotonic()
        self.docker.create_container(self.container + NEXT_SUFFIX, body)
        self.create_ms = ms(time.monotonic() - t_create)

    def renamed(self):
        # Both renames while the old container still serves: clients see only the stop and the start.
        self.docker.rename(self.container, self.container + PREV_SUFFIX)
        self.docker.rename(self.container + NEXT_SUFFIX, self.container)

    def stop_old(self, name, old, stop_timeout, stop_mode, old_flavor, netns_pid, stable):
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

        def end():
            try:
                self.docker.kill(name, 'SIGKILL')
            except DockerError:
                pass

        pid = (old.get('State') or {}).get('Pid') or 0
        try:
            proxy_pid = ch.proxy_process(pid)[0] if pid else 0
        except HostError:
            proxy_pid = 0
        self.docker.update_restart_policy(name, {'Name': 'no'})
        port = (self.manifest.get('client_ports') or [None])[0]
        watch = ListenerWatch(int(port) if stop_mode == 'listeners_closed' and port else None, self.client_hosts,
                              HANDOVER_GRACE.get(old_flavor, HANDOVER_GRACE['c']), end)
        worker = threading.Thread(target=stop)
        # Entered before anything is signalled: the old container's own namespace goes with its last process.
        with netns.entered(netns_pid or None):
            worker.start()
            if proxy_pid and proxy_pid != pid:
                try:
                    os.kill(proxy_pid, signal.SIGTERM)
                except OSError:
                    pass
            while worker.is_alive():
                if stable and not proc.pid_alive(pid) and not proc.pid_alive(proxy_pid):
                    break
                watch.poll(lambda: proc.pid_alive(pid))
                worker.join(PROBE_INTERVAL)
        gone_at = time.monotonic()

        def finish():
            worker.join(stop_timeout + 60)
            if errors:
                raise SwitchError('stopping container %s failed: %s' % (name, errors[0]))
        if not stable:
            finish()
        return gone_at, watch.handover_at, watch.ended_early, finish

    def wait_ready(self, netns_pid, deadline):
        """(accepted_at or None, why not): the new container's client port accepts (its netns)."""
        port = int((self.manifest.get('client_ports') or [0])[0])

        def gave_up(periodic):
            if not periodic:
                return None
            state = (self.live() or {}).get('State') or {}
            if not state.get('Running'):
                return 'the container exited (Status=%s, ExitCode=%s)' % (state.get('Status'), state.get('ExitCode'))
            return None

        with netns.entered(netns_pid):
            accepted_at, why = wait_accepting(port, self.client_hosts, deadline, gave_up=gave_up,
                                              check_interval=STATE_CHECK_INTERVAL)
        if accepted_at is None and why is None:
            why = 'client port %d did not accept connections within the listen timeout' % port
        return accepted_at, why

    def restart(self, plan, stop_mode, listen_timeout, stop_timeout, stats_port, old_flavor):
        """Stop the old container, start the new one, wait for its client port; then prove image and spec."""
        live = self.live_container
        self.renamed()
        stable = ch.stable_netns(live)
        netns_pid = self.netns_of(live)
        t0 = time.monotonic()
        gone_at, handover_at, ended_early, finish_stop = self.stop_old(
            self.container + PREV_SUFFIX, live, stop_timeout, stop_mode, old_flavor, netns_pid, stable)
        self.docker.start(self.container)
        started_at = time.monotonic()
        if not stable:
            netns_pid = self.netns_of(self.live())
        accepted_at, why = self.wait_ready(netns_pid or None, gone_at + float(listen_timeout))
        finish_stop()
        timings = {'stop_ms': ms(gone_at - t0), 'start_ms': None, 'unavailable_ms': None, 'stats_ms': None,
                   'create_ms': getattr(self, 'create_ms', None), 'spawn_ms': ms(started_at - gone_at),
                   'binary_start_ms': None, 'killed_after_stop_timeout': False, 'stop_mode': stop_mode,
                   'listeners_closed_ms': ms(handover_at - t0) if handover_at is not None else None,
                   'ended_after_listeners_closed': ended_early}
        failure = why
        if accepted_at is not None:
            timings.update(start_ms=ms(accepted_at - gone_at), unavailable_ms=ms(accepted_at - t0),
                           binary_start_ms=ms(accepted_at - started_at))
        new = self.live() or {}
        if failure is None and new.get('Image') != plan.image_id:
            failure = 'the new container runs image %s, not %s' % (new.get('Image'), plan.image_id)
        if failure is None:
            drift = self.proven_spec(new)
            if drift:
                failure = 'docker inspect of the new container differs from the frozen spec: %s' % ', '.join(
                    entry['field'] for entry in drift)
        return timings, failure, (new.get('State') or {}).get('Pid')

    def prove(self, plan, wait_s=ARGV_WAIT_S):
        return self.prove_process(self.live() or {}, wait_s)

    def failure_message(self, target, image_id, failure, since):
        logs = container_logs(self.docker, self.container, LOG_LINES, self.secrets)
        return ('%s did not come up on the %s image (%s): %s. The container now runs that image; the old container '
                'is kept stopped as %s. Switch back with target=c. Last log lines of %s:\n%s'
                % (self.container, FLAVORS[target], image_id, redact_text(failure, self.secrets),
                   self.container + PREV_SUFFIX, self.container, '\n'.join(logs) or '(no logs)')), logs

    def recorded_method(self):
        return self.methods[0]

    def identify(self, go_images):
        """Which image the container runs now: {flavor (c, go or None), binary, main_pid, argv_matches, reason}."""
        seen = {'flavor': None, 'binary': None, 'main_pid': None, 'argv_matches': False, 'reason': None}
        name = self.container
        live = self.live()
        if live is None:
            seen['reason'] = 'container %s does not exist' % name
            return seen
        status = live.get('State') or {}
        seen['main_pid'] = status.get('Pid') or None
        if not status.get('Running'):
            seen['reason'] = 'container %s is not running (Status=%s)' % (name, status.get('Status'))
            return seen
        image = live.get('Image')
        seen['binary'] = image
        frozen_image = self.frozen_spec.get('image_id')
        flavor = 'c' if image == frozen_image else 'go' if image in go_images else None
        if flavor is None:
            seen['reason'] = 'container %s runs image %s, neither the frozen C image %s nor a Go image state.json ' \
                'names' % (name, image, frozen_image)
            return seen
        matches, why = self.prove_process(live)
        if not matches:
            seen['reason'] = 'the proxy in container %s does not run the frozen argv: %s' % (name, why)
            return seen
        seen.update(flavor=flavor, argv_matches=True)
        return seen

    def stats_reader(self):
        def read(url, timeout_s):
            netns_pid = self.netns_of(self.live() or {})
            with netns.entered(netns_pid):
                return read_stats_flavor(url, timeout_s)
        return read

    def finish(self):
        """The old container goes once the new one is proven."""
        self.docker.remove(self.container + PREV_SUFFIX, force=True)
