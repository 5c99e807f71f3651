# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: all_on_go
short_description: Whether every host of a wave was judged and kept on Go
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
description:
  - Takes host variables (C(wave.hosts | map('extract', hostvars))) and is true when the run judged every
    one of them and kept it on Go. A host rolled back, failed, gone away, or that left the play without an
    outcome makes it false.
options:
  _input:
    description: Host variables of the hosts (each with C(inventory_hostname)).
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Roll back the rest of a wave that did not go well
  ansible.builtin.include_tasks: tasks/roll_back_host.yml
  when: flip_wave.hosts | map('extract', hostvars) is not mtproxy.cutover.all_on_go
"""

RETURN = r"""
_value:
  description: True when every host is on Go as the run judged it.
  type: bool
"""

from ansible_collections.mtproxy.cutover.plugins.plugin_utils.run_state import all_on_go


class TestModule(object):
    def tests(self):
        return {"all_on_go": lambda hosts: all_on_go(list(hosts))}
