# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: drill_envelope
short_description: Judge the drill's switches against the envelope of its C restart baseline
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
description:
  - The runbook's drill guard. Go's start (flip) and C's start (rollback) may each take at most the baseline's
    C(start_ms) x O(factor) + O(slack_ms); C's stop (flip) and Go's stop (rollback) at most the baseline's
    C(stop_ms) x O(factor) + O(slack_ms). The baseline is a plain restart of the C binary in the same run.
  - A start or stop that was not measured fails the guard.
options:
  _input:
    description: C(timings) of the baseline restart of the C binary (mtproxy_switch).
    type: dict
    required: true
  flip:
    description: C(timings) of the switch C -> Go.
    type: dict
    required: true
  rollback:
    description: C(timings) of the switch Go -> C.
    type: dict
    required: true
  factor:
    description: Multiple of the baseline allowed (C(mtproxy_drill_envelope_factor)), at least 1.
    type: float
    default: 3
  slack_ms:
    description: Milliseconds allowed on top (C(mtproxy_drill_envelope_slack_ms)), at least 0.
    type: float
    default: 500
"""

EXAMPLES = r"""
- name: Judge the envelope
  ansible.builtin.set_fact:
    drill_envelope: "{{ baseline.timings | mtproxy.cutover.drill_envelope(flip.timings, rollback.timings, 3, 500) }}"
"""

RETURN = r"""
_value:
  description:
    - C(limit_start_ms), C(limit_stop_ms), C(baseline), C(factor), C(slack_ms), the four measured figures
      (C(go_start_ms), C(c_stop_ms), C(go_stop_ms), C(c_start_ms)), C(ok) and C(exceeded) (one text per
      figure over its limit or not measured).
  type: dict
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.mtproxy.cutover.plugins.plugin_utils.envelope import EnvelopeError, judge_envelope


def drill_envelope(baseline, flip, rollback, factor=3, slack_ms=500):
    try:
        return judge_envelope(baseline, flip, rollback, factor, slack_ms)
    except EnvelopeError as exc:
        raise AnsibleFilterError("drill_envelope: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {"drill_envelope": drill_envelope}
