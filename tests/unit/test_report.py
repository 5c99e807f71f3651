import datetime
import json
import os
import subprocess
import sys
import time

import pytest

from ansible_collections.mtproxy.cutover.plugins.plugin_utils import report as rep
from ansible_collections.mtproxy.cutover.plugins.plugin_utils import report_files as rf
from ansible_collections.mtproxy.cutover.plugins.plugin_utils import timeline

# <root>/ansible_collections/mtproxy/cutover/plugins/plugin_utils/report.py (tests/conftest.py made it).
COLLECTIONS_ROOT = os.path.abspath(os.path.join(os.path.dirname(rep.__file__), *[os.pardir] * 5))


def _run(tmp_path, playbook="cutover", expected=("h1",), finished=True, **extra):
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir, exist_ok=True)
    run = dict({"run_id": "r1", "playbook": playbook, "started_at": "2026-11-27T02:00:00Z",
                "go": {"sha256": "ab" * 32}, "expected_hosts": list(expected)}, **extra)
    if finished:
        run["finished"] = {"at": "2026-11-27T02:30:00Z", "result": None}
    rep.write_run(run_dir, run)
    return run_dir


def _report(run_dir):
    return rep.build_report(run_dir, rep.load_run(run_dir))


FLIP = {"role": "canary", "wave": 0, "binary": "/opt/MTProxy/releases/go-x/mtproto-proxy-go",
        "timings": {"stop_ms": 5.0, "start_ms": 14.2, "unavailable_ms": 19.2}}
ON_GO = {"result": "on_go", "reason": ""}


def test_successful_cutover_lists_every_host_on_go(tmp_path):
    run_dir = _run(tmp_path, expected=("h1", "h2"))
    for host in ("h1", "h2"):
        rep.write_record(run_dir, host, "flip", FLIP)
        rep.write_record(run_dir, host, "verify", {"verdict": "pass", "failures": []})
        rep.write_record(run_dir, host, "outcome", ON_GO)
    report = _report(run_dir)
    assert report["result"] == "success" and report["reason"] is None
    assert report["summary"]["on_go"] == 2 and report["summary"]["judged"] == 2
    assert report["hosts"]["h1"]["timings"] == FLIP["timings"]
    assert report["hosts"]["h1"]["flavor"] == "go"


def test_a_wave_and_a_window_given_as_text_are_recorded_as_numbers(tmp_path):
    # ansible-core 2.16 renders "{{ n | int }}" inside a record as text ("0", "6")
    run_dir = _run(tmp_path)
    rep.write_record(run_dir, "h1", "flip", dict(FLIP, wave="0"))
    rep.write_record(run_dir, "h1", "verify", {"verdict": "pass", "failures": [], "window_s": "6"})
    rep.write_record(run_dir, "h1", "outcome", dict(ON_GO, role="canary", wave="0"))
    entry = _report(run_dir)["hosts"]["h1"]
    assert (entry["wave"], entry["window_s"]) == (0, 6)
    assert (entry["stages"]["flip"]["wave"], entry["stages"]["outcome"]["wave"]) == (0, 0)


def test_rolled_back_host_fails_the_cutover_and_shows_metric(tmp_path):
    run_dir = _run(tmp_path)
    rep.write_record(run_dir, "h1", "flip", FLIP)
    failure = {"metric": "bad_handshakes", "observed": 12.5, "limit": 1.0, "rule": "rate above limit"}
    rep.write_record(run_dir, "h1", "verify", {"verdict": "fail", "failures": [failure]})
    rep.write_record(run_dir, "h1", "rollback", {"ok": True, "binary": "/opt/MTProxy/mtproto-proxy",
                                                 "timings": {"stop_ms": 2000.0, "start_ms": 12.0, "unavailable_ms": 40.0}})
    rep.write_record(run_dir, "h1", "outcome", {"result": "rolled_back", "reason": "SLO fail"})
    report = _report(run_dir)
    assert report["result"] == "failed" and "rolled back: h1" in report["reason"]
    host = report["hosts"]["h1"]
    assert host["result"] == "rolled_back" and host["flavor"] == "c"
    assert host["binary"] == "/opt/MTProxy/mtproto-proxy"
    markdown = rf.render_markdown(report)
    assert "bad_handshakes" in markdown and "rolled_back" in markdown


def test_rollback_playbook_succeeds_when_every_host_is_on_c(tmp_path):
    run_dir = _run(tmp_path, "rollback", expected=("h1", "h2"))
    rep.write_record(run_dir, "h1", "outcome", {"result": "rolled_back"})
    rep.write_record(run_dir, "h2", "outcome", {"result": "on_c"})
    assert _report(run_dir)["result"] == "success"
    rep.write_record(run_dir, "h3", "outcome", {"result": "failed", "reason": "argv differs"})
    assert _report(run_dir)["result"] == "failed"


def test_drill_fails_when_envelope_exceeded(tmp_path):
    run_dir = _run(tmp_path, "drill")
    rep.write_record(run_dir, "h1", "outcome", {"result": "on_c", "envelope_ok": True})
    assert _report(run_dir)["result"] == "success"
    rep.write_record(run_dir, "h1", "outcome", {"result": "on_c", "envelope_ok": False})
    assert _report(run_dir)["result"] == "failed"


# --- issue 13: the result comes from the hosts the run was meant to touch --------------------

def test_expected_host_without_any_record_is_unknown_and_fails_the_run(tmp_path):
    run_dir = _run(tmp_path, expected=("h1", "h2"))
    rep.write_record(run_dir, "h1", "flip", FLIP)
    rep.write_record(run_dir, "h1", "outcome", ON_GO)
    report = _report(run_dir)
    assert report["hosts"]["h2"]["result"] == "unknown" and report["hosts"]["h2"]["judged"] is False
    assert report["result"] == "failed"
    assert "never judged: h2" in report["reason"]
    assert report["summary"]["unknown"] == 1 and report["summary"]["hosts"] == 2


def test_flipped_but_never_judged_host_is_unknown_not_on_go(tmp_path):
    # Today: "on_go | -" in a report whose result is success.
    run_dir = _run(tmp_path)
    rep.write_record(run_dir, "h1", "flip", FLIP)
    report = _report(run_dir)
    assert report["hosts"]["h1"]["result"] == "unknown"
    assert report["hosts"]["h1"]["reason"] == "flipped to Go but never judged"
    assert report["result"] == "failed"


def test_a_flip_that_started_and_never_finished_is_unknown_not_on_c(tmp_path):
    # A controller killed between the flip's start mark and its record: the host may already run Go.
    run_dir = _run(tmp_path)
    rep.write_record(run_dir, "h1", "freeze", {"current": "c"})
    rep.write_mark(run_dir, "h1", {"start": "flip"})
    report = _report(run_dir)
    assert report["hosts"]["h1"]["result"] == "unknown" and report["hosts"]["h1"]["judged"] is False
    assert "a flip started and never finished" in report["hosts"]["h1"]["reason"]
    assert report["result"] == "failed"


def test_zero_judged_hosts_is_a_failure(tmp_path):
    # drill.yml without a canary, or every host unreachable: 0 hosts is not a success.
    assert _report(_run(tmp_path, "drill", expected=()))["result"] == "failed"
    report = _report(_run(tmp_path, "drill", expected=()))
    assert report["reason"] == "no host was judged" and report["summary"]["hosts"] == 0


def test_unreachable_host_is_never_judged_and_fails_the_run(tmp_path):
    run_dir = _run(tmp_path, expected=("h1", "h2"))
    rep.write_record(run_dir, "h1", "outcome", ON_GO)
    rep.write_record(run_dir, "h2", "flip", FLIP)
    rep.write_record(run_dir, "h2", "outcome", {"result": "unreachable", "reason": "went away during the observation"})
    report = _report(run_dir)
    assert report["hosts"]["h2"]["result"] == "unreachable" and not report["hosts"]["h2"]["judged"]
    assert report["result"] == "failed" and "unreachable: h2" in report["reason"]


def test_result_is_running_until_the_run_is_finished(tmp_path):
    run_dir = _run(tmp_path, finished=False)
    rep.write_record(run_dir, "h1", "outcome", ON_GO)
    report = _report(run_dir)
    assert report["result"] == "running" and report["finished_at"] is None
    run = rep.finish_run(rep.load_run(run_dir), "2026-11-27T03:00:00Z")
    assert rep.build_report(run_dir, run)["result"] == "success"


def test_a_failed_or_incomplete_finish_is_a_floor(tmp_path):
    run_dir = _run(tmp_path, finished=False)
    rep.write_record(run_dir, "h1", "outcome", ON_GO)
    run = rep.finish_run(rep.load_run(run_dir), "t", "failed", "h1: stage failed")
    assert rep.build_report(run_dir, run)["result"] == "failed"
    # A later final render without a result does not raise it back to success.
    again = rep.finish_run(run, "t2")
    assert rep.build_report(run_dir, again)["result"] == "failed"
    incomplete = rep.finish_run(rep.load_run(run_dir), "t", "incomplete", "controller gone")
    assert rep.build_report(run_dir, incomplete)["result"] == "incomplete"


def test_untouched_host_of_a_rollback_is_on_c_and_not_a_failure(tmp_path):
    # rollback.yml after a killed controller: two hosts were never flipped; nothing restarted there.
    run_dir = _run(tmp_path, "rollback", expected=("h1", "h2"))
    rep.write_record(run_dir, "h1", "rollback", {"ok": True, "changed": True, "reason": "requested by rollback.yml"})
    rep.write_record(run_dir, "h1", "outcome", {"result": "rolled_back", "reason": "requested by rollback.yml"})
    rep.write_record(run_dir, "h2", "rollback", {"ok": True, "changed": False, "reason": "requested by rollback.yml"})
    rep.write_record(run_dir, "h2", "outcome", {"result": "on_c", "reason": "requested by rollback.yml"})
    report = _report(run_dir)
    assert report["result"] == "success"
    assert report["hosts"]["h2"]["result"] == "on_c" and report["hosts"]["h2"]["failures"] == []
    markdown = rf.render_markdown(report)
    assert "## Failures" not in markdown and "(observed -, limit -)" not in markdown


def test_write_report_writes_json_markdown_and_timeline(tmp_path):
    run_dir = _run(tmp_path)
    rep.write_record(run_dir, "h1", "flip", FLIP)
    report = _report(run_dir)
    json_path, md_path, svg_path = rf.write_report(report, run_dir)
    with open(json_path) as handle:
        assert json.load(handle)["hosts"]["h1"]["role"] == "canary"
    with open(md_path) as handle:
        text = handle.read()
    assert "| h1 | canary | 0 | unknown (not judged) |" in text
    assert "![Timeline of the run" in text and "](timeline.svg)" in text
    with open(svg_path) as handle:
        assert handle.read().startswith("<svg")


@pytest.mark.parametrize("host", ["", "../x", ".hidden", "a/b"])
def test_record_rejects_unsafe_host_names(tmp_path, host):
    with pytest.raises(rep.ReportError):
        rep.write_record(_run(tmp_path), host, "flip", {})


def test_record_rejects_unknown_stage(tmp_path):
    with pytest.raises(rep.ReportError):
        rep.write_record(_run(tmp_path), "h1", "nonsense", {})


def test_corrupt_record_is_reported_with_host(tmp_path):
    run_dir = _run(tmp_path)
    os.makedirs(os.path.join(run_dir, "hosts", "h9"))
    with open(os.path.join(run_dir, "hosts", "h9", "flip.json"), "w") as handle:
        handle.write("{not json")
    with pytest.raises(rep.ReportError, match="h9"):
        _report(run_dir)


# --- the report a person reads ---------------------------------------------------------------

BASELINE = {"flavor": "c", "derived": {"success_rate": 1.0, "packets": 500, "dropped_packets": 0,
                                       "bad_handshake_ratio": 0.004, "connections": 250, "bad_handshakes": 1}}
VERIFY_FAIL = {
    "verdict": "fail",
    "judged": ["min_success_rate", "baseline_success_rate", "baseline_bad_handshake_ratio"],
    "thresholds": {"min_success_rate": 0.98, "max_success_rate_drop": 0.02},
    "baseline_comparison": [
        {"metric": "success_rate", "baseline": 1.0, "observed": 0.965, "limit": 0.98, "result": "fail"},
        {"metric": "bad_handshake_ratio", "baseline": 0.004, "observed": 0.004, "limit": 0.024, "result": "pass"}],
    "failures": [{"metric": "success_rate", "observed": 0.965, "limit": 0.98,
                  "rule": "at least this share of client packets must be forwarded, not dropped",
                  "detail": "14 of 400 packets dropped"}],
    "summary": {"flavor": "go", "derived": {"success_rate": 0.965, "packets": 400, "dropped_packets": 14,
                                            "bad_handshake_ratio": 0.004, "connections": 250, "bad_handshakes": 1}},
}


def _failed_canary(tmp_path, **run_extra):
    run_dir = _run(tmp_path, go={"sha256": "ab" * 32, "version": "v1.4.2"}, **run_extra)
    rep.write_record(run_dir, "h1", "freeze", {"current": "c", "c_version": "mtproxy-0.02 compiled at Nov 27 2026",
                                               "baseline": BASELINE})
    rep.write_record(run_dir, "h1", "stage", {"path": "/opt/MTProxy/releases/go-abababababab/mtproto-proxy-go",
                                              "sha256": "ab" * 32, "version": "v1.4.2"})
    marks = [({"start": "freeze"}, "02:00:01.000"), ({"end": "freeze"}, "02:00:06.500"),
             ({"start": "flip"}, "02:01:00.000"), ({"end": "flip"}, "02:01:00.250"),
             ({"start": "observe"}, "02:01:00.300"), ({"end": "observe", "result": "failed"}, "02:06:00.300"),
             ({"start": "rollback"}, "02:06:01.000"), ({"end": "rollback"}, "02:06:01.400")]
    for mark, at in marks:
        rep.write_mark(run_dir, "h1", mark, at="2026-11-27T%sZ" % at)
    rep.write_record(run_dir, "h1", "flip", FLIP)
    rep.write_record(run_dir, "h1", "verify", VERIFY_FAIL)
    rep.write_record(run_dir, "h1", "outcome", {"result": "rolled_back", "reason": "SLO fail"})
    return run_dir


def test_markdown_shows_four_significant_digits_and_the_failure_detail(tmp_path):
    # Was: "observed 1.0, limit 1.0" for a success rate of 0.965 against 0.98, without "14 of 400".
    markdown = rf.render_markdown(_report(_failed_canary(tmp_path)))
    assert "success_rate observed 0.9650, limit 0.9800" in markdown
    assert "(14 of 400 packets dropped)" in markdown
    assert "1.0, limit 1.0" not in markdown


def test_markdown_shows_utc_windows_comparison_and_versions(tmp_path):
    report = _report(_failed_canary(tmp_path))
    markdown = rf.render_markdown(report)
    # UTC start and end of the flip and of the observation window, in the host table and per step.
    assert "2026-11-27 02:01:00.000Z to 2026-11-27 02:01:00.250Z" in markdown
    assert "2026-11-27 02:01:00.300Z to 2026-11-27 02:06:00.300Z" in markdown
    assert "| h1 | observe (300 s) |" not in markdown  # labels come only from marks that carry one
    assert "| h1 | observe | 2026-11-27 02:01:00.300Z | 2026-11-27 02:06:00.300Z | 300.0 | failed |" in markdown
    # C baseline beside Go for each judged metric, with the volume and the limits.
    assert ("| h1 | success_rate | 1.000 (0 dropped packets of 500 packets) | 0.9650 (14 dropped packets of 400 packets) "
            "| >= 0.9800, >= 0.9800 (baseline) | fail |"
            in markdown)
    assert ("| h1 | bad_handshake_ratio | 0.004000 (1 bad handshakes of 250 connections) "
            "| 0.004000 (1 bad handshakes of 250 connections) | <= 0.02400 (baseline) | pass |") in markdown
    # Versions of both binaries.
    assert "C binary: mtproxy-0.02 compiled at Nov 27 2026" in markdown
    assert "Go binary: v1.4.2, sha256 `%s`" % ("ab" * 32) in markdown
    assert report["hosts"]["h1"]["versions"]["go"]["version"] == "v1.4.2"


def test_timeline_svg_has_a_bar_per_recorded_step(tmp_path):
    report = _report(_failed_canary(tmp_path))
    svg = timeline.render_svg(report)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    for step in ("freeze", "flip window", "observation", "rollback"):
        assert "h1 %s: 2026-11-27T" % step in svg
    assert "02:01:00" in svg  # a UTC tick
    import xml.dom.minidom
    xml.dom.minidom.parseString(svg)  # well-formed


def test_timeline_draws_a_step_without_end_up_to_the_end(tmp_path):
    run_dir = _run(tmp_path, finished=False)
    rep.write_mark(run_dir, "h1", {"start": "flip"}, at="2026-11-27T02:01:00Z")
    svg = timeline.render_svg(_report(run_dir))
    assert "no end recorded" in svg and 'stroke-dasharray' in svg


def test_operator_template_replaces_the_markdown(tmp_path):
    template = tmp_path / "mine.md.j2"
    template.write_text("run {{ report.run_id }}: {{ report.result }}, {{ 0.96512 | sig }}\n")
    run_dir = _run(tmp_path, report_template=str(template))
    rep.write_record(run_dir, "h1", "outcome", ON_GO)
    result = rf.apply(_params(run_dir, final=True))
    with open(result["markdown_path"]) as handle:
        assert handle.read() == "run r1: success, 0.9651\n"


def test_relative_operator_template_is_kept_absolute_for_the_watcher(tmp_path, monkeypatch):
    # The watcher renders from "/": a template given relative to the working directory must still be found.
    (tmp_path / "mine.md.j2").write_text("mine: {{ report.result }}\n")
    monkeypatch.chdir(tmp_path)
    run_dir = str(tmp_path / "run")
    rf.apply(_params(run_dir, run=dict(RUN, report_template="mine.md.j2")))
    assert rep.load_run(run_dir)["report_template"] == str(tmp_path / "mine.md.j2")
    monkeypatch.chdir("/")
    result = rf.apply(_params(run_dir, host="h1", stage="outcome", record=ON_GO))
    assert open(result["markdown_path"]).read() == "mine: running\n"


def test_broken_operator_template_fails_the_start_not_a_later_step(tmp_path):
    template = tmp_path / "broken.md.j2"
    template.write_text("{% for %}\n")
    run_dir = str(tmp_path / "run")
    run = dict(RUN, report_template=str(template))
    with pytest.raises(rep.ReportError, match="does not render"):
        rf.apply(_params(run_dir, run=run))
    # Later (the run started before the template broke): the built-in template, the error named.
    result = rf.apply(_params(run_dir, host="h1", stage="outcome", record=ON_GO))
    assert "report template failed" in open(result["markdown_path"]).read()


def test_sig_keeps_four_significant_digits():
    assert [rf.sig(v) for v in (0.965, 0.98, 1.0, 5.123456, 12345.6, 0.0000123, 0.0, 400, None)] == [
        "0.9650", "0.9800", "1.000", "5.123", "12346", "0.00001230", "0", "400", "-"]


# --- credentials ------------------------------------------------------------------------------

def test_records_and_run_facts_lose_url_credentials(tmp_path):
    run_dir = str(tmp_path / "run")
    url = "https://deploy:s3cr3t-token@dl.example.com/mtproxy/go?access_token=t0k3n&arch=amd64"
    rf.apply(_params(run_dir, run=dict(RUN, go={"sha256": "cd" * 32, "source": url})))
    # The report rendered at the start shows the run facts: without the credentials either.
    with open(os.path.join(run_dir, "report.json")) as handle:
        assert "dl.example.com" in handle.read()
    for name in ("report.json", "report.md"):
        with open(os.path.join(run_dir, name)) as handle:
            text = handle.read()
        assert "s3cr3t-token" not in text and "t0k3n" not in text and "deploy" not in text, name
    rf.apply(_params(run_dir, host="h1", stage="outcome",
                     record={"result": "failed", "reason": "download %s failed" % url}))
    rf.apply(_params(run_dir, final=True))
    for name in ("run.json", "report.json", "report.md", "timeline.svg", os.path.join("hosts", "h1", "outcome.json")):
        with open(os.path.join(run_dir, name)) as handle:
            text = handle.read()
        assert "s3cr3t-token" not in text and "t0k3n" not in text and "deploy" not in text, name
    assert rep.load_run(run_dir)["go"]["source"] == "https://dl.example.com/mtproxy/go?arch=amd64"


# --- run directory and watcher ----------------------------------------------------------------

def test_relative_run_dir_is_the_working_directory_not_pwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PWD", raising=False)
    result = rf.apply(_params("artifacts/r2", run=RUN))
    assert result["run_dir"] == str(tmp_path / "artifacts" / "r2")
    assert os.path.isfile(tmp_path / "artifacts" / "r2" / "run.json")


def test_finalize_marks_an_unfinished_run_incomplete(tmp_path):
    run_dir = _run(tmp_path, expected=("h1", "h2"), finished=False)
    rep.write_record(run_dir, "h1", "outcome", ON_GO)
    report = rf.finalize_incomplete(run_dir)
    assert report["result"] == "incomplete"
    assert "ended before the run's Report play" in report["reason"] and "never judged: h2" in report["reason"]
    with open(os.path.join(run_dir, "report.json")) as handle:
        assert json.load(handle)["result"] == "incomplete"
    # A finished run is left as it is.
    assert rf.finalize_incomplete(run_dir) is None


def test_watch_returns_at_once_for_a_finished_run(tmp_path):
    run_dir = _run(tmp_path, finished=True)
    assert rf.watch(run_dir, os.getpid(), interval=0.01) == "finished"


def test_watcher_process_marks_the_run_incomplete_when_the_controller_ends(tmp_path):
    run_dir = str(tmp_path / "run")
    controller = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.0)"])
    try:
        identity = {"pid": controller.pid, "start": rf.process_start(controller.pid)}
        result = rf.apply(_params(run_dir, run=dict(RUN, expected_hosts=["h1"])), controller=identity)
        assert result["watcher"] is True and result["result"] == "running"
    finally:
        controller.wait()
    deadline = time.time() + 20
    while time.time() < deadline and not rep.load_run(run_dir).get("finished"):
        time.sleep(0.2)
    assert rep.load_run(run_dir)["finished"]["result"] == "incomplete"
    with open(os.path.join(run_dir, "report.json")) as handle:
        assert json.load(handle)["result"] == "incomplete"


def test_process_alive_sees_a_reused_pid_as_gone():
    me = os.getpid()
    assert rf.process_alive(me, rf.process_start(me))
    assert not rf.process_alive(me, (rf.process_start(me) or 0) + 1) or rf.process_start(me) is None


# apply(): what the mtproxy_report action plugin does with its validated options.

RUN = {"run_id": "r2", "playbook": "cutover", "started_at": "2026-11-27T02:00:00Z", "go": {"sha256": "cd" * 32},
       "expected_hosts": ["h1"]}


def _params(run_dir, **kwargs):
    params = dict((name, None) for name in rep.ARGUMENT_SPEC)
    params.update(dict(final=False, run_dir=run_dir), **kwargs)
    return params


def test_apply_starts_a_run_and_writes_a_record(tmp_path):
    run_dir = str(tmp_path / "new" / "run")
    started = rf.apply(_params(run_dir, run=RUN))
    # It wrote run.json and the report files: a change (of the controller's run directory).
    assert started["changed"] is True and started["result"] == "running"
    assert rep.load_run(run_dir) == RUN
    # A record right after a rendering is written, and shown by the next rendering.
    soon = rf.apply(_params(run_dir, host="h1", stage="flip", record=FLIP))
    with open(os.path.join(run_dir, "hosts", "h1", "flip.json")) as handle:
        written = json.load(handle)
    assert written.pop("recorded_at").endswith("Z") and written == FLIP
    assert soon["changed"] is True and soon["report"] is None and soon["result"] == "running"
    with open(soon["json_path"]) as handle:
        assert json.load(handle)["hosts"]["h1"]["stages"] == {}
    # One RENDER_EVERY_S later, the next record renders the report again.
    aged = time.time() - rf.RENDER_EVERY_S - 1
    os.utime(soon["json_path"], (aged, aged))
    result = rf.apply(_params(run_dir, host="h1", stage="flip", record=FLIP))
    assert result["json_path"] == os.path.join(run_dir, "report.json")
    assert result["markdown_path"] == os.path.join(run_dir, "report.md")
    assert result["timeline_path"] == os.path.join(run_dir, "timeline.svg")
    with open(result["json_path"]) as handle:
        written = json.load(handle)
    assert written == json.loads(json.dumps(result["report"]))
    assert written["run_id"] == "r2" and written["hosts"]["h1"]["result"] == "unknown"
    with open(result["markdown_path"]) as handle:
        assert "| h1 | canary | 0 | unknown (not judged) |" in handle.read()


def test_apply_renders_at_once_what_nobody_else_would(tmp_path):
    # Right after a rendering: a record with a result (stop_run.yml), the proofs and the final task
    # still render; so does any record once the run is finished.
    run_dir = str(tmp_path / "run")
    rf.apply(_params(run_dir, run=RUN))
    stopped = rf.apply(_params(run_dir, host="h1", stage="outcome", record={"reason": "freeze: drift"},
                               result="failed", reason="h1: freeze: drift"))
    assert stopped["report"]["hosts"]["h1"]["reason"] == "freeze: drift" and stopped["result"] == "failed"
    after = rf.apply(_params(run_dir, host="h1", stage="lock", record={"released": True}))
    assert after["report"] is not None and "lock" in after["report"]["hosts"]["h1"]["stages"]


def test_apply_final_finishes_the_run(tmp_path):
    run_dir = str(tmp_path / "run")
    rf.apply(_params(run_dir, run=RUN))
    rf.apply(_params(run_dir, host="h1", stage="outcome", record=ON_GO))
    result = rf.apply(_params(run_dir, final=True, finished_at="2026-11-27T03:00:00Z"))
    assert result["result"] == "success" and result["report"]["finished_at"] == "2026-11-27T03:00:00Z"


def test_apply_passes_result_reason_and_finished_at(tmp_path):
    run_dir = _run(tmp_path, finished=False)
    result = rf.apply(_params(run_dir, result="failed", reason="preflight: no canary", finished_at="t9"))
    assert result["result"] == "failed"
    assert result["report"]["reason"].startswith("preflight: no canary")
    assert result["report"]["finished_at"] == "t9"


def test_apply_writes_dates_of_a_record_as_iso_text(tmp_path):
    run_dir = _run(tmp_path)
    rf.apply(_params(run_dir, host="h1", stage="freeze", record={"frozen_on": datetime.date(2026, 11, 27)}))
    with open(os.path.join(run_dir, "hosts", "h1", "freeze.json")) as handle:
        assert json.load(handle)["frozen_on"] == "2026-11-27"


def test_apply_a_mark_alone_writes_the_timeline_without_rendering(tmp_path):
    run_dir = _run(tmp_path, finished=False)
    result = rf.apply(_params(run_dir, host="h1", mark={"start": "flip", "result": "ok"}))
    assert result["report"] is None and result["spans"][0]["step"] == "flip"
    assert not os.path.exists(os.path.join(run_dir, "report.json"))
    result = rf.apply(_params(run_dir, host="h1", mark={"end": "flip", "start": "observe", "result": "ok"}))
    assert [(s["step"], bool(s["finished_at"])) for s in result["spans"]] == [("flip", True), ("observe", False)]
    closed = rf.apply(_params(run_dir, host="h1", mark={"close": True, "result": "unreachable"}))
    assert all(s["finished_at"] for s in closed["spans"]) and closed["spans"][-1]["result"] == "unreachable"


def test_apply_in_check_mode_writes_nothing(tmp_path):
    run_dir = _run(tmp_path)
    before = sorted(os.listdir(run_dir))
    result = rf.apply(_params(run_dir, host="h1", stage="flip", record=FLIP), check_mode=True)
    assert sorted(os.listdir(run_dir)) == before == ["run.json"]
    assert result["report"]["run_id"] == "r1" and result["report"]["hosts"]["h1"]["stages"] == {}
    assert result["json_path"] == os.path.join(run_dir, "report.json")


def test_apply_in_check_mode_without_run_renders_nothing(tmp_path):
    run_dir = str(tmp_path / "absent")
    result = rf.apply(_params(run_dir, run=RUN, host="h1", stage="flip", record=FLIP), check_mode=True)
    assert not os.path.exists(run_dir)
    assert result["report"]["run_id"] == "r2"
    empty = rf.apply(_params(run_dir), check_mode=True)
    # Nothing to write, nothing that would change.
    assert empty == dict(changed=False, report={}, json_path=None, markdown_path=None, timeline_path=None,
                         result=None, note_path=None, run_dir=run_dir)


ROLLBACK = {"ok": True, "changed": True, "reason": "canary failed", "binary": "/opt/MTProxy/mtproto-proxy"}


def test_apply_writes_the_incident_note_and_points_the_record_at_it(tmp_path):
    run_dir = _run(tmp_path)
    result = rf.apply(_params(run_dir, host="h1", stage="rollback", record=ROLLBACK, note="# Incident: h1"))
    path = os.path.join(run_dir, "incidents", "h1.md")
    assert result["note_path"] == path
    with open(path) as handle:
        assert handle.read() == "# Incident: h1\n"
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    with open(os.path.join(run_dir, "hosts", "h1", "rollback.json")) as handle:
        written = json.load(handle)
    written.pop("recorded_at")
    assert written == dict(ROLLBACK, incident_note=path)
    assert result["report"]["hosts"]["h1"]["result"] == "rolled_back"


def test_apply_writes_a_note_alone_and_replaces_an_older_one(tmp_path):
    run_dir = _run(tmp_path)
    rf.apply(_params(run_dir, host="h1", note="first\n"))
    result = rf.apply(_params(run_dir, host="h1", note="second\n"))
    with open(result["note_path"]) as handle:
        assert handle.read() == "second\n"
    assert not os.path.exists(os.path.join(run_dir, "hosts"))


def test_apply_in_check_mode_names_the_note_but_writes_none(tmp_path):
    run_dir = _run(tmp_path)
    result = rf.apply(_params(run_dir, host="h1", stage="rollback", record=ROLLBACK, note="text"), check_mode=True)
    assert result["note_path"] == os.path.join(run_dir, "incidents", "h1.md")
    assert sorted(os.listdir(run_dir)) == ["run.json"]


def test_apply_refuses_a_note_for_an_unsafe_host_name(tmp_path):
    run_dir = _run(tmp_path)
    with pytest.raises(rep.ReportError, match="invalid host name '../h1'"):
        rf.apply(_params(run_dir, host="../h1", note="text"))
    assert sorted(os.listdir(run_dir)) == ["run.json"]


@pytest.mark.parametrize("host, stage, cause", [
    ("h1", "nonsense", "unknown stage 'nonsense'"),
    ("../h1", "flip", "invalid host name '../h1'"),
    (None, "flip", "invalid host name None"),
])
def test_apply_rejects_bad_stage_or_host(tmp_path, host, stage, cause):
    run_dir = _run(tmp_path)
    with pytest.raises(rep.ReportError) as err:
        rf.apply(_params(run_dir, host=host, stage=stage, record=FLIP))
    assert str(err.value).startswith("cannot write the report of %s: %s" % (run_dir, cause))
    assert not os.path.exists(os.path.join(run_dir, "hosts"))


def test_apply_without_run_facts_says_how_to_start_the_run(tmp_path):
    run_dir = str(tmp_path / "run")
    with pytest.raises(rep.ReportError) as err:
        rf.apply(_params(run_dir, host="h1", stage="flip", record=FLIP))
    assert str(err.value) == "no run facts in %s: pass run= once when the run starts" % run_dir


def test_apply_names_the_run_dir_when_a_record_is_corrupt(tmp_path):
    run_dir = _run(tmp_path)
    os.makedirs(os.path.join(run_dir, "hosts", "h9"))
    with open(os.path.join(run_dir, "hosts", "h9", "flip.json"), "w") as handle:
        handle.write("{not json")
    with pytest.raises(rep.ReportError, match="^cannot write the report of .*: record flip.json of host h9"):
        rf.apply(_params(run_dir))


# The action plugin run by ansible-playbook on the controller.

PLAYBOOK = """
- name: Exercise mtproxy_report
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    run_dir: "~/artifacts/r3"
  tasks:
    - name: Start the run
      mtproxy.cutover.mtproxy_report:
        run_dir: "{{ run_dir }}"
        run:
          run_id: r3
          playbook: drill
          started_at: "2026-11-27T02:00:00Z"
      register: started

    - name: Record this host's outcome
      mtproxy.cutover.mtproxy_report:
        run_dir: "{{ run_dir }}"
        host: "{{ inventory_hostname }}"
        stage: outcome
        record:
          result: on_c
          envelope_ok: "{{ 1 > 2 }}"
          reason: envelope exceeded
      register: recorded

    - name: Finish the run
      mtproxy.cutover.mtproxy_report:
        run_dir: "{{ run_dir }}"
        final: true
      register: finished

    - name: Record a flip in check mode
      mtproxy.cutover.mtproxy_report:
        run_dir: "{{ run_dir }}"
        host: "{{ inventory_hostname }}"
        stage: flip
        record: {role: canary}
      check_mode: true
      register: dry

    - name: Record an unknown stage
      mtproxy.cutover.mtproxy_report:
        run_dir: "{{ run_dir }}"
        host: "{{ inventory_hostname }}"
        stage: nonsense
        record: {}
      register: bad_stage
      ignore_errors: true

    - name: Record without a host
      mtproxy.cutover.mtproxy_report:
        run_dir: "{{ run_dir }}"
        stage: flip
        record: {}
      register: no_host
      ignore_errors: true

    - name: Keep the results for the test
      ansible.builtin.copy:
        content: "{{ {'started': started, 'recorded': recorded, 'finished': finished, 'dry': dry,
                      'bad_stage': bad_stage, 'no_host': no_host} | to_nice_json }}"
        dest: "{{ results }}"
        mode: "0644"
"""


def _ansible_playbook(tmp_path, playbook, *args, **kwargs):
    path = tmp_path / "play.yml"
    path.write_text(playbook)
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\n")
    env = dict(os.environ, HOME=str(home), ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_ROOT, ANSIBLE_NOCOLOR="1",
               ANSIBLE_HOME=str(home / ".ansible"), ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_CONFIG=str(config))
    # The interpreter running the tests has ansible-core; its CLI needs no ansible-playbook on PATH.
    argv = [sys.executable, "-m", "ansible.cli.playbook", "-i", kwargs.get("inventory", "localhost,"), str(path)]
    proc = subprocess.run(argv + list(args), cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=300, check=False)
    return proc, home


def test_action_plugin_writes_records_on_the_controller(tmp_path):
    results = tmp_path / "results.json"
    proc, home = _ansible_playbook(tmp_path, PLAYBOOK, "-e", "results=%s" % results)
    assert proc.returncode == 0, proc.stdout
    with open(str(results)) as handle:
        got = json.load(handle)
    run_dir = str(home / "artifacts" / "r3")
    # run_dir is type=path: "~" is expanded on the controller.
    assert got["started"]["json_path"] == os.path.join(run_dir, "report.json")
    with open(os.path.join(run_dir, "hosts", "localhost", "outcome.json")) as handle:
        written = json.load(handle)
    assert written.pop("recorded_at").endswith("Z")
    assert written == {"result": "on_c", "envelope_ok": False, "reason": "envelope exceeded"}
    with open(os.path.join(run_dir, "report.json")) as handle:
        report = json.load(handle)
    assert report["run_id"] == "r3" and report["playbook"] == "drill"
    assert report["hosts"]["localhost"]["reason"] == "envelope exceeded"
    # Running until the final task; then derived from the hosts.
    assert got["started"]["result"] == got["recorded"]["result"] == "running"
    assert report["result"] == "failed" == got["finished"]["result"]
    # The record task wrote its record: changed, as a write of any file is.
    assert got["finished"]["report"] == report and got["recorded"]["changed"] is True
    with open(os.path.join(run_dir, "report.md")) as handle:
        assert "| localhost | - | - | on_c |" in handle.read()
    # check mode: reported, not written
    assert not os.path.exists(os.path.join(run_dir, "hosts", "localhost", "flip.json"))
    assert "flip" not in got["dry"]["report"]["hosts"]["localhost"]["stages"]
    assert got["bad_stage"]["failed"] is True
    assert "value of stage must be one of: freeze, stage, prewarm" in got["bad_stage"]["msg"]
    assert "got: nonsense" in got["bad_stage"]["msg"]
    assert not os.path.exists(os.path.join(run_dir, "hosts", "localhost", "nonsense.json"))
    assert got["no_host"]["failed"] is True
    assert got["no_host"]["msg"] == "missing parameter(s) required by 'record': host"


def test_action_plugin_fails_with_the_run_dir_without_run_facts(tmp_path):
    playbook = """
- name: Record before the run started
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Record a flip
      mtproxy.cutover.mtproxy_report:
        run_dir: "{{ playbook_dir }}/never-started"
        host: h1
        stage: flip
        record: {role: canary}
"""
    proc = _ansible_playbook(tmp_path, playbook)[0]
    assert proc.returncode == 2, proc.stdout
    assert "no run facts in %s: pass run= once when the run starts" % (tmp_path / "never-started") in proc.stdout


def test_action_plugin_never_connects_to_the_host(tmp_path):
    # A proxy host that cannot be reached: the record is still written, on the controller.
    playbook = """
- name: Record for a host that is not reachable
  hosts: all
  gather_facts: false
  vars:
    ansible_connection: ssh
    ansible_host: 192.0.2.1
  tasks:
    - name: Start the run
      mtproxy.cutover.mtproxy_report:
        run_dir: "{{ playbook_dir }}/run"
        run: {run_id: r4, playbook: rollback, expected_hosts: "{{ ansible_play_hosts_all }}"}
      run_once: true

    - name: Record the rollback
      mtproxy.cutover.mtproxy_report:
        run_dir: "{{ playbook_dir }}/run"
        host: "{{ inventory_hostname }}"
        stage: outcome
        record: {result: rolled_back}

    - name: Finish the run
      mtproxy.cutover.mtproxy_report:
        run_dir: "{{ playbook_dir }}/run"
        final: true
      run_once: true
"""
    proc = _ansible_playbook(tmp_path, playbook, "-T", "3", inventory="proxy-1,proxy-2,")[0]
    assert proc.returncode == 0, proc.stdout
    with open(str(tmp_path / "run" / "report.json")) as handle:
        report = json.load(handle)
    assert sorted(report["hosts"]) == ["proxy-1", "proxy-2"]
    assert report["summary"]["rolled_back"] == 2 and report["result"] == "success"


def test_atomic_write_when_another_worker_creates_the_directory_first(tmp_path, monkeypatch):
    # Two hosts rolled back at once write their incident notes into the same new directory.
    target = tmp_path / "run" / "incidents" / "h1.md"
    real_makedirs = os.makedirs

    def racing_makedirs(path, *args, **kwargs):
        real_makedirs(path)
        raise FileExistsError(17, "File exists", path)

    monkeypatch.setattr(rep.os, "makedirs", racing_makedirs)
    rep.atomic_write(str(target), "note\n")
    assert target.read_text() == "note\n"


def test_report_keeps_the_bridge_figures_of_flip_and_rollback():
    bridge = {"mode": "bridge", "refused": 0, "served": 12, "dropped": 3, "diverted_ms": 90.0, "drain_ms": 120.0,
              "drained": True, "cut_at_drain": 0}
    entry = rep.summarize_host({"flip": {"bridge": bridge, "timings": {}},
                                "rollback": {"bridge": dict(bridge), "timings": {}}})
    assert entry["bridge"] == bridge and entry["rollback_bridge"] == bridge
    assert rep.summarize_host({"flip": {"timings": {}}})["bridge"] is None


def test_report_md_has_a_row_per_bridge_handover(tmp_path):
    run_dir = _run(tmp_path, expected=("h1", "h2"))
    bridge = {"mode": "bridge", "refused": 0, "served": 12, "dropped": 3, "diverted_ms": 90.5, "drain_ms": 120.25,
              "drained": True, "cut_at_drain": 0}
    rep.write_record(run_dir, "h1", "flip", dict(FLIP, bridge=bridge))
    rep.write_record(run_dir, "h1", "rollback", {"ok": True, "binary": "/opt/MTProxy/mtproto-proxy", "timings": {},
                                                 "bridge": dict(bridge, drained=False, cut_at_drain=2)})
    rep.write_record(run_dir, "h2", "flip", FLIP)
    markdown = rf.render_markdown(_report(run_dir))
    section = markdown.split("## Bridge handovers", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| h1 ") or line.startswith("| h2 ")]
    assert rows == ["| h1 | flip | 0 | 12 | 3 | 90.50 | 120.2 |", "| h1 | rollback | 0 | 12 | 3 | 90.50 | 120.2 (2 cut) |"]
    rep.write_record(run_dir, "h1", "flip", FLIP)
    rep.write_record(run_dir, "h1", "rollback", {"ok": True, "binary": "/opt/MTProxy/mtproto-proxy", "timings": {}})
    assert "## Bridge handovers" not in rf.render_markdown(_report(run_dir))


def test_report_md_says_what_go_runs_as_against_c(tmp_path):
    run_dir = _run(tmp_path, expected=("h1", "h2", "h3"))
    kept = {"verdict": "same", "refused": False, "mode": "service", "granted": ["CAP_NET_BIND_SERVICE"],
            "go": "uid 65534 (nobody), gid 65534 (nogroup), groups 65534 (nogroup), CAP_NET_BIND_SERVICE",
            "c": "uid 65534 (nobody), gid 65534 (nogroup), groups 65534 (nogroup), no capability"}
    rep.write_record(run_dir, "h1", "prewarm", {"ready_ms": 20.0, "privileges": dict(kept)})
    rep.write_record(run_dir, "h1", "flip", dict(FLIP, privileges=kept))
    rep.write_record(run_dir, "h2", "prewarm", {"ready_ms": 20.0, "privileges": dict(
        kept, verdict="more", refused=True, mode="binary", granted=[], go="uid 0 (root), gid 0 (root)")})
    rep.write_record(run_dir, "h3", "flip", dict(FLIP, privileges=None))
    markdown = rf.render_markdown(_report(run_dir))
    section = markdown.split("## Privileges of Go against C", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("- ")]
    assert lines == [
        "- h1: same (service): Go %s; C %s, granted CAP_NET_BIND_SERVICE" % (kept["go"], kept["c"]),
        "- h2: more (refused) (binary): Go uid 0 (root), gid 0 (root); C %s" % kept["c"]]
    rep.write_record(run_dir, "h1", "flip", FLIP)
    rep.write_record(run_dir, "h1", "prewarm", {"ready_ms": 20.0})
    rep.write_record(run_dir, "h2", "prewarm", {"ready_ms": 20.0})
    assert "## Privileges" not in rf.render_markdown(_report(run_dir))


def test_report_md_lists_the_exit_semantics_differences_of_each_canary(tmp_path):
    run_dir = _run(tmp_path, expected=("h1", "h2", "h3"))
    rep.write_record(run_dir, "h1", "prewarm", {"exit_semantics": {
        "verdict": "warn", "cases": [], "refusals": [], "warnings_found": ["on a busy stats port, C ends", "on a dir"]}})
    rep.write_record(run_dir, "h2", "prewarm", {"exit_semantics": {
        "verdict": "refuse", "cases": [], "refusals": ["on SIGTERM, C ends clean"], "warnings_found": []}})
    rep.write_record(run_dir, "h3", "prewarm", {"exit_semantics": {"verdict": "not_checked", "reason": "a container"}})
    section = rf.render_markdown(_report(run_dir)).split("## Exit semantics of Go against C", 1)[1].split("\n## ")[0]
    assert [line for line in section.splitlines() if line.lstrip().startswith("- ")] == [
        "- h1: warn", "  - on a busy stats port, C ends", "  - on a dir", "- h2: refuse", "  - on SIGTERM, C ends clean",
        "- h3: not_checked: a container"]


# --- results read from the hosts: what each host runs at the end of the run, against the run's intent ---

def _info(running, reason=None, **extra):
    """A registered mtproxy_info result."""
    return dict({"changed": False, "running": running, "method": "dropin", "binary": "/opt/x", "main_pid": 7,
                 "argv_matches": running != "unknown", "stats_flavor": running if running != "unknown" else None,
                 "stats_skipped": None, "recorded": None, "frozen": True, "reason": reason}, **extra)


def _proven(run_dir, **proofs):
    rf.apply(_params(run_dir, proofs=proofs, final=True))
    return _report(run_dir)


FROZEN_C = {"current": "c", "binary": "/opt/MTProxy/mtproto-proxy"}
FROZEN_GO = {"current": "go", "binary": "/opt/MTProxy/releases/go-x/mtproto-proxy-go"}


def test_a_refused_flip_fails_the_cutover_with_the_host_proven_on_c(tmp_path):
    # exec-at-prefix: the flip is refused, the rescue's rollback changes nothing, the host is on C.
    run_dir = _run(tmp_path, expected=("h1",), finished=False)
    rep.write_record(run_dir, "h1", "freeze", FROZEN_C)
    rep.write_mark(run_dir, "h1", {"start": "flip"})
    rep.write_record(run_dir, "h1", "rollback", {"ok": True, "changed": False, "reason": "ExecStart uses the \"@\" prefix"})
    rep.write_record(run_dir, "h1", "outcome", {"result": "on_c", "reason": "ExecStart uses the \"@\" prefix"})
    report = _proven(run_dir, h1=_info("c"))
    entry = report["hosts"]["h1"]
    assert (entry["result"], entry["running"], entry["intended"], entry["proven"]) == ("on_c", "c", "c", True)
    assert report["result"] == "failed" and "left on C: h1" in report["problems"]
    assert entry["reason"] == "ExecStart uses the \"@\" prefix" and entry["attention"] is True


def test_a_host_already_on_go_whose_freeze_was_refused_is_on_go(tmp_path):
    # daily-config-refresh re-run: the freeze refuses (drift) on a host that runs Go since an earlier run.
    run_dir = _run(tmp_path, expected=("h1", "h2"), finished=False)
    rep.write_record(run_dir, "h1", "outcome", {"reason": "freeze: drifted from the frozen manifest: files[config]"})
    rep.write_record(run_dir, "h2", "freeze", FROZEN_C)
    rf.apply(_params(run_dir, result="failed", reason="h1: freeze: drifted"))
    report = _proven(run_dir, h1=_info("go"), h2=_info("c"))
    assert report["hosts"]["h1"]["result"] == "on_go" and report["hosts"]["h1"]["flavor"] == "go"
    assert "drifted" in report["hosts"]["h1"]["reason"]
    assert report["hosts"]["h2"]["result"] == "on_c"
    assert report["result"] == "failed" and report["reason"].startswith("h1: freeze: drifted")


def test_a_drifted_host_refused_before_any_change_is_on_c_with_the_refusal(tmp_path):
    # config_drift: whatever the records left (here none but the stop), the host proven on C is on_c.
    run_dir = _run(tmp_path, expected=("h1", "h2"), finished=False)
    rep.write_record(run_dir, "h2", "outcome", {"reason": "freeze: drifted ...: files[config] (/opt/MTProxy/proxy-multi.conf)"})
    rep.write_record(run_dir, "h1", "freeze", FROZEN_C)
    rf.apply(_params(run_dir, result="failed", reason="h2: freeze: drifted"))
    report = _proven(run_dir, h1=_info("c"), h2=_info("c"))
    assert report["hosts"]["h2"]["result"] == "on_c" and "proxy-multi.conf" in report["hosts"]["h2"]["reason"]
    assert report["result"] == "failed"


@pytest.mark.parametrize("records, running, result, reason", [
    # Kept on Go, but C runs now: the proof contradicts the intent.
    ({"flip": FLIP, "outcome": ON_GO}, "c", "failed", "runs C, but the run kept it on Go"),
    # Rolled back, but Go runs now.
    ({"flip": FLIP, "rollback": {"ok": True, "changed": True}, "outcome": {"result": "rolled_back", "reason": "x"}},
     "go", "failed", "runs Go, but the run rolled it back to C"),
    # Never flipped by this run, C at the freeze, Go now.
    ({"freeze": FROZEN_C}, "go", "failed", "runs Go, but the run did not flip it, and it ran C at the freeze"),
    # Flipped and never judged (the run died in its window), Go proven: on Go, still never judged.
    ({"flip": FLIP}, "go", "on_go", "flipped to Go but never judged"),
    # Cannot be proven.
    ({"flip": FLIP, "outcome": ON_GO}, "unknown", "unknown", "what it runs cannot be proven: the unit is not active"),
])
def test_the_proof_is_set_against_the_intent(tmp_path, records, running, result, reason):
    run_dir = _run(tmp_path, finished=False)
    for stage, record in records.items():
        rep.write_record(run_dir, "h1", stage, record)
    report = _proven(run_dir, h1=_info(running, "the unit is not active" if running == "unknown" else None))
    entry = report["hosts"]["h1"]
    assert (entry["result"], entry["reason"].split("; ")[0]) == (result, reason), entry["reason"]
    assert report["result"] == ("success" if result == "on_go" and "never" not in reason else "failed")


def test_a_host_on_go_is_never_on_c(tmp_path):
    # Whatever the records say (here a prepared host frozen on C), a host proven on Go is not on_c.
    run_dir = _run(tmp_path, finished=False, settings={"stop_after": "freeze"})
    rep.write_record(run_dir, "h1", "freeze", FROZEN_C)
    rep.write_record(run_dir, "h1", "outcome", {"result": "on_c", "reason": "prepared"})
    report = _proven(run_dir, h1=_info("go"))
    assert report["hosts"]["h1"]["result"] == "failed" and report["hosts"]["h1"]["running"] == "go"


def test_a_prepared_run_judges_each_host_by_what_it_runs(tmp_path):
    run_dir = _run(tmp_path, expected=("h1", "h2"), finished=False, settings={"stop_after": "stage"})
    rep.write_record(run_dir, "h1", "freeze", FROZEN_C)
    rep.write_record(run_dir, "h2", "freeze", FROZEN_GO)
    report = _proven(run_dir, h1=_info("c"), h2=_info("go"))
    assert {h: (e["result"], e["judged"]) for h, e in report["hosts"].items()} == {
        "h1": ("on_c", True), "h2": ("on_go", True)}
    assert report["hosts"]["h1"]["reason"] == "prepared: stopped after the stage as asked, nothing flipped"
    assert report["result"] == "success", report["problems"]


def test_unreachable_at_the_end_and_a_failed_step_keep_their_results(tmp_path):
    run_dir = _run(tmp_path, expected=("h1", "h2", "h3"), playbook="rollback", finished=False)
    rep.write_record(run_dir, "h1", "rollback", {"ok": True, "changed": True, "reason": "requested"})
    rep.write_record(run_dir, "h2", "outcome", {"result": "failed", "reason": "rollback failed (no manifest)"})
    rep.write_record(run_dir, "h3", "rollback", {"ok": True, "changed": True})
    gone = {"unreachable": True, "msg": "Failed to connect to the host via ssh"}
    docker_gone = {"failed": True, "msg": "MODULE FAILURE", "module_stderr": "Error: No such container: h3"}
    report = _proven(run_dir, h1=_info("c"), h2=_info("unknown", "never frozen"), h3=docker_gone)
    results = {h: e["result"] for h, e in report["hosts"].items()}
    assert results == {"h1": "rolled_back", "h2": "failed", "h3": "unreachable"}
    assert report["hosts"]["h3"]["reason"].startswith("went away during the run: does not answer: Error: No such container")
    assert rep.proof_record(gone) == {"reachable": False, "running": "unknown",
                                      "reason": "does not answer: unreachable: Failed to connect to the host via ssh"}
    assert rep.proof_record({"skipped": True}) is None and rep.proof_record(None) is None
    assert rep.proof_record({"failed": True, "msg": "timeout must be more"})["reason"] == \
        "mtproxy_info failed: timeout must be more"


def test_a_drill_that_leaves_its_host_on_go_fails(tmp_path):
    run_dir = _run(tmp_path, playbook="drill", finished=False)
    rep.write_record(run_dir, "h1", "outcome", {"result": "on_c", "envelope_ok": True, "reason": ""})
    report = _proven(run_dir, h1=_info("go"))
    assert report["hosts"]["h1"]["result"] == "failed" and report["result"] == "failed"


def test_proofs_are_written_as_records_and_the_task_says_it_changed_something(tmp_path):
    run_dir = _run(tmp_path, finished=False)
    result = rf.apply(_params(run_dir, proofs={"h1": _info("c"), "h2": {"skipped": True}}, final=True))
    assert result["changed"] is True
    with open(os.path.join(run_dir, "hosts", "h1", "proof.json")) as handle:
        proof = json.load(handle)
    assert proof["running"] == "c" and proof["reachable"] is True and "changed" not in proof
    assert not os.path.exists(os.path.join(run_dir, "hosts", "h2"))


def test_a_run_under_ansible_runner_warns_when_its_reports_would_go_with_the_job(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    inside, outside = str(project / "artifacts" / "r1"), str(tmp_path / "kept" / "r1")
    runner = {rf.RUNNER_ENV: "/runner/artifacts/7"}
    assert "inside the job's project directory" in rf.runner_warning(inside, runner, str(project))
    assert rf.runner_warning(outside, runner, str(project)) is None
    assert rf.runner_warning(inside, {}, str(project)) is None
    monkeypatch.chdir(str(project))
    monkeypatch.setenv(rf.RUNNER_ENV, "/runner/artifacts/7")
    started = rf.apply(_params("artifacts/r2", run=RUN))
    assert started["warnings"] == [rf.runner_warning(os.path.abspath("artifacts/r2"))]
    assert "warnings" not in rf.apply(_params("artifacts/r2", host="h1", stage="flip", record=FLIP))


def test_a_host_another_run_holds_is_locked_never_a_verdict_and_the_markdown_says_so(tmp_path):
    run_dir = _run(tmp_path, playbook="rollback", expected=("h1", "h2"), finished=False)
    rep.write_record(run_dir, "h1", "rollback", {"ok": True, "changed": True, "reason": "requested"})
    rep.write_record(run_dir, "h1", "lock", {"broken": "its lease ran out at 2026-12-06T10:00:00Z", "taken_over_from": None,
                                             "previous": {"run_id": "cutover-old"}})
    rep.write_record(run_dir, "h2", "outcome", {"result": "locked",
                                                "reason": "MTProxy is locked by run cutover-7 (cutover from op@ctl-a)"})
    # h2 runs Go (the other run flipped it): the report says what it runs, and that it was left alone.
    report = _proven(run_dir, h1=_info("c"), h2=_info("go"))
    h1, h2 = report["hosts"]["h1"], report["hosts"]["h2"]
    assert (h2["result"], h2["judged"], h2["running"], h2["attention"]) == ("locked", False, "go", True)
    assert "locked by run cutover-7" in h2["reason"]
    assert (h1["result"], h1["lock"]["previous"]["run_id"]) == ("rolled_back", "cutover-old")
    assert report["result"] == "failed" and report["reason"] == "held by another run: h2"
    assert report["summary"]["locked"] == 1
    with open(os.path.join(run_dir, "report.md")) as handle:
        markdown = handle.read()
    assert "held by another run 1" in markdown and "- h2 locked: MTProxy is locked by run cutover-7" in markdown
    assert "- h1: broke the lock of run cutover-old: its lease ran out at 2026-12-06T10:00:00Z" in markdown


def test_a_takeover_is_in_the_report_of_the_run_that_took_the_host(tmp_path):
    run_dir = _run(tmp_path, playbook="rollback", finished=False)
    taken = {"run_id": "cutover-7", "playbook": "cutover", "user": "op", "controller": "ctl-a",
             "taken_at": "2026-12-06T10:00:00Z"}
    rep.write_record(run_dir, "h1", "rollback", {"ok": True, "changed": True, "reason": "requested"})
    rep.write_record(run_dir, "h1", "lock", {"broken": None, "previous": taken, "taken_over_from": taken})
    report = _proven(run_dir, h1=_info("c"))
    assert report["result"] == "success" and report["hosts"]["h1"]["lock"]["taken_over_from"]["run_id"] == "cutover-7"
    with open(os.path.join(run_dir, "report.md")) as handle:
        assert ("- h1: taken over from run cutover-7 (cutover from op@ctl-a, since 2026-12-06T10:00:00Z): that run "
                "changes nothing more on it") in handle.read()
