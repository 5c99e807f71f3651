# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What proves which binary a service runs: the argv word for word, and who answers ``/stats``.

Used by every runtime after a switch and by ``mtproxy_info`` at the end of a run; the runtime says
where the process and its network namespace are, these functions judge what was read there.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import SwitchError
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import (
    client_probe_hosts, parse_argv, redact_argv, redact_text)
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.refusals import IPV6_ASSERTION
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.baseline import FLAVORS, stats_version, why_unreadable
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.judge import take_sample

STATS_RETRY_INTERVAL = 0.2
STATS_CHECK_TIMEOUT = 5.0
C_STATS_UNSAFE = ('the C proxy runs with -6 and aborts on any connection to its stats port (%s): '
                  'its /stats is never read, the argv proof stands alone' % IPV6_ASSERTION)


def frozen_argv(manifest):
    """The argv of the C process as frozen from /proc/<pid>/cmdline."""
    return list(manifest['argv'])


def client_hosts_of(manifest, ipv6_loopback=False):
    """Where the frozen proxy's client ports are reached: its --address, else loopback."""
    return client_probe_hosts(parse_argv(frozen_argv(manifest)), ipv6_loopback)


def c_stats_unsafe(manifest):
    """The frozen C proxy runs with -6: any connection to its stats port makes it abort."""
    return parse_argv(frozen_argv(manifest)).ipv6


def argv_matches(cmdline, expected):
    """True when the live argv equals ``expected`` word for word."""
    return list(cmdline) == list(expected)


def explain_mismatch(cmdline, expected, secrets):
    """One redacted sentence naming the first differing argv position."""
    live = list(cmdline)
    want = list(expected)
    shown_live = redact_argv(live)
    shown_want = redact_argv(want)
    for index in range(max(len(live), len(want))):
        got = live[index] if index < len(live) else None
        exp = want[index] if index < len(want) else None
        if got == exp:
            continue
        shown_got = shown_live[index] if got is not None else '<missing>'
        shown_exp = shown_want[index] if exp is not None else '<missing>'
        if shown_got == shown_exp:
            return 'argv differs at position %d in a secret value (both redacted)' % index
        return redact_text('argv differs at position %d: expected %r, live process has %r '
                           '(expected %d words, live %d)' % (index, shown_exp, shown_got, len(want), len(live)),
                           secrets)
    return 'argv is equal'


def read_stats_flavor(url, timeout_s, take=None, clock=time.monotonic, sleep=time.sleep):
    """(flavor, version, None) of the binary answering ``url``, or (None, None, why).

    Retries every STATS_RETRY_INTERVAL until a body parses or ``timeout_s`` is spent: a binary that
    just bound its stats port may not serve a full body at once. Bounded by timeout_s plus one scrape.
    """
    take = take or take_sample
    deadline = clock() + timeout_s
    while True:
        sample = take(url)
        if sample.get('parsed') is not None:
            return sample['parsed'].flavor, stats_version([sample]) or None, None
        if clock() + STATS_RETRY_INTERVAL > deadline:
            return None, None, why_unreadable(url, [sample])
        sleep(STATS_RETRY_INTERVAL)


def check_stats_flavor(result, target, timeout_s, name, what='binary', read=None):
    """Prove that the binary answering the result's stats URL is ``target``; fills stats_flavor.

    ``read(url, timeout_s)`` reads the flavour where the service's stats port is (a runtime passes
    one that enters the container's network namespace); SwitchError naming what answers instead.
    """
    url = result.get('stats_url')
    if not url:
        raise SwitchError('%s: the manifest has no stats URL to prove the %s %s with (stats_check=false '
                          'skips the proof)' % (name, FLAVORS[target], what), **result)
    flavor, version, why = (read or read_stats_flavor)(url, timeout_s)
    result.update(stats_flavor=flavor, stats_version=version)
    if flavor != target:
        raise SwitchError('%s should run the %s %s now, but %s' % (
            name, FLAVORS[target], what, why or '/stats answers as the %s binary' % FLAVORS.get(flavor, flavor)),
            **result)
    return result
