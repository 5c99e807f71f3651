# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: run_serial
short_description: The waves of this run as the wave play's serial (the size of each wave the preflight made)
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
description:
  - A play keyword such as C(serial) sees no host variables, so C(mtproxy_cutover_serial) given in the inventory
    would be lost there. The preflight batches the run's wave hosts with the resolved C(mtproxy_cutover_serial)
    (the same on every host of the run) as Ansible does, into groups C(mtproxy_run_<n>_wave_<k>) (see
    P(mtproxy.cutover.run_group#filter)). Takes C(groups) and returns the size of each wave, in order, for the
    wave play's C(serial), which batches the wave hosts the same way again.
  - Before any run (C(--syntax-check), C(--list-hosts)) an empty list; the wave play then has no host.
options:
  _input:
    description: The inventory's groups (C(groups)).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Switch the fleet to Go in waves and observe
  hosts: "{{ groups | mtproxy.cutover.run_group('waves') }}"
  serial: "{{ groups | mtproxy.cutover.run_serial }}"
  tasks: []
"""

RETURN = r"""
_value:
  description: The number of hosts of each wave, for C(serial).
  type: list
  elements: int
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mtproxy.cutover.plugins.plugin_utils.run_state import RunStateError, run_serial


def run_serial_filter(groups):
    try:
        return run_serial(groups)
    except RunStateError as exc:
        raise AnsibleFilterError("run_serial: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {"run_serial": run_serial_filter}
