"""method=container: a canary whose Go container fails its SLO (its pod's backend resets the Go port's
connections) is recreated from the frozen C image ID by the cutover itself; the run fails naming it,
and no other host is touched."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "container"))
import fleet_checks as fc  # noqa: E402
from fleet_checks import cc  # noqa: E402

CANARY = "container_canary_fail-h1"


def name_of(host):
    return host.backend.get_hostname()


def test_run_fails_naming_the_canary_and_the_metric():
    run = cc.playbook_run("first")
    assert run["rc"] == 2
    output = run["stdout"] + "\n" + run["stderr"]
    start = output.rfind("cutover failed")
    assert start >= 0, run["stdout_tail"]
    message = " ".join(output[start:start + 2000].split())
    assert CANARY in message and "success_rate" in message, message


def test_canary_judged_on_go_and_rolled_back():
    report = cc.load_report()
    assert report["result"] == "failed"
    canary = report["hosts"][CANARY]
    assert canary["result"] == "rolled_back"
    assert canary["verdict"] == "fail"
    assert "success_rate" in [failure["metric"] for failure in canary["failures"]]
    assert canary["rollback_timings"]["unavailable_ms"] is not None
    note = cc.incident_note(cc.first_run_id(), CANARY)
    assert note is not None and "success_rate" in note


def test_other_hosts_never_flipped():
    report = cc.load_report()
    for name, entry in report["hosts"].items():
        if name != CANARY:
            assert entry["result"] == "on_c"
            assert "flip" not in entry["stages"]


def test_every_proxy_runs_the_frozen_c_image_with_its_spec(host):
    name = name_of(host)
    record, entry = fc.record(), fc.entry(name)
    for snap in (fc.snapshot("after-cutover")["hosts"][name], fc.live(name)):
        assert snap["spec"]["image_id"] == record["c_image_id"]
        assert snap["spec_changes_since_up"] == {}
        assert fc.spec_as_run(snap["spec"], entry) == []
        assert snap["status"] == "running"
        assert snap["stats_flavour"] == "c" and snap["stats_ready"]
        # The canary's container was recreated twice (Go, then C); the others are the ones create started.
        assert snap["recreated_since_up"] == (name == CANARY)
    if name == CANARY:
        assert record["c_image_id"] in fc.manifest_text(name)
        state = fc.host_state_file(name)
        assert state["current"] == "c" and state["method"] == "container"
    else:
        assert fc.host_state_file(name) is None


def test_c_answers_traffic_after_the_failed_cutover(host):
    traffic = fc.snapshot("after-cutover")["hosts"][name_of(host)]["traffic"]
    assert traffic["handshakes"] == traffic["replies"] == 30, traffic
    assert traffic["unanswered"] == 0 and traffic["refused"] == 0, traffic


def test_the_fault_was_the_canarys_backend_and_c_never_met_it(host):
    # The canary's pod backend reset the Go port's connections; C's RPC was answered in every pod.
    # "errors" is not asserted: on a loaded machine (CI runs four scenarios at once) the backends counted
    # 1 to 3 on every pod, untouched ones included, each with a reconnect of the C proxy (more
    # "accepted"): C connections cut off mid-RPC, not the Go-only fault.
    name = name_of(host)
    backend = fc.live(name)["backend"]
    assert backend is not None and backend["rpc_answers"] > 0, backend
    if name == CANARY:
        assert backend["go_resets"] >= 1 and backend["go_replies"] == 0, backend
    else:
        assert backend["go_connections"] == backend["go_resets"] == 0, backend


def test_no_secret_in_reports_notes_or_output():
    assert fc.leaks(fc.run_texts(cc.first_run_id())) == []
