# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a proxy service runs now, proven (mtproxy_info). Reads only; changes nothing.

The service's runtime says which binary its process is (``Runtime.identify``: for a unit, the
MainPID's argv against the frozen one with the C binary or a Go release ``state.json`` names, and
``/proc/PID/exe`` for the symlink method; for a container, its image, the proxy's argv); ``/stats``,
read where the runtime's stats port is, must answer as that binary. Anything else is ``unknown``,
with the reason. ``/stats`` is never read when the frozen C argv has ``-6``: the C proxy aborts on
any connection to its stats port; the argv proof then stands alone. A host is judged at the end of
a run exactly as the switch proves it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import CutoverError
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow.proof import C_STATS_UNSAFE, c_stats_unsafe
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import redact_text
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.manifest import manifest_secrets
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.choice import runtime_for
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.baseline import FLAVORS
from ansible_collections.mtproxy.cutover.plugins.module_utils._state import StateDir

RUNNING = ('go', 'c', 'unknown')


def go_binaries(state):
    """The Go binaries (or images) state.json names, the current one first."""
    state = state or {}
    found = [state.get('binary')] if state.get('current') == 'go' else []
    found += [entry.get('binary') for entry in reversed(state.get('history') or []) if entry.get('to') == 'go']
    return [binary for index, binary in enumerate(found) if binary and binary not in found[:index]]


def blank(service, state_dir):
    """The result before anything is known."""
    return {'changed': False, 'service': service, 'state_dir': state_dir, 'running': 'unknown', 'method': None,
            'binary': None, 'main_pid': None, 'argv_matches': False, 'stats_flavor': None, 'stats_skipped': None,
            'recorded': None, 'frozen': False, 'reason': None}


def service_info(service, state_dir, docker_socket=None, stats_check=True, timeout=5.0, systemd_dir=None):
    """The module result: what ``service`` runs now (``running``) and why it is ``unknown`` when it is."""
    result = blank(service, state_dir)
    store = StateDir(state_dir, service)
    try:
        if store.manifest(required=False) is None:
            result['reason'] = ('never frozen: there is no freeze manifest at %s, so what it runs cannot be proven'
                                % store.manifest_path)
            return result
    except CutoverError as exc:
        result['reason'] = str(exc)
        return result
    result['frozen'] = True
    secrets = []
    try:
        runtime = runtime_for(store, docker_socket=docker_socket, systemd_dir=systemd_dir)
        secrets = manifest_secrets(runtime.manifest)
        result['recorded'] = (runtime.state or {}).get('current')
        result['method'] = runtime.recorded_method()
        seen = runtime.identify(go_binaries(runtime.state))
        result.update(main_pid=seen['main_pid'], binary=seen['binary'], argv_matches=seen['argv_matches'],
                      reason=seen['reason'])
        if seen['flavor'] is not None:
            prove_stats(result, runtime, seen['flavor'], stats_check, timeout)
    except (CutoverError, OSError) as exc:
        result.update(running='unknown', reason='cannot read %s: %s' % (service, exc))
    if result['reason']:
        result['reason'] = redact_text(result['reason'], secrets)
    return result


def prove_stats(result, runtime, flavor, stats_check, timeout):
    """``running`` is ``flavor`` once /stats agrees (or is rightly not read); else ``unknown`` and why."""
    url = runtime.manifest.get('stats_url')
    if c_stats_unsafe(runtime.manifest):
        result.update(running=flavor, stats_skipped=C_STATS_UNSAFE)
        return
    if not stats_check:
        result.update(running=flavor, stats_skipped='stats_check=false: the argv proof stands alone')
        return
    if not url:
        result['reason'] = 'the manifest has no stats URL to prove the %s binary with' % FLAVORS[flavor]
        return
    answered, _version, why = runtime.stats_reader()(url, timeout)
    result['stats_flavor'] = answered
    if answered == flavor:
        result['running'] = flavor
    elif answered is None:
        result['reason'] = 'the argv says %s, but /stats cannot prove it: %s' % (FLAVORS[flavor], why)
    else:
        result['reason'] = 'the argv says %s, but /stats answers as the %s binary' % (
            FLAVORS[flavor], FLAVORS.get(answered, answered))
