"""Pure parts of the switch: ExecStart splitting, drop-in text, argv proof, state, redaction."""
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils import _state
from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import StateError, SwitchError
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import proof
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import switch as flow
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import files, probe, proc, process
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import systemd as hsd
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime import systemd as sysrt
from ansible_collections.mtproxy.cutover.plugins.module_utils._state import StateDir, state_agrees, transition
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo import judge
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime import pointing as pt
from loopback import wait_for
from stats_fixtures import capture

STANDIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'standin')
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.pointing import render_dropin, split_program
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow.proof import argv_matches, explain_mismatch
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.unit import (
    CUTOVER_DROPIN, exec_start_from_unit_texts, parse_exec_command)

SECRET = '00112233445566778899aabbccddeeff'
GO = '/opt/MTProxy/releases/go-test/mtproto-proxy-go'
C_ARGV = ['/opt/MTProxy/mtproto-proxy', '-u', 'nobody', '-p', '8888', '-H', '443', '-S', SECRET,
          '--aes-pwd', 'proxy-secret', 'proxy-multi.conf', '-M', '1']
EXEC_START = '/opt/MTProxy/mtproto-proxy -u nobody -p 8888 -H 443 -S %s --aes-pwd proxy-secret proxy-multi.conf -M 1' \
    % SECRET


def manifest(**overrides):
    data = {
        'service': 'MTProxy', 'unit_name': 'MTProxy.service', 'binary': C_ARGV[0],
        'binary_realpath': C_ARGV[0], 'argv': list(C_ARGV), 'stats_port': 8888, 'client_ports': [443],
        'unit': {'fragment_path': '/lib/systemd/system/MTProxy.service', 'exec_start': EXEC_START,
                 'exec_start_argv': list(C_ARGV), 'working_directory': '/opt/MTProxy'},
    }
    data.update(overrides)
    return data


# --- ExecStart splitting and the drop-in -------------------------------------------------------

@pytest.mark.parametrize('text,expected', [
    (EXEC_START, ('', '/opt/MTProxy/mtproto-proxy', EXEC_START[len('/opt/MTProxy/mtproto-proxy'):])),
    ('-/usr/bin/x  -a  b', ('-', '/usr/bin/x', '  -a  b')),
    ('ExecStart=+/usr/bin/x -a', ('+', '/usr/bin/x', ' -a')),
    ('"/opt/my dir/x" -a', ('', '/opt/my dir/x', ' -a')),
    ('/usr/bin/x', ('', '/usr/bin/x', '')),
])
def test_split_program_keeps_rest_byte_identical(text, expected):
    assert split_program(text) == expected


def test_split_program_rejects_empty():
    with pytest.raises(SwitchError):
        split_program('-')


def test_render_dropin_resets_execstart_and_keeps_the_rest():
    text = render_dropin('-' + EXEC_START + '  -c 512', GO)
    lines = text.splitlines()
    assert lines[0].startswith('#') and 'mtproxy.cutover' in lines[0]
    assert any('returns the service to the C binary' in line for line in lines if line.startswith('#'))
    assert lines[-3:] == ['[Service]', 'ExecStart=', 'ExecStart=-' + GO + EXEC_START[len(C_ARGV[0]):] + '  -c 512']


def test_rendered_dropin_is_what_systemd_would_run():
    vendor = '[Unit]\nDescription=MTProxy\n[Service]\nWorkingDirectory=/opt/MTProxy\nExecStart=%s\n' % EXEC_START
    dropin = render_dropin(EXEC_START, GO)
    effective = exec_start_from_unit_texts([('/lib/systemd/system/MTProxy.service', vendor),
                                            ('/etc/systemd/system/MTProxy.service.d/' + CUTOVER_DROPIN, dropin)])
    assert parse_exec_command(effective)['argv'] == [GO] + C_ARGV[1:]


def test_render_dropin_escapes_percent_dollar_and_quotes_blanks():
    line = render_dropin(EXEC_START, '/opt/go 100%/$x').splitlines()[-1]
    assert line.startswith('ExecStart="/opt/go 100%%/$$x" -u nobody')
    assert parse_exec_command(line[len('ExecStart='):])['argv'][0] == '/opt/go 100%/$x'


@pytest.mark.parametrize('binary', ['relative/go', '/opt/go"x', '/opt/go\\x'])
def test_render_dropin_refuses_unsafe_binary(binary):
    with pytest.raises(SwitchError):
        render_dropin(EXEC_START, binary)


def test_render_dropin_refuses_explicit_argv0():
    with pytest.raises(SwitchError, match='@'):
        render_dropin('@/opt/MTProxy/mtproto-proxy mtproxy -p 1', GO)


def test_dropin_file_mode_follows_fragment_and_half_written_files_are_removed(tmp_path):
    fragment = tmp_path / 'MTProxy.service'
    fragment.write_text('[Service]\n')
    fragment.chmod(0o640)
    path = pt.dropin_path('MTProxy.service', str(tmp_path / 'etc'))
    assert path.endswith('/MTProxy.service.d/' + CUTOVER_DROPIN)
    pt.write_dropin(path, render_dropin(EXEC_START, GO), files.fragment_mode(str(fragment)))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert files.fragment_mode(str(tmp_path / 'missing')) == 0o600
    leftover = os.path.join(os.path.dirname(path), '.%s.tmp.99' % CUTOVER_DROPIN)
    with open(leftover, 'w') as handle:
        handle.write('[Service]\nExecSt')
    assert pt.remove_dropin(path) is True
    assert os.listdir(os.path.dirname(path)) == []
    assert pt.remove_dropin(path) is False


def test_flip_symlink_replaces_link_atomically(tmp_path):
    old = tmp_path / 'c'
    new = tmp_path / 'go'
    old.write_text('c')
    new.write_text('go')
    link = tmp_path / 'current'
    os.symlink(str(old), str(link))
    pt.flip_symlink(str(link), str(new))
    assert os.readlink(str(link)) == str(new)
    assert sorted(os.listdir(str(tmp_path))) == ['c', 'current', 'go']


def test_symlink_method_needs_a_symlink(tmp_path):
    binary = tmp_path / 'mtproto-proxy'
    binary.write_text('')
    exec_start = '%s -p 1 -H 2' % binary
    data = manifest(unit={'exec_start': exec_start}, binary=str(binary))
    with pytest.raises(SwitchError, match='to be a symlink'):
        pt.pointing_for(data, None, 'go', GO, 'symlink')


# --- argv proof ---------------------------------------------------------------------------------

def test_expected_argv_replaces_only_the_program_for_go(tmp_path):
    systemd_dir = str(tmp_path)
    assert pt.DropIn(manifest(), None, 'go', GO, systemd_dir).expected_argv() == [GO] + C_ARGV[1:]
    assert pt.DropIn(manifest(), None, 'c', C_ARGV[0], systemd_dir).expected_argv() == C_ARGV
    link = tmp_path / 'mtproto-proxy'
    os.symlink('/opt/MTProxy/releases/c/mtproto-proxy', str(link))
    data = manifest(argv=[str(link)] + C_ARGV[1:], unit={'exec_start': '%s -p 8888' % link})
    assert pt.Symlink(data, None, 'go', GO, systemd_dir).expected_argv() == [str(link)] + C_ARGV[1:]


def test_argv_matches_exact_and_rejects_any_difference():
    assert argv_matches(C_ARGV, C_ARGV)
    assert not argv_matches([GO] + C_ARGV[1:], C_ARGV)
    assert not argv_matches(C_ARGV + ['-c', '512'], C_ARGV)
    assert not argv_matches(C_ARGV[:-1] + ['2'], C_ARGV)


def test_read_shebang(tmp_path):
    script = tmp_path / 's'
    script.write_text('#!/usr/bin/env python3\nprint(1)\n')
    assert files.read_shebang(str(script)) == ['/usr/bin/env', 'python3']
    binary = tmp_path / 'b'
    binary.write_bytes(b'\x7fELF\x02\x01')
    assert files.read_shebang(str(binary)) is None
    assert files.read_shebang(str(tmp_path / 'missing')) is None


def test_explain_mismatch_names_position_and_never_the_secret():
    live = list(C_ARGV)
    live[4] = '9999'
    text = explain_mismatch(live, C_ARGV, [SECRET])
    assert 'position 4' in text and '9999' in text
    other = list(C_ARGV)
    other[8] = SECRET.upper()[:-1] + 'X'
    text = explain_mismatch(other, C_ARGV, [SECRET])
    assert SECRET not in text.lower() and SECRET.upper()[:-1] not in text
    assert 'position 8' in text and 'secret' in text


def test_read_cmdline_of_a_live_process():
    with open('/proc/self/cmdline', 'rb') as handle:
        own = handle.read().rstrip(b'\x00').decode().split('\x00')
    assert proc.read_cmdline(os.getpid()) == own
    assert proc.read_cmdline(2 ** 22 + 1) is None
    assert proc.pid_alive(os.getpid()) and not proc.pid_alive(0)


# --- state ----------------------------------------------------------------------------------------

def test_transition_to_go_records_c_as_previous_good_and_history():
    state = transition(None, manifest(), 'go', GO, 'dropin', {'stop_ms': 1.0}, 'T1')
    assert state['schema'] == 1 and state['current'] == 'go' and state['binary'] == GO
    assert state['previous_good'] == {'flavor': 'c', 'binary': C_ARGV[0]}
    assert state['history'] == [{'at': 'T1', 'from': None, 'to': 'go', 'binary': GO, 'method': 'dropin',
                                 'result': 'ok', 'timings': {'stop_ms': 1.0}}]
    back = transition(state, manifest(), 'c', C_ARGV[0], 'dropin', None, 'T2')
    assert back['current'] == 'c' and back['binary'] == C_ARGV[0]
    assert back['previous_good'] == state['previous_good']
    assert [h['to'] for h in back['history']] == ['go', 'c'] and back['history'][1]['from'] == 'go'
    assert state['history'] and len(state['history']) == 1  # input not mutated


def test_transition_history_is_bounded_and_symlink_keeps_link_target():
    state = None
    for index in range(_state.HISTORY_LIMIT + 5):
        state = transition(state, manifest(), 'go' if index % 2 else 'c', GO, 'symlink', None, str(index),
                           extra_previous={'link_target': '/opt/rel/c'})
    assert len(state['history']) == _state.HISTORY_LIMIT
    assert state['history'][-1]['at'] == str(_state.HISTORY_LIMIT + 4)
    assert state['previous_good']['link_target'] == '/opt/rel/c'


def test_state_agrees():
    state = transition(None, manifest(), 'go', GO, 'dropin', None, 'T')
    assert state_agrees(state, 'go', GO, 'dropin')
    assert not state_agrees(state, 'go', GO + '2', 'dropin')
    assert not state_agrees(state, 'c', GO, 'dropin')
    assert not state_agrees(None, 'c', C_ARGV[0], 'dropin')


def test_state_file_is_private_and_round_trips(tmp_path):
    state = transition(None, manifest(), 'go', GO, 'dropin', None, 'T')
    StateDir(str(tmp_path), 'MTProxy').save_state(state)
    path = tmp_path / 'MTProxy' / _state.STATE
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(tmp_path / 'MTProxy')).st_mode) == 0o700
    assert StateDir(str(tmp_path), 'MTProxy').state() == state
    path.write_text(json.dumps({'schema': 7}))
    with pytest.raises(StateError, match='schema'):
        StateDir(str(tmp_path), 'MTProxy').state()
    assert StateDir(str(tmp_path), 'Other').state() is None


def test_releases_in_use_are_the_ones_the_state_and_its_history_name(tmp_path):
    store = StateDir(str(tmp_path), 'MTProxy')
    assert store.releases_in_use() == []
    state = transition(None, manifest(), 'go', '/opt/MTProxy/releases/go-1/mtproto-proxy-go', 'dropin', None, 'T1')
    state = transition(state, manifest(), 'c', C_ARGV[0], 'dropin', None, 'T2')
    store.save_state(state)
    assert store.releases_in_use() == ['/opt/MTProxy/releases/go-1']


def test_missing_manifest_says_to_freeze(tmp_path):
    with pytest.raises(StateError, match='freeze MTProxy first'):
        StateDir(str(tmp_path), 'MTProxy').manifest()


# --- redaction of diffs and journal ------------------------------------------------------------------

def test_dropin_diff_is_redacted(tmp_path):
    diff = pt.DropIn(manifest(), None, 'go', GO, str(tmp_path)).diff([SECRET])
    assert SECRET not in json.dumps(diff)
    assert '<redacted>' in diff['after'] and GO in diff['after']
    assert diff['before'] == '' and diff['before_header'].endswith('(absent)')


def test_journal_tail_is_redacted(monkeypatch):
    calls = []

    def fake_run(argv, timeout=60):
        calls.append(argv)
        return 0, 'started with -S %s\nflag provided but not defined: -p\n' % SECRET.upper(), ''
    monkeypatch.setattr(process, 'run', fake_run)
    lines = hsd.journal_tail('MTProxy.service', 1700000000, secrets=[SECRET], settle=0)
    assert lines == ['started with -S <redacted>', 'flag provided but not defined: -p']
    assert calls[0][:3] == ['journalctl', '--no-pager', '-o'] and '--since' in calls[0] and '@1700000000' in calls[0]


def test_describe_unit_state():
    text = hsd.describe_unit_state({'Id': 'MTProxy.service', 'ActiveState': 'failed', 'SubState': 'failed',
                                    'Result': 'exit-code', 'ExecMainCode': '1', 'ExecMainStatus': '2'})
    assert text == 'MTProxy.service is failed/failed, result exit-code, main process exited with status 2'


# --- sockets -----------------------------------------------------------------------------------------

def test_foreign_listeners_names_processes_outside_the_unit():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(('127.0.0.1', 0))
    server.listen(1)
    port = server.getsockname()[1]
    other = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])
    try:
        assert probe.tcp_accepts(port)
        assert proc.foreign_listeners(port, os.getpid()) == []
        assert proc.foreign_listeners(port, other.pid) == [os.getpid()]
    finally:
        other.kill()
        other.wait()
        server.close()
    assert not probe.tcp_accepts(port)


# --- switch_service decisions without a real systemd ------------------------------------------------

class FakeSystemd(object):
    def __init__(self, props):
        self.props = props
        self.unit = 'MTProxy.service'

    def show(self, *props):
        return dict(self.props)

    def main_pid(self):
        return int(self.props.get('MainPID') or 0)

    def daemon_reload(self):
        raise AssertionError('daemon-reload must not run')


def _host(tmp_path, monkeypatch, live_argv_tail):
    """A manifest, a fake Go 'binary' (shell script) and a live process running it with the argv."""
    # A stand-in process whose /proc cmdline reads exactly [go] + tail, as a real binary's would.
    go = tmp_path / 'go-proxy'
    go.write_text('#!%s\nimport sys, time\nsys.path.insert(0, %r)\n'
                  'from mtproxy_standin import present_binary_cmdline\n'
                  'present_binary_cmdline(sys.argv)\ntime.sleep(30)\n' % (sys.executable, STANDIN_DIR))
    go.chmod(0o755)
    state_dir = tmp_path / 'state'
    (state_dir / 'MTProxy').mkdir(parents=True)
    (state_dir / 'MTProxy' / 'manifest.json').write_text(json.dumps(manifest()))
    live = subprocess.Popen([str(go)] + live_argv_tail)
    for _attempt in range(100):
        if proc.read_cmdline(live.pid) == [str(go)] + list(live_argv_tail):
            break
        time.sleep(0.05)
    props = {'ActiveState': 'active', 'MainPID': str(live.pid), 'NeedDaemonReload': 'no'}
    monkeypatch.setattr(sysrt, 'Systemd', lambda unit: FakeSystemd(props))

    def no_run(*args, **kwargs):
        raise AssertionError('nothing may be run: %r' % (args,))
    monkeypatch.setattr(process, 'run', no_run)
    monkeypatch.setattr(sysrt, 'restart_measured', no_run)
    return str(go), str(state_dir), live


def test_check_mode_reports_change_and_writes_nothing(tmp_path, monkeypatch):
    go, state_dir, live = _host(tmp_path, monkeypatch, C_ARGV[1:])
    systemd_dir = tmp_path / 'etc'
    try:
        result = flow.switch_service('MTProxy', state_dir, 'go', go, check_mode=True, systemd_dir=str(systemd_dir))
    finally:
        live.kill()
        live.wait()
    assert result['changed'] is True and result['restarted'] is False
    assert result['previous_good'] == {'flavor': 'c', 'binary': C_ARGV[0]}
    assert SECRET not in json.dumps(result)
    assert go in result['diff']['after']
    assert not systemd_dir.exists()
    assert sorted(os.listdir(os.path.join(state_dir, 'MTProxy'))) == ['manifest.json']


def test_already_switched_is_a_no_op(tmp_path, monkeypatch):
    go, state_dir, live = _host(tmp_path, monkeypatch, C_ARGV[1:])
    systemd_dir = tmp_path / 'etc'
    path = pt.dropin_path('MTProxy.service', str(systemd_dir))
    pt.write_dropin(path, render_dropin(EXEC_START, go), 0o600)
    StateDir(state_dir, 'MTProxy').save_state(transition(None, manifest(), 'go', go, 'dropin', None, 'T'))
    with open(os.path.join(state_dir, 'MTProxy', 'manifest.json'), 'w') as handle:
        json.dump(manifest(stats_url=STATS_URL), handle)
    scraped = []
    monkeypatch.setattr(proof, 'take_sample', lambda url: scraped.append(url) or body_sample('go-M1-idle-start.txt'))
    try:
        result = flow.switch_service('MTProxy', state_dir, 'go', go, systemd_dir=str(systemd_dir))
    finally:
        live.kill()
        live.wait()
    assert result['changed'] is False and result['argv_matches'] is True and result['restarted'] is False
    assert result['timings'] is None and result['dropin_path'] == path
    # Nothing changed, and still /stats proves the binary.
    assert scraped == [STATS_URL] and result['stats_flavor'] == 'go'


def test_wrong_live_argv_forces_a_restart(tmp_path, monkeypatch):
    go, state_dir, live = _host(tmp_path, monkeypatch, C_ARGV[1:-1] + ['2'])
    systemd_dir = tmp_path / 'etc'
    path = pt.dropin_path('MTProxy.service', str(systemd_dir))
    pt.write_dropin(path, render_dropin(EXEC_START, go), 0o600)
    StateDir(state_dir, 'MTProxy').save_state(transition(None, manifest(), 'go', go, 'dropin', None, 'T'))
    try:
        with pytest.raises(AssertionError, match='daemon-reload|nothing may be run'):
            flow.switch_service('MTProxy', state_dir, 'go', go, systemd_dir=str(systemd_dir), stats_check=False)
    finally:
        live.kill()
        live.wait()


STATS_URL = 'http://127.0.0.1:8888/stats'


def body_sample(name):
    return judge.sample_from_body(capture(name), 0.0)


class Clock(object):
    def __init__(self):
        self.now = 100.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def test_the_stats_proof_retries_until_a_body_parses():
    clock = Clock()
    answers = [judge.sample_error('refused', 0.0, 'connection refused'), judge.sample_error('truncated', 0.0),
               body_sample('c-M1-idle-start.txt')]
    flavor, version, why = proof.read_stats_flavor(STATS_URL, 5.0, take=lambda url: answers.pop(0),
                                                   clock=clock, sleep=clock.sleep)
    assert (flavor, why) == ('c', None) and version
    assert clock.slept == [proof.STATS_RETRY_INTERVAL] * 2


def test_the_stats_proof_gives_up_after_its_timeout_with_the_last_cause():
    clock = Clock()
    attempts = []

    def refused(url):
        attempts.append(url)
        return judge.sample_error('refused', clock(), 'connection refused')
    flavor, version, why = proof.read_stats_flavor(STATS_URL, 1.1, take=refused, clock=clock, sleep=clock.sleep)
    assert (flavor, version) == (None, None)
    assert why == 'cannot read %s: connection refused' % STATS_URL
    assert len(attempts) == 6 and sum(clock.slept) <= 1.1


@pytest.mark.parametrize('target, body, cause', [
    ('c', 'go-M1-idle-start.txt', 'MTProxy should run the C binary now, but /stats answers as the Go binary'),
    ('go', 'c-M1-idle-start.txt', 'MTProxy should run the Go binary now, but /stats answers as the C binary'),
])
def test_the_stats_proof_fails_on_the_other_binary(monkeypatch, target, body, cause):
    monkeypatch.setattr(proof, 'take_sample', lambda url: body_sample(body))
    with pytest.raises(SwitchError) as err:
        proof.check_stats_flavor({'stats_url': STATS_URL, 'changed': True}, target, 1.0, 'MTProxy')
    assert str(err.value) == cause
    assert err.value.details['changed'] is True and err.value.details['stats_flavor'] != target


def test_the_stats_proof_needs_a_stats_url():
    with pytest.raises(SwitchError, match='MTProxy: the manifest has no stats URL .*stats_check=false'):
        proof.check_stats_flavor({'stats_url': None}, 'c', 1.0, 'MTProxy')


def test_missing_state_is_recorded_without_restart(tmp_path, monkeypatch):
    go, state_dir, live = _host(tmp_path, monkeypatch, C_ARGV[1:])
    systemd_dir = tmp_path / 'etc'
    pt.write_dropin(pt.dropin_path('MTProxy.service', str(systemd_dir)), render_dropin(EXEC_START, go), 0o600)
    try:
        result = flow.switch_service('MTProxy', state_dir, 'go', go, systemd_dir=str(systemd_dir), stats_check=False)
    finally:
        live.kill()
        live.wait()
    assert result['changed'] is True and result['restarted'] is False
    assert result['stats_flavor'] is None
    state = StateDir(state_dir, 'MTProxy').state()
    assert state['current'] == 'go' and state['history'][-1]['result'] == 'recorded'


# --- restart with stop_mode listeners_closed: do not wait for a process that drains after closing its listeners -----

DRAINER = r"""
import os, signal, socket, sys, time
mode, drain, port = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
listen = mode != 'quiet'
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if listen or not port:
    server.bind(('127.0.0.1', port))
    server.listen(16)
    port = server.getsockname()[1]
if not listen:
    server.close()
workers = []
if mode == 'worker':
    # A forked worker holds the inherited listening socket until `drain` s after its parent is gone.
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while os.getppid() == parent:
            time.sleep(0.005)
        time.sleep(drain)
        os._exit(0)
    workers.append(pid)
def stop(signum, frame):
    if mode == 'threads':
        # As the real C proxy ends: its main thread is a zombie while another thread runs on, and
        # with it the process's sockets, for `drain` s.
        import ctypes, threading
        threading.Thread(target=lambda: (time.sleep(drain), os._exit(0))).start()
        ctypes.CDLL(None).pthread_exit(None)
    if mode == 'worker':
        os._exit(0)
    if listen:
        server.close()
    time.sleep(drain)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print(port, *workers, flush=True)
time.sleep(30)
"""


REAL_POPEN = subprocess.Popen


def drainer(mode, drain, port=0):
    """(process, port); ``process.workers``: the PIDs of its forked workers."""
    child = REAL_POPEN([sys.executable, '-c', DRAINER, mode, str(drain), str(port)], stdout=subprocess.PIPE)
    words = [int(word) for word in child.stdout.readline().split()]
    child.workers = words[1:]
    return child, words[0]


def running(pid):
    """Whether ``pid`` is there and not a zombie (what systemd's cgroup would still hold)."""
    try:
        with open('/proc/%d/stat' % pid) as handle:
            return handle.read().rsplit(')', 1)[-1].split()[0] != 'Z'
    except (IOError, OSError):
        return False


class RestartJob(object):
    """`systemctl restart` as systemd runs it: SIGTERM to the old process, the new one once it is gone
    (with all its threads: that is when the kernel tells its parent) and so are the ``others`` of its
    cgroup (KillMode=control-group)."""

    def __init__(self, old, start_new, fail_start=False, others=()):
        self.old, self.start_new, self.fail_start, self.others = old, start_new, fail_start, others
        self.new = None
        self.returncode = None
        old.send_signal(15)

    def poll(self):
        if self.returncode is None and self.old.poll() is not None and not any(running(p) for p in self.others):
            if self.fail_start:
                self.returncode = 1
            else:
                self.new = self.start_new()
                self.returncode = 0
        return self.returncode

    def kill(self):
        pass

    def communicate(self, timeout=None):
        deadline = time.monotonic() + (timeout or 30)
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        return b'', b'Job for MTProxy.service failed.' if self.returncode else b''


@pytest.fixture
def service(monkeypatch):
    """A unit whose process is a drainer; restart() runs a RestartJob. Records systemctl calls."""
    children = []
    calls = []
    jobs = []

    def start(mode, drain, new_mode='listen', fail_start=False, kill_mode='control-group'):
        child, port = drainer(mode, drain)
        children.append(child)
        systemd = FakeSystemd({'MainPID': str(child.pid), 'ActiveState': 'failed' if fail_start else 'active',
                               'Result': 'exit-code', 'KillMode': kill_mode})

        def fake_run(argv, timeout=60):
            calls.append(list(argv))
            if argv[:2] == ['systemctl', 'kill'] and child.poll() is None:
                child.kill()
            return 0, '', ''

        def start_new():
            # As systemd does: stamp the fork of the new main process on CLOCK_MONOTONIC.
            systemd.props['ExecMainStartTimestampMonotonic'] = str(int(time.monotonic() * 1e6))
            new, _port = drainer(new_mode, 30, port)
            children.append(new)
            return new

        def restart_job(unit_systemd):
            assert unit_systemd.unit == 'MTProxy.service'
            others = child.workers if kill_mode == 'control-group' else ()
            jobs.append(RestartJob(child, start_new, fail_start, others))
            return jobs[-1]

        monkeypatch.setattr(process, 'run', fake_run)
        monkeypatch.setattr(sysrt, 'RestartJob', restart_job)
        return systemd, child, port

    yield start, calls
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait()
        for worker in child.workers:
            if running(worker):
                os.kill(worker, 9)


RESET_CALL = ['systemctl', 'reset-failed', 'MTProxy.service']
SIGKILL_CALL = ['systemctl', 'kill', '--signal=SIGKILL', 'MTProxy.service']


def test_listeners_closed_ends_a_draining_process_without_waiting(service):
    start, calls = service
    systemd, child, port = start('listen', 30)
    timings, failure = sysrt.restart_measured(systemd, port, None, 10, 60, 'listeners_closed')
    assert failure is None
    assert child.returncode == -9
    assert timings['ended_after_listeners_closed'] is True and timings['listeners_closed_ms'] is not None
    assert timings['killed_after_stop_timeout'] is False
    assert timings['unavailable_ms'] < 10000 and timings['start_ms'] is not None
    assert calls == [RESET_CALL, SIGKILL_CALL]
    assert probe.tcp_accepts(port)


def test_start_ms_splits_into_systemd_spawn_and_the_binary_start(service):
    start, _calls = service
    systemd, _child, port = start('listen', 0.05)
    timings, failure = sysrt.restart_measured(systemd, port, None, 10, 60, 'wait_exit')
    assert failure is None
    assert timings['spawn_ms'] >= 0 and timings['binary_start_ms'] > 0
    assert timings['spawn_ms'] + timings['binary_start_ms'] == pytest.approx(timings['start_ms'], abs=0.01)


@pytest.mark.parametrize('stamp', ['0', '', 'n/a', '1'])
def test_no_spawn_split_without_a_fork_time_stamp_from_this_start(service, stamp):
    start, _calls = service
    systemd, _child, port = start('listen', 0.05)

    class StaleStamp(FakeSystemd):
        def show(self, *props):
            return dict(self.props, ExecMainStartTimestampMonotonic=stamp)

    systemd.__class__ = StaleStamp
    timings, failure = sysrt.restart_measured(systemd, port, None, 10, 60, 'wait_exit')
    assert failure is None and timings['start_ms'] is not None
    assert (timings['spawn_ms'], timings['binary_start_ms']) == (None, None)


@pytest.mark.parametrize('forked_s, split', [
    (1.005, (5.0, 15.0)),     # forked 5 ms after the poll saw the old process gone
    (1.0, (0.0, 20.0)),
    (0.999, (0.0, 20.0)),     # the poll ran late and saw the exit only after the fork
    (0.5, (0.0, 20.0)),
    (0.4, (None, None)),      # before this restart began: another process's stamp
    (1.021, (None, None)),    # after the port accepted: not the process that accepted
])
def test_spawn_split_against_the_restart_time_line(forked_s, split):
    systemd = FakeSystemd({'ExecMainStartTimestampMonotonic': str(int(round(forked_s * 1e6)))})
    parts = sysrt.spawn_split(systemd, 0.5, 1.0, 1.02)
    assert (parts['spawn_ms'], parts['binary_start_ms']) == split


def test_wait_exit_lets_the_old_process_drain(service):
    start, calls = service
    systemd, child, port = start('listen', 0.3)
    timings, failure = sysrt.restart_measured(systemd, port, None, 10, 60, 'wait_exit')
    assert failure is None and child.returncode == 0
    assert timings['stop_ms'] >= 300
    assert (timings['listeners_closed_ms'], timings['ended_after_listeners_closed']) == (None, False)
    assert calls == [RESET_CALL]


def test_a_process_that_exits_soon_after_closing_its_listeners_is_not_ended(service, monkeypatch):
    # C's grace is 20 ms; a loaded machine can take longer than that to end a Python child, so the grace
    # here is 1 s: what is tested is that an exit within the grace is waited for, not the 20 ms.
    monkeypatch.setattr(sysrt, 'HANDOVER_GRACE', {'c': 1.0, 'go': 0.0})
    start, calls = service
    systemd, child, port = start('listen', 0.002)
    timings, failure = sysrt.restart_measured(systemd, port, None, 10, 60, 'listeners_closed')
    assert failure is None and child.returncode == 0
    assert timings['ended_after_listeners_closed'] is False
    assert calls == [RESET_CALL]


@pytest.mark.parametrize('old_flavor, ended', [('go', True), ('c', False)])
def test_the_grace_after_closing_listeners_depends_on_the_binary_stopped(service, monkeypatch, old_flavor, ended):
    # Scaled up so that scheduling delays cannot blur it: C gets 30 s (outlives a 0.5 s drain), Go none.
    monkeypatch.setattr(sysrt, 'HANDOVER_GRACE', {'c': 30.0, 'go': 0.0})
    start, calls = service
    systemd, child, port = start('listen', 0.5)
    timings, failure = sysrt.restart_measured(systemd, port, None, 10, 60, 'listeners_closed', old_flavor=old_flavor)
    assert failure is None
    assert timings['ended_after_listeners_closed'] is ended
    assert child.returncode == (-9 if ended else 0)
    assert calls == [RESET_CALL] + ([SIGKILL_CALL] if ended else [])


def test_listeners_closed_waits_when_the_process_never_listened(service):
    start, calls = service
    systemd, child, port = start('quiet', 0.3)
    timings, failure = sysrt.restart_measured(systemd, port, None, 10, 60, 'listeners_closed')
    assert failure is None and child.returncode == 0
    assert timings['listeners_closed_ms'] is None and timings['ended_after_listeners_closed'] is False
    assert calls == [RESET_CALL]


def test_stop_timeout_still_bounds_a_process_that_does_not_exit(service):
    start, calls = service
    systemd, child, port = start('quiet', 30)
    timings, failure = sysrt.restart_measured(systemd, port, None, 10, 0.3, 'listeners_closed')
    assert failure is None
    assert timings['killed_after_stop_timeout'] is True and timings['ended_after_listeners_closed'] is False
    assert child.returncode == -9
    assert calls == [RESET_CALL, SIGKILL_CALL]


def test_a_failed_start_is_reported_with_the_unit_state(service, monkeypatch):
    monkeypatch.setattr(sysrt, 'HANDOVER_GRACE', {'c': 1.0, 'go': 0.0})  # C's exit is waited for, load or not
    start, _calls = service
    systemd, child, port = start('listen', 0, fail_start=True)
    timings, failure = sysrt.restart_measured(systemd, port, None, 10, 60, 'listeners_closed')
    assert child.returncode == 0
    assert timings['start_ms'] is None and timings['unavailable_ms'] is None
    assert 'failed' in failure and 'Job for MTProxy.service failed.' in failure


class FailedJob(object):
    """A `systemctl restart` job that fails with ``err``: at once, or once ``ended`` is set."""

    returncode = 1

    def __init__(self, err, ended=True):
        self.err, self.ended = err, ended

    def poll(self):
        return 1 if self.ended else None

    def communicate(self, timeout=None):
        return b'', self.err


def test_an_old_process_that_exits_as_the_start_fails_is_a_start_failure(monkeypatch):
    # Right after a liveness check saw it running, the old process exits and the start half fails
    # at once: that is a failed start, not a failed stop.
    job = FailedJob(b'Job for MTProxy.service failed.', ended=False)

    def alive_until_this_check(pid):
        was_running, job.ended = not job.ended, True
        return was_running

    monkeypatch.setattr(proc, 'pid_alive', alive_until_this_check)
    t0 = time.monotonic()
    gone_at, killed, handover_at, ended_early = sysrt.await_old_exit(FakeSystemd({}), job, [4242], t0, 60)
    assert gone_at >= t0 and (killed, handover_at, ended_early) == (False, None, False)


def test_a_job_that_fails_while_the_old_process_runs_is_a_failed_stop(monkeypatch):
    monkeypatch.setattr(proc, 'pid_alive', lambda pid: True)
    job = FailedJob(b'Job for MTProxy.service canceled.')
    with pytest.raises(SwitchError, match='failed while stopping the old process: Job for .* canceled'):
        sysrt.await_old_exit(FakeSystemd({}), job, [4242], time.monotonic(), 60)


def test_a_new_process_that_never_listens_times_out(service):
    start, _calls = service
    systemd, _child, port = start('listen', 0, new_mode='quiet')
    timings, failure = sysrt.restart_measured(systemd, port, None, 0.5, 60, 'listeners_closed')
    assert timings['start_ms'] is None
    assert 'did not accept connections within 0.5s' in failure


# --- the old generation: every thread and every process of it, and only the new one's listener -------

LEADER_EXIT = r"""
import ctypes, os, socket, sys, threading, time
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.bind(('127.0.0.1', 0))
server.listen(16)
print(server.getsockname()[1], flush=True)
threading.Thread(target=lambda: (time.sleep(float(sys.argv[1])), os._exit(0))).start()
ctypes.CDLL(None).pthread_exit(None)
"""


def test_a_zombie_main_thread_whose_threads_still_hold_the_listener_is_alive():
    # What the real C proxy shows for up to ~20 ms after exit(): its main thread a zombie, its
    # other threads still ending, its listening socket still accepting connections.
    child = REAL_POPEN([sys.executable, '-c', LEADER_EXIT, '0.5'], stdout=subprocess.PIPE)
    try:
        port = int(child.stdout.readline())
        assert wait_for(lambda: not running(child.pid), timeout=5)
        assert probe.tcp_accepts(port)
        assert proc.pid_alive(child.pid) is True
        assert child.wait(timeout=5) == 0
        assert proc.pid_alive(child.pid) is False
        assert not probe.tcp_accepts(port)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_restart_waits_for_the_threads_of_the_old_main_process(service):
    start, _calls = service
    systemd, _child, port = start('threads', 0.3)
    timings, failure = sysrt.restart_measured(systemd, port, None, 10, 60, 'wait_exit')
    assert failure is None
    # Gone only once its last thread is, and the accept is the new process's: systemd forked it
    # within start_ms (not after an accept on the old socket, with start_ms ~0.1 and no split).
    assert timings['stop_ms'] >= 300
    assert timings['spawn_ms'] is not None and 0 <= timings['spawn_ms'] <= timings['start_ms']
    assert timings['spawn_ms'] + timings['binary_start_ms'] == pytest.approx(timings['start_ms'], abs=0.01)


def test_restart_waits_for_a_worker_that_keeps_the_listener(service):
    start, _calls = service
    systemd, child, port = start('worker', 0.3)
    timings, failure = sysrt.restart_measured(systemd, port, None, 10, 60, 'wait_exit')
    assert failure is None and child.returncode == 0
    assert not running(child.workers[0])
    assert timings['stop_ms'] >= 300
    assert timings['spawn_ms'] is not None
    assert timings['spawn_ms'] + timings['binary_start_ms'] == pytest.approx(timings['start_ms'], abs=0.01)


def test_an_accept_only_on_a_listener_the_old_processes_had_is_not_the_new_process(service):
    # KillMode=process: systemd ends the main process only, a worker keeps the port; the new
    # process (which never listens here) must not be taken for up because the port accepts.
    start, _calls = service
    systemd, child, port = start('worker', 30, new_mode='quiet', kill_mode='process')
    timings, failure = sysrt.restart_measured(systemd, port, None, 0.5, 60, 'wait_exit')
    assert running(child.workers[0])
    assert timings['start_ms'] is None and timings['spawn_ms'] is None
    assert ('port %d still has only the listening socket the old processes had: a process the stop did '
            'not end holds it (ss -ltnp sport = :%d names it); end it and switch again' % (port, port)) in failure


def test_wait_listening_takes_the_first_accept_on_a_new_listener():
    old = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    old.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    old.bind(('127.0.0.1', 0))
    old.listen(16)
    port = old.getsockname()[1]
    old_inodes = proc.listening_inodes(port)
    assert old_inodes
    new = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    new.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    new.bind(('127.0.0.1', port))
    opened = []

    def open_new():
        new.listen(16)
        opened.append(time.monotonic())
    timer = threading.Timer(0.3, open_new)
    started = time.monotonic()
    timer.start()
    try:
        accepted_at, _props = sysrt.wait_listening(FakeSystemd({}), port, started + 5, old_listeners=old_inodes)
    finally:
        timer.join()
        old.close()
        new.close()
    assert accepted_at is not None and accepted_at >= opened[0]


def test_unit_processes_follow_kill_mode_and_the_cgroup(tmp_path, monkeypatch):
    cgroup = '/system.slice/MTProxy.service'
    (tmp_path / cgroup.lstrip('/')).mkdir(parents=True)
    (tmp_path / cgroup.lstrip('/') / 'cgroup.procs').write_text('100\n101\n102\n')
    monkeypatch.setattr(proc, 'CGROUP_PROCS_ROOTS', (str(tmp_path / 'missing'), str(tmp_path)))
    assert proc.unit_processes(100, cgroup) == {100, 101, 102}
    assert proc.unit_processes(100, cgroup, 'control-group') == {100, 101, 102}
    assert proc.unit_processes(100, cgroup, 'mixed') == {100, 101, 102}
    # systemd stops only the main process: the others are the unit's, left running by design.
    assert proc.unit_processes(100, cgroup, 'process') == {100}
    assert proc.unit_processes(100, cgroup, 'none') == {100}
    assert proc.unit_processes(0, cgroup) == {100, 101, 102}


def test_unit_processes_without_a_readable_cgroup_are_the_main_process_and_its_descendants(monkeypatch):
    monkeypatch.setattr(proc, 'CGROUP_PROCS_ROOTS', ('/nonexistent',))
    child, _port = drainer('worker', 30)
    try:
        assert proc.unit_processes(child.pid, '/system.slice/MTProxy.service') == {child.pid} | set(child.workers)
        assert proc.unit_processes(child.pid, None) == {child.pid} | set(child.workers)
    finally:
        child.kill()
        child.wait()
        os.kill(child.workers[0], 9)


def prove_process(pointing, pid, secrets):
    runtime = sysrt.SystemdRuntime(StateDir('/nonexistent', 'MTProxy'), pointing.manifest)
    runtime.secrets = list(secrets)
    return runtime.prove_process(pointing, pid)


BEFORE_EXEC = r"""
import ctypes, os, sys, time
ctypes.CDLL(None).prctl(15, b'(proxy-go)', 0, 0, 0)
time.sleep(float(sys.argv[1]))
os.execv(sys.argv[2], sys.argv[2:])
"""


def test_the_argv_proof_waits_for_a_main_process_that_has_not_exec_d_yet(tmp_path):
    # MainPID as systemd shows it right after the fork: named '(proxy-go)', running systemd's code.
    # The "Go binary" is sleep, so that its argv is exact from the exec on.
    go = shutil.which('sleep')
    data = manifest(argv=[C_ARGV[0], '30'], unit={'exec_start': '%s 30' % C_ARGV[0]})
    pointing = pt.DropIn(data, None, 'go', go, str(tmp_path / 'etc'))
    child = REAL_POPEN([sys.executable, '-c', BEFORE_EXEC, '0.3', go, '30'])
    try:
        assert wait_for(lambda: proc.read_comm(child.pid) == '(proxy-go)')
        assert prove_process(pointing, child.pid, [SECRET]) == (True, None)
    finally:
        child.kill()
        child.wait()


def test_the_argv_proof_names_a_main_process_that_never_exec_s(tmp_path, monkeypatch):
    monkeypatch.setattr(proc, 'EXEC_WAIT', 0.3)
    pointing = pt.DropIn(manifest(), None, 'go', GO, str(tmp_path / 'etc'))
    child = REAL_POPEN([sys.executable, '-c', BEFORE_EXEC, '30', GO])
    try:
        assert wait_for(lambda: proc.read_comm(child.pid) == '(proxy-go)')
        started = time.monotonic()
        matches, why = prove_process(pointing, child.pid, [SECRET])
        assert 0.3 <= time.monotonic() - started < 2
    finally:
        child.kill()
        child.wait()
    assert matches is False
    assert why == ("MainPID %d had not exec'd its program after 0.3s: it still had the name '(proxy-go)' "
                   "systemd gives the process it forked; look at the unit's journal for what held the exec up"
                   % child.pid)


def test_read_cmdline_after_exec_rereads_an_empty_argv(monkeypatch):
    # The reads of one exec: systemd's child, the exec under way (argv empty), the program.
    reads = [('(proxy-go)', ['(proxy-go)']), ('mtproto-proxy-g', None), ('mtproto-proxy-g', [GO, '-p', '8888'])]
    monkeypatch.setattr(proc, 'read_comm', lambda pid: reads[0][0])
    monkeypatch.setattr(proc, 'read_cmdline', lambda pid: reads.pop(0)[1])
    clock = Clock()
    assert proc.read_cmdline_after_exec(4242, clock=clock, sleep=clock.sleep) == ([GO, '-p', '8888'], 'mtproto-proxy-g')
    assert clock.slept == [proc.EXEC_POLL] * 2


def test_read_cmdline_after_exec_of_a_process_that_is_gone():
    assert proc.read_cmdline_after_exec(2 ** 22 + 1) == (None, None)


def test_port_refuses_only_on_an_actual_refusal():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(('127.0.0.1', 0))
    server.listen(1)
    port = server.getsockname()[1]
    assert probe.port_refuses(port) is False
    server.close()
    assert probe.port_refuses(port) is True


def test_unknown_stop_mode_is_refused(tmp_path):
    with pytest.raises(SwitchError, match='stop_mode must be one of'):
        flow.switch_service('MTProxy', str(tmp_path), 'c', stop_mode='sometime')


def test_kill_unit_writes_cgroup_kill_of_the_unit(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(process, 'run', lambda argv, timeout=60: calls.append(argv) or (0, '', ''))
    unified = tmp_path / 'unified'
    cgroup = '/docker/abc/system.slice/MTProxy.service'
    (unified / cgroup.lstrip('/')).mkdir(parents=True)
    (unified / cgroup.lstrip('/') / 'cgroup.kill').write_text('')
    monkeypatch.setattr(hsd, 'CGROUP_ROOTS', (str(tmp_path / 'v2'), str(unified)))
    assert hsd.kill_unit(FakeSystemd({}), cgroup) == 'cgroup.kill'
    assert (unified / cgroup.lstrip('/') / 'cgroup.kill').read_text() == '1'
    assert calls == []


@pytest.mark.parametrize('cgroup', ['', '/system.slice/MTProxy.service'])
def test_kill_unit_falls_back_to_systemctl_kill(tmp_path, monkeypatch, cgroup):
    calls = []
    monkeypatch.setattr(process, 'run', lambda argv, timeout=60: calls.append(argv) or (0, '', ''))
    monkeypatch.setattr(hsd, 'CGROUP_ROOTS', (str(tmp_path),))
    assert hsd.kill_unit(FakeSystemd({}), cgroup) == 'systemctl'
    assert calls == [SIGKILL_CALL]
