"""Drift between the frozen manifest and the host stops a later run; the fleet stays as it was."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared"))
import cutover_checks as cc  # noqa: E402


def test_drift_run_failed_and_names_the_file():
    assert cc.playbook_run("drift")["rc"] == 2
    report = cc.load_report("config_drift-drift")
    assert report["result"] == "failed"
    assert "proxy-multi.conf" in cc.report_texts("config_drift-drift")["report.json"]


def test_fleet_still_on_go(host):
    argv = cc.service_argv(host)
    assert argv[0] == cc.go_release_path(cc.staged_go()[1])
    assert cc.host_state(host)["current"] == "go"
