"""An incompatible Go binary: the canary ends on C, the waves never start."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared"))
import cutover_checks as cc  # noqa: E402


def test_run_failed_and_canary_rolled_back():
    assert cc.playbook_run()["rc"] == 2
    report = cc.load_report()
    assert report["result"] == "failed"
    # Seen in a first run: the pre-warm on the canary already rejects the binary, so the canary is
    # never flipped ("on_c"); a flip that fails to start would give "rolled_back".
    assert report["hosts"]["incompatible_binary-h1"]["result"] in ("on_c", "rolled_back")
    for name in ("incompatible_binary-h2", "incompatible_binary-h3"):
        assert report["hosts"][name]["result"] == "on_c"
        assert "flip" not in report["hosts"][name]["stages"]
    # The binary's own words are quoted, in the run's reason too: the canary's pre-warm stopped the run,
    # and no other host claims a failed stage of its own (ansible-core 2.17+ runs the rescue of every
    # host of the play when one fails).
    assert "flag provided but not defined: -p" in cc.report_texts()["report.json"]
    assert report["reason"].startswith("incompatible_binary-h1: stage: ")
    assert not any("stage: failed" in (report["hosts"][name].get("reason") or "")
                   for name in ("incompatible_binary-h2", "incompatible_binary-h3"))


def test_every_host_runs_c_again(host):
    assert cc.service_argv(host) == cc.pristine_argv(host)
    assert cc.vendor_unit_unchanged(host)
