"""MTProto wire formats shared by the test client, the test backend and the stand-in.

What each side of a test host says, as the real binaries say it:

* obfuscated2 (client <-> proxy): a 64-byte header whose bytes 8..56 seed two AES-256-CTR streams,
  each key SHA-256(key bytes + 16-byte secret); the header is sent encrypted from byte 56 on, so
  only a peer with the secret reads the transport tag (bytes 56..60: ``ef`` x4 abridged, ``ee`` x4
  intermediate, ``dd`` x4 padded intermediate) and the DC (bytes 60..62, signed 16-bit LE).
  Source: skrashevich/MTProxy@golang internal/proxy/client_transport.go, the C proxy's
  net/net-tcp-rpc-ext-server.c; checked against both real builds (tests/fixtures/real-stats/README.md,
  "Client and backend traffic").
* The Go port's backend frames (proxy -> ``proxy_for`` target): LE32 payload length + payload,
  one reply frame per request frame on the same connection.
* The C proxy's middle-proxy RPC (proxy -> ``proxy_for`` target): CRC32-checked frames with
  per-direction sequence numbers, a nonce exchange keyed by the ``--aes-pwd`` file, AES-256-CBC
  after it, a handshake, then RPC_PROXY_REQ / RPC_PROXY_ANS. Source: TelegramMessenger/MTProxy
  net/net-tcp-rpc-common.c, net/net-tcp-rpc-client.c, net/net-crypto-aes.c,
  mtproto/mtproto-proxy.c; every field checked against the real C build (same README).

Crypto comes from ``cryptography`` (Debian's python3-cryptography on the test hosts), imported on
first use so a process that never handshakes does not pay for the import. Sans-IO: nothing here
opens a socket; callers feed bytes in and write the bytes handed back.
"""
import hashlib
import os
import socket
import struct
import sys
import time
import zlib

OBF2_HEADER_LEN = 64
TAG_ABRIDGED = b"\xef\xef\xef\xef"
TAG_INTERMEDIATE = b"\xee\xee\xee\xee"
TAG_PADDED = b"\xdd\xdd\xdd\xdd"
TRANSPORT_TAGS = (TAG_ABRIDGED, TAG_INTERMEDIATE, TAG_PADDED)
# First words a client must not start its random header with: they would read as another
# transport (plain abridged/intermediate/padded, HTTP, TLS). Source: the C client rules that
# the Go port's client_transport.go mirrors.
_RESERVED_FIRST_WORDS = (b"HEAD", b"POST", b"GET ", b"OPTI", b"\x16\x03\x01\x02", TAG_INTERMEDIATE, TAG_PADDED)

MAX_CLIENT_FRAME = 4 * 1024 * 1024  # Go port: an intermediate length above 4 MiB closes the client
MAX_BACKEND_FRAME = 8 * 1024 * 1024  # Go port: a reply header above 8 MiB is an outbound error

REQ_PQ = 0x60469778
REQ_PQ_MULTI = 0xBE7E8EF1
REQ_DH_PARAMS = 0xD712E4BE
SET_CLIENT_DH_PARAMS = 0xF5045F1F
UNENCRYPTED_FUNCTIONS = (REQ_PQ, REQ_PQ_MULTI, REQ_DH_PARAMS, SET_CLIENT_DH_PARAMS)

RPC_NONCE = 0x7ACB87AA
RPC_HANDSHAKE = 0x7682EEF5
RPC_HANDSHAKE_ERROR = 0x6A27BEDA
RPC_PROXY_REQ = 0x36CEF1EE
RPC_PROXY_ANS = 0x4403DA0D
RPC_CLOSE_CONN = 0x1FCF425D
RPC_CLOSE_EXT = 0x5EB634A2
RPC_SIMPLE_ACK = 0x3BAC409B
RPC_PING = 0x5730A2DF
RPC_PONG = 0x8430EAA7
RPC_CRYPTO_AES = 1
RPC_NONCE_FRAME_LEN = 44
RPC_MAX_CLOCK_SKEW_S = 30
RPC_HANDSHAKE_TIMEOUT_S = 3.0  # the C proxy fails a target connection not ready after 3 s
# RPC_PROXY_REQ flags the real C proxy sends for an obfuscated2 intermediate client with an
# unencrypted packet: medium | EXTMODE2 | ext-server | unencrypted (captured: 0x20021002).
RPC_REQ_FLAGS_INTERMEDIATE = 0x20021002
RPC_REQ_FLAGS_ABRIDGED = 0x40021002
FILLER = b"\x04\x00\x00\x00"


class WireError(Exception):
    """Bytes that break the protocol; the message says which rule."""


# ---------------------------------------------------------------- crypto (cryptography)

def load_crypto():
    """Import the crypto now rather than on the first handshake (e.g. before dropping privileges)."""
    _ciphers()


def _ciphers():
    """cryptography's Cipher, algorithms and modes; the site packages are added when the process
    runs with ``python3 -S`` (the stand-in's launcher) so Debian's python3-cryptography is found."""
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    except ImportError:
        if not sys.flags.no_site:
            raise
        import site
        for path in site.getsitepackages():
            if path not in sys.path:
                sys.path.append(path)
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    return Cipher, algorithms, modes


def aes_ctr(key, iv):
    """An AES-256-CTR stream (encrypt and decrypt are the same operation): ``.update(bytes)``."""
    cipher, algorithms, modes = _ciphers()
    return cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()


def aes_cbc(key, iv, encrypt):
    """An AES-256-CBC chain without padding for a whole connection: ``.update(bytes)`` takes any
    length and returns whole 16-byte blocks (the rest is kept for the next call)."""
    cipher, algorithms, modes = _ciphers()
    ctx = cipher(algorithms.AES(key), modes.CBC(iv))
    return ctx.encryptor() if encrypt else ctx.decryptor()


# ---------------------------------------------------------------- obfuscated2

def parse_secret(text):
    """16 secret bytes from ``-S``'s 32 hex digits (a ``dd``/``ee`` prefix of a client link is
    stripped); ValueError otherwise."""
    text = text.strip().lower()
    if len(text) == 34 and text[:2] in ("dd", "ee"):
        text = text[2:]
    if len(text) != 32:
        raise ValueError("a secret is 32 hex digits")
    return bytes.fromhex(text)


def _obf2_keys(header, secret):
    """(client->proxy key, iv, proxy->client key, iv) of a 64-byte header."""
    reverse = header[8:56][::-1]
    up_key, up_iv = header[8:40], header[40:56]
    down_key, down_iv = reverse[:32], reverse[32:48]
    if secret is not None:
        up_key = hashlib.sha256(up_key + secret).digest()
        down_key = hashlib.sha256(down_key + secret).digest()
    return up_key, up_iv, down_key, down_iv


def client_handshake(secret, tag=TAG_INTERMEDIATE, dc=2):
    """A client's obfuscated2 opening: (64 bytes to send, encrypt stream, decrypt stream).

    ``secret``: 16 bytes, or None for a proxy with no ``-S``. The streams continue after the
    header: encrypt every later byte sent with the first, decrypt every byte received with the
    second."""
    if tag not in TRANSPORT_TAGS:
        raise ValueError("unknown transport tag %r" % tag)
    while True:
        header = bytearray(os.urandom(OBF2_HEADER_LEN))
        if header[0] != 0xEF and bytes(header[:4]) not in _RESERVED_FIRST_WORDS and header[4:8] != b"\0\0\0\0":
            break
    header[56:60] = tag
    header[60:62] = struct.pack("<h", dc)
    up_key, up_iv, down_key, down_iv = _obf2_keys(bytes(header), secret)
    send = aes_ctr(up_key, up_iv)
    encrypted = send.update(bytes(header))
    return bytes(header[:56]) + encrypted[56:], send, aes_ctr(down_key, down_iv)


def accept_handshake(header, secrets):
    """The proxy side of an obfuscated2 opening: (tag, dc, secret index, decrypt stream for the
    client's later bytes, encrypt stream for the replies), or None when no secret yields a
    transport tag (an invalid handshake). ``secrets``: list of 16-byte secrets ([] = no -S)."""
    if len(header) != OBF2_HEADER_LEN:
        raise ValueError("an obfuscated2 header is 64 bytes")
    for index, secret in enumerate(secrets or [None]):
        up_key, up_iv, down_key, down_iv = _obf2_keys(bytes(header), secret)
        receive = aes_ctr(up_key, up_iv)
        plain = receive.update(bytes(header))
        if plain[56:60] in TRANSPORT_TAGS:
            dc = struct.unpack("<h", plain[60:62])[0]
            return plain[56:60], dc, index, receive, aes_ctr(down_key, down_iv)
    return None


# ---------------------------------------------------------------- client transports

def encode_frame(tag, payload):
    """One client-transport frame of ``payload`` (a multiple of 4 bytes): intermediate LE32
    length, padded LE32 length including 0..3 random bytes after the payload, abridged length/4.
    Padding stays under 4 bytes because both binaries only round the length down to 4: a longer
    pad would reach the backend as part of the packet (the Go port's client_transport.go)."""
    if tag == TAG_INTERMEDIATE:
        return struct.pack("<I", len(payload)) + payload
    if tag == TAG_PADDED:
        pad = os.urandom(ord(os.urandom(1)) % 4)
        return struct.pack("<I", len(payload) + len(pad)) + payload + pad
    if tag == TAG_ABRIDGED:
        words = len(payload) // 4
        head = bytes([words]) if words < 0x7F else b"\x7f" + words.to_bytes(3, "little")
        return head + payload
    raise ValueError("unknown transport tag %r" % tag)


class FrameReader(object):
    """Splits a decrypted client stream into packets of its transport. ``feed(bytes)`` returns the
    complete payloads (padded: the length rounded down to 4, as the Go port does); raises
    WireError on a length that is 0, above 4 MiB or (intermediate) not a multiple of 4."""

    def __init__(self, tag):
        self.tag = tag
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data
        out = []
        while self.buf:
            if self.tag == TAG_ABRIDGED:
                first = self.buf[0] & 0x7F
                if first == 0x7F:
                    if len(self.buf) < 4:
                        break
                    size, head = int.from_bytes(bytes(self.buf[1:4]), "little") * 4, 4
                else:
                    size, head = first * 4, 1
            else:
                if len(self.buf) < 4:
                    break
                size, head = struct.unpack("<I", bytes(self.buf[:4]))[0] & 0x7FFFFFFF, 4
                if self.tag == TAG_INTERMEDIATE and size % 4:
                    raise WireError("intermediate frame length %d is not a multiple of 4" % size)
            if size == 0 or size > MAX_CLIENT_FRAME:
                raise WireError("frame length %d out of range" % size)
            if len(self.buf) < head + size:
                break
            payload = bytes(self.buf[head:head + size])
            del self.buf[:head + size]
            out.append(payload[:len(payload) - len(payload) % 4])
        return out


# ---------------------------------------------------------------- MTProto packets

def req_pq_multi(nonce=None):
    """An unencrypted MTProto ``req_pq_multi`` (40 bytes): auth_key_id 0, msg_id, length 20,
    constructor, 16-byte nonce. Both binaries forward it (the first packet of every real login)."""
    msg_id = (int(time.time() * (1 << 32)) & ~3) & 0xFFFFFFFFFFFFFFFF
    body = struct.pack("<I", REQ_PQ_MULTI) + (nonce if nonce is not None else os.urandom(16))
    return struct.pack("<QQI", 0, msg_id, len(body)) + body


def forwardable(packet):
    """Whether both binaries forward a client packet: at least 28 bytes, a multiple of 4;
    encrypted (auth_key_id != 0) at least 56 bytes; unencrypted with a consistent inner length
    (20 .. size-20) and one of the four handshake functions. Source: the Go port's
    protocol/mtproto.go and the C proxy's forward check in mtproto/mtproto-proxy.c."""
    size = len(packet)
    if size < 28 or size % 4:
        return False
    if packet[:8] != b"\0" * 8:
        return size >= 56
    inner = struct.unpack("<I", packet[16:20])[0]
    if not 20 <= inner <= size - 20:
        return False
    return struct.unpack("<I", packet[20:24])[0] in UNENCRYPTED_FUNCTIONS


# ---------------------------------------------------------------- Go port backend frames

def go_frame(payload):
    """A Go-port backend frame: LE32 payload length, then the payload."""
    return struct.pack("<I", len(payload)) + payload


class GoFrameReader(object):
    """Splits a Go-port backend stream into payloads; WireError above 8 MiB."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data
        out = []
        while len(self.buf) >= 4:
            size = struct.unpack("<I", bytes(self.buf[:4]))[0]
            if size > MAX_BACKEND_FRAME:
                raise WireError("backend frame length %d above 8 MiB" % size)
            if len(self.buf) < 4 + size:
                break
            out.append(bytes(self.buf[4:4 + size]))
            del self.buf[:4 + size]
        return out


# ---------------------------------------------------------------- C middle-proxy RPC

def rpc_frame(seq, payload):
    """One RPC frame: LE32 total length, LE32 seq, payload, CRC32 (zlib's) of all before it."""
    if len(payload) % 4:
        raise ValueError("an RPC payload is a multiple of 4 bytes")
    head = struct.pack("<ii", len(payload) + 12, seq) + payload
    return head + struct.pack("<I", zlib.crc32(head) & 0xFFFFFFFF)


def is_rpc_nonce_start(data):
    """Whether the first bytes of a backend connection are the C proxy's nonce frame (length 44,
    seq -2, RPC_NONCE) rather than a Go-port frame: how one test backend tells the two apart."""
    return len(data) >= 12 and struct.unpack("<iiI", bytes(data[:12])) == (RPC_NONCE_FRAME_LEN, -2, RPC_NONCE)


def _ipv4_le(ip):
    """An IPv4 address as the RPC key string holds it: host-order value, little-endian bytes."""
    return socket.inet_aton(ip)[::-1]


def _rpc_key(role, nonce_backend, nonce_proxy, proxy_ts, proxy_addr, backend_addr, aes_pwd):
    material = (nonce_backend + nonce_proxy + struct.pack("<i", proxy_ts) + _ipv4_le(backend_addr[0])
                + struct.pack("<H", proxy_addr[1]) + role + _ipv4_le(proxy_addr[0])
                + struct.pack("<H", backend_addr[1]) + aes_pwd + nonce_backend + nonce_proxy)
    key = hashlib.md5(material[1:]).digest()[:12] + hashlib.sha1(material).digest()
    return key, hashlib.md5(material[2:]).digest()


def rpc_pid(ip, port, pid, utime):
    """A 12-byte RPC process id: ip (host-order u32 LE), port, pid folded to 16 bits, start time."""
    return _ipv4_le(ip) + struct.pack("<HHi", port & 0xFFFF, pid & 0xFFFF, utime)


def proxy_req(ext_conn_id, client_addr, proxy_addr, packet, flags=RPC_REQ_FLAGS_INTERMEDIATE):
    """RPC_PROXY_REQ for one client packet; addresses as (IPv4, port), stored as ::ffff:a.b.c.d."""
    def v6(ip):
        return b"\0" * 10 + b"\xff\xff" + socket.inet_aton(ip)
    return (struct.pack("<IiQ", RPC_PROXY_REQ, flags, ext_conn_id) + v6(client_addr[0])
            + struct.pack("<i", client_addr[1]) + v6(proxy_addr[0]) + struct.pack("<i", proxy_addr[1]) + packet)


def parse_proxy_req(payload):
    """(flags, ext_conn_id, client packet) of an RPC_PROXY_REQ payload; WireError if malformed."""
    if len(payload) < 56 or struct.unpack("<I", payload[:4])[0] != RPC_PROXY_REQ:
        raise WireError("not an RPC_PROXY_REQ")
    flags, ext_conn_id = struct.unpack("<iQ", payload[4:16])
    offset = 56
    if flags & 0xC:
        offset = 60 + struct.unpack("<i", payload[56:60])[0]
    return flags, ext_conn_id, payload[offset:]


def proxy_ans(ext_conn_id, data, flags=0):
    """RPC_PROXY_ANS carrying ``data`` (a multiple of 4 bytes) back to the client ext_conn_id."""
    return struct.pack("<IiQ", RPC_PROXY_ANS, flags, ext_conn_id) + data


def close_conn(ext_conn_id):
    """RPC_CLOSE_CONN: the proxy's client connection ext_conn_id has closed."""
    return struct.pack("<IQ", RPC_CLOSE_CONN, ext_conn_id)


def op_of(payload):
    return struct.unpack("<I", payload[:4])[0] if len(payload) >= 4 else None


class RpcSession(object):
    """One middle-proxy RPC connection, either end, without I/O.

    ``role``: "proxy" (the C proxy, TCP client) or "backend" (the ``proxy_for`` target, TCP
    server). ``local``/``peer``: (IPv4, port) of this TCP connection as getsockname/getpeername
    give them. ``aes_pwd``: the whole ``--aes-pwd`` file (32..256 bytes).

    The proxy calls ``start()`` and sends its result; both ends then pass every received chunk to
    ``feed()``, send what it returns (``out``) and handle the RPC payloads it returns (``messages``:
    payloads with seq >= 0, filler words skipped). ``ready`` turns true when the handshake is done
    on this end; ``send(payload)`` frames, pads to 16 bytes and encrypts one message.
    Order as the real C proxy needs it: the backend answers the nonce at once but sends its
    handshake only after the proxy's (a backend that sends both in one write is dropped).
    Handshake flags: the proxy offers 0x800 (CRC-32C) like the real one; the backend answers 0, so
    every frame stays on IEEE CRC-32 (both verified on the real build).
    """

    def __init__(self, role, local, peer, aes_pwd, pid=None, now=None):
        if role not in ("proxy", "backend"):
            raise ValueError("role is proxy or backend")
        if not 32 <= len(aes_pwd) <= 256:
            raise WireError("an aes-pwd secret is 32..256 bytes, not %d" % len(aes_pwd))
        self.role = role
        self.local, self.peer = tuple(local), tuple(peer)
        self.aes_pwd = aes_pwd
        self.key_select = struct.unpack("<i", aes_pwd[:4])[0]
        self.pid = pid or rpc_pid(self.local[0], self.local[1], os.getpid(), int(time.time()))
        self.now = now or time.time
        self.nonce = os.urandom(16)
        self.ts = int(self.now())
        self.peer_pid = None
        self.in_seq = -2
        self.out_seq = -2
        self.buf = bytearray()
        self.encrypt = self.decrypt = None
        self.sent_handshake = False
        self.ready = False
        self.crypt_written = 0

    # -- output
    def _plain(self, payload):
        frame = rpc_frame(self.out_seq, payload)
        self.out_seq += 1
        return frame

    def send(self, payload):
        """The bytes of one encrypted message (a multiple of 16, padded with filler words)."""
        data = self._plain(payload)
        while (self.crypt_written + len(data)) % 16:
            data += FILLER
        self.crypt_written += len(data)
        return self.encrypt.update(data)

    def _nonce(self):
        return self._plain(struct.pack("<Iii", RPC_NONCE, self.key_select, RPC_CRYPTO_AES) + struct.pack("<i", self.ts)
                           + self.nonce)

    def _handshake(self):
        flags = 0x800 if self.role == "proxy" else 0
        peer = self.peer_pid if self.role == "backend" else b"\0" * 12
        return self.send(struct.pack("<Ii", RPC_HANDSHAKE, flags) + self.pid + peer)

    def start(self):
        """The proxy's opening nonce frame (plain)."""
        if self.role != "proxy" or self.out_seq != -2:
            raise WireError("only a new proxy-side session starts")
        return self._nonce()

    # -- input
    def _take_frames(self):
        frames = []
        while True:
            if len(self.buf) < 4:
                return frames
            size = struct.unpack("<i", bytes(self.buf[:4]))[0]
            if size == 4:
                del self.buf[:4]
                continue
            if size < 16 or size % 4:
                raise WireError("RPC frame length %d" % size)
            if len(self.buf) < size:
                return frames
            frame = bytes(self.buf[:size])
            del self.buf[:size]
            seq = struct.unpack("<i", frame[4:8])[0]
            if zlib.crc32(frame[:-4]) & 0xFFFFFFFF != struct.unpack("<I", frame[-4:])[0]:
                raise WireError("RPC frame CRC mismatch (seq %d)" % seq)
            if seq != self.in_seq:
                raise WireError("RPC seq %d where %d was expected" % (seq, self.in_seq))
            self.in_seq += 1
            frames.append(frame[8:-4])

    def _on_nonce(self, payload, out):
        if len(payload) != 32:
            raise WireError("RPC nonce of %d bytes (schema 1 has 32)" % len(payload))
        op, key_select, schema, ts = struct.unpack("<Iiii", payload[:16])
        if op != RPC_NONCE or schema != RPC_CRYPTO_AES:
            raise WireError("RPC nonce op %#x schema %d" % (op, schema))
        if key_select != self.key_select:
            raise WireError("RPC nonce for another aes-pwd (its key signature, the file's first 4 bytes, differs)")
        if abs(ts - int(self.now())) > RPC_MAX_CLOCK_SKEW_S:
            raise WireError("RPC nonce time %d is more than 30 s off" % ts)
        if self.role == "backend":
            out.append(self._nonce())
            nonce_backend, nonce_proxy, proxy_ts = self.nonce, payload[16:32], ts
            proxy_addr, backend_addr = self.peer, self.local
        else:
            nonce_backend, nonce_proxy, proxy_ts = payload[16:32], self.nonce, self.ts
            proxy_addr, backend_addr = self.local, self.peer
        args = (nonce_backend, nonce_proxy, proxy_ts, proxy_addr, backend_addr, self.aes_pwd)
        client_key, client_iv = _rpc_key(b"CLIENT", *args)
        server_key, server_iv = _rpc_key(b"SERVER", *args)
        mine, theirs = ((client_key, client_iv), (server_key, server_iv))
        if self.role == "backend":
            mine, theirs = theirs, mine
        self.encrypt = aes_cbc(mine[0], mine[1], True)
        self.decrypt = aes_cbc(theirs[0], theirs[1], False)
        if self.role == "proxy":
            out.append(self._handshake())
            self.sent_handshake = True

    def _on_handshake(self, payload, out):
        if len(payload) != 32:
            raise WireError("RPC handshake of %d bytes" % len(payload))
        op, flags = struct.unpack("<Ii", payload[:8])
        if op == RPC_HANDSHAKE_ERROR:
            raise WireError("peer refused the RPC handshake (error %d)" % flags)
        if op != RPC_HANDSHAKE or flags & 0xFF:
            raise WireError("RPC handshake op %#x flags %#x" % (op, flags))
        self.peer_pid = payload[8:20]
        if self.role == "backend":
            out.append(self._handshake())
        self.ready = True

    def feed(self, data):
        """(bytes to send, RPC payloads received after the handshake); WireError on a violation."""
        out, messages = [], []
        if self.decrypt is None:
            self.buf += data
            if len(self.buf) < RPC_NONCE_FRAME_LEN:
                return b"", messages
            if not is_rpc_nonce_start(self.buf):
                raise WireError("the first RPC frame is not a nonce")
            nonce, rest = bytes(self.buf[:RPC_NONCE_FRAME_LEN]), bytes(self.buf[RPC_NONCE_FRAME_LEN:])
            self.buf = bytearray(nonce)
            self._on_nonce(self._take_frames()[0], out)
            if rest:
                # The real proxy drops a peer whose encrypted bytes came in the nonce's segment.
                raise WireError("bytes after the RPC nonce before encryption started")
            return b"".join(out), messages
        self.buf += self.decrypt.update(data)
        for payload in self._take_frames():
            if not self.ready:
                self._on_handshake(payload, out)
            else:
                messages.append(payload)
        return b"".join(out), messages
