"""Pure parts of the pre-warm: port picking, argv rewrite, transient unit command, readiness, redaction."""
import json
import os
import socket

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import PrewarmError
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import prewarm
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow.prewarm import stats_ready
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import process
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import parse_argv
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.choice import runtime_for
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime import systemd as sysrt
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.systemd import (
    build_prewarm_argv, candidate_unit, env_file_text, exit_status, pick_free_ports, process_gone, systemd_run_argv)
from ansible_collections.mtproxy.cutover.plugins.module_utils._state import PREWARM_ENV, StateDir
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.unit import parse_environment_file

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'fixtures', 'real-stats')
SECRET = '00112233445566778899aabbccddeeff'
GO = '/opt/MTProxy/releases/go-test/mtproto-proxy-go'
# The C argv exactly as captured from /proc/PID/cmdline (proc-cmdline-ps.txt, c_M2).
C_ARGV = ['/opt/MTProxy/mtproto-proxy', '-u', 'nobody', '-p', '19501', '--http-stats', '-H', '19491', '-S', SECRET,
          '--aes-pwd', 'aes-pwd', 'backend.conf', '-M', '2', '-c', '512']


def fixture(name):
    with open(os.path.join(FIXTURES, name), encoding='utf-8', newline='') as handle:
        return handle.read()


def test_captured_argv_is_the_one_in_the_fixture():
    assert json.dumps(C_ARGV) in fixture('proc-cmdline-ps.txt')


def test_prewarm_unit_name():
    assert candidate_unit('MTProxy', 'prewarm') == 'MTProxy-prewarm.service'
    assert candidate_unit('MTProxy.service', 'prewarm') == 'MTProxy-prewarm.service'
    assert candidate_unit('MTProxy.service', 'bridge') == 'MTProxy-bridge.service'
    # An instance of a template: the candidate must not be an instance of the same template.
    assert candidate_unit('mtproxy@eu\\x2d1.service', 'prewarm') == 'mtproxy-eu\\x2d1-prewarm.service'


def test_pick_free_ports_distinct_bindable_and_excluding():
    ports = pick_free_ports(4)
    assert len(set(ports)) == 4
    again = pick_free_ports(4, exclude=ports)
    assert not set(again) & set(ports)
    for port in again:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(('0.0.0.0', port))
        finally:
            sock.close()


def test_pick_free_ports_gives_up_when_everything_is_excluded(monkeypatch):
    class OnePort(object):
        def __init__(self, *args):
            pass

        def bind(self, address):
            pass

        def getsockname(self):
            return ('0.0.0.0', 4242)

        def close(self):
            pass
    monkeypatch.setattr(sysrt.socket, 'socket', OnePort)
    with pytest.raises(PrewarmError, match='free local ports'):
        pick_free_ports(1, exclude=[4242])


def test_build_prewarm_argv_replaces_program_ports_only():
    out = build_prewarm_argv(C_ARGV, GO, 40001, [40002], '/var/lib/x/prewarm.log')
    expected = list(C_ARGV)
    expected[0] = GO
    expected[4] = '40001'
    expected[7] = '40002'
    assert out == expected


def test_build_prewarm_argv_keeps_spelling_and_rewrites_every_client_port():
    argv = ['/c', '--port=8888', '-H443,80', '-S', SECRET, '--http-ports', '8443', '-l', '/var/log/mtproxy.log',
            'proxy-multi.conf']
    out = build_prewarm_argv(argv, GO, 41000, [41001, 41002, 41003], '/state/prewarm.log')
    assert out == [GO, '--port=41000', '-H41001,41002', '-S', SECRET, '--http-ports', '41003', '-l',
                   '/state/prewarm.log', 'proxy-multi.conf']
    parsed = parse_argv(out)
    assert parsed.stats_port == 41000 and parsed.client_ports == [41001, 41002, 41003]


def test_build_prewarm_argv_adds_missing_ports_and_no_log():
    out = build_prewarm_argv(['/c', '-S', SECRET, 'proxy-multi.conf'], GO, 42000, [42001], '/state/prewarm.log')
    parsed = parse_argv(out)
    assert parsed.stats_port == 42000 and parsed.client_ports == [42001]
    assert not parsed.has('log') and parsed.positionals == ['proxy-multi.conf']


def test_build_prewarm_argv_needs_one_port_per_client_port():
    with pytest.raises(PrewarmError):
        build_prewarm_argv(C_ARGV, GO, 1, [2, 3], '/l')


def test_env_file_round_trips_through_the_systemd_parser():
    env = {'PLAIN': 'x', 'SPACES': 'a b  c', 'QUOTES': 'say "hi" \\o/'}
    assert parse_environment_file(env_file_text(env)) == env
    # "$" is escaped so systemd never expands it (systemd's env-file parser drops the backslash).
    assert env_file_text({'DOLLAR': '$HOME'}) == 'DOLLAR="\\$HOME"\n'
    assert env_file_text({}) == ''


def test_systemd_run_argv():
    cmd = systemd_run_argv('MTProxy-prewarm.service', [GO, '-p', '1'], '/opt/MTProxy',
                           [{'path': '/etc/default/mtproxy', 'optional': True}, {'path': '/s/prewarm.env'}],
                           properties=['--property=User=mtproxy'])
    assert cmd[0] == 'systemd-run' and '--unit=MTProxy-prewarm.service' in cmd
    assert '--property=WorkingDirectory=/opt/MTProxy' in cmd and '--property=User=mtproxy' in cmd
    assert not any(c.startswith('--property=Group') for c in cmd)
    assert '--property=EnvironmentFile=-/etc/default/mtproxy' in cmd
    assert '--property=EnvironmentFile=/s/prewarm.env' in cmd
    assert '--property=RemainAfterExit=yes' in cmd
    assert cmd[cmd.index('--'):] == ['--', GO, '-p', '1']


def test_exit_status_and_process_gone():
    assert exit_status({'ExecMainCode': '1', 'ExecMainStatus': '2'}) == (2, None)
    assert exit_status({'ExecMainCode': '2', 'ExecMainStatus': '9'}) == (None, 9)
    assert exit_status({'ExecMainCode': '0', 'ExecMainStatus': '0'}) == (None, None)
    running = {'LoadState': 'loaded', 'ActiveState': 'active', 'SubState': 'running', 'MainPID': '42'}
    assert not process_gone(running)
    assert process_gone(dict(running, SubState='exited', MainPID='0'))
    assert process_gone(dict(running, ActiveState='failed', SubState='failed'))
    assert process_gone({'LoadState': 'not-found'})


@pytest.mark.parametrize('name', ['go-M1-idle-start.txt', 'go-noM-idle-plus2s.txt', 'c-M1-idle-start.txt',
                                  'c-noM-after-burst200.txt'])
def test_real_bodies_are_ready(name):
    assert stats_ready(fixture(name)) == (True, None)


def test_go_without_config_is_not_ready():
    body = fixture('go-M1-idle-start.txt').replace('has_current_config\t1\n', 'has_current_config\t0\n')
    ready, why = stats_ready(body)
    assert not ready and 'has_current_config is 0' in why


def test_garbage_is_not_ready():
    ready, why = stats_ready('<html>404</html>')
    assert not ready and 'not_stats' in why


# --- module-level flows without a real systemd --------------------------------------------------------

def _manifest_dir(tmp_path):
    state_dir = tmp_path / 'state'
    (state_dir / 'MTProxy').mkdir(parents=True)
    manifest = {'service': 'MTProxy', 'unit_name': 'MTProxy.service', 'binary': C_ARGV[0], 'argv': C_ARGV,
                'stats_port': 19501, 'client_ports': [19491],
                'unit': {'exec_start': ' '.join(C_ARGV), 'exec_start_argv': C_ARGV,
                         'working_directory': '/opt/MTProxy', 'environment': {'A': '1'}}}
    (state_dir / 'MTProxy' / 'manifest.json').write_text(json.dumps(manifest))
    binary = tmp_path / 'mtproto-proxy-go'
    binary.write_text('#!/bin/sh\n')
    binary.chmod(0o755)
    return str(state_dir), str(binary)


def candidate(state_dir):
    return runtime_for(StateDir(state_dir, 'MTProxy')).candidate('prewarm')


def _forbid_commands(monkeypatch):
    def no_run(*args, **kwargs):
        raise AssertionError('nothing may run in check mode: %r' % (args,))
    monkeypatch.setattr(process, 'run', no_run)


def test_check_mode_starts_nothing_and_redacts(tmp_path, monkeypatch):
    state_dir, binary = _manifest_dir(tmp_path)
    _forbid_commands(monkeypatch)
    result = prewarm.start(candidate(state_dir), binary, 5, check_mode=True)
    assert result['changed'] is True and result['pid'] is None
    assert SECRET not in json.dumps(result)
    assert result['argv'][0] == binary and '<redacted>' in result['argv']
    assert result['stats_url'] == 'http://127.0.0.1:%d/stats' % result['stats_port']
    assert result['stats_port'] not in (19501, 19491) and result['client_ports'][0] not in (19501, 19491)
    assert not os.path.exists(os.path.join(state_dir, 'MTProxy', PREWARM_ENV))


def test_failure_quotes_the_journal_redacted_and_cleans_up(tmp_path, monkeypatch):
    state_dir, binary = _manifest_dir(tmp_path)
    calls = []

    def fake_run(argv, timeout=60):
        calls.append(argv)
        if argv[0] == 'journalctl':
            return 0, 'argv -S %s\nflag provided but not defined: -p\n' % SECRET, ''
        return 0, '', ''
    monkeypatch.setattr(process, 'run', fake_run)
    job = candidate(state_dir)
    job.since = 1700000000
    with pytest.raises(PrewarmError) as info:
        job.fail('pre-warm of %s exited during start-up' % binary)
    message = str(info.value)
    assert 'flag provided but not defined: -p' in message and SECRET not in message
    assert SECRET not in json.dumps(info.value.details)
    assert ['systemctl', 'stop', 'MTProxy-prewarm.service'] in calls
    assert ['systemctl', 'reset-failed', 'MTProxy-prewarm.service'] in calls


def test_stop_of_a_unit_that_does_not_exist_is_unchanged(tmp_path, monkeypatch):
    state_dir, _binary = _manifest_dir(tmp_path)

    def fake_run(argv, timeout=60):
        return 0, 'LoadState=not-found\nActiveState=inactive\nMainPID=0\n', ''
    monkeypatch.setattr(process, 'run', fake_run)
    result = prewarm.stop(candidate(state_dir), 5)
    assert result['changed'] is False and result['exited'] is True and result['exit_code'] is None
