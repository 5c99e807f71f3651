# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The freeze (mtproxy_freeze): read what runs, decide, observe /stats, then write the manifest.

``freeze_host`` is the whole step for every runtime: the runtime reads the host
(``Runtime.read_for_freeze``), ``decide`` is the decision table (frozen, unchanged, refreshed,
refrozen, or refused for drift / for a host on Go), pure and tested without a host; the /stats
check and the C baseline come next; nothing is written until every check passed (``persist``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import CutoverError, FreezeError, NetnsError
from ansible_collections.mtproxy.cutover.plugins.module_utils._handover import bridge as br
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import netns
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import privileges as pv
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import manifest as mf
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import refusals as rf
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import unit as un
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import client_probe_hosts, parse_argv
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.choice import ALL_METHODS, runtime_for
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo import baseline as bl
from ansible_collections.mtproxy.cutover.plugins.module_utils._state import BASELINE, DEFAULT_STATE_DIR, MANIFEST, StateDir

# Files whose content may change at the same path without stopping a cutover when the operator says
# so (mtproxy_cutover_accept_refresh): the backend config the upstream README refreshes daily.
REFRESHABLE = ('config',)
NO_BASELINE_WARNING = ("C's /stats is never read on this host (-6, allow_no_baseline): no flavour check, "
                       "no C baseline; Go will be judged on its own thresholds")


def refreshed_only(drift, accept):
    """True when every drift entry is a file of a role in ``accept`` whose content alone changed."""
    if not drift or not accept:
        return False
    for entry in drift:
        field = entry.get('field', '')
        if not field.startswith('files[') or field[len('files['):-1] not in accept:
            return False
        before, after = entry.get('frozen') or {}, entry.get('live') or {}
        if not before or not after or (before.get('path'), before.get('resolved')) != (after.get('path'),
                                                                                       after.get('resolved')):
            return False
    return True


def drift_way_forward(flipped, accept_hint):
    """What the operator can do about a drift, on a host on C or on Go."""
    if flipped:
        text = ('roll the host back (rollback.yml), check the change, then run the cutover again with '
                'mtproxy_cutover_refreeze=true')
    else:
        text = ('if the change is intended, run again with mtproxy_cutover_refreeze=true (the freeze then records '
                'it); if not, undo it')
    if accept_hint:
        text += ('; a backend config refreshed at the same path (the upstream README\'s daily proxy-multi.conf '
                 'refresh) can be accepted during a cutover with mtproxy_cutover_accept_refresh=[config]')
    return text


def decide(frozen, live, flipped, state, cutover_present, live_is_go, refreeze, name, manifest_path, skip=None,
           accept_refresh=()):
    """(status, drift) of a freeze: 'frozen', 'unchanged', 'refreshed' or 'refrozen'; FreezeError when refused.

    ``flipped``: the service runs the Go release the way its method points it (the argv is then
    compared another way); ``cutover_present``: the cutover drop-in is in the unit; ``live_is_go``:
    the live program is one of the known Go binaries; ``skip``: the manifest fields not compared
    (default: the argv on a flipped host, which its method checks another way); ``accept_refresh``:
    file roles whose new content at the same path is recorded instead of refused ('refreshed').
    """
    if frozen is None:
        if cutover_present or live_is_go:
            raise FreezeError("service %s is not running the C binary (%s); nothing to freeze"
                              % (name, "cutover drop-in present" if cutover_present else "Go binary"), drift=[])
        return "frozen", []
    drift = mf.compare_manifests(frozen, live, skip=(("argv",) if flipped else ()) if skip is None else skip)
    if not drift:
        return "unchanged", drift
    if refreshed_only(drift, accept_refresh):
        return "refreshed", drift
    content_only = refreshed_only(drift, REFRESHABLE)
    if not refreeze:
        raise FreezeError("%s drifted from the frozen manifest %s: %s. Way forward: %s"
                          % (name, manifest_path, mf.describe_drift(drift), drift_way_forward(flipped, content_only)),
                          drift=drift)
    if flipped or state.get("current") == "go" or cutover_present:
        raise FreezeError("refusing to re-freeze %s while it runs the Go binary (%s). Way forward: roll back to C "
                          "first (rollback.yml), then run the cutover again with mtproxy_cutover_refreeze=true%s"
                          % (name, mf.describe_drift(drift),
                             ", or accept the refreshed backend config with mtproxy_cutover_accept_refresh=[config]"
                             if content_only else ""), drift=drift)
    return "refrozen", drift


def refreshed_manifest(frozen, live):
    """The frozen manifest with the file checksums seen now (only content changed; see refreshed_only)."""
    out = dict(frozen)
    out["files"] = live.get("files") or []
    out["refreshed_at"] = live.get("frozen_at")
    return out


def _write(result, before, after, status):
    """Mark ``after`` to be written as the manifest once every check passed (persist())."""
    result["_writes"] = [(MANIFEST, after)]
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


def observe_stats(params, result, parsed, warnings, store):
    """Which binary answers /stats, and the C baseline (taken now or read back); no write here.

    A C host whose /stats is missing or unsafe to read (-6) is refused before any connection.
    """
    name = un.unit_name(params["service"]) if result.get("container") is None else params["service"]
    path = store.baseline_path
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
    take = result["status"] in ("frozen", "refrozen") or bl.read_baseline(path) is None
    seen = bl.observe(name, result["stats_url"], result["current"], path, take,
                      params["baseline_samples"], params["baseline_interval"], check_mode=True)
    result.update(flavor=seen["flavor"], stats_version=seen["version"], baseline=seen["baseline"],
                  baseline_taken=seen["baseline_taken"])
    if seen["baseline_taken"]:
        result["changed"] = True
        result.setdefault("_writes", []).insert(0, (BASELINE, seen["baseline"]))
    return result


def keep_privileges(live, main_pid, warnings):
    """What C's processes run as (uid, gid, groups, capabilities from /proc), kept in the manifest for
    the privilege parity of the pre-warm and the flip (privilege_drop)."""
    if not main_pid:
        return
    try:
        live["privileges"] = pv.frozen_form(pv.snapshot_tree(main_pid))
    except pv.PrivilegeError as exc:
        live["warnings"].append("what C runs as could not be read (%s): the pre-warm and the flip cannot compare "
                                "Go's privileges with it" % exc)
        warnings[:] = live["warnings"]


def persist(result, store, check_mode):
    """Write what the freeze decided (baseline, then manifest), only after every check passed."""
    writes = result.pop("_writes", [])
    if not check_mode:
        for name, document in writes:
            store.write_json(name, document)
    return result


def freeze_host(params, run_command, check_mode, now, warnings):
    """The whole freeze: read and check the host, observe /stats, then write, in that order."""
    store = StateDir(params["state_dir"], params["service"])
    runtime, method_class = runtime_for(store, requested=params.get("method"), docker_socket=params.get("docker_socket"),
                                        for_freeze=True)
    read = runtime.read_for_freeze(params, run_command, now, warnings, method_class)
    result, frozen, live, flipped = read["result"], read["frozen"], read["live"], read["flipped"]
    name = runtime.name
    if not flipped:
        keep_privileges(live, read.get("main_pid"), warnings)
    status, drift = decide(frozen, live, flipped, read["state"], read["cutover_present"], read["live_is_go"],
                           params["refreeze"], name, result["manifest_path"], skip=read["skip"],
                           accept_refresh=params.get("accept_refresh") or ())
    result["drift"] = drift
    if status == "refreshed":
        warnings.append("accepted a refreshed %s at the same path (accept_refresh): %s"
                        % ("/".join(params.get("accept_refresh")), mf.describe_drift(drift)))
        after = refreshed_manifest(frozen, live)
        after["warnings"] = live["warnings"] + [warnings[-1]]
        _write(result, frozen, after, status)
    elif status == "unchanged" and not flipped and live.get("privileges") and not frozen.get("privileges"):
        # A manifest of a version that did not keep what C runs as: completed once, nothing else changes.
        frozen["warnings"] = live["warnings"]
        _write(result, frozen, dict(frozen, privileges=live["privileges"]), status)
    elif status == "unchanged":
        if not flipped or runtime.release_kind == "image":
            # Seen again: keep the frozen document, report current warnings (on a container on Go too:
            # the frozen C image gone from the host is one).
            frozen["warnings"] = live["warnings"]
        _result(result, frozen, status, changed=False)
    else:
        _write(result, frozen, live, status)
    parsed = parse_argv(read["argv"])
    result["client_hosts"] = client_probe_hosts(parsed, read["ipv6_loopback"])
    result["container"] = runtime.container
    result["runtime"] = runtime.kind
    result["releases_in_use"] = store.releases_in_use()
    br.check_at_freeze(params, parsed, result, runtime)
    try:
        with netns.entered(read["netns_pid"]):
            observe_stats(params, result, parsed, warnings, store)
    except NetnsError as exc:
        raise FreezeError("%s: /stats cannot be read inside the container's network namespace: %s"
                          % (params["service"], exc))
    return persist(result, store, check_mode)


def failure_message(message, warnings):
    """A failure keeps the warnings found before it."""
    if not warnings:
        return message
    return "%s\nWarnings: %s" % (message, "; ".join(warnings))


def argument_spec():
    """mtproxy_freeze's options (documented in the module)."""
    return dict(
        service=dict(type="str", default="MTProxy"),
        state_dir=dict(type="path", default=DEFAULT_STATE_DIR),
        refreeze=dict(type="bool", default=False),
        accept_refresh=dict(type="list", elements="str", default=[], choices=list(REFRESHABLE)),
        go_binaries=dict(type="list", elements="path", default=[]),
        stats_check=dict(type="bool", default=True),
        method=dict(type="str", choices=sorted(ALL_METHODS)),
        go_images=dict(type="list", elements="str", default=[]),
        docker_socket=dict(type="path", default="/var/run/docker.sock"),
        allow_no_baseline=dict(type="bool", default=False),
        handover=dict(type="str", choices=list(br.MODES), default="restart"),
        baseline_samples=dict(type="int", default=0),
        baseline_interval=dict(type="float", default=5.0),
        lock_run_id=dict(type="str"),
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


ERRORS = (CutoverError, IOError, OSError, ValueError)


def failure(exc, name):
    """(message, details) of an exception freeze_host raised, for fail_json."""
    if isinstance(exc, rf.Refusal):
        return exc.message(name), {"refused": exc.kind, "drift": []}
    if isinstance(exc, CutoverError):
        details = dict(exc.details)
        details.setdefault("drift", [])
        return str(exc), details
    return str(exc), {"drift": []}
