"""The run's predicates (plugin_utils/run_state.py, its tests and filters) and the drill's envelope judge."""
import itertools

import pytest

from ansible.executor.playbook_executor import PlaybookExecutor
from ansible_collections.mtproxy.cutover.plugins.filter.drill_envelope import drill_envelope
from ansible_collections.mtproxy.cutover.plugins.filter.failed_hosts import FilterModule as FailedHosts
from ansible_collections.mtproxy.cutover.plugins.filter.wave_of import wave_of_filter
from ansible_collections.mtproxy.cutover.plugins.plugin_utils import run_state as rs
from ansible_collections.mtproxy.cutover.plugins.plugin_utils.envelope import EnvelopeError, judge_envelope
from ansible_collections.mtproxy.cutover.plugins.test.all_on_go import TestModule as AllOnGo
from ansible_collections.mtproxy.cutover.plugins.test.going_on_to import going_on_to

from ansible.errors import AnsibleFilterError


def host(name, outcome=None, stop=None, stop_after=None):
    """Host variables as hostvars gives them: only what was set is there."""
    variables = {'inventory_hostname': name, 'preflight_settings': {'stop_after': stop_after or ''}}
    if outcome is not None:
        variables[rs.OUTCOME] = outcome
    if stop is not None:
        variables[rs.STOP] = stop
    return variables


class Undefined(dict):
    """A host whose variables raise on access, as an undefined template does."""

    def get(self, name, default=None):
        raise RuntimeError('undefined variable %s' % name)


# --- stop and stop_after ---------------------------------------------------------------------------

@pytest.mark.parametrize('stop_after, reached', [
    ('', ['freeze', 'stage', 'flip']),
    ('freeze', ['freeze']),
    ('stage', ['freeze', 'stage']),
])
def test_stop_after_leaves_out_the_steps_after_it(stop_after, reached):
    hosts = [host('h1', stop_after=stop_after), host('h2', stop_after=stop_after)]
    assert [step for step in rs.STEPS if going_on_to(hosts, step)] == reached


def test_a_stop_on_any_host_ends_every_later_step_and_names_why():
    hosts = [host('h1'), host('h2', stop='h2: freeze: drifted'), host('h3', stop='h3: freeze: drifted')]
    assert not any(going_on_to(hosts, step) for step in rs.STEPS)
    assert rs.stop_reason(hosts) == 'h2: freeze: drifted; h3: freeze: drifted'
    assert rs.stop_reason([host('h1'), host('h2', stop='')]) == ''


def test_an_unknown_step_or_stop_after_is_an_error_not_a_silent_flip():
    with pytest.raises(AnsibleFilterError, match='step must be one of freeze, stage, flip'):
        going_on_to([host('h1')], 'flipp')
    with pytest.raises(AnsibleFilterError, match="stop_after must be one of freeze, stage, got 'stge'"):
        going_on_to([host('h1', stop_after='stge')], 'flip')


def test_hosts_whose_variables_cannot_be_read_count_as_nothing_set():
    assert going_on_to([Undefined(), host('h1')], 'stage')
    assert rs.outcome(Undefined()) == ''


# --- flips: canaries, then waves -------------------------------------------------------------------

ORDER = ['c1', 'c2', 'w1', 'w2', 'w3']


def fleet(**outcomes):
    return [host(name, outcomes.get(name)) for name in ORDER]


def test_the_first_canary_flips_when_nothing_stopped_the_run():
    assert going_on_to(fleet(), 'flip', ['c1'])


@pytest.mark.parametrize('earlier', ['rolled_back', 'failed', 'unreachable', 'on_c', None])
def test_a_canary_not_kept_on_go_ends_every_later_flip(earlier):
    hosts = fleet(c1=earlier)
    assert not going_on_to(hosts, 'flip', ['c2'])
    assert not going_on_to(hosts, 'flip', ['w1', 'w2'])
    assert rs.earlier_not_on_go(hosts, ['w1']) == ['c1', 'c2']


def test_waves_go_on_while_every_earlier_host_is_on_go():
    hosts = fleet(c1='on_go', c2='on_go', w1='on_go')
    assert going_on_to(hosts, 'flip', ['w2', 'w3'])
    # A host of the batch that left the play before this check does not hide the batch.
    assert going_on_to(hosts, 'flip', ['w3', 'w2'])
    hosts = fleet(c1='on_go', c2='on_go', w1='rolled_back')
    assert not going_on_to(hosts, 'flip', ['w2', 'w3'])


def test_a_wave_host_that_left_the_play_without_an_outcome_ends_the_waves():
    assert not going_on_to(fleet(c1='on_go', c2='on_go'), 'flip', ['w2'])


def test_a_batch_outside_the_run_or_empty_is_not_held_back():
    assert going_on_to(fleet(), 'flip', [])
    assert going_on_to(fleet(), 'flip', ['elsewhere'])


def test_a_wave_goes_well_only_when_every_host_is_on_go():
    all_on_go = AllOnGo().tests()['all_on_go']
    assert all_on_go([host('w1', 'on_go'), host('w2', 'on_go')])
    for other in ('rolled_back', 'failed', 'unreachable', 'on_c', None):
        assert not all_on_go([host('w1', 'on_go'), host('w2', other)])


def test_failed_hosts_names_rolled_back_failed_and_gone_in_order():
    failed = FailedHosts().filters()['failed_hosts']
    hosts = [host('a', 'on_go'), host('b', 'rolled_back'), host('c', 'unreachable'), host('d', 'failed'),
             host('e', 'on_c'), host('f')]
    assert failed(hosts) == ['b', 'c', 'd']


# --- waves as Ansible batches them -------------------------------------------------------------------

class _Inventory(object):
    def __init__(self, hosts):
        self.hosts = hosts

    def get_hosts(self, pattern, order=None):
        return list(self.hosts)


class _Play(object):
    def __init__(self, serial):
        self.hosts = 'waves'
        self.order = 'inventory'
        self.serial = serial


class _Executor(object):
    def __init__(self, hosts):
        self._inventory = _Inventory(hosts)


SERIALS = [[1, '25%', '100%'], [2, '100%'], [1], ['50%'], ['30%', 2], [3], ['1%'], [], [1, 1, 1, 1, '100%'], ['10']]


@pytest.mark.parametrize('count, serial', list(itertools.product([1, 2, 3, 7, 20], SERIALS)))
def test_waves_are_the_batches_ansible_makes(count, serial):
    names = ['w%02d' % n for n in range(count)]
    expected = PlaybookExecutor._get_serialized_batches(_Executor(names), _Play(serial))
    assert rs.waves(names, serial) == expected


def test_wave_of_numbers_waves_from_one_and_names_their_hosts():
    names = ['w1', 'w2', 'w3', 'w4', 'w5', 'w6', 'w7', 'w8']
    serial = [1, '25%', '100%']
    assert [wave_of_filter(names, name, serial)['number'] for name in names] == [1, 2, 2, 3, 3, 3, 3, 3]
    assert wave_of_filter(names, 'w3', serial)['hosts'] == ['w2', 'w3']
    assert wave_of_filter(names, 'c1', serial) == {'number': 0, 'hosts': []}
    assert wave_of_filter(names, 'w8', 3)['number'] == 3
    with pytest.raises(AnsibleFilterError, match="serial item 'abc' is not a number"):
        wave_of_filter(names, 'w1', ['abc'])


# --- the drill's envelope ------------------------------------------------------------------------------

BASELINE = {'stop_ms': 10.0, 'start_ms': 100.0, 'unavailable_ms': 110.0}


def test_the_envelope_holds_within_baseline_times_factor_plus_slack():
    flip = {'stop_ms': 530.0, 'start_ms': 800.0}
    rollback = {'stop_ms': 12.0, 'start_ms': 99.0}
    envelope = drill_envelope(BASELINE, flip, rollback, 3, 500)
    assert (envelope['limit_start_ms'], envelope['limit_stop_ms']) == (800.0, 530.0)
    assert (envelope['go_start_ms'], envelope['c_stop_ms'], envelope['go_stop_ms'], envelope['c_start_ms']) == (
        800.0, 530.0, 12.0, 99.0)
    assert envelope['ok'] is True and envelope['exceeded'] == []
    assert envelope['baseline'] == BASELINE


def test_each_start_or_stop_over_its_limit_is_named():
    flip = {'stop_ms': 531.0, 'start_ms': 800.5}
    rollback = {'stop_ms': 2000, 'start_ms': '99'}
    envelope = judge_envelope(BASELINE, flip, rollback, '3', '500')
    assert envelope['ok'] is False
    assert envelope['exceeded'] == ['go_start_ms 800.5 > limit 800.0', 'c_stop_ms 531.0 > limit 530.0',
                                    'go_stop_ms 2000.0 > limit 530.0']


def test_a_switch_not_measured_fails_the_envelope():
    envelope = judge_envelope(BASELINE, {'stop_ms': 1.0, 'start_ms': None}, {}, 3, 500)
    assert envelope['ok'] is False
    assert envelope['exceeded'] == ['go_start_ms not measured (flip)', 'go_stop_ms not measured (rollback)',
                                    'c_start_ms not measured (rollback)']
    assert judge_envelope({}, BASELINE, BASELINE)['exceeded'][0] == 'go_start_ms not measured (baseline)'


@pytest.mark.parametrize('factor, slack', [(0.5, 500), (3, -1), ('x', 1)])
def test_an_envelope_that_cannot_hold_anything_is_refused(factor, slack):
    with pytest.raises(AnsibleFilterError, match='drill_envelope: factor'):
        drill_envelope(BASELINE, BASELINE, BASELINE, factor, slack)
    with pytest.raises(EnvelopeError):
        judge_envelope(BASELINE, BASELINE, {'start_ms': 'soon'})


# --- the run's groups: the hosts of the newest run, for the later plays ---------------------------------

from ansible_collections.mtproxy.cutover.plugins.filter.run_group import run_group_filter  # noqa: E402
from ansible_collections.mtproxy.cutover.plugins.filter.run_serial import run_serial_filter  # noqa: E402


def test_a_run_starts_new_groups_after_those_of_earlier_playbooks_in_the_same_process():
    groups = {'all': ['a', 'b'], 'mtproxy': ['a', 'b'], 'mtproxy_canary': ['a']}
    assert run_group_filter(groups, new=True) == {
        'hosts': 'mtproxy_run_1', 'canaries': 'mtproxy_run_1_canaries', 'waves': 'mtproxy_run_1_waves',
        'wave': 'mtproxy_run_1_wave_'}
    groups.update(mtproxy_run_1=['a', 'b'], mtproxy_run_1_canaries=['a'], mtproxy_run_1_waves=['b'],
                  mtproxy_run_9x=['b'])
    assert run_group_filter(groups, new=True)['hosts'] == 'mtproxy_run_2'
    assert (run_group_filter(groups), run_group_filter(groups, 'canaries'), run_group_filter(groups, 'waves')) == (
        'mtproxy_run_1', 'mtproxy_run_1_canaries', 'mtproxy_run_1_waves')
    # A later run (a drill imported after a rollback) names only its own hosts.
    groups.update(mtproxy_run_2=['a'], mtproxy_run_2_canaries=['a'])
    assert run_group_filter(groups) == 'mtproxy_run_2'
    # A run without waves: a pattern that matches nothing, and no warning for a group that does not exist.
    assert run_group_filter(groups, 'waves') == 'mtproxy_run_2:!mtproxy_run_2'


def test_before_any_run_the_plays_have_no_hosts_and_draw_no_warning():
    # ansible-playbook --syntax-check and --list-hosts template every play's hosts without running the preflight.
    assert run_group_filter({'all': ['a'], 'mtproxy': ['a']}) == 'all:!all'
    assert run_group_filter({'all': ['a']}, 'canaries') == 'all:!all'
    assert run_serial_filter({'all': ['a']}) == []
    with pytest.raises(AnsibleFilterError, match='kind must be one of'):
        run_group_filter({'mtproxy_run_1': ['a']}, 'wave')


def test_the_waves_of_a_run_are_the_sizes_of_its_wave_groups_in_order():
    groups = {'mtproxy_run_1': ['a', 'b'], 'mtproxy_run_1_wave_1': ['b'], 'mtproxy_run_2': ['c', 'd', 'e', 'f'],
              'mtproxy_run_2_wave_1': ['c'], 'mtproxy_run_2_wave_2': ['d', 'e', 'f'], 'mtproxy_run_2_wave_4': ['x']}
    assert run_serial_filter(groups) == [1, 3]
    # A run without waves.
    assert run_serial_filter({'mtproxy_run_1': ['a'], 'mtproxy_run_1_canaries': ['a']}) == []
