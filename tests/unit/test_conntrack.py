"""Netfilter netlink messages of module_utils/_handover/conntrack.py, built and parsed without a kernel.

The same messages were sent to the kernel of a test host (tests/integration/test_module_bridge.py,
the bench): DEFAULT_GET/SET of the TCP CLOSE timeout and the deletion of CLOSE entries.
"""
import socket
import struct

from ansible_collections.mtproxy.cutover.plugins.module_utils._handover import conntrack as ct


def test_attributes_are_padded_and_parsed_back():
    one = ct.attr(7, b'\x06')
    assert len(one) == 8 and one[:4] == struct.pack('=HH', 5, 7)
    both = one + ct.nested(4, ct.attr(8, struct.pack('!I', 10)))
    found = ct.attrs_of(both)
    assert found[7] == b'\x06'
    assert ct.attrs_of(found[4]) == {8: struct.pack('!I', 10)}
    assert ct.attrs_of(b'\x02\x00') == {}


def test_timeout_requests_name_tcp_and_the_close_state_only():
    request = ct.timeout_set_request(0, seq=5)
    length, kind, flags, seq, _pid = struct.unpack_from('=IHHII', request)
    assert length == len(request) and seq == 5
    assert kind == (ct.NFNL_SUBSYS_CTNETLINK_TIMEOUT << 8) | ct.IPCTNL_MSG_TIMEOUT_DEFAULT_SET
    assert flags == ct.NLM_F_REQUEST | ct.NLM_F_ACK
    found = ct.attrs_of(request[20:])
    assert found[ct.CTA_TIMEOUT_L4PROTO] == b'\x06'
    assert found[ct.CTA_TIMEOUT_L3PROTO] == struct.pack('!H', socket.AF_INET)
    assert ct.attrs_of(found[ct.CTA_TIMEOUT_DATA]) == {ct.CTA_TIMEOUT_TCP_CLOSE: struct.pack('!I', 0)}
    get = ct.timeout_get_request(seq=6)
    assert struct.unpack_from('=IHH', get)[1] == (8 << 8) | ct.IPCTNL_MSG_TIMEOUT_DEFAULT_GET
    assert ct.CTA_TIMEOUT_DATA not in ct.attrs_of(get[20:])


def test_close_timeout_of_a_default_get_answer():
    data = ct.nested(ct.CTA_TIMEOUT_DATA, ct.attr(7, struct.pack('!I', 120)),
                     ct.attr(ct.CTA_TIMEOUT_TCP_CLOSE, struct.pack('!I', 10)))
    payload = struct.pack('=BBH', socket.AF_INET, 0, 0) + ct.attr(ct.CTA_TIMEOUT_L4PROTO, b'\x06') + data
    assert ct.close_timeout_of(payload) == 10
    assert ct.close_timeout_of(struct.pack('=BBH', 2, 0, 0)) is None


def tuple_attr(kind, sport, dport, proto=6):
    ip = ct.nested(ct.CTA_TUPLE_IP, ct.attr(1, socket.inet_aton('127.0.0.1')), ct.attr(2, socket.inet_aton('127.0.0.1')))
    ports = ct.nested(ct.CTA_TUPLE_PROTO, ct.attr(ct.CTA_PROTO_NUM, bytes([proto])),
                      ct.attr(ct.CTA_PROTO_SRC_PORT, struct.pack('!H', sport)),
                      ct.attr(ct.CTA_PROTO_DST_PORT, struct.pack('!H', dport)))
    return ct.nested(kind, ip, ports)


def dump_payload(sport, dport, reply_sport, state, proto=6, family=socket.AF_INET, entry_id=None):
    info = ct.nested(ct.CTA_PROTOINFO, ct.nested(ct.CTA_PROTOINFO_TCP, ct.attr(ct.CTA_PROTOINFO_TCP_STATE,
                                                                               bytes([state]))))
    ident = ct.attr(ct.CTA_ID, struct.pack('!I', entry_id)) if entry_id is not None else b''
    return (struct.pack('=BBH', family, 0, 0) + tuple_attr(ct.CTA_TUPLE_ORIG, sport, dport, proto)
            + tuple_attr(ct.CTA_TUPLE_REPLY, reply_sport, sport, proto) + info + ident)


def test_entry_of_a_dump_message():
    entry = ct.entry_of(dump_payload(41000, 443, 40001, ct.TCP_CONNTRACK_CLOSE))
    assert entry['family'] == socket.AF_INET and entry['proto'] == 6 and entry['state'] == ct.TCP_CONNTRACK_CLOSE
    assert (entry['src'], entry['sport'], entry['dst'], entry['dport']) == ('127.0.0.1', 41000, '127.0.0.1', 443)
    assert entry['reply_sport'] == 40001 and entry['id'] is None
    assert ct.entry_of(dump_payload(41000, 443, 443, 3, entry_id=0xdeadbeef))['id'] == 0xdeadbeef


def test_stale_entries_are_those_no_open_socket_holds():
    established = 3
    entries = [ct.entry_of(dump_payload(41000, 443, 443, established)),            # a live client of the service
               ct.entry_of(dump_payload(41002, 443, 443, established)),            # ended while untracked
               ct.entry_of(dump_payload(41004, 443, 40001, established)),          # redirected to a gone bridge
               ct.entry_of(dump_payload(41006, 443, 443, ct.TCP_CONNTRACK_CLOSE)),  # reset by a server
               ct.entry_of(dump_payload(41008, 8888, 8888, established)),          # another port
               ct.entry_of(dump_payload(41010, 443, 443, established, proto=17))]  # not TCP
    live = {('127.0.0.1', 41000, 443)}
    doomed = ct.stale(entries, [443], live, lambda address: True)
    assert [e['sport'] for e in doomed] == [41002, 41004, 41006]
    # A connection of this host to another host's port 443 is none of its business.
    assert ct.stale(entries, [443], live, lambda address: False) == []


def test_stale_entries_picked_up_from_the_server_side_and_those_a_local_client_holds():
    # Tracking that started mid-way picked these up from the server's answer: they run from port 443
    # to the client, and a SYN of the client's from the same port matches them as their answer.
    close_wait, time_wait = 5, 7
    entries = [ct.entry_of(dump_payload(443, 41000, 41000, close_wait)),   # both sockets gone
               ct.entry_of(dump_payload(443, 41002, 41002, time_wait)),    # the server's socket still open
               ct.entry_of(dump_payload(443, 41004, 41004, close_wait)),   # the client's socket still open
               ct.entry_of(dump_payload(41006, 443, 40001, 3)),            # redirected, the client's socket open
               ct.entry_of(dump_payload(8888, 41008, 41008, close_wait))]  # another port
    live = {('127.0.0.1', 41002, 443), ('127.0.0.1', 443, 41004), ('127.0.0.1', 443, 41006)}
    assert [(e['sport'], e['dport']) for e in ct.stale(entries, [443], live, lambda address: True)] == [(443, 41000)]
    assert ct.stale(entries, [443], live, lambda address: False) == []


def test_entries_redirected_to_a_bridge():
    entries = [ct.entry_of(dump_payload(41000, 443, 40001, 3)), ct.entry_of(dump_payload(41002, 443, 443, 3)),
               ct.entry_of(dump_payload(41004, 40001, 40001, 3))]
    assert [e['sport'] for e in ct.redirected_to(entries, [40001])] == [41000]


def test_delete_request_carries_the_original_tuple_as_dumped():
    entry = ct.entry_of(dump_payload(41000, 443, 443, ct.TCP_CONNTRACK_CLOSE))
    request = ct.delete_request(entry, seq=9)
    _length, kind, flags, _seq, _pid = struct.unpack_from('=IHHII', request)
    assert kind == (ct.NFNL_SUBSYS_CTNETLINK << 8) | ct.IPCTNL_MSG_CT_DELETE and flags & ct.NLM_F_ACK
    assert request[16] == socket.AF_INET
    assert ct.attrs_of(request[20:])[ct.CTA_TUPLE_ORIG] == entry['orig']
    assert ct.CTA_ID not in ct.attrs_of(request[20:])


def test_delete_request_names_the_dumped_entry_by_its_id():
    # The kernel deletes nothing (ENOENT) when a newer connection has taken the tuple since the dump.
    entry = ct.entry_of(dump_payload(41000, 443, 443, ct.TCP_CONNTRACK_CLOSE, entry_id=77))
    found = ct.attrs_of(ct.delete_request(entry, seq=9)[20:])
    assert found[ct.CTA_TUPLE_ORIG] == entry['orig'] and found[ct.CTA_ID] == struct.pack('!I', 77)


def test_messages_of_a_datagram():
    done = struct.pack('=IHHII', 20, ct.NLMSG_DONE, 2, 1, 0) + b'\0' * 4
    error = struct.pack('=IHHII', 36, ct.NLMSG_ERROR, 0, 1, 0) + struct.pack('=i', -1) + b'\0' * 16
    assert [m[0] for m in ct.messages_of(done + error)] == [ct.NLMSG_DONE, ct.NLMSG_ERROR]
