# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state of a run as the plays see it, and the predicates that decide whether a play goes on.

A run's state is kept in facts of its hosts, never in ``hostvars['localhost']``:

* ``__mtproxy_cutover_outcome``: what the run decided for the host (``on_go`` judged and kept on
  Go, ``rolled_back``, ``on_c``, ``failed``, ``unreachable``, ``locked``: another run holds it), set by
  the playbooks' task files;
* ``__mtproxy_cutover_stop``: why the run stops (set on the host whose step stopped it: a host that
  does not answer before anything changed, a failed freeze, stage or rollback); every later step
  is skipped and the Report play reads the hosts;
* ``__mtproxy_cutover_machine``: the host's ``uname -m``, read by the reachability check (the dual-run
  gate's and the drill report's architecture);
* ``preflight_settings``: the host's settings resolved once by the preflight (``stop_after``,
  ``serial``, ...); ``preflight_run``: the run (its hosts in flip order: canaries, then waves).

The hosts of a run are put in inventory groups by the preflight (``run_group``): group
``mtproxy_run_<n>`` (every host of the run), ``..._canaries`` / ``..._waves`` (split by the
resolved canary group) and ``..._wave_<k>`` (the waves, as ``mtproxy_cutover_serial`` batches
them), ``<n>`` one more than any such group of an earlier playbook in the same ansible-playbook
process, so that a later play names exactly this run's hosts.

The predicates take the host variables of the run's hosts (``preflight_run.hosts |
map('extract', hostvars)``) and are exposed as the collection's tests and filters
(plugins/test/run_state.py, plugins/filter/run_state.py).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible.utils.helpers import pct_to_int

OUTCOME = '__mtproxy_cutover_outcome'
STOP = '__mtproxy_cutover_stop'
SETTINGS = 'preflight_settings'
# Outcomes a run decides for a host; only ON_GO lets the flips go on past it.
ON_GO = 'on_go'
OUTCOMES = (ON_GO, 'rolled_back', 'on_c', 'failed', 'unreachable', 'locked')
FAILED_OUTCOMES = ('rolled_back', 'failed', 'unreachable', 'locked')
# The steps of cutover.yml that stop_after can leave out, in runbook order.
STEPS = ('freeze', 'stage', 'flip')
STOP_AFTER = ('freeze', 'stage')


class RunStateError(ValueError):
    pass


def _get(host, name, default=None):
    """A variable of one host (a dict or Ansible's host variables), ``default`` when it is not set."""
    try:
        value = host.get(name, default) if hasattr(host, 'get') else default
    except Exception:  # pylint: disable=broad-except  # an undefined variable of any kind
        return default
    return default if value is None else value


def name_of(host):
    return _get(host, 'inventory_hostname', '?')


def outcome(host):
    """What the run decided for ``host`` ('' when nothing yet)."""
    value = _get(host, OUTCOME, '')
    return value if value in OUTCOMES else ''


def stop_reason(hosts):
    """Why the run stops ('' while it goes on): the reasons of the hosts that stopped it, named."""
    reasons = []
    for host in hosts:
        reason = _get(host, STOP, '')
        if reason and reason not in reasons:
            reasons.append(reason)
    return '; '.join(reasons)


def stop_after(hosts):
    """The run's ``stop_after`` ('' when not set), from the resolved settings of its hosts."""
    for host in hosts:
        value = (_get(host, SETTINGS, {}) or {}).get('stop_after') or ''
        if value:
            if value not in STOP_AFTER:
                raise RunStateError('stop_after must be one of %s, got %r' % (', '.join(STOP_AFTER), value))
            return value
    return ''


def skipped_by_stop_after(step, value):
    """True when ``stop_after`` = ``value`` leaves ``step`` out (freeze: stage and flips; stage: flips)."""
    if step not in STEPS:
        raise RunStateError('step must be one of %s, got %r' % (', '.join(STEPS), step))
    return bool(value) and STEPS.index(step) > STEPS.index(value)


def earlier_not_on_go(hosts, batch):
    """Hosts before the first host of ``batch`` (in the order of ``hosts``) that are not judged on Go."""
    names = [name_of(host) for host in hosts]
    batch = [name for name in (batch or []) if name in names]
    if not batch:
        return []
    first = min(names.index(name) for name in batch)
    return [name_of(host) for host in hosts[:first] if outcome(host) != ON_GO]


def goes_on_to(hosts, step, batch=None):
    """True when the run goes on to ``step`` (freeze, stage, flip).

    Not after a stop (``__mtproxy_cutover_stop`` on any host), nor past ``stop_after``. For ``flip``,
    ``hosts`` are the run's hosts in flip order (canaries, then waves) and ``batch`` the hosts about
    to flip: every host before them must have been judged and kept on Go. A canary or a wave host
    that was rolled back, failed, went away or left the play without an outcome ends the flips.
    """
    hosts = list(hosts)
    if stop_reason(hosts) or skipped_by_stop_after(step, stop_after(hosts)):
        return False
    return not (step == 'flip' and earlier_not_on_go(hosts, batch))


def failed_hosts(hosts):
    """Names of the hosts the run rolled back, that failed or went away."""
    return [name_of(host) for host in hosts if outcome(host) in FAILED_OUTCOMES]


def all_on_go(hosts):
    """True when every host was judged and kept on Go (a wave that went well)."""
    return all(outcome(host) == ON_GO for host in hosts)


def waves(hosts, serial):
    """The batches Ansible makes of ``hosts`` for a play with ``serial`` (the waves, in order).

    As Ansible's PlaybookExecutor: each item of ``serial`` (a number of hosts, or a percentage of all
    of them, at least 1) makes one batch, the last item repeats until no host is left; no item, or
    one of 0 or less, puts every remaining host in one batch.
    """
    remaining = list(hosts)
    total = len(remaining)
    sizes = list(serial) if isinstance(serial, (list, tuple)) else [serial]
    sizes = sizes or [-1]
    batches = []
    index = 0
    while remaining:
        try:
            size = pct_to_int(sizes[index], total)
        except (TypeError, ValueError):
            raise RunStateError('serial item %r is not a number of hosts or a percentage' % (sizes[index],))
        if size <= 0:
            batches.append(remaining)
            break
        batches.append(remaining[:size])
        remaining = remaining[size:]
        index = min(index + 1, len(sizes) - 1)
    return batches


def wave_of(hosts, host, serial):
    """{number (1 for the first wave), hosts} of the wave ``host`` flips in; number 0 when it is in none."""
    for number, batch in enumerate(waves(hosts, serial), 1):
        if host in batch:
            return {'number': number, 'hosts': batch}
    return {'number': 0, 'hosts': []}


RUN_GROUP = 'mtproxy_run_'
RUN_GROUP_KINDS = ('hosts', 'canaries', 'waves')
# A host pattern that matches nothing and draws no warning (group all always exists).
NO_HOSTS = 'all:!all'
_RUN_GROUP = re.compile(r'^%s([0-9]+)$' % RUN_GROUP)


def run_group(groups, kind='hosts', new=False):
    """The host pattern of this run's ``kind`` of hosts (the newest run group), or with ``new`` the names
    {hosts, canaries, waves} of the groups a run that starts now puts its hosts in.

    A kind of hosts the run has none of, or any kind before a run started (``--syntax-check``,
    ``--list-hosts``), is a pattern that matches nothing (and draws no warning).
    """
    if kind not in RUN_GROUP_KINDS:
        raise RunStateError('kind must be one of %s, got %r' % (', '.join(RUN_GROUP_KINDS), kind))
    numbers = [int(match.group(1)) for match in (_RUN_GROUP.match(str(name)) for name in groups) if match]
    number = max(numbers or [0]) + (1 if new else 0)
    base = '%s%d' % (RUN_GROUP, number)
    if new:
        return {'hosts': base, 'canaries': base + '_canaries', 'waves': base + '_waves', 'wave': base + '_wave_'}
    if not number:
        # No preflight ran (ansible-playbook --syntax-check, --list-hosts): the run has no hosts yet.
        return NO_HOSTS
    if kind == 'hosts':
        return base
    name = '%s_%s' % (base, kind)
    return name if name in groups else '%s:!%s' % (base, base)


def run_serial(groups):
    """The waves of the newest run as the wave play's ``serial``: the size of each of its wave groups, in order.

    The preflight batched the run's wave hosts (``waves``, with the resolved ``mtproxy_cutover_serial``) into
    groups ``mtproxy_run_<n>_wave_<k>``; the play batches them again the same way. Before any run (the
    play then has no host) an empty list.
    """
    base = run_group(groups)
    if base == NO_HOSTS:
        return []
    sizes = []
    while '%s_wave_%d' % (base, len(sizes) + 1) in groups:
        sizes.append(len(groups['%s_wave_%d' % (base, len(sizes) + 1)]))
    return sizes
