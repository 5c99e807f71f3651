# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: settings_check
short_description: Pick a host's mtproxy_cutover_* settings and check what an argument spec cannot
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
description:
  - From the variables of a host (C(hostvars[inventory_hostname])), returns the C(mtproxy_cutover_*) and
    C(mtproxy_drill_*) settings that the argument spec knows, to be validated with
    C(ansible.builtin.validate_argument_spec); every such name the spec does not know (a likely typo,
    with the closest known name); and the errors of the SLO thresholds, checked by the judge's own
    validation (unknown threshold names, values that are not numbers, negative values), of ranges
    (a window of 0 seconds), of C(mtproxy_cutover_serial) (what Ansible's C(serial) accepts, waves of at
    least one host, percentages from 1% to 100%), and of hook task files that do not exist on the controller.
  - Also returns the absolute path of each hook's task file; a relative path is relative to the directory
    C(ansible-playbook) was started in.
  - Used by the preflight role before any host task runs.
options:
  _input:
    description: The variables of one host.
    type: dict
    required: true
  spec:
    description: The C(options) of the C(settings) entry point of the preflight role's argument spec.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Check this host's settings
  ansible.builtin.set_fact:
    checked: "{{ hostvars[inventory_hostname] | mtproxy.cutover.settings_check(spec) }}"
"""

RETURN = r"""
_value:
  description:
    - C(settings) (name -> value), C(spec) (the options to validate them against; an empty
      C(mtproxy_cutover_stop_after) means not set and is left out), C(unknown) (list of texts), C(errors)
      (list of texts), C(hook_files)
      (C(before_flip), C(after_flip), C(before_rollback) -> absolute path, empty when not set).
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mtproxy.cutover.plugins.plugin_utils.settings import check_settings


def settings_check(variables, spec):
    if not hasattr(variables, "keys"):
        raise AnsibleFilterError("settings_check: the input must be the variables of a host (a dict)")
    if not isinstance(spec, dict):
        raise AnsibleFilterError("settings_check: spec must be the options of an argument spec (a dict)")
    return check_settings(variables, spec)


class FilterModule(object):
    def filters(self):
        return {"settings_check": settings_check}
