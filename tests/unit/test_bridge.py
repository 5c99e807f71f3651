"""The bridge handover without a host: ruleset rendering and parsing, refusals, leftover detection.

The rules themselves were run against the kernel on a test host (tests/integration/test_module_bridge.py
and the bridge_handover scenario); here every text is checked for what it must and must never do.
"""
import json

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._handover import bridge
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import probe, proc, process
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.choice import runtime_for
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.container import ContainerRuntime
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.systemd import SystemdRuntime
from ansible_collections.mtproxy.cutover.plugins.module_utils._state import BRIDGE_CONNTRACK, StateDir
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import parse_argv

SECRET = '00112233445566778899aabbccddeeff'
C_ARGV = ['/opt/MTProxy/mtproto-proxy', '-u', 'nobody', '-p', '8888', '--http-stats', '-H', '443', '-S', SECRET,
          '--aes-pwd', 'proxy-secret', 'proxy-multi.conf', '-M', '1']
TABLE = 'mtproxy_cutover_MTProxy'
CHAINS = bridge.ipt_chains('MTProxy')
# CapEff of a root shell in a test host with and without --cap-add NET_ADMIN (read there).
CAPS_WITH = 'Name:\tpython3\nCapEff:\t00000000a82435fb\n'
CAPS_WITHOUT = 'Name:\tpython3\nCapEff:\t00000000a82425fb\n'


# --- names ------------------------------------------------------------------------------------------

def test_names_of_table_chains_and_unit():
    assert bridge.nft_table('MTProxy.service') == TABLE
    assert bridge.nft_table('mt-proxy@eu.1') == 'mtproxy_cutover_mt_proxy_eu_1'
    assert bridge.bridge_unit('MTProxy') == 'MTProxy-bridge.service'
    chains = bridge.ipt_chains('a-very-long-service-name-for-a-proxy')
    assert all(len(name) <= 28 for name in chains.values())
    assert len(set(chains.values())) == 3


# --- nftables ---------------------------------------------------------------------------------------

def rules_of(text, chain):
    body = text.split('chain %s {' % chain, 1)[1].split('\t}', 1)[0]
    return [line.strip() for line in body.strip().splitlines()]


def test_nft_ruleset_redirects_only_new_connections_to_this_hosts_client_port():
    text = bridge.render_nft(TABLE, [(443, 40001)])
    for chain in ('divert_local', 'divert_incoming'):
        redirects = [r for r in rules_of(text, chain) if 'redirect' in r or 'dnat' in r]
        assert redirects == ['fib daddr type local tcp dport 443 tcp flags & (syn | ack) == syn '
                             'counter name "served" redirect to :40001']
    assert 'type nat hook output priority -100' in text
    assert 'type nat hook prerouting priority -100' in text


def test_nft_ruleset_lets_marked_probes_through_and_marks_their_flows():
    text = bridge.render_nft(TABLE, [(443, 40001)])
    local = rules_of(text, 'divert_local')
    assert local[1] == 'meta mark 0x6d747078 ct mark set 0x6d747078 return'
    # The mark is checked before any redirect; incoming packets never carry a local socket's mark.
    assert local.index(local[1]) < min(i for i, r in enumerate(local) if 'redirect' in r)
    refused = rules_of(text, 'refused')
    assert refused[1] == 'ct mark 0x6d747078 return'


def test_nft_ruleset_counts_refusals_on_client_and_bridge_ports_only():
    text = bridge.render_nft(TABLE, [(443, 40001), (8443, 40002)])
    rule = rules_of(text, 'refused')[2]
    assert rule == ('tcp sport { 443, 8443, 40001, 40002 } tcp flags & (syn | rst | ack) == rst | ack '
                    'tcp sequence 0 counter name "refused"')
    assert 'type filter hook output priority 0' in text


def test_nft_ruleset_replaces_a_table_left_behind_in_one_transaction():
    lines = bridge.render_nft(TABLE, [(443, 40001)]).splitlines()
    assert lines[:3] == ['table inet %s {}' % TABLE, 'delete table inet %s' % TABLE, 'table inet %s {' % TABLE]
    assert 'counter served {' in '\n'.join(lines) and 'counter refused {' in '\n'.join(lines)


def test_nft_tracking_table_marks_probes_and_neither_redirects_nor_counts():
    text = bridge.render_nft_tracking(TABLE)
    assert text.splitlines()[:3] == bridge.render_nft(TABLE, [(443, 40001)]).splitlines()[:3]
    # The ct expression of the marking rule is what has conntrack track the network namespace.
    assert rules_of(text, 'divert_local')[1:] == ['meta mark 0x6d747078 ct mark set 0x6d747078 return']
    assert rules_of(text, 'divert_incoming')[1:] == []
    assert rules_of(text, 'refused')[1:] == ['ct mark 0x6d747078 return']
    assert 'counter refused {' in text and 'redirect' not in text and 'sport' not in text


def test_nft_ruleset_with_an_address_matches_and_targets_that_address_only():
    text = bridge.render_nft(TABLE, [(443, 40001)], address='127.0.0.1')
    assert 'ip daddr 127.0.0.1 tcp dport 443 tcp flags & (syn | ack) == syn counter name "served" ' \
           'dnat ip to 127.0.0.1:40001' in text
    assert 'fib daddr' not in text
    text6 = bridge.render_nft(TABLE, [(443, 40001)], address='::1')
    assert 'ip6 daddr ::1 tcp dport 443' in text6 and 'dnat ip6 to [::1]:40001' in text6


def test_nft_ruleset_never_names_an_address_it_was_not_given():
    for address in (None, '127.0.0.1', '::1'):
        text = bridge.render_nft(TABLE, [(443, 40001)], address=address)
        words = text.replace('{', ' ').replace('}', ' ').replace(';', ' ').split()
        for word in words:
            if word.count('.') == 3 and word[0].isdigit():
                assert word.split(':')[0] == address, word


def test_nft_ruleset_needs_a_port():
    with pytest.raises(bridge.BridgeError):
        bridge.render_nft(TABLE, [])


def test_nft_stop_redirect_keeps_the_table_and_its_nat_chains():
    text = bridge.render_nft_stop_redirect(TABLE)
    assert text == ('flush chain inet %s divert_local\nflush chain inet %s divert_incoming\n' % (TABLE, TABLE))
    assert 'delete' not in text


def test_parse_nft_counters():
    # As nft 1.0.6 prints `nft -j list counters table inet mtproxy_cutover_MTProxy` on a test host.
    text = json.dumps({'nftables': [
        {'metainfo': {'version': '1.0.6', 'release_name': 'Lester Gooch #5', 'json_schema_version': 1}},
        {'counter': {'family': 'inet', 'name': 'served', 'table': TABLE, 'handle': 4, 'packets': 12, 'bytes': 720}},
        {'counter': {'family': 'inet', 'name': 'refused', 'table': TABLE, 'handle': 5, 'packets': 0, 'bytes': 0}}]})
    assert bridge.parse_nft_counters(text) == {'served': 12, 'refused': 0}
    assert bridge.parse_nft_counters('') == {'served': None, 'refused': None}
    assert bridge.parse_nft_counters('{"nftables": [{"metainfo": {}}]}') == {'served': None, 'refused': None}


# --- iptables ---------------------------------------------------------------------------------------

def test_iptables_rules_jump_first_and_redirect_only_syns_to_local_addresses():
    text = bridge.render_iptables(CHAINS, [(443, 40001)])
    lines = text.splitlines()
    assert '-I OUTPUT 1 -j %s' % CHAINS['local'] in lines
    assert '-I PREROUTING 1 -j %s' % CHAINS['incoming'] in lines
    for chain in (CHAINS['local'], CHAINS['incoming']):
        assert ('-A %s -p tcp --dport 443 --syn -m addrtype --dst-type LOCAL -m comment --comment served '
                '-j REDIRECT --to-ports 40001' % chain) in lines
    marked = [i for i, line in enumerate(lines) if line.startswith('-A %s -m mark' % CHAINS['local'])]
    redirect = lines.index('-A %s -p tcp --dport 443 --syn -m addrtype --dst-type LOCAL -m comment --comment served '
                           '-j REDIRECT --to-ports 40001' % CHAINS['local'])
    assert marked and max(marked) < redirect
    assert lines.count('COMMIT') == 2 and lines[0] == '*nat'
    assert ('-A %s -p tcp -m multiport --sports 443,40001 --tcp-flags SYN,RST,ACK RST,ACK -m u32 --u32 '
            '"0>>22&0x3C@4=0" -m comment --comment refused' % CHAINS['refused']) in lines


def test_iptables_tracking_chains_then_the_rules_in_them_without_a_second_jump():
    tracking = bridge.render_iptables_tracking(CHAINS).splitlines()
    assert '-I OUTPUT 1 -j %s' % CHAINS['local'] in tracking and '-I OUTPUT 1 -j %s' % CHAINS['refused'] in tracking
    assert '-A %s -m mark --mark 0x6d747078 -j CONNMARK --set-mark 0x6d747078' % CHAINS['local'] in tracking
    assert not [line for line in tracking if 'served' in line or 'refused' in line]
    over = bridge.render_iptables(CHAINS, [(443, 40001)], jumps=False).splitlines()
    assert not [line for line in over if line.startswith('-I ')]
    full = bridge.render_iptables(CHAINS, [(443, 40001)]).splitlines()
    assert over == [line for line in full if not line.startswith('-I ')]
    # Declared again, the chains are emptied and filled in the same commit.
    assert ':%s - [0:0]' % CHAINS['local'] in over and over.count('COMMIT') == 2


def test_iptables_backend_adds_the_rules_over_its_tracking_chains():
    fed = []
    backend = bridge.Iptables('MTProxy.service', '/usr/sbin/iptables',
                              run=lambda argv, **kw: fed.append(argv) or (1, '', ''),
                              feed=lambda argv, text: fed.append((argv, text)) or (0, '', ''))
    backend.track()
    removed = [a for a in fed if isinstance(a, list)]
    assert len(removed) == 9 and fed[-1][1] == bridge.render_iptables_tracking(CHAINS)
    del fed[:]
    backend.install(backend.render([(443, 40001)], None))
    assert len(fed) == 1 and '-I OUTPUT' not in fed[0][1] and '--to-ports 40001' in fed[0][1]
    backend.remove()
    del fed[:]
    backend.install(backend.render([(443, 40001)], None))
    assert len(fed) == 10 and '-I OUTPUT 1 -j %s' % CHAINS['local'] in fed[-1][1]


def test_iptables_rules_with_an_address_and_ipv6_refused():
    text = bridge.render_iptables(CHAINS, [(443, 40001)], address='127.0.0.1')
    assert '-d 127.0.0.1/32' in text and '-j DNAT --to-destination 127.0.0.1:40001' in text
    assert 'addrtype' not in text
    with pytest.raises(bridge.BridgeError, match='IPv4 only'):
        bridge.render_iptables(CHAINS, [(443, 40001)], address='::1')


def test_parse_iptables_counters_sums_own_chains_only():
    save = '\n'.join([
        '*nat',
        '[3:180] -A OUTPUT -j %s' % CHAINS['local'],
        '[2:120] -A %s -p tcp -m tcp --dport 443 --tcp-flags FIN,SYN,RST,ACK SYN -m addrtype --dst-type LOCAL '
        '-m comment --comment served -j REDIRECT --to-ports 40001' % CHAINS['incoming'],
        '[5:300] -A %s -p tcp -m tcp --dport 443 --tcp-flags FIN,SYN,RST,ACK SYN -m addrtype --dst-type LOCAL '
        '-m comment --comment served -j REDIRECT --to-ports 40001' % CHAINS['local'],
        '[9:540] -A OTHER -m comment --comment served -j ACCEPT',
        '[1:40] -A %s -p tcp -m multiport --sports 443,40001 -m tcp --tcp-flags SYN,RST,ACK RST,ACK -m u32 '
        '--u32 "0x0>>0x16&0x3c@0x4=0x0" -m comment --comment refused' % CHAINS['refused'],
        'COMMIT'])
    assert bridge.parse_iptables_counters(save, CHAINS) == {'served': 7, 'refused': 1}
    assert bridge.parse_iptables_counters('', CHAINS) == {'served': None, 'refused': None}


def test_iptables_teardown_removes_jumps_then_chains():
    argvs = bridge.iptables_teardown('/usr/sbin/iptables', CHAINS)
    assert argvs[0] == ['/usr/sbin/iptables', '-w', '5', '-t', 'nat', '-D', 'OUTPUT', '-j', CHAINS['local']]
    assert ['/usr/sbin/iptables', '-w', '5', '-t', 'filter', '-X', CHAINS['refused']] in argvs
    for chain in CHAINS.values():
        ops = [a[5] for a in argvs if a[-1] == chain]
        assert ops == ['-D', '-F', '-X']


# --- the host's facts -------------------------------------------------------------------------------

def test_cap_net_admin_from_capeff():
    assert bridge.has_cap_net_admin(CAPS_WITH)
    assert not bridge.has_cap_net_admin(CAPS_WITHOUT)
    assert not bridge.has_cap_net_admin('')
    assert not bridge.has_cap_net_admin('CapEff:\tzz\n')


def test_established_counts_listening_side_of_open_connections_only():
    table = '\n'.join([
        '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
        '   0: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1',  # LISTEN 443
        '   1: 0100007F:01BB 0100007F:A2C4 01 00000000:00000000 00:00000000 00000000 65534        0 2',  # server side
        '   2: 0100007F:A2C4 0100007F:01BB 01 00000000:00000000 00:00000000 00000000     0        0 3',  # client side
        '   3: 0100007F:01BB 0100007F:A2C6 06 00000000:00000000 03:00000000 00000000     0        0 0',  # TIME_WAIT
        '   4: 0100007F:9C41 0100007F:A2C8 01 00000000:00000000 00:00000000 00000000 65534        0 4',  # bridge 40001
    ])
    assert proc.established([443], table) == 1
    assert proc.established([40001], table) == 1
    assert proc.established([443, 40001], table) == 2
    assert proc.established([443], '') == 0


def test_bound_address_from_the_frozen_flags():
    assert bridge.bound_address(parse_argv(C_ARGV)) == (None, False)
    assert bridge.bound_address(parse_argv(C_ARGV + ['--address', '127.0.0.1'])) == ('127.0.0.1', False)
    assert bridge.bound_address(parse_argv(C_ARGV + ['--address', '0.0.0.0'])) == (None, False)
    assert bridge.bound_address(parse_argv(C_ARGV + ['-6'])) == (None, True)
    with pytest.raises(bridge.BridgeError, match='not an IP address'):
        bridge.bound_address(parse_argv(C_ARGV + ['--address', 'proxy.example']))


# --- refusals -------------------------------------------------------------------------------------

class FakeHost(object):
    """Commands of a host with the given programs; records every command run."""

    def __init__(self, programs=('nft',), nft_check=(0, '', ''), present=(), unit=None):
        self.programs = set(programs)
        self.nft_check = nft_check
        self.present = set(present)
        self.unit = unit or {'LoadState': 'not-found', 'ActiveState': 'inactive', 'SubState': 'dead'}
        self.ran = []

    def which(self, name):
        return '/usr/sbin/%s' % name if name in self.programs else None

    def run(self, argv, timeout=60):
        self.ran.append(list(argv))
        name = argv[0].rsplit('/', 1)[-1]
        if name not in self.programs and not (name.startswith('iptables') and 'iptables' in self.programs):
            return 127, '', 'not found'
        if name == 'nft' and argv[1:3] == ['list', 'table']:
            return (0, '', '') if 'nft' in self.present else (1, '', 'Error: No such file or directory')
        if name == 'iptables' and '-S' in argv:
            if not argv[-1].startswith('MTPXC'):
                return 0, '-P OUTPUT ACCEPT\n', ''
            return (0, '', '') if 'iptables' in self.present else (1, '', 'No chain')
        return 0, '', ''

    def feed(self, argv, text, timeout=30):
        self.ran.append(list(argv) + ['<stdin>'])
        return self.nft_check


def support(fake, argv=None, caps=CAPS_WITH, ports=(443,)):
    return bridge.support(list(ports), parse_argv(argv or C_ARGV), 'MTProxy', fake.which, fake.run, fake.feed, caps)


def test_support_picks_nft_first():
    fake = FakeHost(programs=('nft', 'iptables'))
    backend, why = support(fake)
    assert why is None and backend.name == 'nft'
    assert fake.ran == [['/usr/sbin/nft', '-c', '-f', '-', '<stdin>']]


def test_support_falls_back_to_iptables_without_nft():
    backend, why = support(FakeHost(programs=('iptables',)))
    assert why is None and backend.name == 'iptables'


def test_refused_without_cap_net_admin_before_any_command():
    fake = FakeHost(programs=('nft',))
    backend, why = support(fake, caps=CAPS_WITHOUT)
    assert backend is None and why.kind == 'bridge_unsupported'
    assert 'CAP_NET_ADMIN' in why.cause and 'NET_ADMIN' in why.way_forward
    assert fake.ran == []


def test_refused_without_nft_and_iptables():
    backend, why = support(FakeHost(programs=()))
    assert backend is None and 'neither nft (package nftables) nor iptables is installed' in why.cause
    assert 'mtproxy_cutover_handover: restart' in why.way_forward


def test_refused_when_the_kernel_rejects_the_ruleset():
    fake = FakeHost(programs=('nft',), nft_check=(1, '', 'Error: Could not process rule: No such file or directory\n'))
    backend, why = support(fake)
    assert backend is None
    assert 'nft: Error: Could not process rule: No such file or directory' in why.cause
    assert why.message('MTProxy.service', 'proxy1').startswith('MTProxy.service on proxy1: mtproxy_cutover_handover')


def test_iptables_fallback_refused_for_ipv6_clients():
    backend, why = support(FakeHost(programs=('iptables',)), argv=C_ARGV + ['-6'])
    assert backend is None and 'IPv4 only' in why.cause


def test_refused_without_client_port_or_with_a_named_address():
    assert 'no client port' in support(FakeHost(), ports=())[1].cause
    assert 'not an IP address' in support(FakeHost(), argv=C_ARGV + ['--address', 'proxy.example'])[1].cause


def test_freeze_refuses_only_in_bridge_mode():
    parsed = parse_argv(C_ARGV)
    store = StateDir('/nonexistent', 'MTProxy')
    unit, container = SystemdRuntime(store), ContainerRuntime(store, docker=object())
    bridge.check_at_freeze({'service': 'MTProxy'}, parsed, {'client_ports': [443]}, unit)
    bridge.check_at_freeze({'service': 'MTProxy', 'handover': 'restart'}, parsed, {'client_ports': [443]}, container)
    with pytest.raises(bridge.Refusal, match='not method=container'):
        bridge.check_at_freeze({'service': 'MTProxy', 'handover': 'bridge'}, parsed, {'client_ports': [443]},
                               container)


# --- leftovers --------------------------------------------------------------------------------------

class FakeSystemd(object):
    def __init__(self, props):
        self.props = props

    def show(self, *props):
        return dict(self.props)


def leftovers(fake, check_mode=False, tmp_path=None):
    return bridge.clear_leftovers('MTProxy', str(tmp_path or '/nonexistent'), check_mode, fake.which, fake.run,
                                  FakeSystemd(fake.unit))


def test_no_leftovers_costs_one_look_per_backend_and_removes_nothing():
    fake = FakeHost(programs=('nft', 'iptables'))
    assert leftovers(fake) == []
    assert fake.ran[0] == ['/usr/sbin/nft', 'list', 'table', 'inet', TABLE]
    assert not [a for a in fake.ran if 'delete' in a or '-X' in a or '-D' in a]


def test_leftover_table_is_found_and_deleted():
    fake = FakeHost(programs=('nft',), present=('nft',))
    found = leftovers(fake)
    assert found == ['a redirect left by an interrupted run (nftables table inet %s)' % TABLE]
    assert ['/usr/sbin/nft', 'delete', 'table', 'inet', TABLE] in fake.ran


def test_leftover_iptables_chains_are_found_and_removed():
    fake = FakeHost(programs=('iptables',), present=('iptables',))
    found = leftovers(fake)
    assert len(found) == 1 and 'iptables chains' in found[0]
    assert ['/usr/sbin/iptables', '-w', '5', '-t', 'nat', '-X', CHAINS['local']] in fake.ran


def test_leftovers_in_check_mode_are_only_reported():
    fake = FakeHost(programs=('nft',), present=('nft',),
                    unit={'LoadState': 'loaded', 'ActiveState': 'active', 'SubState': 'running'})
    found = leftovers(fake, check_mode=True)
    assert len(found) == 2
    assert not [a for a in fake.ran if 'delete' in a or a[:2] == ['systemctl', 'stop']]


def test_leftover_bridge_unit_found_running_or_failed(monkeypatch):
    stopped = []
    monkeypatch.setattr(bridge, 'cleanup', lambda unit, env=None: stopped.append((unit, env)))
    for state in (('active', 'running'), ('failed', 'failed'), ('active', 'exited')):
        fake = FakeHost(programs=(), unit={'LoadState': 'loaded', 'ActiveState': state[0], 'SubState': state[1]})
        found = leftovers(fake)
        assert found == ['a bridge left by an interrupted run (MTProxy-bridge.service, %s/%s)' % state]
    assert stopped[0] == ('MTProxy-bridge.service', '/nonexistent/MTProxy/bridge.env')
    for props in ({'LoadState': 'not-found', 'ActiveState': 'inactive', 'SubState': 'dead'},
                  {'LoadState': 'loaded', 'ActiveState': 'inactive', 'SubState': 'dead'}, {}):
        assert not bridge.leftover_unit(props)


# --- the bridge unit ---------------------------------------------------------------------------------

class TeardownOnly:
    def __init__(self, teardown):
        self.argvs = teardown

    def teardown(self):
        return self.argvs


def test_bridge_unit_bounds_its_life_and_takes_the_redirect_with_it(tmp_path, monkeypatch):
    state = tmp_path / 'MTProxy'
    state.mkdir()
    manifest = {'argv': C_ARGV, 'stats_port': 8888, 'client_ports': [443], 'unit_name': 'MTProxy.service',
                'unit': {'working_directory': '/opt/MTProxy', 'user': None, 'group': None, 'environment': {},
                         'environment_files': []}}
    (state / 'manifest.json').write_text(json.dumps(manifest))
    teardown = [['/usr/sbin/nft', 'delete', 'table', 'inet', TABLE]]
    go = tmp_path / 'mtproto-proxy-go'
    go.write_text('#!/bin/sh\n')
    go.chmod(0o755)
    # systemctl show of the service (its credentials and limits, which the bridge runs with too).
    monkeypatch.setattr(process, 'run', lambda argv, timeout=60, text=None: (
        0, 'User=mtproxy\nLimitNOFILE=65536\nLimitNOFILESoft=1024\n', ''))
    handover = bridge.Handover(runtime_for(StateDir(str(tmp_path), 'MTProxy')), drain_s=10, ready_timeout=15,
                               stop_timeout=10, lifetime_s=105)
    handover.backend = TeardownOnly(teardown)
    instance = handover.bridge_candidate(str(go), 'go')
    instance.prepare(str(go))
    argv, command, stats_port, ports = instance.argv, instance.command(), instance.stats_port, instance.client_ports
    assert command[:3] == ['systemd-run', '--quiet', '--unit=MTProxy-bridge.service']
    assert '--description=mtproxy.cutover bridge of %s' % go in command
    assert '--property=User=mtproxy' in command and '--property=LimitNOFILE=1024:65536' in command
    split = command.index('--')
    assert '--property=RuntimeMaxSec=140' in command[:split]
    assert '--property=ExecStopPost=-+/usr/sbin/nft delete table inet %s' % TABLE in command[:split]
    assert command[split + 1:] == argv
    assert argv[0].endswith('mtproto-proxy-go') and str(ports[0]) in argv and str(stats_port) in argv
    assert 443 not in ports and '443' not in argv
    assert instance.log_path.endswith('/MTProxy/bridge.log') and instance.env_path.endswith('/MTProxy/bridge.env')


def test_probe_mark_is_off_unless_a_handover_runs():
    assert probe.PROBE_MARK == 0


def test_a_lowered_conntrack_timeout_left_behind_is_restored(tmp_path, monkeypatch):
    (tmp_path / 'MTProxy').mkdir()
    saved = tmp_path / 'MTProxy' / BRIDGE_CONNTRACK
    saved.write_text('{"close_timeout": 10}\n')
    restored = []
    monkeypatch.setattr(bridge, 'restore_close_timeout', lambda path, seconds: restored.append((path, seconds)))
    fake = FakeHost(programs=())
    assert leftovers(fake, check_mode=True, tmp_path=tmp_path) == [
        'a conntrack TCP CLOSE timeout of 0 s left by an interrupted run (restored to 10 s)']
    assert restored == []
    leftovers(fake, tmp_path=tmp_path)
    assert restored == [(str(saved), 10)]
    assert bridge.saved_close_timeout(str(tmp_path / 'missing')) == 10


def test_open_sockets_from_proc_net_tcp():
    table = '\n'.join([
        '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
        '   0: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1',  # LISTEN
        '   1: 0100007F:01BB 0100007F:A2C4 01 00000000:00000000 00:00000000 00000000 65534        0 2',  # server side
        '   2: 0100007F:A2C4 0100007F:01BB 01 00000000:00000000 00:00000000 00000000     0        0 3',  # client side
        '   3: 0100007F:01BB 0100007F:A2C6 06 00000000:00000000 03:00000000 00000000     0        0 0',  # TIME_WAIT
        '   0: 0000000000000000FFFF00000100007F:01BB 0000000000000000FFFF00000100007F:A2C8 01 00000000:00000000 '
        '00:00000000 00000000 65534 0 5',
        '   1: 00000000000000000000000001000000:01BB 00000000000000000000000001000000:A2CA 08 00000000:00000000 '
        '00:00000000 00000000 65534 0 6',
    ])
    assert proc.open_sockets(table) == {('127.0.0.1', 0xA2C4, 443), ('127.0.0.1', 443, 0xA2C4),
                                        ('127.0.0.1', 0xA2C8, 443), ('::1', 0xA2CA, 443)}


def test_local_addresses():
    cache = {}
    assert bridge.is_local_address('127.0.0.1', cache) and cache == {'127.0.0.1': True}
    assert not bridge.is_local_address('192.0.2.1', cache)
    assert not bridge.is_local_address(None)
