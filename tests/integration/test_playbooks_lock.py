"""Two runs on one booted systemd host (stand-in or real builds): the run lock decides, never timing.

A cutover is held at a known point, right after its flip (an after_flip hook that waits for a file the test
writes), while other runs start on the same host, as a second operator or a scheduled job would:
- a rollback, a second cutover and a drill meet its lock: each changes nothing and reports the host
  `locked` with the holder named, while the cutover goes on and reports what the host runs, on Go;
- rollback.yml with mtproxy_cutover_lock_takeover=true inside the canary window takes the host, rolls it back
  and says so; the cutover, at its next step, finds the host taken and reports it `locked`, on C, naming the
  rollback, instead of an SLO failure;
- a cutover whose controller is killed after its flip leaves a lock that the next run breaks (its process is
  gone), saying so; its own report ends `incomplete`;
- a lock of another controller within its lease stops a rollback until mtproxy_cutover_lock_break names it.
Every wait is bounded.
"""
import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from systemd_host import boot_host, put, sh

from conftest import REPO_ROOT
from test_playbooks_controller import _env

pytestmark = pytest.mark.slow

PLAYBOOKS = os.path.join(REPO_ROOT, "playbooks")
PREPARE = os.path.join(REPO_ROOT, "tests", "hosts", "prepare_proxy_host.yml")
LOCK_FILE = "/var/lib/mtproxy-cutover/MTProxy/run.lock"
WAIT_S = 300
INVENTORY = """
all:
  vars:
    ansible_connection: community.docker.docker
    ansible_python_interpreter: /usr/bin/python3
    mtproxy_cutover_artifacts_dir: %(artifacts)s
    mtproxy_cutover_canary_window_s: 3
    mtproxy_cutover_sample_interval_s: 1
    mtproxy_cutover_baseline_window_s: 2
    mtproxy_drill_window_s: 2
    # The host's C runs with -u nobody, the Go ignores -u: systemd keeps the drop for it.
    mtproxy_cutover_privilege_drop: service
  children:
    mtproxy:
      hosts:
        %(h1)s: {ansible_host: %(h1)s}
    mtproxy_canary:
      hosts:
        %(h1)s:
"""
# The after_flip hook that holds a cutover right after its flip until the test lets it go on.
HOLD = """
- name: Say the flip is done
  ansible.builtin.file:
    path: "{{ lock_test_dir }}/flipped"
    state: touch
    mode: "0644"
  delegate_to: localhost

- name: Wait until the test lets the run go on
  ansible.builtin.wait_for:
    path: "{{ lock_test_dir }}/go-on"
    timeout: %d
  delegate_to: localhost
""" % WAIT_S


class Host(object):
    def __init__(self, tmp, name):
        self.tmp, self.name = tmp, name
        self.artifacts = os.path.join(tmp, "artifacts")
        self.inventory = os.path.join(tmp, "inventory.yml")
        self.hold = os.path.join(tmp, "hold")
        with open(self.inventory, "w") as handle:
            handle.write(INVENTORY % {"artifacts": self.artifacts, "h1": name})
        with open(os.path.join(tmp, "hold.yml"), "w") as handle:
            handle.write(HOLD)
        self.env = dict(_env(pathlib.Path(tmp)), ANSIBLE_PIPELINING="1")

    def argv(self, playbook, run_id, *args):
        path = playbook if os.path.isabs(playbook) else os.path.join(PLAYBOOKS, playbook + ".yml")
        extra = [] if path == PREPARE else ["-e", "mtproxy_cutover_run_id=" + run_id,
                                            "-e", "@" + os.path.join(self.tmp, "go", "go-binary-vars.yml")]
        return [sys.executable, "-m", "ansible.cli.playbook", "-i", self.inventory, path] + extra + list(args)

    def run(self, playbook, run_id, *args):
        proc = subprocess.run(self.argv(playbook, run_id, *args), cwd=self.tmp, env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, timeout=900, check=False)
        return proc.returncode, proc.stdout, self.report(run_id)

    def report(self, run_id):
        path = os.path.join(self.artifacts, run_id, "report.json")
        if not os.path.exists(path):
            return None
        with open(path) as handle:
            return json.load(handle)

    @contextlib.contextmanager
    def held_cutover(self, run_id):
        """A cutover in the background, held right after its flip; yields its Popen. The caller lets it go on."""
        for name in ("flipped", "go-on"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.hold, name))
        os.makedirs(self.hold, exist_ok=True)
        log = open(os.path.join(self.tmp, run_id + ".log"), "w")
        proc = subprocess.Popen(self.argv("cutover", run_id, "-e", "lock_test_dir=" + self.hold,
                                          "-e", "mtproxy_cutover_after_flip_tasks=" + os.path.join(self.tmp, "hold.yml")),
                                cwd=self.tmp, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                universal_newlines=True, start_new_session=True)
        try:
            deadline = time.monotonic() + WAIT_S
            while not os.path.exists(os.path.join(self.hold, "flipped")):
                assert proc.poll() is None, self.log(run_id)
                assert time.monotonic() < deadline, "the cutover did not reach its flip in %d s" % WAIT_S
                time.sleep(0.2)
            yield proc
        finally:
            pathlib.Path(self.hold, "go-on").touch()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=WAIT_S)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            log.close()

    def go_on(self, proc):
        pathlib.Path(self.hold, "go-on").touch()
        proc.wait(timeout=WAIT_S)
        return proc.returncode

    def log(self, run_id):
        with open(os.path.join(self.tmp, run_id + ".log")) as handle:
            return handle.read()[-6000:]

    def lock(self):
        out = sh(self.name, "cat %s 2>/dev/null || true" % LOCK_FILE).strip()
        return json.loads(out) if out else None


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with boot_host("mtpx-lock") as (name, dummy):
        tmp = str(tmp_path_factory.mktemp("lock"))
        host = Host(tmp, name)
        proc = subprocess.run(host.argv(PREPARE, "", "-e", "mtproxy_test_stage_dir=" + os.path.join(tmp, "go")),
                              cwd=tmp, env=host.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=900, check=False)
        assert proc.returncode == 0, proc.stdout[-4000:]
        yield host


def _locked(report, host, holder):
    entry = report["hosts"][host]
    assert entry["result"] == "locked" and not entry["judged"], entry
    assert "is locked by run %s" % holder in entry["reason"], entry["reason"]
    assert "mtproxy_cutover_lock_break=%s" % holder in entry["reason"]
    assert report["result"] == "failed" and "held by another run: %s" % host in report["problems"]
    return entry


def test_runs_that_meet_a_cutover_holding_the_host_change_nothing_and_say_who_holds_it(host):
    with host.held_cutover("holder") as cutover:
        assert host.lock()["run_id"] == "holder" and host.lock()["playbook"] == "cutover"
        for playbook, run_id in (("rollback", "early-rollback"), ("cutover", "second-cutover"), ("drill", "drill-in")):
            rc, out, report = host.run(playbook, run_id)
            assert rc == 2, out[-6000:]
            entry = _locked(report, host.name, "holder")
            # Nothing of the host was touched: no freeze, flip or rollback record, and it still runs Go.
            assert not set(entry["stages"]) & {"freeze", "flip", "rollback", "prewarm"}, sorted(entry["stages"])
            assert entry["running"] == "go"
            # Its lock is the holder's still.
            assert host.lock()["run_id"] == "holder"
        assert host.go_on(cutover) == 0, host.log("holder")
    report = host.report("holder")
    assert report["result"] == "success", report["reason"]
    assert (report["hosts"][host.name]["result"], report["hosts"][host.name]["running"]) == ("on_go", "go")
    assert host.lock() is None


def test_an_emergency_rollback_takes_the_host_from_a_cutover_inside_its_window(host):
    rc, out, report = host.run("rollback", "back-to-c")
    assert rc == 0, out[-6000:]
    with host.held_cutover("taken-cutover") as cutover:
        rc, out, report = host.run("rollback", "emergency", "-e", "mtproxy_cutover_lock_takeover=true")
        assert rc == 0, out[-6000:]
        entry = report["hosts"][host.name]
        assert (entry["result"], entry["running"]) == ("rolled_back", "c"), entry
        assert entry["lock"]["taken_over_from"]["run_id"] == "taken-cutover"
        with open(os.path.join(host.artifacts, "emergency", "report.md")) as handle:
            assert "taken over from run taken-cutover (cutover from" in handle.read()
        assert host.go_on(cutover) == 2, host.log("taken-cutover")
    report = host.report("taken-cutover")
    entry = report["hosts"][host.name]
    # Not an SLO failure: the host was taken by the rollback, and it runs C.
    assert (entry["result"], entry["running"], entry["judged"]) == ("locked", "c", False), entry
    assert "no longer held by run taken-cutover: run emergency (rollback from" in entry["reason"], entry["reason"]
    assert report["result"] == "failed" and "held by another run: %s" % host.name in report["problems"]
    assert host.lock() is None


def test_a_lock_left_by_a_killed_controller_is_broken_by_the_next_run(host):
    with host.held_cutover("killed") as cutover:
        os.killpg(cutover.pid, signal.SIGKILL)
        cutover.wait(timeout=30)
        assert host.lock()["run_id"] == "killed"
    rc, out, report = host.run("rollback", "after-kill")
    assert rc == 0, out[-6000:]
    entry = report["hosts"][host.name]
    assert (entry["result"], entry["running"]) == ("rolled_back", "c"), entry
    assert entry["lock"]["previous"]["run_id"] == "killed"
    assert "controller process (pid %d on" % cutover.pid in entry["lock"]["broken"], entry["lock"]
    # The killed run's own report does not stay `running`: its watcher marks it incomplete.
    deadline = time.monotonic() + 60
    while host.report("killed")["result"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert host.report("killed")["result"] == "incomplete"


def test_a_lock_of_another_controller_stops_a_rollback_until_it_is_broken_by_name(host):
    now = time.time()
    other = {"run_id": "elsewhere-7", "playbook": "cutover", "controller": "ctl-b.example", "user": "op", "pid": 4242,
             "pid_start": 1, "taken_at": "2026-12-06T00:00:00Z", "lease_s": 3600, "lease_until": now + 3600,
             "lease_until_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600))}
    put(host.name, json.dumps(other), LOCK_FILE, 0o600)
    rc, out, report = host.run("rollback", "blocked")
    assert rc == 2, out[-6000:]
    _locked(report, host.name, "elsewhere-7")
    assert "from op@ctl-b.example" in report["hosts"][host.name]["reason"]
    rc, out, report = host.run("rollback", "broke-it", "-e", "mtproxy_cutover_lock_break=elsewhere-7")
    assert rc == 0, out[-6000:]
    entry = report["hosts"][host.name]
    assert (entry["result"], entry["running"]) == ("on_c", "c"), entry
    assert (entry["lock"]["broken"], entry["lock"]["previous"]["run_id"]) == ("break_run named it", "elsewhere-7")
    assert host.lock() is None
