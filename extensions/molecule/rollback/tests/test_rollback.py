"""After cutover + rollback.yml every host runs the C binary with its original argv again."""

import json
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared"))
import cutover_checks as cc  # noqa: E402


def test_service_runs_the_original_c_argv(host):
    assert cc.service_argv(host) == cc.pristine_argv(host)


def test_dropin_gone_and_incident_note_written(host):
    assert not host.file(cc.DROPIN).exists
    note = cc.incident_note("%s-rollback" % cc.scenario_name(), host.backend.get_hostname())
    assert note is not None and "argv identical to the freeze: True" in note


def test_state_says_c_and_release_is_kept(host):
    assert cc.host_state(host)["current"] == "c"
    assert host.file(cc.go_release_path(cc.staged_go()[1])).is_file
    assert cc.vendor_unit_unchanged(host)


def test_rollback_report(host):
    run_id = "%s-rollback" % cc.scenario_name()
    report = cc.load_report(run_id)
    assert report["result"] == "success"
    assert report["hosts"][host.backend.get_hostname()]["result"] in ("rolled_back", "on_c")
    assert cc.leaked_secrets(host, cc.report_texts(run_id)) == []


def test_drill_switched_twice_within_the_envelope():
    report = cc.load_report("%s-drill" % cc.scenario_name())
    assert report["result"] == "success", report.get("reason")
    canary = report["hosts"]["%s-h1" % cc.scenario_name()]  # the Debian 13 host
    outcome = canary["stages"]["outcome"]
    assert outcome["envelope_ok"] is True
    envelope = outcome["envelope"]
    for key in ("go_start_ms", "c_start_ms"):
        assert float(envelope[key]) <= float(envelope["limit_start_ms"])
    assert canary["stages"]["flip"]["timings"]["unavailable_ms"] > 0
    assert canary["stages"]["rollback"]["argv_matches"] is True


def test_drill_wrote_the_phase8_report_in_the_go_ports_format(host):
    # The Go port's drill (branch golang, integration/cli/phase8_cutover_integration_test.go) writes these
    # fields in this order, 2-space indented, with a final newline; default envelope: factor 3, slack 500 ms.
    path = os.path.join(cc.artifacts_dir(), "%s-drill" % cc.scenario_name(), "phase8-cutover-report.json")
    with open(path) as handle:
        text = handle.read()
    document = json.loads(text)
    assert list(document) == ["generated_at", "go_os", "go_arch", "thresholds", "steps"]
    assert text.endswith("}\n") and text.startswith('{\n  "generated_at": "')
    goarch = {"x86_64": "amd64", "aarch64": "arm64"}[host.check_output("uname -m").strip()]
    assert (document["go_os"], document["go_arch"]) == ("linux", goarch)
    guard = "cutover_go and rollback_c <= baseline_c*3 + 500ms"
    assert document["thresholds"] == {"shutdown": guard, "startup": guard}
    steps = document["steps"]
    assert [(s["name"], s["binary"]) for s in steps] == [
        ("baseline_c", "mtproto-proxy"), ("cutover_go", "mtproto-proxy-go"), ("rollback_c", "mtproto-proxy")]
    fields = ["name", "binary", "startup_latency_ms", "shutdown_latency_ms", "stats_line_count", "stats_sample"]
    for step in steps:
        assert list(step) == fields
        assert step["startup_latency_ms"] > 0 and step["shutdown_latency_ms"] > 0 and step["stats_line_count"] > 1
        assert "\n" not in step["stats_sample"] and step["stats_sample"]
    base = steps[0]
    for step in steps[1:]:
        for kind in ("startup_latency_ms", "shutdown_latency_ms"):
            assert step[kind] <= base[kind] * 3 + 500


def test_the_fleet_is_mixed_with_a_debian_13_canary(host):
    # molecule.yml gives the canary the trixie image: the drill's flips run on systemd 257.
    version = host.file("/etc/os-release").content_string.split("VERSION_ID=")[1].split()[0].strip('"')
    expected = "13" if host.backend.get_hostname() == "%s-h1" % cc.scenario_name() else "12"
    assert version == expected
