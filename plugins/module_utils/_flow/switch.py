# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The switch (flip and rollback), the same for every runtime.

Order: plan (refusals before anything changes) -> already there? (prove, done) -> check mode stops
-> a bridge, if asked, gets ready -> the runtime applies the plan (drop-in, symlink, a created
container) -> ``state.json`` records the switch as pending -> the restart, timed from the clients'
side (new clients go to the bridge meanwhile) -> the argv proof -> ``state.json`` records the result
-> ``/stats`` proves the flavour -> the runtime removes what the old generation left. Every message
that can carry text from the host is redacted.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import CutoverError, SwitchError
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow.proof import (
    C_STATS_UNSAFE, STATS_CHECK_TIMEOUT, c_stats_unsafe, check_stats_flavor, frozen_argv)
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import privilege_drop as pd
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import privileges as pv
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.process import now_iso
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import redact_text
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime import pointing as pt
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.choice import runtime_for
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.base import STOP_MODES
from ansible_collections.mtproxy.cutover.plugins.module_utils._state import TARGETS, StateDir, state_agrees, transition


def switch_service(service, state_dir, target, release=None, method=None, docker_socket=None, systemd_dir=None,
                   bridge_factory=None, **options):
    """The module's entry point: check the request, find the service's runtime, switch it.

    ``bridge_factory(runtime)`` makes the bridge handover (or None). In check mode a switch that would
    restart also checks that the host can run the bridge, so that such a host is refused there too.
    """
    if target not in TARGETS:
        raise SwitchError('target must be one of %s' % ', '.join(TARGETS))
    if options.get('stop_mode', STOP_MODES[0]) not in STOP_MODES:
        raise SwitchError('stop_mode must be one of %s' % ', '.join(STOP_MODES))
    runtime = runtime_for(StateDir(state_dir, service), method, docker_socket, systemd_dir=systemd_dir)
    bridge = bridge_factory(runtime) if bridge_factory is not None else None
    result = switch(runtime, target, release, method, bridge=bridge, **options)
    if bridge is not None and options.get('check_mode') and result['changed']:
        bridge.check()
    return result


def switch(runtime, target, release=None, method=None, listen_timeout=15.0, stop_timeout=30.0, check_mode=False,
           force_restart=False, journal_lines=0, stop_mode='listeners_closed', stats_check=True, bridge=None,
           privilege_drop=None):
    """Point ``runtime``'s service at ``target`` and restart it; returns the module result (without secrets).

    ``release`` is the staged Go binary or image for target=go (ignored for target=c, which returns to
    what was frozen). With ``stats_check`` (not in check mode) the result is proven by /stats. With
    ``bridge`` (a ``_handover.bridge.Handover``) new clients go to a bridge while the service
    restarts; it is drained and stopped before this returns or raises, and its figures are
    ``result['bridge']``. With ``privilege_drop`` (privilege_drop.MODES) a switch to Go runs it as
    that mode says and proves its processes' privileges against C's (``result['privileges']``).
    """
    if target == 'go' and privilege_drop:
        runtime.service_lines = service_lines(runtime, method, privilege_drop)
    try:
        result = _switch(runtime, target, release, method, listen_timeout, stop_timeout, check_mode, force_restart,
                         journal_lines, stop_mode, bridge, privilege_drop if target == 'go' else None)
    except SwitchError as exc:
        if bridge is not None:
            exc.details['bridge'] = record_bridge(runtime.store, bridge.finish())
        raise
    except Exception:
        if bridge is not None:
            bridge.finish()
        raise
    if bridge is not None:
        result['bridge'] = record_bridge(runtime.store, bridge.finish())
    if target == 'c' and c_stats_unsafe(runtime.manifest):
        # Never a connection to the stats port of a C proxy with -6: it aborts on any.
        result['stats_skipped'] = C_STATS_UNSAFE
    elif stats_check and not check_mode:
        check_stats_flavor(result, target, min(float(listen_timeout), STATS_CHECK_TIMEOUT), runtime.service,
                           runtime.release_kind, runtime.stats_reader())
    if result.get('restarted') and not check_mode:
        runtime.finish()
    return result


def record_bridge(store, record):
    """A bridge handover's figures, kept in the last switch of state.json too; None when no bridge ran."""
    if record.get('diverted_ms') is not None:
        state = store.state()
        if state and state.get('history'):
            state['history'][-1]['bridge'] = record
            store.save_state(state)
    return record if record.get('ready_ms') is not None else None


def service_lines(runtime, method, mode):
    """privilege_drop's lines for the cutover drop-in; SwitchError (nothing changed) when it cannot have them."""
    pointing = pt.method_of(runtime.state, 'go', method) if runtime.kind == 'systemd' else None
    try:
        lines = pd.service_lines(mode, runtime.manifest, runtime.kind, pointing)
    except pd.PrivilegeDropError as exc:
        raise SwitchError('%s: %s; nothing was changed' % (runtime.name, exc), refused='privilege_drop', changed=False)
    refusal = pd.file_refusal(mode, runtime.manifest)
    if refusal:
        # A wave host has no pre-warm: this is its only check before Go starts as that user.
        raise SwitchError('%s: %s; nothing was changed' % (runtime.name, refusal), refused='privilege_files',
                          changed=False)
    return lines


def prove_privileges(runtime, main_pid, mode):
    """(privilege_drop.judge of the restarted Go, failure text or None)."""
    try:
        processes = runtime.proxy_processes(main_pid)
    except pv.PrivilegeError as exc:
        return None, 'what the restarted Go runs as could not be read: %s' % exc
    judged = pd.judge(mode, runtime.manifest, processes, runtime.service_lines, runtime.kind)
    return judged, judged['message'] if judged['refused'] else None


def check_release(target, release, runtime):
    if target == 'go' and runtime.release_kind == 'binary':
        if not release:
            raise SwitchError('target=go needs binary (the staged Go binary on the host)')
        if not os.path.isfile(release) or not os.access(release, os.X_OK):
            raise SwitchError('Go binary %s is missing or not executable on the host' % release)
    if target == 'c' and runtime.release_kind == 'binary':
        return frozen_argv(runtime.manifest)[0]
    return release


def _switch(runtime, target, release, method, listen_timeout, stop_timeout, check_mode, force_restart,
            journal_lines, stop_mode, bridge, privilege_drop):
    if target not in TARGETS:
        raise SwitchError('target must be one of %s' % ', '.join(TARGETS))
    if stop_mode not in STOP_MODES:
        raise SwitchError('stop_mode must be one of %s' % ', '.join(STOP_MODES))
    release = check_release(target, release, runtime)
    manifest = runtime.manifest
    state = runtime.state
    secrets = runtime.secrets
    if not check_mode:
        runtime.clear_leftovers()
    plan = runtime.plan(target, release, method)
    binary = plan.binary
    method = plan.method
    extra_previous = plan.previous_good_extra()
    main_pid, live_ok = runtime.live_status(plan)
    result = {
        'changed': False, 'target': target, 'binary': binary, 'method': method, 'timings': None,
        'argv_matches': live_ok, 'main_pid': main_pid, 'restarted': False,
        'previous_good': (state or {}).get('previous_good'),
        'dropin_path': plan.dropin_path,
        'diff': plan.diff(secrets),
        'stats_url': manifest.get('stats_url'),
        'client_ports': manifest.get('client_ports') or [],
        'stats_flavor': None, 'stats_version': None, 'stats_skipped': None,
        'client_hosts': runtime.client_hosts,
        'journal': [],
    }
    if runtime.release_kind == 'image':
        result.update(image=binary, container=runtime.container)
    if plan.ok and live_ok and state_agrees(state, target, binary, method) and not force_restart:
        return result
    result['changed'] = True
    runtime.check_takes_effect(plan)
    if check_mode:
        if target == 'go':
            result['previous_good'] = transition(state, manifest, target, binary, method, None, now_iso(),
                                                 extra_previous=extra_previous)['previous_good']
        return result
    if journal_lines:
        # What the outgoing process logged, for the incident note, before the restart adds to it.
        result['journal'] = runtime.logs(journal_lines)
    if plan.ok and live_ok and not force_restart:
        # What runs is already right, only the record is missing: no client-visible restart.
        new_state = transition(state, manifest, target, binary, method, None, now_iso(), 'recorded', extra_previous)
        runtime.store.save_state(new_state)
        result['previous_good'] = new_state['previous_good']
        return result

    stats_unsafe = c_stats_unsafe(manifest)
    if bridge is not None:
        # Before anything changes: a bridge that does not get ready stops the switch with the host as it was.
        bridge.start(binary, target, skip_stats=target == 'c' and stats_unsafe)
    runtime.apply(plan)
    new_state = transition(state, manifest, target, binary, method, None, now_iso(), 'pending', extra_previous)
    runtime.store.save_state(new_state)
    result['previous_good'] = new_state['previous_good']

    since = time.time() - 1
    if not (manifest.get('client_ports') or [None])[0]:
        raise SwitchError('the manifest has no client port to wait for')
    try:
        if bridge is not None:
            bridge.divert()
        # With -6 the stats port is first touched by the /stats proof, once the argv proved Go runs.
        timings, failure, main_pid = runtime.restart(
            plan, stop_mode, listen_timeout, stop_timeout, None if stats_unsafe else manifest.get('stats_port'),
            (state or {}).get('current') or 'c')
    except CutoverError as exc:
        raise SwitchError(redact_text(str(exc), secrets), changed=True, target=target, binary=binary, method=method)
    except (IOError, OSError) as exc:
        raise SwitchError(redact_text('%s: %s' % (runtime.name, exc), secrets), changed=True, target=target,
                          binary=binary, method=method)
    if bridge is not None:
        # The service accepts (or failed to): new clients reach it again, the bridge keeps its own.
        bridge.restore()
    result.update(timings=timings, restarted=True, main_pid=main_pid)
    if failure is None:
        matches, why = runtime.prove(plan)
        result['argv_matches'] = matches
        if not matches:
            failure = 'the restarted process does not run the expected argv: %s' % why
    if failure is None and privilege_drop:
        result['privileges'], failure = prove_privileges(runtime, main_pid, privilege_drop)
    new_state['history'][-1].update(result='ok' if failure is None else 'failed', timings=timings)
    runtime.store.save_state(new_state)
    if failure is not None:
        message, journal = runtime.failure_message(target, binary, failure, since)
        details = dict(result)
        # The service was repointed and restarted even though the new binary failed.
        details.update(journal=journal, changed=True)
        raise SwitchError(message, **details)
    return result
