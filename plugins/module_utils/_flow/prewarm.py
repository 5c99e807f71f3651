# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pre-warm (and bridge) candidates: start one as the service would, judge it ready, stop it.

The runtime makes the candidate (``Runtime.candidate``: a transient unit with the unit's
credentials, or a throwaway container with the container's spec); this flow is the same for all:
start it, wait until ``/stats`` answers as the expected flavour with a loaded config, every client
port accepts and the process runs the command line it was given, then (``stop``) end it with
SIGTERM and keep how it ended. Every path out stops and removes the candidate, so nothing is left.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import NetnsError, PrewarmError
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import privilege_drop as pd
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import privileges as pv
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import probe
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.process import ms
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.baseline import FLAVORS
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.scrape import REFUSED, fetch
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.stats import FLAVOR_GO, StatsParseError, parse_stats

POLL_INTERVAL = 0.02
STATE_CHECK_INTERVAL = 0.2


def stats_ready(body):
    """(ready, reason): a /stats body parses and, if it is Go's, has a current config loaded."""
    try:
        parsed = parse_stats(body)
    except StatsParseError as exc:
        return False, '/stats body is not usable (%s)' % exc.kind
    if parsed.flavor == FLAVOR_GO and parsed.get('has_current_config') != 1:
        return False, '/stats answers but has_current_config is %s (config not loaded)' % parsed.get(
            'has_current_config')
    return True, None


def answer_flavor(body):
    try:
        return parse_stats(body).flavor
    except StatsParseError:
        return None


def wrong_flavor(flavor, expected):
    """Why a candidate expected to be ``expected`` that answers /stats as ``flavor`` is not it, or None."""
    if flavor is None or expected is None or flavor == expected:
        return None
    return ('answers /stats as the %s binary, not the %s one: the release pinned as %s is a %s build (check its '
            'sha256 or image ID)' % (FLAVORS[flavor], FLAVORS[expected], FLAVORS[expected], FLAVORS[flavor]))


def probe_candidate(candidate, stats_ok):
    """One look at a candidate inside its network namespace: /stats (until it was ready once), then the
    client ports. NetnsError when the namespace is gone."""
    out = {'seen': False, 'wrong': None, 'why': None, 'stats_ok': stats_ok, 'closed': None}
    with candidate.netns():
        if not stats_ok:
            answer = fetch(candidate.stats_url, timeout=1.0)
            if answer.ok:
                out['seen'] = True
                out['wrong'] = wrong_flavor(answer_flavor(answer.body), candidate.flavor)
                out['stats_ok'], out['why'] = stats_ready(answer.body)
            elif answer.error != REFUSED:
                out['seen'] = True
                out['why'] = '/stats answered with %s: %s' % (answer.error, answer.detail)
        if out['stats_ok']:
            out['closed'] = [p for p in candidate.client_ports if not probe.tcp_accepts(p, candidate.client_hosts)]
    return out


def wait_ready(candidate, deadline, check_stats=True, clock=time.monotonic, sleep=time.sleep):
    """(ready_at | 'exited' | 'wrong_flavor' | None, stats_seen, why not ready) of a started candidate.

    Ready: /stats parses as the candidate's flavour (Go: with a loaded config), every client port
    accepts where the proxy binds it, and the process runs the argv it was given. Without
    ``check_stats`` (a C bridge with -6, which aborts on any connection to its stats port) only the
    client ports and the argv are judged.
    """
    stats_ok = not check_stats
    stats_seen = False
    why = 'no answer yet'
    next_check = clock()
    while clock() < deadline:
        if clock() >= next_check:
            gone = candidate.gone()
            if gone is not None:
                return 'exited', stats_seen, gone
            next_check = clock() + STATE_CHECK_INTERVAL
        try:
            probed = probe_candidate(candidate, stats_ok)
        except NetnsError:
            # The candidate went away between the check and the entry into its namespace: seen next round.
            next_check = clock()
            sleep(POLL_INTERVAL)
            continue
        stats_seen = stats_seen or probed['seen']
        if probed['wrong']:
            return 'wrong_flavor', stats_seen, probed['wrong']
        if probed['why']:
            why = probed['why']
        stats_ok, closed = probed['stats_ok'], probed['closed']
        if stats_ok and closed == []:
            matches, argv_why = candidate.argv_proof()
            if matches:
                return clock(), stats_seen, None
            why = 'runs another command line than the one it was given: %s' % argv_why
        elif stats_ok and closed:
            why = 'client port(s) %s do not accept connections on %s' % (
                ', '.join(str(p) for p in closed), probe.show_host(candidate.client_hosts))
        sleep(POLL_INTERVAL)
    return None, stats_seen, why


def start(candidate, release, ready_timeout, check_mode=False, check_stats=True, privilege_drop=None):
    """Start ``candidate`` with ``release`` (a binary path or an image) and wait until it is ready.

    With ``privilege_drop`` (privilege_drop.MODES) the ready candidate's processes are judged against
    what C runs as (``result['privileges']``); a refused one is stopped and the start fails."""
    refusal = pd.file_refusal(privilege_drop, candidate.manifest) if privilege_drop is not None else None
    if refusal:
        raise PrewarmError('%s: %s; nothing was started' % (candidate.service, refusal), refused='privilege_files',
                           changed=False)
    result = candidate.prepare(release)
    if check_mode:
        return result
    started = time.monotonic()
    candidate.start()
    ready, stats_seen, why = wait_ready(candidate, started + ready_timeout, check_stats)
    details = dict(stats_url=result.get('stats_url'), client_ports=result.get('client_ports'),
                   stats_port=result.get('stats_port'))
    if ready == 'exited':
        candidate.fail('%s of %s exited during start-up after %d ms (%s)'
                       % (candidate.what, release, ms(time.monotonic() - started), why), **details)
    if ready is None or ready == 'wrong_flavor':
        if ready == 'wrong_flavor':
            pass
        elif check_stats and not stats_seen:
            why = ('is running but no stats server answered on %s within %ss (Go keeps running without a stats '
                   'server when its stats port is busy)' % (result.get('stats_url'), ready_timeout))
        else:
            why = 'is running but did not become ready within %ss: %s' % (ready_timeout, why)
        candidate.fail('%s of %s on %s %s; it was stopped' % (candidate.what, release, candidate.service, why),
                       **details)
    result['ready_ms'] = ms(ready - started)
    result['pid'] = candidate.pid()
    if privilege_drop is not None:
        result['privileges'] = judge_privileges(candidate, privilege_drop, details)
    return result


def judge_privileges(candidate, mode, details):
    """privilege_drop.judge of a ready candidate; a refusal stops it and fails (candidate.fail)."""
    try:
        processes = candidate.processes()
    except pv.PrivilegeError as exc:
        candidate.fail('%s on %s: what its processes run as could not be read (%s); it was stopped'
                       % (candidate.what, candidate.service, exc), **details)
    judged = pd.judge(mode, candidate.manifest, processes, candidate.runtime.service_lines, candidate.runtime.kind)
    if judged['refused']:
        candidate.fail('%s on %s refused: %s; it was stopped' % (candidate.what, candidate.service, judged['message']),
                       privileges=judged, refused='privileges', **details)
    return judged


def stop(candidate, stop_timeout, check_mode=False):
    """SIGTERM the candidate's proxy, wait for it (``stop_timeout``), keep its exit, remove the candidate."""
    if not candidate.exists():
        return candidate.stop_result(changed=False)
    if check_mode:
        return candidate.stop_result(changed=True)
    return candidate.stop(stop_timeout)
