"""The playbooks against two booted systemd hosts (stand-in proxies), in file order, as an operator runs them.

- a canary group other than mtproxy_canary, set in the inventory (not with -e), decides the pre-warm, the flip
  order and the longer window, while the inventory also has a decoy mtproxy_canary group;
- daily-config-refresh (field case): proxy-multi.conf refreshed on a host already on Go, the cutover run again:
  the freeze refuses the drift, the run fails, and the host is reported as what it runs, on_go;
- drill.yml on the canary, which runs Go, refuses before any change (its baseline would be a switch from Go);
- rollback.yml brings both back, proven on C;
- exec-at-prefix (field case): `ExecStart=@...` (explicit argv[0]) is refused at the freeze, before anything is
  staged: the run fails, the host is proven on C, and the report says why and the way forward instead of `success`.
"""
import contextlib
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

import pytest
from systemd_host import boot_host, sh

from conftest import REPO_ROOT
from test_playbooks_controller import _env

pytestmark = pytest.mark.slow

PLAYBOOKS = os.path.join(REPO_ROOT, "playbooks")
PREPARE = os.path.join(REPO_ROOT, "tests", "hosts", "prepare_proxy_host.yml")
UNIT = "/etc/systemd/system/MTProxy.service"
FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures")
DROPIN = "/etc/systemd/system/MTProxy.service.d/99-mtproxy-cutover.conf"
INVENTORY = """
all:
  vars:
    ansible_connection: community.docker.docker
    ansible_python_interpreter: /usr/bin/python3
    mtproxy_cutover_artifacts_dir: %(artifacts)s
    # Set in the inventory: the plays must honour it, not only the pre-warm.
    mtproxy_cutover_canary_group: eu_canaries
    mtproxy_cutover_canary_window_s: 5
    mtproxy_cutover_wave_window_s: 3
    mtproxy_cutover_sample_interval_s: 1
    mtproxy_cutover_baseline_window_s: 2
    mtproxy_cutover_serial: [1]
    # The hosts' C runs with -u nobody, the Go ignores -u: systemd keeps the drop for it.
    mtproxy_cutover_privilege_drop: service
  children:
    mtproxy:
      hosts:
        %(h1)s: {ansible_host: %(h1)s}
        %(h2)s: {ansible_host: %(h2)s}
    eu_canaries:
      hosts:
        %(h2)s:
    # A decoy: the collection's default canary group, which this run must not use.
    mtproxy_canary:
      hosts:
        %(h1)s:
"""


class Fleet(object):
    def __init__(self, tmp, h1, h2):
        self.tmp, self.h1, self.h2 = tmp, h1, h2
        self.artifacts = os.path.join(tmp, "artifacts")
        self.inventory = os.path.join(tmp, "inventory.yml")
        with open(self.inventory, "w") as handle:
            handle.write(INVENTORY % {"artifacts": self.artifacts, "h1": h1, "h2": h2})
        self.env = dict(_env(pathlib.Path(tmp)), ANSIBLE_PIPELINING="1", ANSIBLE_FORKS="10")

    def playbook(self, path, *args):
        proc = subprocess.run([sys.executable, "-m", "ansible.cli.playbook", "-i", self.inventory, path] + list(args),
                              cwd=self.tmp, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=900, check=False)
        return proc.returncode, proc.stdout

    def run(self, playbook, run_id, *args):
        rc, out = self.playbook(os.path.join(PLAYBOOKS, playbook + ".yml"), "-e", "mtproxy_cutover_run_id=" + run_id,
                                "-e", "@" + os.path.join(self.tmp, "go", "go-binary-vars.yml"), *args)
        with open(os.path.join(self.artifacts, run_id, "report.json")) as handle:
            return rc, out, json.load(handle)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with contextlib.ExitStack() as stack:
        h1, dummy = stack.enter_context(boot_host("mtpx-pb-h1"))
        h2, dummy = stack.enter_context(boot_host("mtpx-pb-h2"))
        fleet = Fleet(str(tmp_path_factory.mktemp("fleet")), h1, h2)
        rc, out = fleet.playbook(PREPARE, "-e", "mtproxy_test_stage_dir=" + os.path.join(fleet.tmp, "go"))
        assert rc == 0, out[-4000:]
        yield fleet


def _steps(entry):
    return [(span["step"], span.get("label")) for span in entry["spans"]]


def test_a_dual_run_report_for_another_architecture_stops_the_cutover_before_anything_changes(fleet):
    # arm64.json and pass.json (amd64) pass every guard: the one for the other architecture than the hosts'
    # (containers on this machine) fails on go_arch alone.
    other = "pass.json" if platform.machine() == "aarch64" else "arm64.json"
    with open(os.path.join(FIXTURES, "dualrun", other)) as handle:
        document = json.load(handle)
    document["generated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path = os.path.join(fleet.tmp, "arm64-dualrun.json")
    with open(path, "w") as handle:
        json.dump(document, handle)
    rc, out, report = fleet.run("cutover", "wrong-arch", "-e", "mtproxy_cutover_dualrun_report=" + path)
    assert rc == 2, out[-6000:]
    assert report["dualrun"]["verdict"] == "fail" and report["dualrun"]["path"] == path
    assert [f["kind"] for f in report["dualrun"]["failures"]] == ["arch", "arch"]
    for host in (fleet.h1, fleet.h2):
        assert "go_arch is %s but host %s runs %s" % (document["go_arch"], host, platform.machine()) in report["reason"], \
            report["reason"]
        entry = report["hosts"][host]
        # Never frozen: nothing was recorded on the host, so the report does not claim what it runs.
        assert (entry["result"], entry["spans"]) == ("unknown", []) and "never frozen" in entry["reason"], entry
        assert sh(host, "test -e /var/lib/mtproxy-cutover/MTProxy/manifest.json && echo frozen || echo none").strip() == "none"
    assert "Nothing was changed on any host" in report["reason"] and "mtproxy_cutover_dualrun_gate: skip" in report["reason"]
    with open(os.path.join(fleet.artifacts, "wrong-arch", "report.md")) as handle:
        assert "dual-run evidence (runbook precondition 1): **fail**" in handle.read()


def test_a_canary_group_set_in_the_inventory_decides_prewarm_flip_order_and_window(fleet):
    rc, out, report = fleet.run("cutover", "first")
    assert rc == 0, out[-6000:]
    assert report["result"] == "success", report["reason"]
    # The harness's evidence (tests/hosts/stage_go_binary.yml) passed the gate; the report keeps its figures.
    assert report["dualrun"]["verdict"] == "pass" and report["dualrun"]["sha256"]
    assert all(guard["held"] for entry in report["dualrun"]["entries"] for guard in entry["guards"])
    canary, wave = report["hosts"][fleet.h2], report["hosts"][fleet.h1]
    assert (canary["result"], canary["role"], canary["wave"], canary["running"]) == ("on_go", "canary", 0, "go")
    assert (wave["result"], wave["role"], wave["wave"], wave["running"]) == ("on_go", "wave", 1, "go")
    # Pre-warmed: the canary of eu_canaries, not the decoy mtproxy_canary.
    assert "prewarm" in canary["stages"] and "prewarm" not in wave["stages"]
    # Flipped first, one at a time, observed for the canary window; the wave host after it, for the wave window.
    assert canary["windows"]["flip"][0]["finished_at"] <= wave["windows"]["flip"][0]["started_at"]
    assert ("observe", "5 s") in _steps(canary) and ("observe", "3 s") in _steps(wave)
    assert report["settings"]["canary_group"] == "eu_canaries"


def test_the_drill_refuses_a_host_on_go_and_changes_nothing(fleet):
    main_pid = "systemctl show -p MainPID --value MTProxy.service"
    before = sh(fleet.h2, main_pid)
    rc, out, report = fleet.run("drill", "drill-on-go")
    assert rc == 2, out[-6000:]
    entry = report["hosts"][fleet.h2]
    assert (entry["result"], entry["running"]) == ("on_go", "go"), entry
    assert ("%s runs go, not C: the drill measures C -> Go -> C" % fleet.h2) in entry["reason"], entry["reason"]
    assert "rollback.yml --limit %s" % fleet.h2 in entry["reason"]
    assert not set(entry["stages"]) & {"prewarm", "flip", "rollback"}, sorted(entry["stages"])
    assert sh(fleet.h2, main_pid) == before
    assert not os.path.exists(os.path.join(fleet.artifacts, "drill-on-go", "phase8-cutover-report.json"))


def test_daily_config_refresh_on_a_host_on_go_is_reported_as_what_it_runs(fleet):
    sh(fleet.h2, "echo 'proxy_for 4 127.0.0.1:18884;' >> /opt/MTProxy/proxy-multi.conf")
    rc, out, report = fleet.run("cutover", "refresh", "--limit", fleet.h2)
    assert rc == 2, out[-6000:]
    entry = report["hosts"][fleet.h2]
    # The freeze refused the drift before anything changed; what the host runs is read from it: Go.
    assert (entry["result"], entry["running"]) == ("on_go", "go"), entry
    assert "proxy-multi.conf" in entry["reason"] and report["result"] == "failed"
    assert "flip" not in entry["stages"]


def test_rollback_brings_every_host_back_proven_on_c(fleet):
    rc, out, report = fleet.run("rollback", "back")
    assert rc == 0, out[-6000:]
    assert report["result"] == "success", report["reason"]
    assert {host: (entry["result"], entry["running"]) for host, entry in report["hosts"].items()} == {
        fleet.h1: ("rolled_back", "c"), fleet.h2: ("rolled_back", "c")}


def test_an_explicit_argv0_is_refused_at_the_freeze_and_fails_the_run_with_the_host_proven_on_c(fleet):
    # exec-at-prefix: the unit names argv[0] itself (`@`); here the program path again, which the stand-in (a
    # script, whose argv[0] the kernel replaces) keeps, so that the freeze passes as it does for the real binary.
    sh(fleet.h1, "sed -i 's|^ExecStart=/opt/MTProxy/mtproto-proxy |ExecStart=@/opt/MTProxy/mtproto-proxy "
                 "/opt/MTProxy/mtproto-proxy |' %s && systemctl daemon-reload && systemctl restart MTProxy.service" % UNIT)
    assert "ExecStart=@/opt/MTProxy/mtproto-proxy /opt/MTProxy/mtproto-proxy -u" in sh(fleet.h1, "cat %s" % UNIT)
    rc, out, report = fleet.run("cutover", "argv0", "--limit", fleet.h1, "-e", "mtproxy_cutover_refreeze=true",
                                "-e", "mtproxy_cutover_dualrun_gate=skip")
    assert rc == 2, out[-6000:]
    # The opt-out of the dual-run gate is in the report.
    assert (report["dualrun"]["verdict"], report["dualrun"]["skipped"]) == ("skipped", True)
    with open(os.path.join(fleet.artifacts, "argv0", "report.md")) as handle:
        assert "dual-run evidence (runbook precondition 1): **not checked** (mtproxy_cutover_dualrun_gate: skip)" in handle.read()
    entry = report["hosts"][fleet.h1]
    assert (entry["result"], entry["running"], entry["proven"]) == ("on_c", "c", True), entry
    # Proven from the manifest the first test's freeze wrote: the refused freeze keeps it and changes nothing.
    assert report["result"] == "failed" and "never judged: %s" % fleet.h1 in report["problems"], report["problems"]
    assert "ExecStart starts with the '@' prefix" in entry["reason"] and "Way forward" in entry["reason"], entry["reason"]
    assert [span["step"] for span in entry["spans"]] == ["freeze"]
    assert sh(fleet.h1, "test -e %s && echo present || echo absent" % DROPIN).strip() == "absent"
    assert "cutover failed" in out and fleet.h1 in out
