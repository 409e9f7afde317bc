"""A small Zeek Broker peer (native protocol v1), written here from the spec
(``shared/spec/zeek-broker.md``), standard library only: it plays Zeek's side against the bus in
the black-box tests, over plain TCP or anonymous TLS, in either handshake role.

Data values are tagged tuples, e.g. ``("count", 1)``, ``("string", b"x")``,
``("timestamp", ns)``, ``("vector", [...])``, ``("table", [(key, value), ...])``.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import time

MAGIC = 0x5A45454B
NIL = bytes(16)
INTERNAL = b"<$>"
TAGS = ["none", "boolean", "count", "integer", "real", "string", "address", "subnet", "port",
        "timestamp", "timespan", "enum", "set", "table", "vector"]
DATA, COMMAND, ROUTING_UPDATE, PING, PONG = 1, 2, 3, 4, 5


# --------------------------------------------------------------------------- data codec

def varbyte(n: int) -> bytes:
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def read_varbyte(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def s(text: str) -> tuple:
    return ("string", text.encode())


def encode(value: tuple) -> bytes:
    kind, body = value
    tag = bytes([TAGS.index(kind)])
    if kind == "none":
        return tag
    if kind == "boolean":
        return tag + bytes([1 if body else 0])
    if kind == "count":
        return tag + struct.pack(">Q", body)
    if kind in ("integer", "timestamp", "timespan"):
        return tag + struct.pack(">q", body)
    if kind == "real":
        return tag + struct.pack(">d", body)
    if kind in ("string", "enum"):
        raw = body if isinstance(body, bytes) else body.encode()
        return tag + varbyte(len(raw)) + raw
    if kind in ("vector", "set"):
        return tag + varbyte(len(body)) + b"".join(encode(v) for v in body)
    if kind == "table":
        return tag + varbyte(len(body)) + b"".join(encode(k) + encode(v) for k, v in body)
    raise ValueError(f"cannot encode {kind}")


def decode(buf: bytes, pos: int = 0) -> tuple[tuple, int]:
    kind = TAGS[buf[pos]]
    pos += 1
    if kind == "none":
        return ("none", None), pos
    if kind == "boolean":
        return ("boolean", buf[pos] != 0), pos + 1
    if kind == "count":
        return ("count", struct.unpack_from(">Q", buf, pos)[0]), pos + 8
    if kind in ("integer", "timestamp", "timespan"):
        return (kind, struct.unpack_from(">q", buf, pos)[0]), pos + 8
    if kind == "real":
        return ("real", struct.unpack_from(">d", buf, pos)[0]), pos + 8
    if kind in ("string", "enum"):
        n, pos = read_varbyte(buf, pos)
        return (kind, bytes(buf[pos:pos + n])), pos + n
    if kind == "address":
        return ("address", bytes(buf[pos:pos + 16])), pos + 16
    if kind == "subnet":
        return ("subnet", bytes(buf[pos:pos + 17])), pos + 17
    if kind == "port":
        return ("port", bytes(buf[pos:pos + 3])), pos + 3
    n, pos = read_varbyte(buf, pos)
    items = []
    for _ in range(n):
        if kind == "table":
            key, pos = decode(buf, pos)
            val, pos = decode(buf, pos)
            items.append((key, val))
        else:
            item, pos = decode(buf, pos)
            items.append(item)
    return (kind, items), pos


def event(name: str, *args: tuple) -> bytes:
    return encode(("vector", [("count", 1), ("count", 1), ("vector", [s(name), ("vector", list(args))])]))


def decode_event(payload: bytes) -> tuple[str, list]:
    value, end = decode(payload)
    assert end == len(payload), "trailing bytes after the event"
    kind, outer = value
    assert kind == "vector" and outer[0] == ("count", 1) and outer[1] == ("count", 1), value
    body = outer[2][1]
    return body[0][1].decode(), body[1][1]


def plain(value: tuple):
    """A decoded value without its tags (strings as text)."""
    kind, body = value
    if kind == "string":
        return body.decode()
    if kind in ("vector", "set"):
        return [plain(v) for v in body]
    if kind == "table":
        return {plain(k): plain(v) for k, v in body}
    return body


# --------------------------------------------------------------------------- the peer

def filter_bytes(prefixes) -> bytes:
    return varbyte(len(prefixes)) + b"".join(varbyte(len(p)) + p.encode() for p in prefixes)


def read_filter(buf: bytes, pos: int = 0) -> list[str]:
    n, pos = read_varbyte(buf, pos)
    out = []
    for _ in range(n):
        length, pos = read_varbyte(buf, pos)
        out.append(buf[pos:pos + length].decode())
        pos += length
    return out


def anonymous_tls_client() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("AECDH-AES256-SHA@SECLEVEL=0")
    return context


def certificate_tls_client(ca_file: str, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    """Broker's authenticated mode: the server's certificate is verified, ours is presented."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(ca_file)
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


class Peer:
    """Connects to the bus like ``Broker::peer`` does and completes the handshake.

    ``tls``: ``True`` (anonymous, Zeek's default), ``False`` (plain TCP) or an
    ``ssl.SSLContext`` of the caller's."""

    def __init__(self, port: int, host: str = "127.0.0.1", tls=True,
                 own_id: bytes | None = None, subscriptions=("threatbus/manage",), timeout: float = 10):
        self.own_id = own_id or os.urandom(16)
        self.filter = list(subscriptions)
        raw = socket.create_connection((host, port), timeout=timeout)
        if tls is True:
            tls = anonymous_tls_client()
        self.sock = tls.wrap_socket(raw) if tls else raw
        self.tls_version = self.sock.version() if tls else None
        self.cipher = self.sock.cipher()[0] if tls else None
        self.sock.settimeout(timeout)
        self.buffer = b""
        self.pongs: list[bytes] = []
        self.pings: list[bytes] = []
        self.backlog: list[tuple[int, bytes, bytes]] = []
        self.bus_id, self.bus_filter, self.originator = self._handshake()

    # -- frames
    def send_frame(self, payload: bytes):
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def recv_frame(self) -> bytes:
        while len(self.buffer) < 4 or len(self.buffer) < 4 + struct.unpack(">I", self.buffer[:4])[0]:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the bus closed the connection")
            self.buffer += chunk
        n = struct.unpack(">I", self.buffer[:4])[0]
        frame, self.buffer = self.buffer[4:4 + n], self.buffer[4 + n:]
        return frame

    def _hello(self) -> bytes:
        return bytes([6]) + struct.pack(">I", MAGIC) + self.own_id + b"\x01\x01"

    def _handshake(self):
        self.send_frame(self._hello())
        bus_id = None
        while True:
            frame = self.recv_frame()
            tag = frame[0]
            if tag == 7:  # PROBE
                continue
            if tag == 6:  # HELLO: the smaller id originates
                bus_id = frame[5:21]
                if self.own_id < bus_id:
                    self.send_frame(bytes([8]) + struct.pack(">I", MAGIC) + self.own_id + b"\x01")
                    self.send_frame(bytes([10]) + filter_bytes(self.filter))
                    ack = self.recv_frame()
                    assert ack[0] == 11, f"expected RESPONDER_SYN_ACK, got tag {ack[0]}"
                    self.send_frame(bytes([12]))
                    return bus_id, read_filter(ack, 1), True
                continue
            if tag == 8:  # VERSION_SELECT: the bus originates
                assert frame[21] == 1
                bus_id = frame[5:21]
                syn = self.recv_frame()
                assert syn[0] == 10, f"expected ORIGINATOR_SYN, got tag {syn[0]}"
                bus_filter = read_filter(syn, 1)
                self.send_frame(bytes([11]) + filter_bytes(self.filter))
                done = self.recv_frame()
                assert done == bytes([12]), f"expected ORIGINATOR_ACK, got {done!r}"
                return bus_id, bus_filter, False
            if tag == 9:
                raise ConnectionError(f"DROP_CONN: {frame!r}")
            raise AssertionError(f"unexpected handshake frame {frame!r}")

    # -- envelopes
    def send_envelope(self, kind: int, topic: bytes, payload: bytes, receiver: bytes = NIL):
        self.send_frame(self.own_id + receiver + bytes([kind]) + struct.pack(">HH", 16, len(topic))
                        + topic + payload)

    def publish(self, topic: str, payload: bytes):
        self.send_envelope(DATA, topic.encode(), payload)

    def subscribe(self, prefix: str):
        """Adds a subscription and announces the complete filter (a routing update)."""
        self.filter.append(prefix)
        self.send_envelope(ROUTING_UPDATE, INTERNAL, filter_bytes(self.filter), self.bus_id)

    def ping(self, payload: bytes):
        self.send_envelope(PING, INTERNAL, payload, self.bus_id)

    def recv_envelope(self, timeout: float = 10) -> tuple[int, bytes, bytes]:
        """The next data or routing envelope (answering pings as Broker does on the way)."""
        if self.backlog:
            return self.backlog.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                frame = self.recv_frame()
            except (socket.timeout, TimeoutError):
                raise TimeoutError("nothing from the bus in time") from None
            sender, receiver, kind = frame[:16], frame[16:32], frame[32]
            assert sender == self.bus_id, "the sender must be the bus's own id"
            (topic_len,) = struct.unpack(">H", frame[35:37])
            topic, payload = frame[37:37 + topic_len], frame[37 + topic_len:]
            if kind == PING:
                self.pings.append(payload)
                self.send_envelope(PONG, INTERNAL, payload, sender)
                continue
            if kind == PONG:
                self.pongs.append(payload)
                continue
            return kind, topic, payload

    def recv_event(self, timeout: float = 10) -> tuple[str, str, list]:
        """(topic, event name, args as tagged values) of the next data message."""
        while True:
            kind, topic, payload = self.recv_envelope(timeout)
            if kind == DATA:
                name, args = decode_event(payload)
                return topic.decode(), name, args

    def expect_no_event(self, duration: float = 1.0):
        deadline = time.monotonic() + duration
        while (left := deadline - time.monotonic()) > 0:
            try:
                topic, name, args = self.recv_event(timeout=left)
            except TimeoutError:
                return
            raise AssertionError(f"unexpected event {name} on {topic}: {args}")

    def wait_pong(self, payload: bytes, timeout: float = 10):
        deadline = time.monotonic() + timeout
        while payload not in self.pongs:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no pong for {payload!r}")
            try:
                self.backlog.append(self.recv_envelope(timeout=left))
            except TimeoutError:
                continue

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
