"""Privilege parity (privilege_drop) of mtproxy_freeze, mtproxy_prewarm and mtproxy_switch on a systemd host.

The vendor unit runs C as root with ``-u nobody`` on port 443: C drops to uid 65534, the Go port (and
its stand-in) ignores -u and stays root (tests/fixtures/real-stats/README.md). The freeze keeps C's
identity; ``binary`` refuses such a Go at the pre-warm and after a flip; ``service`` has systemd run it
as nobody with CAP_NET_BIND_SERVICE, proven in /proc; the rollback leaves C as it was. Real builds
through MTPROXY_C_BINARY / MTPROXY_GO_BINARY (systemd_host.install_proxies). Tests run in file order.
"""
import pytest
from systemd_host import ModuleHost, boot_host, cap_connections, install_proxies, main_pid, sh, start_vendor_service

pytestmark = pytest.mark.slow

SECRET = 'fedcba9876543210fedcba9876543210'
C_BIN = '/opt/MTProxy/mtproto-proxy'
GO_BIN = '/opt/MTProxy/releases/go-test/mtproto-proxy-go'
EXEC_START = cap_connections('%s -u nobody -p 8888 --http-stats -H 443 -S %s --aes-pwd proxy-secret proxy-multi.conf '
                             '-M 1' % (C_BIN, SECRET))
DROPIN = '/etc/systemd/system/MTProxy.service.d/99-mtproxy-cutover.conf'


@pytest.fixture(scope='module')
def host():
    # The Docker engine starts a container's network namespace with 0 (any port for anyone); a host has 1024.
    with boot_host('mtpx-privs', sysctls=['net.ipv4.ip_unprivileged_port_start=1024']) as (name, workdir):
        install_proxies(name, C_BIN, GO_BIN)
        start_vendor_service(name, EXEC_START, 'aes-secret-for-the-privilege-drop-tests-32+\n')
        yield ModuleHost(name, workdir, secrets=(SECRET,))


def uids(host, pid):
    """The effective uid of ``pid`` and of each of its children, from /proc."""
    script = ('for p in %d $(cat /proc/%d/task/*/children); do awk \'/^Uid:/ {print $3}\' /proc/$p/status; done'
              % (pid, pid))
    return sorted(set(int(word) for word in sh(host.name, script).split()))


def gone(host, unit):
    return sh(host.name, 'systemctl show -p LoadState --value %s' % unit).strip() == 'not-found'


def test_the_freeze_keeps_what_c_runs_as(host):
    frozen = host.module('mtproxy_freeze', {})
    assert not frozen.get('failed'), frozen.get('msg')
    privileges = frozen['manifest']['privileges']
    assert [proc['role'] for proc in privileges] == ['main', 'worker']
    assert {proc['uid'][1] for proc in privileges} == {65534}
    assert all(proc['capeff'] == '0' * 16 for proc in privileges)
    assert uids(host, main_pid(host.name)) == [65534]


def test_binary_refuses_a_go_that_stays_root_at_the_pre_warm(host):
    result = host.module('mtproxy_prewarm', {'binary': GO_BIN, 'privilege_drop': 'binary'})
    assert result.get('failed') and result.get('refused') == 'privileges', result.get('msg')
    assert 'uid 0 (root) where C runs as uid 65534' in result['msg']
    assert 'mtproxy_cutover_privilege_drop=service' in result['msg']
    assert result['privileges']['verdict'] == 'more'
    assert gone(host, 'MTProxy-prewarm.service')


def test_service_pre_warms_go_as_c_user_with_the_bind_capability(host):
    result = host.module('mtproxy_prewarm', {'binary': GO_BIN, 'privilege_drop': 'service'})
    assert not result.get('failed'), result.get('msg')
    assert result['privileges']['verdict'] in ('same', 'differs') and not result['privileges']['refused']
    assert result['privileges']['granted'] == ['CAP_NET_BIND_SERVICE']
    assert uids(host, result['pid']) == [65534]
    stopped = host.module('mtproxy_prewarm', {'state': 'stopped'})
    assert not stopped.get('failed') and stopped['exit_code'] == 0, stopped


def test_ignore_pre_warms_a_root_go_and_says_so(host):
    result = host.module('mtproxy_prewarm', {'binary': GO_BIN, 'privilege_drop': 'ignore'})
    assert not result.get('failed'), result.get('msg')
    assert result['privileges']['verdict'] == 'more' and not result['privileges']['refused']
    assert uids(host, result['pid']) == [0]
    assert not host.module('mtproxy_prewarm', {'state': 'stopped'}).get('failed')


def test_service_flips_go_into_the_drop_and_proves_it(host):
    result = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN, 'privilege_drop': 'service'})
    assert not result.get('failed'), result.get('msg')
    assert result['privileges']['verdict'] != 'more' and result['privileges']['granted'] == ['CAP_NET_BIND_SERVICE']
    dropin = sh(host.name, 'cat %s' % DROPIN)
    assert dropin.endswith('User=nobody\nGroup=nogroup\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n'), dropin
    assert uids(host, main_pid(host.name)) == [65534]
    # Seen again on Go, the unit's own User= (none) is still what was frozen: no drift.
    again = host.module('mtproxy_freeze', {'go_binaries': [GO_BIN]})
    assert not again.get('failed'), again.get('msg')
    assert again['status'] == 'unchanged' and again['current'] == 'go'


def test_rollback_removes_the_lines_with_the_drop_in(host):
    result = host.module('mtproxy_switch', {'target': 'c'})
    assert not result.get('failed'), result.get('msg')
    assert sh(host.name, 'test -e %s && echo present || echo absent' % DROPIN).strip() == 'absent'
    assert sh(host.name, 'systemctl show -p User --value MTProxy.service').strip() == ''
    assert uids(host, main_pid(host.name)) == [65534]


def test_binary_fails_a_flip_whose_go_runs_as_root(host):
    result = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN, 'privilege_drop': 'binary'})
    assert result.get('failed') and result['changed'] is True, result
    assert 'uid 0 (root) where C runs as uid 65534' in result['msg']
    assert result['privileges']['verdict'] == 'more' and result['privileges']['refused']
    back = host.module('mtproxy_switch', {'target': 'c'})
    assert not back.get('failed'), back.get('msg')
    assert uids(host, main_pid(host.name)) == [65534]


def test_service_refuses_a_flip_whose_user_cannot_read_the_config_before_any_change(host):
    # A wave host has no pre-warm: the flip itself checks the files C read as root before it dropped.
    pid = main_pid(host.name)
    sh(host.name, 'chmod 0600 /opt/MTProxy/proxy-multi.conf')
    try:
        result = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN, 'privilege_drop': 'service'})
    finally:
        sh(host.name, 'chmod 0644 /opt/MTProxy/proxy-multi.conf')
    assert result.get('failed') and result.get('refused') == 'privilege_files' and result['changed'] is False, result
    assert 'config /opt/MTProxy/proxy-multi.conf: mode 0600' in result['msg'] and 'nobody:nogroup' in result['msg']
    assert main_pid(host.name) == pid
    assert sh(host.name, 'test -e %s && echo present || echo absent' % DROPIN).strip() == 'absent'
