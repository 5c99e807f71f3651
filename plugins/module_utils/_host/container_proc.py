# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the container method reads on the container host: the proxy process inside a container,
the network namespace its ports live in, files as the container sees them, units that run it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os

from ansible_collections.mtproxy.cutover.plugins.module_utils._host import netns
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import ArgvError, parse_argv
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.docker_api import Docker
from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import DockerError, HostError, NetnsError  # noqa
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.proc import read_cmdline

# Where unit files that might run `docker run --name X` live.
UNIT_DIRS = ('/etc/systemd/system', '/run/systemd/system', '/lib/systemd/system', '/usr/lib/systemd/system')
MAX_UNIT_FILES = 2000
MAX_DESCENDANTS = 256


def children(pid):
    """Child PIDs of ``pid`` (every thread's children file), [] when unreadable."""
    out = []
    try:
        tasks = os.listdir('/proc/%d/task' % pid)
    except OSError:
        return out
    for task in tasks:
        try:
            with open('/proc/%d/task/%s/children' % (pid, task)) as handle:
                out.extend(int(p) for p in handle.read().split())
        except (IOError, OSError, ValueError):
            continue
    return out


def is_proxy_argv(argv):
    """An argv the C proxy's option parser reads, with at least one client port (-H)."""
    if not argv:
        return False
    try:
        return bool(parse_argv(argv).client_ports)
    except ArgvError:
        return False


def proxy_process(container_pid):
    """(pid, argv) of the proxy in a container: its main process, or the first descendant that is the
    proxy (the official image's entrypoint is a shell that ends in ``exec``; one that forks is
    followed). HostError when no process of the container runs a proxy command line."""
    queue = [container_pid]
    seen = 0
    while queue and seen < MAX_DESCENDANTS:
        pid = queue.pop(0)
        seen += 1
        argv = read_cmdline(pid)
        if is_proxy_argv(argv):
            return pid, argv
        queue.extend(children(pid))
    raise HostError('no process of the container (main pid %d) runs the proxy with a client port (-H)'
                    % container_pid)


def netns_pid(docker, inspected):
    """A PID whose network namespace holds the container's ports, or None for the host's own.

    ``--network container:X`` shares X's namespace (stable across a recreate of this container);
    ``--network host`` is the host's; every other mode is the container's own.
    """
    mode = (inspected.get('HostConfig') or {}).get('NetworkMode') or ''
    if mode == 'host':
        return None
    if mode.startswith('container:'):
        owner = docker.inspect_container(mode[len('container:'):])
        pid = (owner.get('State') or {}).get('Pid') or 0
        if not pid:
            raise HostError('container %s shares the network of %s, which is not running'
                            % (inspected.get('Name', '').lstrip('/'), mode[len('container:'):]))
        return pid
    return (inspected.get('State') or {}).get('Pid') or None


def stable_netns(inspected):
    """True when the namespace of the ports outlives the container (host or another container's)."""
    mode = (inspected.get('HostConfig') or {}).get('NetworkMode') or ''
    return mode == 'host' or mode.startswith('container:')


def in_root(pid, path):
    """``path`` as the process ``pid`` sees it (its mount namespace), through /proc/PID/root."""
    return '/proc/%d/root%s' % (pid, path if path.startswith('/') else '/' + path)


def units_naming(name, dirs=UNIT_DIRS):
    """[(path, text)] of unit files that mention ``name`` (bounded scan of the usual unit dirs)."""
    found = []
    scanned = 0
    for directory in dirs:
        try:
            entries = sorted(os.listdir(directory))
        except OSError:
            continue
        for entry in entries:
            if scanned >= MAX_UNIT_FILES:
                return found
            path = os.path.join(directory, entry)
            if not entry.endswith('.service') or not os.path.isfile(path):
                continue
            scanned += 1
            try:
                with open(path, errors='replace') as handle:
                    text = handle.read(65536)
            except (IOError, OSError):
                continue
            if name in text:
                found.append((path, text))
    return found


def netns_of_container(name, docker):
    """The PID whose network namespace holds the ports of container ``name`` (None: the host's own)."""
    inspected = docker.container_or_none(name)
    if inspected is None:
        raise HostError('container %s does not exist on this host' % name)
    if not (inspected.get('State') or {}).get('Running'):
        raise HostError('container %s is not running (Status=%s)' % (name, (inspected.get('State') or {}).get('Status')))
    return netns_pid(docker, inspected)


@contextlib.contextmanager
def container_namespace(name, socket_path='/var/run/docker.sock'):
    """Inside: this thread is in the network namespace of container ``name`` (no change when None).

    HostError when the container is missing or stopped, or the namespace cannot be entered."""
    if not name:
        yield
        return
    try:
        pid = netns_of_container(name, Docker(socket_path))
    except DockerError as exc:
        raise HostError(str(exc))
    try:
        with netns.entered(pid):
            yield
    except NetnsError as exc:
        raise HostError('cannot enter the network namespace of container %s: %s' % (name, exc))
