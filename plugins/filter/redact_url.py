# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: redact_url
short_description: Remove credentials from a URL, or from every URL in a text
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
description:
  - Drops the user and password of a URL (C(https://user:token@host/...)) and the query parameters
    that carry a credential (C(token), C(access_token), C(X-Amz-Signature), C(sig), ...).
  - Applied to a text (an error message), redacts every URL inside it; other text is unchanged.
  - Lists and dictionaries are redacted value by value.
options:
  _input:
    description: A URL, a text that may contain URLs, or a list or dictionary of them.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Say where the Go binary comes from, without its credentials
  ansible.builtin.debug:
    msg: "downloading {{ mtproxy_cutover_go_binary_url | mtproxy.cutover.redact_url }}"
"""

RETURN = r"""
_value:
  description: The input without credentials.
  type: raw
"""

from ansible_collections.mtproxy.cutover.plugins.plugin_utils.credentials import redact_value


def redact_url(value):
    return redact_value(value)


class FilterModule(object):
    def filters(self):
        return {"redact_url": redact_url}
