"""A small Zeek Broker peer (native protocol v1), written here from the spec
(``shared/spec/zeek-broker.md``), standard library only: it plays Zeek's side against the bus in
the black-box tests, over plain TCP or anonymous TLS, in either handshake role.

It is strict the way a real Broker and Zeek are: every rule of the spec that Broker enforces is
enforced here too, so that a bus that gets along with this peer gets along with a real Zeek.
Where Broker fails a connection, this peer raises; where Broker silently ignores something, this
peer ignores it too and records why (``ignored``), so a test can see what a real Zeek would
have lost:

* handshake (§3–§4): magic number, offered and selected versions, frame sizes, messages in the
  order of the state machine, DROP_CONN raised; an empty frame fails the handshake;
* the bus's endpoint id (§3.3): Broker never reports a peer whose id is nil or not a UUID of
  version 1 to 5: such a bus raises :class:`NoPeer` after the handshake bytes completed;
* envelopes (§5): at least 37 bytes, a known type, the bus's own id as sender, internal
  messages (ping, pong, routing update) on topic ``<$>`` addressed to this peer, non-empty topic
  and payload; data only for a nil receiver or this peer, and only on a topic this peer's filter
  covers (Broker drops the rest, it does not queue it);
* the start-up race (§5.10): when this peer originated the handshake, data that arrives before
  this peer answered a ping of the bus was lost by a real Broker in 6 of 8 trials: it is ignored;
* data values (§6): tags 0–14, varbytes of at most 5 bytes and 32 bits, lengths within the
  frame, port protocols 0–3, subnet lengths up to 128, no duplicate set elements or table keys,
  no trailing bytes, a depth limit;
* Zeek events (§7): ``[count 1, count 1, [string name, vector args, (metadata)?]]`` with
  metadata a vector of ``[count, value]`` pairs; for the events ``threatbus.zeek`` handles, the
  argument count and types its handlers declare (Zeek drops the event otherwise).

Data values are tagged tuples, e.g. ``("count", 1)``, ``("string", b"x")``,
``("timestamp", ns)``, ``("vector", [...])``, ``("table", [(key, value), ...])``.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
import uuid

MAGIC = 0x5A45454B
NIL = bytes(16)
INTERNAL = b"<$>"
TAGS = ["none", "boolean", "count", "integer", "real", "string", "address", "subnet", "port",
        "timestamp", "timespan", "enum", "set", "table", "vector"]
DATA, COMMAND, ROUTING_UPDATE, PING, PONG = 1, 2, 3, 4, 5
HELLO, PROBE, VERSION_SELECT, DROP_CONN, ORIGINATOR_SYN, RESPONDER_SYN_ACK, ORIGINATOR_ACK = range(6, 13)
MAX_FRAME = 1 << 24
MAX_DEPTH = 64

# The handlers of threatbus.zeek that receive events from the bus, with their parameter types
# (a record is a list of field types).
ZEEK_HANDLERS = {
    "Tenzir::subscription_acknowledged": ["string"],
    "Tenzir::intel": [["timestamp", "string", "string", "string", "string"]],
}


class NoPeer(Exception):
    """The handshake bytes completed, but a real Broker would never report this bus as a peer
    (no ``Broker::peer_added``, so ``threatbus.zeek`` would never subscribe)."""


class BrokerError(Exception):
    """What a real Broker would fail the connection for."""


def valid_id(first: int = None) -> bytes:
    """A random version-4 UUID (what Broker accepts), optionally with a given first byte."""
    raw = bytearray(uuid.uuid4().bytes)
    if first is not None:
        raw[0:6] = bytes([first]) * 6
    return bytes(raw)


def id_problem(endpoint_id: bytes) -> str | None:
    """Why Broker would ignore an endpoint with this id (spec §3.3), or None."""
    if endpoint_id == NIL:
        return "the nil id"
    version = endpoint_id[6] >> 4
    if not 1 <= version <= 5:
        return f"UUID version {version}"
    return None


def id_text(endpoint_id: bytes) -> str:
    return str(uuid.UUID(bytes=endpoint_id))


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
    """Broker's varbyte: at most 5 bytes, the value within 32 bits."""
    value, shift = 0, 0
    for count in range(5):
        if pos >= len(buf):
            raise BrokerError("truncated varbyte")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if value > 0xFFFFFFFF:
                raise BrokerError("varbyte above 32 bits")
            return value, pos
    raise BrokerError("varbyte longer than 5 bytes")


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


def _take(buf: bytes, pos: int, n: int, what: str) -> tuple[bytes, int]:
    if n > len(buf) - pos:
        raise BrokerError(f"{what} of {n} bytes exceeds the {len(buf) - pos} left")
    return bytes(buf[pos:pos + n]), pos + n


def _key(value: tuple):
    """A hashable form of a decoded value (type included: count 1 != integer 1)."""
    kind, body = value
    if kind in ("vector", "set"):
        return (kind, tuple(_key(v) for v in body))
    if kind == "table":
        return (kind, tuple((_key(k), _key(v)) for k, v in body))
    return (kind, body)


def decode(buf: bytes, pos: int = 0, depth: int = 0) -> tuple[tuple, int]:
    """One value, strictly as Broker reads it."""
    if depth > MAX_DEPTH:
        raise BrokerError("containers nested too deep")
    if pos >= len(buf):
        raise BrokerError("truncated value")
    if buf[pos] >= len(TAGS):
        raise BrokerError(f"unknown data tag {buf[pos]}")
    kind = TAGS[buf[pos]]
    pos += 1
    if kind == "none":
        return ("none", None), pos
    if kind == "boolean":
        raw, pos = _take(buf, pos, 1, "a boolean")
        return ("boolean", raw[0] != 0), pos
    if kind == "count":
        raw, pos = _take(buf, pos, 8, "a count")
        return ("count", struct.unpack(">Q", raw)[0]), pos
    if kind in ("integer", "timestamp", "timespan"):
        raw, pos = _take(buf, pos, 8, kind)
        return (kind, struct.unpack(">q", raw)[0]), pos
    if kind == "real":
        raw, pos = _take(buf, pos, 8, "a real")
        special = {b"\xff\xf0" + bytes(6): float("inf"), b"\x7f\xf0" + bytes(6): float("-inf"),
                   b"\xff" * 8: float("nan")}
        return ("real", special.get(raw, struct.unpack(">d", raw)[0])), pos
    if kind in ("string", "enum"):
        n, pos = read_varbyte(buf, pos)
        raw, pos = _take(buf, pos, n, kind)
        return (kind, raw), pos
    if kind == "address":
        raw, pos = _take(buf, pos, 16, "an address")
        return ("address", raw), pos
    if kind == "subnet":
        raw, pos = _take(buf, pos, 17, "a subnet")
        if raw[16] > 128:
            raise BrokerError(f"subnet length {raw[16]} above 128")
        return ("subnet", raw), pos
    if kind == "port":
        raw, pos = _take(buf, pos, 3, "a port")
        if raw[2] > 3:
            raise BrokerError(f"unknown port protocol {raw[2]}")
        return ("port", raw), pos
    n, pos = read_varbyte(buf, pos)
    if n > len(buf) - pos:
        raise BrokerError(f"{kind} of {n} elements exceeds the frame")
    items, seen = [], set()
    for _ in range(n):
        if kind == "table":
            key, pos = decode(buf, pos, depth + 1)
            val, pos = decode(buf, pos, depth + 1)
            item, unique = (key, val), _key(key)
        else:
            item, pos = decode(buf, pos, depth + 1)
            unique = _key(item) if kind == "set" else None
        if unique is not None:
            if unique in seen:
                raise BrokerError(f"duplicate key in a {kind}")
            seen.add(unique)
        items.append(item)
    return (kind, items), pos


def decode_all(payload: bytes) -> tuple:
    """A data envelope's payload: exactly one value, no trailing bytes."""
    value, end = decode(payload)
    if end != len(payload):
        raise BrokerError(f"{len(payload) - end} trailing bytes after the value")
    return value


def event(name: str, *args: tuple) -> bytes:
    return encode(("vector", [("count", 1), ("count", 1), ("vector", [s(name), ("vector", list(args))])]))


def zeek_event(value: tuple) -> tuple[str, list]:
    """(name, args) of a Zeek event value, checked as Zeek checks it (§7.1)."""
    kind, outer = value
    if kind != "vector" or len(outer) < 3 or outer[0] != ("count", 1) or outer[1] != ("count", 1):
        raise BrokerError("not a Zeek event: expected [count 1, count 1, [...]]")
    kind, body = outer[2]
    if kind != "vector" or len(body) < 2 or body[0][0] != "string" or body[1][0] != "vector":
        raise BrokerError("not a Zeek event: expected [string name, vector args, ...]")
    if len(body) > 2:
        kind, metadata = body[2]
        if kind != "vector" or any(m[0] != "vector" or len(m[1]) != 2 or m[1][0][0] != "count"
                                   for m in metadata):
            raise BrokerError("Zeek event metadata must be a vector of [count, value]")
    return body[0][1].decode(errors="replace"), body[1][1]


def check_handler_types(name: str, args: list):
    """Zeek converts each argument strictly to its handler's parameter type, or drops the event."""
    expected = ZEEK_HANDLERS.get(name)
    if expected is None:
        return
    if len(args) != len(expected):
        raise BrokerError(f"invalid # of args for {name}: {len(args)}, expected {len(expected)}")
    for arg, want in zip(args, expected):
        if isinstance(want, list):
            if arg[0] != "vector" or len(arg[1]) < len(want):
                raise BrokerError(f"{name}: expected a record of {len(want)} fields, got {arg!r}")
            for field, field_type in zip(arg[1], want):
                if field[0] not in (field_type, "none"):
                    raise BrokerError(f"{name}: record field {field!r} is not a {field_type}")
        elif arg[0] != want:
            raise BrokerError(f"{name}: argument {arg!r} is not a {want}")


def decode_event(payload: bytes) -> tuple[str, list]:
    return zeek_event(decode_all(payload))


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
    """A complete filter that fills the rest of ``buf``."""
    n, pos = read_varbyte(buf, pos)
    if n > len(buf) - pos:
        raise BrokerError("a filter of more entries than bytes")
    out = []
    for _ in range(n):
        length, pos = read_varbyte(buf, pos)
        raw, pos = _take(buf, pos, length, "a filter entry")
        out.append(raw.decode(errors="replace"))
    if pos != len(buf):
        raise BrokerError("trailing bytes after a filter")
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


def hello_frame(own_id: bytes, min_version: int = 1, max_version: int = 1) -> bytes:
    return bytes([HELLO]) + struct.pack(">I", MAGIC) + own_id + bytes([min_version, max_version])


class Peer:
    """Connects to the bus like ``Broker::peer`` does and completes the handshake.

    ``tls``: ``True`` (anonymous, Zeek's default), ``False`` (plain TCP) or an
    ``ssl.SSLContext`` of the caller's. ``own_id``: this peer's endpoint id (default: a random
    version-4 UUID, as Broker's own). Raises :class:`NoPeer` if a real Broker would not report
    the bus as a peer, :class:`BrokerError` or ``ConnectionError`` if it would fail the
    connection."""

    def __init__(self, port: int, host: str = "127.0.0.1", tls=True,
                 own_id: bytes | None = None, subscriptions=("threatbus/manage",), timeout: float = 10):
        self.own_id = own_id or valid_id()
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
        self.answered_ping = False
        self.backlog: list[tuple[int, bytes, bytes]] = []
        # (reason, topic) of every data message a real Broker/Zeek would have dropped.
        self.ignored: list[tuple[str, bytes]] = []
        self.bus_id, self.bus_filter, self.originator = self._handshake()
        problem = id_problem(self.bus_id)
        if problem:
            self.close()
            raise NoPeer(f"the bus's endpoint id {id_text(self.bus_id)} is {problem}: "
                         "Broker completes the handshake but never reports such a peer")

    # -- frames
    def send_frame(self, payload: bytes):
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def recv_frame(self) -> bytes:
        while len(self.buffer) < 4 or len(self.buffer) < 4 + struct.unpack(">I", self.buffer[:4])[0]:
            if len(self.buffer) >= 4 and struct.unpack(">I", self.buffer[:4])[0] > MAX_FRAME:
                raise BrokerError("frame above the size limit")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the bus closed the connection")
            self.buffer += chunk
        n = struct.unpack(">I", self.buffer[:4])[0]
        frame, self.buffer = self.buffer[4:4 + n], self.buffer[4 + n:]
        return frame

    def _handshake_frame(self) -> bytes:
        """The next handshake message, checked as Broker checks it (§3.5)."""
        frame = self.recv_frame()
        if not frame:
            raise BrokerError("an empty frame during the handshake")
        tag = frame[0]
        sizes = {HELLO: 23, PROBE: 5, VERSION_SELECT: 22, ORIGINATOR_ACK: 1}
        if tag in (HELLO, PROBE, VERSION_SELECT, DROP_CONN):
            if len(frame) < 5 or struct.unpack(">I", frame[1:5])[0] != MAGIC:
                raise BrokerError(f"wrong magic number in handshake message {tag}")
        if tag == DROP_CONN:
            raise ConnectionError(f"DROP_CONN from the bus: code {frame[21] if len(frame) > 21 else '?'}: "
                                  f"{frame[23:].decode(errors='replace')}")
        if tag in sizes and len(frame) != sizes[tag]:
            raise BrokerError(f"handshake message {tag} of {len(frame)} bytes, expected {sizes[tag]}")
        if tag not in (HELLO, PROBE, VERSION_SELECT, ORIGINATOR_SYN, RESPONDER_SYN_ACK, ORIGINATOR_ACK):
            raise BrokerError(f"invalid message type tag {tag}")
        return frame

    def _expect(self, tag: int) -> bytes:
        while True:
            frame = self._handshake_frame()
            if frame[0] == PROBE:  # ignored in every state
                continue
            if frame[0] != tag:
                raise BrokerError(f"handshake message {frame[0]} out of turn (expected {tag})")
            return frame

    def _handshake(self):
        self.send_frame(hello_frame(self.own_id))
        while True:
            frame = self._handshake_frame()
            tag = frame[0]
            if tag == PROBE:
                continue
            if tag == HELLO:  # the smaller id originates
                bus_id, low, high = frame[5:21], frame[21], frame[22]
                if not low <= 1 <= high:
                    raise BrokerError(f"the bus offers versions {low}..{high}")
                if bus_id == self.own_id:
                    raise BrokerError("the bus has this peer's id")
                if self.own_id < bus_id:
                    self.send_frame(bytes([VERSION_SELECT]) + struct.pack(">I", MAGIC) + self.own_id + b"\x01")
                    self.send_frame(bytes([ORIGINATOR_SYN]) + filter_bytes(self.filter))
                    ack = self._expect(RESPONDER_SYN_ACK)
                    bus_filter = read_filter(ack, 1)
                    self.send_frame(bytes([ORIGINATOR_ACK]))
                    return bus_id, bus_filter, True
                # The bus must originate: it sends VERSION_SELECT next.
                frame = self._expect(VERSION_SELECT)
                if frame[5:21] != bus_id:
                    raise BrokerError("VERSION_SELECT from another id than HELLO")
            elif tag != VERSION_SELECT:
                raise BrokerError(f"handshake message {tag} out of turn")
            if frame[21] != 1:
                raise BrokerError(f"the bus selected version {frame[21]}")
            bus_id = frame[5:21]
            syn = self._expect(ORIGINATOR_SYN)
            bus_filter = read_filter(syn, 1)
            self.send_frame(bytes([RESPONDER_SYN_ACK]) + filter_bytes(self.filter))
            self._expect(ORIGINATOR_ACK)
            return bus_id, bus_filter, False

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

    def unsubscribe(self, prefix: str):
        self.filter.remove(prefix)
        self.send_envelope(ROUTING_UPDATE, INTERNAL, filter_bytes(self.filter), self.bus_id)

    def ping(self, payload: bytes):
        self.send_envelope(PING, INTERNAL, payload, self.bus_id)

    def _accept_data(self, topic: bytes, receiver: bytes, payload: bytes) -> bool:
        """Whether a real Broker would hand this data message to Zeek (§5.2, §5.10)."""
        if receiver not in (NIL, self.own_id):
            self.ignored.append(("addressed to another endpoint", topic))
            return False
        if not any(topic.startswith(p.encode()) for p in self.filter):
            self.ignored.append(("topic not in this peer's filter", topic))
            return False
        if self.originator and not self.answered_ping:
            self.ignored.append(("sent before the start-up ping was answered", topic))
            return False
        return True

    def recv_envelope(self, timeout: float = 10) -> tuple[int, bytes, bytes]:
        """The next data or routing envelope a real Broker would deliver (answering pings as
        Broker does on the way)."""
        if self.backlog:
            return self.backlog.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            envelope = self._next(deadline)
            if envelope is not None:
                return envelope

    def _next(self, deadline: float) -> tuple[int, bytes, bytes] | None:
        """Reads one frame: the envelope to deliver, or None for one handled here (ping, pong,
        command) or ignored as Broker would ignore it."""
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            frame = self.recv_frame()
        except (socket.timeout, TimeoutError):
            raise TimeoutError("nothing from the bus in time") from None
        if not frame:
            return None  # CAF ignores empty frames after the handshake
        if len(frame) < 37:
            raise BrokerError(f"an envelope of {len(frame)} bytes (at least 37)")
        sender, receiver, kind = frame[:16], frame[16:32], frame[32]
        if kind not in (DATA, COMMAND, ROUTING_UPDATE, PING, PONG):
            raise BrokerError(f"unknown envelope type {kind}")
        if sender != self.bus_id:
            raise BrokerError("the sender must be the bus's own id")
        (topic_len,) = struct.unpack(">H", frame[35:37])
        if topic_len > len(frame) - 37:
            raise BrokerError("topic longer than the envelope")
        topic, payload = frame[37:37 + topic_len], frame[37 + topic_len:]
        if not topic or not payload:
            raise BrokerError("an envelope with an empty topic or payload (Broker 2.3/2.4 reject it)")
        if kind in (PING, PONG, ROUTING_UPDATE):
            if topic != INTERNAL or receiver != self.own_id:
                raise BrokerError(f"envelope type {kind} must be on <$> and addressed to this peer")
        if kind == PING:
            self.pings.append(payload)
            self.send_envelope(PONG, INTERNAL, payload, sender)
            self.answered_ping = True
            return None
        if kind == PONG:
            self.pongs.append(payload)
            return None
        if kind == ROUTING_UPDATE:
            self.bus_filter = read_filter(payload)
            return kind, topic, payload
        if kind == COMMAND:
            return None  # data-store commands: nothing of Zeek's here
        if self._accept_data(topic, receiver, payload):
            return kind, topic, payload
        return None

    def recv_event(self, timeout: float = 10) -> tuple[str, str, list]:
        """(topic, event name, args as tagged values) of the next event Zeek would run."""
        deadline = time.monotonic() + timeout
        while True:
            kind, topic, payload = self.recv_envelope(max(0.01, deadline - time.monotonic()))
            if kind != DATA:
                continue
            try:
                name, args = decode_event(payload)
                check_handler_types(name, args)
            except BrokerError as err:
                self.ignored.append((str(err), topic))
                continue
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
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no pong for {payload!r}")
            try:
                envelope = self._next(deadline)
            except TimeoutError:
                continue
            if envelope is not None:
                self.backlog.append(envelope)

    def bye(self, timeout: float = 3):
        """Broker's graceful unpeering: a BYE ping, its pong (at most 3 s), then close."""
        token = b"BYE" + struct.pack("=Q", int(time.monotonic_ns()))
        try:
            self.ping(token)
            self.wait_pong(token, timeout)
        finally:
            self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
