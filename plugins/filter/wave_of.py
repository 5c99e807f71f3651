# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: wave_of
short_description: The wave a host flips in, as Ansible's serial batches the wave hosts
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
description:
  - From the run's wave hosts in order (C(preflight_run.waves)) and C(mtproxy_cutover_serial), returns the
    number of the wave O(host) flips in (1 for the first) and the hosts of that wave, batched as Ansible
    batches a play with that C(serial) (a number of hosts or a percentage of all wave hosts per item, the last
    item repeating).
options:
  _input:
    description: The run's wave hosts, in play order.
    type: list
    elements: str
    required: true
  host:
    description: The host whose wave is wanted.
    type: str
    required: true
  serial:
    description: The waves, as the play keyword C(serial) takes them.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Flip and observe the wave
  ansible.builtin.include_tasks: tasks/flip_and_observe.yml
  vars:
    flip_wave: "{{ preflight_run.waves | mtproxy.cutover.wave_of(inventory_hostname, preflight_settings.serial) }}"
"""

RETURN = r"""
_value:
  description: C(number) (0 when O(host) is not a wave host) and C(hosts) of its wave.
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mtproxy.cutover.plugins.plugin_utils.run_state import RunStateError, wave_of


def wave_of_filter(hosts, host, serial):
    try:
        return wave_of(list(hosts), host, serial)
    except RunStateError as exc:
        raise AnsibleFilterError("wave_of: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {"wave_of": wave_of_filter}
