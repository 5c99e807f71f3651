# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: dualrun_evidence
short_description: Judge the Go port's Phase 7 dual-run report, the runbook's first precondition
version_added: "0.2.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
description:
  - Reads C(phase7-dualrun-report.json) on the controller, as the Go port writes it (skrashevich/MTProxy, branch
    C(golang), C(make go-dualrun-report); C(integration/cli/dual_run_integration_test.go)), and recomputes every
    guard of its entries C(control_plane_slo), C(dataplane_canary_slo) and C(dataplane_load_slo) from their
    metrics.
  - The verdict is C(fail) when an entry is missing, a guard does not hold, the file is unreadable or malformed,
    older than O(max_age_s) or from the future, or written for another OS or architecture than a host of
    O(machines).
  - Never fails for the file's content; the failures are in the result, with the way forward in C(refusal).
  - With O(gate=skip) the file is not judged; the evidence says the run opted out (C(verdict=skipped)).
options:
  _terms:
    description: Path of the report on the controller (one; empty when none is set).
    type: list
    elements: str
    required: true
  gate:
    description: C(enforce) judges the report; C(skip) opts out (C(mtproxy_cutover_dualrun_gate)).
    type: str
    choices: [enforce, skip]
    default: enforce
  machines:
    description: Each host's machine as C(uname -m) prints it (or a GOARCH), by inventory name.
    type: dict
    default: {}
  max_age_s:
    description: Oldest C(generated_at) accepted, in seconds before now (C(mtproxy_cutover_dualrun_max_age_s)).
    type: int
    default: 604800
"""

EXAMPLES = r"""
- name: Judge the dual-run evidence
  ansible.builtin.set_fact:
    evidence: "{{ query('mtproxy.cutover.dualrun_evidence', 'phase7-dualrun-report.json', machines={'proxy1': 'x86_64'})[0] }}"
"""

RETURN = r"""
_raw:
  description:
    - One evidence dict - C(verdict) (C(pass), C(fail), C(skipped)), C(failures) and C(warnings) ([{kind, entry, guard,
      message}]), C(path), C(sha256), C(size) (bytes), C(generated_at), C(age_s), C(max_age_s), C(go_os),
      C(go_arch), C(entries) (each guard with its figures) and C(refusal), the preflight's error when it failed.
  type: list
  elements: dict
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase
from ansible_collections.mtproxy.cutover.plugins.plugin_utils import dualrun


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        if len(terms) != 1:
            raise AnsibleLookupError("dualrun_evidence takes one path, got %d" % len(terms))
        return [dualrun.gate(terms[0], self.get_option("gate"), self.get_option("machines"),
                             self.get_option("max_age_s"))]
