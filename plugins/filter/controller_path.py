# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: controller_path
short_description: Make a path on the controller absolute, relative to where ansible-playbook was started
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
description:
  - Returns the absolute path of a file on the controller. A relative path is taken relative to the
    directory C(ansible-playbook) was started in (its working directory, whatever E(PWD) says), not to
    the playbook's directory, where Ansible runs the modules of a local connection.
  - C(~) is expanded; an empty path stays empty.
options:
  _input:
    description: A path on the controller.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Read the checksum of the Go binary given as ./mtproto-proxy-go
  ansible.builtin.stat:
    path: "{{ mtproxy_cutover_go_binary | mtproxy.cutover.controller_path }}"
    checksum_algorithm: sha256
  delegate_to: localhost
"""

RETURN = r"""
_value:
  description: The absolute path, or an empty string for an empty input.
  type: str
"""

from ansible_collections.mtproxy.cutover.plugins.plugin_utils.settings import controller_path


class FilterModule(object):
    def filters(self):
        return {"controller_path": controller_path}
