"""mtproxy_wire: obfuscated2, the client transports and both backend protocols, end against end.

That these ends agree with the real binaries was checked by hand with builds of the public sources
(the figures are in tests/fixtures/real-stats/README.md); here each rule is pinned so that a change
that breaks it fails.
"""
import hashlib
import os
import struct

import pytest

import mtproxy_wire as wire
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SECRET = bytes.fromhex("00112233445566778899aabbccddeeff")
AES_PWD = hashlib.sha512(b"test aes-pwd").hexdigest().encode()  # 128 bytes, like the harness's
PROXY = ("127.0.0.1", 40001)
BACKEND = ("127.0.0.1", 18882)


@pytest.mark.parametrize("tag", wire.TRANSPORT_TAGS)
def test_obfuscated2_client_and_proxy_agree_on_tag_dc_and_both_streams(tag):
    header, encrypt, decrypt = wire.client_handshake(SECRET, tag, dc=-2)
    tag_seen, dc, index, receive, reply = wire.accept_handshake(header, [os.urandom(16), SECRET])
    assert (tag_seen, dc, index) == (tag, -2, 1)
    assert receive.update(encrypt.update(b"client->proxy!!!")) == b"client->proxy!!!"
    assert decrypt.update(reply.update(b"proxy->client")) == b"proxy->client"


def test_obfuscated2_header_is_sent_encrypted_from_byte_56_with_the_secret_mixed_key():
    header, _encrypt, _decrypt = wire.client_handshake(SECRET, wire.TAG_INTERMEDIATE, dc=2)
    key = hashlib.sha256(header[8:40] + SECRET).digest()
    plain = Cipher(algorithms.AES(key), modes.CTR(header[40:56])).decryptor().update(header)
    assert plain[56:60] == wire.TAG_INTERMEDIATE and struct.unpack("<h", plain[60:62])[0] == 2
    assert header[56:60] != wire.TAG_INTERMEDIATE


def test_a_plain_tag_header_or_a_wrong_secret_is_an_invalid_handshake():
    # What the old test client sent: the tag in clear at 56..60. Neither real binary accepts it.
    plain_tag = os.urandom(56) + wire.TAG_INTERMEDIATE + os.urandom(4)
    assert wire.accept_handshake(plain_tag, [SECRET]) is None
    header, _encrypt, _decrypt = wire.client_handshake(SECRET)
    assert wire.accept_handshake(header, [os.urandom(16)]) is None
    assert wire.accept_handshake(header, []) is None


def test_without_a_secret_the_raw_header_bytes_are_the_key():
    header, encrypt, _decrypt = wire.client_handshake(None, wire.TAG_ABRIDGED, dc=5)
    accepted = wire.accept_handshake(header, [])
    assert accepted[:3] == (wire.TAG_ABRIDGED, 5, 0)
    assert accepted[3].update(encrypt.update(b"abcd")) == b"abcd"


def test_client_headers_never_start_like_another_transport():
    for _round in range(300):
        header, _encrypt, _decrypt = wire.client_handshake(SECRET)
        assert header[0] != 0xEF and header[:4] not in wire._RESERVED_FIRST_WORDS and header[4:8] != b"\0" * 4


@pytest.mark.parametrize("secret_text", ["00112233445566778899AABBCCDDEEFF", "dd00112233445566778899aabbccddeeff"])
def test_parse_secret_takes_plain_and_prefixed_hex(secret_text):
    assert wire.parse_secret(secret_text) == SECRET


def test_parse_secret_refuses_anything_else():
    with pytest.raises(ValueError):
        wire.parse_secret("0011")


@pytest.mark.parametrize("tag", wire.TRANSPORT_TAGS)
def test_frames_round_trip_in_every_transport_split_anywhere(tag):
    packets = [wire.req_pq_multi(), os.urandom(64), os.urandom(4 * 200)]
    stream = b"".join(wire.encode_frame(tag, p) for p in packets)
    reader = wire.FrameReader(tag)
    got = []
    for offset in range(0, len(stream), 7):
        got += reader.feed(stream[offset:offset + 7])
    assert got == packets


@pytest.mark.parametrize("size", [0, 6, wire.MAX_CLIENT_FRAME + 4])
def test_an_intermediate_length_that_is_zero_unaligned_or_above_4_mib_is_refused(size):
    with pytest.raises(wire.WireError):
        wire.FrameReader(wire.TAG_INTERMEDIATE).feed(struct.pack("<I", size))


def test_req_pq_multi_is_the_40_byte_unencrypted_packet_both_binaries_forward():
    packet = wire.req_pq_multi()
    assert len(packet) == 40 and packet[:8] == b"\0" * 8
    assert struct.unpack("<I", packet[16:20])[0] == 20
    assert struct.unpack("<I", packet[20:24])[0] == wire.REQ_PQ_MULTI
    assert wire.forwardable(packet)


@pytest.mark.parametrize("packet", [
    os.urandom(40).replace(b"\0", b"\1"),  # random: auth_key_id != 0 and under 56 bytes
    b"\0" * 8 + os.urandom(8) + struct.pack("<II", 20, 0x12345678) + os.urandom(16),  # unknown function
    b"\0" * 8 + os.urandom(8) + struct.pack("<II", 200, wire.REQ_PQ_MULTI) + os.urandom(16),  # bad length
    b"\0" * 24,  # under 28 bytes
], ids=["encrypted-under-56-bytes", "unknown-function", "bad-length", "under-28-bytes"])
def test_packets_the_binaries_do_not_forward(packet):
    assert not wire.forwardable(packet)


def test_an_encrypted_packet_of_56_bytes_is_forwarded():
    assert wire.forwardable(b"\1" * 8 + os.urandom(48))


def test_go_frames_split_and_refuse_above_8_mib():
    reader = wire.GoFrameReader()
    assert reader.feed(wire.go_frame(b"abcd") + wire.go_frame(b"")[:2]) == [b"abcd"]
    assert reader.feed(b"\0\0") == [b""]
    with pytest.raises(wire.WireError):
        wire.GoFrameReader().feed(struct.pack("<I", wire.MAX_BACKEND_FRAME + 1))


def rpc_pair():
    proxy = wire.RpcSession("proxy", PROXY, BACKEND, AES_PWD)
    backend = wire.RpcSession("backend", BACKEND, PROXY, AES_PWD)
    return proxy, backend


def handshake(proxy, backend):
    nonce = proxy.start()
    assert len(nonce) == 44 and wire.is_rpc_nonce_start(nonce)
    backend_nonce = backend.feed(nonce)[0]
    assert len(backend_nonce) == 44 and not backend.ready
    proxy_handshake = proxy.feed(backend_nonce)[0]
    assert len(proxy_handshake) == 48 and not proxy.ready  # 44-byte frame + one filler word
    backend_handshake = backend.feed(proxy_handshake)[0]
    assert backend.ready and len(backend_handshake) % 16 == 0
    assert proxy.feed(backend_handshake) == (b"", [])
    assert proxy.ready


def test_rpc_nonce_handshake_then_proxy_req_and_ans_with_the_same_ext_conn_id():
    proxy, backend = rpc_pair()
    handshake(proxy, backend)
    packet = wire.req_pq_multi()
    request = wire.proxy_req(0x40000C, ("127.0.0.1", 51000), ("127.0.0.1", 443), packet)
    _out, messages = backend.feed(proxy.send(request))
    flags, ext_conn_id, data = wire.parse_proxy_req(messages[0])
    assert (flags, ext_conn_id, data) == (wire.RPC_REQ_FLAGS_INTERMEDIATE, 0x40000C, packet)
    _out, answers = proxy.feed(backend.send(wire.proxy_ans(ext_conn_id, data)))
    assert wire.op_of(answers[0]) == wire.RPC_PROXY_ANS and answers[0][16:] == packet
    # every encrypted write is padded to 16 bytes, and the chains go on across messages
    for _round in range(3):
        sent = proxy.send(wire.close_conn(ext_conn_id))
        assert len(sent) % 16 == 0
        assert backend.feed(sent)[1] == [wire.close_conn(ext_conn_id)]


def test_the_backend_waits_for_the_proxys_handshake_and_an_eager_one_is_refused():
    proxy, backend = rpc_pair()
    backend_nonce = backend.feed(proxy.start())[0]
    assert backend_nonce and not backend.ready  # the nonce alone: no handshake before the proxy's
    # A backend that sends its handshake in the nonce's segment: the real C drops the connection.
    with pytest.raises(wire.WireError, match="after the RPC nonce"):
        proxy.feed(backend_nonce + b"\0" * 48)


def test_rpc_keys_depend_on_the_connection_addresses():
    nonces = (os.urandom(16), os.urandom(16), 1000000)
    keys = wire._rpc_key(b"CLIENT", *nonces, PROXY, BACKEND, AES_PWD)
    assert wire._rpc_key(b"CLIENT", *nonces, ("127.0.0.1", PROXY[1] + 1), BACKEND, AES_PWD) != keys
    assert wire._rpc_key(b"CLIENT", *nonces, PROXY, ("127.0.0.2", BACKEND[1]), AES_PWD) != keys
    # A backend that sees another proxy port derives other keys: the proxy's handshake never completes.
    # What the wrong keys decrypt is random: a bad length or CRC (an error), or a length longer than
    # what came (it waits for more). Both are a refusal; only a completed handshake would not be.
    proxy = wire.RpcSession("proxy", PROXY, BACKEND, AES_PWD)
    backend = wire.RpcSession("backend", BACKEND, ("127.0.0.1", PROXY[1] + 1), AES_PWD)
    proxy_handshake = proxy.feed(backend.feed(proxy.start())[0])[0]
    try:
        answer, messages = backend.feed(proxy_handshake)
    except wire.WireError:
        answer, messages = b"", []
    assert (answer, messages, backend.ready) == (b"", [], False)


def test_rpc_refuses_another_aes_pwd_a_bad_crc_and_a_wrong_seq():
    proxy, _backend = rpc_pair()
    other = wire.RpcSession("backend", BACKEND, PROXY, hashlib.sha512(b"other").hexdigest().encode())
    with pytest.raises(wire.WireError, match="another aes-pwd"):
        other.feed(proxy.start())
    nonce = bytearray(wire.RpcSession("proxy", PROXY, BACKEND, AES_PWD).start())
    nonce[20] ^= 1
    with pytest.raises(wire.WireError, match="CRC"):
        wire.RpcSession("backend", BACKEND, PROXY, AES_PWD).feed(bytes(nonce))
    proxy, backend = rpc_pair()
    handshake(proxy, backend)
    proxy.out_seq += 1
    with pytest.raises(wire.WireError, match="seq"):
        backend.feed(proxy.send(wire.close_conn(1)))


def test_rpc_refuses_a_nonce_from_a_clock_more_than_30_s_off():
    late = wire.RpcSession("proxy", PROXY, BACKEND, AES_PWD, now=lambda: 1000000.0)
    with pytest.raises(wire.WireError, match="30 s"):
        wire.RpcSession("backend", BACKEND, PROXY, AES_PWD, now=lambda: 1000031.0).feed(late.start())


def test_an_aes_pwd_outside_32_to_256_bytes_is_refused():
    with pytest.raises(wire.WireError):
        wire.RpcSession("proxy", PROXY, BACKEND, b"short")
