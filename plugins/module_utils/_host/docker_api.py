# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The few Docker Engine API calls the container method makes, over the engine's unix socket.

Standard library only (http.client on an AF_UNIX socket), so that the flip can time a container's
stop and start to the millisecond without a client library between it and the engine. The calls and
their shapes are the Engine API's (docs.docker.com/reference/api/engine, API 1.25+); Podman's
Docker-compatible socket answers the same calls.

Errors raise ``DockerError`` with the engine's own message (``{"message": ...}`` bodies), the HTTP
status and the call.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import socket

try:
    from http.client import HTTPConnection
    from urllib.parse import quote, urlencode
except ImportError:  # pragma: no cover - Python 2 is not supported by the collection
    HTTPConnection = object
    quote = urlencode = None

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import DockerError  # noqa: F401 (raised here, caught by callers)

DEFAULT_SOCKET = '/var/run/docker.sock'
# Engine API version asked for: 1.25 (Docker 1.13, 2017) has every call used here.
API_VERSION = 'v1.25'
TIMEOUT_S = 60.0


class _UnixConnection(HTTPConnection):
    def __init__(self, path, timeout):
        HTTPConnection.__init__(self, 'localhost', timeout=timeout)
        self.socket_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class Docker:
    """A client of one engine socket; every method is one API call."""

    def __init__(self, socket_path=DEFAULT_SOCKET, timeout=TIMEOUT_S):
        self.socket_path = socket_path
        self.timeout = timeout

    def call(self, method, path, query=None, body=None, timeout=None, raw=False, data=None):
        """(status, decoded JSON or bytes) of one call; DockerError on a non-2xx status.

        ``body`` is sent as JSON, ``data`` (bytes) as an application/x-tar body."""
        url = '/%s%s' % (API_VERSION, path)
        if query:
            url += '?' + urlencode(query)
        conn = _UnixConnection(self.socket_path, timeout or self.timeout)
        try:
            headers = {}
            payload = None
            if body is not None:
                payload = json.dumps(body).encode('utf-8')
                headers['Content-Type'] = 'application/json'
            elif data is not None:
                payload = data
                headers['Content-Type'] = 'application/x-tar'
            try:
                conn.request(method, url, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, socket.error) as exc:
                raise DockerError('the Docker engine at %s did not answer %s %s: %s'
                                  % (self.socket_path, method, path, exc))
        finally:
            conn.close()
        if response.status >= 300:
            raise DockerError('%s %s: %s (HTTP %d)' % (method, path, engine_message(data), response.status),
                              response.status)
        if raw:
            return response.status, data
        return response.status, json.loads(data.decode('utf-8')) if data.strip() else None

    # -- containers
    def inspect_container(self, name):
        return self.call('GET', '/containers/%s/json' % quote(name, safe=''))[1]

    def container_or_none(self, name):
        return _unless_missing(self.inspect_container, name)

    def containers(self, labels):
        """Summaries (``Id``, ``Names``, ``State``, ``Labels``) of every container, running or not, that has
        all of ``labels`` ({name: value})."""
        selector = ['%s=%s' % item for item in sorted(labels.items())]
        return self.call('GET', '/containers/json', {'all': 'true', 'filters': json.dumps({'label': selector})})[1] or []

    def create_container(self, name, body):
        return self.call('POST', '/containers/create', {'name': name}, body)[1]['Id']

    def start(self, name):
        self.call('POST', '/containers/%s/start' % quote(name, safe=''))

    def stop(self, name, timeout_s):
        """Stop (SIGTERM, then SIGKILL after ``timeout_s``); a container already stopped is fine."""
        try:
            self.call('POST', '/containers/%s/stop' % quote(name, safe=''), {'t': int(timeout_s)},
                      timeout=self.timeout + timeout_s)
        except DockerError as exc:
            if exc.status != 304:
                raise

    def update_restart_policy(self, name, policy):
        """Set the restart policy of a container (``{'Name': 'no'}``: an exit is not restarted)."""
        self.call('POST', '/containers/%s/update' % quote(name, safe=''), body={'RestartPolicy': policy})

    def kill(self, name, signal='SIGKILL'):
        self.call('POST', '/containers/%s/kill' % quote(name, safe=''), {'signal': signal})

    def rename(self, name, new_name):
        self.call('POST', '/containers/%s/rename' % quote(name, safe=''), {'name': new_name})

    def remove(self, name, force=False, volumes=False):
        """Remove a container; its anonymous volumes only with ``volumes`` (named and bind mounts always stay)."""
        try:
            self.call('DELETE', '/containers/%s' % quote(name, safe=''),
                      {'force': 'true' if force else 'false', 'v': 'true' if volumes else 'false'})
        except DockerError as exc:
            if exc.status != 404:
                raise

    def get_archive(self, name, path):
        """A tar of ``path`` (file or directory) as the container ``name`` sees it; bytes."""
        return self.call('GET', '/containers/%s/archive' % quote(name, safe=''), {'path': path}, raw=True)[1]

    def put_archive(self, name, path, tar_bytes):
        """Extract a tar into the existing directory ``path`` of container ``name`` (created or stopped too)."""
        self.call('PUT', '/containers/%s/archive' % quote(name, safe=''), {'path': path}, data=tar_bytes)

    def logs(self, name, tail):
        """The last ``tail`` lines of stdout and stderr, as text (multiplexed stream decoded)."""
        _status, data = self.call('GET', '/containers/%s/logs' % quote(name, safe=''),
                                  {'stdout': 'true', 'stderr': 'true', 'tail': str(int(tail))}, raw=True)
        return demultiplex(data)

    # -- images
    def inspect_image(self, ref):
        return self.call('GET', '/images/%s/json' % quote(ref, safe=':@/'))[1]

    def image_or_none(self, ref):
        return _unless_missing(self.inspect_image, ref)


def _unless_missing(inspect, name):
    """``inspect(name)``, or None when the engine answers 404 (no such container or image)."""
    try:
        return inspect(name)
    except DockerError as exc:
        if exc.status == 404:
            return None
        raise


def engine_message(data):
    try:
        return json.loads(data.decode('utf-8')).get('message') or data.decode('utf-8', 'replace').strip()
    except (ValueError, AttributeError):
        return data.decode('utf-8', 'replace').strip() or 'no message'


def demultiplex(data):
    """Text of a logs body: the 8-byte-header frames of a non-TTY container, or plain bytes (TTY)."""
    out = []
    index = 0
    framed = len(data) >= 8 and data[0:1] in (b'\x00', b'\x01', b'\x02') and data[1:4] == b'\x00\x00\x00'
    if not framed:
        return data.decode('utf-8', 'replace')
    while index + 8 <= len(data):
        size = int.from_bytes(data[index + 4:index + 8], 'big')
        out.append(data[index + 8:index + 8 + size])
        index += 8 + size
    return b''.join(out).decode('utf-8', 'replace')
