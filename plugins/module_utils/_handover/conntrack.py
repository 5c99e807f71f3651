# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Conntrack through netfilter netlink (stdlib only): the bridge handover's two needs.

A redirect (NAT) is decided once per conntrack entry, and a new SYN with the addresses and ports of
an entry that is still there takes that entry over with its old decision: it misses the redirect
(or goes to the port of an earlier bridge that is gone) and is refused. Such entries are those of
connections a server reset (state CLOSE for ``nf_conntrack_tcp_timeout_close``, 10 s), and those
of flows that ended while nothing tracked them (conntrack runs in a network namespace only while a
table needs it: after a handover's table is deleted, the entries of its flows stay ESTABLISHED for
days). When tracking starts, flows already under way are picked up from whatever packet comes next,
an answer of the server's too: such an entry runs from the client port to the client (measured on a
Debian 13 host: 4 to 15 of them, in CLOSE_WAIT or TIME_WAIT, at each of 12 starts with a client
connecting every 0.5 ms), and a client SYN matches it as its answer direction. The bench measured
1-3 refused connects in a quarter of the flips from such entries. So:

- ``close_timeout`` / ``set_close_timeout``: the network namespace's default TCP CLOSE timeout
  (nfnetlink_cttimeout, the netlink side of that sysctl, also writable where ``/proc/sys`` is
  read-only as in a container), set to 0 while the redirect is in place and restored after;
- ``stale``/``delete``: before the redirect, the entries of connections to this host's client ports
  (either direction) that belong to no open socket of this host are deleted (ctnetlink); after the
  bridge, those redirected to it. A deletion names the entry's id as dumped, so that a connection
  that took the same ports since is never the one deleted.

Messages are built and parsed by pure functions (unit-tested); ``Netlink`` only sends them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket
import struct

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import ConntrackError

NETLINK_NETFILTER = 12
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3fff
NFNETLINK_V0 = 0

NFNL_SUBSYS_CTNETLINK = 1
NFNL_SUBSYS_CTNETLINK_TIMEOUT = 8
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
IPCTNL_MSG_TIMEOUT_DEFAULT_SET = 3
IPCTNL_MSG_TIMEOUT_DEFAULT_GET = 4

CTA_TUPLE_ORIG = 1
CTA_TUPLE_REPLY = 2
CTA_PROTOINFO = 4
CTA_ID = 12
CTA_TUPLE_IP = 1
CTA_IP_V4_SRC = 1
CTA_IP_V4_DST = 2
CTA_IP_V6_SRC = 3
CTA_IP_V6_DST = 4
CTA_TUPLE_PROTO = 2
CTA_PROTO_NUM = 1
CTA_PROTO_SRC_PORT = 2
CTA_PROTO_DST_PORT = 3
CTA_PROTOINFO_TCP = 1
CTA_PROTOINFO_TCP_STATE = 1
CTA_TIMEOUT_L3PROTO = 2
CTA_TIMEOUT_L4PROTO = 3
CTA_TIMEOUT_DATA = 4
CTA_TIMEOUT_TCP_CLOSE = 8

TCP_CONNTRACK_CLOSE = 8
IPPROTO_TCP = 6
RECV_BUFFER = 1 << 16
TIMEOUT_S = 5.0


# ---------------------------------------------------------------------------------------------
# Messages (pure)
# ---------------------------------------------------------------------------------------------

def attr(kind, payload):
    """One netlink attribute, padded to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack('=HH', length, kind) + payload + b'\0' * ((4 - length % 4) % 4)


def nested(kind, *attrs):
    return attr(kind | NLA_F_NESTED, b''.join(attrs))


def attrs_of(data):
    """{type: payload} of a run of attributes (the last of a repeated type wins)."""
    found = {}
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from('=HH', data, offset)
        if length < 4:
            break
        found[kind & NLA_TYPE_MASK] = data[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return found


def message(subsys, kind, flags, family, payload, seq):
    """nlmsghdr + nfgenmsg + payload of one netfilter netlink request."""
    body = struct.pack('=BBH', family, NFNETLINK_V0, 0) + payload
    return struct.pack('=IHHII', 16 + len(body), (subsys << 8) | kind, flags, seq, 0) + body


def messages_of(data):
    """[(type, flags, payload)] of the netlink messages in one datagram."""
    out = []
    offset = 0
    while offset + 16 <= len(data):
        length, kind, flags, _seq, _pid = struct.unpack_from('=IHHII', data, offset)
        if length < 16:
            break
        out.append((kind, flags, data[offset + 16:offset + length]))
        offset += (length + 3) & ~3
    return out


def timeout_get_request(seq):
    payload = attr(CTA_TIMEOUT_L3PROTO, struct.pack('!H', socket.AF_INET)) + attr(CTA_TIMEOUT_L4PROTO, b'\x06')
    return message(NFNL_SUBSYS_CTNETLINK_TIMEOUT, IPCTNL_MSG_TIMEOUT_DEFAULT_GET, NLM_F_REQUEST | NLM_F_ACK,
                   socket.AF_INET, payload, seq)


def timeout_set_request(close_s, seq):
    payload = attr(CTA_TIMEOUT_L3PROTO, struct.pack('!H', socket.AF_INET)) + attr(CTA_TIMEOUT_L4PROTO, b'\x06')
    payload += nested(CTA_TIMEOUT_DATA, attr(CTA_TIMEOUT_TCP_CLOSE, struct.pack('!I', int(close_s))))
    return message(NFNL_SUBSYS_CTNETLINK_TIMEOUT, IPCTNL_MSG_TIMEOUT_DEFAULT_SET, NLM_F_REQUEST | NLM_F_ACK,
                   socket.AF_INET, payload, seq)


def close_timeout_of(payload):
    """The TCP CLOSE timeout (s) in a DEFAULT_GET answer's payload (after nfgenmsg), or None."""
    data = attrs_of(attrs_of(payload[4:]).get(CTA_TIMEOUT_DATA, b''))
    value = data.get(CTA_TIMEOUT_TCP_CLOSE)
    return struct.unpack('!I', value[:4])[0] if value and len(value) >= 4 else None


def dump_request(seq):
    return message(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, socket.AF_UNSPEC, b'', seq)


def entry_of(payload):
    """A conntrack entry of a dump message's payload: family, the raw original tuple, protocol, addresses,
    ports, TCP state and the kernel's id of the entry."""
    family = struct.unpack_from('=B', payload, 0)[0]
    top = attrs_of(payload[4:])

    def ports(tuple_raw):
        proto = attrs_of(attrs_of(tuple_raw).get(CTA_TUPLE_PROTO, b''))
        num = proto.get(CTA_PROTO_NUM)
        src = proto.get(CTA_PROTO_SRC_PORT)
        dst = proto.get(CTA_PROTO_DST_PORT)
        return (num[0] if num else None, struct.unpack('!H', src[:2])[0] if src and len(src) >= 2 else None,
                struct.unpack('!H', dst[:2])[0] if dst and len(dst) >= 2 else None)

    def addresses(tuple_raw):
        ip = attrs_of(attrs_of(tuple_raw).get(CTA_TUPLE_IP, b''))
        for src, dst, fam in ((CTA_IP_V4_SRC, CTA_IP_V4_DST, socket.AF_INET),
                              (CTA_IP_V6_SRC, CTA_IP_V6_DST, socket.AF_INET6)):
            if src in ip and dst in ip:
                return socket.inet_ntop(fam, ip[src]), socket.inet_ntop(fam, ip[dst])
        return None, None

    orig = top.get(CTA_TUPLE_ORIG, b'')
    proto, sport, dport = ports(orig)
    src, dst = addresses(orig)
    _rproto, reply_sport, _rdport = ports(top.get(CTA_TUPLE_REPLY, b''))
    tcp = attrs_of(attrs_of(top.get(CTA_PROTOINFO, b'')).get(CTA_PROTOINFO_TCP, b''))
    state = tcp.get(CTA_PROTOINFO_TCP_STATE)
    entry_id = top.get(CTA_ID)
    return {'family': family, 'orig': orig, 'proto': proto, 'src': src, 'sport': sport, 'dst': dst, 'dport': dport,
            'reply_sport': reply_sport, 'state': state[0] if state else None,
            'id': struct.unpack('!I', entry_id[:4])[0] if entry_id and len(entry_id) >= 4 else None}


def delete_request(entry, seq):
    """Delete the entry with this original tuple, and with this id when the dump gave one (the kernel
    answers ENOENT when another entry has the tuple by now)."""
    payload = nested(CTA_TUPLE_ORIG, entry['orig'])
    if entry.get('id') is not None:
        payload += attr(CTA_ID, struct.pack('!I', entry['id']))
    return message(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, entry['family'],
                   payload, seq)


def stale(entries, ports, live, is_local):
    """The TCP entries of connections to one of ``ports`` on a local address (``is_local(ip)``) that no
    open socket holds.

    An entry runs from the client to the port, or from the port to the client when tracking picked the
    connection up from the server's answer. ``live``: (peer address, peer port, local port) of every
    open socket of the host (not listening, not in TIME_WAIT). An entry is held by the socket that
    answers the client (on the client port, or on a bridge's port if it was redirected) or, for a
    client on this host, by the client's own socket.
    """
    wanted = set(int(p) for p in ports)
    doomed = []
    for e in entries:
        if e['proto'] != IPPROTO_TCP:
            continue
        if e['dport'] in wanted and is_local(e['dst']):
            held = (e['src'], e['sport'], e['reply_sport']) in live or (e['dst'], e['dport'], e['sport']) in live
        elif e['sport'] in wanted and is_local(e['src']):
            held = (e['dst'], e['dport'], e['sport']) in live or (e['src'], e['sport'], e['dport']) in live
        else:
            continue
        if not held:
            doomed.append(e)
    return doomed


def redirected_to(entries, ports):
    """The TCP entries whose answers come from one of ``ports`` (a bridge's) instead of their destination port."""
    wanted = set(int(p) for p in ports)
    return [e for e in entries if e['proto'] == IPPROTO_TCP and e['reply_sport'] in wanted
            and e['reply_sport'] != e['dport']]


# ---------------------------------------------------------------------------------------------
# The socket
# ---------------------------------------------------------------------------------------------

class Netlink(object):
    """A NETLINK_NETFILTER socket; every call is bounded by TIMEOUT_S."""

    def __init__(self):
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            self.sock.settimeout(TIMEOUT_S)
            self.sock.bind((0, 0))
        except (OSError, AttributeError) as exc:
            raise ConntrackError('no netfilter netlink socket: %s' % exc)
        self.seq = os.getpid() & 0xffff

    def close(self):
        self.sock.close()

    def request(self, build):
        """Send build(seq); return the payloads of the answer's messages (a dump's too), raise on an error."""
        self.seq += 1
        try:
            self.sock.send(build(self.seq))
            payloads = []
            while True:
                for kind, _flags, payload in messages_of(self.sock.recv(RECV_BUFFER)):
                    if kind == NLMSG_DONE:
                        return payloads
                    if kind == NLMSG_ERROR:
                        code = struct.unpack_from('=i', payload, 0)[0]
                        if code:
                            raise ConntrackError(os.strerror(-code))
                        return payloads
                    payloads.append(payload)
        except (OSError, socket.timeout) as exc:
            raise ConntrackError(str(exc))


def close_timeout(link):
    payloads = link.request(timeout_get_request)
    for payload in payloads:
        value = close_timeout_of(payload)
        if value is not None:
            return value
    raise ConntrackError('the kernel gave no TCP CLOSE timeout')


def set_close_timeout(link, seconds):
    link.request(lambda seq: timeout_set_request(seconds, seq))


def entries(link):
    return [entry_of(payload) for payload in link.request(dump_request)]


def delete(link, doomed):
    """Delete the entries ``doomed``; returns how many went (one already gone is not counted)."""
    deleted = 0
    for entry in doomed:
        try:
            link.request(lambda seq, entry=entry: delete_request(entry, seq))
            deleted += 1
        except ConntrackError:
            continue
    return deleted
