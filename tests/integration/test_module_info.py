"""mtproxy_info run by ansible-core against a systemd container: what the service runs, proven.

The host gets the C binary and a Go release (the stand-in, or the real builds of MTPROXY_C_BINARY /
MTPROXY_GO_BINARY), a vendor MTProxy.service and a freeze manifest written by the test; mtproxy_switch
moves it to Go. Tests run in file order against one container: frozen on C, on Go, the unit stopped, a
service never frozen.
"""
import json

import pytest
from systemd_host import ModuleHost, boot_host, sh

from test_module_switch_prewarm import C_BIN, GO_BIN, SECRET, STATE_DIR, _install, _standin_missing

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def host():
    if _standin_missing():
        pytest.skip(_standin_missing())
    with boot_host('mtpx-info') as (name, workdir):
        _install(name)
        yield ModuleHost(name, workdir, secrets=(SECRET,))


def _info(host, **args):
    result = host.module('mtproxy_info', args)
    assert not result.get('failed'), result.get('msg')
    assert result['changed'] is False
    return result


def test_frozen_c_is_c(host):
    result = _info(host)
    assert (result['running'], result['binary'], result['argv_matches'], result['stats_flavor']) == ('c', C_BIN, True, 'c')
    assert result['frozen'] is True and result['recorded'] is None and result['reason'] is None
    assert result['main_pid'] == int(sh(host.name, 'systemctl show -p MainPID --value MTProxy.service').strip())


def test_after_the_flip_it_is_go_and_check_mode_says_the_same(host):
    switched = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN})
    assert not switched.get('failed'), switched.get('msg')
    result = _info(host)
    assert (result['running'], result['binary'], result['recorded'], result['stats_flavor']) == ('go', GO_BIN, 'go', 'go')
    checked = host.module('mtproxy_info', {}, check=True)
    assert checked['running'] == 'go' and checked['changed'] is False
    # Read-only: state.json is as the switch left it.
    assert json.loads(sh(host.name, 'cat %s/MTProxy/state.json' % STATE_DIR))['current'] == 'go'


def test_a_stopped_unit_is_unknown_with_the_reason(host):
    sh(host.name, 'systemctl stop MTProxy.service')
    try:
        result = _info(host)
        assert result['running'] == 'unknown' and result['recorded'] == 'go'
        assert result['reason'].startswith('the unit is not active: MTProxy.service is inactive/dead'), result['reason']
    finally:
        sh(host.name, 'systemctl start MTProxy.service')


def test_a_service_never_frozen_is_unknown_and_not_frozen(host):
    result = _info(host, service='mtproxy-other')
    assert (result['running'], result['frozen']) == ('unknown', False)
    assert result['reason'].startswith('never frozen: there is no freeze manifest at %s/mtproxy-other/' % STATE_DIR)
