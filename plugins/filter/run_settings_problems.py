# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: run_settings_problems
short_description: Name the run-wide settings whose resolved value differs between the hosts of a run
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
description:
  - Some settings are one value for the whole run (the waves C(mtproxy_cutover_serial), the canary group,
    C(mtproxy_cutover_stop_after), the rollback scope, the Go binary and image, the run id and artifacts
    directory, the drill's host, window and envelope). Takes the resolved settings of each host and returns one
    text per such setting whose value differs, naming the hosts; values of no_log settings are never shown.
options:
  _input:
    description: Host name to its resolved settings (C(preflight_settings)).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Refuse run-wide settings that differ between hosts
  ansible.builtin.assert:
    that: problems | length == 0
    fail_msg: "{{ problems | join('; ') }}"
  vars:
    problems: >-
      {{ dict(ansible_play_hosts_all | zip(ansible_play_hosts_all | map('extract', hostvars, 'preflight_settings')))
         | mtproxy.cutover.run_settings_problems }}
"""

RETURN = r"""
_value:
  description: One text per run-wide setting that differs (empty when they all agree).
  type: list
  elements: str
"""

from ansible_collections.mtproxy.cutover.plugins.plugin_utils.settings import run_settings_problems


class FilterModule(object):
    def filters(self):
        return {"run_settings_problems": lambda settings_by_host: run_settings_problems(dict(settings_by_host))}
