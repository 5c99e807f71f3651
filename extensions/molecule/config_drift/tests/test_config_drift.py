"""The backend config changes after the freeze: the next run refuses and flips nothing."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared"))
import cutover_checks as cc  # noqa: E402

DRIFTED = "config_drift-h2"


def test_freeze_run_prepared_without_flipping():
    report = cc.load_report(cc.first_run_id())
    assert report["result"] == "success"
    assert all(entry["result"] == "on_c" for entry in report["hosts"].values())


def test_drift_run_refused_naming_host_and_file():
    run = cc.playbook_run("drift")
    assert run["rc"] == 2
    report = cc.load_report("config_drift-drift")
    assert report["result"] == "failed"
    assert report["hosts"][DRIFTED]["result"] == "on_c"
    assert "proxy-multi.conf" in report["hosts"][DRIFTED]["reason"]
    assert DRIFTED in run["stdout"] + run["stderr"]
    # The run's reason is the drifted host's, and no other host claims a failed freeze of its own
    # (ansible-core 2.17+ runs the rescue of every host of the play when one fails).
    assert report["reason"].startswith(DRIFTED + ": freeze: ") and "proxy-multi.conf" in report["reason"]
    others = dict((name, entry) for name, entry in report["hosts"].items() if name != DRIFTED)
    assert others and all(entry["result"] == "on_c" for entry in others.values())
    assert not any("freeze: failed" in (entry.get("reason") or "") for entry in others.values())


def test_nothing_flipped(host):
    assert cc.service_argv(host) == cc.pristine_argv(host)
    assert not host.file(cc.DROPIN).exists
    assert cc.host_state(host) is None or cc.host_state(host)["current"] == "c"
    assert cc.vendor_unit_unchanged(host)


def test_check_mode_showed_the_dropin_without_secrets(host):
    run = cc.playbook_run("check")
    assert run["rc"] == 0
    assert "99-mtproxy-cutover.conf" in run["stdout"]
    assert "ExecStart=/opt/MTProxy/releases/go-" in run["stdout"]
    assert cc.leaked_secrets(host, {"check run output": run["stdout"]}) == []
