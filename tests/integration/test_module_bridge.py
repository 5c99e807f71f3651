"""mtproxy_switch with handover=bridge on a systemd container with CAP_NET_ADMIN and nftables/iptables.

The host is set up as in test_module_switch_prewarm.py (C and Go: the stand-in or real builds; vendor unit,
manifest). A
prober (tests/bench/prober.py, 1 ms, bounded) connects to 127.0.0.1:443 during each switch: with the
bridge it must never be refused. Then: the iptables fallback (nft hidden), an interrupted run's
leftovers, and the refusals (no nft/iptables, no CAP_NET_ADMIN). Tests run in file order on one container.
"""
import json
import os
import time

import pytest
from ansible_collections.mtproxy.cutover.plugins.module_utils._handover import bridge as bridgelib
from systemd_host import ModuleHost, boot_host, cmdline, main_pid, put, sh, standin_only
from test_module_switch_prewarm import C_ARGV, C_BIN, DROPIN, GO_BIN, SECRET, _install, _standin_missing

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROBER = os.path.join(REPO, 'tests', 'bench', 'prober.py')
TABLE = 'mtproxy_cutover_MTProxy'
BRIDGE_UNIT = 'MTProxy-bridge.service'
# The module's Python without CAP_NET_ADMIN (dropped from the bounding set before the exec).
NOCAP_PYTHON = '/usr/local/bin/python3-no-net-admin'


@pytest.fixture(scope='module')
def host():
    if _standin_missing():
        pytest.skip(_standin_missing())
    with boot_host('mtpx-bridge', capabilities=('NET_ADMIN',)) as (name, workdir):
        _install(name)
        with open(PROBER) as handle:
            put(name, handle.read(), '/opt/mtproxy-bench/prober.py')
        put(name, '#!/bin/sh\nexec setpriv --bounding-set=-net_admin /usr/bin/python3 "$@"\n', NOCAP_PYTHON, 0o755)
        yield ModuleHost(name, workdir, secrets=(SECRET,))


class Prober(object):
    """tests/bench/prober.py inside the host, 1 ms, at most 120 s, stopped by a file."""

    def __init__(self, host):
        self.host = host

    def __enter__(self):
        sh(self.host.name, 'rm -f /tmp/probe.stop /tmp/probe.ready /tmp/probe.json')
        sh(self.host.name, 'systemd-run --unit=bridge-test-probe --collect sh -c "python3 /opt/mtproxy-bench/prober.py '
                           '--port 443 --max-seconds 120 --stop-file /tmp/probe.stop --ready-file /tmp/probe.ready '
                           '> /tmp/probe.json"')
        sh(self.host.name, 'for i in $(seq 1 100); do test -f /tmp/probe.ready && exit 0; sleep 0.05; done; exit 1')
        time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        time.sleep(0.2)
        sh(self.host.name, 'touch /tmp/probe.stop; for i in $(seq 1 100); do test -s /tmp/probe.json && exit 0; '
                           'sleep 0.05; done; exit 1', check=False)
        self.result = json.loads(sh(self.host.name, 'cat /tmp/probe.json') or '{}')
        return False


def nothing_left(host):
    assert sh(host.name, 'nft list tables | grep -c %s || true' % TABLE).strip() == '0'
    assert sh(host.name, 'iptables-save | grep -c MTPXC || true').strip() == '0'
    assert sh(host.name, 'systemctl show -p LoadState --value %s' % BRIDGE_UNIT).strip() == 'not-found'
    # The conntrack CLOSE timeout lowered during the handover is back at the kernel's default.
    assert sh(host.name, 'cat /proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close').strip() == '10'
    assert sh(host.name, 'ls /var/lib/mtproxy-cutover/MTProxy').split().count('bridge-conntrack.json') == 0


def switch(host, target, **extra):
    args = {'target': target, 'handover': 'bridge', 'bridge_drain': 5}
    if target == 'go':
        args['binary'] = GO_BIN
    args.update(extra)
    with Prober(host) as probe:
        result = host.module('mtproxy_switch', args)
    return result, probe.result


def check_bridged(result, probe, backend='nft'):
    assert not result.get('failed'), result.get('msg')
    bridge = result['bridge']
    # When a refusal happened, on the host's CLOCK_MONOTONIC: the prober's runs against the bridge's steps.
    print('bridge: %s, timings: %s, prober: %s' % (bridge, result.get('timings'), {
        k: probe.get(k) for k in ('attempts', 'refused', 'other_errors', 'window_ms', 'runs', 'started_monotonic')}))
    assert bridge['backend'] == backend and bridge['errors'] == []
    assert probe['attempts'] > 100 and probe['refused'] == 0 and probe['other_errors'] == 0
    assert bridge['refused'] == 0
    # The prober connects every ms: the bridge served some of them while the service restarted.
    assert bridge['served'] >= 1 and bridge['redirected'] == bridge['served']
    assert bridge['diverted_ms'] >= result['timings']['unavailable_ms']
    assert bridge['drained'] is True and bridge['cut_at_drain'] == 0
    assert isinstance(bridge['dropped'], int) and isinstance(bridge['ready_ms'], float)
    assert bridge['ports'][0]['client'] == 443 and bridge['ports'][0]['bridge'] != 443
    assert result['leftovers_removed'] == []


def test_flip_with_the_bridge_refuses_no_connect(host):
    result, probe = switch(host, 'go')
    check_bridged(result, probe)
    assert result['argv_matches'] is True and result['stats_flavor'] == 'go'
    assert cmdline(host.name, main_pid(host.name)) == [GO_BIN] + C_ARGV[1:]
    state = json.loads(sh(host.name, 'cat /var/lib/mtproxy-cutover/MTProxy/state.json'))
    assert state['history'][-1]['bridge']['served'] == result['bridge']['served']
    nothing_left(host)


def test_rollback_with_a_c_bridge_refuses_no_connect(host):
    result, probe = switch(host, 'c')
    check_bridged(result, probe)
    assert result['bridge']['binary'] == C_BIN
    assert cmdline(host.name, main_pid(host.name)) == C_ARGV and result['stats_flavor'] == 'c'
    nothing_left(host)


def test_the_restart_mode_still_refuses_for_comparison(host):
    with Prober(host) as probe:
        result = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN})
    assert not result.get('failed'), result.get('msg')
    assert 'bridge' not in result
    print('restart mode prober: %s' % {k: probe.result.get(k) for k in ('attempts', 'refused', 'window_ms')})
    assert probe.result['refused'] > 0
    back = host.module('mtproxy_switch', {'target': 'c'})
    assert not back.get('failed'), back.get('msg')


def test_iptables_fallback_without_nft(host):
    sh(host.name, 'mv /usr/sbin/nft /usr/sbin/nft.hidden')
    try:
        result, probe = switch(host, 'go')
        check_bridged(result, probe, backend='iptables')
        result, probe = switch(host, 'c')
        check_bridged(result, probe, backend='iptables')
    finally:
        sh(host.name, 'mv /usr/sbin/nft.hidden /usr/sbin/nft')
    nothing_left(host)


def test_an_interrupted_runs_redirect_and_bridge_are_removed(host):
    # What a module run killed mid-handover leaves: a redirect to a bridge port and the bridge unit.
    put(host.name, bridgelib.render_nft(TABLE, [(443, 1)]), '/root/leftover.nft')
    sh(host.name, 'nft -f /root/leftover.nft && systemd-run --unit=%s sleep 300' % BRIDGE_UNIT)
    # New connections now go to port 1, where nothing listens.
    refused = sh(host.name, 'python3 -c "import socket; s=socket.socket(); s.settimeout(1); print(s.connect_ex('
                            '(\'127.0.0.1\', 443)))"').strip()
    assert refused == '111'
    checked = host.module('mtproxy_switch', {'target': 'c'}, check=True)
    assert len(checked['leftovers_removed']) == 2
    assert sh(host.name, 'nft list tables | grep -c %s || true' % TABLE).strip() == '1'
    result = host.module('mtproxy_switch', {'target': 'c'})
    assert not result.get('failed'), result.get('msg')
    assert result['changed'] is False
    assert result['leftovers_removed'] == [
        'a redirect left by an interrupted run (nftables table inet %s)' % TABLE,
        'a bridge left by an interrupted run (%s, active/running)' % BRIDGE_UNIT]
    nothing_left(host)
    assert sh(host.name, 'python3 -c "import socket; s=socket.socket(); s.settimeout(1); print(s.connect_ex('
                         '(\'127.0.0.1\', 443)))"').strip() == '0'


def test_a_host_without_nft_and_iptables_is_refused_before_anything_changes(host):
    sh(host.name, 'mv /usr/sbin/nft /usr/sbin/nft.hidden && mv /usr/sbin/iptables /usr/sbin/iptables.hidden')
    try:
        pid = main_pid(host.name)
        result = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN, 'handover': 'bridge'})
    finally:
        sh(host.name, 'mv /usr/sbin/nft.hidden /usr/sbin/nft && mv /usr/sbin/iptables.hidden /usr/sbin/iptables')
    assert result.get('failed') is True and result['refused'] == 'bridge_unsupported'
    assert 'neither nft (package nftables) nor iptables is installed' in result['msg']
    assert result['changed'] is False and main_pid(host.name) == pid
    assert sh(host.name, 'test -e %s && echo present || echo absent' % DROPIN).strip() == 'absent'


def test_a_host_without_cap_net_admin_is_refused_also_in_check_mode(host):
    for check in (True, False):
        result = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN, 'handover': 'bridge'},
                             check=check, interpreter=NOCAP_PYTHON)
        assert result.get('failed') is True and result['refused'] == 'bridge_unsupported', result.get('msg')
        assert 'without CAP_NET_ADMIN' in result['msg'] and 'Nothing on the host was changed' in result['msg']
    assert sh(host.name, 'test -e %s && echo present || echo absent' % DROPIN).strip() == 'absent'
    nothing_left(host)


@standin_only('go', 'a Go that rejects -p (the stand-in fault reject_flags)')
def test_a_bridge_that_does_not_start_changes_nothing(host):
    put(host.name, json.dumps({'go': {'reject_flags': ['-p']}}), '/etc/mtproxy-standin/faults.json', 0o644)
    try:
        pid = main_pid(host.name)
        result = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN, 'handover': 'bridge',
                                                'bridge_ready_timeout': 5})
    finally:
        sh(host.name, 'rm -f /etc/mtproxy-standin/faults.json')
    assert result.get('failed') is True and result['changed'] is False
    assert 'the bridge %s' % BRIDGE_UNIT in result['msg'] and 'nothing was changed' in result['msg']
    assert 'flag provided but not defined: -p' in result['msg']
    assert main_pid(host.name) == pid
    assert sh(host.name, 'test -e %s && echo present || echo absent' % DROPIN).strip() == 'absent'
    nothing_left(host)
