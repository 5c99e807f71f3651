# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: run_group
short_description: The host pattern of the hosts of this run (all, its canaries or its waves)
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
description:
  - The preflight puts the hosts of a run in inventory groups C(mtproxy_run_<n>) (every host of the run),
    C(mtproxy_run_<n>_canaries) and C(mtproxy_run_<n>_waves) (split by the resolved
    C(mtproxy_cutover_canary_group)), C(<n>) one more than in any earlier playbook of the same C(ansible-playbook)
    process. Takes C(groups) and returns the pattern of the newest run's O(kind) of hosts, for a play's C(hosts).
  - A kind of hosts the run has none of gives a pattern that matches nothing, without a warning.
  - With O(new), returns the names of the groups a run that starts now puts its hosts in (the preflight).
options:
  _input:
    description: The inventory's groups (C(groups)).
    type: dict
    required: true
  kind:
    description: Which hosts of the run.
    type: str
    choices: [hosts, canaries, waves]
    default: hosts
  new:
    description: Return C(hosts), C(canaries) and C(waves), the group names of a run that starts now.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Switch the canaries to Go one at a time and observe
  hosts: "{{ groups | mtproxy.cutover.run_group('canaries') }}"
  serial: 1
  tasks: []
"""

RETURN = r"""
_value:
  description: A host pattern (a string); with O(new) a dict of three group names.
  type: raw
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mtproxy.cutover.plugins.plugin_utils.run_state import RunStateError, run_group


def run_group_filter(groups, kind="hosts", new=False):
    try:
        return run_group(groups, kind, new)
    except RunStateError as exc:
        raise AnsibleFilterError("run_group: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {"run_group": run_group_filter}
