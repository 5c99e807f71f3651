# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: failed_hosts
short_description: The hosts a run rolled back, that failed, went away or were taken by another run
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
description:
  - Takes host variables (C(preflight_run.hosts | map('extract', hostvars))) and returns the names of the hosts
    whose outcome in this run is C(rolled_back), C(failed), C(unreachable) or C(locked) (another run took the host,
    by its run lock).
options:
  _input:
    description: Host variables of the hosts (each with C(inventory_hostname)).
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Name the hosts that make the fleet roll back
  ansible.builtin.debug:
    msg: "{{ preflight_run.hosts | map('extract', hostvars) | mtproxy.cutover.failed_hosts | join(', ') }}"
"""

RETURN = r"""
_value:
  description: Host names, in the order given.
  type: list
  elements: str
"""

from ansible_collections.mtproxy.cutover.plugins.plugin_utils.run_state import failed_hosts


class FilterModule(object):
    def filters(self):
        return {"failed_hosts": lambda hosts: failed_hosts(list(hosts))}
