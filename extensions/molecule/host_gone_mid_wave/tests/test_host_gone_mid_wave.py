"""A wave host goes away mid-window: unreachable, never success; the waves stop; the Report play runs.

Serial [2, '100%'] over h2..h4: h2 and h3 are wave 1 (h3's container is killed 1.5 s into its
observation window by its after-flip hook), h4 is wave 2 and must never be flipped. Only
controller-side checks here: h3's container is gone, so no test takes the testinfra `host`.
"""

import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared"))
import cutover_checks as cc  # noqa: E402

H1, H2, H3, H4 = ("host_gone_mid_wave-h%d" % n for n in (1, 2, 3, 4))
LIMIT_RUN = "host_gone_mid_wave-limit"


def test_gone_host_is_unreachable_and_the_run_fails():
    run = cc.playbook_run()
    assert run["rc"] == 2, run["stdout_tail"]
    report = cc.load_report()
    assert report["result"] == "failed", "\n".join(run["stdout_tail"]) + run["stderr"][-6000:]
    assert {name: entry["result"] for name, entry in report["hosts"].items()} == {
        H1: "on_go", H2: "on_go", H3: "unreachable", H4: "on_c"}
    gone = report["hosts"][H3]
    assert gone["judged"] is False
    assert gone["reason"].startswith("went away"), gone["reason"]
    assert "unreachable: %s" % H3 in report["problems"]


def test_the_next_wave_never_started():
    report = cc.load_report()
    untouched = report["hosts"][H4]
    assert "flip" not in untouched["stages"]
    assert untouched["judged"] is False
    assert any(p.startswith("never judged:") and H4 in p for p in report["problems"]), report["problems"]


def test_the_report_play_ran_and_drew_the_timeline():
    report = cc.load_report()
    # Finished by the Report play, not left "running" nor marked "incomplete" by the watcher.
    assert report["finished_at"] and report["result"] == "failed"
    assert report["expected_hosts"] == sorted([H1, H2, H3, H4])
    steps = {name: [s["step"] for s in entry["spans"]] for name, entry in report["hosts"].items()}
    assert "observe" in steps[H2] and "flip" in steps[H2] and "freeze" in steps[H2]
    # The after-flip hook of h3 ran between its flip and its observation.
    assert "hook" in steps[H3]
    assert all(s["finished_at"] for s in report["hosts"][H3]["spans"]), report["hosts"][H3]["spans"]
    markdown = cc.report_texts()["report.md"]
    assert "](timeline.svg)" in markdown
    with open(cc.report_path(cc.first_run_id(), "timeline.svg")) as handle:
        svg = handle.read()
    assert svg.startswith("<svg") and H3 in svg


def test_limit_rollback_writes_its_report_and_incident_note():
    run = cc.playbook_run("limit")
    assert run["rc"] == 0, run["stdout_tail"]
    report = cc.load_report(LIMIT_RUN)
    assert report["expected_hosts"] == [H2]
    assert report["result"] == "success"
    assert report["hosts"][H2]["result"] == "rolled_back"
    note = cc.incident_note(LIMIT_RUN, H2)
    assert note is not None and "requested by rollback.yml" in note
    assert os.path.isfile(cc.report_path(LIMIT_RUN, "report.md"))
