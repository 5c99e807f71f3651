# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The files of a run report on the controller: report.json, report.md, timeline.svg.

``apply`` is what the mtproxy_report action plugin does: write the run facts, a record, an
incident note or a timeline mark, then render the report again. ``report.md`` comes from a Jinja2
template (roles/report/templates/report.md.j2, or the operator's own, named at the start of the
run); ``timeline.svg`` from plugin_utils/timeline.py.

``watch`` runs in a small process of its own, started when a run starts: when ansible-playbook
ends before the run was marked finished (the Report play never ran: every host of a batch failed
or went away, the controller was interrupted or killed), it marks the run ``incomplete`` and
renders the report once more, so that a report never says ``running`` (or worse) for a run
nobody is running any more.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import os
import subprocess
import sys
import time

from jinja2 import ChainableUndefined, Environment, FileSystemLoader, TemplateError

from ansible_collections.mtproxy.cutover.plugins.plugin_utils import report as rep
from ansible_collections.mtproxy.cutover.plugins.plugin_utils.credentials import redact_urls_in_text
from ansible_collections.mtproxy.cutover.plugins.plugin_utils.timeline import render_svg

REPORT_FILES = ("report.json", "report.md", "timeline.svg")
# While a run goes on, a record renders the report again only when the last rendering is older than this
# (seconds): a rendering reads every host's records, so one per record made a run cost O(hosts^2) on the
# controller (docs/performance.md). The start, a result or reason, the proofs and the final task always
# render, and so does the watcher of a run that ended without its final task.
RENDER_EVERY_S = 10.0
COLLECTION_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_TEMPLATE = os.path.join(COLLECTION_DIR, "roles", "report", "templates", "report.md.j2")


# --- formatting helpers offered to the template ----------------------------------------------

def sig(value, digits=4):
    """A number with ``digits`` significant digits (integers and large values in full); '-' for None."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value == 0:
            return "0"
        if abs(value) >= 10 ** digits:
            return "%d" % round(value)
        # "%#g" keeps trailing zeros: 0.9650 against a limit of 0.9800, never "1.0" against "1.0".
        text = "%#.*g" % (digits, value)
        if "e" in text:
            # Tiny values: positional notation reads better in a table than 1.200e-05.
            decimals = digits - 1 - int(math.floor(math.log10(abs(value))))
            text = "%.*f" % (decimals, value)
        return text.rstrip(".")
    return str(value)


def cell(value, digits=4):
    """A Markdown table cell: numbers via sig, '-' for None, pipes and newlines escaped."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) or value is None:
        return sig(value, digits)
    return str(value).replace("|", "\\|").replace("\n", " ")


def utc(text):
    """'2026-11-27T02:00:01.123Z' -> '2026-11-27 02:00:01.123Z'; '-' for none."""
    moment = rep.parse_time(text)
    if moment is None:
        return "-"
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def seconds_between(start, end):
    a, b = rep.parse_time(start), rep.parse_time(end)
    if a is None or b is None:
        return None
    return (b - a).total_seconds()


def _environment(directory):
    env = Environment(loader=FileSystemLoader(directory), undefined=ChainableUndefined, autoescape=False,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(sig=sig, cell=cell, utc=utc)
    env.globals.update(seconds_between=seconds_between)
    return env


def render_markdown(report, template=None):
    """report.md text from ``template`` (a path; default: the collection's report.md.j2)."""
    path = os.path.abspath(template or DEFAULT_TEMPLATE)
    env = _environment(os.path.dirname(path))
    return env.get_template(os.path.basename(path)).render(report=report, timeline_file="timeline.svg")


def write_report(report, run_dir, template=None, strict=False):
    """Write report.json, report.md and timeline.svg. Returns (json path, markdown path, svg path).

    A custom template that fails to render is replaced by the built-in one (the error is named in
    the report) unless ``strict``: a report must never fail a step in the middle of a cutover.
    """
    json_path, md_path, svg_path = (os.path.join(run_dir, name) for name in REPORT_FILES)
    try:
        markdown = render_markdown(report, template)
    except (TemplateError, OSError, ValueError, TypeError) as exc:
        if strict or not template:
            raise rep.ReportError("report template %s does not render: %s" % (template or DEFAULT_TEMPLATE, exc))
        report = dict(report, template_error="%s: %s" % (template, exc))
        markdown = render_markdown(report, None)
    rep.atomic_write(json_path, rep.dumps(report))
    rep.atomic_write(svg_path, render_svg(report))
    rep.atomic_write(md_path, redact_urls_in_text(markdown))
    return json_path, md_path, svg_path


# --- the controller process ------------------------------------------------------------------

def _proc_stat(pid):
    """Fields of /proc/PID/stat after the command name (Linux), None elsewhere or when gone."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start(pid):
    """Start time of a process in clock ticks since boot (Linux), None elsewhere or when gone."""
    fields = _proc_stat(pid)
    try:
        return int(fields[19]) if fields else None
    except (ValueError, IndexError):
        return None


def process_alive(pid, start=None):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _proc_stat(pid)
    if fields:
        # A zombie (killed, not reaped yet, e.g. under a PID 1 that reaps nothing) is gone.
        if fields[0] in ("Z", "X"):
            return False
        # The pid was reused by another process: the controller is gone.
        if start is not None and len(fields) > 19 and fields[19] != str(start):
            return False
    return True


def controller_identity():
    """The ansible-playbook process a task worker belongs to (the worker's parent)."""
    pid = os.getppid()
    return {"pid": pid, "start": process_start(pid)}


def finalize_incomplete(run_dir, reason=None):
    """Mark a run that is not finished ``incomplete`` and render it. Returns the report or None."""
    run = rep.load_run(run_dir)
    if not run.get("run_id") or run.get("finished"):
        return None
    controller = run.get("controller") or {}
    reason = reason or ("ansible-playbook (pid %s) ended before the run's Report play: the run did not finish"
                        % controller.get("pid", "?"))
    run = rep.finish_run(run, rep.utc_now(), rep.INCOMPLETE, reason)
    report = rep.build_report(run_dir, run)
    write_report(report, run_dir, run.get("report_template"))
    # run.json last: once it says finished, the report files say so too.
    rep.write_run(run_dir, run)
    return report


def watch(run_dir, pid, start=None, interval=1.0, max_s=14 * 86400):
    """Wait until the run is finished or the controller process is gone (then: incomplete)."""
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        try:
            if rep.load_run(run_dir).get("finished"):
                return "finished"
        except (OSError, ValueError):
            pass
        if not process_alive(pid, start):
            # Read once more: the run may have finished just before the process ended.
            try:
                finalize_incomplete(run_dir)
            except (OSError, ValueError, rep.ReportError):
                return "error"
            return "incomplete"
        time.sleep(interval)
    return "timeout"


def _import_root():
    """A directory whose ansible_collections/mtproxy/cutover is this collection (for ``python -c``)."""
    parts = COLLECTION_DIR.split(os.sep)
    if parts[-3:-2] == ["ansible_collections"]:
        return os.sep.join(parts[:-3])
    return None


def spawn_watcher(run_dir, controller):
    """Start ``watch`` for this run in a process of its own session; False when it cannot be."""
    root = _import_root()
    if not root or not controller.get("pid"):
        return False
    code = ("import sys; sys.path.insert(0, %r); "
            "from ansible_collections.mtproxy.cutover.plugins.plugin_utils.report_files import watch; "
            "watch(%r, %d, %r)" % (root, run_dir, controller["pid"], controller.get("start")))
    try:
        subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, close_fds=True, cwd="/", start_new_session=True)
    except OSError:
        return False
    return True


# --- the action plugin's work ----------------------------------------------------------------

# ansible-runner sets it for every ansible-playbook it starts (its event callback writes there), and so
# for every job of automation controller / AWX, which run jobs through ansible-runner; nothing else does.
# Its optional RUNNER_* variables and AWX's JOB_ID are not always set, or not only by them.
RUNNER_ENV = "AWX_ISOLATED_DATA_DIR"


def runner_warning(run_dir, environ=None, cwd=None):
    """Why the reports of a run under ansible-runner would be lost, or None.

    Such a job runs in its own copy of the project (its working directory) and discards it at its end:
    a run directory inside it goes with it.
    """
    environ = os.environ if environ is None else environ
    if not environ.get(RUNNER_ENV):
        return None
    cwd = os.path.abspath(cwd or os.getcwd())
    if os.path.commonpath([cwd, os.path.abspath(run_dir)]) != cwd:
        return None
    return ("this run is under ansible-runner (automation controller, AWX) and writes its report to %s, inside the "
            "job's project directory, which is discarded with the job: set mtproxy_cutover_artifacts_dir to a "
            "directory that outlives the job (docs/variables.md); the summary is still exported with set_stats"
            % run_dir)


def _result(report, paths, note, run_dir, spans=None, watcher=None, changed=False):
    result = dict(changed=changed, report=report, json_path=paths[0], markdown_path=paths[1], timeline_path=paths[2],
                  result=report.get("result") if report else None, note_path=note, run_dir=run_dir)
    if spans is not None:
        result["spans"] = spans
    if watcher is not None:
        result["watcher"] = watcher
    return result


def _must_render(params):
    """True for a task whose rendering nobody else does: the start, the end, a result, reason or proofs."""
    return bool(params.get("run") or params.get("final") or params.get("result") or params.get("reason")
                or params.get("proofs"))


def _rendered_within(path, seconds):
    try:
        age = time.time() - os.stat(path).st_mtime
    except OSError:
        return False
    return 0 <= age < seconds


def apply(params, check_mode=False, controller=None):
    """Write what the task gives, then render the report again: always at the start and the end of the
    run and with a result, a reason or proofs; for a record, when the last rendering is older than
    RENDER_EVERY_S; never for a mark alone.

    params are the validated options of the mtproxy_report action plugin (see
    plugin_utils/report.ARGUMENT_SPEC); a missing key counts as not given. In check mode nothing
    is written and the report is only built. ``controller`` ({pid, start}) is the ansible-playbook
    process; given with ``run``, a watcher marks the run incomplete if that process ends first.
    Returns the result of the task; raises ReportError with the message to fail the task with.
    """
    run_dir = params.get("run_dir")
    if not run_dir:
        raise rep.ReportError("run_dir is required")
    run_dir = os.path.abspath(run_dir)
    note = None
    spans = None
    starting = bool(params.get("run"))
    try:
        if params.get("note") is not None:
            note = rep.note_path(run_dir, params.get("host"))
        run = rep.load_run(run_dir) if not starting else None
        if starting:
            run = dict(params["run"])
            run.setdefault("started_at", None)
            run["started_at"] = run["started_at"] or rep.utc_now()
            run["expected_hosts"] = list(run.get("expected_hosts") or [])
            if run.get("report_template"):
                # Relative to the working directory, like run_dir; the watcher renders from "/".
                run["report_template"] = os.path.abspath(run["report_template"])
            if controller:
                run["controller"] = controller
            # As run.json keeps them: the report rendered now must not show a URL's credentials either.
            run = rep.redact_value(run)
        if not check_mode:
            if not os.path.isdir(run_dir):
                os.makedirs(run_dir)
            if starting:
                rep.write_run(run_dir, run)
            if note is not None:
                text = params["note"]
                rep.atomic_write(note, redact_urls_in_text(text if text.endswith("\n") else text + "\n"))
            if params.get("record") is not None:
                record = params["record"]
                if note is not None:
                    record = dict(record, incident_note=note)
                rep.write_record(run_dir, params.get("host"), params.get("stage"), record)
            if params.get("mark"):
                spans = rep.write_mark(run_dir, params.get("host"), params["mark"])
            for host, info in sorted((params.get("proofs") or {}).items()):
                record = rep.proof_record(info)
                if record is not None:
                    rep.write_record(run_dir, host, "proof", record)
    except (rep.ReportError, OSError, ValueError, TypeError) as exc:
        raise rep.ReportError("cannot write the report of %s: %s" % (run_dir, exc))
    # Files of the run directory written (in check mode: that would be written) by this task.
    changed = bool(starting or note is not None or params.get("record") is not None or params.get("mark")
                   or params.get("proofs") or params.get("final") or params.get("result") == rep.FAILED)
    if not run.get("run_id"):
        if check_mode:
            # A dry run never wrote run.json: there is nothing to render.
            return _result({}, (None, None, None), note, run_dir, changed=changed)
        raise rep.ReportError("no run facts in %s: pass run= once when the run starts" % run_dir)
    paths = tuple(os.path.join(run_dir, name) for name in REPORT_FILES)
    only_mark = params.get("mark") and not (_must_render(params) or params.get("record") is not None or note is not None)
    if only_mark:
        # A mark is cheap: the next rendering (or the watcher) shows it.
        return _result(None, paths, note, run_dir, spans=spans, changed=changed)
    finished = bool((run.get("finished") or {}).get("at"))
    if not (check_mode or finished or _must_render(params)) and _rendered_within(paths[0], RENDER_EVERY_S):
        # A record soon after the last rendering of a run that goes on: the next rendering shows it.
        result = _result(None, paths, note, run_dir, spans=spans, changed=changed)
        result["result"] = rep.RUNNING
        return result
    try:
        if params.get("final") or params.get("result") == rep.FAILED:
            run = rep.finish_run(run, params.get("finished_at") or rep.utc_now(), params.get("result"), params.get("reason"))
            if not check_mode:
                rep.write_run(run_dir, run)
        report = rep.build_report(run_dir, run)
        if params.get("reason") and not report.get("reason"):
            report["reason"] = params["reason"]
        if not check_mode:
            write_report(report, run_dir, run.get("report_template"), strict=starting)
    except (rep.ReportError, OSError, ValueError, TypeError) as exc:
        raise rep.ReportError("cannot write the report of %s: %s" % (run_dir, exc))
    watcher = None
    if starting and not check_mode and controller:
        watcher = spawn_watcher(run_dir, controller)
    result = _result(report, paths, note, run_dir, spans=spans, watcher=watcher, changed=changed)
    warning = runner_warning(run_dir) if starting else None
    if warning:
        result["warnings"] = [warning]
    return result
