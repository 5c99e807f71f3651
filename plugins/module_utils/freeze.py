# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The freeze (mtproxy_freeze): read the unit and the live process, decide, then write the manifest.

``freeze_host`` is the whole step; ``decide`` is its decision table (frozen, unchanged, refrozen, or
refused for drift / for a host on Go), pure and tested without a host. Whether a host is already on
Go is asked of the ``pointing`` method its state.json records.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import time

from ansible_collections.mtproxy.cutover.plugins.module_utils.argv import (
    ArgvError, client_probe_hosts, parse_argv, redact_argv, redact_text, secret_values, unsplit_cmdline)
from ansible_collections.mtproxy.cutover.plugins.module_utils import baseline as bl
from ansible_collections.mtproxy.cutover.plugins.module_utils import bridge as br
from ansible_collections.mtproxy.cutover.plugins.module_utils import manifest as mf
from ansible_collections.mtproxy.cutover.plugins.module_utils import refusals as rf
from ansible_collections.mtproxy.cutover.plugins.module_utils import unit as un
from ansible_collections.mtproxy.cutover.plugins.module_utils.host import HostError, ipv6_loopback, read_shebang
from ansible_collections.mtproxy.cutover.plugins.module_utils import pointing as pt
from ansible_collections.mtproxy.cutover.plugins.module_utils import container_freeze as cf
from ansible_collections.mtproxy.cutover.plugins.module_utils import netns


class FreezeError(Exception):
    pass


def read_text(path):
    with open(path, "r", errors="surrogateescape") as handle:
        return handle.read()


def read_cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as handle:
        data = handle.read()
    # Trailing NULs beyond the terminator are setproctitle-style padding, not empty arguments.
    words = [os.fsdecode(part) for part in data.rstrip(b"\0").split(b"\0")] if data.strip(b"\0") else []
    return unsplit_cmdline(words)


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
    host = un.host_specifiers(fragment)
    try:
        effective = un.parse_exec_command(un.exec_start_from_unit_texts(texts), name, env, host)
        vendor_raw = un.exec_start_from_unit_texts(vendor_texts)
        vendor = un.parse_exec_command(vendor_raw, name, env, host)
    except un.UnitError as exc:
        raise FreezeError("%s: %s" % (name, exc))
    working_directory, _missing_ok = un.show_working_directory(show.get("WorkingDirectory"), show.get("User"))
    unit = {
        "fragment_path": fragment,
        "fragment_sha256": mf.sha256_file(fragment),
        "drop_ins": [{"path": p, "sha256": mf.sha256_file(p)} for p in un.vendor_drop_ins(drop_ins)],
        "exec_start": vendor_raw,
        "exec_start_argv": vendor["argv"],
        "user": show.get("User") or None,
        "group": show.get("Group") or None,
        "working_directory": working_directory,
        "environment": listed_env,
        "environment_files": env_files,
    }
    return {
        "unit": unit,
        "texts": texts,
        "effective": effective,
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


def process_started_at(show):
    """Wall-clock start of the main process, from systemd's monotonic stamp (None when unknown)."""
    try:
        mono = int(show.get("ExecMainStartTimestampMonotonic") or 0) / 1e6
    except ValueError:
        return None
    return time.time() - (time.monotonic() - mono) if mono else None


def changed_since(paths, started_at):
    """The files of ``paths`` modified after ``started_at`` (epoch seconds)."""
    changed = []
    for path in paths:
        try:
            if started_at is not None and os.stat(path).st_mtime > started_at:
                changed.append(path)
        except OSError:
            continue
    return changed


def check_live_argv(show, name, gathered, live_argv):
    """Refuse, with the true cause, a live process that does not run the effective ExecStart."""
    if live_argv == gathered["effective_argv"]:
        return
    effective = gathered["effective"]
    refusal = rf.wrapper_refusal(effective, live_argv, read_shebang(effective["path"]), name)
    if refusal is None:
        unit_files = [path for path, _text in gathered["texts"]]
        unit_files += [entry["path"] for entry in gathered["unit"]["environment_files"]]
        refusal = rf.argv_refusal(name, json.dumps(differing_positions(gathered["effective_argv"], live_argv)),
                                  changed_since(unit_files, process_started_at(show)),
                                  show.get("NeedDaemonReload") == "yes")
    raise refusal


def is_go_binary(argv0, go_binaries):
    known = set(os.path.realpath(p) for p in go_binaries) | set(go_binaries)
    return argv0 in known or os.path.realpath(argv0) in known


def freeze(params, run_command, now, warnings):
    """Read the host and build the manifest; nothing is written (see persist()).

    ``warnings`` is filled as they are found, so that a failure can still report them.
    """
    name = un.unit_name(params["service"])
    show = un.systemctl_show(run_command, params["service"])
    pid = un.main_pid(show)
    if show.get("LoadState") != "loaded" or show.get("ActiveState") != "active" or pid <= 0:
        raise FreezeError("service %s is not running (LoadState=%s, ActiveState=%s, SubState=%s, MainPID=%d)"
                          % (name, show.get("LoadState"), show.get("ActiveState"), show.get("SubState"), pid))
    live_argv = read_cmdline(pid)
    gathered = gather_unit(show, name)
    check_live_argv(show, name, gathered, live_argv)
    base = os.path.join(params["state_dir"], params["service"])
    manifest_path = os.path.join(base, "manifest.json")
    frozen = read_json(manifest_path)
    state = read_json(os.path.join(base, "state.json")) or {}
    method = pointing_method(state, params["method"])
    refusal = method.takes_effect_refusal(gathered["texts"], name)
    if refusal is not None:
        raise refusal
    if show.get("NeedDaemonReload") == "yes":
        warnings.append("unit files of %s changed on disk; systemctl daemon-reload is pending" % name)
    unit = gathered["unit"]

    flipped = bool(frozen) and method.runs_go(frozen, state, live_argv, gathered["from_cutover"])
    facts_argv = list(frozen["argv"]) if flipped else live_argv
    # On Go the C binary is checked where the method left it (the frozen argv[0], the link's frozen target).
    realpath, digest = binary_facts(method.c_binary(frozen, state) if flipped else live_argv[0],
                                    None if flipped else pid, warnings)
    try:
        files = mf.file_entries(mf.parse_argv(live_argv), unit["working_directory"])
        live = mf.build_manifest(params["service"], name, now, unit, facts_argv, realpath, digest,
                                 files, warnings, pid)
    except ArgvError as exc:
        raise FreezeError("cannot parse the command line of %s like the C proxy: %s" % (name, exc))
    warnings[:] = live["warnings"]

    # _argv (the C command line, secrets included) decides the /stats checks; it never leaves the host.
    result = {"current": "go" if flipped else "c", "drift": [], "manifest_path": manifest_path, "_argv": facts_argv,
              "method": method.method}
    status, drift = decide(frozen, live, flipped, state, gathered["cutover_present"],
                           is_go_binary(live_argv[0], params["go_binaries"]), params["refreeze"], name,
                           manifest_path)
    result["drift"] = drift
    if status == "unchanged":
        if not flipped:
            # A C host seen again: keep the frozen document, report current warnings.
            frozen["warnings"] = live["warnings"]
        return _result(result, frozen, status, changed=False)
    return _write(result, frozen, live, status)


def pointing_method(state, requested):
    """The Pointing class of the host: the method state.json records while on Go, else ``requested``."""
    try:
        return pt.METHODS[pt.method_of(state, None, requested)]
    except HostError as exc:
        raise FreezeError(str(exc))


def decide(frozen, live, flipped, state, cutover_present, live_is_go, refreeze, name, manifest_path, skip=None):
    """(status, drift) of a freeze: 'frozen', 'unchanged' or 'refrozen'; FreezeError when refused.

    ``flipped``: the unit runs the Go binary the way its method points it (the argv is then compared
    another way); ``cutover_present``: the cutover drop-in is in the unit; ``live_is_go``: the live
    program is one of the known Go binaries; ``skip``: the manifest fields not compared (default: the
    argv on a flipped host, which its method checks another way).
    """
    if frozen is None:
        if cutover_present or live_is_go:
            raise FreezeError("service %s is not running the C binary (%s); nothing to freeze"
                              % (name, "cutover drop-in present" if cutover_present else "Go binary"))
        return "frozen", []
    drift = mf.compare_manifests(frozen, live, skip=(("argv",) if flipped else ()) if skip is None else skip)
    if not drift:
        return "unchanged", drift
    if not refreeze:
        raise FreezeError("%s drifted from the frozen manifest %s: %s"
                          % (name, manifest_path, mf.describe_drift(drift)), drift)
    if flipped or state.get("current") == "go" or cutover_present:
        raise FreezeError("refusing to re-freeze %s while it runs the Go binary; roll back to C first" % name,
                          drift)
    return "refrozen", drift


def _write(result, before, after, status):
    """Mark ``after`` to be written as the manifest once every check passed (persist())."""
    result["_writes"] = [(result["manifest_path"], after)]
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


NO_BASELINE_WARNING = ("C's /stats is never read on this host (-6, allow_no_baseline): no flavour check, "
                       "no C baseline; Go will be judged on its own thresholds")


def observe_stats(params, result, parsed, warnings):
    """Which binary answers /stats, and the C baseline (taken now or read back); no write here.

    A C host whose /stats is missing or unsafe to read (-6) is refused before any connection.
    """
    name = un.unit_name(params["service"])
    path = os.path.join(params["state_dir"], params["service"], bl.BASELINE_FILE)
    c_host = result["current"] == "c"
    result.update(flavor=None, stats_version="", baseline={}, baseline_taken=False, baseline_path=path,
                  stats_readable=not c_host or rf.c_stats_readable(parsed))
    if not params["stats_check"]:
        result["baseline"] = bl.read_baseline(path) or {}
        return result
    refusal = rf.stats_refusal(parsed, name, params["allow_no_baseline"]) if c_host else None
    if refusal is not None:
        raise refusal
    if c_host and parsed.ipv6:
        warnings.append(NO_BASELINE_WARNING)
        result["warnings"] = list(warnings)
        return result
    if not result["stats_url"]:
        raise FreezeError("%s has no single stats port (-p) whose /stats could be checked" % name)
    take = result["status"] in ("frozen", "refrozen") or not os.path.exists(path)
    seen = bl.observe(name, result["stats_url"], result["current"], path, take,
                      params["baseline_samples"], params["baseline_interval"], check_mode=True)
    result.update(flavor=seen["flavor"], stats_version=seen["version"], baseline=seen["baseline"],
                  baseline_taken=seen["baseline_taken"])
    if seen["baseline_taken"]:
        result["changed"] = True
        result.setdefault("_writes", []).insert(0, (path, seen["baseline"]))
    return result


def persist(result, check_mode):
    """Write what the freeze decided (baseline, then manifest), only after every check passed."""
    writes = result.pop("_writes", [])
    if not check_mode:
        for path, document in writes:
            mf.write_private_json(path, document)
    return result


def freeze_container(params, now, warnings):
    """The freeze of a container host: its spec and process read, then the same decision table."""
    read = cf.freeze_container(params, now, warnings, read_json, FreezeError)
    result, frozen, live, flipped, live_is_go, state = read
    name = params["service"]
    if state.get("current") == "go" and not flipped:
        raise FreezeError("state.json of %s says it runs the Go image %s, but the container runs image %s: "
                          "roll back (rollback.yml) or remove the container's state directory %s if it was "
                          "recreated by hand" % (name, state.get("binary"), live["container"]["image_id"],
                                                 os.path.dirname(result["manifest_path"])))
    # On Go the image fields differ by design; everything else, argv included, must be as frozen.
    skip = ("container.image",) if flipped else ()
    status, drift = decide(frozen, live, flipped, state, False, live_is_go, params["refreeze"], name,
                           result["manifest_path"], skip=skip)
    result["drift"] = drift
    if status == "unchanged":
        # Current warnings, on Go too (the frozen C image gone from the host is one).
        frozen["warnings"] = live["warnings"]
        return _result(result, frozen, status, changed=False)
    return _write(result, frozen, live, status)


def freeze_host(params, run_command, check_mode, now, warnings):
    """The whole freeze: read and check the host, observe /stats, then write, in that order."""
    recorded = (read_json(os.path.join(params["state_dir"], params["service"], "state.json")) or {}).get("method")
    container = cf.METHOD in (params.get("method"), recorded)
    if container and params.get("method") not in (None, cf.METHOD):
        raise FreezeError("%s was flipped with method=container (state.json); method=%s contradicts it: leave the "
                          "method unset or pass method=container" % (params["service"], params["method"]))
    result = freeze_container(params, now, warnings) if container else freeze(params, run_command, now, warnings)
    parsed = parse_argv(result.pop("_argv"))
    result["client_hosts"] = client_probe_hosts(parsed, ipv6_loopback() if not container else False)
    result["container"] = params["service"] if container else None
    br.check_at_freeze(params, parsed, result, container)
    try:
        with netns.entered(result.pop("_netns_pid", None)):
            observe_stats(params, result, parsed, warnings)
    except netns.NetnsError as exc:
        raise FreezeError("%s: /stats cannot be read inside the container's network namespace: %s"
                          % (params["service"], exc))
    return persist(result, check_mode)


def failure_message(message, warnings):
    """A failure keeps the warnings found before it."""
    if not warnings:
        return message
    return "%s\nWarnings: %s" % (message, "; ".join(warnings))


def argument_spec():
    """mtproxy_freeze's options (documented in the module)."""
    return dict(
        service=dict(type="str", default="MTProxy"),
        state_dir=dict(type="path", default="/var/lib/mtproxy-cutover"),
        refreeze=dict(type="bool", default=False),
        go_binaries=dict(type="list", elements="path", default=[]),
        stats_check=dict(type="bool", default=True),
        method=dict(type="str", choices=sorted(pt.ALL_METHODS)),
        go_images=dict(type="list", elements="str", default=[]),
        docker_socket=dict(type="path", default="/var/run/docker.sock"),
        allow_no_baseline=dict(type="bool", default=False),
        handover=dict(type="str", choices=list(br.MODES), default="restart"),
        baseline_samples=dict(type="int", default=0),
        baseline_interval=dict(type="float", default=5.0),
    )


def check_params(params):
    """The option ranges an argument spec cannot state; a message, or None."""
    if not 0 <= params["baseline_samples"] <= 3600:
        return "baseline_samples must be between 0 and 3600"
    if not 0 <= params["baseline_interval"] <= 600:
        return "baseline_interval must be between 0 and 600 seconds"
    return None


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


ERRORS = (rf.Refusal, FreezeError, bl.BaselineError, un.UnitError, IOError, OSError, ValueError)


def failure(exc, name):
    """(message, details) of an exception freeze_host raised, for fail_json."""
    if isinstance(exc, rf.Refusal):
        return exc.message(name), {"refused": exc.kind, "drift": []}
    if isinstance(exc, FreezeError):
        return str(exc.args[0]), {"drift": exc.args[1] if len(exc.args) > 1 else []}
    return str(exc), {"drift": []}
