"""pointing.py: the method is read back from state.json; each method's facts; the rollback of a symlink host."""
import json
import os

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime import pointing as pt
from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import CutoverError, SwitchError
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.choice import runtime_class
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.container import ContainerRuntime
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.systemd import SystemdRuntime
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import switch as flow
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime import systemd as sysrt

SECRET = '00112233445566778899aabbccddeeff'
FLAGS = ['-u', 'nobody', '-p', '8888', '-H', '443', '-S', SECRET, '--aes-pwd', 'proxy-secret', 'proxy-multi.conf',
         '-M', '1']


class FakeSystemd(object):
    """A unit with no live main process: check mode stops before anything would be restarted."""

    unit = 'MTProxy.service'

    def show(self, *props):
        return {'ActiveState': 'active', 'MainPID': '0', 'NeedDaemonReload': 'no'}

    def main_pid(self):
        return 0

    def daemon_reload(self):
        raise AssertionError('daemon-reload must not run')


@pytest.fixture
def symlink_host_on_go(tmp_path, monkeypatch):
    """A host flipped to Go with method=symlink: the ExecStart path links to the Go release."""
    link = tmp_path / 'mtproto-proxy'
    c_release = tmp_path / 'releases' / 'c-1' / 'mtproto-proxy'
    go = tmp_path / 'releases' / 'go-1' / 'mtproto-proxy-go'
    for path in (c_release, go):
        path.parent.mkdir(parents=True)
        path.write_text('#!/bin/sh\n')
        path.chmod(0o755)
    os.symlink(str(go), str(link))
    manifest = {'service': 'MTProxy', 'unit_name': 'MTProxy.service', 'binary': str(link),
                'binary_realpath': str(c_release), 'argv': [str(link)] + FLAGS, 'stats_port': 8888,
                'client_ports': [443],
                'unit': {'fragment_path': str(tmp_path / 'MTProxy.service'),
                         'exec_start': '%s %s' % (link, ' '.join(FLAGS)), 'exec_start_argv': [str(link)] + FLAGS}}
    state = {'schema': 1, 'current': 'go', 'binary': str(go), 'method': 'symlink',
             'previous_good': {'flavor': 'c', 'binary': str(link), 'link_target': str(c_release)},
             'history': [{'to': 'go', 'method': 'symlink', 'binary': str(go), 'result': 'ok'}]}
    state_dir = tmp_path / 'state'
    (state_dir / 'MTProxy').mkdir(parents=True)
    (state_dir / 'MTProxy' / 'manifest.json').write_text(json.dumps(manifest))
    (state_dir / 'MTProxy' / 'state.json').write_text(json.dumps(state))
    monkeypatch.setattr(sysrt, 'Systemd', lambda unit: FakeSystemd())
    return {'state_dir': str(state_dir), 'link': str(link), 'c_release': str(c_release), 'go': str(go),
            'systemd_dir': str(tmp_path / 'etc')}


def test_rollback_without_a_method_points_back_the_way_state_json_records(symlink_host_on_go):
    """Symlink fault (b): without a method the rollback took method=dropin and left the link on Go."""
    host = symlink_host_on_go
    result = flow.switch_service('MTProxy', host['state_dir'], 'c', check_mode=True,
                                 systemd_dir=host['systemd_dir'])
    assert result['method'] == 'symlink'
    assert result['changed'] is True and result['dropin_path'] is None
    assert result['diff']['after'] == '%s -> %s\n' % (host['link'], host['c_release'])
    assert os.readlink(host['link']) == host['go']  # check mode


def test_rollback_refuses_a_method_that_contradicts_state_json(symlink_host_on_go):
    host = symlink_host_on_go
    with pytest.raises(SwitchError, match=r'pointed at go with method=symlink \(state.json\); method=dropin') as exc:
        flow.switch_service('MTProxy', host['state_dir'], 'c', method='dropin', check_mode=True,
                            systemd_dir=host['systemd_dir'])
    assert exc.value.details['refused'] == 'method_mismatch'
    assert os.readlink(host['link']) == host['go']
    assert not os.path.exists(host['systemd_dir'])


@pytest.mark.parametrize('state, target, requested, want', [
    (None, 'go', None, 'dropin'),
    (None, 'go', 'symlink', 'symlink'),
    (None, 'c', None, 'dropin'),
    ({'current': 'go', 'method': 'symlink'}, 'c', None, 'symlink'),
    ({'current': 'go', 'method': 'symlink'}, 'go', None, 'symlink'),
    ({'current': 'go', 'method': 'symlink'}, None, None, 'symlink'),
    ({'current': 'c', 'method': 'symlink'}, 'c', None, 'symlink'),
    # Back on C, the next flip may use another method.
    ({'current': 'c', 'method': 'symlink'}, 'go', 'dropin', 'dropin'),
    ({'current': 'c', 'method': 'symlink'}, None, 'dropin', 'dropin'),
])
def test_method_of_reads_the_recorded_method(state, target, requested, want):
    assert pt.method_of(state, target, requested) == want


@pytest.mark.parametrize('state, target, requested', [
    ({'current': 'go', 'method': 'symlink'}, 'c', 'dropin'),
    ({'current': 'go', 'method': 'dropin'}, 'go', 'symlink'),
    ({'current': 'go', 'method': 'dropin'}, None, 'symlink'),
    ({'current': 'c', 'method': 'dropin'}, 'c', 'symlink'),
])
def test_method_of_refuses_a_contradiction(state, target, requested):
    with pytest.raises(SwitchError, match='contradicts it') as exc:
        pt.method_of(state, target, requested)
    assert exc.value.details['refused'] == 'method_mismatch'


def test_method_of_refuses_unknown_methods():
    with pytest.raises(SwitchError, match='method must be one of dropin, symlink'):
        pt.method_of(None, 'go', 'podman-quadlet')
    with pytest.raises(SwitchError, match='does not know'):
        pt.method_of({'current': 'go', 'method': 'quadlet'}, 'c')


def test_the_runtime_is_the_one_the_frozen_state_records():
    unit_manifest, container_manifest = {'argv': ['/c']}, {'argv': ['/c'], 'method': 'container'}
    assert runtime_class(unit_manifest, None) is SystemdRuntime
    assert runtime_class(container_manifest, None) is ContainerRuntime
    assert runtime_class(None, {'current': 'go', 'method': 'container'}) is ContainerRuntime
    assert runtime_class(None, None, 'container') is ContainerRuntime and runtime_class(None, None) is SystemdRuntime
    assert runtime_class(unit_manifest, {'current': 'go', 'method': 'symlink'}, 'symlink') is SystemdRuntime
    for manifest, state, requested in ((unit_manifest, None, 'container'), (container_manifest, None, 'dropin'),
                                       (None, {'current': 'go', 'method': 'dropin'}, 'container')):
        with pytest.raises(CutoverError, match='method=%s contradicts' % requested) as info:
            runtime_class(manifest, state, requested)
        assert info.value.details['refused'] == 'method_mismatch'
    with pytest.raises(CutoverError, match='does not know'):
        runtime_class({'argv': ['/c'], 'method': 'quadlet'}, None)


def test_symlink_pointing_back_and_forth(symlink_host_on_go):
    host = symlink_host_on_go
    with open(os.path.join(host['state_dir'], 'MTProxy', 'manifest.json')) as handle:
        manifest = json.load(handle)
    state = {'current': 'go', 'method': 'symlink', 'binary': host['go'],
             'previous_good': {'link_target': host['c_release']}}
    back = pt.pointing_for(manifest, state, 'c', manifest['argv'][0])
    assert isinstance(back, pt.Symlink) and not back.ok and back.dropin_path is None
    assert back.expected_argv() == manifest['argv'] and back.exec_path() == host['link']
    assert pt.Symlink.runs_go(manifest, state, manifest['argv'], from_cutover=False)
    assert pt.Symlink.c_binary(manifest, state) == host['c_release']
    back.apply()
    assert os.readlink(host['link']) == host['c_release']
    assert pt.pointing_for(manifest, state, 'c', manifest['argv'][0]).ok
    assert not pt.Symlink.runs_go(manifest, state, manifest['argv'], from_cutover=False)
    back.revert()
    assert os.readlink(host['link']) == host['go']


def test_symlink_proof_reads_the_program_a_process_runs_and_stands_on_argv_when_it_cannot(
        symlink_host_on_go, tmp_path, monkeypatch):
    # On the real C after -u nobody, /proc/PID/exe is unreadable without CAP_SYS_PTRACE (the test
    # hosts): the rollback was failed with "process N runs None" although C was back.
    host = symlink_host_on_go
    with open(host['c_release'], 'wb') as handle:
        handle.write(b'\x7fELF not a script')
    with open(os.path.join(host['state_dir'], 'MTProxy', 'manifest.json')) as handle:
        manifest = json.load(handle)
    state = {'current': 'go', 'method': 'symlink', 'binary': host['go'],
             'previous_good': {'link_target': host['c_release']}}
    back = pt.pointing_for(manifest, state, 'c', manifest['argv'][0])
    back.apply()
    monkeypatch.setattr(pt, 'proc_exe', lambda pid: None)
    assert back.exe_mismatch(1234) is None
    monkeypatch.setattr(pt, 'proc_exe', lambda pid: host['go'])
    assert back.exe_mismatch(1234) == 'process 1234 runs %s, expected %s' % (host['go'], host['c_release'])
    monkeypatch.setattr(pt, 'proc_exe', lambda pid: host['c_release'])
    assert back.exe_mismatch(1234) is None
