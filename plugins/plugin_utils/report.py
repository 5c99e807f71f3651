# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run report: the data of one run, merged from its per-host stage records.

Every step of a run writes what it learned about a host to ``<run_dir>/hosts/<host>/<stage>.json``
(redacted). The preflight writes ``<run_dir>/run.json``: the run's identity and the hosts it is
meant to touch (``expected_hosts``). The start and end of each step on a host (freeze, pre-warm,
flip, observation, rollback) are marks in ``hosts/<host>/timeline.json``. At the end of every run
the Report play reads what each host runs now (mtproxy_info) into a ``proof`` record.

A host's result is what it runs, proven, set against what the run intended for it:

* the run's decision (``outcome`` record, else what the records show) gives the intent: ``go`` for
  a host judged and kept on Go (or flipped and never judged), ``c`` for a host rolled back or left on
  C, what it ran at the freeze for a host the run never flipped, nothing when not even that is known;
* the proof says what runs: ``on_go`` / ``rolled_back`` / ``on_c`` when it runs the intended binary
  (or, with no intent, whatever it runs), ``failed`` when it runs the other one (the reason names
  both), ``unknown`` when it cannot be proven, ``unreachable`` when it does not answer;
* a step that failed (``failed``), a host that went away (``unreachable``) or that another run held
  (``locked``: this run changed nothing on it from then on) keeps that result.

Without a proof record (a run that never reached its Report play) the records alone give the
result, and never more than they prove.

The result of a run:

* ``running`` until the Report play (or a step that stops the run) marks the run finished;
* ``incomplete`` when ansible-playbook ended without that (see plugin_utils/report_files.watch);
* ``failed`` when any expected host failed, was rolled back (cutover), went away, is not on the
  binary the run intended or could not be proven, was never judged, or when no host was judged at
  all; for a cutover (unless it only prepared the fleet, ``stop_after``) when a host is not on Go;
  for a rollback or a drill when a host is not on C;
* ``success`` otherwise.

This module is plain Python (no Ansible, no Jinja2); plugin_utils/report_files.py renders the
Markdown and the timeline picture and writes the files.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import tempfile

from ansible_collections.mtproxy.cutover.plugins.plugin_utils.credentials import redact_value

SCHEMA = 2
STAGES = ("freeze", "stage", "prewarm", "baseline_restart", "flip", "verify", "rollback", "outcome", "proof", "lock",
          "timeline")
PLAYBOOKS = ("cutover", "rollback", "drill")
# Record fields that are whole numbers (a wave's number, a window in s), whatever the template gave.
INTEGER_FIELDS = ("wave", "window_s")
# The dual-run gate's evidence in the run directory (cutover.yml).
DUALRUN_FILE = "dualrun.json"
RUNNING = "running"
SUCCESS = "success"
FAILED = "failed"
INCOMPLETE = "incomplete"
RUN_RESULTS = (RUNNING, SUCCESS, FAILED, INCOMPLETE)
# What a step may record as a host's outcome, and what the report may derive without one.
# ``locked``: another run held the host (its run lock, plugins/modules/mtproxy_lock.py), so this run left it alone.
OUTCOME_RESULTS = ("on_go", "rolled_back", "on_c", "failed", "unreachable", "locked")
HOST_RESULTS = OUTCOME_RESULTS + ("unknown",)
NOT_JUDGED = ("unreachable", "unknown", "locked")
FLAVORS = {"go": "Go", "c": "C"}
# The binary each result says a host runs.
RESULT_FLAVOR = {"on_go": "go", "rolled_back": "c", "on_c": "c"}
# What a proof record keeps of an mtproxy_info result.
PROOF_KEYS = ("running", "method", "binary", "main_pid", "argv_matches", "stats_flavor", "stats_skipped", "recorded",
              "frozen", "reason")
PREPARE_ONLY = ("freeze", "stage")
TIMING_KEYS = ("stop_ms", "start_ms", "unavailable_ms")
# Steps drawn on the timeline, in runbook order.
SPAN_STEPS = ("freeze", "stage", "prewarm", "flip", "observe", "rollback", "hook")
MARK_RESULTS = ("ok", "failed", "unreachable", "skipped")

# Options of the mtproxy_report action plugin; plugins/modules/mtproxy_report.py documents them.
ARGUMENT_SPEC = dict(
    run_dir=dict(type="path", required=True),
    run=dict(type="dict", options=dict(
        run_id=dict(type="str", required=True),
        playbook=dict(type="str", required=True, choices=list(PLAYBOOKS)),
        started_at=dict(type="str"),
        go=dict(type="dict"),
        expected_hosts=dict(type="list", elements="str"),
        settings=dict(type="dict"),
        report_template=dict(type="path"),
    )),
    host=dict(type="str"),
    stage=dict(type="str", choices=[s for s in STAGES if s != "timeline"]),
    record=dict(type="dict"),
    note=dict(type="str"),
    mark=dict(type="dict", options=dict(
        close=dict(type="bool", default=False),
        end=dict(type="str", choices=list(SPAN_STEPS)),
        start=dict(type="str", choices=list(SPAN_STEPS)),
        result=dict(type="str", choices=list(MARK_RESULTS), default="ok"),
        label=dict(type="str"),
    )),
    proofs=dict(type="dict"),
    finished_at=dict(type="str"),
    final=dict(type="bool", default=False),
    result=dict(type="str", choices=[SUCCESS, FAILED]),
    reason=dict(type="str"),
)
REQUIRED_BY = dict(record=["host", "stage"], note=["host"], mark=["host"])


class ReportError(Exception):
    pass


def utc_now():
    """Now in UTC as ISO 8601 with milliseconds and a Z."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000)


def parse_time(text):
    """A datetime (UTC) from the ISO 8601 texts a run writes; None when it is not one."""
    if not isinstance(text, str) or not text:
        return None
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.astimezone(datetime.timezone.utc)


def _json_default(value):
    # Unquoted YAML dates reach a record as date objects; a module got them as ISO strings.
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    raise TypeError("%s is not JSON serializable" % type(value).__name__)


def dumps(value):
    return json.dumps(value, indent=2, sort_keys=True, default=_json_default) + "\n"


def atomic_write(path, text):
    """Replace ``path`` with ``text`` (mode 0644) by rename, creating its directory if missing."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        try:
            os.makedirs(directory)
        except OSError:
            # Another host's worker created it meanwhile (two incident notes of one wave at once).
            if not os.path.isdir(directory):
                raise
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


# --- records ---------------------------------------------------------------------------------

def _check_host(host):
    if not host or not isinstance(host, str) or os.sep in host or host.startswith("."):
        raise ReportError("invalid host name %r for a record file" % (host,))


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


def note_path(run_dir, host):
    _check_host(host)
    return os.path.join(run_dir, "incidents", host + ".md")


def write_record(run_dir, host, stage, record):
    """Write one stage record of a host (URL credentials redacted; ``recorded_at`` added)."""
    if stage not in STAGES or stage == "timeline":
        raise ReportError("unknown stage %r (known: %s)" % (stage, ", ".join(s for s in STAGES if s != "timeline")))
    _check_host(host)
    record = redact_value(dict(record))
    for key in INTEGER_FIELDS:
        # ansible-core before 2.19 (no native types) passes "{{ n | int }}" inside a dict as text.
        if isinstance(record.get(key), str) and record[key].strip().lstrip("-").isdigit():
            record[key] = int(record[key])
    record.setdefault("recorded_at", utc_now())
    atomic_write(os.path.join(run_dir, "hosts", host, stage + ".json"), dumps(record))


def timeline_path(run_dir, host):
    _check_host(host)
    return os.path.join(run_dir, "hosts", host, "timeline.json")


def write_mark(run_dir, host, mark, at=None):
    """End and/or start a step on a host's timeline: ``mark`` is {close, end, start, result, label}.

    ``close`` ends every open span (a step that failed somewhere inside); ``end`` closes the last
    open span of that step; ``start`` opens a new one. A step ended that was never started is
    recorded as a span without a start.
    """
    if not mark or not (mark.get("start") or mark.get("end") or mark.get("close")):
        raise ReportError("a mark needs start, end (a step name) or close")
    for key in ("start", "end"):
        if mark.get(key) and mark[key] not in SPAN_STEPS:
            raise ReportError("unknown step %r (known: %s)" % (mark[key], ", ".join(SPAN_STEPS)))
    at = at or utc_now()
    path = timeline_path(run_dir, host)
    spans = []
    if os.path.exists(path):
        try:
            with open(path) as handle:
                spans = json.load(handle).get("spans") or []
        except ValueError as exc:
            raise ReportError("record timeline.json of host %s is not valid JSON: %s" % (host, exc))
    if mark.get("close"):
        for span in spans:
            if not span.get("finished_at"):
                span["finished_at"] = at
                span["result"] = mark.get("result") or "ok"
    elif mark.get("end"):
        for span in reversed(spans):
            if span.get("step") == mark["end"] and not span.get("finished_at"):
                span["finished_at"] = at
                span["result"] = mark.get("result") or "ok"
                break
        else:
            spans.append({"step": mark["end"], "started_at": None, "finished_at": at,
                          "result": mark.get("result") or "ok"})
    if mark.get("start"):
        span = {"step": mark["start"], "started_at": at, "finished_at": None, "result": None}
        if mark.get("label"):
            span["label"] = mark["label"]
        spans.append(span)
    atomic_write(path, dumps({"spans": spans}))
    return spans


# --- run facts -------------------------------------------------------------------------------

def load_run(run_dir):
    path = os.path.join(run_dir, "run.json")
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        return json.load(handle)


def load_dualrun(run_dir):
    """The dual-run evidence cutover.yml's gate kept in the run directory (playbooks/tasks/dualrun_gate.yml,
    plugin_utils/dualrun.py), or None (another playbook, or a run that stopped before the gate)."""
    path = os.path.join(run_dir, DUALRUN_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as handle:
            evidence = json.load(handle)
    except ValueError as exc:
        raise ReportError("%s is not valid JSON: %s" % (path, exc))
    return evidence if isinstance(evidence, dict) else None


def write_run(run_dir, run):
    atomic_write(os.path.join(run_dir, "run.json"), dumps(redact_value(run)))


def finish_run(run, at, result=None, reason=None):
    """``run`` marked finished at ``at``; ``result`` (failed / incomplete) is a floor, never raised."""
    finished = dict(run.get("finished") or {})
    finished["at"] = at
    previous = finished.get("result")
    if result == INCOMPLETE or previous == INCOMPLETE:
        finished["result"] = INCOMPLETE
    elif FAILED in (result, previous):
        finished["result"] = FAILED
    else:
        finished["result"] = None
    if reason:
        finished["reason"] = reason
    return dict(run, finished=finished)


# --- one host --------------------------------------------------------------------------------

# Judge rules -> the metric they judge (mtproxy_slo's ``judged``).
RULE_METRIC = {
    "min_success_rate": "success_rate",
    "baseline_success_rate": "success_rate",
    "max_bad_handshake_ratio": "bad_handshake_ratio",
    "baseline_bad_handshake_ratio": "bad_handshake_ratio",
    "min_backend_healthy": "backend_healthy",
    "max_accept_failures": "accept_failures",
}
METRIC_ORDER = ("success_rate", "bad_handshake_ratio", "backend_healthy", "accept_failures")
# Volume behind a ratio, shown beside it.
METRIC_VOLUME = {"success_rate": ("dropped_packets", "packets"), "bad_handshake_ratio": ("bad_handshakes", "connections")}


def _metric_value(summary, metric):
    """A judged metric's value in an mtproxy_slo summary (None when it has none)."""
    if not isinstance(summary, dict):
        return None
    if isinstance(summary.get("summary"), dict):
        summary = summary["summary"]
    derived = summary.get("derived") or {}
    if metric in derived:
        return derived.get(metric)
    info = (summary.get("metrics") or {}).get(metric) or {}
    if metric == "accept_failures":
        return info.get("delta")
    return info.get("last")


def _volume(summary, metric):
    names = METRIC_VOLUME.get(metric)
    if not names or not isinstance(summary, dict):
        return None
    if isinstance(summary.get("summary"), dict):
        summary = summary["summary"]
    derived = summary.get("derived") or {}
    part, whole = derived.get(names[0]), derived.get(names[1])
    if whole is None:
        return None
    return {"part": part, "whole": whole, "part_name": names[0], "whole_name": names[1]}


def _limits(metric, thresholds, comparisons):
    limits = []
    th = thresholds or {}
    if metric == "success_rate" and th.get("min_success_rate") is not None:
        limits.append({"op": ">=", "value": th["min_success_rate"], "rule": "min_success_rate"})
    if metric == "bad_handshake_ratio" and th.get("max_bad_handshake_ratio") is not None:
        limits.append({"op": "<=", "value": th["max_bad_handshake_ratio"], "rule": "max_bad_handshake_ratio"})
    if metric == "backend_healthy" and th.get("min_backend_healthy") is not None:
        limits.append({"op": ">=", "value": th["min_backend_healthy"], "rule": "min_backend_healthy"})
    if metric == "accept_failures" and th.get("max_accept_failures") is not None:
        limits.append({"op": "<=", "value": th["max_accept_failures"], "rule": "max_accept_failures"})
    for comparison in comparisons or []:
        if comparison.get("metric") == metric and comparison.get("limit") is not None:
            op = ">=" if metric == "success_rate" else "<="
            limits.append({"op": op, "value": comparison["limit"], "rule": "baseline", "baseline": comparison.get("baseline")})
    return limits


def comparison_rows(freeze, verify):
    """C baseline (freeze) beside Go (observation window) for every metric the judge judged."""
    if not verify:
        return []
    judged = verify.get("judged")
    failures = verify.get("failures") or []
    comparisons = verify.get("baseline_comparison") or []
    if judged is None:
        # A record from before ``judged`` was kept: the metrics named by failures and comparisons.
        metrics = set(f.get("metric") for f in failures) | set(c.get("metric") for c in comparisons)
    else:
        metrics = set(RULE_METRIC.get(rule) for rule in judged)
        metrics |= set(f.get("metric") for f in failures if f.get("metric") in METRIC_ORDER)
    metrics.discard(None)
    baseline = (freeze or {}).get("baseline") or {}
    summary = verify.get("summary") or {}
    rows = []
    for metric in METRIC_ORDER:
        if metric not in metrics:
            continue
        failed = [f for f in failures if f.get("metric") == metric]
        rows.append({
            "metric": metric,
            "c": _metric_value(baseline, metric),
            "c_volume": _volume(baseline, metric),
            "go": _metric_value(summary, metric),
            "go_volume": _volume(summary, metric),
            "limits": _limits(metric, verify.get("thresholds"), comparisons),
            "result": "fail" if failed else "pass",
        })
    return rows


def _spans(stages):
    spans = list(((stages.get("timeline") or {}).get("spans")) or [])
    return [dict(span) for span in spans if isinstance(span, dict) and span.get("step")]


def _windows(spans):
    """{step: [{started_at, finished_at, result}]} of the spans a reader asks for by name."""
    windows = {}
    for span in spans:
        windows.setdefault(span["step"], []).append(
            {"started_at": span.get("started_at"), "finished_at": span.get("finished_at"), "result": span.get("result")})
    return windows


def _decided(stages):
    """(result, judged, why) of one host from what the run recorded (not from the host)."""
    outcome = stages.get("outcome") or {}
    if outcome.get("result") in OUTCOME_RESULTS:
        result = outcome["result"]
        return result, result not in NOT_JUDGED, None
    rollback = stages.get("rollback")
    if rollback:
        if rollback.get("ok", True):
            return ("rolled_back" if rollback.get("changed", True) else "on_c"), True, None
        return "failed", True, None
    if "flip" in stages:
        return "unknown", False, "flipped to Go but never judged"
    if any(span["step"] == "flip" for span in _spans(stages)):
        return "unknown", False, ("a flip started and never finished: the host may run Go or be between binaries; "
                                  "check it, or run rollback.yml for it")
    freeze = stages.get("freeze") or {}
    if freeze.get("current") == "c":
        return "on_c", False, "never judged: the run stopped before this host (on C as frozen)"
    if freeze.get("current") == "go":
        return "on_go", False, "never judged: the run stopped before this host (on Go since an earlier run)"
    return "unknown", False, "never judged: no step recorded anything for this host"


def _intent(result, stages):
    """(binary the run intended the host to run, why) from what the run decided; (None, why) for no intent."""
    if result == "on_go":
        return "go", "the run kept it on Go"
    if result == "rolled_back":
        return "c", "the run rolled it back to C"
    if result in ("on_c", "failed") and (stages.get("rollback") or (stages.get("outcome") or {}).get("result")):
        return "c", "the run left it on C"
    if "flip" in stages or any(span["step"] == "flip" for span in _spans(stages)):
        return "go", "the run flipped it to Go"
    current = (stages.get("freeze") or {}).get("current")
    if current in FLAVORS:
        return current, "the run did not flip it, and it ran %s at the freeze" % FLAVORS[current]
    return None, "the run never flipped it"


def proof_record(result):
    """The ``proof`` record of a host from its registered mtproxy_info result (None when it was not read)."""
    if not isinstance(result, dict) or result.get("skipped"):
        return None
    message = " ".join(str(result.get("msg") or "").split())
    stderr = " ".join(str(result.get("module_stderr") or "").split())
    if result.get("unreachable") or (result.get("failed") and (stderr or message.startswith("MODULE FAILURE"))):
        # Over some connections (docker with pipelining) a host that is gone is a module that printed nothing.
        return {"reachable": False, "running": "unknown",
                "reason": "does not answer: %s" % (("unreachable: " + (message or "no connection"))
                                                   if result.get("unreachable") else (stderr or message))}
    if result.get("failed"):
        return {"reachable": True, "running": "unknown", "reason": "mtproxy_info failed: %s" % (message or "?")}
    record = dict((key, result.get(key)) for key in PROOF_KEYS)
    if record["running"] not in FLAVORS:
        record["running"] = "unknown"
    record["reachable"] = True
    return record


def _host_result(stages, prepared=None):
    """(result, judged, why, intended) of one host: what it runs, proven, set against the run's intent.

    ``prepared`` is the run's stop_after when the run only prepared the fleet: a host proven on the
    binary it ran is then judged (prepared, nothing flipped).
    """
    result, judged, why = _decided(stages)
    intended, because = _intent(result, stages)
    proof = stages.get("proof")
    if not proof or result in ("failed", "unreachable", "locked"):
        return result, judged, why, intended
    if not proof.get("reachable", True):
        return "unreachable", False, "went away during the run: %s" % proof.get("reason"), intended
    running = proof.get("running")
    if running not in FLAVORS:
        return "unknown", False, "what it runs cannot be proven: %s" % (proof.get("reason") or "no proof"), intended
    if intended and running != intended:
        return "failed", judged, "runs %s, but %s" % (FLAVORS[running], because), intended
    if prepared and not judged:
        judged, why = True, "prepared: stopped after the %s as asked, nothing flipped" % prepared
    if RESULT_FLAVOR.get(result) == running:
        return result, judged, why, intended
    return ("on_go" if running == "go" else "on_c"), judged, why, intended


def summarize_host(stages, prepared=None):
    """Flatten one host's stage records into the report's host entry (``prepared``: see _host_result)."""
    flip = stages.get("flip") or {}
    verify = stages.get("verify") or {}
    rollback = stages.get("rollback") or {}
    freeze = stages.get("freeze") or {}
    outcome = stages.get("outcome") or {}
    stage = stages.get("stage") or {}
    result, judged, why, intended = _host_result(stages, prepared)
    proof = stages.get("proof") or {}
    failures = [dict(f) for f in (verify.get("failures") or []) if isinstance(f, dict)]
    spans = _spans(stages)
    reason = outcome.get("reason") or (rollback.get("reason") if result in ("rolled_back", "failed") else None) or why
    if why and reason != why and (result in ("failed", "unknown", "unreachable") and proof):
        # What the proof found comes first; the run's own reason after it.
        reason = "%s; %s" % (why, reason)
    go_version = {"sha256": stage.get("sha256"), "release": stage.get("path") or flip.get("binary"),
                  "version": stage.get("version")}
    entry = {
        "result": result,
        "judged": judged,
        "role": flip.get("role") or outcome.get("role") or freeze.get("role"),
        "wave": flip.get("wave", outcome.get("wave")),
        "verdict": verify.get("verdict"),
        "failures": failures,
        "timings": dict((k, (flip.get("timings") or {}).get(k)) for k in TIMING_KEYS),
        "rollback_timings": dict((k, (rollback.get("timings") or {}).get(k)) for k in TIMING_KEYS) if rollback else None,
        # The bridge handover's figures of the flip and of the rollback (mtproxy_switch handover=bridge).
        "bridge": flip.get("bridge") or None,
        "rollback_bridge": rollback.get("bridge") or None,
        "binary": rollback.get("binary") if result == "rolled_back" else (flip.get("binary") or freeze.get("binary")),
        "flavor": proof.get("running") if proof.get("running") in FLAVORS else RESULT_FLAVOR.get(result),
        # What the host runs at the end of the run, proven (mtproxy_info), and what the run intended.
        "running": proof.get("running") if proof else None,
        "proven": proof.get("running") in FLAVORS,
        "intended": intended,
        "versions": {"c": freeze.get("c_version") or None,
                     "go": go_version if any(go_version.values()) else None},
        "reason": reason,
        "incident_note": rollback.get("incident_note"),
        "comparison": comparison_rows(freeze, verify),
        "control": verify.get("control"),
        "window_s": verify.get("window_s"),
        "spans": spans,
        "windows": _windows(spans),
        # The run lock: whom this run took the host from (rollback.yml's takeover), or a stale lock it broke.
        "lock": stages.get("lock") or None,
        "stages": stages,
    }
    return entry


# --- the run ---------------------------------------------------------------------------------

def _problems(playbook, hosts, prepared=None):
    """What makes a finished run fail, one sentence each (empty: success)."""
    problems = []

    def named(result):
        return sorted(h for h, e in hosts.items() if e["result"] == result)

    if not any(e["judged"] for e in hosts.values()):
        problems.append("no host was judged")
    if named("failed"):
        problems.append("failed: %s" % ", ".join(named("failed")))
    if named("unreachable"):
        problems.append("unreachable: %s" % ", ".join(named("unreachable")))
    if named("locked"):
        problems.append("held by another run: %s" % ", ".join(named("locked")))
    unjudged = sorted(h for h, e in hosts.items() if not e["judged"] and e["result"] not in ("unreachable", "locked"))
    if unjudged:
        problems.append("never judged: %s" % ", ".join(unjudged))
    if playbook == "cutover":
        if named("rolled_back"):
            problems.append("rolled back: %s" % ", ".join(named("rolled_back")))
        left = sorted(h for h, e in hosts.items() if e["result"] == "on_c" and e["judged"])
        if left and not prepared:
            # A flip that was refused or never took: the host never reached Go.
            problems.append("left on C: %s" % ", ".join(left))
        failed_verdicts = sorted(h for h, e in hosts.items() if e["verdict"] == "fail" and e["result"] != "rolled_back")
        if failed_verdicts:
            problems.append("failed its SLO checks: %s" % ", ".join(failed_verdicts))
    elif playbook == "rollback":
        if named("on_go"):
            problems.append("still on Go: %s" % ", ".join(named("on_go")))
    elif playbook == "drill":
        if named("on_go"):
            problems.append("still on Go: %s" % ", ".join(named("on_go")))
        exceeded = sorted(h for h, e in hosts.items() if e["stages"].get("outcome", {}).get("envelope_ok") is False)
        if exceeded:
            problems.append("envelope exceeded or drill step failed: %s" % ", ".join(exceeded))
    return problems


def _needs_attention(playbook, entry, prepared=None):
    """Whether a host is part of why the run would fail (listed under the report's failures)."""
    if not entry["judged"] or entry["result"] in ("failed", "unreachable", "unknown", "locked") or entry["failures"]:
        return True
    if playbook == "cutover":
        return entry["result"] == "rolled_back" or entry["verdict"] == "fail" or (
            entry["result"] == "on_c" and not prepared)
    if playbook == "rollback":
        return entry["result"] == "on_go"
    if playbook == "drill":
        return entry["result"] == "on_go" or entry["stages"].get("outcome", {}).get("envelope_ok") is False
    return False


def _versions(hosts, go):
    c_versions = sorted(set(e["versions"]["c"] for e in hosts.values() if e["versions"].get("c")))
    go = go or {}
    return {"c": c_versions, "go": dict((key, go.get(key)) for key in ("sha256", "version", "source", "image_id", "image")
                                        if key in ("sha256", "version", "source") or go.get(key))}


def _timeline(run, hosts, finished_at):
    """Bounds and rows of the timeline picture."""
    times = [parse_time(run.get("started_at")), parse_time(finished_at)]
    for entry in hosts.values():
        for span in entry["spans"]:
            times += [parse_time(span.get("started_at")), parse_time(span.get("finished_at"))]
    times = [t for t in times if t is not None]
    rows = [{"host": host, "result": entry["result"], "spans": entry["spans"]}
            for host, entry in sorted(hosts.items(), key=_host_order)]
    return {
        "start": min(times).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if times else None,
        "end": max(times).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if times else None,
        "rows": rows,
    }


def _host_order(item):
    host, entry = item
    role_rank = {"canary": 0, "wave": 1}.get(entry.get("role"), 2)
    starts = [s.get("started_at") or s.get("finished_at") or "" for s in entry["spans"]]
    return (role_rank, min(starts) if starts else "~", host)


def _relative(path, run_dir):
    """A path inside the run directory as a path relative to it (portable, a link in report.md)."""
    if isinstance(path, str) and os.path.isabs(path):
        rel = os.path.relpath(path, run_dir)
        if not rel.startswith(os.pardir):
            return rel
    return path


def prepared_only(run):
    """The run's stop_after when it only prepares the fleet (a cutover that flips nothing), else None."""
    stop_after = (run.get("settings") or {}).get("stop_after")
    return stop_after if run.get("playbook") == "cutover" and stop_after in PREPARE_ONLY else None


def build_report(run_dir, run, finished_at=None):
    """The report document of a run from its run facts and its records.

    ``run`` is the content of run.json: run_id, playbook, started_at, go, expected_hosts and,
    once the run is finished, ``finished`` {at, result (floor), reason}.
    """
    records = load_records(run_dir)
    expected = list(run.get("expected_hosts") or [])
    names = sorted(set(expected) | set(records))
    prepared = prepared_only(run)
    hosts = dict((host, summarize_host(records.get(host, {}), prepared)) for host in names)
    for entry in hosts.values():
        entry["incident_note"] = _relative(entry["incident_note"], run_dir)
    counts = dict((name, 0) for name in HOST_RESULTS)
    for entry in hosts.values():
        counts[entry["result"]] += 1
    finished = run.get("finished") or {}
    problems = _problems(run.get("playbook"), hosts, prepared)
    for entry in hosts.values():
        entry["attention"] = _needs_attention(run.get("playbook"), entry, prepared)
    if not finished:
        result = RUNNING
    elif finished.get("result") == INCOMPLETE:
        result = INCOMPLETE
    elif finished.get("result") == FAILED or problems:
        result = FAILED
    else:
        result = SUCCESS
    reason = finished.get("reason")
    if result in (FAILED, INCOMPLETE) and problems:
        reason = "; ".join(([reason] if reason else []) + problems)
    finished_at = finished.get("at") or finished_at
    return {
        "schema": SCHEMA,
        "run_id": run.get("run_id"),
        "playbook": run.get("playbook"),
        "started_at": run.get("started_at"),
        "finished_at": finished_at if finished else None,
        "result": result,
        "reason": reason,
        "problems": problems,
        "go": run.get("go") or {},
        "versions": _versions(hosts, run.get("go")),
        "settings": run.get("settings") or {},
        "dualrun": load_dualrun(run_dir),
        "expected_hosts": expected,
        "summary": dict(counts, hosts=len(hosts), judged=sum(1 for e in hosts.values() if e["judged"])),
        "hosts": hosts,
        "timeline": _timeline(run, hosts, finished_at if finished else utc_now()),
    }
