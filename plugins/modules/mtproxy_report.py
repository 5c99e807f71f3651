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
  - This is an action plugin. It always runs on the controller, inside the task's worker, and never
    contacts the host it runs for. C(delegate_to=localhost) is not needed; the files are written on the
    controller whatever the task's host.
  - A relative O(run_dir) is relative to the directory C(ansible-playbook) was started in.
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
    description: Inventory name of the host whose O(record) or O(note) is written. Required with either.
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
  note:
    description:
      - Markdown text of an incident note for O(host), written to O(run_dir)/incidents/<host>.md.
      - A O(record) written in the same task gets the note's path as C(incident_note).
      - Like the records, the text must already be redacted.
    type: str
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
  run_once: true

- name: Record the flip of this host and render the report again
  mtproxy.cutover.mtproxy_report:
    run_dir: artifacts/20261127T020000Z
    host: "{{ inventory_hostname }}"
    stage: flip
    record: "{{ flip_result }}"

- name: Leave an incident note beside the rollback record
  mtproxy.cutover.mtproxy_report:
    run_dir: artifacts/20261127T020000Z
    host: "{{ inventory_hostname }}"
    stage: rollback
    record: "{{ rollback_facts }}"
    note: "{{ lookup('ansible.builtin.template', 'incident.md.j2') }}"
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
note_path:
  description: Path of the incident note written for O(note); null without O(note).
  returned: always
  type: str
  sample: artifacts/20261127T020000Z/incidents/mtproxy-1.md
"""
