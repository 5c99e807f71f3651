"""Field cases on a systemd host: vendor drop-in, -6, --address (tests/fixtures/field-cases).

Each case installs the unit as operators write it (the stand-in proxy as the C binary at
/opt/MTProxy/mtproto-proxy and as the Go binary under releases/), then runs mtproxy_freeze,
mtproxy_switch and mtproxy_prewarm through ansible-core. Every case ends in a cutover and a
rollback that work, or in a refusal that left the host as it was. Tests run in file order
against one container.
"""
import json
import os

import pytest
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import unsplit_cmdline
from systemd_host import (ModuleHost, boot_host, c_without_secret_file, cap_connections, cmdline, install_proxies, main_pid,
                          put, wait_port)

pytestmark = pytest.mark.slow

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIELD = os.path.join(REPO, 'tests', 'fixtures', 'field-cases')

C_BIN = '/opt/MTProxy/mtproto-proxy'
GO_BIN = '/opt/MTProxy/releases/go-test/mtproto-proxy-go'
UNIT_DIR = '/etc/systemd/system'
DROPIN = UNIT_DIR + '/MTProxy.service.d/99-mtproxy-cutover.conf'
STATE = '/var/lib/mtproxy-cutover/MTProxy'
# Made-up secrets of the field cases: none may appear in a result.
SECRETS = ('00112233445566778899aabbccddeeff', '0123456789abcdef0123456789abcdef')
CLIENT_SECRET = 'fedcba9876543210fedcba9876543210'
BACKEND = 'proxy_for 1 127.0.0.1:18881;\nproxy_for -1 127.0.0.1:18881;\ndefault 1;\n'


def field(case, name):
    with open(os.path.join(FIELD, case, name)) as handle:
        return handle.read()


class Host(ModuleHost):
    def __init__(self, name, workdir):
        super(Host, self).__init__(name, workdir, secrets=SECRETS)
        self.since = '0'

    def main_pid(self):
        return main_pid(self.name)

    def restarts(self):
        return int(self.sh('systemctl show -p NRestarts --value MTProxy.service').strip())

    def cmdline(self, pid=None):
        # the argv it was started with: the C splits its --nat-info value in /proc (real-stats README)
        return unsplit_cmdline(cmdline(self.name, pid or self.main_pid()))

    def exec_start_path(self):
        out = self.sh('systemctl show -p ExecStart --value MTProxy.service')
        return out.split('path=', 1)[1].split(' ;', 1)[0]

    def exists(self, path):
        return self.sh('test -e %s && echo yes || echo no' % path).strip() == 'yes'

    def journal(self):
        """What the service logged since its case was installed."""
        return self.sh('journalctl --no-pager -o cat -u MTProxy.service --since @%s' % self.since, check=False)

    def install_case(self, unit_text, files=(), client=('127.0.0.1', 443)):
        """A fresh MTProxy.service of this shape, running, with no state and no drop-in left."""
        self.sh('systemctl stop MTProxy.service; systemctl reset-failed MTProxy.service; rm -rf %s.d %s; true'
                % (UNIT_DIR + '/MTProxy.service', STATE), check=False)
        self.since = self.sh('sleep 1; date +%s').strip()
        put(self.name, cap_connections(unit_text), UNIT_DIR + '/MTProxy.service')
        for path, text in files:
            put(self.name, cap_connections(text), path)
        self.sh('systemctl daemon-reload && systemctl start MTProxy.service')
        wait_port(self.name, client[1], client[0])


@pytest.fixture(scope='module')
def host():
    with boot_host('mtpx-field') as (name, workdir):
        install_proxies(name, C_BIN, GO_BIN)
        put(name, BACKEND, '/opt/MTProxy/proxy-multi.conf')
        put(name, 'aes-secret-for-tests-of-the-field-cases\n', '/opt/MTProxy/proxy-secret')
        put(name, CLIENT_SECRET + '\n', '/opt/MTProxy/secret')
        yield Host(name, workdir)


# ---------------------------------------------------------------------------------------------
# vendor-dropin: override.conf (systemctl edit) sorts after 99-mtproxy-cutover.conf
# ---------------------------------------------------------------------------------------------

OVERRIDE = UNIT_DIR + '/MTProxy.service.d/override.conf'
# The case's unit reads the client secret with --mtproto-secret-file.
NO_SECRET_FILE = c_without_secret_file()
needs_secret_file = pytest.mark.skipif(bool(NO_SECRET_FILE), reason=NO_SECRET_FILE or '')


@needs_secret_file
def test_vendor_dropin_is_refused_and_left_untouched(host):
    host.install_case(field('vendor-dropin', 'MTProxy.service'), [
        (OVERRIDE, field('vendor-dropin', 'MTProxy.service.d/override.conf')),
        ('/etc/default/mtproxy', field('vendor-dropin', 'default-mtproxy'))])
    pid = host.main_pid()
    frozen = host.module('mtproxy_freeze', {})
    assert frozen.get('failed') and frozen['refused'] == 'dropin_overridden', frozen.get('msg')
    assert '%s sets ExecStart' % OVERRIDE in frozen['msg'] and 'Way forward: rename it' in frozen['msg']
    assert not host.exists(STATE + '/manifest.json')

    # A manifest the flip could find (frozen for method=symlink): the drop-in flip still refuses,
    # before anything is written, in check mode and for real.
    frozen = host.module('mtproxy_freeze', {'method': 'symlink', 'baseline_samples': 2, 'baseline_interval': 0.2})
    assert not frozen.get('failed'), frozen.get('msg')
    for check in (True, False):
        flip = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN}, check=check)
        assert flip.get('failed') and flip['refused'] == 'dropin_overridden' and flip['changed'] is False, flip
        assert OVERRIDE in flip['msg']
    assert host.main_pid() == pid and not host.exists(DROPIN) and not host.exists(STATE + '/state.json')
    assert host.exec_start_path() == C_BIN


@needs_secret_file
def test_vendor_dropin_renamed_as_the_refusal_says_cuts_over_and_back(host):
    renamed = OVERRIDE.replace('override.conf', '50-override.conf')
    host.sh('mv %s %s && systemctl daemon-reload && rm -rf %s' % (OVERRIDE, renamed, STATE))
    live = host.cmdline()
    frozen = host.module('mtproxy_freeze', {'baseline_samples': 2, 'baseline_interval': 0.2})
    assert not frozen.get('failed'), frozen.get('msg')
    assert frozen['status'] == 'frozen' and frozen['flavor'] == 'c'
    flip = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN})
    assert not flip.get('failed'), flip.get('msg')
    assert flip['argv_matches'] and flip['stats_flavor'] == 'go' and host.exec_start_path() == GO_BIN
    assert host.cmdline() == [GO_BIN] + live[1:]
    back = host.module('mtproxy_switch', {'target': 'c'})
    assert not back.get('failed'), back.get('msg')
    assert back['argv_matches'] and back['stats_flavor'] == 'c' and host.cmdline() == live
    assert json.loads(host.sh('cat %s/state.json' % STATE))['current'] == 'c'


# ---------------------------------------------------------------------------------------------
# ipv6-flag: C with -6 aborts on any connection to its stats port
# ---------------------------------------------------------------------------------------------

ASSERTION = "Assertion `peer_addrlen == sizeof (struct sockaddr_in6)' failed"


def test_ipv6_host_is_refused_without_touching_the_stats_port(host):
    host.install_case(field('ipv6-flag', 'MTProxy.service'))
    pid = host.main_pid()
    frozen = host.module('mtproxy_freeze', {'baseline_samples': 2, 'baseline_interval': 0.2})
    assert frozen.get('failed') and frozen['refused'] == 'ipv6_stats', frozen.get('msg')
    assert 'mtproxy_cutover_allow_no_baseline=true' in frozen['msg']
    assert host.main_pid() == pid and host.restarts() == 0 and ASSERTION not in host.journal()
    assert not host.exists(STATE + '/manifest.json')


def test_ipv6_host_cuts_over_and_back_without_a_c_baseline(host):
    pid = host.main_pid()
    live = host.cmdline()
    frozen = host.module('mtproxy_freeze', {'allow_no_baseline': True, 'baseline_samples': 2,
                                            'baseline_interval': 0.2})
    assert not frozen.get('failed'), frozen.get('msg')
    assert frozen['stats_readable'] is False and frozen['flavor'] is None and frozen['baseline'] == {}
    assert host.main_pid() == pid
    flip = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN})
    assert not flip.get('failed'), flip.get('msg')
    assert flip['argv_matches'] and flip['stats_flavor'] == 'go' and flip['timings']['stats_ms'] is None
    back = host.module('mtproxy_switch', {'target': 'c'})
    assert not back.get('failed'), back.get('msg')
    assert back['argv_matches'] and back['stats_flavor'] is None and '-6' in back['stats_skipped']
    c_pid = host.main_pid()
    again = host.module('mtproxy_switch', {'target': 'c'})
    assert not again.get('failed') and again['changed'] is False, again.get('msg')
    assert host.main_pid() == c_pid and host.cmdline() == live
    assert host.restarts() == 0 and ASSERTION not in host.journal()


def test_the_stand_in_c_with_ipv6_dies_on_a_stats_connection_like_the_real_one(host):
    pid = host.main_pid()
    host.sh('python3 -c "import socket; socket.create_connection((\'127.0.0.1\', 8888), 2).close()"')
    for _attempt in range(50):
        if ASSERTION in host.journal():
            break
        host.sh('sleep 0.1')
    assert ASSERTION in host.journal()
    assert host.main_pid() != pid or host.restarts() == 1
    assert 'status=1/FAILURE' in host.journal()


# ---------------------------------------------------------------------------------------------
# address-flag: the client port is on --address only
# ---------------------------------------------------------------------------------------------

def test_address_host_is_probed_on_its_address_everywhere(host):
    host.install_case(field('address-flag', 'MTProxy.service'), client=('127.0.0.2', 443))
    live = host.cmdline()
    frozen = host.module('mtproxy_freeze', {'baseline_samples': 2, 'baseline_interval': 0.2})
    assert not frozen.get('failed'), frozen.get('msg')
    assert frozen['client_hosts'] == ['127.0.0.2'] and frozen['flavor'] == 'c'

    started = host.module('mtproxy_prewarm', {'binary': GO_BIN, 'ready_timeout': 10})
    assert not started.get('failed'), started.get('msg')
    assert started['client_hosts'] == ['127.0.0.2'] and isinstance(started['ready_ms'], float)
    stopped = host.module('mtproxy_prewarm', {'state': 'stopped'})
    assert not stopped.get('failed') and stopped['exit_code'] == 0, stopped.get('msg')

    flip = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN, 'listen_timeout': 10})
    assert not flip.get('failed'), flip.get('msg')
    assert flip['client_hosts'] == ['127.0.0.2'] and flip['timings']['start_ms'] is not None
    assert flip['stats_flavor'] == 'go' and host.cmdline() == [GO_BIN] + live[1:]
    back = host.module('mtproxy_switch', {'target': 'c', 'listen_timeout': 10})
    assert not back.get('failed'), back.get('msg')
    assert back['argv_matches'] and back['stats_flavor'] == 'c' and back['timings']['start_ms'] is not None
    assert host.cmdline() == live
