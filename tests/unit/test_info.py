"""mtproxy_info: what a service runs now, proven from unit, /proc and /stats (host readers faked)."""
import contextlib
import json
import os

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import info, proof
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import container_proc as container_host
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import netns, proc
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime import container as ctr
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime import pointing as pt
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime import systemd as sysrt
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo import judge
from ansible_collections.mtproxy.cutover.plugins.module_utils._state import StateDir, transition
from stats_fixtures import capture

SECRET = '00112233445566778899aabbccddeeff'
C_BIN = '/opt/MTProxy/mtproto-proxy'
GO = '/opt/MTProxy/releases/go-0123456789ab/mtproto-proxy-go'
OLD_GO = '/opt/MTProxy/releases/go-ba9876543210/mtproto-proxy-go'
C_ARGV = [C_BIN, '-u', 'nobody', '-p', '8888', '--http-stats', '-H', '443', '-S', SECRET,
          '--aes-pwd', 'proxy-secret', 'proxy-multi.conf', '-M', '1']
STATS_URL = 'http://127.0.0.1:8888/stats'
C_IMAGE = 'sha256:' + 'c' * 64
GO_IMAGE = 'sha256:' + 'a' * 64
PID = 4242


def manifest(argv=None, **overrides):
    argv = list(argv or C_ARGV)
    data = {'service': 'MTProxy', 'unit_name': 'MTProxy.service', 'binary': argv[0], 'binary_realpath': argv[0],
            'argv': list(argv), 'stats_port': 8888, 'client_ports': [443], 'stats_url': STATS_URL,
            'unit': {'fragment_path': '/lib/systemd/system/MTProxy.service', 'exec_start': ' '.join(argv),
                     'exec_start_argv': list(argv), 'working_directory': '/opt/MTProxy'}}
    data.update(overrides)
    return data


class FakeSystemd(object):
    def __init__(self, props):
        self.props = props
        self.unit = 'MTProxy.service'

    def show(self, *props):
        return dict(self.props)


class Host(object):
    """A state directory, a unit in ``props`` and a main process whose argv is ``argv``."""

    def __init__(self, tmp_path, monkeypatch, the_manifest=None, state=None, argv=None, body='c-M1-idle-start.txt',
                 props=None):
        self.state_dir = str(tmp_path / 'state')
        self.systemd_dir = str(tmp_path / 'etc')
        os.makedirs(os.path.join(self.state_dir, 'MTProxy'))
        if the_manifest is not False:
            with open(os.path.join(self.state_dir, 'MTProxy', 'manifest.json'), 'w') as handle:
                json.dump(the_manifest or manifest(), handle)
        if state:
            StateDir(self.state_dir, 'MTProxy').save_state(state)
        self.scraped = []
        props = props or {'Id': 'MTProxy.service', 'ActiveState': 'active', 'SubState': 'running', 'MainPID': str(PID)}
        monkeypatch.setattr(sysrt, 'Systemd', lambda unit: FakeSystemd(props))
        live = list(argv if argv is not None else C_ARGV)
        monkeypatch.setattr(proc, 'read_cmdline_after_exec',
                            lambda pid: (live, os.path.basename(live[0])) if pid == PID and live else (None, None))
        monkeypatch.setattr(proof, 'take_sample',
                            lambda url: self.scraped.append(url) or judge.sample_from_body(capture(body), 0.0))

    def info(self, **options):
        result = info.service_info('MTProxy', self.state_dir, systemd_dir=self.systemd_dir, timeout=0.3, **options)
        assert SECRET not in json.dumps(result)
        return result


def on_go(binary=GO, method='dropin', history=()):
    state = transition(None, manifest(), 'go', binary, method, None, 'T')
    state['history'] = list(history) + state['history']
    return state


def test_a_host_never_frozen_is_unknown_and_says_so(tmp_path, monkeypatch):
    result = Host(tmp_path, monkeypatch, the_manifest=False).info()
    assert result['running'] == 'unknown' and result['frozen'] is False
    assert result['reason'].startswith('never frozen: there is no freeze manifest at %s/MTProxy/manifest.json'
                                       % (tmp_path / 'state'))


def test_c_with_the_frozen_argv_and_a_c_stats_page_is_c(tmp_path, monkeypatch):
    probe = Host(tmp_path, monkeypatch)
    result = probe.info()
    assert (result['running'], result['binary'], result['argv_matches'], result['stats_flavor']) == (
        'c', C_BIN, True, 'c')
    assert result['frozen'] is True and result['recorded'] is None and result['reason'] is None
    assert result['method'] == 'dropin' and result['main_pid'] == PID and probe.scraped == [STATS_URL]


def test_go_release_of_state_json_with_a_go_stats_page_is_go(tmp_path, monkeypatch):
    pt.write_dropin(pt.dropin_path('MTProxy.service', str(tmp_path / 'etc')), pt.render_dropin(' '.join(C_ARGV), GO),
                    0o600)
    result = Host(tmp_path, monkeypatch, state=on_go(), argv=[GO] + C_ARGV[1:], body='go-M1-idle-start.txt').info()
    assert (result['running'], result['binary'], result['recorded'], result['stats_flavor']) == ('go', GO, 'go', 'go')


def test_c_after_a_rollback_is_c_though_history_names_go(tmp_path, monkeypatch):
    state = transition(on_go(), manifest(), 'c', C_BIN, 'dropin', None, 'T2')
    result = Host(tmp_path, monkeypatch, state=state).info()
    assert (result['running'], result['recorded']) == ('c', 'c')


def test_an_older_go_release_state_json_names_is_still_go(tmp_path, monkeypatch):
    # Switched to OLD_GO, back to C, then someone pointed it at OLD_GO again by hand: still proven Go.
    state = transition(on_go(OLD_GO), manifest(), 'c', C_BIN, 'dropin', None, 'T2')
    pt.write_dropin(pt.dropin_path('MTProxy.service', str(tmp_path / 'etc')),
                    pt.render_dropin(' '.join(C_ARGV), OLD_GO), 0o600)
    result = Host(tmp_path, monkeypatch, state=state, argv=[OLD_GO] + C_ARGV[1:], body='go-M1-idle-start.txt').info()
    assert (result['running'], result['binary'], result['recorded']) == ('go', OLD_GO, 'c')


def test_an_inactive_unit_is_unknown_with_its_state(tmp_path, monkeypatch):
    props = {'Id': 'MTProxy.service', 'ActiveState': 'failed', 'SubState': 'failed', 'MainPID': '0',
             'Result': 'exit-code', 'ExecMainCode': '1', 'ExecMainStatus': '1'}
    result = Host(tmp_path, monkeypatch, props=props).info()
    assert result['running'] == 'unknown' and result['main_pid'] is None
    assert result['reason'] == ('the unit is not active: MTProxy.service is failed/failed, result exit-code, '
                                'main process exited with status 1')


def test_an_argv_that_differs_from_the_freeze_is_unknown_and_named_without_the_secret(tmp_path, monkeypatch):
    live = list(C_ARGV)
    live[live.index('-S') + 1] = 'ffeeddccbbaa99887766554433221100'
    live[live.index('-M') + 1] = '2'
    result = Host(tmp_path, monkeypatch, argv=live).info()
    assert result['running'] == 'unknown' and result['argv_matches'] is False
    assert 'runs neither the frozen C binary nor a Go release state.json names' in result['reason']
    assert 'argv differs at position 9 in a secret value (both redacted)' in result['reason'], result['reason']
    assert 'ffeeddcc' not in json.dumps(result)


def test_an_unknown_program_with_the_frozen_flags_is_unknown(tmp_path, monkeypatch):
    result = Host(tmp_path, monkeypatch, argv=['/usr/local/bin/other-proxy'] + C_ARGV[1:]).info()
    assert result['running'] == 'unknown'
    assert "position 0: expected '%s', live process has '/usr/local/bin/other-proxy'" % C_BIN in result['reason']


def test_stats_answering_as_the_other_binary_is_unknown(tmp_path, monkeypatch):
    result = Host(tmp_path, monkeypatch, body='go-M1-idle-start.txt').info()
    assert result['running'] == 'unknown' and result['stats_flavor'] == 'go'
    assert result['reason'] == 'the argv says C, but /stats answers as the Go binary'


def test_stats_that_never_answer_leave_it_unknown_with_the_cause(tmp_path, monkeypatch):
    probe = Host(tmp_path, monkeypatch)
    monkeypatch.setattr(proof, 'take_sample', lambda url: judge.take_sample('http://127.0.0.1:9/stats', timeout=0.05))
    result = probe.info()
    assert result['running'] == 'unknown' and result['stats_flavor'] is None
    assert result['reason'].startswith('the argv says C, but /stats cannot prove it: '), result['reason']


def test_c_with_ipv6_is_proven_by_argv_alone_and_its_stats_port_never_touched(tmp_path, monkeypatch):
    argv = C_ARGV + ['-6']
    probe = Host(tmp_path, monkeypatch, the_manifest=manifest(argv), argv=argv)
    result = probe.info()
    assert result['running'] == 'c' and probe.scraped == []
    assert 'aborts on any connection to its stats port' in result['stats_skipped']


def test_stats_check_false_is_the_argv_proof_alone(tmp_path, monkeypatch):
    probe = Host(tmp_path, monkeypatch, body='go-M1-idle-start.txt')
    result = probe.info(stats_check=False)
    assert result['running'] == 'c' and probe.scraped == [] and result['stats_skipped']


def test_symlink_method_checks_the_program_the_process_runs(tmp_path, monkeypatch):
    link = tmp_path / 'mtproto-proxy'
    (tmp_path / 'c-release').write_text('c')
    (tmp_path / 'go-release').write_text('go')
    link.symlink_to(tmp_path / 'go-release')
    argv = [str(link)] + C_ARGV[1:]
    state = transition(None, manifest(argv), 'go', str(tmp_path / 'go-release'), 'symlink', None, 'T',
                       extra_previous={'link_target': str(tmp_path / 'c-release')})
    probe = Host(tmp_path, monkeypatch, the_manifest=manifest(argv, binary_realpath=str(tmp_path / 'c-release')),
                 state=state, argv=argv, body='go-M1-idle-start.txt')
    monkeypatch.setattr(pt, 'proc_exe', lambda pid: str(tmp_path / 'go-release'))
    result = probe.info()
    assert result['running'] == 'go', result['reason']
    # The link swapped to Go but the unit not restarted: /proc/PID/exe is still the C release, so C runs.
    monkeypatch.setattr(pt, 'proc_exe', lambda pid: str(tmp_path / 'c-release'))
    result = probe.info()
    assert result['running'] == 'unknown' and result['reason'] == 'the argv says C, but /stats answers as the Go binary'
    monkeypatch.setattr(proof, 'take_sample', lambda url: judge.sample_from_body(capture('c-M1-idle-start.txt'), 0.0))
    assert probe.info()['running'] == 'c'
    # Neither release: named.
    monkeypatch.setattr(pt, 'proc_exe', lambda pid: '/usr/bin/other')
    result = probe.info()
    assert result['running'] == 'unknown' and 'runs /usr/bin/other, expected %s' % (tmp_path / 'go-release') \
        in result['reason'], result['reason']


def test_a_corrupt_state_file_is_unknown_with_the_cause(tmp_path, monkeypatch):
    probe = Host(tmp_path, monkeypatch)
    with open(os.path.join(probe.state_dir, 'MTProxy', 'state.json'), 'w') as handle:
        handle.write('{')
    result = probe.info()
    assert result['running'] == 'unknown' and 'is not valid JSON' in result['reason']


# --- containers --------------------------------------------------------------------------------

class FakeDocker(object):
    def __init__(self, container):
        self.container = container

    def container_or_none(self, name):
        return self.container


def on_container(tmp_path, monkeypatch, container, state=None, argv=None, body='c-M1-idle-start.txt'):
    the_manifest = manifest(method='container', container={'image_id': C_IMAGE, 'image_ref': 'mtproxy:c'})
    probe = Host(tmp_path, monkeypatch, the_manifest=the_manifest, state=state, body=body)
    entered = []

    @contextlib.contextmanager
    def enter(pid):
        entered.append(pid)
        yield

    monkeypatch.setattr(ctr, 'Docker', lambda *args: FakeDocker(container))
    monkeypatch.setattr(container_host, 'proxy_process', lambda pid: (pid + 1, list(argv or C_ARGV)))
    monkeypatch.setattr(container_host, 'netns_pid', lambda docker, live: live['State']['Pid'])
    monkeypatch.setattr(netns, 'entered', enter)
    probe.entered = entered
    return probe


def running(image):
    return {'Image': image, 'State': {'Running': True, 'Status': 'running', 'Pid': 777}}


def test_a_container_on_the_frozen_c_image_is_c_read_in_its_namespace(tmp_path, monkeypatch):
    probe = on_container(tmp_path, monkeypatch, running(C_IMAGE))
    result = probe.info()
    assert (result['running'], result['method'], result['binary']) == ('c', 'container', C_IMAGE)
    assert probe.entered == [777] and probe.scraped == [STATS_URL]


def test_a_container_on_the_go_image_of_state_json_is_go(tmp_path, monkeypatch):
    state = transition(None, manifest(), 'go', GO_IMAGE, 'container', None, 'T')
    result = on_container(tmp_path, monkeypatch, running(GO_IMAGE), state=state, body='go-M1-idle-start.txt').info()
    assert (result['running'], result['binary'], result['recorded']) == ('go', GO_IMAGE, 'go')


@pytest.mark.parametrize('container, argv, reason', [
    (None, None, 'container MTProxy does not exist'),
    ({'Image': C_IMAGE, 'State': {'Running': False, 'Status': 'exited', 'Pid': 0}}, None,
     'container MTProxy is not running (Status=exited)'),
    (running('sha256:' + 'e' * 64), None, 'container MTProxy runs image sha256:eee'),
    (running(C_IMAGE), C_ARGV[:-1] + ['2'], 'the proxy in container MTProxy does not run the frozen argv'),
])
def test_a_container_that_cannot_be_proven_is_unknown(tmp_path, monkeypatch, container, argv, reason):
    result = on_container(tmp_path, monkeypatch, container, argv=argv).info()
    assert result['running'] == 'unknown' and result['reason'].startswith(reason), result['reason']


def test_the_module_states_check_mode_support_and_never_changes():
    import ansible_collections.mtproxy.cutover.plugins.modules.mtproxy_info as module
    assert 'supports_check_mode=True' in open(module.__file__).read()
    assert info.blank('MTProxy', '/x')['changed'] is False


def test_go_binaries_lists_current_first_then_history_once(tmp_path):
    state = {'current': 'go', 'binary': GO, 'history': [
        {'to': 'go', 'binary': OLD_GO}, {'to': 'c', 'binary': C_BIN}, {'to': 'go', 'binary': GO}]}
    assert info.go_binaries(state) == [GO, OLD_GO]
    assert info.go_binaries(dict(state, current='c')) == [GO, OLD_GO]
    assert info.go_binaries(None) == []
