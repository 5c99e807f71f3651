"""method=container: cutover.yml recreates every proxy container from the Go image (loaded from its
archive, pinned by ID) with everything else unchanged; rollback.yml recreates them from the frozen C
image ID. Checked from `docker inspect`, from /stats inside each pod's network namespace, and with
test traffic, after each run (snapshot.yml) and now.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "container"))
import fleet_checks as fc  # noqa: E402
from fleet_checks import cc  # noqa: E402

CANARY = "container-h1"


def name_of(host):
    return host.backend.get_hostname()


def test_cutover_run_succeeded_on_every_host(host):
    run = cc.playbook_run("first")
    assert run["rc"] == 0, run["stdout_tail"]
    report = cc.load_report()
    assert report["result"] == "success", report.get("reason")
    name = name_of(host)
    entry = report["hosts"][name]
    assert entry["result"] == "on_go"
    assert entry["verdict"] == "pass"
    assert entry["flavor"] == "go"
    assert entry["role"] == ("canary" if name == CANARY else "wave")
    for key in ("stop_ms", "start_ms", "unavailable_ms"):
        assert isinstance(entry["timings"][key], (int, float)) and entry["timings"][key] >= 0, key


def test_the_go_image_came_from_its_archive():
    record = fc.record()
    assert record["go_private"] and record["go_archive"].endswith("/go-image.tar")
    # The engine had no such image before the cutover: it can only have been loaded from the archive.
    assert fc.container_fleet.inspect("image", record["go_image_id"]) is not None


def test_after_cutover_the_proxy_ran_the_go_image_with_the_c_spec(host):
    name = name_of(host)
    record, entry = fc.record(), fc.entry(name)
    snap = fc.snapshot("after-cutover")["hosts"][name]
    assert snap["spec"]["image_id"] == record["go_image_id"] != record["c_image_id"]
    assert snap["recreated_since_up"]
    assert snap["spec_changes_since_up"] == {}
    assert fc.spec_as_run(snap["spec"], entry) == []
    assert snap["status"] == "running"
    assert snap["pod_id"] == entry["pod_id"] and snap["pod_running"]


def test_after_cutover_go_answered_stats_and_traffic(host):
    snap = fc.snapshot("after-cutover")["hosts"][name_of(host)]
    assert snap["stats_flavour"] == "go" and snap["stats_ready"]
    traffic = snap["traffic"]
    assert traffic["handshakes"] == traffic["replies"] == 30, traffic
    assert traffic["unanswered"] == 0 and traffic["refused"] == 0, traffic


def test_rollback_run_succeeded_and_left_incident_notes(host):
    run = cc.playbook_run("rollback")
    assert run["rc"] == 0, run["stdout_tail"]
    run_id = "%s-rollback" % cc.scenario_name()
    report = cc.load_report(run_id)
    assert report["result"] == "success", report.get("reason")
    name = name_of(host)
    assert report["hosts"][name]["result"] == "rolled_back"
    assert cc.incident_note(run_id, name) is not None


def test_after_rollback_the_proxy_runs_the_frozen_c_image_with_the_c_spec(host):
    name = name_of(host)
    record, entry = fc.record(), fc.entry(name)
    # The freeze recorded the C image by ID, and the rollback went back to exactly that.
    assert record["c_image_id"] in fc.manifest_text(name)
    for snap in (fc.snapshot("after-rollback")["hosts"][name], fc.live(name)):
        assert snap["spec"]["image_id"] == record["c_image_id"]
        assert snap["spec_changes_since_up"] == {}
        assert fc.spec_as_run(snap["spec"], entry) == []
        assert snap["status"] == "running"
        assert snap["stats_flavour"] == "c" and snap["stats_ready"]
        assert snap["pod_id"] == entry["pod_id"] and snap["pod_running"]


def test_after_rollback_c_answers_traffic(host):
    traffic = fc.snapshot("after-rollback")["hosts"][name_of(host)]["traffic"]
    assert traffic["handshakes"] == traffic["replies"] == 30, traffic
    assert traffic["unanswered"] == 0 and traffic["refused"] == 0, traffic


def test_state_says_c_by_the_container_method(host):
    state = fc.host_state_file(name_of(host))
    assert state is not None
    assert state["current"] == "c"
    assert state["method"] == "container"


def test_steady_clients_kept_running_through_both_flips(host):
    """The pod's client ran on while its proxy container was recreated twice (each snapshot ends the
    client run going on, so its counts are in)."""
    name = name_of(host)
    after_cutover = fc.snapshot("after-cutover")["hosts"][name]["background_clients"]
    after_rollback = fc.snapshot("after-rollback")["hosts"][name]["background_clients"]
    assert after_cutover["runs"] >= 1 and after_cutover["replies"] > 0, after_cutover
    assert after_rollback["runs"] > after_cutover["runs"], (after_cutover, after_rollback)
    assert after_rollback["connected"] > after_cutover["connected"], (after_cutover, after_rollback)
    assert after_rollback["replies"] > after_cutover["replies"], (after_cutover, after_rollback)


def test_no_secret_in_reports_notes_or_output():
    for label in ("first", "rollback"):
        assert fc.leaks(fc.run_texts("%s-%s" % (cc.scenario_name(), label))) == []
