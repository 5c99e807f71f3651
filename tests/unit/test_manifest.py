"""Freeze manifest: build, compare (drift), redact. No secret may survive redaction."""
import copy
import hashlib
import json
import os

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import REDACTED, parse_argv
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.manifest import (
    BINARY_FIELDS, SCHEMA, build_manifest, compare_manifests, describe_drift, file_entries,
    redact_manifest, resolve_path, sha256_file, stats_url)

SECRET = "00112233445566778899aabbccddeeff"
TAG = "ffeeddccbbaa99887766554433221100"
ENV_SECRET = "s3cr3t-from-environment"


def sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def host(tmp_path):
    workdir = tmp_path / "opt"
    workdir.mkdir()
    (workdir / "proxy-multi.conf").write_bytes(b"proxy_for 1 149.154.175.50:8888;\n")
    (workdir / "proxy-secret").write_bytes(b"\x01\x02aes")
    (workdir / "mtproto-proxy").write_bytes(b"\x7fELF c binary")
    return workdir


def live_argv(workdir, secret=SECRET):
    return [str(workdir / "mtproto-proxy"), "-u", "nobody", "-p", "8888", "--http-stats", "-H", "443",
            "-S", secret, "-P", TAG, "--aes-pwd", "proxy-secret", "proxy-multi.conf", "-M", "1", "-l", "/var/log/p.log"]


def make(workdir, argv=None, unit_overrides=None):
    argv = argv or live_argv(workdir)
    unit = {
        "fragment_path": "/etc/systemd/system/MTProxy.service",
        "fragment_sha256": sha(b"fragment"),
        "drop_ins": [{"path": "/etc/systemd/system/MTProxy.service.d/10-limits.conf", "sha256": sha(b"d")}],
        "exec_start": " ".join(argv),
        "exec_start_argv": list(argv),
        "user": None,
        "group": None,
        "working_directory": str(workdir),
        "environment": {"MTPROXY_SECRET": ENV_SECRET, "LANG": "C"},
        "environment_files": [{"path": "/etc/default/mtproxy", "sha256": None, "optional": True}],
    }
    unit.update(unit_overrides or {})
    files = file_entries(parse_argv(argv), str(workdir))
    binary = str(workdir / "mtproto-proxy")
    return build_manifest("MTProxy", "MTProxy.service", "2026-11-27T00:00:00Z", unit, argv, binary,
                          sha256_file(binary), files, warnings=["pre-existing"], pid=4242)


def assert_no_secret(value):
    text = json.dumps(value).lower()
    for secret in (SECRET, TAG, ENV_SECRET):
        assert secret not in text


def test_build_manifest_schema(host):
    manifest = make(host)
    assert manifest["schema"] == SCHEMA == 1
    assert set(manifest) >= {"schema", "service", "unit_name", "frozen_at", "unit", "binary", "binary_realpath",
                             "binary_sha256", "argv", "stats_port", "http_stats", "client_ports", "workers",
                             "stats_url", "files", "warnings"}
    assert manifest["stats_port"] == 8888 and manifest["client_ports"] == [443] and manifest["workers"] == 1
    assert manifest["http_stats"] is True
    assert manifest["stats_url"] == "http://127.0.0.1:8888/stats"
    assert manifest["argv"][manifest["argv"].index("-S") + 1] == SECRET  # host copy is complete
    files = dict((f["role"], f) for f in manifest["files"])
    assert files["config"] == {"role": "config", "path": "proxy-multi.conf",
                               "resolved": str(host / "proxy-multi.conf"),
                               "sha256": sha(b"proxy_for 1 149.154.175.50:8888;\n")}
    assert files["aes_pwd"]["sha256"] == sha(b"\x01\x02aes")
    assert files["log"] == {"role": "log", "path": "/var/log/p.log", "resolved": "/var/log/p.log", "sha256": None}
    assert "secret_file" not in files
    assert manifest["warnings"][0] == "pre-existing"
    assert ("secret visible in /proc/4242/cmdline to every local user; use --mtproto-secret-file"
            in manifest["warnings"])


def test_secret_file_instead_of_inline_secret(host):
    (host / "secret").write_bytes(SECRET.encode())
    argv = [str(host / "mtproto-proxy"), "-p", "8888", "--http-stats", "--mtproto-secret-file", "secret", "cfg"]
    manifest = make(host, argv)
    files = dict((f["role"], f) for f in manifest["files"])
    assert files["secret_file"]["sha256"] == sha(SECRET.encode())
    assert not any("cmdline" in w for w in manifest["warnings"])
    assert "config file %s cannot be read" % (host / "cfg") in manifest["warnings"]


def test_warnings_for_missing_stats():
    manifest = build_manifest("s", "s.service", "t", {}, ["/p", "-p", "1:3", "a", "b"], "/p", None, [], pid=1)
    assert manifest["stats_url"] is None and manifest["stats_port"] is None
    assert any("exactly one positional" in w for w in manifest["warnings"])
    assert any("no single stats port" in w for w in manifest["warnings"])
    manifest = build_manifest("s", "s.service", "t", {}, ["/p", "-p", "1", "a"], "/p", None, [], pid=1)
    assert any("--http-stats is not set" in w for w in manifest["warnings"])


def test_helpers():
    assert resolve_path("a/../b.conf", "/opt/MTProxy") == "/opt/MTProxy/b.conf"
    assert resolve_path("/etc/x", "/opt") == "/etc/x"
    assert resolve_path("x", None) == "/x"
    assert stats_url(None) is None
    assert sha256_file("/nonexistent/file") is None


def test_redact_manifest(host):
    manifest = make(host)
    redacted = redact_manifest(manifest)
    assert_no_secret(redacted)
    assert redacted["argv"][redacted["argv"].index("-S") + 1] == REDACTED
    assert redacted["unit"]["exec_start_argv"][redacted["argv"].index("-P") + 1] == REDACTED
    assert redacted["unit"]["environment"] == {"MTPROXY_SECRET": REDACTED, "LANG": "C"}
    assert REDACTED in redacted["unit"]["exec_start"]
    # the host copy is untouched
    assert SECRET in manifest["argv"]
    assert redact_manifest(None) is None


def test_identical_manifests_do_not_drift(host):
    assert compare_manifests(make(host), make(host)) == []


def test_file_edit_drifts_and_names_the_file(host):
    frozen = make(host)
    (host / "proxy-multi.conf").write_bytes(b"proxy_for 2 149.154.162.38:80;\n")
    drift = compare_manifests(frozen, make(host))
    assert [d["field"] for d in drift] == ["files[config]"]
    assert drift[0]["live"]["resolved"] == str(host / "proxy-multi.conf")
    assert describe_drift(drift) == "files[config] (%s: content changed, same path)" % (host / "proxy-multi.conf")


def test_argv_drift_per_position_redacted(host):
    frozen = make(host)
    live = make(host, live_argv(host, secret="ab" * 16))
    drift = compare_manifests(frozen, live)
    fields = [d["field"] for d in drift]
    assert "argv[9]" in fields and "unit.exec_start" in fields
    entry = [d for d in drift if d["field"] == "argv[9]"][0]
    assert entry == {"field": "argv[9]", "frozen": REDACTED, "live": REDACTED}
    assert_no_secret(drift)
    assert "ab" * 16 not in json.dumps(drift)


def test_argv_length_change(host):
    frozen = make(host)
    live = make(host, live_argv(host) + ["-c", "512"])
    drift = compare_manifests(frozen, live, skip=())
    assert {"field": "argv[19]", "frozen": None, "live": "-c"} in drift
    assert {"field": "argv[20]", "frozen": None, "live": "512"} in drift


@pytest.mark.parametrize("change, field", [
    ({"fragment_sha256": sha(b"edited")}, "unit.fragment_sha256"),
    ({"user": "mtproxy"}, "unit.user"),
    ({"working_directory": "/srv"}, "unit.working_directory"),
    ({"environment": {"MTPROXY_SECRET": "other-" + ENV_SECRET, "LANG": "C"}}, "unit.environment"),
    ({"drop_ins": []}, "unit.drop_ins[/etc/systemd/system/MTProxy.service.d/10-limits.conf]"),
    ({"environment_files": [{"path": "/etc/default/mtproxy", "sha256": sha(b"x"), "optional": True}]},
     "unit.environment_files[/etc/default/mtproxy]"),
])
def test_unit_drift(host, change, field):
    frozen = make(host)
    drift = compare_manifests(frozen, make(host, unit_overrides=change))
    assert [d["field"] for d in drift] == [field]
    assert_no_secret(drift)


def test_binary_drift_and_skip(host):
    frozen = make(host)
    (host / "mtproto-proxy").write_bytes(b"\x7fELF another build")
    live = make(host)
    assert [d["field"] for d in compare_manifests(frozen, live)] == ["binary_sha256"]
    assert compare_manifests(frozen, live, skip=BINARY_FIELDS) == []


def test_skip_argv(host):
    frozen = make(host)
    live = copy.deepcopy(frozen)
    live["argv"][0] = "/opt/MTProxy/releases/go-1/mtproto-proxy"
    assert [d["field"] for d in compare_manifests(frozen, live)] == ["argv[0]"]
    assert compare_manifests(frozen, live, skip=("argv",)) == []


def test_schema_drift(host):
    frozen = make(host)
    live = dict(frozen, schema=2)
    assert compare_manifests(frozen, live)[0] == {"field": "schema", "frozen": 1, "live": 2}


def test_manifest_round_trips_through_json(host):
    manifest = make(host)
    assert compare_manifests(json.loads(json.dumps(manifest)), manifest) == []
    assert os.path.isabs(manifest["binary_realpath"])
