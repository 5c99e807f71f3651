"""After cutover + rollback.yml every host runs the C binary with its original argv again."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared"))
import cutover_checks as cc  # noqa: E402


def test_service_runs_the_original_c_argv(host):
    assert cc.service_argv(host) == cc.pristine_argv(host)


def test_dropin_gone_and_incident_note_written(host):
    assert not host.file(cc.DROPIN).exists
    note = cc.incident_note("%s-rollback" % cc.scenario_name(), host.backend.get_hostname())
    assert note is not None and "argv identical to the freeze: True" in note


def test_state_says_c_and_release_is_kept(host):
    assert cc.host_state(host)["current"] == "c"
    assert host.file(cc.go_release_path(cc.staged_go()[1])).is_file
    assert cc.vendor_unit_unchanged(host)


def test_rollback_report(host):
    run_id = "%s-rollback" % cc.scenario_name()
    report = cc.load_report(run_id)
    assert report["result"] == "success"
    assert report["hosts"][host.backend.get_hostname()]["result"] in ("rolled_back", "on_c")
    assert cc.leaked_secrets(host, cc.report_texts(run_id)) == []


def test_drill_switched_twice_within_the_envelope():
    report = cc.load_report("%s-drill" % cc.scenario_name())
    assert report["result"] == "success", report.get("reason")
    canary = report["hosts"]["rollback-h1"]
    outcome = canary["stages"]["outcome"]
    assert outcome["envelope_ok"] is True
    envelope = outcome["envelope"]
    for key in ("go_start_ms", "c_start_ms"):
        assert float(envelope[key]) <= float(envelope["limit_start_ms"])
    assert canary["stages"]["flip"]["timings"]["unavailable_ms"] > 0
    assert canary["stages"]["rollback"]["argv_matches"] is True
