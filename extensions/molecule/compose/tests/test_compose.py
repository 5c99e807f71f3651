"""method=compose: a canary whose Go fails its SLO is rolled back through compose; then every compose
service is cut over to the Go image by the collection's override file and compose's own recreate; each
operator's own `docker compose up -d` keeps Go; rollback.yml removes only that file and recreates through
compose, proven identical to the frozen spec and config hash; `docker compose up -d` then keeps C.
Checked from the snapshots (docker inspect, compose's labels, /stats in each pod, traffic) and now.
"""

import json
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "container"))
import fleet_checks as fc  # noqa: E402
from fleet_checks import cc  # noqa: E402

sys.path.insert(0, str(fc.REPO / "tests" / "hosts"))
import compose_fleet  # noqa: E402

CANARY = "compose-h1"


def name_of(host):
    return host.backend.get_hostname()


def snap(label, name):
    return fc.snapshot(label)["hosts"][name]


def traffic_ok(snapshot):
    traffic = snapshot["traffic"]
    assert traffic["handshakes"] == traffic["replies"] == 30, traffic
    assert traffic["unanswered"] == 0 and traffic["refused"] == 0, traffic


def test_the_fleet_has_both_shapes_and_both_compose_versions():
    shapes = sorted((e["shape"], e["cli"]) for e in fc.record()["hosts"])
    assert shapes == [("command", "v1"), ("command", "v2"), ("official", "v1"), ("official", "v2")]
    versions = sorted(e["compose_at_up"]["version"].split(".")[0] for e in fc.record()["hosts"])
    assert versions == ["1", "1", "2", "2"]


def test_the_failed_canary_was_rolled_back_through_compose_and_the_others_never_flipped(host):
    run = cc.playbook_run("canary-fail")
    assert run["rc"] == 2, run["stdout_tail"]
    report = cc.load_report("%s-canary-fail" % cc.scenario_name())
    name = name_of(host)
    entry = fc.entry(name)
    after = snap("after-canary-fail", name)
    if name == CANARY:
        assert report["hosts"][name]["result"] == "rolled_back"
        assert report["hosts"][name]["verdict"] == "fail"
        assert after["recreated_since_up"]
    else:
        assert report["hosts"][name]["result"] == "on_c"
        assert not after["recreated_since_up"]
    assert after["image_is"] == "c" and after["stats_flavour"] == "c"
    assert after["spec_changes_since_up"] == {}
    assert after["override_files"] == []
    assert after["compose"]["config_hash"] == entry["compose_at_up"]["config_hash"]
    assert after["compose"]["config_files"] == entry["compose_at_up"]["config_files"]


def test_the_canarys_fault_was_its_backend_and_was_lifted_before_the_cutover(host):
    # The canary's pod backend reset the Go port's connections (a fault of the environment, the same
    # on the stand-in and on real builds); no other pod's backend reset any. After `unfault` the
    # canary's Go was answered like every other host's.
    name = name_of(host)
    failed = snap("after-canary-fail", name)["backend"]
    cut_over = snap("after-cutover", name)["backend"]
    assert failed is not None and cut_over is not None, (failed, cut_over)
    if name == CANARY:
        assert failed["go_resets"] >= 1 and failed["go_replies"] == 0, failed
    else:
        assert failed["go_connections"] == failed["go_resets"] == 0, failed
        assert cut_over["go_resets"] == 0, cut_over
    assert cut_over["go_replies"] > 0, cut_over


def test_cutover_put_every_service_on_go_through_compose(host):
    run = cc.playbook_run("first")
    assert run["rc"] == 0, run["stdout_tail"]
    report = cc.load_report()
    assert report["result"] == "success", report.get("reason")
    name = name_of(host)
    assert report["hosts"][name]["result"] == "on_go" and report["hosts"][name]["flavor"] == "go"
    entry, after = fc.entry(name), snap("after-cutover", name)
    assert after["image_is"] == "go" and after["recreated_since_up"]
    assert after["spec_changes_since_up"] == {}
    assert after["stats_flavour"] == "go" and after["stats_ready"]
    # compose made the container, from the project's file and the collection's override file
    assert after["override_is_ours"] == [True]
    assert after["compose"]["config_files"] != entry["compose_at_up"]["config_files"]
    assert after["compose"]["version"] == entry["compose_at_up"]["version"]
    assert after["container"] == entry["container"]
    traffic_ok(after)


def test_the_operators_own_up_keeps_go(host):
    name = name_of(host)
    up = fc.snapshot("operator-up-on-go")["hosts"][name]
    assert up["rc"] == 0 and up["running"], up
    assert up["container_id_before"] == up["container_id_after"], up["output"]
    assert up["image_id_after"] == fc.record()["go_image_id"]
    after = snap("after-operator-up-on-go", name)
    assert after["image_is"] == "go" and after["stats_flavour"] == "go"
    traffic_ok(after)


def test_rollback_removed_only_the_override_and_restored_the_frozen_config(host):
    run = cc.playbook_run("rollback")
    assert run["rc"] == 0, run["stdout_tail"]
    run_id = "%s-rollback" % cc.scenario_name()
    report = cc.load_report(run_id)
    assert report["result"] == "success", report.get("reason")
    name = name_of(host)
    assert report["hosts"][name]["result"] == "rolled_back"
    entry = fc.entry(name)
    for after in (snap("after-rollback", name), snap("after-operator-up-on-c", name)):
        assert after["image_is"] == "c" and after["stats_flavour"] == "c" and after["stats_ready"]
        assert after["spec_changes_since_up"] == {}
        assert after["override_files"] == []
        assert after["compose"]["config_hash"] == entry["compose_at_up"]["config_hash"]
        assert after["compose"]["config_files"] == entry["compose_at_up"]["config_files"]
        traffic_ok(after)
    up = fc.snapshot("operator-up-on-c")["hosts"][name]
    assert up["rc"] == 0 and up["container_id_before"] == up["container_id_after"], up["output"]
    assert sorted(os.listdir(entry["project_dir"])) == sorted(
        ["docker-compose.yml" if compose_fleet.project_file(entry) == "docker-compose.yml" else "compose.yaml"]
        + (["config"] if entry["shape"] == "command" else []))


def test_state_says_c_by_the_compose_method(host):
    name = name_of(host)
    path = os.path.join(fc.record()["state_dir"], name, "mtproxy", "state.json")
    with open(path) as handle:
        state = json.load(handle)
    assert state["current"] == "c" and state["method"] == "compose"


def test_steady_clients_kept_running(host):
    name = name_of(host)
    first = snap("after-cutover", name)["background_clients"]
    last = snap("after-operator-up-on-c", name)["background_clients"]
    assert first["runs"] >= 1 and first["replies"] > 0, first
    assert last["replies"] > first["replies"], (first, last)


def test_no_secret_in_reports_notes_or_output():
    for label in ("canary-fail", "first", "rollback"):
        assert fc.leaks(fc.run_texts("%s-%s" % (cc.scenario_name(), label))) == []
