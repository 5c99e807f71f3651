# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: going_on_to
short_description: Whether a run goes on to a step (freeze, stage, flip)
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
description:
  - Takes the host variables of the run's hosts (C(preflight_run.hosts | map('extract', hostvars))) and
    tells whether the run goes on to O(step).
  - Not after a stop (a host whose freeze, stage or rollback failed, or that did not answer before
    anything changed, stopped the run), nor past C(mtproxy_cutover_stop_after) (V(freeze) leaves out the
    stage and the flips, V(stage) the flips).
  - For V(flip), the hosts are given in flip order (C(preflight_run.flip_order), canaries then waves) with
    O(batch), the hosts about to flip; every host before them must have been judged and kept on Go. A
    canary or wave host that was rolled back, failed, went away or left the play ends the flips.
  - The playbooks end a play with it (C(meta) C(end_play)); no run state is kept in C(hostvars['localhost']).
options:
  _input:
    description: Host variables of the run's hosts (each with C(inventory_hostname)), in flip order for V(flip).
    type: list
    elements: dict
    required: true
  step:
    description: The step about to start.
    type: str
    choices: [freeze, stage, flip]
    required: true
  batch:
    description: For V(flip), the hosts about to flip (C(ansible_play_batch)).
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Start no canary after a stop, a canary not kept on Go, or when asked to stop before the flips
  ansible.builtin.meta: end_play
  when: preflight_run.flip_order | map('extract', hostvars) is not mtproxy.cutover.going_on_to('flip', ansible_play_batch)
"""

RETURN = r"""
_value:
  description: True when the run goes on to O(step).
  type: bool
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mtproxy.cutover.plugins.plugin_utils.run_state import RunStateError, goes_on_to


def going_on_to(hosts, step, batch=None):
    try:
        return goes_on_to(list(hosts), step, batch)
    except RunStateError as exc:
        raise AnsibleFilterError("going_on_to: %s" % exc)


class TestModule(object):
    def tests(self):
        return {"going_on_to": going_on_to}
