# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The docker compose CLI of the host, run the way the project's operator runs it.

Two commands are looked for: the v2 CLI plugin (``docker compose``) and ``docker-compose`` (v1, the
Python program Debian bookworm packages as 1.29, or a v2 build installed under that name). Every run
is in the project's working directory, with ``-p <project>`` and no ``-f``, so compose finds the
project's files as a plain ``docker compose up -d`` there does; ``COMPOSE_*`` variables of the module's
own environment are not passed on (the project's ``.env`` still applies, as it does for the operator).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.mtproxy.cutover.plugins.module_utils._host import process
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.compose_project import major_version

CANDIDATES = (('docker', 'compose'), ('docker-compose',))
VERSION_TIMEOUT_S = 30
CONFIG_TIMEOUT_S = 60


class Compose:
    """One compose command (``argv`` prefix) and its version, bound to a project's directory and name."""

    def __init__(self, argv, version, docker_socket=None):
        self.argv = list(argv)
        self.version = version
        self.major = major_version(version)
        self.env = {}
        if docker_socket and docker_socket != '/var/run/docker.sock':
            self.env['DOCKER_HOST'] = 'unix://' + docker_socket

    @property
    def command(self):
        return ' '.join(self.argv)

    def args(self, project, *words):
        return self.argv + ['--ansi', 'never', '-p', project] + list(words)

    def run(self, working_dir, project, *words, **options):
        """(rc, stdout, stderr) of one compose command of the project."""
        timeout = options.pop('timeout', CONFIG_TIMEOUT_S)
        return process.run(self.args(project, *words), timeout=timeout, cwd=working_dir, unset=('COMPOSE_',),
                           extra_env=self.env)

    def start(self, working_dir, project, *words, **options):
        """A compose command of the project run in the background (``process.finish`` waits for it)."""
        return process.start(self.args(project, *words), timeout=options.pop('timeout', CONFIG_TIMEOUT_S),
                             cwd=working_dir, unset=('COMPOSE_',), extra_env=self.env)

    def config_hash(self, working_dir, project, service):
        """(hash, None) compose computes for the service from the project's files now, or (None, why)."""
        rc, out, err = self.run(working_dir, project, 'config', '--hash', service)
        if rc != 0:
            return None, '`%s config --hash %s` failed (%d): %s' % (self.command, service, rc, last_line(err))
        for line in out.splitlines():
            words = line.split()
            if len(words) == 2 and words[0] == service:
                return words[1], None
        return None, '`%s config --hash %s` printed no hash for the service' % (self.command, service)

    def up_args(self, service):
        """``up`` of one service: detached, no dependencies, never a build or a pull."""
        words = ['up', '-d', '--no-deps', '--no-build']
        if self.major is not None and self.major >= 2:
            words += ['--pull', 'never']
        return words + [service]


def last_line(text):
    lines = [line for line in (text or '').strip().splitlines() if line.strip()]
    return lines[-1] if lines else '(no output)'


def installed(docker_socket=None, run=process.run):
    """[Compose] of every compose command found on the host, in CANDIDATES order."""
    found = []
    for argv in CANDIDATES:
        rc, out, _err = run(list(argv) + ['version', '--short'], timeout=VERSION_TIMEOUT_S)
        version = out.strip().splitlines()[0].strip() if rc == 0 and out.strip() else None
        if version and major_version(version) is not None:
            found.append(Compose(argv, version, docker_socket))
    return found
