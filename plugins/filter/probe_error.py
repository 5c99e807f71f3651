# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: probe_error
short_description: Say in one line why a host did not answer a probe
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
description:
  - Takes the registered result of a probe task (C(ansible.builtin.ping) with C(ignore_unreachable) and
    C(ignore_errors)) and returns why the host does not answer, in one line, URLs redacted.
  - A host that went away is unreachable, or, over a connection such as C(community.docker.docker)
    with pipelining, a module that printed nothing; the connection's own words (for example
    "Container ... is not running") are preferred to "Module result deserialization failed".
options:
  _input:
    description: The registered result of the probe.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Say why the host does not answer
  ansible.builtin.debug:
    msg: "{{ inventory_hostname }} does not answer: {{ probe | mtproxy.cutover.probe_error }}"
"""

RETURN = r"""
_value:
  description: Why the host does not answer (empty when it answered).
  type: str
"""

from ansible_collections.mtproxy.cutover.plugins.plugin_utils.credentials import redact_urls_in_text


def probe_error(result):
    result = result or {}
    if not (result.get("unreachable") or result.get("failed")):
        return ""
    stderr = " ".join(str(result.get("module_stderr") or "").split())
    msg = " ".join(str(result.get("msg") or "").split())
    if result.get("unreachable"):
        text = "unreachable: %s" % (msg or "no connection")
    elif stderr:
        text = "the connection failed: %s" % stderr
    else:
        text = msg or "the probe failed"
    return redact_urls_in_text(text)


class FilterModule(object):
    def filters(self):
        return {"probe_error": probe_error}
