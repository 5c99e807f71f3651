# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bounded HTTP GET of /stats on the loopback interface, with every failure put in a class.

Both binaries serve /stats on 127.0.0.1 only; other addresses are refused before any connect.
The whole request (connect, headers, body) shares one deadline and the body is read up to
``max_bytes``, so a slow or endless server cannot hold the caller.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import http.client
import ipaddress
import socket
import time

from urllib.parse import urlsplit

DEFAULT_URL = 'http://127.0.0.1:8888/stats'
DEFAULT_TIMEOUT = 2.0
# A C body is ~6 KB, a Go body ~2 KB; per-secret keys add two lines per secret.
DEFAULT_MAX_BYTES = 1024 * 1024
_CHUNK = 64 * 1024

REFUSED = 'refused'
TIMEOUT = 'timeout'
CONNECTION = 'connection'
HTTP_STATUS = 'http_status'
NOT_STATS = 'not_stats'
TRUNCATED = 'truncated'
TOO_LARGE = 'too_large'
GARBAGE = 'garbage'
EMPTY = 'empty'
ERROR_KINDS = (REFUSED, TIMEOUT, CONNECTION, HTTP_STATUS, NOT_STATS, TRUNCATED, TOO_LARGE, GARBAGE, EMPTY)


class ScrapeResult:
    """Outcome of one GET. ``error`` is None on success, else one of ERROR_KINDS."""

    def __init__(self, url, started_at, elapsed_ms, status=None, body=None, error=None, detail='',
                 content_type=None):
        self.url = url
        self.started_at = started_at
        self.elapsed_ms = elapsed_ms
        self.status = status
        self.body = body
        self.error = error
        self.detail = detail
        self.content_type = content_type

    @property
    def ok(self):
        return self.error is None

    def to_dict(self):
        """Everything but the body (bodies go through the parser, never into results verbatim)."""
        return dict(url=self.url, started_at=self.started_at, elapsed_ms=self.elapsed_ms, status=self.status,
                    error=self.error, detail=self.detail, content_type=self.content_type,
                    body_bytes=None if self.body is None else len(self.body))

    def __repr__(self):
        return 'ScrapeResult(error=%r, status=%r, detail=%r)' % (self.error, self.status, self.detail)


def check_loopback_url(url):
    """(host, port, path) of an http URL on the loopback interface; ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme != 'http':
        raise ValueError('stats url must use http:// (both binaries serve plain HTTP): %s' % url)
    host = parts.hostname
    if not host:
        raise ValueError('stats url has no host: %s' % url)
    if parts.username or parts.password:
        raise ValueError('stats url must not carry credentials')
    if host != 'localhost':
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is None or not address.is_loopback:
            raise ValueError('stats url host %s is not a loopback address (127.0.0.0/8, ::1, localhost): '
                             'both binaries serve /stats on 127.0.0.1 only and no other address is probed'
                             % host)
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError('stats url has an invalid port: %s' % url)
    path = parts.path or '/'
    if parts.query:
        path += '?' + parts.query
    return host, port, path


def _remaining(deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout('deadline reached')
    return left


def _read_body(response, sock, deadline, max_bytes):
    """(body bytes, error kind or None, detail)."""
    length = response.getheader('Content-Length')
    expected = None
    if length is not None:
        try:
            expected = int(length)
        except ValueError:
            return None, GARBAGE, 'invalid Content-Length header'
        if expected > max_bytes:
            return None, TOO_LARGE, 'Content-Length %d exceeds the limit of %d bytes' % (expected, max_bytes)
    chunks = []
    size = 0
    # The response closes itself (and with it the socket getresponse() detached) once it has read the
    # announced length or the end of the stream; on Python 3.13 a settimeout() after that is EBADF.
    while not response.isclosed():
        sock.settimeout(_remaining(deadline))
        try:
            chunk = response.read1(_CHUNK)
        except http.client.IncompleteRead as exc:
            return None, TRUNCATED, 'connection closed after %d of %s bytes' % (
                size + len(exc.partial), expected if expected is not None else 'the announced')
        if not chunk:
            break
        size += len(chunk)
        if size > max_bytes:
            return None, TOO_LARGE, 'body exceeds the limit of %d bytes' % max_bytes
        chunks.append(chunk)
    body = b''.join(chunks)
    if expected is not None and len(body) != expected:
        return None, TRUNCATED, 'got %d of %d announced bytes' % (len(body), expected)
    return body, None, ''


def _classify_body(body, content_type):
    """(text, error kind or None, detail) for a 200 answer."""
    if not body.strip():
        return None, EMPTY, 'empty body'
    if 'html' in (content_type or '').lower() or body.lstrip()[:1] == b'<':
        return None, NOT_STATS, 'HTML page instead of /stats (content type %s)' % (content_type or 'unset')
    if b'\x00' in body:
        return None, GARBAGE, 'body contains NUL bytes'
    try:
        return body.decode('utf-8'), None, ''
    except UnicodeDecodeError:
        return None, GARBAGE, 'body is not UTF-8 text'


def fetch(url=DEFAULT_URL, timeout=DEFAULT_TIMEOUT, max_bytes=DEFAULT_MAX_BYTES):
    """GET ``url`` (loopback only) within ``timeout`` seconds in total; never raises for network errors.

    Raises ValueError only for a URL that is not http on a loopback host, or bad limits.
    """
    host, port, path = check_loopback_url(url)
    if not timeout or timeout <= 0:
        raise ValueError('timeout must be > 0')
    if not max_bytes or max_bytes <= 0:
        raise ValueError('max_bytes must be > 0')
    started_at = time.time()
    start = time.monotonic()
    deadline = start + timeout

    def result(**kwargs):
        return ScrapeResult(url, started_at, round((time.monotonic() - start) * 1000.0, 3), **kwargs)

    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    response = None
    try:
        conn.connect()
        conn.sock.settimeout(_remaining(deadline))
        conn.request('GET', path, headers={'Accept': 'text/plain', 'Connection': 'close',
                                           'User-Agent': 'mtproxy.cutover'})
        # getresponse() detaches the socket from conn when the server says Connection: close.
        sock = conn.sock
        sock.settimeout(_remaining(deadline))
        response = conn.getresponse()
        content_type = response.getheader('Content-Type')
        if response.status != 200:
            return result(status=response.status, error=HTTP_STATUS, content_type=content_type,
                          detail='HTTP %d %s' % (response.status, response.reason))
        body, error, detail = _read_body(response, sock, deadline, max_bytes)
        if error is None:
            text, error, detail = _classify_body(body, content_type)
            if error is None:
                return result(status=200, body=text, content_type=content_type)
        return result(status=200, error=error, detail=detail, content_type=content_type)
    except ConnectionRefusedError:
        return result(error=REFUSED, detail='connection refused on %s:%d' % (host, port))
    except socket.timeout:
        return result(error=TIMEOUT, detail='no complete answer within %.3f s' % timeout)
    except http.client.RemoteDisconnected:
        return result(error=CONNECTION, detail='server closed the connection without an answer')
    except http.client.HTTPException as exc:
        return result(error=GARBAGE, detail='not an HTTP answer (%s)' % type(exc).__name__)
    except OSError as exc:
        return result(error=CONNECTION, detail='%s: %s' % (type(exc).__name__, exc.strerror or exc))
    finally:
        if response is not None:
            response.close()
        conn.close()
