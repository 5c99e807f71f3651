"""mtproxy_exit_semantics on a systemd host: each case provoked on C and Go ends as measured on the real
builds (exit_semantics.MEASURED, tests/fixtures/real-stats/README.md), and the comparison follows.

The stand-in, or the real builds MTPROXY_C_BINARY / MTPROXY_GO_BINARY name (systemd_host.install_proxies).
"""
import pytest
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import exit_semantics as es
from systemd_host import ModuleHost, boot_host, cap_connections, install_proxies, sh, start_vendor_service

pytestmark = pytest.mark.slow

SECRET = '00112233445566778899aabbccddeeff'
C_BIN = '/opt/MTProxy/mtproto-proxy'
GO_BIN = '/opt/MTProxy/releases/go-test/mtproto-proxy-go'
EXEC_START = cap_connections('%s -u nobody -p 8888 --http-stats -H 443 -S %s --aes-pwd proxy-secret proxy-multi.conf '
                             '-M 1' % (C_BIN, SECRET))
LEFT = ('systemctl list-units --all --no-legend "MTProxy-*" | wc -l; '
        'test -e /run/mtproxy-cutover/exit-check && echo scratch-left || true')


@pytest.fixture(scope='module')
def host():
    with boot_host('mtpx-exit', sysctls=['net.ipv4.ip_unprivileged_port_start=1024']) as (name, workdir):
        install_proxies(name, C_BIN, GO_BIN)
        start_vendor_service(name, EXEC_START, 'aes-secret-for-the-exit-semantics-tests-32+\n')
        frozen = ModuleHost(name, workdir, secrets=(SECRET,))
        result = frozen.module('mtproxy_freeze', {})
        assert not result.get('failed'), result.get('msg')
        yield frozen


def expected(flavour):
    return dict((case, outcome.as_dict()) for case, outcome in es.measured(flavour, workers=1).items())


def test_each_case_ends_as_measured_and_the_two_differences_warn(host):
    result = host.module('mtproxy_exit_semantics', {'binary': GO_BIN, 'case_timeout': 2})
    assert not result.get('failed'), result.get('msg')
    assert result['c'] == expected('c') and result['go'] == expected('go')
    assert result['verdict'] == 'warn' and result['refusals'] == []
    levels = dict((entry['case'], (entry['verdict'], entry['level'])) for entry in result['cases'])
    assert levels.pop('stats_port_busy') == ('differs', 'warn')
    assert levels.pop('config_unreadable') == ('equivalent', 'warn')
    assert set(levels.values()) == {('same', 'ok')}
    assert any('keeps running' in warning for warning in result['warnings_found'])
    assert sh(host.name, LEFT).split() == ['0']


def test_a_difference_made_to_refuse_fails_naming_it(host):
    result = host.module('mtproxy_exit_semantics', {'binary': GO_BIN, 'case_timeout': 2,
                                                    'levels': {'stats_port_busy': 'refuse'},
                                                    'privilege_drop': 'service'})
    assert result.get('failed') and result['verdict'] == 'refuse', result
    assert 'the stats port (-p) that another socket listens on' in result['msg']
    assert 'mtproxy_cutover_exit_semantics=warn' in result['msg']
    # Run as the drop-in runs it (nobody, CAP_NET_BIND_SERVICE), Go ends the same way.
    assert result['go'] == expected('go')
    assert sh(host.name, LEFT).split() == ['0']


def test_a_bad_level_is_refused_before_anything_runs(host):
    result = host.module('mtproxy_exit_semantics', {'binary': GO_BIN, 'levels': {'sigterm': 'ignore'}})
    assert result.get('failed') and 'levels' in result['msg'] and 'sigterm=ignore' in result['msg']


def test_warn_only_turns_a_refusal_into_a_warning(host):
    result = host.module('mtproxy_exit_semantics', {'binary': GO_BIN, 'case_timeout': 2, 'warn_only': True,
                                                    'levels': {'stats_port_busy': 'refuse'}})
    assert not result.get('failed'), result.get('msg')
    assert result['verdict'] == 'warn' and result['refusals'] == []
