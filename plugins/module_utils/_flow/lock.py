# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One run at a time per service: the run lock, held on the host itself.

The lock is a file in the service's state directory (``_state.LOCK``) naming its holder: the run
id, the playbook, the controller host, user and ``ansible-playbook`` process (pid and start time),
when it was taken and until when its lease runs. Every playbook takes it before its first change
and gives it back after its last; every step that changes the host (freeze, pre-warm, switch)
first checks that its run still holds it, and renews the lease. A second run that meets it stops
before changing anything, with the holder named.

A lock is stale when its lease ran out, or when the controller that took it says its process is
gone (the action plugin checks that on its own controller and asks to break it by run id). A lock
is taken over only when asked (rollback.yml's emergency path); the new holder records whom it took
the lock from, and the old run, at its next step, finds it gone and stops for that host, with the
taker named even after the taker gave the lock back (``_state.LOCK_TAKEN_OVER``).

Read-modify-write of the lock file happens under ``flock`` of a guard file beside it, so two module
runs on one host (two controllers) cannot both take it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import fcntl
import os
import time

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import LockedError, StateError
from ansible_collections.mtproxy.cutover.plugins.module_utils._state import LOCK, LOCK_GUARD, LOCK_TAKEN_OVER

DEFAULT_LEASE_S = 4 * 3600
HOLDER_FIELDS = ('run_id', 'playbook', 'controller', 'user', 'pid', 'pid_start')


@contextlib.contextmanager
def guarded(store):
    """Inside: this process alone reads and writes the service's lock (flock of the guard file)."""
    os.makedirs(store.path, 0o700, exist_ok=True)
    fd = os.open(store.file(LOCK_GUARD), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read(store):
    """The lock document, or None when no run holds the service."""
    try:
        document = store.read_json(LOCK)
    except StateError:
        # A lock file that cannot be parsed was cut short by a crash mid-write: nobody holds it.
        return None
    return document if isinstance(document, dict) and document.get('run_id') else None


def describe(holder):
    """'<run id> (<playbook> from <user>@<controller>, pid <pid>, since <taken_at>)'."""
    if not holder:
        return 'nobody'
    return '%s (%s from %s@%s, pid %s, since %s)' % (
        holder.get('run_id'), holder.get('playbook') or '?', holder.get('user') or '?',
        holder.get('controller') or '?', holder.get('pid') or '?', holder.get('taken_at') or '?')


def expired(holder, now):
    return bool(holder) and float(holder.get('lease_until') or 0) < now


def iso(epoch):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(epoch))


def acquire(store, holder, lease_s=DEFAULT_LEASE_S, takeover=False, break_run=None, now=None, check_mode=False):
    """Take (or renew) the lock of ``store``'s service for ``holder`` (a dict with HOLDER_FIELDS).

    Returns {acquired, renewed, holder, previous, broken, taken_over}. ``previous`` is the lock that
    was there (None), ``broken`` says why it was replaced without a takeover (its lease ran out, or
    ``break_run`` named its run id), ``taken_over`` that it was taken from a live holder on purpose.
    Raises LockedError (details: ``locked_by``) when another run holds it and none of that applies.
    """
    now = time.time() if now is None else now
    mine = dict((key, holder.get(key)) for key in HOLDER_FIELDS)
    with guarded(store):
        current = read(store)
        result = {'acquired': False, 'renewed': False, 'holder': None, 'previous': current, 'broken': None,
                  'taken_over': False}
        if current is not None and current.get('run_id') == mine['run_id']:
            mine.update(taken_at=current.get('taken_at'), taken_over_from=current.get('taken_over_from'))
            result['renewed'] = True
            result['previous'] = None
        elif current is not None:
            if expired(current, now):
                result['broken'] = 'its lease ran out at %s' % current.get('lease_until_at')
            elif break_run and break_run == current.get('run_id'):
                result['broken'] = 'break_run named it'
            elif takeover:
                result['taken_over'] = True
                mine['taken_over_from'] = dict((key, current.get(key)) for key in HOLDER_FIELDS + ('taken_at',))
            else:
                raise LockedError(
                    '%s is locked by run %s: another run is changing it, so this run changes nothing on it. Way '
                    'forward: wait until that run ends; if its controller is gone (killed, rebooted), run again '
                    'with mtproxy_cutover_lock_break=%s; in an emergency, rollback.yml with '
                    'mtproxy_cutover_lock_takeover=true takes the host from it (both reports say so)'
                    % (store.service, describe(current), current.get('run_id')),
                    locked_by=current, changed=False)
        if not check_mode and not result['renewed']:
            if result['taken_over']:
                store.write_json(LOCK_TAKEN_OVER, {'from_run': current.get('run_id'),
                                                   'by': dict((key, mine.get(key)) for key in HOLDER_FIELDS)})
            else:
                store.remove(LOCK_TAKEN_OVER)
        mine.setdefault('taken_at', None)
        mine['taken_at'] = mine['taken_at'] or iso(now)
        mine['lease_s'] = lease_s
        mine['lease_until'] = now + lease_s
        mine['lease_until_at'] = iso(now + lease_s)
        if not check_mode:
            store.write_json(LOCK, mine)
        result.update(acquired=True, holder=mine)
        return result


def check(store, run_id, now=None, check_mode=False):
    """Before a change: the run ``run_id`` still holds the lock (its lease is renewed by the length it was
    taken with); LockedError if not.

    ``run_id`` None (a module run outside a playbook run) checks nothing; in check mode a free lock passes
    (the dry run's acquire did not write it).
    """
    if not run_id:
        return None
    now = time.time() if now is None else now
    with guarded(store):
        current = read(store)
        if current is None and check_mode:
            # A dry run's acquire wrote no lock (it would have taken a free one): nothing to renew.
            return None
        if current is None or current.get('run_id') != run_id:
            taken = _taken_over(store, run_id)
            if taken:
                why = 'run %s took it over' % describe(taken['by'])
                why += (' and holds it now' if current and current.get('run_id') == taken['by'].get('run_id')
                        else ', then gave it back; it is held by %s now' % describe(current))
            else:
                why = ('another run holds it now: %s' % describe(current)) if current else \
                    'its lock was broken or released, and nobody holds it now'
            raise LockedError('%s is no longer held by run %s: %s. This run changes nothing more on it'
                              % (store.service, run_id, why), locked_by=current, changed=False)
        lease_s = int(current.get('lease_s') or DEFAULT_LEASE_S)
        current['lease_until'] = now + lease_s
        current['lease_until_at'] = iso(now + lease_s)
        if not check_mode:
            store.write_json(LOCK, current)
        return current


def _taken_over(store, run_id):
    """The takeover record of ``run_id``'s lock ({from_run, by}), or None."""
    try:
        record = store.read_json(LOCK_TAKEN_OVER)
    except StateError:
        return None
    if isinstance(record, dict) and record.get('from_run') == run_id and isinstance(record.get('by'), dict):
        return record
    return None


def release(store, run_id, check_mode=False):
    """Give the lock back if ``run_id`` holds it: {released, holder} (holder: who holds it now)."""
    with guarded(store):
        current = read(store)
        if current is None or current.get('run_id') != run_id:
            return {'released': False, 'holder': current}
        if not check_mode:
            store.remove(LOCK)
        return {'released': True, 'holder': None}
