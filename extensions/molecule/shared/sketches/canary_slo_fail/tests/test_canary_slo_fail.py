"""A canary that breaks its SLO on Go is rolled back with a failing verdict; waves never start."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared"))
import cutover_checks as cc  # noqa: E402


def test_canary_judged_and_rolled_back():
    assert cc.playbook_run()["rc"] == 2
    canary = cc.load_report()["hosts"]["canary_slo_fail-h1"]
    assert canary["result"] == "rolled_back"
    assert canary["verdict"] == "fail"
    assert canary["failures"]


def test_every_host_runs_c(host):
    assert cc.service_argv(host) == cc.pristine_argv(host)
