"""Happy path: every host ends on the Go release with the C argv, and the run report says so."""

import pathlib
import stat
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared"))
import cutover_checks as cc  # noqa: E402

CANARIES = {"default-h1"}


def test_main_pid_runs_the_go_release_with_the_c_args(host):
    _go_path, sha256 = cc.staged_go()
    argv = cc.service_argv(host)
    assert argv, "MTProxy has no MainPID"
    assert argv[0] == cc.go_release_path(sha256)
    assert argv[1:] == cc.pristine_argv(host)[1:]
    assert host.service("MTProxy").is_running


def test_dropin_present_and_vendor_unit_unchanged(host):
    dropin = host.file(cc.DROPIN)
    assert dropin.is_file
    assert cc.go_release_path(cc.staged_go()[1]) in dropin.content_string
    assert cc.vendor_unit_unchanged(host)


def test_go_runs_as_the_user_c_dropped_to_kept_by_the_drop_in(host):
    # mtproxy_cutover_privilege_drop=service (extensions/molecule/config.yml): the Go ignores -u nobody.
    assert host.file(cc.DROPIN).content_string.endswith(
        "User=nobody\nGroup=nogroup\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n")
    pid = host.check_output("systemctl show -p MainPID --value MTProxy.service")
    uids = host.check_output("for p in %s $(cat /proc/%s/task/*/children); do awk '/^Uid:/ {print $3}' "
                             "/proc/$p/status; done" % (pid, pid)).split()
    assert len(uids) == 2 and set(uids) == {"65534"}, uids  # the main process and its -M 1 worker
    stages = cc.load_report()["hosts"][host.backend.get_hostname()]["stages"]
    checked = [stages["flip"]["privileges"]] + ([stages["prewarm"]["privileges"]] if "prewarm" in stages else [])
    for privileges in checked:
        assert privileges["verdict"] != "more" and privileges["granted"] == ["CAP_NET_BIND_SERVICE"], privileges
    assert ("prewarm" in stages) == (host.backend.get_hostname() in CANARIES)


def test_the_canary_pre_warm_compared_how_go_and_c_end(host):
    name = host.backend.get_hostname()
    if name not in CANARIES:
        pytest.skip("only canaries are pre-warmed")
    checked = cc.load_report()["hosts"][name]["stages"]["prewarm"]["exit_semantics"]
    # As measured on the real builds (the stand-in follows them): two differences, each only a warning.
    verdicts = dict((entry["case"], entry["verdict"]) for entry in checked["cases"])
    assert checked["verdict"] == "warn" and checked["refusals"] == [], checked
    assert verdicts == {"sigterm": "same", "bad_flag": "same", "config_missing": "same",
                        "config_unreadable": "equivalent", "client_port_busy": "same", "stats_port_busy": "differs"}


def test_state_files_are_root_only_and_say_go(host):
    for name in ("manifest.json", "state.json"):
        handle = host.file("%s/%s" % (cc.STATE_DIR, name))
        assert handle.is_file
        assert handle.user == "root"
        assert stat.S_IMODE(handle.mode) == 0o600, name
    state = cc.host_state(host)
    assert state["current"] == "go"
    assert state["binary"] == cc.go_release_path(cc.staged_go()[1])


def test_report_lists_host_on_go_with_pass_and_timings(host):
    report = cc.load_report()
    name = host.backend.get_hostname()
    assert report["run_id"] == cc.first_run_id()
    assert report["result"] == "success"
    entry = report["hosts"][name]
    assert entry["result"] == "on_go"
    assert entry["verdict"] == "pass"
    assert entry["failures"] == []
    assert entry["role"] == ("canary" if name in CANARIES else "wave")
    assert entry["flavor"] == "go"
    for key in ("stop_ms", "start_ms", "unavailable_ms"):
        assert isinstance(entry["timings"][key], (int, float)) and entry["timings"][key] >= 0, key


def test_the_freeze_record_keeps_the_warning_of_the_secret_in_argv(host):
    # The hosts run -S on the command line: mtproxy_freeze warns (config_warnings) and the report keeps it.
    freeze = cc.load_report()["hosts"][host.backend.get_hostname()]["stages"]["freeze"]
    assert any("use --mtproto-secret-file" in warning for warning in freeze["warnings"]), freeze["warnings"]


def test_the_flip_timed_the_new_process(host):
    flips = [h for h in cc.host_state(host)["history"] if h["to"] == "go" and h["result"] == "ok"]
    assert flips
    timings = flips[0]["timings"]
    print("%s C -> Go timings (ms): %s" % (host.backend.get_hostname(), timings))
    # systemd forked the new process inside start_ms: the accept that ended it was the new
    # binary's, not one on the old C master's sockets (they outlive its main thread for some ms).
    assert timings["spawn_ms"] is not None and 0 <= timings["spawn_ms"] <= timings["start_ms"], timings
    assert timings["spawn_ms"] + timings["binary_start_ms"] == pytest.approx(timings["start_ms"], abs=0.01)


def test_report_covers_exactly_the_fleet():
    report = cc.load_report()
    assert sorted(report["hosts"]) == ["default-h1", "default-h2", "default-h3"]
    canary_waves = {e["wave"] for e in report["hosts"].values() if e["role"] == "canary"}
    wave_waves = {e["wave"] for e in report["hosts"].values() if e["role"] == "wave"}
    assert canary_waves and wave_waves and max(canary_waves) < min(wave_waves)


def test_second_cutover_keeps_everything_on_go(host):
    report = cc.load_report(cc.again_run_id())
    assert report["result"] == "success"
    assert report["hosts"][host.backend.get_hostname()]["result"] == "on_go"


def test_no_secret_in_reports(host):
    for run_id in (cc.first_run_id(), cc.again_run_id()):
        texts = cc.report_texts(run_id)
        assert "report.json" in texts
        assert cc.leaked_secrets(host, texts) == []
