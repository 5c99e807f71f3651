# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: settings_resolve
short_description: Resolve a host's mtproxy_cutover_* settings once, and say every mistake in them
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
description:
  - Takes the C(mtproxy_cutover_*) and C(mtproxy_drill_*) settings a host was given (name to value) and returns
    one value per setting of the C(settings) entry point of the preflight role's argument spec - the value given,
    converted to the setting's type, else its default there - keyed by the name without C(mtproxy_cutover_)
    or C(mtproxy_) (C(service), C(drill_host)). Paths on the controller (the Go binary, the image archive, the
    report template, the artifacts directory, the hook task files) are absolute, relative to the directory
    C(ansible-playbook) was started in.
  - Also returns every mistake - names the spec does not know (likely typos, with the closest known name),
    values of the wrong type or out of their choices (as C(ansible.builtin.validate_argument_spec) words them,
    without no_log values), thresholds the judge rejects, out-of-range numbers, a C(mtproxy_cutover_serial)
    Ansible cannot use, hook task files that do not exist on the controller.
  - Used by the preflight role; the roles and playbooks then read the resolved values and default nothing.
options:
  _input:
    description: The host's settings, name to value (C(mtproxy_cutover_*) and C(mtproxy_drill_*) variables).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Resolve this host's settings
  ansible.builtin.set_fact:
    resolved: >-
      {{ dict(names | zip(query('ansible.builtin.vars', *names))) | mtproxy.cutover.settings_resolve }}
  vars:
    names: "{{ query('ansible.builtin.varnames', '^mtproxy_(cutover|drill)_') }}"
  no_log: true
"""

RETURN = r"""
_value:
  description: C(settings) (resolved, one key per setting) and C(problems) (one text per mistake; empty when none).
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mtproxy.cutover.plugins.plugin_utils.settings import resolve_settings


def settings_resolve(given):
    if not hasattr(given, "keys"):
        raise AnsibleFilterError("settings_resolve: the input must be the host's settings (a dict of name to value)")
    return resolve_settings(dict(given))


class FilterModule(object):
    def filters(self):
        return {"settings_resolve": settings_resolve}
