"""Exit semantics of C and Go compared as systemd and the Docker engine see them (module_utils/exit_semantics.py).

The systemd property values are the ones systemd 252 recorded for the real builds
(tests/fixtures/real-stats/README.md, "Exit semantics and privileges").
"""
import os

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import exit_semantics as es
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.exit_semantics import Outcome

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'fixtures', 'real-stats')
EXIT0 = Outcome(es.EXITED, 0)
EXIT1 = Outcome(es.EXITED, 1)
EXIT2 = Outcome(es.EXITED, 2)


@pytest.mark.parametrize('props, outcome, text', [
    ({'ExecMainCode': '1', 'ExecMainStatus': '0'}, EXIT0, 'exit status 0'),
    ({'ExecMainCode': '1', 'ExecMainStatus': '2'}, EXIT2, 'exit status 2'),
    ({'ExecMainCode': '2', 'ExecMainStatus': '9'}, Outcome(es.KILLED, 9), 'killed by SIGKILL'),
    ({'ExecMainCode': '2', 'ExecMainStatus': '15'}, Outcome(es.KILLED, 15), 'killed by SIGTERM'),
    ({'ExecMainCode': '3', 'ExecMainStatus': '11'}, Outcome(es.DUMPED, 11), 'killed by SIGSEGV (core dumped)'),
    ({'ExecMainCode': '0', 'ExecMainStatus': '0'}, Outcome(es.UNKNOWN, None), 'not recorded'),
    ({}, Outcome(es.UNKNOWN, None), 'not recorded'),
])
def test_from_systemd(props, outcome, text):
    assert es.from_systemd(props) == outcome
    assert es.from_systemd(props).describe() == text


def test_from_prewarm_result_and_docker_state():
    assert es.from_exit(exit_code=0) == EXIT0
    assert es.from_exit(exit_signal=15) == Outcome(es.KILLED, 15)
    assert es.from_exit(running=True).kind == es.RUNNING
    assert es.from_exit().kind == es.UNKNOWN
    assert es.from_docker({'Running': False, 'ExitCode': 143}) == Outcome(es.EXITED, 143)
    assert es.from_docker({'Running': True, 'ExitCode': 0}).kind == es.RUNNING
    assert es.from_docker({'OOMKilled': True, 'ExitCode': 137}) == Outcome(es.KILLED, 9)
    assert 'SIGTERM' in es.describe_container(Outcome(es.EXITED, 143))


@pytest.mark.parametrize('outcome, clean', [
    (EXIT0, True), (EXIT1, False), (Outcome(es.KILLED, 15), True), (Outcome(es.KILLED, 1), True),
    (Outcome(es.KILLED, 2), True), (Outcome(es.KILLED, 13), True), (Outcome(es.KILLED, 9), False),
    (Outcome(es.DUMPED, 6), False), (Outcome(es.EXITED, 143), False),
])
def test_systemd_clean_ends(outcome, clean):
    assert es.is_clean(outcome) is clean


def systemd_records():
    """{unit: {property: value}} of the failing and killed units in systemd-exit-privileges.txt."""
    records, unit = {}, None
    with open(os.path.join(FIXTURES, 'systemd-exit-privileges.txt')) as handle:
        for line in handle:
            if line.startswith('== '):
                unit = line[3:].split()[0]
            elif unit and line.startswith('Result='):
                records[unit] = dict(word.split('=', 1) for word in line.split() if '=' in word)
    return records


@pytest.mark.parametrize('unit, flavour, case', [
    ('c-badflag', 'c', 'bad_flag'), ('go-badflag', 'go', 'bad_flag'),
    ('c-noconfig', 'c', 'config_missing'), ('go-noconfig', 'go', 'config_missing'),
    ('c-portbusy', 'c', 'client_port_busy'), ('go-portbusy', 'go', 'client_port_busy'),
])
def test_measured_table_is_what_systemd_recorded(unit, flavour, case):
    assert es.from_systemd(systemd_records()[unit]) == es.measured(flavour)[case]


def test_systemd_records_of_sigterm_and_sigkill():
    records = systemd_records()
    for flavour in ('c', 'go'):
        assert records['%s-kill' % flavour]['Result'] == 'signal'
        assert es.from_systemd(records['%s-kill' % flavour]) == Outcome(es.KILLED, 9)
        assert records['%s-term' % flavour]['EXIT_CODE'] == 'exited' and records['%s-term' % flavour]['EXIT_STATUS'] == '0'


def test_success_exit_status_widens_clean_ends():
    # systemctl show prints signals without their SIG prefix (systemd 252, systemd-exit-privileges.txt)
    assert es.parse_status_list('2 ABRT') == (frozenset([2]), frozenset([6]))
    success = es.parse_status_list('143 USR1')
    assert success == (frozenset([143]), frozenset([10]))
    assert es.parse_status_list('143 SIGUSR1') == success
    assert es.is_clean(Outcome(es.EXITED, 143), success=success)
    assert es.is_clean(Outcome(es.KILLED, 10), success=success)
    assert es.parse_status_list('') == (frozenset(), frozenset())
    assert es.parse_status_list('2, TERM, bogus') == (frozenset([2]), frozenset([15]))


def test_real_builds_compare_with_warnings_only():
    result = es.compare_all(es.measured('c'), es.measured('go', workers=1))
    assert result['verdict'] == 'warn' and not result['refusals']
    by_case = dict((entry['case'], entry) for entry in result['cases'])
    assert [case for case, entry in sorted(by_case.items()) if entry['verdict'] == 'same'] == [
        'bad_flag', 'client_port_busy', 'config_missing', 'sigterm']
    assert by_case['config_unreadable']['verdict'] == 'equivalent'
    assert by_case['config_unreadable']['message'] == (
        'on a backend config path that cannot be read (a directory: EISDIR even for root), C ends with exit status 2 '
        'and Go with exit status 1; systemd treats both as a failure, only what matches the exact status sees the '
        'difference')
    assert by_case['stats_port_busy']['verdict'] == 'differs' and by_case['stats_port_busy']['level'] == 'warn'
    assert 'Go keeps running' in by_case['stats_port_busy']['message']


def test_go_without_workers_exits_2_on_a_busy_client_port():
    entry = es.compare('client_port_busy', es.measured('c')['client_port_busy'],
                       es.measured('go', workers=0)['client_port_busy'])
    assert entry['verdict'] == 'equivalent' and entry['level'] == 'warn'


def test_go_failing_on_sigterm_is_refused_with_the_consequence():
    entry = es.compare('sigterm', EXIT0, EXIT1)
    assert entry['verdict'] == 'differs' and entry['level'] == 'refuse'
    assert entry['message'] == (
        'on SIGTERM to the main process (systemctl stop, docker stop), C ends with exit status 0 and Go with exit '
        'status 1: systemd would mark the unit failed where C ends clean: OnFailure= runs and Restart=on-failure '
        'restarts it')


def test_go_ending_clean_on_a_bad_config_is_refused():
    entry = es.compare('config_missing', EXIT1, EXIT0)
    assert entry['level'] == 'refuse'
    assert 'Restart=on-failure would not restart it and OnFailure= would not run' in entry['message']


def test_killed_by_sigterm_and_exit_0_are_both_clean_for_systemd_but_not_for_the_engine():
    entry = es.compare('sigterm', EXIT0, Outcome(es.KILLED, 15))
    assert entry['verdict'] == 'equivalent' and entry['level'] == 'warn'
    assert 'systemd treats both as a clean end' in entry['message']
    container = es.compare('sigterm', EXIT0, Outcome(es.EXITED, 143), runtime=es.CONTAINER)
    assert container['level'] == 'refuse' and 'the engine would see Go fail' in container['message']
    assert 'SIGTERM' in container['message']


def test_restart_prevent_exit_status_makes_equal_failures_differ():
    prevent = es.parse_status_list('2')
    entry = es.compare('config_unreadable', EXIT2, EXIT1, prevent=prevent)
    assert entry['verdict'] == 'differs' and entry['level'] == 'refuse'
    assert "RestartPreventExitStatus= names only C's" in entry['message']


def test_unknown_end_is_a_warning_not_a_pass():
    entry = es.compare('sigterm', EXIT0, Outcome(es.UNKNOWN, None))
    assert entry['verdict'] == 'unknown' and entry['level'] == 'warn' and 'of Go was not recorded' in entry['message']


def test_levels_can_be_raised_or_lowered():
    result = es.compare_all(es.measured('c'), es.measured('go'), levels={'stats_port_busy': 'refuse'})
    assert result['verdict'] == 'refuse' and len(result['refusals']) == 1
    only_sigterm = es.compare_all({'sigterm': EXIT0}, {'sigterm': EXIT1}, levels={'sigterm': 'warn'})
    assert only_sigterm['verdict'] == 'warn' and len(only_sigterm['cases']) == 1


def test_case_argv_provokes_each_case_from_the_prewarm_argv():
    argv = ['/opt/go/mtproto-proxy-go', '-u', 'nobody', '-p', '19501', '-H', '19491', '--aes-pwd', 'aes', 'cfg.conf',
            '-M', '1']
    assert es.case_argv('sigterm', argv, 9, '/var/lib/x/scratch') == argv
    assert es.case_argv('bad_flag', argv, 9, '/var/lib/x/scratch')[:2] == ['/opt/go/mtproto-proxy-go', es.BAD_FLAG]
    assert es.case_argv('config_unreadable', argv, 9, '/var/lib/x/scratch/')[9] == '/var/lib/x/scratch/'
    assert es.case_argv('config_missing', argv, 9, '/var/lib/x/scratch/')[9] == \
        '/var/lib/x/scratch/no-such-proxy-multi.conf'
    assert argv[9] == 'cfg.conf'


def test_bad_flag_is_no_prefix_of_a_long_option_of_the_c_option_set():
    # the C binary's getopt_long takes a unique prefix of a long option as that option; the stand-in
    # carries the C option set (and exits 2 on BAD_FLAG: tests/unit/test_standin_exit_privileges.py)
    import test_standin
    long_options = [name for name, _short, _arg in test_standin.standin.OPTIONS]
    assert 'mtproto-secret-file' in long_options
    assert not any(('--' + option).startswith(es.BAD_FLAG) for option in long_options)
