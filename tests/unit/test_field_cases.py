"""Hosts as operators run them (tests/fixtures/field-cases, see its README): one test per case and kind.

Each case's unit file (and drop-ins, env files, scripts) is laid out under tmp_path with /opt/MTProxy
and /etc moved there; `systemctl show` answers what systemd 252 prints for it, and the live argv is
what the proxy's /proc/<pid>/cmdline shows. The freeze then runs as mtproxy_freeze runs it
(freeze_host), the switch and the pre-warm with a fake systemd.
"""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import argv as av
from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import PrewarmError, SwitchError
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import proof
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import switch as flow
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import probe, process
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime import systemd as sysrt
from ansible_collections.mtproxy.cutover.plugins.module_utils._state import StateDir
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import prewarm
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.choice import runtime_for
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import refusals
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import unit as un
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime import pointing as pt
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import freeze as fz
from stats_fixtures import capture

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'integration'))
from stats_server import StatsServer  # noqa: E402

FIELD = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'fixtures', 'field-cases')
GO_BODY = capture('go-M1-idle-start.txt')
C_BODY = capture('c-M1-idle-start.txt')
SECRET = '00112233445566778899aabbccddeeff'


def field(case, name):
    with open(os.path.join(FIELD, case, name)) as handle:
        return handle.read()


class Listener(object):
    """A TCP port that counts the connections made to it (to prove none was)."""

    def __init__(self, host='127.0.0.1'):
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def accepted(self):
        count = 0
        while True:
            try:
                conn, _peer = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def close(self):
        self.sock.close()


class FieldHost(object):
    """A case laid out under tmp_path; freeze() runs mtproxy_freeze's freeze_host against it."""

    def __init__(self, tmp_path, monkeypatch, case, unit_file, live_argv, drop_ins=(), env_files=(),
                 scripts=(), replace=None, working_directory=None, user=''):
        self.tmp = tmp_path
        self.replace = dict(replace or {})
        self.replace['/opt/MTProxy'] = str(tmp_path / 'opt' / 'MTProxy')
        (tmp_path / 'opt' / 'MTProxy').mkdir(parents=True)
        for name in ('proxy-multi.conf', 'proxy-secret', 'secret'):
            (tmp_path / 'opt' / 'MTProxy' / name).write_text('%s of the field case\n' % name)
        self.fragment = self.put('etc/systemd/system/' + os.path.basename(unit_file), field(case, unit_file))
        self.drop_ins = [self.put('etc/systemd/system/%s.d/%s' % (os.path.basename(unit_file), os.path.basename(p)),
                                  field(case, p)) for p in drop_ins]
        self.env_files = [(self.put('etc/' + os.path.basename(src), field(case, src)), optional)
                          for src, optional in env_files]
        for src, dest in scripts:
            self.put(dest, field(case, src), 0o755)
        self.unit = os.path.basename(unit_file)
        self.live_argv = [self.sub(word) for word in live_argv]
        self.working_directory = working_directory if working_directory is not None else self.unit_setting(
            'WorkingDirectory')
        self.user = user
        self.started_mono = time.monotonic() + 1  # the process started after every file was written
        monkeypatch.setattr(sysrt, 'read_live_cmdline', lambda pid: list(self.live_argv))

    def sub(self, text):
        for old, new in self.replace.items():
            text = text.replace(old, new)
        return text

    def put(self, relpath, text, mode=0o644):
        path = self.tmp / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.sub(text))
        path.chmod(mode)
        return str(path)

    def unit_setting(self, key):
        value = ''
        for path in [self.fragment] + self.drop_ins:
            with open(path) as handle:
                for line in handle:
                    if line.startswith(key + '='):
                        value = line.split('=', 1)[1].strip()
        if value.startswith('-'):
            value = '!' + value[1:]  # as systemctl show prints WorkingDirectory=-/x
        return value

    def show(self):
        lines = ['LoadState=loaded', 'ActiveState=active', 'SubState=running', 'MainPID=4242',
                 'ExecMainStartTimestampMonotonic=%d' % int(self.started_mono * 1e6),
                 'FragmentPath=%s' % self.fragment, 'DropInPaths=%s' % ' '.join(self.drop_ins),
                 'User=%s' % self.user, 'Group=', 'WorkingDirectory=%s' % self.working_directory,
                 'Environment=', 'NeedDaemonReload=no', 'Type=simple', 'Names=%s' % self.unit]
        lines += ['EnvironmentFiles=%s (ignore_errors=%s)' % (path, 'yes' if optional else 'no')
                  for path, optional in self.env_files]
        return '\n'.join(lines) + '\n'

    def run_command(self, cmd):
        assert cmd[:2] == ['systemctl', 'show'], cmd
        return 0, self.show(), ''

    def params(self, **overrides):
        params = dict(service=self.unit[:-len('.service')], state_dir=str(self.tmp / 'state'), refreeze=False,
                      go_binaries=[], stats_check=True, method='dropin', allow_no_baseline=False,
                      baseline_samples=2, baseline_interval=0.01)
        params.update(overrides)
        return params

    def freeze(self, warnings=None, check_mode=False, **overrides):
        return fz.freeze_host(self.params(**overrides), self.run_command, check_mode, '2026-01-01T00:00:00Z',
                              [] if warnings is None else warnings)

    def state_files(self):
        directory = self.tmp / 'state' / self.unit[:-len('.service')]
        return sorted(os.listdir(str(directory))) if directory.exists() else []


def refused(excinfo, kind, unit):
    refusal = excinfo.value
    assert isinstance(refusal, refusals.Refusal), refusal
    assert refusal.kind == kind, refusal.kind
    message = refusal.message(unit)
    assert message.startswith('%s on %s: ' % (unit, socket.gethostname()))
    assert 'Nothing on the host was changed' in message and 'Way forward: ' in message
    return message


# ---------------------------------------------------------------------------------------------
# vendor-dropin: override.conf sorts after 99-mtproxy-cutover.conf
# ---------------------------------------------------------------------------------------------

VENDOR_LIVE = ('/opt/MTProxy/mtproto-proxy -u nobody -p 8888 --http-stats -H 443 --mtproto-secret-file '
               '/opt/MTProxy/secret -P 0123456789abcdef0123456789abcdef --aes-pwd proxy-secret '
               'proxy-multi.conf -M 1').split()


def vendor_host(tmp_path, monkeypatch, stats_port=8888):
    return FieldHost(tmp_path, monkeypatch, 'vendor-dropin', 'MTProxy.service',
                     [w.replace('8888', str(stats_port)) for w in VENDOR_LIVE],
                     drop_ins=['MTProxy.service.d/override.conf'], env_files=[('default-mtproxy', True)],
                     replace={'8888': str(stats_port)})


def test_systemd_applies_override_conf_after_the_cutover_dropin():
    paths = ['/etc/systemd/system/MTProxy.service.d/override.conf']
    ours = '/etc/systemd/system/MTProxy.service.d/' + un.CUTOVER_DROPIN
    assert un.drop_in_order(paths, ours) == [ours, paths[0]]
    texts = [('/etc/systemd/system/MTProxy.service', field('vendor-dropin', 'MTProxy.service')),
             (paths[0], field('vendor-dropin', 'MTProxy.service.d/override.conf'))]
    dropin = pt.render_dropin(un.exec_start_from_unit_texts(texts), '/opt/MTProxy/releases/go/mtproto-proxy')
    assert un.dropin_winner(texts, ours, dropin) == paths[0]
    # Renamed to sort first (the way forward), the cutover's drop-in wins.
    renamed = [texts[0], ('/etc/systemd/system/MTProxy.service.d/50-override.conf', texts[1][1])]
    assert un.dropin_winner(renamed, ours, dropin) == ours


def test_vendor_dropin_freeze_refuses_naming_the_winning_file(tmp_path, monkeypatch):
    host = vendor_host(tmp_path, monkeypatch)
    with pytest.raises(refusals.Refusal) as info:
        host.freeze()
    message = refused(info, 'dropin_overridden', 'MTProxy.service')
    assert '%s sets ExecStart' % host.drop_ins[0] in message
    assert 'mv %s %s' % (host.drop_ins[0], host.drop_ins[0].replace('override.conf', '50-override.conf')) in message
    assert 'mtproxy_cutover_method=symlink' in message
    assert host.state_files() == []


def test_vendor_dropin_with_method_symlink_is_frozen(tmp_path, monkeypatch):
    host = vendor_host(tmp_path, monkeypatch)
    result = host.freeze(method='symlink', stats_check=False)
    assert result['status'] == 'frozen' and host.state_files() == ['manifest.json']
    manifest = json.loads((tmp_path / 'state' / 'MTProxy' / 'manifest.json').read_text())
    assert manifest['unit']['exec_start'].endswith('-P ${MTPROXY_TAG} --aes-pwd proxy-secret proxy-multi.conf -M 1')


HOST_C_PATH = '/opt/MTProxy/mtproto-proxy'


class UnitSystemd(object):
    """A systemd whose units are files under tmp_path: show reads them, daemon_reload is counted."""

    def __init__(self, fragment, drop_in_dir, exec_start_path):
        self.unit = 'MTProxy.service'
        self.fragment = fragment
        self.drop_in_dir = drop_in_dir
        self.exec_start_path = exec_start_path
        self.reloads = 0

    def show(self, *props):
        names = sorted(os.listdir(self.drop_in_dir)) if os.path.isdir(self.drop_in_dir) else []
        return {'ActiveState': 'active', 'MainPID': '4242', 'NeedDaemonReload': 'no',
                'FragmentPath': self.fragment,
                'DropInPaths': ' '.join(os.path.join(self.drop_in_dir, n) for n in names if n.endswith('.conf')),
                'ExecStart': '{ path=%s ; argv[]=%s -u nobody ; ignore_errors=no ; start_time=[n/a] ; '
                             'stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }'
                             % (self.exec_start_path, self.exec_start_path)}

    def main_pid(self):
        return 4242

    def daemon_reload(self):
        self.reloads += 1


def _switch_host(tmp_path, monkeypatch, fragment=True):
    """A vendor-dropin host frozen with method=symlink, and a systemd that keeps running C."""
    host = vendor_host(tmp_path, monkeypatch)
    host.freeze(method='symlink', stats_check=False)
    go = tmp_path / 'go' / 'mtproto-proxy-go'
    go.parent.mkdir()
    go.write_text('#!/bin/sh\n')
    go.chmod(0o755)
    systemd_dir = tmp_path / 'etc' / 'systemd' / 'system'
    fake = UnitSystemd(host.fragment if fragment else '', str(systemd_dir / 'MTProxy.service.d'),
                       host.sub(HOST_C_PATH))
    monkeypatch.setattr(sysrt, 'Systemd', lambda unit: fake)

    def nothing_may_run(*args, **kwargs):
        raise AssertionError('nothing may be run or restarted: %r' % (args,))
    monkeypatch.setattr(process, 'run', nothing_may_run)
    monkeypatch.setattr(sysrt, 'restart_measured', nothing_may_run)
    return host, str(go), str(systemd_dir), fake


@pytest.mark.parametrize('check_mode', [False, True])
def test_vendor_dropin_flip_is_refused_before_anything_is_written(tmp_path, monkeypatch, check_mode):
    host, go, systemd_dir, fake = _switch_host(tmp_path, monkeypatch)
    before = sorted(os.listdir(fake.drop_in_dir))
    with pytest.raises(SwitchError) as info:
        flow.switch_service('MTProxy', str(tmp_path / 'state'), 'go', go, check_mode=check_mode,
                            systemd_dir=systemd_dir)
    assert info.value.details['refused'] == 'dropin_overridden' and info.value.details['changed'] is False
    assert '%s sets ExecStart' % host.drop_ins[0] in str(info.value)
    assert sorted(os.listdir(fake.drop_in_dir)) == before and fake.reloads == 0
    assert host.state_files() == ['manifest.json']


def test_a_flip_systemd_would_not_run_is_undone_and_names_the_winner(tmp_path, monkeypatch):
    """The check after daemon-reload: what `systemctl show -p ExecStart` says systemd will run."""
    # Without FragmentPath the drop-in order cannot be simulated: only the show check stands.
    host, go, systemd_dir, fake = _switch_host(tmp_path, monkeypatch, fragment=False)
    with pytest.raises(SwitchError) as info:
        flow.switch_service('MTProxy', str(tmp_path / 'state'), 'go', go, systemd_dir=systemd_dir)
    message = str(info.value)
    assert 'after daemon-reload systemd would run %s, not %s' % (host.sub(HOST_C_PATH), go) in message
    assert 'the service was not restarted' in message
    assert info.value.details['changed'] is False
    assert os.listdir(fake.drop_in_dir) == ['override.conf']  # the cutover drop-in was removed again
    assert fake.reloads == 2
    assert host.state_files() == ['manifest.json']  # nothing recorded: never "current: go" while C runs


# ---------------------------------------------------------------------------------------------
# shell-wrapper and script-wrapper: ExecStart starts something that execs the proxy
# ---------------------------------------------------------------------------------------------

def test_shell_wrapper_is_refused_as_a_wrapper_not_as_an_edit(tmp_path, monkeypatch):
    env = un.parse_environment_file(field('shell-wrapper', 'main.env'))
    live = ('/opt/MTProxy/mtproto-proxy -u nobody -p 8888 --http-stats -H %(PORT)s -S %(SECRET)s '
            '--aes-pwd proxy-secret proxy-multi.conf -M %(WORKERS)s' % env).split()
    host = FieldHost(tmp_path, monkeypatch, 'shell-wrapper', 'mtproxy.service', live,
                     env_files=[('main.env', False)])
    with pytest.raises(refusals.Refusal) as info:
        host.freeze()
    message = refused(info, 'exec_wrapper', 'mtproxy.service')
    assert 'ExecStart runs the shell /bin/bash (-c), which starts the proxy %s' % host.live_argv[0] in message
    assert 'edited' not in message
    assert 'EnvironmentFile=' in message and '${NAME}' in message
    assert env['SECRET'] not in message
    assert host.state_files() == []


def test_script_wrapper_is_refused_as_a_wrapper_not_as_an_edit(tmp_path, monkeypatch):
    live = ('./mtproto-proxy -u nobody -p 8888 --http-stats -H 443 -S %s --aes-pwd proxy-secret '
            'proxy-multi.conf -M 2' % SECRET).split()
    host = FieldHost(tmp_path, monkeypatch, 'script-wrapper', 'mtproxy.service', live,
                     scripts=[('run.sh', 'opt/MTProxy/run.sh')])
    with pytest.raises(refusals.Refusal) as info:
        host.freeze()
    message = refused(info, 'exec_wrapper', 'mtproxy.service')
    assert 'ExecStart runs the script %s (#!/bin/sh), which starts the proxy ./mtproto-proxy' % host.sub(
        '/opt/MTProxy/run.sh') in message
    assert 'edited' not in message and SECRET not in message


def test_an_edit_without_restart_is_still_named_so(tmp_path, monkeypatch):
    live = field('address-flag', 'MTProxy.service').split('ExecStart=')[1].split('\n')[0].split()
    live[live.index('-M') + 1] = '2'  # the process runs what the unit said before the edit
    host = FieldHost(tmp_path, monkeypatch, 'address-flag', 'MTProxy.service', live)
    host.started_mono = time.monotonic() - 3600
    with pytest.raises(refusals.Refusal) as info:
        host.freeze()
    message = refused(info, 'edited_not_restarted', 'MTProxy.service')
    assert 'live argv differs from unit MTProxy.service at [{"index": ' in message
    assert '%s changed after the process started' % host.fragment in message
    # Nothing changed since the process started: another cause, not an edit.
    host.started_mono = time.monotonic() + 1
    with pytest.raises(refusals.Refusal) as info:
        host.freeze()
    assert 'edited' not in refused(info, 'argv_differs', 'MTProxy.service')


# ---------------------------------------------------------------------------------------------
# ipv6-flag: any connection to C's stats port kills it
# ---------------------------------------------------------------------------------------------

def ipv6_host(tmp_path, monkeypatch, stats):
    live = field('ipv6-flag', 'MTProxy.service').split('ExecStart=')[1].split('\n')[0].replace('8888', str(stats.port))
    return FieldHost(tmp_path, monkeypatch, 'ipv6-flag', 'MTProxy.service', live.split(),
                     replace={'8888': str(stats.port)})


def test_ipv6_host_is_refused_without_a_connection_to_its_stats_port(tmp_path, monkeypatch):
    stats = Listener()
    try:
        host = ipv6_host(tmp_path, monkeypatch, stats)
        with pytest.raises(refusals.Refusal) as info:
            host.freeze()
        time.sleep(0.2)
        assert stats.accepted() == 0
    finally:
        stats.close()
    message = refused(info, 'ipv6_stats', 'MTProxy.service')
    assert "-6" in message and refusals.IPV6_ASSERTION in message
    assert 'mtproxy_cutover_allow_no_baseline=true' in message
    assert host.state_files() == []


def test_ipv6_host_is_frozen_without_a_baseline_when_the_operator_opts_in(tmp_path, monkeypatch):
    stats = Listener()
    warnings = []
    try:
        host = ipv6_host(tmp_path, monkeypatch, stats)
        result = host.freeze(warnings=warnings, allow_no_baseline=True)
        time.sleep(0.2)
        assert stats.accepted() == 0
    finally:
        stats.close()
    assert result['status'] == 'frozen' and result['stats_readable'] is False
    assert result['flavor'] is None and result['baseline'] == {} and result['baseline_taken'] is False
    assert fz.NO_BASELINE_WARNING in result['warnings'] and fz.NO_BASELINE_WARNING in warnings
    assert host.state_files() == ['manifest.json']


def test_switch_never_touches_the_stats_port_of_c_with_ipv6(tmp_path, monkeypatch):
    manifest = {'argv': ['/opt/MTProxy/mtproto-proxy', '-6', '-p', '8888', '--http-stats', '-H', '443', 'cfg']}
    assert proof.c_stats_unsafe(manifest)
    assert not proof.c_stats_unsafe({'argv': manifest['argv'][:1] + manifest['argv'][2:]})
    assert not refusals.c_stats_readable(av.parse_argv(manifest['argv']))


# ---------------------------------------------------------------------------------------------
# address-flag: the client port is bound to --address
# ---------------------------------------------------------------------------------------------

ADDRESS_LIVE = field('address-flag', 'MTProxy.service').split('ExecStart=')[1].split('\n')[0].split()


@pytest.mark.parametrize('argv, ipv6_lo, hosts', [
    (ADDRESS_LIVE, False, ['127.0.0.2']),
    (['/p', '--address=0.0.0.0', 'cfg'], False, ['127.0.0.1']),
    (['/p', '--address', '::', 'cfg'], True, ['::1']),
    (['/p', '--address', '[::1]', 'cfg'], True, ['::1']),
    (['/p', '-6', 'cfg'], True, ['127.0.0.1', '::1']),
    (['/p', '-6', 'cfg'], False, ['127.0.0.1']),
    (['/p', '-H', '443', 'cfg'], True, ['127.0.0.1']),
])
def test_client_ports_are_probed_where_the_proxy_binds_them(argv, ipv6_lo, hosts):
    assert av.client_probe_hosts(av.parse_argv(argv), ipv6_lo) == hosts


def test_address_flag_freeze_names_the_address_and_reads_stats_on_loopback(tmp_path, monkeypatch):
    with StatsServer([{'body': C_BODY}]) as server:
        live = [w.replace('8888', str(server.port)) for w in ADDRESS_LIVE]
        host = FieldHost(tmp_path, monkeypatch, 'address-flag', 'MTProxy.service', live,
                         replace={'8888': str(server.port)})
        result = host.freeze()
    assert result['client_hosts'] == ['127.0.0.2'] and result['stats_readable'] is True
    assert result['flavor'] == 'c' and result['stats_url'] == 'http://127.0.0.1:%d/stats' % server.port


DRAINER_AT = r"""
import signal, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((host, port))
server.listen(16)
def stop(signum, frame):
    server.close()
    time.sleep(5)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print(server.getsockname()[1], flush=True)
time.sleep(30)
"""
REAL_POPEN = subprocess.Popen


def listening_child(host, port=0):
    child = REAL_POPEN([sys.executable, '-c', DRAINER_AT, host, str(port)], stdout=subprocess.PIPE)
    return child, int(child.stdout.readline())


def test_a_restart_probes_the_address_the_proxy_binds(monkeypatch):
    """--address 127.0.0.2: the handover sees the listener close and the new one accept there."""
    from test_switch import FakeSystemd, RestartJob
    hosts = proof.client_hosts_of({'argv': ADDRESS_LIVE})
    old, port = listening_child('127.0.0.2')
    children = [old]
    systemd = FakeSystemd({'MainPID': str(old.pid), 'ActiveState': 'active'})

    def start_new():
        new, _port = listening_child('127.0.0.2', port)
        children.append(new)
        return new

    def fake_run(argv, timeout=60):
        if argv[:2] == ['systemctl', 'kill'] and old.poll() is None:
            old.kill()
        return 0, '', ''
    monkeypatch.setattr(process, 'run', fake_run)
    monkeypatch.setattr(sysrt, 'RestartJob', lambda systemd: RestartJob(old, start_new))
    try:
        timings, failure = sysrt.restart_measured(systemd, port, None, 5, 10, 'listeners_closed',
                                                  client_hosts=hosts)
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert failure is None, failure
    assert timings['listeners_closed_ms'] is not None and timings['start_ms'] is not None
    assert not probe.tcp_accepts(port)  # nothing on 127.0.0.1: probing there would have failed


def test_prewarm_waits_for_the_client_port_on_the_address(tmp_path, monkeypatch):
    state_dir = tmp_path / 'state'
    (state_dir / 'MTProxy').mkdir(parents=True)
    (state_dir / 'MTProxy' / 'manifest.json').write_text(json.dumps({'argv': ADDRESS_LIVE, 'unit': {}}))
    job = runtime_for(StateDir(str(state_dir), 'MTProxy')).candidate('prewarm')
    assert job.client_hosts == ['127.0.0.2']
    client = Listener('127.0.0.2')
    running = {'LoadState': 'loaded', 'ActiveState': 'active', 'SubState': 'running', 'MainPID': '4242'}
    monkeypatch.setattr(job.systemd, 'show', lambda *props: running)
    try:
        with StatsServer([{'body': GO_BODY}]) as server:
            job.stats_url, job.client_ports = server.url, [client.port]
            ready, _seen, why = prewarm.wait_ready(job, time.monotonic() + 3)
    finally:
        client.close()
    assert ready not in (None, 'exited'), why


def test_bench_prober_connects_to_the_address(monkeypatch):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'bench'))
    import prober
    client = Listener('127.0.0.2')
    try:
        assert prober.connect_once('127.0.0.2', client.port, 0.5) == 'ok'
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# no-http-stats: say so, and a failed freeze leaves nothing behind
# ---------------------------------------------------------------------------------------------

def test_no_http_stats_is_refused_with_the_flag_to_add_and_persists_nothing(tmp_path, monkeypatch):
    stats = Listener()
    warnings = []
    try:
        live = field('no-http-stats', 'MTProxy.service').split('ExecStart=')[1].split('\n')[0]
        host = FieldHost(tmp_path, monkeypatch, 'no-http-stats', 'MTProxy.service',
                         live.replace('8888', str(stats.port)).split(), replace={'8888': str(stats.port)})
        with pytest.raises(refusals.Refusal) as info:
            host.freeze(warnings=warnings)
        assert stats.accepted() == 0
    finally:
        stats.close()
    message = refused(info, 'no_http_stats', 'MTProxy.service')
    assert 'runs without --http-stats' in message and 'add --http-stats to ExecStart' in message
    assert host.state_files() == []
    # The freeze's own warnings survive the failure (the module puts them into its message).
    assert '--http-stats is not set: the C proxy does not serve /stats' in warnings
    assert '--http-stats is not set' in fz.failure_message(message, warnings).split('\nWarnings: ')[1]
    assert '0123456789abcdef0123456789abcdef' not in fz.failure_message(message, warnings)


def test_a_freeze_that_fails_after_reading_the_host_writes_nothing(tmp_path, monkeypatch):
    """The kind behind no-http-stats: /stats answers as Go on a first freeze: no manifest, no baseline."""
    with StatsServer([{'body': GO_BODY}]) as server:
        live = [w.replace('8888', str(server.port)) for w in ADDRESS_LIVE]
        host = FieldHost(tmp_path, monkeypatch, 'address-flag', 'MTProxy.service', live,
                         replace={'8888': str(server.port)})
        with pytest.raises(fz.bl.BaselineError, match='answers /stats as the Go binary'):
            host.freeze()
    assert host.state_files() == []


# ---------------------------------------------------------------------------------------------
# settings systemctl show prints in another form than the unit file
# ---------------------------------------------------------------------------------------------

def test_working_directory_with_a_dash_resolves_files_like_systemd(tmp_path, monkeypatch):
    with StatsServer([{'body': C_BODY}]) as server:
        live = [w.replace('8888', str(server.port)) for w in ADDRESS_LIVE]
        host = FieldHost(tmp_path, monkeypatch, 'address-flag', 'MTProxy.service', live,
                         replace={'8888': str(server.port), 'WorkingDirectory=/': 'WorkingDirectory=-/'})
        assert host.working_directory.startswith('!/')  # what systemctl show prints for -/x
        result = host.freeze()
    files = dict((f['role'], f) for f in result['manifest']['files'])
    assert files['config']['resolved'] == host.sub('/opt/MTProxy/proxy-multi.conf')
    assert files['config']['sha256'] and result['manifest']['unit']['working_directory'] == host.sub('/opt/MTProxy')
    assert not any('cannot be read' in w for w in result['warnings'])


@pytest.mark.parametrize('value, user, expected', [
    ('/opt/MTProxy', '', ('/opt/MTProxy', False)),
    ('!/opt/MTProxy', '', ('/opt/MTProxy', True)),
    ('~', '', ('/root', False)),
    ('!~', 'nobody', ('/nonexistent', True)),
    ('', '', (None, False)),
])
def test_show_working_directory(value, user, expected):
    homes = {'': '/root', 'nobody': '/nonexistent'}
    assert un.show_working_directory(value, user, home_of=homes.get) == expected


def test_show_exec_start_form():
    value = ('{ path=/bin/sleep ; argv[]=my sleep /root/a t1.service b c ${A} $B 1000 ; ignore_errors=yes ; '
             'start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }')
    assert un.parse_show_exec(value) == [{'path': '/bin/sleep', 'ignore_errors': True,
                                          'argv_text': 'my sleep /root/a t1.service b c ${A} $B 1000'}]
    assert un.parse_show_exec('') == []
    ex = '{ path=/opt/c ; argv[]=/opt/c ; flags=ignore-failure no-env-expand ; start_time=[n/a] }'
    assert un.parse_show_exec(ex)[0]['ignore_errors'] is True


def test_exec_start_prefixes_specifiers_and_search_path_as_systemd_resolves_them():
    host = {'H': 'proxy-7.example', 'l': 'proxy-7', 'y': '/etc/systemd/system/MTProxy.service',
            'Y': '/etc/systemd/system'}
    parsed = un.parse_exec_command('-@/opt/c mtproxy --log=%h/%n.log --nat-info %l -u %u %Y/x', 'MTProxy.service',
                                   {}, host)
    assert parsed == {'path': '/opt/c', 'prefixes': '-@',
                      'argv': ['mtproxy', '--log=/root/MTProxy.service.log', '--nat-info', 'proxy-7', '-u', 'root',
                               '/etc/systemd/system/x']}
    assert un.resolve_exec_path('sh', lambda p: p == '/usr/bin/sh') == '/usr/bin/sh'
    assert un.resolve_exec_path('/opt/c', lambda p: False) == '/opt/c'
    with pytest.raises(un.UnitError, match='unsupported systemd specifier %b'):
        un.parse_exec_command('/opt/c %b', 'MTProxy.service')


def test_a_script_that_does_not_exec_the_proxy_is_named_so():
    command = un.parse_exec_command('/opt/MTProxy/run.sh', 'mtproxy.service')
    refusal = refusals.wrapper_refusal(command, ['/bin/sh', '/opt/MTProxy/run.sh'], ['/bin/sh'], 'mtproxy.service')
    assert refusal.kind == 'exec_wrapper'
    assert "whose interpreter is the service's main process (the script does not exec the proxy)" in refusal.cause
    launcher = un.parse_exec_command('/usr/bin/env MTPROXY_SECRET=%s /opt/p -u nobody' % SECRET, 'x.service')
    refusal = refusals.wrapper_refusal(launcher, ['/opt/p', '-u', 'nobody'], None, 'x.service')
    assert 'ExecStart runs the launcher /usr/bin/env, which starts the proxy /opt/p' in refusal.cause
    assert SECRET not in refusal.message('x.service')


# ---------------------------------------------------------------------------------------------
# exec-at-prefix: ExecStart=@/path argv0 ... (systemd.service(5): the word after the path is argv[0])
# ---------------------------------------------------------------------------------------------

AT_LIVE = ('mtproto-proxy -u nobody -p 8888 --http-stats -H 443 -S 0123456789abcdef0123456789abcdef '
           '--aes-pwd proxy-secret proxy-multi.conf -M 1').split()
AT_PROGRAM = '/opt/MTProxy/objs/bin/mtproto-proxy'


def at_host(tmp_path, monkeypatch):
    return FieldHost(tmp_path, monkeypatch, 'exec-at-prefix', 'MTProxy.service', AT_LIVE)


def test_exec_at_prefix_with_a_dropin_is_refused_at_the_freeze_before_anything_is_staged(tmp_path, monkeypatch):
    host = at_host(tmp_path, monkeypatch)
    with pytest.raises(refusals.Refusal) as info:
        host.freeze(stats_check=False)
    message = refused(info, 'exec_argv0_prefix', 'MTProxy.service')
    assert "'@' prefix" in message and 'mtproxy_cutover_method=symlink' in message
    assert host.state_files() == []


def test_exec_at_prefix_release_directory_is_beside_the_program_not_at_the_root(tmp_path, monkeypatch):
    # The symlink method keeps the command line (argv[0] included) and proves the binary by /proc/PID/exe.
    host = at_host(tmp_path, monkeypatch)
    result = host.freeze(method='symlink', stats_check=False)
    manifest = json.loads((tmp_path / 'state' / 'MTProxy' / 'manifest.json').read_text())
    assert result['status'] == 'frozen' and manifest['argv'][0] == 'mtproto-proxy'
    # The stage role puts releases in <dir of binary_realpath>/releases: never '/releases'.
    assert manifest['binary_realpath'] == os.path.realpath(host.sub(AT_PROGRAM))


# ---------------------------------------------------------------------------------------------
# exec-plus-prefix-user: User=mtproxy with ExecStart=+... (the proxy runs as root)
# ---------------------------------------------------------------------------------------------

PLUS_LIVE = ('/opt/MTProxy/objs/bin/mtproto-proxy -u nobody -p 8888 --http-stats -H 443 -S '
             '0123456789abcdef0123456789abcdef --aes-pwd proxy-secret proxy-multi.conf -M 1').split()
SERVICE_SHOW = ('User=mtproxy\nGroup=mtproxy\nSupplementaryGroups=\nDynamicUser=no\nLimitNOFILE=524288\n'
                'LimitNOFILESoft=1024\nAmbientCapabilities=cap_net_bind_service\nNoNewPrivileges=yes\n'
                'ProtectSystem=full\nProtectHome=no\n')


def candidate_command(tmp_path, monkeypatch, case, unit_file, live):
    """The systemd-run command of a pre-warm of the frozen case, with `systemctl show` answering SERVICE_SHOW."""
    host = FieldHost(tmp_path, monkeypatch, case, unit_file, live, user='mtproxy')
    host.freeze(stats_check=False)
    go = tmp_path / 'mtproto-proxy-go'
    go.write_text('#!/bin/sh\n')
    go.chmod(0o755)
    monkeypatch.setattr(process, 'run', lambda argv, timeout=60, text=None: (0, SERVICE_SHOW, ''))
    candidate = runtime_for(StateDir(str(tmp_path / 'state'), 'MTProxy')).candidate('prewarm')
    candidate.prepare(str(go))
    command = candidate.command()
    return command[:command.index('--')]


def test_exec_plus_prefix_prewarm_runs_with_the_privileges_of_the_command_not_of_user(tmp_path, monkeypatch):
    properties = candidate_command(tmp_path, monkeypatch, 'exec-plus-prefix-user', 'MTProxy.service', PLUS_LIVE)
    # '+': full privileges; no User=, no capability or sandboxing settings; the limits still apply.
    assert not [p for p in properties if p.startswith(('--property=User=', '--property=Group=',
                                                       '--property=NoNewPrivileges', '--property=ProtectSystem',
                                                       '--property=AmbientCapabilities'))]
    assert '--property=LimitNOFILE=1024:524288' in properties


@pytest.mark.parametrize('prefix, credentials, sandbox', [('', True, True), ('+', False, False), ('!', False, True),
                                                          ('-', True, True), ('!!', False, True)])
def test_a_candidate_gets_what_each_exec_prefix_grants(prefix, credentials, sandbox):
    show = dict(line.split('=', 1) for line in SERVICE_SHOW.splitlines())
    properties = sysrt.service_properties(show, prefix)
    assert ('--property=User=mtproxy' in properties) is credentials
    assert ('--property=Group=mtproxy' in properties) is credentials
    assert ('--property=ProtectSystem=full' in properties) is sandbox
    assert ('--property=AmbientCapabilities=cap_net_bind_service' in properties) is sandbox
    assert '--property=LimitNOFILE=1024:524288' in properties
    assert not [p for p in properties if p.startswith(('--property=DynamicUser', '--property=SupplementaryGroups'))]


# ---------------------------------------------------------------------------------------------
# template-instance: mtproxy@eu\x2d1.service, an instance of mtproxy@.service
# ---------------------------------------------------------------------------------------------

def test_template_instance_candidates_are_never_instances_of_the_template():
    for service in ('mtproxy@eu\\x2d1.service', 'mtproxy@eu\\x2d1', 'mtproxy@.service'):
        for role in ('prewarm', 'bridge'):
            name = sysrt.candidate_unit(service, role)
            assert '@' not in name and name.endswith('-%s.service' % role), name


def test_a_candidate_name_taken_by_a_unit_of_the_host_is_refused_not_stopped(tmp_path, monkeypatch):
    state = tmp_path / 'state' / 'MTProxy'
    state.mkdir(parents=True)
    (state / 'manifest.json').write_text(json.dumps({'argv': PLUS_LIVE, 'unit': {}, 'unit_name': 'MTProxy.service'}))
    calls = []

    def run(argv, timeout=60, text=None):
        calls.append(argv)
        if argv[:2] == ['systemctl', 'show'] and argv[2] == 'MTProxy-prewarm.service':
            return 0, 'LoadState=loaded\nTransient=no\nFragmentPath=/etc/systemd/system/MTProxy-prewarm.service\n', ''
        return 0, '', ''
    monkeypatch.setattr(process, 'run', run)
    go = tmp_path / 'go'
    go.write_text('#!/bin/sh\n')
    go.chmod(0o755)
    candidate = runtime_for(StateDir(str(tmp_path / 'state'), 'MTProxy')).candidate('prewarm')
    candidate.prepare(str(go))
    with pytest.raises(PrewarmError, match='MTProxy-prewarm.service is taken by a unit of the host'):
        candidate.start()
    assert not [argv for argv in calls if argv[:2] in (['systemctl', 'stop'], ['systemd-run', '--quiet'])]
