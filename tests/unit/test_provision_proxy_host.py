"""tests/hosts/provision_proxy_host.py, which lays out every test host: files are rewritten only when
they differ, and a unit is restarted only when a file it depends on was rewritten. systemctl is a
recorder on PATH here; the scenarios run the script on real systemd hosts."""
import grp
import json
import os
import stat
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(os.path.dirname(HERE), "hosts", "provision_proxy_host.py")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chowns to root like on a host")


def _provision(tmp_path, spec):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "systemctl.calls"
    recorder = bin_dir / "systemctl"
    recorder.write_text('#!/bin/sh\necho "$*" >> %s\n' % calls)
    recorder.chmod(0o755)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    if calls.exists():
        calls.unlink()
    env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]))
    done = subprocess.run([sys.executable, SCRIPT, str(spec_file)], env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout), calls.read_text().splitlines() if calls.exists() else []


def _spec(tmp_path, config_text):
    root = tmp_path / "host"
    return {
        "directories": [{"path": str(root), "mode": "0755"}],
        "files": [
            {"path": str(root / "proxy-multi.conf"), "mode": "0644", "content": config_text},
            {"path": str(root / "proxy-secret"), "mode": "0640", "group": "nogroup", "content": "pwd"},
            {"path": str(root / "client.unit"), "mode": "0644", "content": "[Service]\n"},
        ],
        "copies": [{"src": str(root / "proxy-multi.conf"), "dest": str(root / "pristine"), "mode": "0600"}],
        "units": [
            {"name": "proxy.service", "restart_on": [str(root / "proxy-multi.conf")]},
            {"name": "client.service", "restart_on": [str(root / "client.unit")]},
        ],
    }


def test_a_first_run_writes_everything_and_restarts_each_unit(tmp_path):
    result, calls = _provision(tmp_path, _spec(tmp_path, "default 2;\n"))
    root = tmp_path / "host"
    assert result["changed"] is True
    assert sorted(result["restarted"]) == ["client.service", "proxy.service"]
    assert (root / "pristine").read_text() == "default 2;\n"
    secret = os.stat(root / "proxy-secret")
    assert stat.S_IMODE(secret.st_mode) == 0o640 and secret.st_uid == 0
    assert secret.st_gid == grp.getgrnam("nogroup").gr_gid
    assert calls == ["daemon-reload", "enable --quiet proxy.service", "restart proxy.service",
                     "enable --quiet client.service", "restart client.service"]


def test_a_second_run_changes_nothing_and_only_starts(tmp_path):
    _provision(tmp_path, _spec(tmp_path, "default 2;\n"))
    result, calls = _provision(tmp_path, _spec(tmp_path, "default 2;\n"))
    assert result == {"changed": False, "written": [], "restarted": []}
    assert "start proxy.service" in calls and "start client.service" in calls


def test_a_changed_file_restarts_only_the_units_that_read_it(tmp_path):
    _provision(tmp_path, _spec(tmp_path, "default 2;\n"))
    result, calls = _provision(tmp_path, _spec(tmp_path, "default 3;\n"))
    root = tmp_path / "host"
    assert result["restarted"] == ["proxy.service"]
    assert sorted(result["written"]) == sorted([str(root / "proxy-multi.conf"), str(root / "pristine")])
    assert "start client.service" in calls


def test_a_mode_change_alone_rewrites_the_file(tmp_path):
    _provision(tmp_path, _spec(tmp_path, "default 2;\n"))
    os.chmod(tmp_path / "host" / "proxy-secret", 0o644)
    result, _calls = _provision(tmp_path, _spec(tmp_path, "default 2;\n"))
    assert result["written"] == [str(tmp_path / "host" / "proxy-secret")]
    assert stat.S_IMODE(os.stat(tmp_path / "host" / "proxy-secret").st_mode) == 0o640
