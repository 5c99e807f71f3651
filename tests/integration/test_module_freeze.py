"""mtproxy_freeze run by ansible-core against a real systemd host (a test-host container).

The C proxy is the stand-in (its /proc/PID/cmdline shows the binary's argv, as the module's proof
needs) or the real build $MTPROXY_C_BINARY names; see systemd_host.install_proxies.
"""
import json
import time

import pytest
from systemd_host import ModuleHost, boot_host, cap_connections, install_proxies, put

pytestmark = pytest.mark.slow

SECRET = "0123456789abcdef0123456789abcdef"
STATE_DIR = "/var/lib/mtproxy-cutover"
MANIFEST = STATE_DIR + "/MTProxy/manifest.json"
C_BIN = "/opt/MTProxy/mtproto-proxy"
GO_BIN = "/opt/MTProxy/releases/go-0123456789ab/mtproto-proxy-go"
EXEC_START = cap_connections("%s -u nobody -p 18888 --http-stats -H 18443 -S %s "
                             "--aes-pwd proxy-secret proxy-multi.conf -M 1" % (C_BIN, SECRET))

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


class Host(ModuleHost):
    def __init__(self, name, workdir):
        super(Host, self).__init__(name, workdir, secrets=(SECRET,))
        # shown, so that a test sees ansible-core's deprecation of a result's "warnings"
        self.env["ANSIBLE_DEPRECATION_WARNINGS"] = "1"

    def put(self, path, content, mode=0o644):
        put(self.name, content, path, mode)

    def freeze(self, check_mode=False, diff=False, **args):
        """Run the module; returns (ansible-playbook's output, result dict)."""
        result = self.module("mtproxy_freeze", args, check=check_mode, diff=diff)
        return self.output, result

    def restart_proxy(self):
        self.sh("systemctl daemon-reload && systemctl restart MTProxy && systemctl is-active MTProxy")
        self.wait_cmdline()

    def wait_cmdline(self):
        # The stand-in rewrites its cmdline right after start: wait (bounded) for the exact argv.
        for _attempt in range(50):
            out = self.sh("pid=$(systemctl show -p MainPID --value MTProxy); tr '\\0' ' ' </proc/$pid/cmdline",
                          check=False)
            if out.startswith("/opt/") and "python" not in out.split(" ")[0]:
                return
            time.sleep(0.1)
        raise AssertionError("proxy cmdline never settled: %r" % out)


@pytest.fixture(scope="module")
def host():
    with boot_host("mtpx-freeze") as (name, workdir):
        install_proxies(name, C_BIN, GO_BIN)
        box = Host(name, workdir)
        box.put("/opt/MTProxy/proxy-multi.conf", "proxy_for 1 127.0.0.1:1;\ndefault 1;\n")
        box.put("/opt/MTProxy/proxy-secret", "aes-password-bytes-of-the-freeze-tests\n")
        box.put("/etc/systemd/system/MTProxy.service", UNIT % EXEC_START)
        box.restart_proxy()
        yield box


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
    assert any("/cmdline to every local user; use --mtproto-secret-file" in w for w in result["config_warnings"])
    assert "use --mtproto-secret-file" in out
    # Said once, as a task warning: a result key "warnings" would be shown twice (2.16) or deprecated (2.19+).
    assert "Passing `warnings`" not in out
    assert [w for w in result.get("warnings", []) if "use --mtproto-secret-file" in str(w)] != []
    assert len([w for w in result.get("warnings", []) if "use --mtproto-secret-file" in str(w)]) == 1
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
        assert '"index": %d, "unit": "2", "live": "1"' % (EXEC_START.split().index("-M") + 1) in result["msg"]
        assert_no_secret(out)
    finally:
        host.sh("sed -i 's/-M 2$/-M 1/' /etc/systemd/system/MTProxy.service && systemctl daemon-reload")


def test_flipped_host_is_recognised(host):
    go = GO_BIN
    dropin = "[Service]\nExecStart=\nExecStart=%s\n" % EXEC_START.replace(C_BIN, go, 1)
    host.put("/etc/systemd/system/MTProxy.service.d/99-mtproxy-cutover.conf", dropin)
    host.put(STATE_DIR + "/MTProxy/state.json", json.dumps({"schema": 1, "current": "go", "binary": go}), 0o600)
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
