"""The run lock (module_utils/_flow/lock.py): one run at a time per service, a holder named, stale locks broken."""
import json
import os

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import LockedError
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import lock
from ansible_collections.mtproxy.cutover.plugins.module_utils._state import LOCK, LOCK_TAKEN_OVER, StateDir

NOW = 1800000000.0


def holder(run_id, playbook='cutover', controller='ctl-a', pid=4242):
    return {'run_id': run_id, 'playbook': playbook, 'controller': controller, 'user': 'ops', 'pid': pid,
            'pid_start': 1234}


@pytest.fixture
def store(tmp_path):
    return StateDir(str(tmp_path), 'MTProxy')


def test_a_free_lock_is_taken_and_named_on_the_host(store):
    got = lock.acquire(store, holder('run-1'), lease_s=60, now=NOW)
    assert got['acquired'] and not got['renewed'] and got['previous'] is None and got['broken'] is None
    on_host = json.loads(open(store.file(LOCK)).read())
    assert on_host['run_id'] == 'run-1' and on_host['controller'] == 'ctl-a' and on_host['pid'] == 4242
    assert on_host['lease_until'] == NOW + 60 and on_host['taken_at'] == '2027-01-15T08:00:00Z'
    assert oct(os.stat(store.file(LOCK)).st_mode & 0o777) == '0o600'


def test_the_same_run_renews_it(store):
    lock.acquire(store, holder('run-1'), lease_s=60, now=NOW)
    got = lock.acquire(store, holder('run-1'), lease_s=60, now=NOW + 30)
    assert got['renewed'] and got['holder']['lease_until'] == NOW + 90
    assert got['holder']['taken_at'] == '2027-01-15T08:00:00Z'


def test_a_second_run_changes_nothing_and_is_told_who_holds_it(store):
    lock.acquire(store, holder('run-1'), lease_s=60, now=NOW)
    before = open(store.file(LOCK)).read()
    with pytest.raises(LockedError) as info:
        lock.acquire(store, holder('run-2', 'rollback', 'ctl-b'), lease_s=60, now=NOW + 1)
    message = str(info.value)
    assert 'locked by run run-1 (cutover from ops@ctl-a, pid 4242' in message
    assert 'mtproxy_cutover_lock_break=run-1' in message and 'mtproxy_cutover_lock_takeover=true' in message
    assert info.value.details['refused'] == 'locked' and info.value.details['locked_by']['run_id'] == 'run-1'
    assert open(store.file(LOCK)).read() == before


def test_a_lock_whose_lease_ran_out_is_broken_and_said_so(store):
    lock.acquire(store, holder('run-1'), lease_s=60, now=NOW)
    got = lock.acquire(store, holder('run-2'), lease_s=60, now=NOW + 61)
    assert got['acquired'] and got['previous']['run_id'] == 'run-1'
    assert got['broken'].startswith('its lease ran out at 2027-01-15T08:01:00Z')


def test_break_run_breaks_only_the_named_run(store):
    lock.acquire(store, holder('run-1'), lease_s=60, now=NOW)
    with pytest.raises(LockedError):
        lock.acquire(store, holder('run-2'), break_run='run-0', now=NOW + 1)
    got = lock.acquire(store, holder('run-2'), break_run='run-1', now=NOW + 1)
    assert got['broken'] == 'break_run named it' and got['holder']['run_id'] == 'run-2'


def test_a_takeover_records_whom_it_took_the_lock_from_and_the_old_run_stops(store):
    lock.acquire(store, holder('cutover-1'), lease_s=600, now=NOW)
    got = lock.acquire(store, holder('rollback-1', 'rollback', 'ctl-b'), takeover=True, now=NOW + 5)
    assert got['taken_over'] and got['holder']['taken_over_from']['run_id'] == 'cutover-1'
    # The cutover's next change finds the service held by the rollback and changes nothing.
    with pytest.raises(LockedError, match='no longer held by run cutover-1: run rollback-1 .* took it over and holds it now'
                       ) as info:
        lock.check(store, 'cutover-1', now=NOW + 6)
    assert info.value.details['locked_by']['run_id'] == 'rollback-1'
    # The rollback renews it and still says whom it took it from.
    again = lock.acquire(store, holder('rollback-1', 'rollback', 'ctl-b'), now=NOW + 7)
    assert again['renewed'] and again['holder']['taken_over_from']['run_id'] == 'cutover-1'
    # After the rollback gave it back, the cutover still learns who took the service from it.
    lock.release(store, 'rollback-1')
    with pytest.raises(LockedError, match=r'run rollback-1 \(rollback from .*took it over, then gave it back; it is held '
                                          r'by nobody now') as info:
        lock.check(store, 'cutover-1', now=NOW + 8)
    assert info.value.details['locked_by'] is None
    # A run that takes the lock afresh ends that record: it is of no other run.
    lock.acquire(store, holder('cutover-2'), now=NOW + 9)
    assert not os.path.exists(store.file(LOCK_TAKEN_OVER))
    with pytest.raises(LockedError, match='another run holds it now: cutover-2'):
        lock.check(store, 'cutover-1', now=NOW + 10)


def test_check_renews_the_lease_of_its_run_by_the_length_it_was_taken_with(store):
    lock.acquire(store, holder('run-1'), lease_s=60, now=NOW)
    assert lock.check(store, 'run-1', now=NOW + 50)['lease_until'] == NOW + 110
    lock.acquire(store, holder('run-1'), lease_s=900, now=NOW + 60)
    assert lock.check(store, 'run-1', now=NOW + 70)['lease_until'] == NOW + 970
    assert lock.read(store)['lease_until'] == NOW + 970


def test_nothing_is_checked_without_a_run_and_a_released_lock_is_not_held(store):
    lock.acquire(store, holder('run-1'), now=NOW)
    assert lock.check(store, None) is None
    lock.release(store, 'run-1')
    with pytest.raises(LockedError, match='released'):
        lock.check(store, 'run-1')


def test_release_gives_back_only_its_own_lock(store):
    lock.acquire(store, holder('run-1'), now=NOW)
    assert lock.release(store, 'run-2') == {'released': False, 'holder': lock.read(store)}
    assert lock.release(store, 'run-1') == {'released': True, 'holder': None}
    assert not os.path.exists(store.file(LOCK)) and lock.release(store, 'run-1')['released'] is False


def test_check_mode_writes_nothing(store):
    lock.acquire(store, holder('run-1'), now=NOW, check_mode=True)
    assert lock.read(store) is None
    lock.acquire(store, holder('run-1'), now=NOW)
    lock.release(store, 'run-1', check_mode=True)
    assert lock.read(store)['run_id'] == 'run-1'


def test_a_dry_run_passes_its_checks_on_a_free_lock_but_not_on_a_held_one(store):
    # --check: the acquire wrote nothing, so the freeze's and the switch's checks find no lock.
    lock.acquire(store, holder('dry-run'), now=NOW, check_mode=True)
    assert lock.check(store, 'dry-run', now=NOW, check_mode=True) is None
    assert lock.read(store) is None
    with pytest.raises(LockedError):
        lock.check(store, 'dry-run', now=NOW)
    lock.acquire(store, holder('real-run'), now=NOW)
    with pytest.raises(LockedError) as raised:
        lock.check(store, 'dry-run', now=NOW, check_mode=True)
    assert 'another run holds it now: real-run' in str(raised.value)


def test_a_lock_file_cut_short_by_a_crash_holds_nothing(store):
    os.makedirs(store.path)
    with open(store.file(LOCK), 'w') as handle:
        handle.write('{"run_id": "run-1", "pla')
    assert lock.read(store) is None
    assert lock.acquire(store, holder('run-2'), now=NOW)['acquired']


def test_describe():
    assert lock.describe(None) == 'nobody'
    assert lock.describe(dict(holder('r'), taken_at='T')) == 'r (cutover from ops@ctl-a, pid 4242, since T)'


def test_the_controller_breaks_only_a_lock_of_its_own_process_that_is_gone():
    import subprocess
    import sys
    from ansible_collections.mtproxy.cutover.plugins.action.mtproxy_lock import holder_gone
    from ansible_collections.mtproxy.cutover.plugins.plugin_utils.report_files import process_start
    me = {'controller': 'ctl-a', 'pid': os.getpid(), 'pid_start': process_start(os.getpid())}
    assert not holder_gone(me, 'ctl-a')
    assert holder_gone(dict(me, pid_start=me['pid_start'] - 1), 'ctl-a')  # the pid was reused
    ended = subprocess.Popen([sys.executable, '-c', 'pass'])
    ended.wait()
    gone = {'controller': 'ctl-a', 'pid': ended.pid, 'pid_start': 1}
    assert holder_gone(gone, 'ctl-a')
    assert not holder_gone(gone, 'ctl-b')  # another controller's process cannot be checked from here
    assert not holder_gone(None, 'ctl-a')
