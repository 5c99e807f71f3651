# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The bridge handover: new clients go to a bridge while the service restarts (handover_bridge).

Neither binary can share its client port or adopt a listening socket, so a restart always leaves
the port closed for a few milliseconds. With the bridge it never refuses:

1. ``Handover.start``: the table (below) comes without its redirect and refusal rules, so that
   conntrack tracks this host's connections from here on. The target binary runs on free side ports
   with the frozen flags as the transient unit ``<service>-bridge.service``, started and judged
   ready like the pre-warm (``prewarm.py``). Its unit carries ``RuntimeMaxSec=`` and an
   ``ExecStopPost=`` that deletes the redirect, so neither outlives a module run that died.
2. ``Handover.divert``: a table of the collection's own (nftables ``inet mtproxy_cutover_<service>``,
   or iptables chains ``MTPXC-<service>-*`` where there is no ``nft``) redirects **new** TCP
   connections (SYN without ACK) to the client port(s) of this host, locally generated ones too, to
   the bridge's port(s). Established flows keep their conntrack entry and stay with the old process.
   The flip's own probes carry ``PROBE_MARK`` (``host.py``), which the redirect skips: the restart
   is judged on the service's own socket, never through the bridge.
3. The service restarts exactly as without a bridge (``switch.restart_measured``).
4. ``Handover.restore``: the redirect rules go (the table's NAT chains stay, empty, so that the
   bridge's open connections keep their translation); new clients reach the service.
5. ``Handover.finish``: the bridge drains until it has no established connection or for
   ``drain_s``, whichever comes first; its counters are read, it is stopped, the table deleted.

A refused connect is counted by the kernel: the RST|ACK with sequence 0 that answers a SYN nobody
listens for, sent from a client port or a bridge port (the flip's marked probes are left out by
their conntrack mark). Before the redirect, conntrack entries of connections to the client ports
that no open socket holds are deleted (those picked up mid-way as tracking started among them),
and while it is there the conntrack TCP CLOSE timeout is 0 (``conntrack.py``): a SYN that reuses
the ports of such an entry would take it over, miss the redirect and be refused. After the bridge, the entries redirected to it are deleted too.
``clear_leftovers`` finds and removes a table, chains or bridge unit of an interrupted run (the
freeze, every switch and so rollback.yml call it).

Every rule matches only this host's own addresses (``fib daddr type local``, or the frozen
``--address``) and the frozen client ports; the targets are the same address's bridge ports.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import json
import os
import re
import shutil
import socket
import time

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import (
    BridgeError, ConntrackError, HostError, PrewarmError)
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import prewarm as candidates
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow.proof import frozen_argv
from ansible_collections.mtproxy.cutover.plugins.module_utils._handover import conntrack
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import probe, process
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.files import read_text, write_atomic
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.proc import established, open_sockets
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.systemd import Systemd
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.process import ms
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import parse_argv
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.refusals import Refusal
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.systemd import (
    CANDIDATE_PROPS, candidate_unit, cleanup)
from ansible_collections.mtproxy.cutover.plugins.module_utils._state import BRIDGE_CONNTRACK, BRIDGE_ENV, StateDir

MODES = ('restart', 'bridge')
# The packet mark of the flip's own probes ("mtpx"); the redirect skips it, the refusal count too.
MARK = 0x6d747078
CAP_NET_ADMIN = 12
NFT_FAMILY = 'inet'
NFT_TABLE_PREFIX = 'mtproxy_cutover_'
IPT_CHAIN_PREFIX = 'MTPXC-'
DRAIN_POLL = 0.05
# After the table came: the time a closing flow's last packets take, before its stale entry is deleted.
SETTLE_S = 0.02
COMMAND_TIMEOUT = 30
# What may start a side port's redirect: one SYN without ACK (a new connection), never a packet of
# a flow conntrack only picks up now (a host without conntrack before the table came).
NFT_SYN = 'tcp flags & (syn | ack) == syn'
NFT_REFUSAL = 'tcp flags & (syn | rst | ack) == rst | ack tcp sequence 0'
# The same in iptables-restore words: the TCP sequence number (4 bytes at 4 past the IPv4 header) is 0.
IPT_REFUSAL = '--tcp-flags SYN,RST,ACK RST,ACK -m u32 --u32 "0>>22&0x3C@4=0"'
WAY_FORWARD = ('install nftables (or iptables) on the host and run the modules as root with CAP_NET_ADMIN '
               '(a container needs --cap-add NET_ADMIN), or flip with mtproxy_cutover_handover: restart')


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------

def base_name(service):
    return service[:-len('.service')] if service.endswith('.service') else service


def safe_name(service):
    """The service name as nftables and iptables accept it in a table or chain name."""
    return re.sub(r'[^A-Za-z0-9_]', '_', base_name(service))


def nft_table(service):
    return NFT_TABLE_PREFIX + safe_name(service)


def ipt_chains(service):
    """The iptables chains of a service (at most 28 characters each)."""
    base = IPT_CHAIN_PREFIX + safe_name(service)[:17]
    return {'local': base + '-out', 'incoming': base + '-in', 'refused': base + '-ref'}


def bridge_unit(service):
    return candidate_unit(service, 'bridge')


# ---------------------------------------------------------------------------------------------
# What the frozen flags say about the redirect
# ---------------------------------------------------------------------------------------------

def bound_address(parsed):
    """(the one address the client ports of a parsed argv are bound to, or None for all; IPv6 needed).

    BridgeError when ``--address`` is not an IP literal (a rule cannot match a name).
    """
    address = parsed.address
    if address:
        try:
            ip = ipaddress.ip_address(address.strip('[]'))
        except ValueError:
            raise BridgeError('--address %s is not an IP address: the redirect matches addresses, not names'
                              % address)
        if ip.is_unspecified:
            return None, ip.version == 6
        return str(ip), ip.version == 6
    return None, bool(parsed.ipv6)


def frozen_client_ports(manifest):
    return [int(p) for p in manifest.get('client_ports') or []]


# ---------------------------------------------------------------------------------------------
# nftables: the ruleset, its counters
# ---------------------------------------------------------------------------------------------

def nft_divert_rule(client_port, bridge_port, address=None):
    """One redirect rule: new connections to this host's ``client_port`` go to ``bridge_port``."""
    if address is None:
        return 'fib daddr type local tcp dport %d %s counter name "served" redirect to :%d' % (
            client_port, NFT_SYN, bridge_port)
    if ':' in address:
        return 'ip6 daddr %s tcp dport %d %s counter name "served" dnat ip6 to [%s]:%d' % (
            address, client_port, NFT_SYN, address, bridge_port)
    return 'ip daddr %s tcp dport %d %s counter name "served" dnat ip to %s:%d' % (
        address, client_port, NFT_SYN, address, bridge_port)


def render_nft(table, pairs, address=None, mark=MARK):
    """The ``nft -f`` script that (re)creates ``table`` redirecting each (client, bridge) port pair.

    It replaces a table of the same name atomically (create, delete, create in one transaction).
    """
    if not pairs:
        raise BridgeError('no client port to redirect')
    rules = [nft_divert_rule(int(c), int(b), address) for c, b in pairs]
    sports = sorted(set([int(c) for c, _b in pairs] + [int(b) for _c, b in pairs]))
    return nft_table_script(table, rules, sports, mark)


def render_nft_tracking(table, mark=MARK):
    """The table without redirect or refusal rules: conntrack tracks this host's connections from now on
    (the marking rule needs it), so that none is picked up mid-way as the redirect comes."""
    return nft_table_script(table, [], [], mark)


def nft_table_script(table, rules, sports, mark):
    refusals = ['\t\ttcp sport { %s } %s counter name "refused"' % (', '.join(str(p) for p in sports), NFT_REFUSAL)] \
        if sports else []
    lines = ['table %s %s {}' % (NFT_FAMILY, table), 'delete table %s %s' % (NFT_FAMILY, table),
             'table %s %s {' % (NFT_FAMILY, table),
             '\tcounter served {', '\t}', '\tcounter refused {', '\t}',
             '\tchain divert_local {', '\t\ttype nat hook output priority -100; policy accept;',
             '\t\tmeta mark 0x%08x ct mark set 0x%08x return' % (mark, mark)]
    lines += ['\t\t' + rule for rule in rules]
    lines += ['\t}', '\tchain divert_incoming {', '\t\ttype nat hook prerouting priority -100; policy accept;']
    lines += ['\t\t' + rule for rule in rules]
    lines += ['\t}', '\tchain refused {', '\t\ttype filter hook output priority 0; policy accept;',
              '\t\tct mark 0x%08x return' % mark] + refusals + ['\t}', '}']
    return '\n'.join(lines) + '\n'


def render_nft_stop_redirect(table):
    """The redirect rules go, the NAT chains stay (open bridge connections keep their translation)."""
    return 'flush chain %s %s divert_local\nflush chain %s %s divert_incoming\n' % (
        NFT_FAMILY, table, NFT_FAMILY, table)


def parse_nft_counters(text):
    """{'served': n, 'refused': n} from ``nft -j list counters table ...``; missing ones are None."""
    counts = {'served': None, 'refused': None}
    try:
        items = json.loads(text).get('nftables') or []
    except (ValueError, AttributeError):
        return counts
    for item in items:
        counter = item.get('counter') if isinstance(item, dict) else None
        if isinstance(counter, dict) and counter.get('name') in counts:
            counts[counter['name']] = int(counter.get('packets') or 0)
    return counts


# ---------------------------------------------------------------------------------------------
# iptables (where nft is not there): the same rules, IPv4 only
# ---------------------------------------------------------------------------------------------

def ipt_divert_args(chain, client_port, bridge_port, address=None):
    match = ['-d', '%s/32' % address] if address else ['-m', 'addrtype', '--dst-type', 'LOCAL']
    target = ['-j', 'DNAT', '--to-destination', '%s:%d' % (address, bridge_port)] if address \
        else ['-j', 'REDIRECT', '--to-ports', str(bridge_port)]
    return ['-A', chain, '-p', 'tcp', '--dport', str(client_port), '--syn'] + match + \
        ['-m', 'comment', '--comment', 'served'] + target


def render_iptables(chains, pairs, address=None, mark=MARK, jumps=True):
    """``iptables-restore --noflush`` input: own chains, jumped to first from OUTPUT and PREROUTING.

    Without ``jumps`` the chains are those of render_iptables_tracking(), already jumped to: declaring
    them again empties them and fills them in the same commit.
    """
    if not pairs:
        raise BridgeError('no client port to redirect')
    if address and ':' in address:
        raise BridgeError('the iptables fallback redirects IPv4 only; --address %s needs nftables' % address)
    sports = ','.join(str(p) for p in sorted(set([int(c) for c, _b in pairs] + [int(b) for _c, b in pairs])))
    divert = [' '.join(ipt_divert_args(chain, int(c), int(b), address))
              for chain in (chains['local'], chains['incoming']) for c, b in pairs]
    refused = ['-A %s -p tcp -m multiport --sports %s %s -m comment --comment refused' % (
        chains['refused'], sports, IPT_REFUSAL)]
    return iptables_script(chains, divert, refused, mark, jumps)


def render_iptables_tracking(chains, mark=MARK):
    """The chains without redirect or refusal rules (see render_nft_tracking)."""
    return iptables_script(chains, [], [], mark, True)


def iptables_script(chains, divert, refused, mark, jumps):
    hexmark = '0x%08x' % mark
    nat = ['*nat', ':%s - [0:0]' % chains['local'], ':%s - [0:0]' % chains['incoming']]
    if jumps:
        nat += ['-I OUTPUT 1 -j %s' % chains['local'], '-I PREROUTING 1 -j %s' % chains['incoming']]
    nat += ['-A %s -m mark --mark %s -j CONNMARK --set-mark %s' % (chains['local'], hexmark, hexmark),
            '-A %s -m mark --mark %s -j RETURN' % (chains['local'], hexmark)] + divert + ['COMMIT']
    flt = ['*filter', ':%s - [0:0]' % chains['refused']]
    if jumps:
        flt.append('-I OUTPUT 1 -j %s' % chains['refused'])
    flt += ['-A %s -m connmark --mark %s -j RETURN' % (chains['refused'], hexmark)] + refused + ['COMMIT']
    return '\n'.join(nat + flt) + '\n'


def parse_iptables_counters(text, chains):
    """{'served': n, 'refused': n} from ``iptables-save -c`` output (served: the local rules + incoming)."""
    counts = {'served': None, 'refused': None}
    own = set(chains.values())
    for line in text.splitlines():
        match = re.match(r'^\[(\d+):\d+\] -A (\S+) .*--comment "?(served|refused)"?', line)
        if match and match.group(2) in own:
            name = match.group(3)
            counts[name] = (counts[name] or 0) + int(match.group(1))
    return counts


def iptables_teardown(binary, chains):
    """argv lists that remove the chains and the jumps to them (each may fail when already gone)."""
    base = [binary, '-w', '5']
    out = []
    for table, hook, chain in (('nat', 'OUTPUT', chains['local']), ('nat', 'PREROUTING', chains['incoming']),
                               ('filter', 'OUTPUT', chains['refused'])):
        out += [base + ['-t', table, '-D', hook, '-j', chain], base + ['-t', table, '-F', chain],
                base + ['-t', table, '-X', chain]]
    return out


# ---------------------------------------------------------------------------------------------
# The host: capability, sockets, commands
# ---------------------------------------------------------------------------------------------

def has_cap_net_admin(status_text):
    """Whether the CapEff line of a /proc/PID/status text has CAP_NET_ADMIN."""
    for line in (status_text or '').splitlines():
        if line.startswith('CapEff:'):
            try:
                return bool(int(line.split(':', 1)[1].strip(), 16) >> CAP_NET_ADMIN & 1)
            except ValueError:
                return False
    return False


def is_local_address(address, cache=None):
    """Whether ``address`` is one of this host's (a socket can be bound to it)."""
    if cache is not None and address in cache:
        return cache[address]
    local = False
    if address:
        try:
            sock = socket.socket(socket.AF_INET6 if ':' in address else socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((address, 0))
                local = True
            finally:
                sock.close()
        except OSError:
            local = False
    if cache is not None:
        cache[address] = local
    return local


def first_line(text):
    lines = [line.strip() for line in (text or '').splitlines() if line.strip()]
    return lines[0] if lines else ''


class Nft(object):
    """The redirect as an nftables table of its own (family inet: IPv4 and IPv6)."""

    name = 'nft'

    def __init__(self, service, binary, run=process.run, feed=process.run_input):
        self.table = nft_table(service)
        self.binary = binary
        self.run = run
        self.feed = feed

    def render(self, pairs, address):
        return render_nft(self.table, pairs, address)

    def check(self, text):
        rc, _out, err = self.feed([self.binary, '-c', '-f', '-'], text)
        return None if rc == 0 else (first_line(err) or 'nft -c exit %d' % rc)

    def track(self):
        self.install(render_nft_tracking(self.table))

    def install(self, text):
        # One transaction: the table it replaces keeps conntrack on until the new one has it.
        rc, _out, err = self.feed([self.binary, '-f', '-'], text)
        if rc != 0:
            raise BridgeError('nft could not install the redirect table %s: %s' % (self.table, first_line(err)))

    def stop_redirect(self):
        rc, _out, err = self.feed([self.binary, '-f', '-'], render_nft_stop_redirect(self.table))
        if rc != 0:
            raise BridgeError('nft could not remove the redirect rules of %s: %s' % (self.table, first_line(err)))

    def counters(self):
        rc, out, _err = self.run([self.binary, '-j', 'list', 'counters', 'table', NFT_FAMILY, self.table],
                                 timeout=COMMAND_TIMEOUT)
        return parse_nft_counters(out) if rc == 0 else {'served': None, 'refused': None}

    def present(self):
        rc, _out, _err = self.run([self.binary, 'list', 'table', NFT_FAMILY, self.table], timeout=COMMAND_TIMEOUT)
        return rc == 0

    def teardown(self):
        return [[self.binary, 'delete', 'table', NFT_FAMILY, self.table]]

    def remove(self):
        for argv in self.teardown():
            self.run(argv, timeout=COMMAND_TIMEOUT)

    def describe(self):
        return 'nftables table %s %s' % (NFT_FAMILY, self.table)


class Iptables(object):
    """The redirect as iptables chains of its own (IPv4), where there is no nft."""

    name = 'iptables'

    def __init__(self, service, binary, run=process.run, feed=process.run_input):
        self.chains = ipt_chains(service)
        self.binary = binary
        self.served = None
        self.tracking = False
        self.restore = os.path.join(os.path.dirname(binary), 'iptables-restore')
        self.save = os.path.join(os.path.dirname(binary), 'iptables-save')
        self.run = run
        self.feed = feed

    def render(self, pairs, address):
        return render_iptables(self.chains, pairs, address, jumps=not self.tracking)

    def check(self, text):
        rc, _out, err = self.run([self.binary, '-w', '5', '-t', 'nat', '-S', 'OUTPUT'], timeout=COMMAND_TIMEOUT)
        return None if rc == 0 else (first_line(err) or 'iptables exit %d' % rc)

    def track(self):
        self.install(render_iptables_tracking(self.chains))
        self.tracking = True

    def install(self, text):
        # Over the tracking chains the rules come in one commit per table, with no gap in the tracking.
        if not self.tracking:
            self.remove()
        rc, _out, err = self.feed([self.restore, '-w', '5', '--noflush'], text)
        if rc != 0:
            self.remove()
            self.tracking = False
            raise BridgeError('iptables-restore could not install the redirect chains: %s' % first_line(err))

    def stop_redirect(self):
        # Rule counters go with their rules: the redirect's count is read first.
        self.served = self.counters()['served']
        for chain in (self.chains['local'], self.chains['incoming']):
            rc, _out, err = self.run([self.binary, '-w', '5', '-t', 'nat', '-F', chain], timeout=COMMAND_TIMEOUT)
            if rc != 0:
                raise BridgeError('iptables could not flush %s: %s' % (chain, first_line(err)))

    def counters(self):
        counts = {'served': None, 'refused': None}
        for table in ('nat', 'filter'):
            rc, out, _err = self.run([self.save, '-c', '-t', table], timeout=COMMAND_TIMEOUT)
            if rc == 0:
                for key, value in parse_iptables_counters(out, self.chains).items():
                    if value is not None:
                        counts[key] = (counts[key] or 0) + value
        if self.served is not None:
            counts['served'] = self.served
        return counts

    def present(self):
        return any(self.run([self.binary, '-w', '5', '-t', table, '-S', chain], timeout=COMMAND_TIMEOUT)[0] == 0
                   for table, chain in (('nat', self.chains['local']), ('nat', self.chains['incoming']),
                                        ('filter', self.chains['refused'])))

    def teardown(self):
        return iptables_teardown(self.binary, self.chains)

    def remove(self):
        for argv in self.teardown():
            self.run(argv, timeout=COMMAND_TIMEOUT)
        self.tracking = False

    def describe(self):
        return 'iptables chains %s' % ', '.join(sorted(self.chains.values()))


def find_program(name):
    """Path of ``name`` on PATH or in the sbin directories a module's PATH may lack; None if absent."""
    return shutil.which(name) or next((p for p in ('/usr/sbin/' + name, '/sbin/' + name)
                                       if os.access(p, os.X_OK)), None)


def backends(service, which=find_program, run=process.run, feed=process.run_input):
    """The redirect backends this host has, best first (nft, then iptables)."""
    found = []
    for cls, program in ((Nft, 'nft'), (Iptables, 'iptables')):
        path = which(program)
        if path:
            found.append(cls(service, path, run, feed))
    return found


# ---------------------------------------------------------------------------------------------
# Can this host do it, and what an interrupted run left
# ---------------------------------------------------------------------------------------------

def support(ports, parsed, service, which=find_program, run=process.run, feed=process.run_input, status_text=None):
    """(backend, None) for the redirect of ``ports`` (the parsed frozen argv's client ports) this host can
    install, or (None, Refusal) with the reason."""
    if status_text is None:
        status_text = read_text('/proc/self/status')
    if not has_cap_net_admin(status_text):
        return None, refusal('the modules run without CAP_NET_ADMIN on this host (a container started without '
                             '--cap-add NET_ADMIN, or not as root), so no redirect can be installed and no probe '
                             'can carry the mark that bypasses it')
    try:
        address, ipv6 = bound_address(parsed)
    except BridgeError as exc:
        return None, refusal(str(exc))
    if not ports:
        return None, refusal('the freeze manifest has no client port to redirect')
    found = backends(service, which, run, feed)
    if not found:
        return None, refusal('neither nft (package nftables) nor iptables is installed on this host')
    why_not = []
    for backend in found:
        if backend.name == 'iptables' and ipv6:
            why_not.append('iptables: the fallback redirects IPv4 only and this proxy takes IPv6 clients (-6 '
                           'or an IPv6 --address)')
            continue
        # Side ports of the check only: nothing is installed.
        problem = backend.check(backend.render([(p, 1) for p in ports], address))
        if problem is None:
            return backend, None
        why_not.append('%s: %s' % (backend.name, problem))
    return None, refusal('no redirect can be installed: %s' % '; '.join(why_not))


def check_at_freeze(params, parsed, result, runtime):
    """The freeze's part: with handover=bridge, raise the Refusal of a host that cannot run it."""
    if params.get('handover') != 'bridge':
        return
    if not runtime.supports_bridge:
        raise refusal('the bridge handover is for the systemd methods (dropin, symlink), not method=%s'
                      % runtime.methods[0])
    _backend, why = support(result.get('client_ports') or [], parsed, params['service'])
    if why is not None:
        raise why


def refusal(cause):
    return Refusal('bridge_unsupported', 'mtproxy_cutover_handover=bridge: %s' % cause, WAY_FORWARD)


def leftover_unit(props):
    """Whether ``systemctl show`` properties describe a bridge unit that is still there."""
    return props.get('LoadState') == 'loaded' and (props.get('ActiveState') not in ('inactive', None, '')
                                                   or props.get('SubState') not in ('dead', None, ''))


def clear_leftovers(service, state_dir, check_mode=False, which=find_program, run=process.run, systemd=None):
    """Find (and unless ``check_mode`` remove) the redirect and bridge an interrupted run left behind.

    Returns what was found, one sentence each. The redirect goes first, so that no client is sent to a
    bridge that is being stopped.
    """
    found = []
    for backend in backends(service, which, run):
        if backend.present():
            found.append('a redirect left by an interrupted run (%s)' % backend.describe())
            if not check_mode:
                backend.remove()
    store = StateDir(state_dir, service)
    saved = store.file(BRIDGE_CONNTRACK)
    if os.path.exists(saved):
        original = saved_close_timeout(saved)
        found.append('a conntrack TCP CLOSE timeout of 0 s left by an interrupted run (restored to %s s)' % original)
        if not check_mode:
            try:
                restore_close_timeout(saved, original)
            except ConntrackError as exc:
                found[-1] = ('a conntrack TCP CLOSE timeout of 0 s left by an interrupted run, which could not be '
                             'restored to %s s: %s' % (original, exc))
    unit = bridge_unit(service)
    systemd = systemd or Systemd(unit)
    try:
        props = systemd.show(*CANDIDATE_PROPS)
    except HostError:
        props = {}
    if leftover_unit(props):
        found.append('a bridge left by an interrupted run (%s, %s/%s)' % (
            unit, props.get('ActiveState'), props.get('SubState')))
        if not check_mode:
            cleanup(unit, store.file(BRIDGE_ENV))
    return found


def saved_close_timeout(path, default=10):
    try:
        with open(path) as handle:
            return int(json.load(handle)['close_timeout'])
    except (IOError, OSError, ValueError, KeyError, TypeError):
        return default


def restore_close_timeout(path, seconds):
    """Put the conntrack CLOSE timeout back and forget the saved value; raises ConntrackError."""
    link = conntrack.Netlink()
    try:
        conntrack.set_close_timeout(link, seconds)
    finally:
        link.close()
    os.unlink(path)


# ---------------------------------------------------------------------------------------------
# The bridge instance and the handover
# ---------------------------------------------------------------------------------------------

class Handover(object):
    """One bridge handover around one restart; ``record`` is what the report shows."""

    def __init__(self, runtime, drain_s=10.0, ready_timeout=15.0, stop_timeout=10.0, lifetime_s=300.0,
                 which=find_program, run=process.run, feed=process.run_input):
        self.runtime = runtime
        self.service = runtime.service
        self.store = runtime.store
        self.drain_s = float(drain_s)
        self.ready_timeout = float(ready_timeout)
        self.stop_timeout = float(stop_timeout)
        self.lifetime_s = float(lifetime_s) + self.drain_s + self.ready_timeout + self.stop_timeout
        self.which = which
        self.run = run
        self.feed = feed
        self.manifest = runtime.manifest
        self.backend = None
        self.instance = None
        self.pairs = []
        self.address = None
        self.diverted_at = None
        self.restored_at = None
        self.record = {'mode': 'bridge', 'backend': None, 'unit': bridge_unit(self.service), 'binary': None,
                       'ports': None, 'ready_ms': None, 'refused': None, 'redirected': None, 'served': None,
                       'dropped': None, 'diverted_ms': None, 'drain_ms': None, 'drained': None,
                       'cut_at_drain': None, 'stop_ms': None, 'conntrack_stale_deleted': None,
                       'conntrack_redirected_deleted': None, 'errors': [],
                       # CLOCK_MONOTONIC of the steps, to line them up with a client-side probe on the host.
                       'monotonic': {}}
        self.conntrack_saved = None

    def check(self):
        """Raise the refusal when this host cannot run the handover; keep the backend otherwise."""
        parsed = parse_argv(frozen_argv(self.manifest))
        backend, why = support(frozen_client_ports(self.manifest), parsed, self.service, self.which, self.run, self.feed)
        if backend is None:
            raise BridgeError(why.message(self.manifest.get('unit_name') or self.service), refused=why.kind,
                              changed=False)
        self.backend = backend
        self.address = bound_address(parsed)[0]
        self.record['backend'] = backend.name
        return backend

    def start(self, binary, flavor, skip_stats=False):
        """Start the bridge (the target binary on side ports) and judge it ready; nothing else changes.

        The bridge is the runtime's candidate in the role 'bridge': it runs as the service would, ends
        after ``lifetime_s`` at the latest and deletes the redirect when it stops, so a module run that
        died leaves neither behind for long. With ``skip_stats`` (a C proxy with -6 aborts on any
        connection to its stats port) only its client ports are judged.
        """
        if self.backend is None:
            self.check()
        self.record['binary'] = binary
        self.track()
        instance = self.bridge_candidate(binary, flavor)
        try:
            started = candidates.start(instance, binary, self.ready_timeout, check_stats=not skip_stats)
        except PrewarmError as exc:
            raise BridgeError('the bridge %s (%s on side ports, started like the pre-warm) did not get ready, so '
                              'nothing was changed: %s' % (instance.unit, binary, exc),
                              changed=False, **dict((k, v) for k, v in exc.details.items() if k != 'changed'))
        self.instance = instance
        self.pairs = list(zip(frozen_client_ports(self.manifest), started['client_ports']))
        self.record.update(ready_ms=started['ready_ms'],
                           ports=[{'client': c, 'bridge': b} for c, b in self.pairs])
        for warning in started.get('warnings') or []:
            self.record['errors'].append(warning)
        return started

    def track(self):
        """Conntrack tracks this host's connections from now on, while the bridge starts.

        Connections under way when tracking starts are picked up from their next packet, some of them
        as if the server had opened them (conntrack.py); they end while the bridge starts, and the
        divert deletes their entries before any client is redirected.
        """
        try:
            self.backend.track()
        except BridgeError as exc:
            raise BridgeError('%s, so nothing was changed' % exc, changed=False)
        self.record['monotonic']['tracked'] = round(time.monotonic(), 6)

    def bridge_candidate(self, binary, flavor):
        """The runtime's candidate in the role 'bridge', bounded in time and taking the redirect with it."""
        # '-': a redirect already gone is fine; '+': with full privileges whatever User= the unit has.
        properties = ['--property=RuntimeMaxSec=%d' % max(1, int(self.lifetime_s))]
        properties += ['--property=ExecStopPost=-+%s' % ' '.join(argv) for argv in self.backend.teardown()]
        return self.runtime.candidate('bridge', flavor, unit_properties=properties,
                                      description='mtproxy.cutover bridge of %s' % binary)

    def divert(self):
        """New connections to the client ports go to the bridge; the flip's probes bypass it."""
        self.record['dropped'] = established([c for c, _b in self.pairs])
        self.guard_conntrack()
        self.backend.install(self.backend.render(self.pairs, self.address))
        self.diverted_at = time.monotonic()
        self.record['monotonic']['diverted'] = round(self.diverted_at, 6)
        probe.PROBE_MARK = MARK
        # Flows that were closing as the table came were picked up mid-way (no FIN seen): once their
        # sockets are gone, their entries go too, before the restart.
        time.sleep(SETTLE_S)
        self.delete_stale()

    def guard_conntrack(self):
        """CLOSE timeout 0 while the redirect is there, and no stale entry on the client ports (best effort)."""
        saved = self.store.file(BRIDGE_CONNTRACK)
        try:
            link = conntrack.Netlink()
            try:
                original = conntrack.close_timeout(link)
                if not os.path.exists(saved):
                    write_atomic(saved, json.dumps({'close_timeout': original}) + '\n', 0o600)
                self.conntrack_saved = saved
                conntrack.set_close_timeout(link, 0)
            finally:
                link.close()
        except ConntrackError as exc:
            self.record['errors'].append('conntrack: %s (a client that reuses the ports of a connection reset in '
                                         'the last 10 s can be refused)' % exc)
            return
        self.delete_stale()

    def delete_stale(self):
        """Delete the conntrack entries to the client ports that no open socket holds (best effort)."""
        try:
            link = conntrack.Netlink()
            try:
                cache = {}
                doomed = conntrack.stale(conntrack.entries(link), [c for c, _b in self.pairs], open_sockets(),
                                         lambda address: is_local_address(address, cache))
                self.record['conntrack_stale_deleted'] = (self.record['conntrack_stale_deleted'] or 0) + \
                    conntrack.delete(link, doomed)
            finally:
                link.close()
        except ConntrackError as exc:
            self.record['errors'].append('conntrack: stale entries stay (%s)' % exc)

    def restore(self):
        """The redirect rules go: new connections reach the service again. Safe to call twice."""
        if self.diverted_at is None or self.restored_at is not None:
            return
        probe.PROBE_MARK = 0
        self.restored_at = time.monotonic()
        self.record['monotonic']['restored'] = round(self.restored_at, 6)
        self.record['diverted_ms'] = ms(self.restored_at - self.diverted_at)
        try:
            self.backend.stop_redirect()
        except BridgeError as exc:
            # Deleting the whole table still ends the redirect (the bridge's clients lose their flows).
            self.record['errors'].append(str(exc))
            self.backend.remove()

    def drain(self):
        """Wait until the bridge has no established connection, or for drain_s."""
        bridge_ports = [b for _c, b in self.pairs]
        start = self.restored_at or time.monotonic()
        deadline = start + self.drain_s
        count = established(bridge_ports)
        while count and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL)
            count = established(bridge_ports)
        self.record.update(drained=count == 0, cut_at_drain=count, drain_ms=ms(time.monotonic() - start))
        self.record['monotonic']['drained'] = round(time.monotonic(), 6)

    def finish(self):
        """Restore, drain, count, stop the bridge, delete the table; never raises. Returns ``record``."""
        steps = [self.restore]
        if self.instance is not None and self.diverted_at is not None:
            steps.append(self.drain)
        steps += [self.count, self.stop, self.remove, self.unguard_conntrack]
        for step in steps:
            try:
                step()
            except (HostError, IOError, OSError) as exc:
                self.record['errors'].append(str(exc))
        probe.PROBE_MARK = 0
        return self.record

    def count(self):
        if self.backend is None or self.diverted_at is None:
            return
        counts = self.backend.counters()
        self.record['redirected'] = counts['served']
        self.record['refused'] = counts['refused']
        if counts['served'] is not None:
            self.record['served'] = max(0, counts['served'] - (counts['refused'] or 0))

    def stop(self):
        if self.instance is None:
            return
        stopped = self.instance.stop(self.stop_timeout)
        self.record['stop_ms'] = stopped.get('stop_ms')
        self.record['monotonic']['stopped'] = round(time.monotonic(), 6)

    def remove(self):
        if self.backend is not None:
            self.backend.remove()

    def unguard_conntrack(self):
        if self.diverted_at is not None:
            # The bridge is gone: the entries of its flows would send a later SYN on the same ports to its port.
            try:
                link = conntrack.Netlink()
                try:
                    self.record['conntrack_redirected_deleted'] = conntrack.delete(
                        link, conntrack.redirected_to(conntrack.entries(link), [b for _c, b in self.pairs]))
                finally:
                    link.close()
            except ConntrackError as exc:
                self.record['errors'].append('conntrack: the entries redirected to the bridge stay (%s)' % exc)
        if self.conntrack_saved is not None and os.path.exists(self.conntrack_saved):
            try:
                restore_close_timeout(self.conntrack_saved, saved_close_timeout(self.conntrack_saved))
            except ConntrackError as exc:
                self.record['errors'].append('conntrack: the CLOSE timeout could not be restored (%s); the next '
                                             'run on this host restores it' % exc)
