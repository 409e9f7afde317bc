"""Minimal Threat Bus ZeroMQ client used by the black-box tests.

Wire protocol (see shared spec §3):
  * manage: REQ/REP, one JSON object per request, one JSON object per reply.
  * pub (bus -> apps): single-part frames ``<p2p_topic><suffix> <json>``.
  * sub (apps -> bus): single-part frames ``<topic> <json>``.

Metrics (docs/metrics.md): :func:`scrape` reads the bus's ``/metrics``; :meth:`Samples.value`
looks one sample up by name and labels.

Everything here talks to 127.0.0.1 only.
"""

from __future__ import annotations

import collections
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

import zmq

HOST = "127.0.0.1"
P2P_LEN = 32

# ids of every probe/fence object ever sent by sync(); receivers skip them
PROBE_IDS: set[str] = set()
PROBE_NAME = "threatbus-blackbox-probe"


def ctx() -> zmq.Context:
    return zmq.Context.instance()


def now_ms() -> str:
    """RFC 3339 UTC timestamp with millisecond precision, e.g. 2020-01-01T00:00:00.123Z"""
    d = datetime.now(timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def encode_payload(obj) -> bytes:
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, str):
        return obj.encode("utf-8")
    if hasattr(obj, "serialize"):  # stix2 object
        return obj.serialize().encode("utf-8")
    return json.dumps(obj).encode("utf-8")


# --------------------------------------------------------------------------- manage


class ManageTimeout(AssertionError):
    pass


def manage(port: int, obj_or_raw, timeout: float = 5, host: str = HOST):
    """Send one management request on a fresh REQ socket, return the parsed JSON reply.

    ``obj_or_raw``: bytes/str are sent verbatim, anything else is JSON-encoded.
    """
    sock = ctx().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    sock.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
    try:
        sock.connect(f"tcp://{host}:{port}")
        sock.send(encode_payload(obj_or_raw))
        try:
            raw = sock.recv()
        except zmq.Again:
            raise ManageTimeout(
                f"no reply from manage port {port} within {timeout}s for request {obj_or_raw!r:.200}"
            ) from None
    finally:
        sock.close(linger=0)
    try:
        return json.loads(raw.decode("utf-8"))
    except Exception as e:  # pragma: no cover - reported as test failure
        raise AssertionError(f"manage reply is not JSON: {raw!r:.300} ({e})") from None


# --------------------------------------------------------------------------- STIX helpers


def make_indicator(value: str = "6.6.6.6", **extra) -> dict:
    ts = now_ms()
    d = {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--{uuid.uuid4()}",
        "created": ts,
        "modified": ts,
        "pattern": f"[ipv4-addr:value = '{value}']",
        "pattern_type": "stix",
        "pattern_version": "2.1",
        "valid_from": ts,
    }
    d.update(extra)
    return d


def make_sighting(indicator_id: str | None = None, **extra) -> dict:
    ts = now_ms()
    d = {
        "type": "sighting",
        "spec_version": "2.1",
        "id": f"sighting--{uuid.uuid4()}",
        "created": ts,
        "modified": ts,
        "sighting_of_ref": indicator_id or f"indicator--{uuid.uuid4()}",
    }
    d.update(extra)
    return d


# --------------------------------------------------------------------------- subscriber


class RecvTimeout(AssertionError):
    pass


def split_frame(raw: bytes):
    """Split a pub-socket frame into (topic, parsed json). Raises AssertionError on bad frames."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AssertionError(f"frame is not UTF-8: {raw[:200]!r}") from None
    topic, sep, payload = text.partition(" ")
    assert sep == " ", f"frame has no space separator: {text[:200]!r}"
    try:
        obj = json.loads(payload)
    except Exception as e:
        raise AssertionError(f"frame payload is not JSON ({e}): {text[:300]!r}") from None
    return topic, obj


def _kinds_for_topics(topics) -> set[str]:
    kinds = set()
    for t in topics:
        for k in ("indicator", "sighting"):
            if f"stix2/{k}".startswith(t):
                kinds.add(k)
    return kinds


class Subscriber:
    """A ZMQ app: subscribes via the manage socket, receives on the pub socket.

    ``recv()`` returns ``(suffix, obj)`` where suffix is the frame topic with the
    32-char p2p prefix stripped (e.g. ``indicator``). Probe objects sent by
    :func:`sync` are skipped transparently.
    """

    def __init__(self, manage_port: int, topic, snapshot=0, host: str = HOST, connect=True):
        self.manage_port = manage_port
        self.host = host
        self.topic = topic
        req = {"action": "subscribe", "topic": topic}
        if snapshot is not None:
            req["snapshot"] = snapshot
        self.reply = manage(manage_port, req)
        assert self.reply.get("status") == "success", f"subscribe {req} failed: {self.reply}"
        self.p2p = self.reply["topic"]
        assert isinstance(self.p2p, str) and len(self.p2p) == P2P_LEN, self.reply
        self.pub_port = self.reply["pub_port"]
        self.sub_port = self.reply["sub_port"]
        self.pending: collections.deque = collections.deque()
        self.raw_log: list[bytes] = []  # every frame received, in order (incl. probes)
        self.sock = None
        self.kinds = _kinds_for_topics(topic if isinstance(topic, list) else [topic])
        if connect:
            self.connect()

    @classmethod
    def spy(cls, pub_port: int, prefix: str = "", host: str = HOST, kinds=("indicator",)):
        """A bare SUB socket on the pub port with an arbitrary ZMQ prefix (no manage call).

        recv() then returns (full_topic, obj)."""
        self = cls.__new__(cls)
        self.manage_port = None
        self.host = host
        self.topic = None
        self.reply = None
        self.p2p = prefix
        self.pub_port = pub_port
        self.sub_port = None
        self.pending = collections.deque()
        self.raw_log = []
        self.kinds = set(kinds)  # what sync() may expect this spy to see
        self.sock = None
        self.connect()
        return self

    def connect(self):
        self.sock = ctx().socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 100000)
        self.sock.connect(f"tcp://{self.host}:{self.pub_port}")
        self.sock.setsockopt(zmq.SUBSCRIBE, self.p2p.encode())

    def close(self):
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    # -- management helpers
    def heartbeat(self):
        return manage(self.manage_port, {"action": "heartbeat", "topic": self.p2p})

    def unsubscribe(self):
        return manage(self.manage_port, {"action": "unsubscribe", "topic": self.p2p})

    # -- receiving
    def _recv_frame(self, timeout: float):
        """Next raw frame from the socket or None after timeout."""
        if self.sock.poll(int(max(timeout, 0) * 1000), zmq.POLLIN):
            parts = self.sock.recv_multipart()
            assert len(parts) == 1, f"expected single-part frame, got {len(parts)} parts: {parts!r:.300}"
            self.raw_log.append(parts[0])
            return parts[0]
        return None

    def _parse(self, raw: bytes):
        topic, obj = split_frame(raw)
        assert topic.startswith(self.p2p), f"frame topic {topic!r} lacks p2p prefix {self.p2p!r}"
        return topic[len(self.p2p):], obj

    @staticmethod
    def _is_probe(obj) -> bool:
        return isinstance(obj, dict) and obj.get("id") in PROBE_IDS

    def recv(self, timeout: float = 10):
        """Next non-probe (suffix, obj); raises RecvTimeout."""
        if self.pending:
            return self.pending.popleft()
        deadline = time.monotonic() + timeout
        while True:
            raw = self._recv_frame(deadline - time.monotonic())
            if raw is None:
                raise RecvTimeout(f"subscriber {self.p2p!r} ({self.topic!r}): nothing received within {timeout}s")
            suffix, obj = self._parse(raw)
            if self._is_probe(obj):
                continue
            return suffix, obj

    def recv_n(self, n: int, timeout: float = 15):
        deadline = time.monotonic() + timeout
        out = []
        for i in range(n):
            try:
                out.append(self.recv(max(deadline - time.monotonic(), 0.01)))
            except RecvTimeout:
                raise RecvTimeout(f"subscriber {self.topic!r}: got only {i} of {n} messages within {timeout}s: {out!r:.1000}") from None
        return out

    def expect_nothing(self, duration: float = 1.5):
        """Assert that no non-probe frame arrives within ``duration`` seconds."""
        got = []
        while self.pending:
            got.append(self.pending.popleft())
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            raw = self._recv_frame(deadline - time.monotonic())
            if raw is None:
                break
            suffix, obj = self._parse(raw)
            if not self._is_probe(obj):
                got.append((suffix, obj))
        assert not got, f"subscriber {self.p2p!r} ({self.topic!r}) unexpectedly received: {got!r:.2000}"

    def drain_until(self, probe_ids, timeout: float = 15):
        """Receive until the probe(s) ``probe_ids`` (str or list) all arrived; return the
        non-probe items received before the last of them (pending items first)."""
        wanted = {probe_ids} if isinstance(probe_ids, str) else set(probe_ids)
        out = list(self.pending)
        self.pending.clear()
        deadline = time.monotonic() + timeout
        while wanted:
            raw = self._recv_frame(deadline - time.monotonic())
            if raw is None:
                raise RecvTimeout(f"fence(s) {wanted} did not arrive at {self.p2p!r} within {timeout}s; got {out!r:.1000}")
            suffix, obj = self._parse(raw)
            if isinstance(obj, dict) and obj.get("id") in wanted:
                wanted.discard(obj["id"])
            elif not self._is_probe(obj):
                out.append((suffix, obj))
        return out


# --------------------------------------------------------------------------- publisher


class Publisher:
    """A PUB socket connected to the bus' sub port."""

    def __init__(self, sub_port: int, host: str = HOST, settle: float = 0.3):
        self.sock = ctx().socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 1000)
        self.sock.setsockopt(zmq.SNDHWM, 100000)
        self.sock.connect(f"tcp://{host}:{sub_port}")
        if settle:
            time.sleep(settle)  # slow joiner; sync() is the reliable way

    def send(self, topic: str, obj):
        self.sock.send(topic.encode("utf-8") + b" " + encode_payload(obj))

    def send_raw(self, frame: bytes):
        self.sock.send(frame)

    def send_multipart(self, parts):
        self.sock.send_multipart(parts)

    def close(self):
        self.sock.close(linger=1000)


# --------------------------------------------------------------------------- sync


def _probe(kind: str, name: str = PROBE_NAME) -> dict:
    if kind == "indicator":
        obj = make_indicator("127.0.0.1", name=name)
    else:
        obj = make_sighting(f"indicator--{uuid.uuid4()}", description=name)
    PROBE_IDS.add(obj["id"])
    return obj


def sync(publisher: Publisher, subscribers, timeout: float = 20):
    """Defeat the ZMQ slow-joiner problem without sleeping blindly.

    Repeatedly publishes probe objects until every subscriber has received one,
    then publishes a fence per kind and reads each subscriber up to its fence(s),
    so that afterwards no probe is in flight. Non-probe frames seen meanwhile are
    kept in the subscriber's ``pending`` queue (in order).
    """
    subs = [s for s in subscribers if s.kinds]
    deadline = time.monotonic() + timeout
    unsynced = list(subs)
    while unsynced:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"sync: probes never reached {[s.topic for s in unsynced]} within {timeout}s"
            )
        kinds = set().union(*(s.kinds for s in unsynced))
        for k in sorted(kinds):
            publisher.send(f"stix2/{k}", _probe(k))
        for s in list(unsynced):
            end = time.monotonic() + 0.15
            while True:
                raw = s._recv_frame(end - time.monotonic())
                if raw is None:
                    break
                suffix, obj = s._parse(raw)
                if s._is_probe(obj):
                    if s in unsynced:
                        unsynced.remove(s)
                else:
                    s.pending.append((suffix, obj))
    # fences: afterwards no probe is in flight towards any subscriber
    kinds = set().union(*(s.kinds for s in subs)) if subs else set()
    fences = {k: _probe(k) for k in sorted(kinds)}
    for k, f in fences.items():
        publisher.send(f"stix2/{k}", f)
    for s in subs:
        items = s.drain_until([fences[k]["id"] for k in s.kinds], timeout=max(deadline - time.monotonic(), 5))
        s.pending.extend(items)
    # subscribers without receivable kinds: give them a moment
    if len(subs) != len(subscribers):
        time.sleep(0.5)


def fence(publisher: Publisher, subscriber: Subscriber, kind: str = "indicator", timeout: float = 15):
    """Send one fence probe and return every non-probe item the subscriber got before it."""
    f = _probe(kind)
    publisher.send(f"stix2/{kind}", f)
    return subscriber.drain_until(f["id"], timeout=timeout)


# --------------------------------------------------------------------------- metrics

SAMPLE_RE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (\S+)$')
LABEL_RE = re.compile(r'([a-z_]+)="([^"]*)"')
KINDS = ("indicator", "sighting", "snapshotrequest", "snapshotenvelope")  # the `kind` label


def http_get(port: int, path: str, timeout: float = 5, host: str = HOST):
    """(status, content type, body) of GET http://127.0.0.1:<port><path>."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as reply:
            return reply.status, reply.headers.get("Content-Type"), reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type"), err.read().decode()


class Samples(dict):
    """One scrape: every sample keyed by ``name{labels}`` exactly as rendered, plus the names of
    the metrics the bus declares (``# TYPE`` lines, present before a metric has samples)."""

    declared: set[str]

    def value(self, name: str, **labels) -> float:
        """The sample of ``name`` with exactly these labels (in any order).

        Fails, rather than reading 0, for a metric the bus does not declare or a sample it does
        not render: a misspelt name or label would otherwise pass every ``== 0`` check."""
        assert name in self.declared, f"the bus declares no metric {name!r}"
        wanted = {k: str(v) for k, v in labels.items()}
        same_name = []
        for key, value in self.items():
            sample, _, rendered = key.partition("{")
            if sample != name:
                continue
            same_name.append(key)
            if dict(LABEL_RE.findall(rendered)) == wanted:
                return value
        raise AssertionError(f"no sample {name}{wanted} among {same_name}")

    def delta(self, before: "Samples", name: str, **labels) -> float:
        """How much ``name{labels}`` grew since ``before``."""
        return self.value(name, **labels) - before.value(name, **labels)

    def kinds(self, name: str, since: "Samples | None" = None, **labels) -> dict[str, float]:
        """``{kind: value}`` of a metric with a ``kind`` label, for every kind of bus message;
        with ``since`` (an earlier scrape), how much each grew since."""
        if since is None:
            return {kind: self.value(name, kind=kind, **labels) for kind in KINDS}
        return {kind: self.delta(since, name, kind=kind, **labels) for kind in KINDS}


def parse_metrics(text: str) -> Samples:
    """Every sample, keyed by `name{labels}` exactly as rendered."""
    samples = Samples()
    samples.declared = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            samples.declared.add(line.split()[2])
        if not line or line.startswith("#"):
            continue
        match = SAMPLE_RE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def scrape(port: int) -> Samples:
    """GET /metrics of the bus's metrics listener on ``port``, parsed."""
    status, content_type, body = http_get(port, "/metrics")
    assert status == 200, body
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    return parse_metrics(body)
