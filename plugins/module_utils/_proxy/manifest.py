# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Freeze manifest: build it from gathered facts, compare two (drift), redact it for the controller.

The host copy holds the full live argv (secrets included) and is root-only; everything that
leaves the host goes through redact_manifest() or compare_manifests(), which never contain a
secret value.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import os
import re

from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import (
    REDACTED, parse_argv, redact_argv, redact_text, secret_values)
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import container_spec as container
from ansible_collections.mtproxy.cutover.plugins.module_utils._stage import file_sha256

SCHEMA = 1

# Files the proxy reads at start, by argv role. A log file changes all the time: path only.
FILE_ROLES = (("config", "config_path"), ("aes_pwd", "aes_pwd_path"),
              ("secret_file", "secret_file_path"), ("log", "log_path"))
NO_CHECKSUM_ROLES = ("log",)

INLINE_SECRET_WARNING = ("secret visible in /proc/%s/cmdline to every local user; "
                         "use --mtproto-secret-file")

_SECRET_ENV_NAME = re.compile(r"SECRET|TAG|PASS|TOKEN|KEY|PWD", re.IGNORECASE)


def sha256_file(path):
    """Hex sha256 of a file, None when it cannot be read."""
    try:
        return file_sha256(path)
    except (IOError, OSError):
        return None


def resolve_path(path, working_directory):
    if os.path.isabs(path):
        return os.path.normpath(path)
    return os.path.normpath(os.path.join(working_directory or "/", path))


def file_entries(parsed, working_directory, checksum=sha256_file):
    """[{role, path, resolved, sha256}] for the files named on the command line."""
    entries = []
    for role, attribute in FILE_ROLES:
        path = getattr(parsed, attribute)
        if not path:
            continue
        resolved = resolve_path(path, working_directory)
        digest = None if role in NO_CHECKSUM_ROLES else checksum(resolved)
        entries.append({"role": role, "path": path, "resolved": resolved, "sha256": digest})
    return entries


def stats_url(port):
    return "http://127.0.0.1:%d/stats" % port if port else None


def argv_warnings(parsed, pid, files):
    warnings = []
    if parsed.has_inline_secret:
        warnings.append(INLINE_SECRET_WARNING % pid)
    if len(parsed.positionals) != 1:
        warnings.append("expected exactly one positional argument (the backend config), found %d"
                        % len(parsed.positionals))
    if parsed.stats_port is None:
        warnings.append("no single stats port (-p) on the command line: /stats cannot be scraped")
    elif not parsed.http_stats:
        warnings.append("--http-stats is not set: the C proxy does not serve /stats")
    for entry in files:
        if entry["role"] not in NO_CHECKSUM_ROLES and entry["sha256"] is None:
            warnings.append("%s file %s cannot be read" % (entry["role"], entry["resolved"]))
    return warnings


def build_manifest(service, unit_name, frozen_at, unit, live_argv, binary_realpath, binary_sha256,
                   files, warnings=None, pid=None):
    """Assemble a schema-1 manifest.

    unit: {fragment_path, fragment_sha256, drop_ins: [{path, sha256}], exec_start, exec_start_argv,
    user, group, working_directory, environment, environment_files: [{path, sha256, optional}]}.
    """
    parsed = parse_argv(live_argv)
    all_warnings = list(warnings or []) + argv_warnings(parsed, pid if pid is not None else "<pid>", files)
    return {
        "schema": SCHEMA,
        "service": service,
        "unit_name": unit_name,
        "frozen_at": frozen_at,
        "unit": unit,
        "binary": live_argv[0],
        "binary_realpath": binary_realpath,
        "binary_sha256": binary_sha256,
        "argv": list(live_argv),
        "stats_port": parsed.stats_port,
        "http_stats": parsed.http_stats,
        "client_ports": parsed.client_ports,
        "workers": parsed.workers,
        "stats_url": stats_url(parsed.stats_port),
        "files": files,
        "warnings": all_warnings,
    }


def manifest_secrets(*manifests):
    """Every secret value a manifest carries (argv, the unit's ExecStart argv, a container's secret env)."""
    secrets = []
    for manifest in manifests:
        if not manifest:
            continue
        for value in container.env_secrets(manifest.get("container") or {}):
            if value not in secrets:
                secrets.append(value)
        for argv in (manifest.get("argv"), (manifest.get("unit") or {}).get("exec_start_argv")):
            for value in secret_values(argv or []):
                if value not in secrets:
                    secrets.append(value)
    return secrets


def _redact_environment(environment, secrets):
    out = {}
    for key, value in (environment or {}).items():
        out[key] = REDACTED if _SECRET_ENV_NAME.search(key) else redact_text(value, secrets)
    return out


# Belt and braces: redact secret substrings in every string of a JSON-like value.
_scrub = container.scrub


def redact_manifest(manifest, extra_secrets=()):
    """Copy safe to leave the host: secret argv values, secret-looking env values hidden."""
    if not manifest:
        return manifest
    secrets = manifest_secrets(manifest) + [s for s in extra_secrets if s]
    out = copy.deepcopy(manifest)
    out["argv"] = redact_argv(out.get("argv") or [])
    if out.get("container"):
        secrets = secrets + container.env_secrets(out["container"])
        out["container"] = container.redact_spec(out["container"], secrets)
    # The recreate document holds the environment in full: it never leaves the host.
    out.pop("container_create", None)
    unit = out.get("unit") or {}
    if unit:
        unit["exec_start_argv"] = redact_argv(unit.get("exec_start_argv") or [])
        unit["environment"] = _redact_environment(unit.get("environment"), secrets)
    return _scrub(out, secrets)


# Fields compared for drift, by path in the manifest. Lists of files are compared per entry.
UNIT_FIELDS = ("fragment_path", "fragment_sha256", "exec_start", "user", "group",
               "working_directory", "environment")
BINARY_FIELDS = ("binary", "binary_realpath", "binary_sha256")


def _by_key(entries, key):
    return dict((entry.get(key), entry) for entry in entries or [])


def _compare_entries(field, frozen, live, key, keys):
    """Drift entries for two lists of dicts identified by `key`, comparing `keys`."""
    drift = []
    frozen_map = _by_key(frozen, key)
    live_map = _by_key(live, key)
    for ident in sorted(set(frozen_map) | set(live_map), key=str):
        before = frozen_map.get(ident)
        after = live_map.get(ident)
        before_view = dict((k, before.get(k)) for k in keys) if before else None
        after_view = dict((k, after.get(k)) for k in keys) if after else None
        if before_view != after_view:
            drift.append({"field": "%s[%s]" % (field, ident), "frozen": before_view, "live": after_view})
    return drift


def _compare_argv(frozen, live, secrets):
    drift = []
    frozen = frozen or []
    live = live or []
    frozen_r = redact_argv(frozen)
    live_r = redact_argv(live or [])
    for index in range(max(len(frozen), len(live))):
        before = frozen[index] if index < len(frozen) else None
        after = live[index] if index < len(live) else None
        if before != after:
            drift.append({"field": "argv[%d]" % index,
                          "frozen": frozen_r[index] if index < len(frozen_r) else None,
                          "live": live_r[index] if index < len(live_r) else None})
    return drift


def compare_manifests(frozen, live, skip=()):
    """Drift list [{field, frozen, live}] (redacted) between a frozen and a live manifest.

    skip: top-level fields not to compare (e.g. ('argv',) + BINARY_FIELDS on a host already
    flipped to Go, where those are checked another way).
    """
    secrets = manifest_secrets(frozen, live)
    drift = []
    if frozen.get("schema") != live.get("schema"):
        drift.append({"field": "schema", "frozen": frozen.get("schema"), "live": live.get("schema")})
    fu = frozen.get("unit") or {}
    lu = live.get("unit") or {}
    for name in UNIT_FIELDS:
        if fu.get(name) != lu.get(name):
            drift.append({"field": "unit." + name, "frozen": fu.get(name), "live": lu.get(name)})
    drift.extend(_compare_entries("unit.drop_ins", fu.get("drop_ins"), lu.get("drop_ins"),
                                  "path", ("path", "sha256")))
    drift.extend(_compare_entries("unit.environment_files", fu.get("environment_files"),
                                  lu.get("environment_files"), "path", ("path", "sha256", "optional")))
    for name in BINARY_FIELDS:
        if name not in skip and frozen.get(name) != live.get(name):
            drift.append({"field": name, "frozen": frozen.get(name), "live": live.get(name)})
    if "argv" not in skip:
        drift.extend(_compare_argv(frozen.get("argv"), live.get("argv"), secrets))
    drift.extend(_compare_entries("files", frozen.get("files"), live.get("files"), "role",
                                  ("path", "resolved", "sha256")))
    if frozen.get("container") or live.get("container"):
        secrets = secrets + container.env_secrets(frozen.get("container") or {}) \
            + container.env_secrets(live.get("container") or {})
        drift.extend(container.redact_diff(container.spec_diff(
            frozen.get("container") or {}, live.get("container") or {},
            skip=container.IMAGE_FIELDS if "container.image" in skip else ()), secrets))
    return [_redact_drift(entry, secrets) for entry in drift]


def _redact_drift(entry, secrets):
    out = dict(entry)
    if entry["field"] == "unit.environment":
        out["frozen"] = _redact_environment(entry["frozen"], secrets)
        out["live"] = _redact_environment(entry["live"], secrets)
    return _scrub(out, secrets)


def content_changed(entry):
    """True for a file entry whose checksum alone differs (same path, both sides there)."""
    before, after = entry.get("frozen"), entry.get("live")
    if not isinstance(before, dict) or not isinstance(after, dict):
        return False
    return (before.get("path"), before.get("resolved")) == (after.get("path"), after.get("resolved")) \
        and before.get("sha256") != after.get("sha256")


def describe_drift(drift):
    """One line naming every drifted field (and the file path where there is one)."""
    parts = []
    for entry in drift:
        path = None
        for side in (entry.get("live"), entry.get("frozen")):
            if isinstance(side, dict) and (side.get("resolved") or side.get("path")):
                path = side.get("resolved") or side.get("path")
                break
        if path and content_changed(entry):
            parts.append("%s (%s: content changed, same path)" % (entry["field"], path))
        else:
            parts.append("%s (%s)" % (entry["field"], path) if path else entry["field"])
    return ", ".join(parts)
