# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: url_credentials
short_description: Split the user and password off a URL
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
description:
  - Returns the URL without its userinfo, and the user and password it carried (percent-decoded), so
    that they can be given to C(ansible.builtin.get_url) as O(ansible.builtin.get_url#module:url_username)
    and O(ansible.builtin.get_url#module:url_password) in a C(no_log) task instead of travelling inside
    the URL.
options:
  _input:
    description: A URL.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Download with the credentials out of the URL
  ansible.builtin.get_url:
    url: "{{ (download_url | mtproxy.cutover.url_credentials).url }}"
    url_username: "{{ (download_url | mtproxy.cutover.url_credentials).username or omit }}"
    url_password: "{{ (download_url | mtproxy.cutover.url_credentials).password or omit }}"
    dest: /tmp/binary
    mode: "0755"
  no_log: true
"""

RETURN = r"""
_value:
  description: C(url) (without userinfo), C(username) and C(password) (empty strings when absent).
  type: dict
"""

from ansible_collections.mtproxy.cutover.plugins.plugin_utils.credentials import split_url_credentials


def url_credentials(url):
    clean, username, password = split_url_credentials(url or "")
    return {"url": clean, "username": username, "password": password}


class FilterModule(object):
    def filters(self):
        return {"url_credentials": url_credentials}
