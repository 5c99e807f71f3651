"""method=symlink: cutover by swapping the link, a second cutover that changes nothing, then
rollback.yml without mtproxy_cutover_method puts the link back at the C release (read from state.json).
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared"))
import cutover_checks as cc  # noqa: E402

C_RELEASE = "/opt/MTProxy/releases/c-standin/mtproto-proxy"


def go_release_suffix():
    return "/releases/go-%s/mtproto-proxy-go" % cc.staged_go()[1][:12]


def test_cutover_flipped_every_host_through_the_link(host):
    report = cc.load_report()
    assert report["result"] == "success", report.get("reason")
    entry = report["hosts"][host.backend.get_hostname()]
    assert entry["result"] == "on_go"
    assert entry["flavor"] == "go"
    assert str(entry["stages"]["flip"]["changed"]).lower() == "true"


def test_second_cutover_changed_nothing(host):
    report = cc.load_report(cc.again_run_id())
    assert report["result"] == "success", report.get("reason")
    entry = report["hosts"][host.backend.get_hostname()]
    assert entry["result"] == "on_go"
    assert str(entry["stages"]["flip"]["changed"]).lower() == "false"


def test_rollback_without_the_method_variable_used_the_symlink(host):
    state = cc.host_state(host)
    assert state["current"] == "c"
    assert state["method"] == "symlink"
    assert [(h["to"], h["method"]) for h in state["history"]][-2:] == [("go", "symlink"), ("c", "symlink")]
    assert state["history"][0]["binary"].endswith(go_release_suffix())
    link = host.file(cc.C_BINARY)
    assert link.is_symlink
    assert host.check_output("readlink -f %s", cc.C_BINARY) == C_RELEASE


def test_service_runs_the_original_c_argv_through_the_link(host):
    # The proxy runs as nobody: root without CAP_SYS_PTRACE cannot read its /proc/PID/exe here, so the
    # binary is proven by the link (above) and by the switch's own proof (the incident note, below).
    assert cc.service_argv(host) == cc.pristine_argv(host)
    assert cc.service_argv(host)[0] == cc.C_BINARY


def test_never_a_dropin_and_vendor_unit_unchanged(host):
    assert not host.file(cc.DROPIN).exists
    assert cc.vendor_unit_unchanged(host)


def test_rollback_report_and_incident_note(host):
    run_id = "%s-rollback" % cc.scenario_name()
    report = cc.load_report(run_id)
    assert report["result"] == "success", report.get("reason")
    name = host.backend.get_hostname()
    assert report["hosts"][name]["result"] == "rolled_back"
    note = cc.incident_note(run_id, name)
    assert note is not None and "argv identical to the freeze: True" in note
    for run in (cc.first_run_id(), cc.again_run_id(), run_id):
        assert cc.leaked_secrets(host, cc.report_texts(run)) == []
