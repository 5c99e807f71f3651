#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mtproxy_report
short_description: Record a step of a cutover, rollback or drill run and render its report
description:
  - Writes what a step learned about a host to O(run_dir)/hosts/<host>/<stage>.json, marks the start
    and end of a step on the host's timeline, and renders O(run_dir)/report.json, O(run_dir)/report.md
    and O(run_dir)/timeline.svg again.
  - A rendering reads the records of every host, so it is not done for each record. It is always done at the
    start of the run, for a task with O(result), O(reason), O(proofs) or O(final), and for any task once the
    run is finished; for a record while the run goes on, only when the last rendering is 10 s old or older.
    So a run renders about once per 10 s of its duration, instead of once per record of every host (which
    grew as hosts x hosts), and the report of a running run is at most 10 s behind its records.
  - This is an action plugin. It always runs on the controller, inside the task's worker, and never
    contacts the host it runs for. C(delegate_to=localhost) is not needed; the files are written on the
    controller whatever the task's host.
  - The result of the run is derived from the hosts it was meant to touch, O(run.expected_hosts).
    It is V(running) until a task with O(final=true) (the Report play) marks it finished; then V(failed) when
    any of those hosts failed, was rolled back or left on C (cutover), went away, is proven on another binary
    than the run intended (O(proofs)) or could not be proven, or was never judged, or when no host was judged
    at all, else V(success).
  - A task with O(run) starts a small watcher process on the controller. When C(ansible-playbook) ends
    before the run is marked finished, the watcher marks it V(incomplete) and renders the report once
    more.
  - A relative O(run_dir) is relative to the directory C(ansible-playbook) was started in (its working
    directory, not the E(PWD) variable); the task returns the absolute path.
  - Records, notes and reports are redacted when they are written (URLs lose their user, password and
    token query parameters); secrets of the proxy never reach them.
  - The task is V(changed) when it wrote a file of the run directory (in check mode, when it would have).
    The collection's own tasks say C(changed_when=false), since the run's records are not a change of the host the
    task runs for.
  - Started under ansible-runner (automation controller, AWX; the environment variable
    E(AWX_ISOLATED_DATA_DIR), which ansible-runner sets for every run it starts) with O(run_dir) inside the
    working directory, the job's project directory that the job discards, the task warns to set
    C(mtproxy_cutover_artifacts_dir) to a directory that outlives the job.
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
requirements:
  - Python 3 and Jinja2 on the controller (both come with ansible-core).
options:
  run_dir:
    description: Directory of the run, holding C(run.json) and C(hosts/).
    type: path
    required: true
  run:
    description:
      - Facts of the run, written to O(run_dir)/run.json when given (the start of a run) and read from it
        otherwise.
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
        description: When the run started (ISO 8601, UTC); default now.
        type: str
      go:
        description: Facts about the Go release (for example C(sha256), C(source), C(version)).
        type: dict
      expected_hosts:
        description:
          - The hosts the run is meant to touch. Each one appears in the report; one that no step judged
            is V(unknown) (or V(unreachable)) and fails the run.
        type: list
        elements: str
      settings:
        description: Settings of the run worth showing in the report (windows, thresholds, method).
        type: dict
      report_template:
        description:
          - Jinja2 template of C(report.md) for this run (default the collection's
            C(roles/report/templates/report.md.j2)). It must render at the start of the run; a failure
            later falls back to the built-in template.
        type: path
  host:
    description: Inventory name of the host whose O(record), O(note) or O(mark) is written. Required with any.
    type: str
  stage:
    description: Stage the O(record) belongs to. Required with O(record).
    type: str
    choices: [freeze, stage, prewarm, baseline_restart, flip, verify, rollback, outcome, proof, lock]
  record:
    description:
      - Redacted facts of one stage of one host, written to O(run_dir)/hosts/<host>/<stage>.json
        (with C(recorded_at), UTC) before the report is rendered again (see the description for when).
      - The C(outcome) record judges a host; its C(result) is one of V(on_go), V(rolled_back), V(on_c),
        V(failed), V(unreachable), V(locked) (another run holds the host, see its run lock), or absent (a step stopped
        the run on the host; the C(proof) says what it runs).
      - The C(lock) record says what the run did to another run's lock of the host (C(broken), C(previous),
        C(taken_over_from) of M(mtproxy.cutover.mtproxy_lock)).
    type: dict
  note:
    description:
      - Markdown text of an incident note for O(host), written to O(run_dir)/incidents/<host>.md.
      - A O(record) written in the same task gets the note's path as C(incident_note).
      - Like the records, the text must already be redacted.
    type: str
  mark:
    description:
      - Ends and/or starts a step on the host's timeline (O(run_dir)/hosts/<host>/timeline.json), at the
        controller's clock (UTC). A mark alone does not render the report (the next rendering shows it).
    type: dict
    suboptions:
      close:
        description: End every open step now (a step failed somewhere inside); O(mark.end) is then ignored.
        type: bool
        default: false
      end:
        description: Step that ends now (closes its last open span).
        type: str
        choices: [freeze, stage, prewarm, flip, observe, rollback, hook]
      start:
        description: Step that starts now.
        type: str
        choices: [freeze, stage, prewarm, flip, observe, rollback, hook]
      result:
        description: How the ended step went.
        type: str
        choices: [ok, failed, unreachable, skipped]
        default: ok
      label:
        description: Text shown with the started step (for example the name of a hook file).
        type: str
  proofs:
    description:
      - What each host of the run runs now, as M(mtproxy.cutover.mtproxy_info) returned it (the registered
        result, unreachable or failed included), by host; written as its C(proof) record.
      - The report sets each host's proof against what the run intended for it (see the collection's
        docs/runbook.md, "Reading a report"). A skipped result is not written.
    type: dict
  finished_at:
    description: When the run finished (ISO 8601); default now.
    type: str
  final:
    description:
      - Mark the run finished (the Report play). Until then its result is V(running).
    type: bool
    default: false
  result:
    description:
      - V(failed) marks the run finished and failed whatever its hosts say (a step that stops the run).
        V(success) is accepted for compatibility and changes nothing; success is derived, never given.
    type: str
    choices: [success, failed]
  reason:
    description: Why the run failed, shown before the problems derived from the hosts.
    type: str
attributes:
  action:
    description: Runs on the controller as an action plugin; no module is sent to the host.
    support: full
  async:
    description: Records are written synchronously on the controller; C(async) is not supported.
    support: none
  check_mode:
    description: In check mode the report is built and returned but nothing is written; V(changed) says what would be.
    support: full
  diff_mode:
    description: Reports are artifacts of the run, not managed state; there is no diff.
    support: none
  platform:
    description: Runs on the controller whatever the target host's platform.
    support: full
    platforms: posix
"""

EXAMPLES = r"""
- name: Start a run
  mtproxy.cutover.mtproxy_report:
    run_dir: artifacts/20261127T020000Z
    run:
      run_id: 20261127T020000Z
      playbook: cutover
      expected_hosts: "{{ ansible_play_hosts_all }}"
  run_once: true

- name: Mark the start of the flip window of this host
  mtproxy.cutover.mtproxy_report:
    run_dir: artifacts/20261127T020000Z
    host: "{{ inventory_hostname }}"
    mark:
      start: flip

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

- name: Finish the run (Report play)
  mtproxy.cutover.mtproxy_report:
    run_dir: artifacts/20261127T020000Z
    final: true
  run_once: true
"""

RETURN = r"""
report:
  description: The report document written to report.json (null when the task did not render it).
  returned: always
  type: dict
run_dir:
  description: Absolute path of the run directory.
  returned: always
  type: str
  sample: /srv/cutover/artifacts/20261127T020000Z
json_path:
  description: Path of report.json.
  returned: always
  type: str
markdown_path:
  description: Path of report.md.
  returned: always
  type: str
timeline_path:
  description: Path of timeline.svg, the timeline picture linked from report.md.
  returned: always
  type: str
result:
  description: Result of the run, V(running) until it is finished (null after a mark alone).
  returned: always
  type: str
  sample: running
note_path:
  description: Path of the incident note written for O(note); null without O(note).
  returned: always
  type: str
  sample: artifacts/20261127T020000Z/incidents/mtproxy-1.md
spans:
  description: The host's timeline after O(mark).
  returned: when O(mark) is given
  type: list
  elements: dict
watcher:
  description: Whether the watcher that marks an unfinished run V(incomplete) was started.
  returned: when O(run) is given outside check mode
  type: bool
"""
