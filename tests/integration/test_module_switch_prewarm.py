"""mtproxy_switch and mtproxy_prewarm run by ansible-core against a systemd container.

The host gets the C binary (/opt/MTProxy/mtproto-proxy) and the Go binary
(/opt/MTProxy/releases/go-test/mtproto-proxy-go): the stand-in, or the real builds that
MTPROXY_C_BINARY / MTPROXY_GO_BINARY name (systemd_host.install_proxies); a vendor MTProxy.service and
a freeze manifest written by the test. Tests run in file order against one container.
"""
import json
import os
import socket
import subprocess
import sys
import time

import pytest
from ansible_collections.mtproxy.cutover.plugins.plugin_utils.report_files import process_start
from systemd_host import (ModuleHost, boot_host, cap_connections, cmdline, install_proxies, main_pid, put, sh,
                          standin_only, wait_port)

pytestmark = pytest.mark.slow

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
STANDIN = os.path.join(REPO, 'tests', 'standin', 'mtproxy_standin.py')

SECRET = '0123456789abcdef0123456789abcdef'
C_BIN = '/opt/MTProxy/mtproto-proxy'
GO_BIN = '/opt/MTProxy/releases/go-test/mtproto-proxy-go'
EXEC_START = cap_connections('%s -u nobody -p 8888 --http-stats -H 443 -S %s --aes-pwd proxy-secret proxy-multi.conf -M 1' % (
    C_BIN, SECRET))
C_ARGV = EXEC_START.split()
DROPIN = '/etc/systemd/system/MTProxy.service.d/99-mtproxy-cutover.conf'
STATE_DIR = '/var/lib/mtproxy-cutover'
UNIT = """[Unit]
Description=MTProxy
After=network.target

[Service]
Type=simple
WorkingDirectory=/opt/MTProxy
Environment=MTPROXY_ENV_PROBE=1
ExecStart=%s
Restart=on-failure

[Install]
WantedBy=multi-user.target
""" % EXEC_START
BACKEND = 'proxy_for 1 127.0.0.1:18881;\nproxy_for -1 127.0.0.1:18881;\ndefault 1;\n'


def _standin_missing():
    return None if os.path.exists(STANDIN) else 'tests/standin/mtproxy_standin.py is missing'


def copy_wire(name, source_dir, dest_dir):
    """The stand-in's mtproxy_wire beside a copy of it (a real build has none)."""
    sh(name, 'if [ -e {0}/mtproxy_wire.py ]; then cp {0}/mtproxy_wire.py {1}/; fi'.format(source_dir, dest_dir))


class Host(ModuleHost):
    def __init__(self, name, workdir):
        super(Host, self).__init__(name, workdir, secrets=(SECRET,))


@pytest.fixture(scope='module')
def host():
    if _standin_missing():
        pytest.skip(_standin_missing())
    with boot_host('mtpx-switch') as (name, workdir):
        _install(name)
        yield Host(name, workdir)


def _install(name):
    install_proxies(name, C_BIN, GO_BIN)
    put(name, BACKEND, '/opt/MTProxy/proxy-multi.conf', 0o644)
    put(name, 'aes-secret-for-tests-of-the-switch-and-pre-warm\n', '/opt/MTProxy/proxy-secret', 0o644)
    put(name, UNIT, '/etc/systemd/system/MTProxy.service', 0o640)
    sh(name, 'systemctl daemon-reload && systemctl enable --now MTProxy.service')
    wait_port(name, 443)
    manifest = {
        'schema': 1, 'service': 'MTProxy', 'unit_name': 'MTProxy.service',
        'unit': {'fragment_path': '/etc/systemd/system/MTProxy.service', 'exec_start': EXEC_START,
                 'exec_start_argv': C_ARGV, 'working_directory': '/opt/MTProxy', 'user': None, 'group': None,
                 'environment': {'MTPROXY_ENV_PROBE': '1'}, 'environment_files': []},
        'binary': C_BIN, 'binary_realpath': C_BIN, 'binary_sha256': None, 'argv': C_ARGV,
        'stats_port': 8888, 'client_ports': [443], 'stats_url': 'http://127.0.0.1:8888/stats', 'workers': 1,
    }
    sh(name, 'mkdir -p -m 0700 %s/MTProxy' % STATE_DIR)
    put(name, json.dumps(manifest), '%s/MTProxy/manifest.json' % STATE_DIR, 0o600)


def test_check_mode_changes_nothing(host):
    pid = main_pid(host.name)
    result = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN}, check=True, diff=True)
    assert not result.get('failed'), result.get('msg')
    assert result['changed'] is True and result['restarted'] is False and result['timings'] is None
    assert GO_BIN in result['diff']['after'] and '<redacted>' in result['diff']['after']
    assert main_pid(host.name) == pid
    assert sh(host.name, 'ls %s/MTProxy' % STATE_DIR).split() == ['manifest.json']
    assert sh(host.name, 'test -e %s && echo present || echo absent' % DROPIN).strip() == 'absent'


def test_flip_to_go(host):
    old_pid = main_pid(host.name)
    result = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN})
    assert not result.get('failed'), result.get('msg')
    assert result['changed'] is True and result['restarted'] is True and result['argv_matches'] is True
    timings = result['timings']
    for key in ('stop_ms', 'start_ms', 'unavailable_ms', 'stats_ms'):
        assert isinstance(timings[key], float) and timings[key] >= 0, timings
    assert timings['unavailable_ms'] >= timings['start_ms']
    # systemd's fork of the new main process falls inside start_ms; the binary's start is the rest.
    assert 0 <= timings['spawn_ms'] <= timings['start_ms']
    assert timings['spawn_ms'] + timings['binary_start_ms'] == pytest.approx(timings['start_ms'], abs=0.01)
    assert result['stats_flavor'] == 'go'
    print('C -> Go timings (ms): %s' % timings)
    assert result['previous_good'] == {'flavor': 'c', 'binary': C_BIN}
    assert result['dropin_path'] == DROPIN
    pid = main_pid(host.name)
    assert pid == result['main_pid'] and pid != old_pid
    assert cmdline(host.name, pid) == [GO_BIN] + C_ARGV[1:]
    dropin = sh(host.name, 'cat %s' % DROPIN)
    assert 'ExecStart=\nExecStart=%s%s\n' % (GO_BIN, EXEC_START[len(C_BIN):]) in dropin
    assert 'mtproxy.cutover' in dropin
    assert sh(host.name, 'stat -c %%a %s' % DROPIN).strip() == '640'
    assert sh(host.name, 'cat /etc/systemd/system/MTProxy.service') == UNIT
    state = json.loads(sh(host.name, 'cat %s/MTProxy/state.json' % STATE_DIR))
    assert state['current'] == 'go' and state['binary'] == GO_BIN and state['history'][-1]['result'] == 'ok'
    assert sh(host.name, 'stat -c %%a %s/MTProxy/state.json' % STATE_DIR).strip() == '600'


def test_second_go_run_is_idempotent(host):
    pid = main_pid(host.name)
    result = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN})
    assert not result.get('failed'), result.get('msg')
    assert result['changed'] is False and result['restarted'] is False and result['argv_matches'] is True
    assert result['stats_flavor'] == 'go'
    assert main_pid(host.name) == pid


def test_rollback_to_c(host):
    result = host.module('mtproxy_switch', {'target': 'c'}, diff=True)
    assert not result.get('failed'), result.get('msg')
    assert result['changed'] is True and result['argv_matches'] is True and result['binary'] == C_BIN
    assert result['stats_flavor'] == 'c'
    assert result['diff']['after'] == ''
    assert sh(host.name, 'test -e %s && echo present || echo absent' % DROPIN).strip() == 'absent'
    assert cmdline(host.name, main_pid(host.name)) == C_ARGV
    state = json.loads(sh(host.name, 'cat %s/MTProxy/state.json' % STATE_DIR))
    assert state['current'] == 'c' and [h['to'] for h in state['history']] == ['go', 'c']
    again = host.module('mtproxy_switch', {'target': 'c'})
    assert again['changed'] is False


def test_a_run_that_does_not_hold_the_lock_changes_nothing(host):
    # The host is on C. Run A holds the lock from a live ansible-playbook of this controller (this test's
    # process stands for it: each module run below is an ansible-playbook of its own, gone when it ends).
    held = host.module('mtproxy_lock', {'run_id': 'run-a', 'playbook': 'cutover'})
    assert not held.get('failed'), held.get('msg')
    assert held['acquired'] and held['holder']['run_id'] == 'run-a' and held['holder']['controller'] == socket.gethostname()
    live = dict(held['holder'], pid=os.getpid(), pid_start=process_start(os.getpid()))
    put(host.name, json.dumps(live), '%s/MTProxy/run.lock' % STATE_DIR, 0o600)
    # Run B can neither take it nor switch the host, not even in check mode.
    other = host.module('mtproxy_lock', {'run_id': 'run-b', 'playbook': 'rollback'})
    assert other.get('failed') and other['refused'] == 'locked' and other['locked_by']['run_id'] == 'run-a'
    assert 'locked by run run-a (cutover from' in other['msg']
    before = cmdline(host.name, main_pid(host.name))
    for check in (False, True):
        refused = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN, 'lock_run_id': 'run-b'}, check=check)
        assert refused.get('failed') and refused['refused'] == 'locked', refused.get('msg')
    assert cmdline(host.name, main_pid(host.name)) == before == C_ARGV
    assert sh(host.name, 'test -e %s && echo present || echo absent' % DROPIN).strip() == 'absent'
    # Run B takes it over (the emergency rollback); run A's next change is refused, naming B.
    taken = host.module('mtproxy_lock', {'run_id': 'run-b', 'playbook': 'rollback', 'takeover': True})
    assert taken['acquired'] and taken['taken_over_from']['run_id'] == 'run-a'
    late = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN, 'lock_run_id': 'run-a'})
    assert late.get('failed') and late['refused'] == 'locked' and late['locked_by']['run_id'] == 'run-b'
    assert cmdline(host.name, main_pid(host.name)) == C_ARGV
    released = host.module('mtproxy_lock', {'run_id': 'run-b', 'state': 'released'})
    assert released['released'] is True


def test_a_lock_left_by_a_controller_process_that_is_gone_is_broken(host):
    ended = subprocess.Popen([sys.executable, '-c', 'pass'])
    ended.wait()
    stale = {'run_id': 'run-killed', 'playbook': 'cutover', 'controller': socket.gethostname(), 'user': 'ops',
             'pid': ended.pid, 'pid_start': 1, 'taken_at': '2026-01-01T00:00:00Z',
             'lease_until': time.time() + 3600, 'lease_until_at': 'later'}
    put(host.name, json.dumps(stale), '%s/MTProxy/run.lock' % STATE_DIR, 0o600)
    got = host.module('mtproxy_lock', {'run_id': 'run-next', 'playbook': 'cutover'})
    assert not got.get('failed'), got.get('msg')
    assert got['acquired'] and 'controller process (pid %d on %s) is gone' % (ended.pid, socket.gethostname()) \
        in got['broken']
    assert host.module('mtproxy_lock', {'run_id': 'run-next', 'state': 'released'})['released'] is True


@standin_only('go', 'a Go that rejects -p (the stand-in fault reject_flags)')
def test_rollback_from_a_failed_go_start(host):
    """Go that exits at start: the flip fails quoting its output; target=c still brings C back."""
    put(host.name, json.dumps({'go': {'reject_flags': ['-p']}}), '/etc/mtproxy-standin/faults.json', 0o644)
    try:
        result = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN, 'listen_timeout': 5})
        assert result.get('failed') is True
        assert 'flag provided but not defined: -p' in result['msg']
        assert 'target=c' in result['msg']
    finally:
        sh(host.name, 'rm -f /etc/mtproxy-standin/faults.json')
    back = host.module('mtproxy_switch', {'target': 'c'})
    assert not back.get('failed'), back.get('msg')
    assert back['argv_matches'] is True
    assert cmdline(host.name, main_pid(host.name)) == C_ARGV


def test_a_go_release_that_answers_as_c_is_refused(host):
    """A wrongly built release (the C binary under a Go path) starts fine; /stats gives it away."""
    wrong = '/opt/MTProxy/releases/mislabelled/mtproto-proxy'
    sh(host.name, 'mkdir -p %s && cp %s %s' % (os.path.dirname(wrong), C_BIN, wrong))
    copy_wire(host.name, os.path.dirname(C_BIN), os.path.dirname(wrong))
    result = host.module('mtproxy_switch', {'target': 'go', 'binary': wrong})
    assert result.get('failed') is True
    assert result['msg'] == 'MTProxy should run the Go binary now, but /stats answers as the C binary'
    assert result['stats_flavor'] == 'c' and result['changed'] is True
    back = host.module('mtproxy_switch', {'target': 'c'})
    assert not back.get('failed'), back.get('msg')
    assert back['stats_flavor'] == 'c' and cmdline(host.name, main_pid(host.name)) == C_ARGV


def test_prewarm_good_binary_starts_and_stops(host):
    checked = host.module('mtproxy_prewarm', {'binary': GO_BIN}, check=True)
    assert checked['changed'] is True and checked['pid'] is None
    assert sh(host.name, 'systemctl show -p LoadState --value MTProxy-prewarm.service').strip() == 'not-found'
    started = host.module('mtproxy_prewarm', {'binary': GO_BIN})
    assert not started.get('failed'), started.get('msg')
    assert started['unit'] == 'MTProxy-prewarm.service'
    assert started['stats_port'] not in (8888, 443) and 443 not in started['client_ports']
    assert started['stats_url'] == 'http://127.0.0.1:%d/stats' % started['stats_port']
    assert isinstance(started['ready_ms'], float)
    live = cmdline(host.name, started['pid'])
    expected = [GO_BIN] + C_ARGV[1:]
    expected[expected.index('-p') + 1] = str(started['stats_port'])
    expected[expected.index('-H') + 1] = str(started['client_ports'][0])
    assert live == expected
    body = sh(host.name, 'python3 -c "import urllib.request as u; print(u.urlopen(\'%s\').read().decode())"'
              % started['stats_url'])
    assert 'has_current_config\t1' in body
    env = sh(host.name, 'tr "\\0" "\\n" < /proc/%d/environ' % started['pid'])
    assert 'MTPROXY_ENV_PROBE=1' in env.split('\n')
    assert sh(host.name, 'readlink /proc/%d/cwd' % started['pid']).strip() == '/opt/MTProxy'

    stopped = host.module('mtproxy_prewarm', {'state': 'stopped'})
    assert not stopped.get('failed'), stopped.get('msg')
    assert stopped['exited'] is True and stopped['exit_code'] == 0 and isinstance(stopped['stop_ms'], float)
    assert isinstance(stopped['journal'], list)
    assert sh(host.name, 'systemctl show -p LoadState --value MTProxy-prewarm.service').strip() == 'not-found'
    assert main_pid(host.name)  # production untouched


@standin_only('go', 'a Go that rejects -p (the stand-in fault reject_flags)')
def test_prewarm_rejecting_binary_fails_quoting_it(host):
    put(host.name, json.dumps({'go': {'reject_flags': ['-p']}}), '/etc/mtproxy-standin/faults.json', 0o644)
    try:
        result = host.module('mtproxy_prewarm', {'binary': GO_BIN, 'ready_timeout': 5})
    finally:
        sh(host.name, 'rm -f /etc/mtproxy-standin/faults.json')
    assert result.get('failed') is True
    assert 'flag provided but not defined: -p' in result['msg']
    assert 'exited during start-up' in result['msg']
    time.sleep(0.2)
    assert sh(host.name, 'systemctl show -p LoadState --value MTProxy-prewarm.service').strip() == 'not-found'


@standin_only('go', 'a Go that ignores SIGTERM (the stand-in fault ignore_sigterm)')
def test_prewarm_stop_of_a_binary_hung_on_sigterm_fails_and_cleans_up(host):
    started = host.module('mtproxy_prewarm', {'binary': GO_BIN})
    assert not started.get('failed'), started.get('msg')
    put(host.name, json.dumps({'go': {'ignore_sigterm': True}}), '/etc/mtproxy-standin/faults.json', 0o644)
    try:
        time.sleep(1.2)  # the stand-in re-reads runtime faults every 0.5 s
        stopped = host.module('mtproxy_prewarm', {'state': 'stopped', 'stop_timeout': 2})
    finally:
        sh(host.name, 'rm -f /etc/mtproxy-standin/faults.json')
    assert stopped.get('failed') is True and stopped['exited'] is False
    assert 'did not exit within 2.0s after SIGTERM' in stopped['msg']
    assert sh(host.name, 'systemctl show -p LoadState --value MTProxy-prewarm.service').strip() == 'not-found'
    assert sh(host.name, 'test -d /proc/%d && echo alive || echo gone' % started['pid']).strip() == 'gone'


def test_symlink_method_flips_and_returns(host):
    """Operator layout: the ExecStart path is a symlink to a release; the link is repointed."""
    link = '/opt/MTProxy/bin/mtproto-proxy'
    c_release = '/opt/MTProxy/releases/c/mtproto-proxy'
    sh(host.name, 'mkdir -p /opt/MTProxy/bin /opt/MTProxy/releases/c && cp %s %s && ln -sfn %s %s'
       % (C_BIN, c_release, c_release, link))
    copy_wire(host.name, os.path.dirname(C_BIN), os.path.dirname(c_release))
    exec_start = EXEC_START.replace(C_BIN, link, 1)
    argv = exec_start.split()
    put(host.name, UNIT.replace(EXEC_START, exec_start), '/etc/systemd/system/MTProxy.service', 0o640)
    sh(host.name, 'systemctl daemon-reload && systemctl restart MTProxy.service')
    wait_port(host.name, 443)
    manifest = json.loads(sh(host.name, 'cat %s/MTProxy/manifest.json' % STATE_DIR))
    manifest.update(binary=link, binary_realpath=c_release, argv=argv)
    manifest['unit'].update(exec_start=exec_start, exec_start_argv=argv)
    put(host.name, json.dumps(manifest), '%s/MTProxy/manifest.json' % STATE_DIR, 0o600)

    result = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN, 'method': 'symlink'})
    assert not result.get('failed'), result.get('msg')
    assert result['changed'] is True and result['argv_matches'] is True and result['dropin_path'] is None
    assert result['previous_good'] == {'flavor': 'c', 'binary': link, 'link_target': c_release}
    assert sh(host.name, 'readlink %s' % link).strip() == GO_BIN
    assert cmdline(host.name, main_pid(host.name)) == argv

    back = host.module('mtproxy_switch', {'target': 'c', 'method': 'symlink'})
    assert not back.get('failed'), back.get('msg')
    assert back['changed'] is True and back['argv_matches'] is True
    assert sh(host.name, 'readlink %s' % link).strip() == c_release
    assert sh(host.name, 'ls -a /opt/MTProxy/bin').split() == ['.', '..', 'mtproto-proxy']


def test_c_with_workers_is_gone_with_its_last_process_and_thread(host):
    """-M 2: the C master ends after its workers, and its sockets outlive its main thread (as the real
    C's threads do, the stand-in's C for 15 ms): each flip waits for all of it and times the new process."""
    exec_start = EXEC_START.replace(' -M 1', ' -M 2')
    argv = exec_start.split()
    put(host.name, UNIT.replace(EXEC_START, exec_start), '/etc/systemd/system/MTProxy.service', 0o640)
    sh(host.name, 'rm -f %s && systemctl daemon-reload && systemctl restart MTProxy.service' % DROPIN)
    wait_port(host.name, 443)
    assert len(sh(host.name, 'ps -o pid= --ppid %d' % main_pid(host.name)).split()) == 2
    manifest = json.loads(sh(host.name, 'cat %s/MTProxy/manifest.json' % STATE_DIR))
    manifest.update(binary=C_BIN, binary_realpath=C_BIN, argv=argv, workers=2)
    manifest['unit'].update(exec_start=exec_start, exec_start_argv=argv)
    put(host.name, json.dumps(manifest), '%s/MTProxy/manifest.json' % STATE_DIR, 0o600)

    for _round in range(3):
        for target, args, live in (('go', {'target': 'go', 'binary': GO_BIN}, [GO_BIN] + argv[1:]),
                                   ('c', {'target': 'c'}, argv)):
            result = host.module('mtproxy_switch', args)
            assert not result.get('failed'), result.get('msg')
            timings = result['timings']
            print('-M 2, to %s: %s' % (target, timings))
            # An accept on the old master's socket would give start_ms ~0.1 and no fork inside it.
            assert timings['spawn_ms'] is not None and 0 <= timings['spawn_ms'] <= timings['start_ms'], timings
            assert timings['spawn_ms'] + timings['binary_start_ms'] == pytest.approx(timings['start_ms'], abs=0.01)
            assert result['argv_matches'] is True and result['stats_flavor'] == target
            assert cmdline(host.name, main_pid(host.name)) == live
