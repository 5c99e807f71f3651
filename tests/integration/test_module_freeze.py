"""mtproxy_freeze run by ansible-core against a real systemd host (a test-host container).

The fake C proxy is tests/standin/mtproxy_standin.py when present, started through a launcher that
rewrites its own /proc/self/cmdline: a script's cmdline starts with the interpreter, but the
module compares the live argv with the unit's ExecStart word for word, as it must for the real
ELF binary.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import COLLECTIONS_ROOT, REPO_ROOT

SECRET = "0123456789abcdef0123456789abcdef"
STATE_DIR = "/var/lib/mtproxy-cutover"
MANIFEST = STATE_DIR + "/MTProxy/manifest.json"
STANDIN = os.path.join(REPO_ROOT, "tests", "standin", "mtproxy_standin.py")
WIRE = os.path.join(REPO_ROOT, "tests", "standin", "mtproxy_wire.py")
EXEC_START = ("/opt/MTProxy/mtproto-proxy -u nobody -p 18888 --http-stats -H 18443 -S %s "
              "--aes-pwd proxy-secret proxy-multi.conf -M 1" % SECRET)

LAUNCHER = r'''#!/usr/bin/python3
"""Fake C proxy: show the exact argv in /proc/self/cmdline, then run the stand-in (or just listen)."""
import os
import runpy
import socket
import sys
import time


def masquerade():
    with open("/proc/self/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    start, end = int(fields[45]), int(fields[46])
    want = b"\0".join(os.fsencode(arg) for arg in sys.argv) + b"\0"
    with open("/proc/self/mem", "r+b", buffering=0) as mem:
        mem.seek(start)
        length = len(mem.read(end - start))
        mem.seek(start)
        mem.write(want + b"\0" * (length - len(want)))


def listen_forever():
    ports = [sys.argv[sys.argv.index(flag) + 1] for flag in ("-p", "-H") if flag in sys.argv]
    socks = []
    for port in ports:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", int(port)))
        sock.listen(8)
        socks.append(sock)
    while True:
        time.sleep(3600)


masquerade()
standin = "/opt/MTProxy/.standin/mtproxy_standin.py"
if os.path.exists(standin):
    sys.path.insert(0, os.path.dirname(standin))  # its mtproxy_wire beside it
    runpy.run_path(standin, run_name="__main__")
else:
    listen_forever()
'''

UNIT = """[Unit]
Description=MTProxy (test)

[Service]
Type=simple
WorkingDirectory=/opt/MTProxy
ExecStart=%s
Restart=no

[Install]
WantedBy=multi-user.target
"""


def _docker_ok():
    if not shutil.which("docker"):
        return "docker CLI not found"
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return None if probe.returncode == 0 else "docker engine not reachable"


def _collections_path():
    default = os.path.join(REPO_ROOT, ".venv", "collections")
    extra = os.environ.get("MTPROXY_TEST_COLLECTIONS_PATH", default)
    return os.pathsep.join([COLLECTIONS_ROOT, extra])


def _ansible_bin():
    # The ansible-core that runs these tests (make integration-cores: the oldest and the newest).
    local = os.path.join(os.path.dirname(sys.executable), "ansible")
    return local if os.path.exists(local) else shutil.which("ansible")


class Host(object):
    def __init__(self, name):
        self.name = name

    def sh(self, script, check=True, timeout=60):
        proc = subprocess.run(["docker", "exec", self.name, "bash", "-c", script],
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError("in %s: %s\nrc=%d\n%s%s" % (self.name, script, proc.returncode, proc.stdout, proc.stderr))
        return proc.stdout

    def put(self, path, content, mode="0644"):
        subprocess.run(["docker", "exec", "-i", self.name, "bash", "-c",
                        "mkdir -p \"$(dirname %s)\" && cat > %s && chmod %s %s" % (path, path, mode, path)],
                       input=content.encode() if isinstance(content, str) else content, check=True, timeout=30)

    def freeze(self, check_mode=False, diff=False, **args):
        """Run the module ad hoc; returns (raw stdout, result dict)."""
        cmd = [_ansible_bin(), "all", "-i", self.name + ",", "-c", "community.docker.docker",
               "-e", "ansible_python_interpreter=/usr/bin/python3",
               "-m", "mtproxy.cutover.mtproxy_freeze", "-a", json.dumps(args)]
        if check_mode:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=_collections_path(), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
                   ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_HOST_KEY_CHECKING="0",
                   ANSIBLE_NOCOLOR="1")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, check=False)
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError("ansible output is not JSON (rc=%d):\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr))
        result = doc["plays"][0]["tasks"][0]["hosts"][self.name]
        return proc.stdout + proc.stderr, result

    def restart_proxy(self):
        self.sh("systemctl daemon-reload && systemctl restart MTProxy && systemctl is-active MTProxy")
        self.wait_cmdline()

    def wait_cmdline(self):
        # The launcher rewrites its cmdline right after start: wait (bounded) for the exact argv.
        for _attempt in range(50):
            out = self.sh("pid=$(systemctl show -p MainPID --value MTProxy); tr '\\0' ' ' </proc/$pid/cmdline",
                          check=False)
            if out.startswith("/opt/") and "python" not in out.split(" ")[0]:
                return
            time.sleep(0.1)
        raise AssertionError("proxy cmdline never settled: %r" % out)


@pytest.fixture(scope="module")
def host():
    reason = _docker_ok()
    if reason:
        pytest.skip(reason)
    if not _ansible_bin():
        pytest.skip("ansible not installed")
    build = subprocess.run([os.path.join(REPO_ROOT, "tests", "hosts", "build-image.sh")],
                           capture_output=True, text=True, timeout=900, check=False)
    if build.returncode != 0:
        pytest.skip("test-host image could not be built: %s" % build.stderr[-500:])
    image = build.stdout.strip().splitlines()[-1]
    name = "mtproxy-freeze-it-%d" % os.getpid()
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60, check=False)
    subprocess.run(["docker", "run", "-d", "--name", name, "--network", "none", "--cap-add", "SYS_ADMIN",
                    "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run",
                    "--tmpfs", "/run/lock", "--tmpfs", "/tmp", "--security-opt", "seccomp=unconfined", image],
                   check=True, capture_output=True, timeout=120)
    try:
        box = Host(name)
        for _attempt in range(120):
            state = box.sh("systemctl is-system-running || true", check=False).strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.5)
        box.put("/opt/MTProxy/mtproto-proxy", LAUNCHER, "0755")
        if os.path.exists(STANDIN):
            for module in (STANDIN, WIRE):
                with open(module, "rb") as handle:
                    box.put("/opt/MTProxy/.standin/" + os.path.basename(module), handle.read(), "0644")
        box.put("/opt/MTProxy/proxy-multi.conf", "proxy_for 1 127.0.0.1:1;\ndefault 1;\n")
        box.put("/opt/MTProxy/proxy-secret", "aes-password-bytes\n")
        box.put("/etc/systemd/system/MTProxy.service", UNIT % EXEC_START)
        box.restart_proxy()
        yield box
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=120, check=False)


def assert_no_secret(text):
    assert SECRET not in text


def test_not_running_service_is_refused(host):
    out, result = host.freeze(service="Nope")
    assert result.get("failed")
    assert "service Nope.service is not running (LoadState=not-found" in result["msg"]


def test_check_mode_writes_nothing(host):
    out, result = host.freeze(check_mode=True, diff=True, service="MTProxy")
    assert not result.get("failed"), result
    assert result["changed"] and result["status"] == "frozen"
    assert '"argv"' in result["diff"]["after"] and result["diff"]["before"] == ""
    assert_no_secret(out)
    assert host.sh("test -e %s && echo yes || echo no" % MANIFEST).strip() == "no"


def test_first_freeze_writes_private_manifest(host):
    out, result = host.freeze(service="MTProxy")
    assert not result.get("failed"), result
    assert result["changed"] and result["status"] == "frozen" and result["current"] == "c"
    assert result["stats_url"] == "http://127.0.0.1:18888/stats"
    assert result["stats_port"] == 18888 and result["client_ports"] == [18443]
    assert result["manifest_path"] == MANIFEST
    manifest = result["manifest"]
    assert manifest["argv"][manifest["argv"].index("-S") + 1] == "<redacted>"
    files = dict((f["role"], f) for f in manifest["files"])
    assert files["config"]["resolved"] == "/opt/MTProxy/proxy-multi.conf" and len(files["config"]["sha256"]) == 64
    assert files["aes_pwd"]["resolved"] == "/opt/MTProxy/proxy-secret"
    assert manifest["unit"]["working_directory"] == "/opt/MTProxy"
    assert manifest["binary"] == "/opt/MTProxy/mtproto-proxy"
    # -S on the command line: warned, fix named
    assert any("/cmdline to every local user; use --mtproto-secret-file" in w for w in result["warnings"])
    assert "use --mtproto-secret-file" in out
    assert_no_secret(out)
    # host copy: root-only, complete
    assert host.sh("stat -c '%%a %%U' %s" % MANIFEST).split() == ["600", "root"]
    assert host.sh("stat -c '%%a' %s/MTProxy" % STATE_DIR).strip() == "700"
    on_host = json.loads(host.sh("cat %s" % MANIFEST))
    assert SECRET in on_host["argv"] and on_host["schema"] == 1


def test_first_freeze_checks_stats_and_keeps_a_baseline(host):
    host.sh("rm -rf %s/MTProxy" % STATE_DIR)
    out, result = host.freeze(service="MTProxy", baseline_samples=3, baseline_interval=0.2)
    assert not result.get("failed"), result
    assert result["status"] == "frozen" and result["flavor"] == "c" and result["stats_version"]
    assert result["baseline_taken"] is True and result["baseline"]["flavor"] == "c"
    assert result["baseline"]["samples_ok"] == 3
    assert result["baseline_path"] == STATE_DIR + "/MTProxy/baseline.json"
    assert host.sh("stat -c '%%a %%U' %s" % result["baseline_path"]).split() == ["600", "root"]
    assert json.loads(host.sh("cat %s" % result["baseline_path"])) == result["baseline"]
    assert_no_secret(out)
    # seen again: one scrape, the kept baseline comes back, nothing changes
    _out, again = host.freeze(service="MTProxy", baseline_samples=3, baseline_interval=0.2)
    assert again["status"] == "unchanged" and again["changed"] is False
    assert again["baseline_taken"] is False and again["baseline"] == result["baseline"]


def test_second_run_unchanged(host):
    out, result = host.freeze(service="MTProxy")
    assert not result.get("failed"), result
    assert not result["changed"] and result["status"] == "unchanged" and result["drift"] == []
    assert_no_secret(out)


def test_config_edit_is_drift_then_refreeze(host):
    host.sh("echo '# edited' >> /opt/MTProxy/proxy-multi.conf")
    out, result = host.freeze(service="MTProxy")
    assert result.get("failed")
    assert "files[config] (/opt/MTProxy/proxy-multi.conf: content changed, same path)" in result["msg"]
    assert [d["field"] for d in result["drift"]] == ["files[config]"]
    assert_no_secret(out)

    out, result = host.freeze(service="MTProxy", refreeze=True)
    assert not result.get("failed"), result
    assert result["changed"] and result["status"] == "refrozen"
    assert [d["field"] for d in result["drift"]] == ["files[config]"]
    assert_no_secret(out)
    _out, result = host.freeze(service="MTProxy")
    assert result["status"] == "unchanged"


def test_unit_edited_without_restart_is_refused(host):
    host.sh("sed -i 's/-M 1$/-M 2/' /etc/systemd/system/MTProxy.service && systemctl daemon-reload")
    try:
        out, result = host.freeze(service="MTProxy", refreeze=True)
        assert result.get("failed")
        assert "live argv differs from unit MTProxy.service" in result["msg"]
        assert '"index": 14, "unit": "2", "live": "1"' in result["msg"]
        assert_no_secret(out)
    finally:
        host.sh("sed -i 's/-M 2$/-M 1/' /etc/systemd/system/MTProxy.service && systemctl daemon-reload")


def test_flipped_host_is_recognised(host):
    go = "/opt/MTProxy/releases/go-0123456789ab/mtproto-proxy-go"
    # The stand-in itself at a Go-named path answers /stats as the Go port does.
    host.sh("mkdir -p $(dirname %s) && install -m 0755 /opt/MTProxy/.standin/mtproxy_standin.py %s"
            " && install -m 0644 /opt/MTProxy/.standin/mtproxy_wire.py $(dirname %s)/" % (go, go, go))
    dropin = "[Service]\nExecStart=\nExecStart=%s\n" % EXEC_START.replace("/opt/MTProxy/mtproto-proxy", go, 1)
    host.put("/etc/systemd/system/MTProxy.service.d/99-mtproxy-cutover.conf", dropin)
    host.put(STATE_DIR + "/MTProxy/state.json", json.dumps({"schema": 1, "current": "go", "binary": go}), "0600")
    host.restart_proxy()
    try:
        out, result = host.freeze(service="MTProxy", baseline_samples=3, baseline_interval=0.2)
        assert not result.get("failed"), result.get("msg")
        assert result["status"] == "unchanged" and result["current"] == "go" and not result["changed"]
        assert result["flavor"] == "go" and result["baseline_taken"] is False

        out, result = host.freeze(service="MTProxy", state_dir="/var/lib/other-state")
        assert result.get("failed") and "is not running the C binary" in result["msg"]

        host.sh("echo '# edited again' >> /opt/MTProxy/proxy-multi.conf")
        out, result = host.freeze(service="MTProxy", refreeze=True)
        assert result.get("failed") and "refusing to re-freeze" in result["msg"]
        assert_no_secret(out)
    finally:
        host.sh("rm -rf /etc/systemd/system/MTProxy.service.d %s/MTProxy/state.json" % STATE_DIR)
        host.restart_proxy()
