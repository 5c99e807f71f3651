#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mtproxy_report
short_description: Render the JSON and Markdown report of a cutover, rollback or drill run
description:
  - Reads the per-host stage records that the roles of this collection write under
    O(run_dir)/hosts/<host>/<stage>.json and renders O(run_dir)/report.json and O(run_dir)/report.md.
  - Meant to run on the controller (with C(delegate_to=localhost)); it never contacts a proxy host.
  - The records are redacted when they are written; the report adds nothing secret.
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
options:
  run_dir:
    description: Directory of the run, holding C(run.json) and C(hosts/).
    type: path
    required: true
  run:
    description:
      - Facts of the run, written to O(run_dir)/run.json when given and read from it otherwise.
    type: dict
    suboptions:
      run_id:
        description: Identifier of the run.
        type: str
        required: true
      playbook:
        description: Which playbook produced the run.
        type: str
        choices: [cutover, rollback, drill]
        required: true
      started_at:
        description: When the run started (ISO 8601).
        type: str
      go:
        description: Facts about the Go release (for example C(sha256), C(source)).
        type: dict
  host:
    description: Inventory name of the host whose O(record) is written. Required with O(record).
    type: str
  stage:
    description: Stage the O(record) belongs to. Required with O(record).
    type: str
    choices: [freeze, stage, prewarm, baseline_restart, flip, verify, rollback, outcome]
  record:
    description:
      - Redacted facts of one stage of one host, written to O(run_dir)/hosts/<host>/<stage>.json
        before the report is rendered again.
    type: dict
  finished_at:
    description: When the run finished (ISO 8601).
    type: str
  result:
    description:
      - Overall result to record. When omitted it is V(failed) if any host failed, was rolled back
        or got a V(fail) verdict, else V(success).
    type: str
    choices: [success, failed]
  reason:
    description: Why the run failed, when it failed before any host had a record (for example in preflight).
    type: str
attributes:
  check_mode:
    description: In check mode the report is built and returned but nothing is written.
    support: full
  diff_mode:
    description: Reports are artifacts of the run, not managed state; there is no diff.
    support: none
"""

EXAMPLES = r"""
- name: Start a run
  mtproxy.cutover.mtproxy_report:
    run_dir: artifacts/20261127T020000Z
    run:
      run_id: 20261127T020000Z
      playbook: cutover
      started_at: "2026-11-27T02:00:00Z"
  delegate_to: localhost
  run_once: true

- name: Record the flip of this host and render the report again
  mtproxy.cutover.mtproxy_report:
    run_dir: artifacts/20261127T020000Z
    host: "{{ inventory_hostname }}"
    stage: flip
    record: "{{ flip_result }}"
  delegate_to: localhost
"""

RETURN = r"""
report:
  description: The report document written to report.json.
  returned: always
  type: dict
json_path:
  description: Path of report.json.
  returned: always
  type: str
markdown_path:
  description: Path of report.md.
  returned: always
  type: str
result:
  description: Overall result of the run.
  returned: always
  type: str
  sample: success
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mtproxy.cutover.plugins.module_utils.report import (
    STAGES,
    ReportError,
    build_report,
    load_run,
    write_record,
    write_report,
    write_run,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            run_dir=dict(type="path", required=True),
            run=dict(type="dict", options=dict(
                run_id=dict(type="str", required=True),
                playbook=dict(type="str", required=True, choices=["cutover", "rollback", "drill"]),
                started_at=dict(type="str"),
                go=dict(type="dict"),
            )),
            host=dict(type="str"),
            stage=dict(type="str", choices=list(STAGES)),
            record=dict(type="dict"),
            finished_at=dict(type="str"),
            result=dict(type="str", choices=["success", "failed"]),
            reason=dict(type="str"),
        ),
        required_by=dict(record=["host", "stage"]),
        supports_check_mode=True,
    )
    params = module.params
    run_dir = params["run_dir"]
    try:
        if not module.check_mode:
            if not os.path.isdir(run_dir):
                os.makedirs(run_dir)
            if params["run"]:
                write_run(run_dir, params["run"])
            if params["record"] is not None:
                write_record(run_dir, params["host"], params["stage"], params["record"])
        run = params["run"] or load_run(run_dir)
        if not run.get("run_id"):
            if module.check_mode:
                # A dry run never wrote run.json: there is nothing to render.
                module.exit_json(changed=False, report={}, json_path=None, markdown_path=None, result=None)
            module.fail_json(msg="no run facts in %s: pass run= once when the run starts" % run_dir)
        report = build_report(
            run_dir, run["run_id"], run.get("playbook"), started_at=run.get("started_at"),
            finished_at=params["finished_at"], go=run.get("go"), result=params["result"], reason=params["reason"],
        )
        json_path = os.path.join(run_dir, "report.json")
        md_path = os.path.join(run_dir, "report.md")
        if not module.check_mode:
            json_path, md_path = write_report(report, run_dir)
    except (ReportError, OSError, ValueError) as exc:
        module.fail_json(msg="cannot write the report of %s: %s" % (run_dir, exc))
    # Records and reports are artifacts of the run, not managed state: writing them is not a change.
    module.exit_json(changed=False, report=report, json_path=json_path, markdown_path=md_path,
                     result=report["result"])


if __name__ == "__main__":
    main()
