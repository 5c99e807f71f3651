# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: slo_rules
short_description: Say in words what mtproxy_slo judges with the given thresholds
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
description:
  - Overlays the thresholds on the judge's defaults (the judge's own validation) and returns one short
    sentence per active rule, for the line printed before an observation window.
options:
  _input:
    description: Thresholds as for mtproxy_slo (defaults apply to those not given).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Say what is judged
  ansible.builtin.debug:
    msg: "judged: {{ mtproxy_cutover_thresholds | default({}) | mtproxy.cutover.slo_rules | join('; ') }}"
"""

RETURN = r"""
_value:
  description: One sentence per active rule.
  type: list
  elements: str
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.judge import effective_thresholds


def _g(value):
    return "%g" % value


def slo_rules(thresholds):
    try:
        th = effective_thresholds(dict(thresholds or {}))
    except (ValueError, TypeError) as exc:
        raise AnsibleFilterError("slo_rules: %s" % exc)
    rules = []
    if th["min_success_rate"] is not None:
        rules.append("packet success rate >= %s (with >= %s packets)" % (_g(th["min_success_rate"]), _g(th["min_packets"] or 1)))
    if th["max_success_rate_drop"] is not None:
        rules.append("success rate at most %s below the C baseline" % _g(th["max_success_rate_drop"]))
    if th["max_bad_handshake_ratio"] is not None:
        rules.append("bad handshakes <= %s of connections" % _g(th["max_bad_handshake_ratio"]))
    if th["max_bad_handshake_ratio_increase"] is not None:
        rules.append("bad-handshake share at most %s above the C baseline" % _g(th["max_bad_handshake_ratio_increase"]))
    if th["max_restarts"] is not None:
        rules.append("restarts <= %s" % _g(th["max_restarts"]))
    if th["min_backend_healthy"] is not None:
        rules.append("usable backends >= %s" % _g(th["min_backend_healthy"]))
    if th["max_accept_failures"] is not None:
        rules.append("accept failures <= %s" % _g(th["max_accept_failures"]))
    if th["max_scrape_errors"] is not None:
        rules.append("/stats errors <= %s" % _g(th["max_scrape_errors"]))
    return rules


class FilterModule(object):
    def filters(self):
        return {"slo_rules": slo_rules}
