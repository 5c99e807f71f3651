"""Default serial [1, '25%', '100%'] over h2..h4: h2 is wave 1, h3 (crashing) wave 2, h4 wave 3."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared"))
import cutover_checks as cc  # noqa: E402

EXPECTED = {
    "crash_mid_wave-h1": "on_go",
    "crash_mid_wave-h2": "on_go",
    "crash_mid_wave-h3": "rolled_back",
    "crash_mid_wave-h4": "on_c",
}


def test_report_results():
    assert cc.playbook_run()["rc"] == 2
    report = cc.load_report()
    assert {name: entry["result"] for name, entry in report["hosts"].items()} == EXPECTED


def test_host_runs_what_the_report_says(host):
    name = host.backend.get_hostname()
    argv = cc.service_argv(host)
    if EXPECTED[name] == "on_go":
        assert argv[0] == cc.go_release_path(cc.staged_go()[1])
        assert argv[1:] == cc.pristine_argv(host)[1:]
    else:
        assert argv == cc.pristine_argv(host)
