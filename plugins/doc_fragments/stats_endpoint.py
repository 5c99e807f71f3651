# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Options and attributes shared by the modules that read /stats."""

    DOCUMENTATION = r'''
options:
  url:
    description:
      - URL of the stats page. The host must be a loopback address (127.0.0.0/8, C(::1), C(localhost)).
    type: str
    default: http://127.0.0.1:8888/stats
  container:
    description:
      - Name or ID of a container on this host whose network namespace holds the stats port (the proxy
        runs in a container, method C(container)). The page is read from inside that namespace, where
        the proxy's 127.0.0.1 is; with C(--network container:X) the namespace of X. Needs root (setns).
      - Unset, the page is read in the host's own namespace.
    type: str
  docker_socket:
    description: Unix socket of the Docker engine (or Podman's Docker-compatible socket), used with O(container).
    type: path
    default: /var/run/docker.sock
  max_bytes:
    description:
      - Largest body accepted; a larger one is a scrape error of class C(too_large).
    type: int
    default: 1048576
attributes:
  async:
    description: Runs on the host like any module, in the background too (C(async)); the roles run long windows so.
    support: full
  check_mode:
    description: Read-only; runs the same in check mode.
    support: full
  diff_mode:
    description: Nothing is changed, so there is no diff.
    support: none
  platform:
    description: POSIX hosts with Python 3 that reach the stats port on loopback.
    support: full
    platforms: posix
'''
