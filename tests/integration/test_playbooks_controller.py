"""The playbooks run by ansible-playbook against hosts that cannot be reached, as a new user would try them.

No proxy host is needed: the inventory holds hosts that never answer (ssh to a closed port on
127.0.0.1, a community.docker host whose container does not exist). What is tested is what the
controller does around them: the result the report derives, the settings check before any host
task, the report under --limit, credentials in download URLs, the artifacts directory without
$PWD, and a run whose controller is killed.
"""
import hashlib
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import COLLECTIONS_ROOT, REPO_ROOT

PLAYBOOKS = os.path.join(REPO_ROOT, "playbooks")
SECRET_WORDS = ("s3cr3t-pass", "t0k3n-value", "h3ader-token")

GHOSTS = """
all:
  children:
    mtproxy:
      hosts:
        ghost1: {ansible_connection: ssh, ansible_host: 127.0.0.1, ansible_port: %(port)d, ansible_user: nobody}
        ghost2: {ansible_connection: ssh, ansible_host: 127.0.0.1, ansible_port: %(port)d, ansible_user: nobody}
        ghost3: {ansible_connection: community.docker.docker, ansible_host: mtproxy-cutover-no-such-container}
    mtproxy_canary:
      hosts:
        ghost1:
"""

LOCAL = """
all:
  children:
    mtproxy:
      hosts:
        local1: {ansible_connection: local, ansible_python_interpreter: "{{ ansible_playbook_python }}"}
"""

NO_CANARY = """
all:
  children:
    mtproxy:
      hosts:
        ghost1: {ansible_connection: ssh, ansible_host: 127.0.0.1, ansible_port: %(port)d, ansible_user: nobody}
"""


def _closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _collections_path():
    extra = os.environ.get("MTPROXY_TEST_COLLECTIONS_PATH", os.path.join(REPO_ROOT, ".venv", "collections"))
    return os.pathsep.join([COLLECTIONS_ROOT, extra])


class Run(object):
    def __init__(self, proc, artifacts, run_id):
        self.rc = proc.returncode
        self.output = proc.stdout
        self.run_dir = os.path.join(artifacts, run_id)

    def report(self):
        with open(os.path.join(self.run_dir, "report.json")) as handle:
            return json.load(handle)

    def texts(self):
        """{relative path: text} of every file of the run directory."""
        texts = {}
        for base, dummy, files in os.walk(self.run_dir):
            for name in files:
                path = os.path.join(base, name)
                with open(path, errors="replace") as handle:
                    texts[os.path.relpath(path, self.run_dir)] = handle.read()
        return texts


def _env(tmp_path, **extra):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\ntimeout = 5\nhost_key_checking = False\n")
    env = dict(os.environ, HOME=str(home), ANSIBLE_HOME=str(home / ".ansible"), ANSIBLE_CONFIG=str(config),
               ANSIBLE_COLLECTIONS_PATH=_collections_path(), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_SHOW_CUSTOM_STATS="1",
               ANSIBLE_ASYNC_DIR=str(tmp_path / "async"))
    env.update(extra)
    return env


def _argv(tmp_path, playbook, inventory, run_id, artifacts, *args):
    inv = tmp_path / "inventory.yml"
    inv.write_text(inventory % {"port": _closed_port()})
    argv = [sys.executable, "-m", "ansible.cli.playbook", "-i", str(inv), os.path.join(PLAYBOOKS, playbook + ".yml"),
            "-e", "mtproxy_cutover_run_id=%s" % run_id]
    if artifacts:
        argv += ["-e", "mtproxy_cutover_artifacts_dir=%s" % artifacts]
    return argv + list(args)


def _playbook(tmp_path, playbook, inventory, *args, **kwargs):
    run_id = kwargs.pop("run_id", "r1")
    artifacts = kwargs.pop("artifacts", str(tmp_path / "artifacts"))
    cwd = kwargs.pop("cwd", str(tmp_path))
    env = kwargs.pop("env", None) or _env(tmp_path)
    proc = subprocess.run(_argv(tmp_path, playbook, inventory, run_id, artifacts, *args), cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=600,
                          check=False)
    return Run(proc, artifacts or os.path.join(cwd, "artifacts"), run_id)


@pytest.fixture()
def go_binary(tmp_path):
    path = tmp_path / "mtproto-proxy-go"
    path.write_bytes(b"#!/bin/sh\necho go\n")
    path.chmod(0o755)
    return str(path), hashlib.sha256(path.read_bytes()).hexdigest()


def _go_vars(go_binary):
    return ["-e", "mtproxy_cutover_go_binary=%s" % go_binary[0], "-e", "mtproxy_cutover_go_sha256=%s" % go_binary[1]]


SUMMARY_KEYS = {"run_id", "playbook", "result", "reason", "summary", "hosts", "report_json", "report_md", "timeline_svg"}


def _exported_summary(run):
    """The run summary exported with set_stats (ANSIBLE_SHOW_CUSTOM_STATS prints it as one JSON line)."""
    lines = [line for line in run.output.splitlines() if line.strip().startswith("RUN: ")]
    assert len(lines) == 1, run.output
    stats = json.loads(lines[0].strip()[len("RUN: "):])
    summary = stats["mtproxy_run_report"]
    assert set(summary) == SUMMARY_KEYS, summary
    report = run.report()
    assert (summary["run_id"], summary["result"], summary["reason"]) == (report["run_id"], report["result"], report["reason"])
    assert summary["hosts"] == {host: entry["result"] for host, entry in report["hosts"].items()}
    assert summary["report_json"] == os.path.join(run.run_dir, "report.json")
    return summary


# --- 1. the result comes from the hosts the run was meant to touch ---------------------------

def test_cutover_of_hosts_that_never_answer_fails_and_names_them(tmp_path, go_binary):
    run = _playbook(tmp_path, "cutover", GHOSTS, *_go_vars(go_binary))
    assert run.rc == 2, run.output
    report = run.report()
    assert report["result"] == "failed"
    assert report["expected_hosts"] == ["ghost1", "ghost2", "ghost3"]
    assert {h: e["result"] for h, e in report["hosts"].items()} == {
        "ghost1": "unreachable", "ghost2": "unreachable", "ghost3": "unreachable"}
    assert report["summary"]["judged"] == 0 and "no host was judged" in report["problems"]
    # Stopped before anything changed: no host task after the reachability check.
    assert "mtproxy.cutover.freeze_config : Read the unit" not in run.output
    assert "success" not in run.texts()["report.md"]
    # 7. The run summary is exported for automation controller on this early stop too.
    assert _exported_summary(run)["result"] == "failed"


def test_drill_without_a_canary_fails_instead_of_succeeding_with_no_host(tmp_path, go_binary):
    run = _playbook(tmp_path, "drill", NO_CANARY, *_go_vars(go_binary))
    assert run.rc == 2, run.output
    report = run.report()
    assert report["result"] == "failed"
    # Why, and the way forward (was: "the run has no host to act on, or its host(s)  are not among ...").
    assert ("drill.yml has no host to drill: group mtproxy_canary has no host and mtproxy_drill_host is not set; "
            "add a canary to the inventory or pass -e mtproxy_drill_host=NAME (a host of group mtproxy)"
            in report["reason"]), report["reason"]
    assert "(s)  " not in report["reason"]


def test_drill_host_outside_the_run_is_named(tmp_path, go_binary):
    run = _playbook(tmp_path, "drill", NO_CANARY, *_go_vars(go_binary) + ["-e", "mtproxy_drill_host=proxy9"])
    assert run.rc == 2, run.output
    assert ("the drill host proxy9 (mtproxy_drill_host, else the first host of group mtproxy_canary) is not among "
            "this play's hosts (ghost1): name host(s) of group mtproxy that --limit leaves in the run"
            in run.report()["reason"]), run.report()["reason"]


# --- 2. settings are checked before any host task --------------------------------------------

def test_settings_mistakes_stop_the_run_before_any_host_task(tmp_path, go_binary):
    run = _playbook(tmp_path, "cutover", GHOSTS, *_go_vars(go_binary) + [
        "-e", "mtproxy_cutover_stop_afer=stage",
        "-e", "mtproxy_cutover_rollback_scope=flet",
        "-e", "mtproxy_cutover_method=dropn",
        "-e", "mtproxy_cutover_inconclusive=Pass",
        "-e", "mtproxy_cutover_canary_window_s=five",
        "-e", json.dumps({"mtproxy_cutover_thresholds": {"min_sucess_rate": 0.99}})])
    assert run.rc == 2, run.output
    # Not one task reached a host: the reachability check is the first host task.
    assert "TASK [Check the host answers]" not in run.output
    reason = run.report()["reason"]
    for expected in ("unknown setting(s) mtproxy_cutover_stop_afer (did you mean mtproxy_cutover_stop_after?)",
                     "value of mtproxy_cutover_rollback_scope must be one of: host, wave, fleet, got: flet",
                     "value of mtproxy_cutover_method must be one of: compose, container, dropin, symlink, got: dropn",
                     "value of mtproxy_cutover_inconclusive must be one of: fail, pass, got: Pass",
                     "mtproxy_cutover_canary_window_s",
                     "unknown threshold min_sucess_rate"):
        assert expected in reason, reason
    assert run.report()["result"] == "failed"


@pytest.mark.parametrize("playbook", ["cutover", "drill"])
def test_only_rollback_takes_hosts_from_another_run(tmp_path, go_binary, playbook):
    run = _playbook(tmp_path, playbook, GHOSTS, *_go_vars(go_binary) + ["-e", "mtproxy_cutover_lock_takeover=true"])
    assert run.rc == 2, run.output
    reason = run.report()["reason"]
    assert ("%s.yml does not take hosts from another run: mtproxy_cutover_lock_takeover=true is for rollback.yml" % playbook
            in reason), reason
    assert "mtproxy_cutover_lock_break=RUN_ID" in reason
    assert "TASK [Check the host answers]" not in run.output


def test_stop_after_with_a_bad_value_is_refused(tmp_path, go_binary):
    run = _playbook(tmp_path, "cutover", GHOSTS, *_go_vars(go_binary) + ["-e", "mtproxy_cutover_stop_after=stge"])
    assert run.rc == 2, run.output
    reason = run.report()["reason"]
    assert "value of mtproxy_cutover_stop_after must be one of: freeze, stage, got: stge" in reason
    assert "one of: ," not in run.output
    assert "TASK [Check the host answers]" not in run.output
    # 7. The run summary is exported for automation controller when the preflight stops the run.
    assert _exported_summary(run)["result"] == "failed"


def test_an_empty_stop_after_is_the_same_as_not_set(tmp_path, go_binary):
    run = _playbook(tmp_path, "cutover", GHOSTS, *_go_vars(go_binary) + ["-e", "mtproxy_cutover_stop_after="])
    assert run.rc == 2, run.output
    # Past the settings check (the ghosts then do not answer), with no complaint about the empty value.
    assert "TASK [Check the host answers]" in run.output
    assert "mtproxy_cutover_stop_after" not in run.report()["reason"], run.report()["reason"]


@pytest.mark.parametrize("serial", ["abc", "0", "-5", "150%"])
def test_a_serial_the_wave_play_cannot_use_stops_the_run_in_the_preflight(tmp_path, go_binary, serial):
    # Was: accepted by the preflight; the wave play then aborted ("invalid literal for int()") after a canary flipped.
    run = _playbook(tmp_path, "cutover", GHOSTS, *_go_vars(go_binary) + ["-e", "mtproxy_cutover_serial=%s" % serial])
    assert run.rc == 2, run.output
    assert "TASK [Check the host answers]" not in run.output
    reason = run.report()["reason"]
    assert "ghost1: mtproxy_cutover_serial: " in reason, reason
    assert 'give a positive number of hosts (5), a percentage of the fleet from 1% to 100% ("25%")' in reason


def test_a_missing_hook_file_stops_the_run_in_the_preflight_naming_setting_and_path(tmp_path, go_binary):
    run = _playbook(tmp_path, "cutover", GHOSTS, *_go_vars(go_binary) + [
        "-e", "mtproxy_cutover_after_flip_tasks=hooks/put-back.yml"])
    assert run.rc == 2, run.output
    assert "TASK [Check the host answers]" not in run.output
    assert ("ghost1: mtproxy_cutover_after_flip_tasks: task file %s does not exist on the controller"
            % (tmp_path / "hooks" / "put-back.yml")) in run.report()["reason"], run.report()["reason"]


def test_relative_go_binary_is_the_file_in_the_working_directory(tmp_path, go_binary):
    # The README's `-e mtproxy_cutover_go_binary=./mtproto-proxy-go`, run where the file is (was: looked up in playbooks/).
    assert os.path.dirname(go_binary[0]) == str(tmp_path)
    env = _env(tmp_path)
    env["PWD"] = "/"
    run = _playbook(tmp_path, "cutover", GHOSTS, "-e", "mtproxy_cutover_go_binary=./mtproto-proxy-go",
                    "-e", "mtproxy_cutover_go_sha256=%s" % go_binary[1], env=env)
    assert run.rc == 2, run.output
    report = run.report()
    assert "does not exist" not in report["reason"] and "did not answer" in report["reason"], report["reason"]
    assert report["go"]["source"] == go_binary[0]


HOOK = """
- name: Leave a mark that the hook ran
  ansible.builtin.copy:
    content: "before_rollback ran on {{ inventory_hostname }}\\n"
    dest: "%s"
    mode: "0644"
"""


def test_rollback_runs_a_relative_hook_and_exports_the_summary_when_it_stops(tmp_path):
    # A host that answers but has no freeze: the before_rollback hook (given relative to the working directory)
    # runs, the rollback fails, stop_run finishes the run and exports the summary for automation controller.
    # The operator's tasks/hook.yml was looked up beside the playbook first: the collection's own
    # playbooks/tasks/hook.yml ran instead, including itself without end.
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "hook.yml").write_text(HOOK % (tmp_path / "hook-ran"))
    run = _playbook(tmp_path, "rollback", LOCAL, "-e", "mtproxy_cutover_before_rollback_tasks=tasks/hook.yml",
                    "-e", "mtproxy_cutover_service=mtproxy-cutover-test-absent",
                    "-e", "mtproxy_cutover_state_dir=%s" % (tmp_path / "state"))
    assert run.rc == 2, run.output
    assert (tmp_path / "hook-ran").read_text() == "before_rollback ran on local1\n"
    report = run.report()
    assert report["hosts"]["local1"]["result"] == "failed" and "rollback failed" in report["reason"], report
    summary = _exported_summary(run)
    assert summary["result"] == "failed" and summary["hosts"] == {"local1": "failed"}


TWO_GROUPS = """
all:
  children:
    mtproxy:
      hosts:
        ghost1: {ansible_connection: ssh, ansible_host: 127.0.0.1, ansible_port: %(port)d, ansible_user: nobody}
        ghost2: {ansible_connection: ssh, ansible_host: 127.0.0.1, ansible_port: %(port)d, ansible_user: nobody,
                 mtproxy_cutover_serial: 2}
    eu_canaries:
      hosts:
        ghost2:
    mtproxy_canary:
      hosts:
        ghost1:
"""


def test_a_canary_group_without_hosts_is_named_with_its_setting(tmp_path, go_binary):
    run = _playbook(tmp_path, "cutover", GHOSTS, *_go_vars(go_binary) + ["-e", "mtproxy_cutover_canary_group=eu"])
    assert run.rc == 2, run.output
    assert ("group 'eu' (mtproxy_cutover_canary_group) must name at least one host of 'mtproxy'"
            in run.report()["reason"]), run.report()["reason"]
    assert "TASK [Check the host answers]" not in run.output


def test_run_wide_settings_that_differ_between_hosts_stop_the_run_in_the_preflight(tmp_path, go_binary):
    # mtproxy_cutover_serial set for one host in the inventory: the waves are one value for the whole run.
    run = _playbook(tmp_path, "cutover", TWO_GROUPS, *_go_vars(go_binary) + ["-e", "mtproxy_cutover_canary_group=eu_canaries"])
    assert run.rc == 2, run.output
    assert "TASK [Check the host answers]" not in run.output
    assert ('mtproxy_cutover_serial differs between the hosts of the run (ghost1: [1, "25%", "100%"]; ghost2: 2): it is '
            "one value for the whole run" in run.report()["reason"]), run.report()["reason"]


def test_the_drill_drills_the_first_host_of_the_canary_group_the_settings_name(tmp_path, go_binary):
    run = _playbook(tmp_path, "drill", TWO_GROUPS, *_go_vars(go_binary) + ["-e", "mtproxy_cutover_canary_group=eu_canaries"])
    assert run.rc == 2, run.output
    report = run.report()
    # Not ghost1 of the decoy mtproxy_canary group; it does not answer, so nothing else happened.
    assert report["expected_hosts"] == ["ghost2"] and report["hosts"]["ghost2"]["result"] == "unreachable"
    assert "mtproxy.cutover.freeze_config : Read the unit" not in run.output


# --- 3. controller-side steps run whatever --limit says -------------------------------------

def test_rollback_with_limit_writes_its_report(tmp_path):
    run = _playbook(tmp_path, "rollback", GHOSTS, "--limit", "ghost2")
    assert run.rc == 2, run.output
    report = run.report()
    assert report["expected_hosts"] == ["ghost2"]
    assert report["hosts"]["ghost2"]["result"] == "unreachable"
    # The Report play ran (finished, not left "running" or marked "incomplete" by the watcher).
    assert report["result"] == "failed" and report["finished_at"]
    assert "TASK [mtproxy.cutover.report : Render the run report from what every host runs, and finish the run]" in run.output
    # 7. The run summary is exported for automation controller (set_stats).
    assert _exported_summary(run)["result"] == "failed"


# --- 4. credentials never reach a record or a message; artifacts without $PWD -----------------

class _Downloads(http.server.BaseHTTPRequestHandler):
    body = b""
    auth = "Basic " + __import__("base64").b64encode(b"deploy:s3cr3t-pass").decode()

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.headers.get("Authorization") != self.auth or self.headers.get("X-Deploy-Token") != "h3ader-token":
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="go"')
            self.end_headers()
            return
        if not self.path.startswith("/go/mtproto-proxy-go"):
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def download_server(go_binary):
    with open(go_binary[0], "rb") as handle:
        _Downloads.body = handle.read()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Downloads)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1:%d" % server.server_address[1]
    server.shutdown()


@pytest.mark.parametrize("path, downloads", [("/go/mtproto-proxy-go", True), ("/missing/mtproto-proxy-go", False)])
def test_download_url_credentials_never_reach_a_record_or_a_message(tmp_path, go_binary, download_server, path,
                                                                    downloads):
    url = "http://deploy:s3cr3t-pass@%s%s?access_token=t0k3n-value&arch=amd64" % (download_server, path)
    headers = json.dumps({"mtproxy_cutover_go_binary_url_headers": {"X-Deploy-Token": "h3ader-token"}})
    run = _playbook(tmp_path, "cutover", GHOSTS, "-e", "mtproxy_cutover_go_binary_url=%s" % url,
                    "-e", "mtproxy_cutover_go_sha256=%s" % go_binary[1], "-e", headers, "-v")
    assert run.rc == 2, run.output
    for word in SECRET_WORDS:
        assert word not in run.output
        for name, text in run.texts().items():
            assert word not in text, name
    report = run.report()
    assert report["go"]["source"] == "http://%s%s?arch=amd64" % (download_server, path)
    if downloads:
        # The preflight got the binary (basic auth from the URL's userinfo, the header) and went on.
        assert "unreachable: ghost1, ghost2, ghost3" in report["problems"]
    else:
        assert "downloading the Go binary from http://%s%s?arch=amd64 failed" % (download_server, path) in report["reason"]
        assert "404" in report["reason"]


def test_default_artifacts_dir_is_the_working_directory_even_without_pwd(tmp_path, go_binary):
    work = tmp_path / "work"
    work.mkdir()
    env = _env(tmp_path)
    env.pop("PWD", None)
    run = _playbook(tmp_path, "cutover", GHOSTS, *_go_vars(go_binary), artifacts=None, cwd=str(work), env=env)
    assert run.rc == 2, run.output
    assert os.path.isfile(str(work / "artifacts" / "r1" / "report.json"))
    assert not os.path.exists("/artifacts/r1")


def _under_ansible_runner(tmp_path, go_binary, run_id, artifacts):
    """cutover.yml started by ansible-runner, the engine of automation controller and AWX: its
    project directory is the job's working directory, its events land in its own artifacts."""
    import ansible_runner

    private = tmp_path / ("runner-" + run_id)
    (private / "project").mkdir(parents=True)
    # A job's project as an automation controller user keeps it: a playbook that runs the collection's.
    (private / "project" / "site.yml").write_text("- ansible.builtin.import_playbook: mtproxy.cutover.cutover\n")
    inventory = tmp_path / ("inventory-%s.yml" % run_id)
    inventory.write_text(GHOSTS % {"port": _closed_port()})
    extravars = {"mtproxy_cutover_run_id": run_id, "mtproxy_cutover_go_binary": go_binary[0],
                 "mtproxy_cutover_go_sha256": go_binary[1]}
    if artifacts:
        extravars["mtproxy_cutover_artifacts_dir"] = artifacts
    # This core's ansible-playbook, not another one on PATH (ansible-runner starts it through pexpect,
    # which looks it up on the PATH of the job's environment).
    env = _env(tmp_path, PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
    env.pop("AWX_ISOLATED_DATA_DIR", None)
    result = ansible_runner.run(private_data_dir=str(private), playbook="site.yml", inventory=str(inventory),
                                extravars=extravars, envvars=env, quiet=True, timeout=600)
    stats = [event for event in result.events if event.get("event") == "playbook_on_stats"]
    assert len(stats) == 1, result.stdout.read()
    return result, stats[0]["event_data"].get("artifact_data") or {}, private


def test_under_ansible_runner_the_report_lands_where_the_user_said_and_the_summary_is_in_its_artifacts(
        tmp_path, go_binary):
    reports = tmp_path / "reports"
    result, artifact_data, private = _under_ansible_runner(tmp_path, go_binary, "r-runner", str(reports))
    output = result.stdout.read()
    assert result.rc == 2, output
    with open(str(reports / "r-runner" / "report.json")) as handle:
        report = json.load(handle)
    assert report["result"] == "failed"
    summary = artifact_data["mtproxy_run_report"]
    assert (summary["run_id"], summary["result"]) == ("r-runner", "failed")
    assert summary["report_json"] == str(reports / "r-runner" / "report.json")
    assert summary["hosts"] == {host: entry["result"] for host, entry in report["hosts"].items()}
    assert "outlives the job" not in output
    assert not (private / "project" / "artifacts").exists()


def test_under_ansible_runner_reports_in_the_job_directory_are_warned_about(tmp_path, go_binary):
    result, artifact_data, private = _under_ansible_runner(tmp_path, go_binary, "r-job", None)
    output = result.stdout.read()
    assert result.rc == 2, output
    assert os.path.isfile(str(private / "project" / "artifacts" / "r-job" / "report.json"))
    assert "set mtproxy_cutover_artifacts_dir to a directory that outlives the job" in " ".join(output.split())
    assert artifact_data["mtproxy_run_report"]["run_id"] == "r-job"


# --- 1. a controller that never reaches the Report play -------------------------------------

class _Hang(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        time.sleep(60)

    def log_message(self, *args):
        pass


def test_killed_controller_leaves_an_incomplete_report_never_running_or_success(tmp_path, go_binary):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hang)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = "http://127.0.0.1:%d/go/mtproto-proxy-go" % server.server_address[1]
        argv = _argv(tmp_path, "cutover", GHOSTS, "r1", str(tmp_path / "artifacts"),
                     "-e", "mtproxy_cutover_go_binary_url=%s" % url, "-e", "mtproxy_cutover_go_sha256=%s" % go_binary[1])
        proc = subprocess.Popen(argv, cwd=str(tmp_path), env=_env(tmp_path), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        run_json = tmp_path / "artifacts" / "r1" / "run.json"
        report_json = tmp_path / "artifacts" / "r1" / "report.json"
        deadline = time.time() + 120
        while time.time() < deadline and not report_json.exists():
            time.sleep(0.2)
        assert report_json.exists()
        assert json.loads(report_json.read_text())["result"] == "running"
        time.sleep(1)  # the download hangs now
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 30
        while time.time() < deadline and "finished" not in json.loads(run_json.read_text()):
            time.sleep(0.2)
        report = json.loads(report_json.read_text())
        assert report["result"] == "incomplete", report
        assert "ended before the run's Report play" in report["reason"]
    finally:
        server.shutdown()


# --- 6. progress a person can follow ----------------------------------------------------------

OBSERVE = """
- name: Observe a local /stats server the way a wave host is observed
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Observe
      ansible.builtin.include_role:
        name: mtproxy.cutover.verify_slo
      vars:
        verify_slo_stats_url: "%(url)s"
        verify_slo_window_s: 6
        verify_slo_sample_interval_s: 1
        verify_slo_progress_interval_s: 1
        verify_slo_baseline: {}
        verify_slo_inconclusive: pass
        verify_slo_thresholds: {}
        verify_slo_run_dir: ""

    - name: Keep the verdict for the test
      ansible.builtin.copy:
        content: "{{ verify_slo_outcome | to_json }}"
        dest: "%(out)s"
        mode: "0644"
"""


def test_long_observation_window_says_what_how_long_until_when_and_shows_progress(tmp_path):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "unit"))
    from stats_server import StatsServer
    from stats_fixtures import go_body

    steps = [{"body": go_body(packets=i * 100, dropped=0, accepted=i * 10)} for i in range(40)]
    out = tmp_path / "outcome.json"
    with StatsServer(steps) as server:
        playbook = tmp_path / "observe.yml"
        playbook.write_text(OBSERVE % {"url": server.url, "out": out})
        proc = subprocess.run([sys.executable, "-m", "ansible.cli.playbook", "-i", "localhost,", str(playbook)],
                              cwd=str(tmp_path), env=_env(tmp_path), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout
    # Before the window: the host, how long, until when (UTC), what is judged.
    assert re.search(r"localhost: observing /stats for 6 s, until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC "
                     r"\(7 samples every 1 s\)", proc.stdout), proc.stdout
    assert "judged: packet success rate >= 0.98" in proc.stdout
    # During it: a line per progress interval instead of one silent task. Up to 6 in 6 s; a loaded
    # machine runs fewer polls in the window (2 with two other test suites and 4 busy loops on 2 cores).
    # (ansible-core 2.21 names the task with its role: "[localhost]: mtproxy.cutover.verify_slo : Wait ...")
    assert len(re.findall(r"FAILED - RETRYING: \[localhost\]: (mtproxy\.cutover\.verify_slo : )?Wait for the observation "
                          r"window to end", proc.stdout)) >= 2, proc.stdout
    assert json.loads(out.read_text())["window_s"] == 6


# --- 9. keep_releases -------------------------------------------------------------------------

RELEASES = """
- name: Clean up the Go releases of a host
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Keep two releases
      ansible.builtin.include_role:
        name: mtproxy.cutover.stage_binary
        tasks_from: releases.yml
      vars:
        stage_binary_release_dir: "%(root)s/releases/go-new"
        stage_binary_keep_releases: 2
        # What mtproxy_freeze reported from the host's state.json (StateDir.releases_in_use).
        freeze_config_frozen:
          releases_in_use: ["%(ran)s"]
"""


def test_keep_releases_never_deletes_a_release_the_host_runs_or_ran(tmp_path):
    root = tmp_path / "opt"
    now = time.time()
    # go-ran is older than the two newest but named by the host's state file: it stays.
    for name, age in (("go-oldest", 400), ("go-ran", 300), ("go-newer", 200), ("go-new", 0)):
        release = root / "releases" / name
        release.mkdir(parents=True)
        (release / "mtproto-proxy-go").write_text("x")
        os.utime(str(release), (now - age, now - age))
    playbook = tmp_path / "releases.yml"
    playbook.write_text(RELEASES % {"root": root, "ran": root / "releases" / "go-ran"})
    proc = subprocess.run([sys.executable, "-m", "ansible.cli.playbook", "-i", "localhost,", str(playbook)],
                          cwd=str(tmp_path), env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout
    assert sorted(os.listdir(str(root / "releases"))) == ["go-new", "go-newer", "go-ran"]
