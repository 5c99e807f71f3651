# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run report: merge the per-host stage records of one run and render them as JSON and Markdown.

Every step of a run writes what it learned about a host to ``<run_dir>/hosts/<host>/<stage>.json``
(already redacted). This module only reads those records; it never talks to a host, so a report can
be rendered at any point of a run, including from a rescue block after a failure.

``apply`` is what the ``mtproxy_report`` action plugin does on the controller; it needs no Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import tempfile

STAGES = ("freeze", "stage", "prewarm", "baseline_restart", "flip", "verify", "rollback", "outcome")
PLAYBOOKS = ("cutover", "rollback", "drill")
RUN_RESULTS = ("success", "failed")
HOST_RESULTS = ("on_go", "rolled_back", "on_c", "failed")
TIMING_KEYS = ("stop_ms", "start_ms", "unavailable_ms")

# Options of the mtproxy_report action plugin; plugins/modules/mtproxy_report.py documents them.
ARGUMENT_SPEC = dict(
    run_dir=dict(type="path", required=True),
    run=dict(type="dict", options=dict(
        run_id=dict(type="str", required=True),
        playbook=dict(type="str", required=True, choices=list(PLAYBOOKS)),
        started_at=dict(type="str"),
        go=dict(type="dict"),
    )),
    host=dict(type="str"),
    stage=dict(type="str", choices=list(STAGES)),
    record=dict(type="dict"),
    note=dict(type="str"),
    finished_at=dict(type="str"),
    result=dict(type="str", choices=list(RUN_RESULTS)),
    reason=dict(type="str"),
)
REQUIRED_BY = dict(record=["host", "stage"], note=["host"])


class ReportError(Exception):
    pass


def _json_default(value):
    # Unquoted YAML dates reach a record as date objects; a module got them as ISO strings.
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    raise TypeError("%s is not JSON serializable" % type(value).__name__)


def _dumps(value):
    return json.dumps(value, indent=2, sort_keys=True, default=_json_default) + "\n"


def load_records(run_dir):
    """Return {host: {stage: record}} for every record file under run_dir/hosts."""
    hosts_dir = os.path.join(run_dir, "hosts")
    records = {}
    if not os.path.isdir(hosts_dir):
        return records
    for host in sorted(os.listdir(hosts_dir)):
        host_dir = os.path.join(hosts_dir, host)
        if not os.path.isdir(host_dir):
            continue
        stages = {}
        for name in sorted(os.listdir(host_dir)):
            stage, ext = os.path.splitext(name)
            if ext != ".json":
                continue
            path = os.path.join(host_dir, name)
            try:
                with open(path) as handle:
                    stages[stage] = json.load(handle)
            except ValueError as exc:
                raise ReportError("record %s of host %s is not valid JSON: %s" % (name, host, exc))
        records[host] = stages
    return records


def _host_result(stages):
    outcome = stages.get("outcome") or {}
    if outcome.get("result") in HOST_RESULTS:
        return outcome["result"]
    if "rollback" in stages:
        return "rolled_back" if stages["rollback"].get("ok", True) else "failed"
    if "flip" in stages:
        return "on_go"
    return "on_c"


def summarize_host(stages):
    """Flatten one host's stage records into the report's host entry."""
    flip = stages.get("flip") or {}
    verify = stages.get("verify") or {}
    rollback = stages.get("rollback") or {}
    freeze = stages.get("freeze") or {}
    outcome = stages.get("outcome") or {}
    result = _host_result(stages)
    failures = list(verify.get("failures") or [])
    if outcome.get("reason") and not failures:
        failures.append({"metric": None, "observed": None, "limit": None, "rule": outcome["reason"]})
    entry = {
        "result": result,
        "role": flip.get("role") or outcome.get("role") or freeze.get("role"),
        "wave": flip.get("wave", outcome.get("wave")),
        "verdict": verify.get("verdict"),
        "failures": failures,
        "timings": dict((k, (flip.get("timings") or {}).get(k)) for k in TIMING_KEYS),
        "rollback_timings": dict((k, (rollback.get("timings") or {}).get(k)) for k in TIMING_KEYS) if rollback else None,
        "binary": rollback.get("binary") if result == "rolled_back" else (flip.get("binary") or freeze.get("binary")),
        "flavor": {"on_go": "go", "rolled_back": "c", "on_c": "c"}.get(result),
        "versions": {"c": freeze.get("c_version"), "go": verify.get("go_version") or flip.get("go_version")},
        "reason": outcome.get("reason") or rollback.get("reason"),
        "incident_note": rollback.get("incident_note"),
        "stages": stages,
    }
    return entry


def load_run(run_dir):
    path = os.path.join(run_dir, "run.json")
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        return json.load(handle)


def write_run(run_dir, run):
    atomic_write(os.path.join(run_dir, "run.json"), _dumps(run))


def _check_host(host):
    if not host or os.sep in host or host.startswith("."):
        raise ReportError("invalid host name %r for a record file" % host)


def note_path(run_dir, host):
    _check_host(host)
    return os.path.join(run_dir, "incidents", host + ".md")


def write_record(run_dir, host, stage, record):
    if stage not in STAGES:
        raise ReportError("unknown stage %r (known: %s)" % (stage, ", ".join(STAGES)))
    _check_host(host)
    atomic_write(os.path.join(run_dir, "hosts", host, stage + ".json"), _dumps(record))


def _run_failed(playbook, counts, hosts):
    if counts["failed"]:
        return True
    if playbook == "rollback":
        return counts["on_go"] > 0
    if playbook == "drill":
        return any(e["stages"].get("outcome", {}).get("envelope_ok") is False for e in hosts.values())
    return counts["rolled_back"] > 0 or any(e["verdict"] == "fail" for e in hosts.values())


def build_report(run_dir, run_id, playbook, started_at=None, finished_at=None, go=None, result=None, reason=None):
    records = load_records(run_dir)
    hosts = dict((host, summarize_host(stages)) for host, stages in records.items())
    counts = dict((name, 0) for name in HOST_RESULTS)
    for entry in hosts.values():
        counts[entry["result"]] += 1
    if result is None:
        result = "failed" if _run_failed(playbook, counts, hosts) else "success"
    return {
        "schema": 1,
        "run_id": run_id,
        "playbook": playbook,
        "started_at": started_at,
        "finished_at": finished_at,
        "result": result,
        "reason": reason,
        "go": go or {},
        "summary": dict(counts, hosts=len(hosts)),
        "hosts": hosts,
    }


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return "%.1f" % value
    return str(value).replace("|", "\\|")


def render_markdown(report):
    lines = [
        "# MTProxy %s report: %s" % (report.get("playbook") or "cutover", report.get("run_id")),
        "",
        "- result: **%s**%s" % (report.get("result"), " (%s)" % report["reason"] if report.get("reason") else ""),
        "- started: %s, finished: %s" % (_cell(report.get("started_at")), _cell(report.get("finished_at"))),
    ]
    go = report.get("go") or {}
    if go.get("sha256"):
        lines.append("- Go binary sha256: `%s`" % go["sha256"])
    summary = report.get("summary") or {}
    lines.append("- hosts: %s (on Go %s, rolled back %s, on C %s, failed %s)" % tuple(
        _cell(summary.get(k)) for k in ("hosts", "on_go", "rolled_back", "on_c", "failed")))
    lines += [
        "",
        "| host | role | wave | result | verdict | stop ms | start ms | unavailable ms | binary |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for host, entry in sorted(report.get("hosts", {}).items()):
        timings = entry.get("timings") or {}
        lines.append("| %s |" % " | ".join(_cell(v) for v in (
            host, entry.get("role"), entry.get("wave"), entry.get("result"), entry.get("verdict"),
            timings.get("stop_ms"), timings.get("start_ms"), timings.get("unavailable_ms"), entry.get("binary"))))
    problems = [(h, e) for h, e in sorted(report.get("hosts", {}).items()) if e.get("failures") or e.get("reason")]
    if problems:
        lines += ["", "## Failures", ""]
        for host, entry in problems:
            for failure in entry.get("failures") or []:
                lines.append("- %s: %s (observed %s, limit %s) %s" % (
                    host, _cell(failure.get("metric")), _cell(failure.get("observed")),
                    _cell(failure.get("limit")), failure.get("rule") or ""))
            if entry.get("reason") and not entry.get("failures"):
                lines.append("- %s: %s" % (host, entry["reason"]))
            if entry.get("rollback_timings"):
                rb = entry["rollback_timings"]
                lines.append("- %s rolled back: stop %s ms, start %s ms, unavailable %s ms; incident note: %s" % (
                    host, _cell(rb.get("stop_ms")), _cell(rb.get("start_ms")), _cell(rb.get("unavailable_ms")),
                    _cell(entry.get("incident_note"))))
    return "\n".join(lines) + "\n"


def atomic_write(path, text):
    """Replace ``path`` with ``text`` (mode 0644) by rename, creating its directory if missing."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except Exception:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_report(report, run_dir):
    json_path = os.path.join(run_dir, "report.json")
    md_path = os.path.join(run_dir, "report.md")
    atomic_write(json_path, _dumps(report))
    atomic_write(md_path, render_markdown(report))
    return json_path, md_path


def apply(params, check_mode=False):
    """Write the run facts, an incident note and one record if given, then render the report again.

    params are the validated options of the mtproxy_report action plugin (see ARGUMENT_SPEC); a
    missing key counts as not given. In check mode nothing is written and the report is only built.
    A record written with a note gets the note's path as ``incident_note``.
    Returns the result of the task; raises ReportError with the message to fail the task with.
    """
    run_dir = params.get("run_dir")
    if not run_dir:
        raise ReportError("run_dir is required")
    note = None
    try:
        if params.get("note") is not None:
            note = note_path(run_dir, params.get("host"))
        if not check_mode:
            if not os.path.isdir(run_dir):
                os.makedirs(run_dir)
            if params.get("run"):
                write_run(run_dir, params["run"])
            if note is not None:
                text = params["note"]
                atomic_write(note, text if text.endswith("\n") else text + "\n")
            if params.get("record") is not None:
                record = params["record"]
                if note is not None:
                    record = dict(record, incident_note=note)
                write_record(run_dir, params.get("host"), params.get("stage"), record)
        run = params.get("run") or load_run(run_dir)
    except (ReportError, OSError, ValueError, TypeError) as exc:
        raise ReportError("cannot write the report of %s: %s" % (run_dir, exc))
    if not run.get("run_id"):
        if check_mode:
            # A dry run never wrote run.json: there is nothing to render.
            return dict(changed=False, report={}, json_path=None, markdown_path=None, result=None,
                        note_path=note)
        raise ReportError("no run facts in %s: pass run= once when the run starts" % run_dir)
    json_path = os.path.join(run_dir, "report.json")
    md_path = os.path.join(run_dir, "report.md")
    try:
        report = build_report(
            run_dir, run["run_id"], run.get("playbook"), started_at=run.get("started_at"),
            finished_at=params.get("finished_at"), go=run.get("go"), result=params.get("result"),
            reason=params.get("reason"),
        )
        if not check_mode:
            json_path, md_path = write_report(report, run_dir)
    except (ReportError, OSError, ValueError, TypeError) as exc:
        raise ReportError("cannot write the report of %s: %s" % (run_dir, exc))
    # Records and reports are artifacts of the run, not managed state: writing them is not a change.
    return dict(changed=False, report=report, json_path=json_path, markdown_path=md_path, result=report["result"],
                note_path=note)
