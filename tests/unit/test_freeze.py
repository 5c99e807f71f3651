"""The freeze's decision table (module_utils/freeze.py) for every pointing method and both flavours.

A host is laid out under tmp_path: a vendor unit whose ExecStart names the proxy's path (for the
symlink method a link to the C release), the files its flags name, and a fake ``systemctl show``;
the live argv is what /proc would show. The flip is done the way each method does it (pointing.py)
and recorded in state.json the way mtproxy_switch records it.
"""
import json
import os

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import freeze as fz
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime import systemd as sysrt
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime import pointing as pt
SECRET = '00112233445566778899aabbccddeeff'
FLAGS = ['-u', 'nobody', '-p', '8888', '-H', '443', '-S', SECRET, '--aes-pwd', 'proxy-secret', 'proxy-multi.conf',
         '-M', '1']
METHODS = ['dropin', 'symlink']


class Host(object):
    """One proxy host on C, laid out for ``method``; ``flip()`` puts it on Go the method's way."""

    def __init__(self, tmp_path, monkeypatch, method):
        self.method = method
        self.opt = tmp_path / 'opt'
        self.opt.mkdir()
        for name in ('proxy-secret', 'proxy-multi.conf'):
            (self.opt / name).write_text('%s\n' % name)
        self.program = str(self.opt / 'mtproto-proxy')
        self.c_release = self.opt / 'releases' / 'c-1' / 'mtproto-proxy'
        self.c_release.parent.mkdir(parents=True)
        self.c_release.write_text('C binary\n')
        self.c_release.chmod(0o755)
        if method == 'symlink':
            os.symlink(str(self.c_release), self.program)
        else:
            os.rename(str(self.c_release), self.program)
        self.go = self.opt / 'releases' / 'go-0123456789ab' / 'mtproto-proxy-go'
        self.go.parent.mkdir(parents=True)
        self.go.write_text('Go binary\n')
        self.go.chmod(0o755)
        self.unit_dir = tmp_path / 'etc' / 'systemd' / 'system'
        self.unit_dir.mkdir(parents=True)
        self.fragment = self.unit_dir / 'MTProxy.service'
        self.fragment.write_text('[Service]\nWorkingDirectory=%s\nExecStart=%s %s\n'
                                 % (self.opt, self.program, ' '.join(FLAGS)))
        self.drop_ins = []
        self.live_argv = [self.program] + FLAGS
        self.state_dir = str(tmp_path / 'state')
        monkeypatch.setattr(sysrt, 'read_live_cmdline', lambda pid: list(self.live_argv))

    def run_command(self, cmd):
        assert cmd[:2] == ['systemctl', 'show'], cmd
        return 0, '\n'.join([
            'LoadState=loaded', 'ActiveState=active', 'SubState=running', 'MainPID=4242',
            'ExecMainStartTimestampMonotonic=0', 'FragmentPath=%s' % self.fragment,
            'DropInPaths=%s' % ' '.join(self.drop_ins), 'User=', 'Group=', 'WorkingDirectory=%s' % self.opt,
            'Environment=', 'NeedDaemonReload=no', 'Type=simple', 'Names=MTProxy.service']) + '\n', ''

    def freeze(self, method=None, **params):
        options = dict(service='MTProxy', state_dir=self.state_dir, refreeze=False, go_binaries=[],
                       stats_check=False, method=self.method if method is None else method,
                       allow_no_baseline=False, baseline_samples=0, baseline_interval=0.0)
        options.update(params)
        return fz.freeze_host(options, self.run_command, False, '2026-01-01T00:00:00Z', [])

    def manifest(self):
        with open(os.path.join(self.state_dir, 'MTProxy', 'manifest.json')) as handle:
            return json.load(handle)

    def flip(self):
        """Point the unit at Go the way mtproxy_switch does with this method, and record it in state.json."""
        previous_good = {'flavor': 'c', 'binary': self.program}
        if self.method == 'symlink':
            os.unlink(self.program)
            os.symlink(str(self.go), self.program)
            previous_good['link_target'] = str(self.c_release)
        else:
            dropin = self.unit_dir / 'MTProxy.service.d' / '99-mtproxy-cutover.conf'
            dropin.parent.mkdir()
            dropin.write_text('[Service]\nExecStart=\nExecStart=%s %s\n' % (self.go, ' '.join(FLAGS)))
            self.drop_ins = [str(dropin)]
            self.live_argv = [str(self.go)] + FLAGS
        state = {'schema': 1, 'current': 'go', 'binary': str(self.go), 'method': self.method,
                 'previous_good': previous_good, 'history': []}
        with open(os.path.join(self.state_dir, 'MTProxy', 'state.json'), 'w') as handle:
            json.dump(state, handle)

    def drift(self):
        (self.opt / 'proxy-multi.conf').write_text('changed backends\n')


@pytest.fixture(params=METHODS)
def host(request, tmp_path, monkeypatch):
    return Host(tmp_path, monkeypatch, request.param)


# --- on C -----------------------------------------------------------------------------------------

def test_first_freeze_on_c_is_frozen(host):
    result = host.freeze()
    assert (result['status'], result['current'], result['changed']) == ('frozen', 'c', True)
    assert result['method'] == host.method
    assert host.manifest()['argv'] == [host.program] + FLAGS
    assert host.manifest()['binary_realpath'] == os.path.realpath(host.program)


def test_c_seen_again_is_unchanged(host):
    host.freeze()
    result = host.freeze()
    assert (result['status'], result['current'], result['changed'], result['drift']) == ('unchanged', 'c', False, [])


def test_c_drift_stops_the_freeze_and_refreeze_rewrites_it(host):
    host.freeze()
    host.drift()
    with pytest.raises(fz.FreezeError, match='drifted') as excinfo:
        host.freeze()
    assert [entry['field'] for entry in excinfo.value.details['drift']] == ['files[config]']
    result = host.freeze(refreeze=True)
    assert (result['status'], result['current'], result['changed']) == ('refrozen', 'c', True)


def test_a_refreshed_backend_config_names_the_change_and_the_ways_forward(host):
    # The daily-config-refresh field case: proxy-multi.conf rewritten at the same path.
    host.freeze()
    host.drift()
    with pytest.raises(fz.FreezeError) as excinfo:
        host.freeze()
    message = str(excinfo.value)
    assert 'files[config]' in message and 'content changed, same path' in message
    assert 'mtproxy_cutover_refreeze=true' in message and 'mtproxy_cutover_accept_refresh=[config]' in message
    before = host.manifest()
    warnings = []
    result = fz.freeze_host(dict(service='MTProxy', state_dir=host.state_dir, refreeze=False, go_binaries=[],
                                 stats_check=False, method=host.method, allow_no_baseline=False, baseline_samples=0,
                                 baseline_interval=0.0, accept_refresh=['config']),
                            host.run_command, False, '2026-01-02T00:00:00Z', warnings)
    assert (result['status'], result['current'], result['changed']) == ('refreshed', 'c', True)
    assert any('accepted a refreshed config' in w for w in warnings)
    after = host.manifest()
    assert after['argv'] == before['argv'] and after['frozen_at'] == before['frozen_at']
    assert [e['sha256'] for e in after['files'] if e['role'] == 'config'] != \
        [e['sha256'] for e in before['files'] if e['role'] == 'config']
    assert host.freeze()['status'] == 'unchanged'


def test_only_a_content_change_of_the_config_is_accepted_as_a_refresh(host):
    host.freeze()
    (host.opt / 'proxy-secret').write_text('another aes-pwd\n')
    with pytest.raises(fz.FreezeError, match='files\\[aes_pwd\\]') as excinfo:
        host.freeze(accept_refresh=['config'])
    assert 'accept_refresh' not in str(excinfo.value)


# --- on Go ----------------------------------------------------------------------------------------

def test_host_on_go_is_recognised_and_unchanged(host):
    """Symlink fault (a): after a symlink flip the second freeze said binary_realpath, binary_sha256 drifted."""
    host.freeze()
    frozen = host.manifest()
    host.flip()
    result = host.freeze()
    assert (result['status'], result['current'], result['changed'], result['drift']) == ('unchanged', 'go', False, [])
    assert host.manifest() == frozen


def test_host_on_go_with_drift_is_refused_and_never_refrozen(host):
    host.freeze()
    host.flip()
    host.drift()
    with pytest.raises(fz.FreezeError, match='drifted'):
        host.freeze()
    with pytest.raises(fz.FreezeError, match='refusing to re-freeze .* while it runs the Go binary'):
        host.freeze(refreeze=True)


def test_host_on_go_with_a_refreshed_config_says_how_to_go_on_and_can_accept_it(host):
    host.freeze()
    host.flip()
    host.drift()
    with pytest.raises(fz.FreezeError, match='roll the host back') as excinfo:
        host.freeze()
    assert 'mtproxy_cutover_accept_refresh=[config]' in str(excinfo.value)
    result = host.freeze(accept_refresh=['config'])
    assert (result['status'], result['current']) == ('refreshed', 'go')
    assert host.freeze()['status'] == 'unchanged'


def test_host_on_go_checks_the_c_binary_where_the_method_left_it(host):
    host.freeze()
    host.flip()
    c_binary = host.program if host.method == 'dropin' else str(host.c_release)
    with open(c_binary, 'w') as handle:
        handle.write('another C build\n')
    with pytest.raises(fz.FreezeError, match='binary_sha256'):
        host.freeze()


def test_first_freeze_of_a_go_binary_is_refused(host):
    host.live_argv = [str(host.go)] + FLAGS
    host.fragment.write_text('[Service]\nExecStart=%s %s\n' % (host.go, ' '.join(FLAGS)))
    with pytest.raises(fz.FreezeError, match='not running the C binary'):
        host.freeze(go_binaries=[str(host.go)])


def test_on_go_the_recorded_method_decides_and_a_contradicting_one_is_refused(host):
    host.freeze()
    host.flip()
    assert host.freeze(method=None)['method'] == host.method
    other = [m for m in METHODS if m != host.method][0]
    with pytest.raises(fz.FreezeError, match='method=%s \\(state.json\\)' % host.method):
        host.freeze(method=other)


# --- the pure table -------------------------------------------------------------------------------

@pytest.mark.parametrize('frozen, flipped, state, cutover, is_go, refreeze, drifted, want', [
    (None, False, {}, False, False, False, False, 'frozen'),
    (None, False, {}, True, False, False, False, 'not running the C binary'),
    (None, False, {}, False, True, False, False, 'not running the C binary'),
    ('m', False, {}, False, False, False, False, 'unchanged'),
    ('m', False, {}, False, False, False, True, 'drifted'),
    ('m', False, {}, False, False, True, True, 'refrozen'),
    ('m', True, {'current': 'go'}, True, False, False, False, 'unchanged'),
    ('m', True, {'current': 'go'}, False, False, True, True, 'refusing to re-freeze'),
    ('m', False, {'current': 'go'}, False, False, True, True, 'refusing to re-freeze'),
    ('m', False, {}, True, False, True, True, 'refusing to re-freeze'),
])
def test_decide(frozen, flipped, state, cutover, is_go, refreeze, drifted, want):
    document = {'schema': 1, 'argv': ['/c'] + FLAGS, 'files': []}
    live = dict(document, files=[{'role': 'config', 'path': 'x', 'sha256': 'new'}] if drifted else [])
    args = (document if frozen else None, live, flipped, state, cutover, is_go, refreeze, 'MTProxy.service', '/m')
    if want in ('frozen', 'unchanged', 'refrozen'):
        assert fz.decide(*args)[0] == want
    else:
        with pytest.raises(fz.FreezeError, match=want):
            fz.decide(*args)


def test_every_pointing_method_is_in_the_table():
    assert sorted(pt.METHODS) == METHODS
