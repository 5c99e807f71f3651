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
  max_bytes:
    description:
      - Largest body accepted; a larger one is a scrape error of class C(too_large).
    type: int
    default: 1048576
attributes:
  check_mode:
    description: Read-only; runs the same in check mode.
    support: full
  diff_mode:
    description: Nothing is changed, so there is no diff.
    support: none
'''
