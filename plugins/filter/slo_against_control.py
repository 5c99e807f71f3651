# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: slo_against_control
short_description: Judge an mtproxy_slo summary against a control host's summary from the same window
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
description:
  - Compares the comparable derived SLO figures of two windows taken at the same time, typically a
    canary on Go and a host still on C, so that a change of traffic that hits the whole fleet is not
    blamed on the new binary.
  - Applies the success-rate drop and the bad-handshake-ratio increase rules of mtproxy_slo, each
    only when both windows had enough volume; otherwise the verdict is V(inconclusive).
options:
  _input:
    description: The C(summary) returned by mtproxy_slo for the host under test.
    type: dict
    required: true
  control:
    description: The C(summary) returned by mtproxy_slo for the control host.
    type: dict
    required: true
  thresholds:
    description: Thresholds as for mtproxy_slo (defaults apply to those not given).
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Judge the canary against the control host
  ansible.builtin.set_fact:
    control_verdict: "{{ canary_slo.summary | mtproxy.cutover.slo_against_control(control_slo.summary) }}"
"""

RETURN = r"""
_value:
  description: C(verdict) (pass, fail, inconclusive), C(failures) and C(comparisons).
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.judge import compare_summaries


def slo_against_control(summary, control, thresholds=None):
    try:
        return compare_summaries(summary or {}, control or {}, thresholds or {})
    except ValueError as exc:
        raise AnsibleFilterError("slo_against_control: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {"slo_against_control": slo_against_control}
