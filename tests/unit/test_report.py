import json
import os

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils import report as rep


def _run(tmp_path, playbook="cutover"):
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    rep.write_run(run_dir, {"run_id": "r1", "playbook": playbook, "started_at": "t0", "go": {"sha256": "ab" * 32}})
    return run_dir


FLIP = {"role": "canary", "wave": 0, "binary": "/opt/MTProxy/releases/go-x/mtproto-proxy-go",
        "timings": {"stop_ms": 5.0, "start_ms": 14.2, "unavailable_ms": 19.2}}


def test_successful_cutover_lists_every_host_on_go(tmp_path):
    run_dir = _run(tmp_path)
    for host in ("h1", "h2"):
        rep.write_record(run_dir, host, "flip", FLIP)
        rep.write_record(run_dir, host, "verify", {"verdict": "pass", "failures": []})
        rep.write_record(run_dir, host, "outcome", {"result": "on_go"})
    report = rep.build_report(run_dir, "r1", "cutover")
    assert report["result"] == "success"
    assert report["summary"]["on_go"] == 2
    assert report["hosts"]["h1"]["timings"] == FLIP["timings"]
    assert report["hosts"]["h1"]["flavor"] == "go"


def test_rolled_back_host_fails_the_cutover_and_shows_metric(tmp_path):
    run_dir = _run(tmp_path)
    rep.write_record(run_dir, "h1", "flip", FLIP)
    failure = {"metric": "bad_handshakes", "observed": 12.5, "limit": 1.0, "rule": "rate above limit"}
    rep.write_record(run_dir, "h1", "verify", {"verdict": "fail", "failures": [failure]})
    rep.write_record(run_dir, "h1", "rollback", {"ok": True, "binary": "/opt/MTProxy/mtproto-proxy",
                                                 "timings": {"stop_ms": 2000.0, "start_ms": 12.0, "unavailable_ms": 40.0}})
    rep.write_record(run_dir, "h1", "outcome", {"result": "rolled_back", "reason": "SLO fail"})
    report = rep.build_report(run_dir, "r1", "cutover")
    assert report["result"] == "failed"
    host = report["hosts"]["h1"]
    assert host["result"] == "rolled_back" and host["flavor"] == "c"
    assert host["binary"] == "/opt/MTProxy/mtproto-proxy"
    markdown = rep.render_markdown(report)
    assert "bad_handshakes" in markdown and "rolled_back" in markdown


def test_rollback_playbook_succeeds_when_every_host_is_on_c(tmp_path):
    run_dir = _run(tmp_path, "rollback")
    rep.write_record(run_dir, "h1", "outcome", {"result": "rolled_back"})
    rep.write_record(run_dir, "h2", "outcome", {"result": "on_c"})
    assert rep.build_report(run_dir, "r1", "rollback")["result"] == "success"
    rep.write_record(run_dir, "h3", "outcome", {"result": "failed", "reason": "argv differs"})
    assert rep.build_report(run_dir, "r1", "rollback")["result"] == "failed"


def test_drill_fails_when_envelope_exceeded(tmp_path):
    run_dir = _run(tmp_path, "drill")
    rep.write_record(run_dir, "h1", "outcome", {"result": "on_c", "envelope_ok": True})
    assert rep.build_report(run_dir, "r1", "drill")["result"] == "success"
    rep.write_record(run_dir, "h1", "outcome", {"result": "on_c", "envelope_ok": False})
    assert rep.build_report(run_dir, "r1", "drill")["result"] == "failed"


def test_write_report_writes_both_files(tmp_path):
    run_dir = _run(tmp_path)
    rep.write_record(run_dir, "h1", "flip", FLIP)
    report = rep.build_report(run_dir, "r1", "cutover", reason=None)
    json_path, md_path = rep.write_report(report, run_dir)
    with open(json_path) as handle:
        assert json.load(handle)["hosts"]["h1"]["role"] == "canary"
    with open(md_path) as handle:
        text = handle.read()
    assert "| h1 | canary | 0 | on_go |" in text


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
        rep.build_report(run_dir, "r1", "cutover")
