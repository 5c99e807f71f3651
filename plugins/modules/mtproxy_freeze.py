#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mtproxy_freeze
short_description: Freeze the configuration of a running C MTProxy service into a host manifest
description:
  - Reads the systemd unit of the service (fragment, drop-ins, C(Environment), C(EnvironmentFile), C(User),
    C(WorkingDirectory)), the live argv of its main process from C(/proc/<MainPID>/cmdline), parses the proxy
    flags with C getopt semantics and checksums the files they name (backend config, C(--aes-pwd),
    C(--mtproto-secret-file)) and the binary.
  - Writes C(<state_dir>/<service>/manifest.json) (directory 0700, file 0600, root only; it contains the full
    argv including secrets) and returns a redacted copy.
  - On later runs compares the live host with the manifest and fails on any drift unless I(refreeze=true).
    A host already switched to Go by M(mtproxy.cutover.mtproxy_switch) (state file says C(current=go), live argv
    is the Go binary with the frozen flags, ExecStart comes from the cutover drop-in) is reported unchanged.
  - Refuses when the service is not running, when the live argv differs from the unit (edited but not
    restarted), or when a first freeze would capture a Go binary.
  - Warns when C(-S) is on the command line, where every local user can read it.
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
options:
  service:
    description: systemd service name; C(.service) is appended when no unit suffix is given.
    type: str
    default: MTProxy
  state_dir:
    description: Directory holding one sub-directory of state per service.
    type: path
    default: /var/lib/mtproxy-cutover
  refreeze:
    description:
      - Accept the live host as the new truth when it drifted from the manifest, and rewrite the manifest.
      - Refused while the host runs the Go binary.
    type: bool
    default: false
  go_binaries:
    description:
      - Paths known to be Go releases. A first freeze refuses a service whose binary is one of them.
    type: list
    elements: path
    default: []
  stats_check:
    description:
      - Scrape the service's C(/stats) (from C(-p), on 127.0.0.1) and fail unless the binary answering is
        the one the freeze found (C for a frozen host, Go for one an earlier run switched).
    type: bool
    default: true
  baseline_samples:
    description:
      - With O(stats_check), take this many C(/stats) samples of a C host as its baseline when the
        manifest is written now (first freeze or re-freeze) or no baseline is kept yet, and keep the
        window summary in C(<state_dir>/<service>/baseline.json) (0600). Otherwise, and with C(0),
        one scrape checks the flavour and the kept baseline is returned.
    type: int
    default: 0
  baseline_interval:
    description: Seconds between two baseline samples (start to start).
    type: float
    default: 5
notes:
  - Supports check mode (computes everything, writes nothing) and diff mode (redacted manifest before/after).
  - Only C(systemctl) is run; files and C(/proc) are read directly, so the module must run as root.
  - Results never contain secret values (C(-S), C(-P) values are replaced by C(<redacted>)).
requirements:
  - systemd
"""

EXAMPLES = r"""
- name: Freeze the C proxy configuration
  mtproxy.cutover.mtproxy_freeze:
    service: MTProxy
  register: frozen

- name: Freeze, check that C answers /stats and keep a 30 s baseline (7 samples 5 s apart)
  mtproxy.cutover.mtproxy_freeze:
    service: MTProxy
    baseline_samples: 7
    baseline_interval: 5
  register: frozen

- name: Accept an intended configuration change
  mtproxy.cutover.mtproxy_freeze:
    service: MTProxy
    refreeze: true
"""

RETURN = r"""
status:
  description: C(frozen) (first manifest written), C(unchanged) (matches the manifest) or C(refrozen).
  returned: always
  type: str
  sample: frozen
current:
  description: Binary flavour the service runs now, C(c) or C(go).
  returned: always
  type: str
  sample: c
manifest:
  description: The manifest, redacted (secret values replaced by C(<redacted>)).
  returned: always
  type: dict
drift:
  description: Differences between the manifest and the live host, redacted.
  returned: always
  type: list
  elements: dict
  sample: [{"field": "files[config]", "frozen": {"path": "proxy-multi.conf", "sha256": "ab.."},
            "live": {"path": "proxy-multi.conf", "sha256": "cd.."}}]
stats_url:
  description: Loopback URL of C(/stats) derived from C(-p); null when there is no single stats port.
  returned: always
  type: str
  sample: http://127.0.0.1:8888/stats
stats_port:
  description: Stats port (C(-p)) or null.
  returned: always
  type: int
  sample: 8888
client_ports:
  description: Client ports from every C(-H).
  returned: always
  type: list
  elements: int
  sample: [443]
manifest_path:
  description: Path of the manifest on the host.
  returned: always
  type: str
  sample: /var/lib/mtproxy-cutover/MTProxy/manifest.json
flavor:
  description: Flavour of the binary answering C(/stats) (C(c) or C(go)); null without O(stats_check).
  returned: always
  type: str
  sample: c
stats_version:
  description: The C(version) line of C(/stats) (C only; empty for Go or without O(stats_check)).
  returned: always
  type: str
baseline:
  description:
    - C(/stats) window summary of the C binary (C(summary) of M(mtproxy.cutover.mtproxy_slo)), taken now
      or read from C(baseline.json); empty when there is none.
  returned: always
  type: dict
baseline_taken:
  description: Whether the baseline was sampled by this run (and, outside check mode, written).
  returned: always
  type: bool
baseline_path:
  description: Path of the kept baseline on the host.
  returned: always
  type: str
  sample: /var/lib/mtproxy-cutover/MTProxy/baseline.json
warnings:
  description: Warnings about the configuration (also emitted as task warnings).
  returned: always
  type: list
  elements: str
"""

import datetime
import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mtproxy.cutover.plugins.module_utils.argv import (
    ArgvError, redact_argv, redact_text, secret_values)
from ansible_collections.mtproxy.cutover.plugins.module_utils import baseline as bl
from ansible_collections.mtproxy.cutover.plugins.module_utils import manifest as mf
from ansible_collections.mtproxy.cutover.plugins.module_utils import unit as un


class FreezeError(Exception):
    pass


def read_text(path):
    with open(path, "r", errors="surrogateescape") as handle:
        return handle.read()


def read_cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as handle:
        data = handle.read()
    # Trailing NULs beyond the terminator are setproctitle-style padding, not empty arguments.
    return [os.fsdecode(part) for part in data.rstrip(b"\0").split(b"\0")] if data.strip(b"\0") else []


def read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (IOError, OSError):
        return None
    except ValueError:
        raise FreezeError("%s is not valid JSON" % path)


def gather_environment(show):
    """Environment as systemd gives it to ExecStart, and the env files' identity."""
    env = un.parse_show_environment(show.get("Environment"))
    listed = dict(env)
    files = []
    for entry in un.parse_environment_files(show.get("EnvironmentFiles")):
        digest = mf.sha256_file(entry["path"])
        files.append({"path": entry["path"], "sha256": digest, "optional": entry["optional"]})
        if digest is not None:
            env.update(un.parse_environment_file(read_text(entry["path"])))
    return env, listed, files


def gather_unit(show, name):
    fragment = show.get("FragmentPath")
    if not fragment:
        raise FreezeError("%s has no unit file (FragmentPath is empty)" % name)
    drop_ins = un.drop_in_paths(show)
    texts = [(fragment, read_text(fragment))] + [(p, read_text(p)) for p in drop_ins]
    vendor_texts = [t for t in texts if not un.is_cutover_dropin(t[0])]
    env, listed_env, env_files = gather_environment(show)
    try:
        effective = un.parse_exec_command(un.exec_start_from_unit_texts(texts), name, env)
        vendor_raw = un.exec_start_from_unit_texts(vendor_texts)
        vendor = un.parse_exec_command(vendor_raw, name, env)
    except un.UnitError as exc:
        raise FreezeError("%s: %s" % (name, exc))
    unit = {
        "fragment_path": fragment,
        "fragment_sha256": mf.sha256_file(fragment),
        "drop_ins": [{"path": p, "sha256": mf.sha256_file(p)} for p in un.vendor_drop_ins(drop_ins)],
        "exec_start": vendor_raw,
        "exec_start_argv": vendor["argv"],
        "user": show.get("User") or None,
        "group": show.get("Group") or None,
        "working_directory": show.get("WorkingDirectory") or None,
        "environment": listed_env,
        "environment_files": env_files,
    }
    return {
        "unit": unit,
        "effective_argv": effective["argv"],
        "from_cutover": un.is_cutover_dropin(un.exec_start_source(texts) or ""),
        "cutover_present": any(un.is_cutover_dropin(p) for p in drop_ins),
    }


def binary_facts(path, pid, warnings):
    realpath = os.path.realpath(path)
    if pid:
        try:
            if os.readlink("/proc/%d/exe" % pid).endswith(" (deleted)"):
                warnings.append("the running binary was replaced or deleted on disk since the service started")
        except OSError:
            pass
    return realpath, mf.sha256_file(realpath)


def differing_positions(unit_argv, live_argv):
    secrets = secret_values(unit_argv) + secret_values(live_argv)
    unit_r = [redact_text(w, secrets) for w in redact_argv(unit_argv)]
    live_r = [redact_text(w, secrets) for w in redact_argv(live_argv)]
    out = []
    for index in range(max(len(unit_r), len(live_r))):
        unit_word = unit_argv[index] if index < len(unit_argv) else None
        live_word = live_argv[index] if index < len(live_argv) else None
        if unit_word != live_word:
            out.append({"index": index, "unit": unit_r[index] if index < len(unit_r) else None,
                        "live": live_r[index] if index < len(live_r) else None})
    return out


def is_go_binary(argv0, go_binaries):
    known = set(os.path.realpath(p) for p in go_binaries) | set(go_binaries)
    return argv0 in known or os.path.realpath(argv0) in known


def freeze(params, run_command, check_mode, now):
    name = un.unit_name(params["service"])
    show = un.systemctl_show(run_command, params["service"])
    pid = un.main_pid(show)
    if show.get("LoadState") != "loaded" or show.get("ActiveState") != "active" or pid <= 0:
        raise FreezeError("service %s is not running (LoadState=%s, ActiveState=%s, SubState=%s, MainPID=%d)"
                          % (name, show.get("LoadState"), show.get("ActiveState"), show.get("SubState"), pid))
    live_argv = read_cmdline(pid)
    gathered = gather_unit(show, name)
    if live_argv != gathered["effective_argv"]:
        raise FreezeError("live argv differs from unit %s (edited but not restarted?): %s"
                          % (name, json.dumps(differing_positions(gathered["effective_argv"], live_argv))))
    warnings = []
    if show.get("NeedDaemonReload") == "yes":
        warnings.append("unit files of %s changed on disk; systemctl daemon-reload is pending" % name)

    base = os.path.join(params["state_dir"], params["service"])
    manifest_path = os.path.join(base, "manifest.json")
    frozen = read_json(manifest_path)
    state = read_json(os.path.join(base, "state.json")) or {}
    unit = gathered["unit"]

    flipped = bool(frozen and state.get("current") == "go" and gathered["from_cutover"]
                   and live_argv == [state.get("binary")] + list(frozen.get("argv", [])[1:]))
    facts_argv = list(frozen["argv"]) if flipped else live_argv
    realpath, digest = binary_facts(facts_argv[0], None if flipped else pid, warnings)
    try:
        files = mf.file_entries(mf.parse_argv(live_argv), unit["working_directory"])
        live = mf.build_manifest(params["service"], name, now, unit, facts_argv, realpath, digest,
                                 files, warnings, pid)
    except ArgvError as exc:
        raise FreezeError("cannot parse the command line of %s like the C proxy: %s" % (name, exc))

    result = {"current": "go" if flipped else "c", "drift": [], "manifest_path": manifest_path}
    if frozen is None:
        if gathered["cutover_present"] or is_go_binary(live_argv[0], params["go_binaries"]):
            raise FreezeError("service %s is not running the C binary (%s); nothing to freeze"
                              % (name, "cutover drop-in present" if gathered["cutover_present"] else "Go binary"))
        return _write(result, None, live, "frozen", check_mode)

    drift = mf.compare_manifests(frozen, live, skip=("argv",) if flipped else ())
    result["drift"] = drift
    if not drift and not flipped:
        # A C host seen again: keep the frozen document, report current warnings.
        frozen["warnings"] = live["warnings"]
        return _result(result, frozen, "unchanged", changed=False)
    if not drift:
        return _result(result, frozen, "unchanged", changed=False)
    if not params["refreeze"]:
        raise FreezeError("%s drifted from the frozen manifest %s: %s"
                          % (name, manifest_path, mf.describe_drift(drift)), drift)
    if flipped or state.get("current") == "go" or gathered["cutover_present"]:
        raise FreezeError("refusing to re-freeze %s while it runs the Go binary; roll back to C first" % name,
                          drift)
    return _write(result, frozen, live, "refrozen", check_mode)


def _write(result, before, after, status, check_mode):
    if not check_mode:
        mf.write_private_json(result["manifest_path"], after)
    result["diff"] = {"before": _pretty(before), "after": _pretty(after),
                      "before_header": result["manifest_path"], "after_header": result["manifest_path"]}
    return _result(result, after, status, changed=True)


def _pretty(manifest):
    return json.dumps(mf.redact_manifest(manifest), indent=2, sort_keys=True) + "\n" if manifest else ""


def _result(result, manifest, status, changed):
    redacted = mf.redact_manifest(manifest)
    result.update(changed=changed, status=status, manifest=redacted, stats_url=redacted.get("stats_url"),
                  stats_port=redacted.get("stats_port"), client_ports=redacted.get("client_ports") or [],
                  warnings=redacted.get("warnings") or [])
    return result


def observe_stats(params, result, check_mode):
    """Which binary answers /stats, and the C baseline (taken now or read back)."""
    path = os.path.join(params["state_dir"], params["service"], bl.BASELINE_FILE)
    result.update(flavor=None, stats_version="", baseline={}, baseline_taken=False, baseline_path=path)
    if not params["stats_check"]:
        result["baseline"] = bl.read_baseline(path) or {}
        return result
    if not result["stats_url"]:
        raise FreezeError("%s has no single stats port (-p) whose /stats could be checked"
                          % un.unit_name(params["service"]))
    take = result["status"] in ("frozen", "refrozen") or not os.path.exists(path)
    seen = bl.observe(un.unit_name(params["service"]), result["stats_url"], result["current"], path, take,
                      params["baseline_samples"], params["baseline_interval"], check_mode)
    result.update(flavor=seen["flavor"], stats_version=seen["version"], baseline=seen["baseline"],
                  baseline_taken=seen["baseline_taken"])
    if seen["baseline_taken"]:
        result["changed"] = True
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            service=dict(type="str", default="MTProxy"),
            state_dir=dict(type="path", default="/var/lib/mtproxy-cutover"),
            refreeze=dict(type="bool", default=False),
            go_binaries=dict(type="list", elements="path", default=[]),
            stats_check=dict(type="bool", default=True),
            baseline_samples=dict(type="int", default=0),
            baseline_interval=dict(type="float", default=5.0),
        ),
        supports_check_mode=True,
    )
    if not 0 <= module.params["baseline_samples"] <= 3600:
        module.fail_json(msg="baseline_samples must be between 0 and 3600")
    if not 0 <= module.params["baseline_interval"] <= 600:
        module.fail_json(msg="baseline_interval must be between 0 and 600 seconds")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        result = freeze(module.params, module.run_command, module.check_mode, now)
        observe_stats(module.params, result, module.check_mode)
    except (FreezeError, bl.BaselineError, un.UnitError, IOError, OSError, ValueError) as exc:
        drift = exc.args[1] if isinstance(exc, FreezeError) and len(exc.args) > 1 else []
        module.fail_json(msg=str(exc.args[0] if isinstance(exc, FreezeError) else exc), drift=drift)
    for warning in result["warnings"]:
        module.warn(warning)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
