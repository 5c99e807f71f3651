# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Proxies run by docker compose (method=compose): ``ComposeRuntime``, a container runtime whose
container is recreated by compose itself.

The service is named ``<project>/<service>``; its one container is found by compose's labels
(``com.docker.compose.project``, ``.service``), whatever name compose gave it. Everything the
container runtime reads and proves (spec, the proxy's argv, files as the container sees them,
``/stats`` in its network namespace, the throwaway pre-warm container) is reused; what differs:

- the freeze also records the project (``_proxy/compose_project.py``): the files compose loaded, with
  checksums (and the project's ``.env``), the service's config hash, and the compose command of the
  host that computes that same hash (``_host/compose_cli.py``); shapes whose own invocation would not
  load the collection's override file are refused before anything changes;
- the flip writes the collection's override file (the service's image, pinned by ID) beside the
  project's file, checks that compose loads it (the service's config hash changes), stops the old
  container as the container runtime does (SIGTERM to the proxy, ``stop_mode``), then runs
  ``up -d --no-deps --no-build <service>`` in the project's directory: compose recreates the container,
  so compose still owns it and the operator's next ``docker compose up -d`` keeps it;
- the rollback removes that file (only it) and recreates through compose the same way; the proof is
  the container runtime's (image ID, spec, argv, ``/stats``) plus compose's own record: the files it
  loaded and the config hash, equal to the frozen ones after a rollback.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import (
    CutoverError, DockerError, FreezeError, HostError, PrewarmError, SwitchError)
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import compose_cli, netns, process
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import container_proc as ch
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.files import write_atomic
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.process import ms
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import compose_project as cp
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import manifest as mf
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import redact_text
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.base import wait_accepting
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.container import (
    LOG_LINES, STATE_CHECK_INTERVAL, ContainerPlan, ContainerRuntime, container_logs)
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.baseline import FLAVORS

METHOD = 'compose'
# Roles of the project's files in the manifest's ``files`` (compared for drift like the proxy's files).
FILE_ROLE = 'compose:'
ENV_FILE = '.env'
OVERRIDE_MODE = 0o644
# Bounds of one `up` of the service (compose's own start; the old container is already stopped).
UP_TIMEOUT_S = 120


def file_entries(paths):
    """Manifest file entries of the project's files (role ``compose:<path>``), checksummed."""
    return [{'role': FILE_ROLE + path, 'path': path, 'resolved': path, 'sha256': mf.sha256_file(path)}
            for path in paths]


def read_small(path, limit=1024 * 1024):
    try:
        with open(path, errors='replace') as handle:
            return handle.read(limit)
    except (IOError, OSError):
        return None


class ComposePlan(ContainerPlan):
    """A switch of a compose service: the image it will run and the collection's override file for it."""

    method = METHOD

    def __init__(self, runtime, target, image):
        super(ComposePlan, self).__init__(runtime, target, image)
        self.override_path = runtime.override_path
        self.override_text = cp.override_text(runtime.project, runtime.compose_service, self.image_id) \
            if target == 'go' else None
        self.expected_hash = None
        if target == 'c':
            self.check_c_reference()

    def check_c_reference(self):
        """The rollback recreates from the project's own image reference: it must still name the frozen image."""
        runtime = self.runtime
        reference = runtime.compose_record.get('image_ref')
        if not reference or reference == self.image_id:
            return
        try:
            named = runtime.docker.image_or_none(reference)
        except DockerError as exc:
            raise SwitchError(str(exc))
        if named is None or named.get('Id') != self.image_id:
            raise SwitchError('%s: the project\'s files run image %s, which %s, not the frozen C image %s: compose would '
                              'recreate the service from another image. Way forward: `docker tag %s %s` (the frozen '
                              'image is on this host), then run rollback.yml again'
                              % (runtime.service, reference, 'is not on this host' if named is None else
                                 'now names %s' % named.get('Id'), self.image_id, self.image_id, reference),
                              refused='compose_image_moved', changed=False)

    def diff(self, _secrets):
        """Before/after of the collection's override file (it holds no secret)."""
        before = read_small(self.override_path) if self.override_path and os.path.exists(self.override_path) else ''
        return {'before': before or '', 'after': self.override_text or '',
                'before_header': self.override_path, 'after_header': self.override_path}


class ComposeRuntime(ContainerRuntime):
    """A proxy run as the one container of a docker compose service, recreated through compose."""

    kind = 'compose'
    methods = (METHOD,)
    release_kind = 'image'
    host_options = ('docker_socket',)
    supports_bridge = False
    bridge_refusal = ('runs as a compose service: the bridge handover is for the systemd methods (dropin, symlink); '
                      'compose recreates the container. Leave mtproxy_cutover_handover at restart for compose hosts')

    def __init__(self, store, manifest=None, state=None, docker=None, docker_socket=None, clis=None):
        super(ComposeRuntime, self).__init__(store, manifest, state, docker, docker_socket)
        try:
            self.project, self.compose_service = cp.split_service(self.service)
        except ValueError as exc:
            raise CutoverError(str(exc), refused='compose_service_name', changed=False)
        self.docker_socket = docker_socket
        self.clis = clis
        self.compose_record = (manifest or {}).get('compose') or {}
        self.container = self.compose_record.get('container') or self.service
        self.working_dir = self.compose_record.get('working_dir')
        self.override_path = self.compose_record.get('override_path')
        self.cli = None
        self.live_container = None

    # -- the service's container and the compose command -----------------------------------------

    def find(self, error):
        """Inspect document of the service's one container (None when it has none); ``error`` for replicas."""
        try:
            listed = self.docker.containers({cp.PROJECT: self.project, cp.SERVICE: self.compose_service})
            found = [self.docker.inspect_container(entry['Id']) for entry in listed]
        except DockerError as exc:
            raise error('%s: %s' % (self.service, exc))
        found = [c for c in found if cp.of_service(c, self.project, self.compose_service)]
        refusal = cp.replicas_refusal(self.service, found)
        if refusal:
            raise error(refusal[1], refused=refusal[0], changed=False)
        if not found:
            return None
        self.container = (found[0].get('Name') or '').lstrip('/')
        return found[0]

    def live(self):
        return self.find(SwitchError)

    def command_for(self, version, error):
        """The host's compose commands of the same major version as ``version`` (what made the container)."""
        wanted = cp.major_version(version)
        clis = self.clis if self.clis is not None else compose_cli.installed(self.docker_socket)
        same = [cli for cli in clis if cli.major == wanted]
        if not same:
            raise error('%s: its container was made by compose %s, and this host has %s. A compose of another major '
                        'version names and hashes the container another way and would recreate it from scratch. '
                        'Way forward: install compose %s (v2: the docker-compose-plugin or Debian\'s docker-compose '
                        '2.x; v1: docker-compose 1.29), or recreate the service once with the compose you have '
                        '(`docker compose up -d --force-recreate` in %s), then run the cutover again'
                        % (self.service, version or '(no version label)',
                           ', '.join('`%s` %s' % (c.command, c.version) for c in clis) or 'no compose command '
                           '(neither `docker compose` nor `docker-compose` answers `version`)',
                           wanted or 'of the label', self.working_dir), refused='compose_version', changed=False)
        return same

    def matching_command(self, container, error):
        """(compose command, hash): the host's compose that computes the container's config hash from the files now."""
        found = cp.facts(container)
        tried = []
        for cli in self.command_for(found['version'], error):
            digest, why = cli.config_hash(found['working_dir'], self.project, self.compose_service)
            if digest is not None and digest == found['config_hash']:
                self.cli = cli
                return cli, digest
            tried.append(why or '`%s` computes %s' % (cli.command, digest))
        raise error('%s: the project\'s files no longer make the running container: its config hash is %s, and %s. '
                    'They were changed since the last `docker compose up`, or they interpolate variables of the shell '
                    'that ran it. Way forward: run `docker compose up -d` in %s (what runs is then what the files '
                    'say), check the proxy, then run the cutover again'
                    % (self.service, found['config_hash'], '; '.join(tried), found['working_dir']),
                    refused='compose_config_changed', changed=False)

    def listing(self, error):
        try:
            return sorted(os.listdir(self.working_dir))
        except OSError as exc:
            raise error('%s: the project\'s working directory %s cannot be read: %s'
                        % (self.service, self.working_dir, exc.strerror or exc))

    def ours_present(self):
        return bool(self.override_path) and cp.is_ours(read_small(self.override_path))

    def project_check(self, container, error):
        """Refuse a project whose own invocation would not load the collection's override file (before any change)."""
        found = cp.facts(container)
        self.working_dir = found['working_dir']
        existing = self.listing(error)
        main, overrides = cp.default_files(self.working_dir, existing, cp.major_version(found['version']) or 2)
        if main is not None and not self.override_path:
            self.override_path = cp.override_name(main)
        ours = self.override_path if self.ours_present() else None
        texts = dict((path, read_small(path)) for path in overrides if path != ours)
        refusal = cp.invocation_refusal(self.service, container, existing, cp.major_version(found['version']) or 2,
                                        ours, texts)
        if refusal:
            raise error(refusal[1], refused=refusal[0], changed=False)
        return main, ours

    def project_files(self, container):
        """The project's files compose loaded (the collection's own aside) and its .env, checksummed."""
        paths = [path for path in cp.config_files(container) if path != self.override_path]
        env_file = os.path.join(self.working_dir, ENV_FILE)
        if os.path.isfile(env_file):
            paths.append(env_file)
        return file_entries(paths)

    # -- freeze --------------------------------------------------------------------------------

    def owner_refusal(self, container):
        """Compose owns the container and this runtime goes through compose: nothing to refuse here."""
        return None

    @staticmethod
    def spec_of(container, image):
        return cp.spec_of(container, image)

    def read_for_freeze(self, params, run_command, now, warnings, method_class=None):
        container = self.find(FreezeError)
        if container is None:
            raise FreezeError('compose service %s has no container on this host (no container labelled '
                              'com.docker.compose.project=%s, com.docker.compose.service=%s): start it (`docker compose '
                              'up -d` in the project\'s directory) or set mtproxy_cutover_service to <project>/<service> '
                              'of the proxy (`docker compose ls`, `docker compose ps`)'
                              % (self.service, self.project, self.compose_service))
        _main, ours = self.project_check(container, FreezeError)
        read = super(ComposeRuntime, self).read_for_freeze(params, run_command, now, warnings, method_class)
        flipped, state, frozen, live = read['flipped'], read['state'], read['frozen'], read['live']
        if ours and not flipped:
            raise FreezeError('%s runs the C image but the collection\'s override file %s is there: a switch was '
                              'interrupted before compose recreated the service. Run rollback.yml for this host (it '
                              'removes the file and recreates the service through compose), then cut over again'
                              % (self.service, ours), refused='compose_interrupted', changed=False)
        if flipped:
            expected = cp.override_text(self.project, self.compose_service, state.get('binary'))
            if ours is None or read_small(ours) != expected:
                raise FreezeError('%s runs the Go image, but the collection\'s override file %s is %s: the next '
                                  '`docker compose up -d` would not keep it on Go. Run rollback.yml for this host, then '
                                  'cut over again' % (self.service, self.override_path,
                                                      'gone' if ours is None else 'not as the collection wrote it'),
                                  refused='compose_override_changed', changed=False)
        cli, digest = self.matching_command(container, FreezeError)
        found = cp.facts(container)
        live['files'] = [e for e in live['files'] if not e['role'].startswith(FILE_ROLE)] + \
            self.project_files(container)
        if flipped:
            live['compose'] = dict(frozen.get('compose') or {}, container=self.container)
        else:
            live['compose'] = {
                'project': self.project, 'service': self.compose_service, 'container': self.container,
                'working_dir': self.working_dir,
                'config_files': [p for p in found['config_files'] if p != self.override_path],
                'override_path': self.override_path, 'config_hash': digest,
                'image_ref': (container.get('Config') or {}).get('Image'),
                'cli': cli.argv, 'cli_version': cli.version, 'made_by': found['version'],
            }
        return read

    # -- candidates ----------------------------------------------------------------------------

    def candidate(self, role='prewarm', flavor='go', **options):
        if role != 'prewarm':
            raise PrewarmError('%s %s' % (self.service, self.bridge_refusal), refused='bridge_unsupported',
                               changed=False)
        return super(ComposeRuntime, self).candidate(role, flavor, **options)

    # -- switch --------------------------------------------------------------------------------

    def plan(self, target, release, method=None):
        if method not in (None, METHOD):
            raise SwitchError('%s was frozen as a compose service; method=%s contradicts it (a compose service is '
                              'switched through compose): leave the method unset or pass method=compose'
                              % (self.service, method), refused='method_mismatch', changed=False)
        return ComposePlan(self, target, release)

    def override_as_planned(self, plan):
        if plan.target == 'go':
            return read_small(self.override_path) == plan.override_text
        return not os.path.exists(self.override_path)

    def live_status(self, plan):
        pid, ok = super(ComposeRuntime, self).live_status(plan)
        plan.ok = bool(ok) and self.override_as_planned(plan) and self.labels_as_planned(self.live_container, plan) is None
        return pid, plan.ok

    def expected_files(self, target):
        files = list(self.compose_record.get('config_files') or [])
        return files + [self.override_path] if target == 'go' else files

    def labels_as_planned(self, container, plan):
        """Why compose's record of the container is not what ``plan`` makes, or None."""
        if container is None:
            return 'no container'
        loaded = cp.config_files(container)
        if loaded != self.expected_files(plan.target):
            return 'compose loaded %s, not %s' % (', '.join(loaded), ', '.join(self.expected_files(plan.target)))
        # Back on C the container must be the frozen one; on Go the one compose hashed after the write.
        wanted = self.compose_record.get('config_hash') if plan.target == 'c' else plan.expected_hash
        digest = cp.labels(container).get(cp.CONFIG_HASH)
        if wanted and digest != wanted:
            return 'its config hash is %s, not %s%s' % (digest, wanted, ' (the frozen one)' if plan.target == 'c' else '')
        return None

    def check_takes_effect(self, plan):
        """Before anything changes: the project's invocation loads the override file, its files are as frozen."""
        container = self.live_container
        if container is None:
            return
        self.project_check(container, SwitchError)
        if plan.target == 'go' and not self.override_as_planned(plan):
            self.matching_command(container, SwitchError)

    def command(self):
        if self.cli is None:
            self.cli = self.command_for(self.compose_record.get('made_by') or self.compose_record.get('cli_version'),
                                        SwitchError)[0]
        return self.cli

    def apply(self, plan):
        """Write (go) or remove (c) the collection's override file; compose must then see the change."""
        cli = self.command()
        path = self.override_path
        was_ours = self.ours_present()
        if plan.target == 'go':
            write_atomic(path, plan.override_text, OVERRIDE_MODE)
        elif os.path.exists(path):
            if not cp.is_ours(read_small(path)):
                raise SwitchError('%s: %s is not the collection\'s override file (it does not start with %r): it is left '
                                  'alone. Remove or rename it yourself if it is a copy of ours, then run rollback.yml again'
                                  % (self.service, path, cp.OVERRIDE_MARK), refused='compose_override_changed',
                                  changed=False)
            os.unlink(path)
        after, why = cli.config_hash(self.working_dir, self.project, self.compose_service)
        # The frozen hash is the service's config without the override file: loaded, the file changes it.
        if plan.target == 'go' and (after is None or after == self.compose_record.get('config_hash')):
            if not was_ours:
                os.unlink(path)
            raise SwitchError('%s: compose does not load %s in %s (%s): the project\'s own invocation would not keep the '
                              'service on Go. It was removed again and nothing else changed. Way forward: check the '
                              'project\'s .env for COMPOSE_FILE and run the project with its default files'
                              % (self.service, path, self.working_dir, why or 'the service\'s config hash did not change'),
                              refused='compose_override_not_loaded', changed=False)
        plan.expected_hash = after

    def restart(self, plan, stop_mode, listen_timeout, stop_timeout, stats_port, old_flavor):
        """Stop the old container (SIGTERM to the proxy), `compose up` the service, wait for its client port."""
        live = self.live_container
        running = bool(live) and (live.get('State') or {}).get('Running')
        stable = bool(live) and ch.stable_netns(live)
        netns_pid = self.netns_of(live) if running else None
        port = int((self.manifest.get('client_ports') or [0])[0])
        t0 = time.monotonic()
        handover_at, ended_early = None, False
        if running:
            gone_at, handover_at, ended_early, finish_stop = self.stop_old(
                self.container, live, stop_timeout, stop_mode, old_flavor, netns_pid, stable)
            finish_stop()  # compose must find the old container stopped, not being stopped
            # stop_old set its restart policy to `no`; compose only starts (does not recreate) a container whose
            # config is unchanged (a retry), so the operator's policy goes back now that it is stopped.
            policy = (live.get('HostConfig') or {}).get('RestartPolicy')
            if policy:
                self.docker.update_restart_policy(self.container, policy)
        else:
            gone_at = t0
        cli = self.command()
        t_up = time.monotonic()
        deadline = t_up + UP_TIMEOUT_S + float(listen_timeout)
        job = cli.start(self.working_dir, self.project, *cli.up_args(self.compose_service),
                        timeout=UP_TIMEOUT_S + float(listen_timeout))

        def gave_up(_periodic):
            if job.poll() is not None and job.returncode != 0:
                return 'compose up failed'
            return None

        accepted_at, why = None, None
        if stable and netns_pid:
            with netns.entered(netns_pid):
                accepted_at, why = wait_accepting(port, self.client_hosts, t_up + float(listen_timeout) + 30,
                                                  gave_up=gave_up, check_interval=STATE_CHECK_INTERVAL)
        out, err = process.finish(job, max(deadline - time.monotonic(), 1.0))
        up_done = time.monotonic()
        failure = None
        if job.returncode != 0:
            failure = '`%s up` failed (%s): %s' % (cli.command, job.returncode,
                                                   compose_cli.last_line(err))
        new = self.live() or {}
        if failure is None and accepted_at is None:
            if not (stable and netns_pid):
                try:
                    netns_pid = self.netns_of(new) if (new.get('State') or {}).get('Running') else None
                except SwitchError as exc:
                    why = str(exc)
                if netns_pid:
                    with netns.entered(netns_pid):
                        accepted_at, why = wait_accepting(port, self.client_hosts, up_done + float(listen_timeout))
            failure = None if accepted_at is not None else (
                why or 'client port %d did not accept connections within the listen timeout' % port)
        del out
        timings = {'stop_ms': ms(gone_at - t0), 'start_ms': None, 'unavailable_ms': None, 'stats_ms': None,
                   'create_ms': None, 'spawn_ms': None, 'compose_ms': ms(up_done - t_up), 'binary_start_ms': None,
                   'killed_after_stop_timeout': False, 'stop_mode': stop_mode,
                   'listeners_closed_ms': ms(handover_at - t0) if handover_at is not None else None,
                   'ended_after_listeners_closed': ended_early}
        if accepted_at is not None:
            timings.update(start_ms=ms(accepted_at - gone_at), unavailable_ms=ms(accepted_at - t0))
        if failure is None and new.get('Image') != plan.image_id:
            failure = 'compose recreated the service from image %s, not %s' % (new.get('Image'), plan.image_id)
        if failure is None:
            drift = self.proven_spec(new)
            if drift:
                failure = 'docker inspect of the recreated container differs from the frozen spec: %s' % ', '.join(
                    entry['field'] for entry in drift)
        if failure is None:
            failure = self.labels_as_planned(new, plan)
            if failure is not None:
                failure = 'compose\'s record of the recreated container: %s' % failure
        return timings, failure, (new.get('State') or {}).get('Pid')

    def failure_message(self, target, image_id, failure, since):
        logs = container_logs(self.docker, self.container, LOG_LINES, self.secrets)
        return ('%s did not come up on the %s image (%s): %s. Compose runs the service from that image now (the '
                'collection\'s override file %s %s). Switch back with target=c (rollback.yml). Last log lines of %s:\n%s'
                % (self.service, FLAVORS[target], image_id, redact_text(failure, self.secrets), self.override_path,
                   'is in place' if target == 'go' else 'was removed', self.container,
                   '\n'.join(logs) or '(no logs)')), logs

    def clear_leftovers(self):
        try:
            super(ComposeRuntime, self).clear_leftovers()
        except (DockerError, HostError) as exc:
            raise SwitchError('%s: %s' % (self.service, exc))

    def finish(self):
        """Compose removed the old container itself."""
