# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: drill_phase8_report
short_description: The runbook's Phase 8 drill report in the Go port's own format, from drill.yml's measurements
version_added: "0.2.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
description:
  - Builds C(phase8-cutover-report.json) as the Go port's drill writes it (skrashevich/MTProxy, branch C(golang),
    C(integration/cli/phase8_cutover_integration_test.go)) - C(generated_at), C(go_os), C(go_arch),
    C(thresholds) and the steps C(baseline_c), C(cutover_go), C(rollback_c) with C(binary),
    C(startup_latency_ms), C(shutdown_latency_ms), C(stats_line_count) and C(stats_sample) - byte for byte as
    Go's C(json.MarshalIndent) writes it.
  - C(baseline_c) is the baseline restart of C, C(cutover_go) Go's start at the flip and its stop at the
    rollback, C(rollback_c) C's start at the rollback and its stop at the flip.
  - As the Go drill, it gives no report when its envelope does not hold, nor when a switch measured nothing or a
    C(/stats) page is missing (RV(_value.failures) says why).
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
  c_binary:
    description: Path of the C binary (its base name is written).
    type: str
    required: true
  go_binary:
    description: Path of the Go binary (its base name is written).
    type: str
    required: true
  bodies:
    description: The C(/stats) body read after each switch (mtproxy_stats with O(mtproxy.cutover.mtproxy_stats#module:body=true)),
      as C({baseline_c, cutover_go, rollback_c}).
    type: dict
    required: true
  factor:
    description: Multiple of the baseline allowed (C(mtproxy_drill_envelope_factor)).
    type: float
    required: true
  slack_ms:
    description: Milliseconds allowed on top (C(mtproxy_drill_envelope_slack_ms)).
    type: float
    required: true
  machine:
    description: The drilled host's machine (C(uname -m)); C(go_arch) is its GOARCH.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Build the Go-format drill report
  ansible.builtin.set_fact:
    phase8: >-
      {{ baseline.timings | mtproxy.cutover.drill_phase8_report(flip.timings, rollback.timings, baseline.binary,
                                                                flip.binary, bodies, 3, 500, 'x86_64') }}
"""

RETURN = r"""
_value:
  description:
    - C(text), the report as the Go drill writes it (null when it gives none), and C(failures), one sentence
      per startup or shutdown over its limit, or what was not measured.
  type: dict
"""

from ansible_collections.mtproxy.cutover.plugins.plugin_utils import drill_report


def drill_phase8_report(baseline, flip, rollback, c_binary, go_binary, bodies, factor, slack_ms, machine):
    try:
        steps = drill_report.steps_from_switches(baseline, flip, rollback, c_binary, go_binary, bodies or {})
        document, failures = drill_report.build(steps, factor, slack_ms, machine)
    except drill_report.DrillReportError as exc:
        # A switch that measured nothing (check mode) or a page that was not read: no report, and why.
        return {"text": None, "failures": [str(exc)]}
    return {"text": drill_report.dumps(document) if document else None, "failures": failures}


class FilterModule(object):
    def filters(self):
        return {"drill_phase8_report": drill_phase8_report}
