"""Default serial [1, '25%', '100%'] over h2..h4: h2 is wave 1, h3 (crashing) wave 2, h4 wave 3."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared"))
import cutover_checks as cc  # noqa: E402

CRASHING = "crash_mid_wave-h3"
EXPECTED = {
    "crash_mid_wave-h1": "on_go",
    "crash_mid_wave-h2": "on_go",
    CRASHING: "rolled_back",
    "crash_mid_wave-h4": "on_c",
}


def test_crash_rolls_back_the_host_and_stops_the_waves():
    run = cc.playbook_run()
    assert run["rc"] == 2
    report = cc.load_report()
    assert {name: entry["result"] for name, entry in report["hosts"].items()} == EXPECTED, {
        name: (entry.get("verdict"), entry.get("reason")) for name, entry in report["hosts"].items()}
    crashed = report["hosts"][CRASHING]
    # Where the crash lands in the window decides how it shows: failed counters, too few /stats
    # answers to judge (inconclusive fails by policy), or a start that never came up.
    assert (crashed["verdict"] == "fail" or "did not come up" in crashed["reason"]
            or (crashed["verdict"] == "inconclusive" and "successful scrapes" in crashed["reason"])), crashed
    assert "flip" not in report["hosts"]["crash_mid_wave-h4"]["stages"]
    assert cc.incident_note(cc.first_run_id(), CRASHING) is not None


def test_fleet_scope_rolls_back_the_earlier_hosts_too():
    assert cc.playbook_run("fleet")["rc"] == 2
    report = cc.load_report("crash_mid_wave-fleet")
    results = {name: entry["result"] for name, entry in report["hosts"].items()}
    assert results == {
        "crash_mid_wave-h1": "rolled_back",
        "crash_mid_wave-h2": "rolled_back",
        CRASHING: "rolled_back",
        "crash_mid_wave-h4": "on_c",
    }, {name: (entry.get("verdict"), entry.get("reason")) for name, entry in report["hosts"].items()}
    assert "fleet rollback" in report["hosts"]["crash_mid_wave-h1"]["reason"]


def test_the_kills_came_from_outside_the_binary(host):
    # mtproxy-testkiller.service runs on the crashing host only and killed its Go processes there.
    killer = cc.environment_faults(host)["killer"]
    if host.backend.get_hostname() == CRASHING:
        assert killer is not None and killer["kills"] >= 1 and killer["binary_name"] == "mtproto-proxy-go", killer
    else:
        assert killer is None


def test_every_host_ends_on_c_with_its_original_argv(host):
    assert cc.service_argv(host) == cc.pristine_argv(host)
    assert not host.file(cc.DROPIN).exists
