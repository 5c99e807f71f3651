# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The freeze of a proxy that runs as a container (method=container).

What is recorded, beside the live argv and the checksums every freeze keeps: the container's spec
(``container.spec_of``: image by ID, command, entrypoint, environment, labels, mounts, ports,
restart policy, network, user) and the inspect document the flip recreates it from
(``container_create``). Files named on the command line are read as the container sees them
(``/proc/PID/root``). The result has the shape of the systemd freeze's (``freeze.freeze``), plus
``_netns_pid``: where ``/stats`` is read (the container's network namespace).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.mtproxy.cutover.plugins.module_utils import container as ct
from ansible_collections.mtproxy.cutover.plugins.module_utils import container_host as ch
from ansible_collections.mtproxy.cutover.plugins.module_utils import manifest as mf
from ansible_collections.mtproxy.cutover.plugins.module_utils.argv import ArgvError
from ansible_collections.mtproxy.cutover.plugins.module_utils.docker_api import Docker, DockerError
from ansible_collections.mtproxy.cutover.plugins.module_utils.host import HostError

METHOD = 'container'


def inspect_running(docker, name, error):
    """(container, image) inspect documents of a running container; ``error`` class raised otherwise."""
    try:
        container = docker.container_or_none(name)
        if container is None:
            raise error('container %s does not exist on this host (docker inspect: no such container); set '
                        'mtproxy_cutover_service to the name of the proxy container' % name)
        state = container.get('State') or {}
        if not state.get('Running') or not state.get('Pid'):
            previous = docker.container_or_none(name + '.mtproxy-cutover-prev')
            if previous is not None:
                raise error('container %s is not running (Status=%s) and %s.mtproxy-cutover-prev is there: a switch '
                            'was interrupted between its stop and its start. Run rollback.yml for this host (it '
                            'recreates %s from the frozen C image and removes the leftover), then cut over again'
                            % (name, state.get('Status'), name, name))
            shown = (name, state.get('Status'), state.get('ExitCode'), name)
            raise error('container %s is not running (Status=%s, ExitCode=%s): start it (docker start %s) and check '
                        'it serves before the cutover freezes it' % shown)
        image = docker.image_or_none(container.get('Image'))
    except DockerError as exc:
        raise error(str(exc))
    return container, image


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


def freeze_container(params, now, warnings, read_json, error, docker=None):
    """Read the container and build the manifest (nothing written). Returns
    (result, frozen, live, flipped, live_is_go, state) for the caller's decision table."""
    name = params['service']
    docker = docker or Docker(params.get('docker_socket') or '/var/run/docker.sock')
    container, image = inspect_running(docker, name, error)
    refusal = ct.owner_refusal(container, ch.units_naming(name))
    if refusal:
        raise error(refusal)
    try:
        pid, live_argv = ch.proxy_process(container['State']['Pid'])
        netns = ch.netns_pid(docker, container)
    except (HostError, DockerError) as exc:
        raise error('%s: %s' % (name, exc))
    base = os.path.join(params['state_dir'], name)
    manifest_path = os.path.join(base, 'manifest.json')
    frozen = read_json(manifest_path)
    state = read_json(os.path.join(base, 'state.json')) or {}
    spec = ct.spec_of(container, image)
    flipped = bool(frozen) and state.get('current') == 'go' and state.get('method') == METHOD \
        and container.get('Image') == state.get('binary')
    live_is_go = container.get('Image') in set(params.get('go_images') or [])
    parsed_argv = frozen['argv'] if flipped else live_argv
    try:
        parsed = mf.parse_argv(live_argv)
        files = container_files(parsed, pid, spec['working_dir'], spec['mounts'])
        if flipped:
            c_image = frozen.get('container', {}).get('image_id')
            try:
                if docker.image_or_none(c_image) is None:
                    warnings.append('the frozen C image %s is no longer on this host: a rollback needs it (docker '
                                    'load it back before rolling back)' % c_image)
            except DockerError as exc:
                warnings.append(str(exc))
            realpath, digest = frozen.get('binary_realpath'), frozen.get('binary_sha256')
            # Files baked into the image are the Go image's now; files on mounts are the ones to compare.
            baked = [e for e in frozen.get('files') or [] if not e.get('on_mount')]
            files = [e for e in files if e.get('on_mount')] + baked
        else:
            realpath = live_argv[0]
            digest = mf.sha256_file(ch.in_root(pid, live_argv[0]))
        live = mf.build_manifest(name, name, now, {}, parsed_argv, realpath, digest, files, warnings, pid)
    except ArgvError as exc:
        raise error('cannot parse the command line of the proxy in container %s like the C proxy: %s' % (name, exc))
    live['method'] = METHOD
    live['container'] = spec
    live['container_create'] = create_record(container, image) if not flipped else frozen.get('container_create')
    if flipped and live_argv != frozen['argv']:
        live['argv'] = live_argv  # compared below as drift: the Go container must run the frozen argv
    warnings[:] = live['warnings']
    result = {'current': 'go' if flipped else 'c', 'drift': [], 'manifest_path': manifest_path,
              '_argv': frozen['argv'] if flipped else live_argv, 'method': METHOD, '_netns_pid': netns}
    return result, frozen, live, flipped, live_is_go, state
