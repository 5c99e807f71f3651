# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""TCP probes of the proxy's ports from this host (or from inside the network namespace entered)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import socket

from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import LOOPBACK_V4

# While a bridge handover's redirect is in place (bridge.py) the flip's own TCP probes carry this
# packet mark (SO_MARK, needs CAP_NET_ADMIN), which the redirect skips: they reach the service's own
# socket, never the bridge. 0: probes are unmarked.
PROBE_MARK = 0
SO_MARK = getattr(socket, 'SO_MARK', 36)


def tcp_probe(port, host=LOOPBACK_V4, timeout=0.05):
    """One TCP connect: 'accepts', 'refused' (nothing listens) or 'no_answer' (timeout, other error)."""
    try:
        sock = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return 'no_answer'
    sock.settimeout(timeout)
    if PROBE_MARK:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, PROBE_MARK)
    try:
        sock.connect((host, port))
        return 'accepts'
    except socket.timeout:
        return 'no_answer'
    except OSError as exc:
        return 'refused' if exc.errno == errno.ECONNREFUSED else 'no_answer'
    finally:
        sock.close()


def address_list(host):
    return [host] if isinstance(host, str) else list(host)


def tcp_accepts(port, host=LOOPBACK_V4, timeout=0.05):
    """True when a connect to ``port`` on ``host`` (one address or several: any of them) succeeds."""
    return any(tcp_probe(port, one, timeout) == 'accepts' for one in address_list(host))


def port_refuses(port, host=LOOPBACK_V4, timeout=0.05):
    """True only when a connect is actively refused (on every address given); a timeout is not a refusal."""
    return all(tcp_probe(port, one, timeout) == 'refused' for one in address_list(host))


def ipv6_loopback():
    """Whether this host has ::1 (containers and some hosts run with IPv6 disabled)."""
    try:
        with open('/proc/net/if_inet6') as handle:
            return any(line.split()[0] == '0' * 31 + '1' for line in handle if line.strip())
    except (IOError, OSError, IndexError):
        return False


def show_host(hosts):
    host = address_list(hosts)[0]
    return '[%s]' % host if ':' in host else host
