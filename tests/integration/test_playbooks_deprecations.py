"""The playbooks give no deprecation warning on the ansible-core that runs these tests.

`make test` runs this file with ansible-core 2.19 and again with the oldest and the newest supported
core (2.16, 2.21: make integration-cores), so that a feature the newest core deprecates (and a later one
removes) shows before a user sees "[DEPRECATION WARNING]" on every run. Each playbook runs against an
inventory whose hosts never answer, which exercises what runs on the controller: the preflight (every
setting checked), the reachability check and the report.
"""
import hashlib
import os
import socket
import subprocess
import sys

import pytest

from conftest import COLLECTIONS_ROOT, REPO_ROOT

INVENTORY = """
all:
  children:
    mtproxy:
      hosts:
        ghost1: {ansible_connection: ssh, ansible_host: 127.0.0.1, ansible_port: %d, ansible_user: nobody}
    mtproxy_canary:
      hosts:
        ghost1:
"""


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("playbook", ["cutover", "rollback", "drill"])
def test_playbook_runs_without_a_deprecation_warning(tmp_path, playbook):
    go = tmp_path / "mtproto-proxy-go"
    go.write_bytes(b"#!/bin/sh\necho go\n")
    (tmp_path / "inventory.yml").write_text(INVENTORY % _closed_port())
    (tmp_path / "ansible.cfg").write_text("[defaults]\ntimeout = 5\nhost_key_checking = False\n")
    extra = os.environ.get("MTPROXY_TEST_COLLECTIONS_PATH", os.path.join(REPO_ROOT, ".venv", "collections"))
    env = dict(os.environ, HOME=str(tmp_path), ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=os.pathsep.join([COLLECTIONS_ROOT, extra]),
               ANSIBLE_DEPRECATION_WARNINGS="1", ANSIBLE_LOCALHOST_WARNING="0")
    argv = [sys.executable, "-m", "ansible.cli.playbook", "-i", str(tmp_path / "inventory.yml"),
            os.path.join(REPO_ROOT, "playbooks", playbook + ".yml"),
            "-e", "mtproxy_cutover_artifacts_dir=%s" % (tmp_path / "artifacts"),
            "-e", "mtproxy_cutover_go_binary=%s" % go,
            "-e", "mtproxy_cutover_go_sha256=%s" % hashlib.sha256(go.read_bytes()).hexdigest()]
    proc = subprocess.run(argv, cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=600, check=False)
    # The host never answers: the run stops (rc 2) after the preflight, with its report written.
    assert proc.returncode == 2 and os.path.isdir(str(tmp_path / "artifacts")), proc.stdout
    warnings = [line for line in proc.stdout.splitlines() if "DEPRECATION" in line]
    assert warnings == [], "\n".join(warnings)
