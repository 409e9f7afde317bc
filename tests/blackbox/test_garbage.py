"""Robustness: malformed input on every socket must be dropped without side effects."""

import json
import re
import socket
import time
import uuid

import pytest

import tbclient
from stixutil import assert_same_json
from tbclient import make_indicator, make_sighting

HOST = "127.0.0.1"


def _j(obj) -> bytes:
    return json.dumps(obj).encode()


def _ind(**kw):
    d = make_indicator("66.66.66.66")
    for k, v in kw.items():
        if v is _DEL:
            d.pop(k, None)
        else:
            d[k] = v
    return d


_DEL = object()
_ENV_TOPIC = b"threatbus/snapshotenvelope "

# (id, frame bytes or list of parts for a multi-part message)
# Not listed on purpose: an indicator without `id` or without `created` -- upstream's stix2
# parser fills those in (new uuid4 id / created = now) and forwards the object.
SUB_GARBAGE = [
    ("no-space", b"stix2/indicator"),
    ("no-space-envelope", b"threatbus/snapshotenvelope"),
    ("empty-payload", b"stix2/indicator "),
    ("bad-json", b"stix2/indicator {not json"),
    ("truncated-json", b"stix2/indicator " + _j(make_indicator())[:-5]),
    ("json-object-not-stix", b'stix2/indicator {"foo": 1}'),
    ("json-list", b"stix2/indicator [1, 2, 3]"),
    ("json-string", b'stix2/indicator "indicator"'),
    ("json-null", b"stix2/indicator null"),
    ("json-number", b"stix2/indicator 42"),
    ("no-spec-version", b"stix2/indicator " + _j(_ind(spec_version=_DEL))),
    ("no-spec-version-with-labels", b"stix2/indicator " + _j(_ind(spec_version=_DEL, labels=["x"]))),
    ("spec-version-2.0", b"stix2/indicator " + _j(_ind(spec_version="2.0", labels=["malicious-activity"]))),
    ("spec-version-bogus", b"stix2/indicator " + _j(_ind(spec_version="9.9"))),
    ("type-malware", b"stix2/indicator " + _j({
        "type": "malware", "spec_version": "2.1", "id": f"malware--{uuid.uuid4()}",
        "created": "2020-01-01T00:00:00.000Z", "modified": "2020-01-01T00:00:00.000Z",
        "name": "evil", "is_family": False})),
    ("type-unknown", b"stix2/indicator " + _j(_ind(type="threatbus-thing"))),
    ("type-missing", b"stix2/indicator " + _j(_ind(type=_DEL))),
    ("id-not-uuid", b"stix2/indicator " + _j(_ind(id="indicator--1234"))),
    ("id-no-prefix", b"stix2/indicator " + _j(_ind(id=str(uuid.uuid4())))),
    ("id-wrong-type-prefix", b"stix2/indicator " + _j(_ind(id=f"sighting--{uuid.uuid4()}"))),
    ("sighting-bad-ref", b"stix2/sighting " + _j(make_sighting("indicator--xyz"))),
    ("sighting-ref-not-id", b"stix2/sighting " + _j(make_sighting("6.6.6.6"))),
    ("sighting-no-ref", b"stix2/sighting " + _j({k: v for k, v in make_sighting().items() if k != "sighting_of_ref"})),
    ("indicator-no-pattern", b"stix2/indicator " + _j(_ind(pattern=_DEL))),
    ("indicator-invalid-stix-pattern", b"stix2/indicator " + _j(_ind(pattern="[ipv4-addr:value = ]"))),
    ("indicator-no-pattern-type", b"stix2/indicator " + _j(_ind(pattern_type=_DEL))),
    ("created-invalid", b"stix2/indicator " + _j(_ind(created="yesterday"))),
    # Found by fuzzing: a multi-byte character inside a timestamp once crashed the receiver.
    ("created-non-ascii", b"stix2/indicator " + _j(_ind(created="2020-06-23T12:34:5\u0087@P6.0102Z"))),
    ("modified-invalid", b"stix2/indicator " + _j(_ind(modified="2020-13-45T99:00:00Z"))),
    ("non-utf8-payload", b"stix2/indicator \xff\xfe\x00\x80{}"),
    ("non-utf8-topic", b"stix2/\xff\xfe " + _j(make_indicator())),
    ("binary", b"stix2/" + bytes(range(256)) * 4),
    ("two-mib", b"stix2/indicator " + b"A" * (2 * 1024 * 1024)),
    ("two-mib-json", b"stix2/indicator " + _j({"type": "indicator", "x": "A" * (2 * 1024 * 1024)})),
    ("envelope-missing-keys", _ENV_TOPIC + _j({"type": "snapshotenvelope", "snapshot_id": "x"})),
    ("envelope-no-body", _ENV_TOPIC + _j({"type": "snapshotenvelope", "snapshot_type": 1, "snapshot_id": "x"})),
    ("envelope-bad-body", _ENV_TOPIC + _j({"type": "snapshotenvelope", "snapshot_type": 1, "snapshot_id": "x",
                                           "body": {"foo": 1}})),
    ("envelope-bad-snapshot-type", _ENV_TOPIC + _j({"type": "snapshotenvelope", "snapshot_type": "zzz",
                                                    "snapshot_id": "x", "body": make_indicator()})),
    ("envelope-not-envelope", _ENV_TOPIC + _j(make_indicator())),
    ("envelope-bad-json", _ENV_TOPIC + b"{{{"),
    ("envelope-list", _ENV_TOPIC + b"[]"),
    ("request-injection", b"threatbus/snapshotrequest " + _j(
        {"type": "snapshotrequest", "snapshot_type": 1, "snapshot_id": str(uuid.uuid4()), "snapshot": 100})),
    ("wrong-prefix-stix2", b"stix2 " + _j(make_indicator())),
    ("wrong-prefix-case", b"STIX2/indicator " + _j(make_indicator())),
    ("wrong-prefix-threatbus", b"threatbus/indicator " + _j(make_indicator())),
    ("empty-frame", b""),
    ("only-space", b" "),
    ("multipart-no-spaces", [b"stix2/indicator", b"junk"]),
    ("multipart-three", [b"stix2/indicator", b"{}", b"stix2/sighting"]),
    ("multipart-empty-parts", [b"stix2/indicator", b"", b""]),
]


def send_garbage(pub, item):
    if isinstance(item, list):
        pub.send_multipart(item)
    else:
        pub.send_raw(item)


@pytest.mark.parametrize("item", [g[1] for g in SUB_GARBAGE], ids=[g[0] for g in SUB_GARBAGE])
def test_sub_socket_garbage_is_dropped(shared_bus, item):
    everyone = shared_bus.subscriber(["stix2", "threatbus"])
    pub = shared_bus.publisher(settle=0)
    try:
        shared_bus.sync(pub, everyone)
        send_garbage(pub, item)
        # A frame above max_message_size makes ZeroMQ drop the sender's connection; it
        # reconnects by itself. Sync again so that the valid frame is not lost to that (any
        # garbage that leaked is kept in `pending` and shows up below).
        shared_bus.sync(pub, everyone)
        valid = make_indicator("1.1.1.1")
        pub.send("stix2/indicator", valid)
        items = tbclient.fence(pub, everyone)
        assert shared_bus.alive(), "bus died"
        assert [o.get("id") for _, o in items] == [valid["id"]], f"garbage leaked through: {items!r:.1500}"
        assert_same_json(items[0][1], valid)
    finally:
        if shared_bus.alive():
            assert everyone.unsubscribe() == {"status": "success"}
        everyone.close()
        pub.close()


MANAGE_GARBAGE = [
    b"", b" ", b"FOO", b"{", b"}", b"[", b"\x00\x01\x02", b"\xff" * 100, b"null", b"true", b"0", b"-1e999",
    b'"action"', b"[{}]", b'{"action": "subscribe", "topic": "a", "snapshot": 1e400}',
    b'{"action": "subscribe", "topic": {"nested": ["x"]}}', b'{"action": "subscribe", "topic": 5}',
    b'{"action": "subscribe", "topic": true}', b'{"action": "heartbeat", "topic": {"a": 1}}',
    b'{"action": "unsubscribe", "topic": 5}', b'{"action": ["subscribe"], "topic": "x"}',
    b'{"action": "subscribe", "topic": "x", "snapshot": "1e3"}', b'{"action": "subscribe", "topic": "x", "snapshot": "abc"}',
    b'{"action": "subscribe", "topic": "x", "snapshot": {"days": 1}}', b'{"action": "subscribe", "topic": "x", "snapshot": null}',
    b'{"action": "\\ud800", "topic": "x"}', b'{"a": ' * 64 + b"1" + b"}" * 64,
    b'{"action": "subscribe", "topic": "x", "snapshot": 1}' + b" trailing",
    b"{" + b'"k": 1, ' * 10000 + b'"action": "FOO"}',
    json.dumps({"action": "subscribe", "topic": "x" * 100000, "snapshot": "FOO"}).encode(),
]


@pytest.mark.parametrize("raw", MANAGE_GARBAGE, ids=[f"m{i}" for i in range(len(MANAGE_GARBAGE))])
def test_manage_garbage_gets_an_error_reply(shared_bus, raw):
    reply = shared_bus.manage(raw, timeout=10)
    # A request over a limit (the last two are above max_request_size) also names the limit.
    status = {k: v for k, v in reply.items() if k != "reason"}
    assert status in ({"status": "error"}, {"status": "unknown request"}), reply
    assert "reason" not in reply or "max_request_size" in reply["reason"], reply
    assert shared_bus.manage({"action": "heartbeat", "topic": "TOPIC"}) == {"status": "error"}


def tcp_junk(port, payload, keep_open=False):
    s = socket.create_connection((HOST, port), timeout=5)
    try:
        if payload:
            s.sendall(payload)
            time.sleep(0.05)
    except OSError:
        pass  # the peer may already have closed the connection
    if keep_open:
        return s
    s.close()
    return None


TCP_JUNK = [
    b"",
    b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f",  # ZMTP signature then nothing
    b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f\x03\x00NULL" + b"\x00" * 16 + b"\x00" + b"\x00" * 31 + b"\xde\xad" * 50,
    bytes(range(256)) * 16,
    b"stix2/indicator " + json.dumps(make_indicator()).encode(),
]


def run_tcp_junk(bus):
    """Plain TCP clients writing junk to all three ports; returns sockets that stay open."""
    kept = []
    for port in (bus.manage_port, bus.pub_port, bus.sub_port):
        for payload in TCP_JUNK:
            tcp_junk(port, payload)
        kept.append(tcp_junk(port, b"\x00junk-that-stays-open", keep_open=True))
        kept.append(tcp_junk(port, b"", keep_open=True))
    return kept


def test_everything_at_once_then_roundtrip(bus):
    """All garbage on all sockets; afterwards the bus is alive, a full round trip works, and
    the subscriber saw nothing but the final valid indicator."""
    watcher = bus.subscriber(["stix2/indicator", "stix2/sighting"])
    pub = bus.publisher()
    bus.sync(pub, watcher)
    for _, item in SUB_GARBAGE:
        send_garbage(pub, item)
    for raw in MANAGE_GARBAGE:
        reply = bus.manage(raw, timeout=10)
        assert reply.get("status") in ("error", "unknown request"), (raw[:100], reply)
    kept = run_tcp_junk(bus)
    try:
        time.sleep(1)
        assert bus.alive(), "bus died"
        # a full round trip with fresh clients, while junk connections stay open
        fresh = bus.subscriber("stix2/indicator")
        fresh_pub = bus.publisher()
        bus.sync(fresh_pub, fresh)
        assert fresh.heartbeat() == {"status": "success"}
        valid = make_indicator("1.0.0.1", name="after garbage")
        fresh_pub.send("stix2/indicator", valid)
        suffix, obj = fresh.recv()
        assert (suffix, obj["id"]) == ("indicator", valid["id"])
        assert_same_json(obj, valid)
        # the old subscriber: only the valid indicator, nothing from the garbage
        items = tbclient.fence(fresh_pub, watcher)
        assert [(s, o.get("id")) for s, o in items] == [("indicator", valid["id"])], f"{items!r:.2000}"
        assert fresh.unsubscribe() == {"status": "success"}
    finally:
        for s in kept:
            if s is not None:
                s.close()
    assert bus.alive()
    log = bus.log()
    assert re.search(r"drop|invalid|ignor|reject|discard", log, re.I), "no log line about dropped garbage"


@pytest.mark.fixed_upstream_bug
def test_snapshotenvelope_x_topic_does_not_reenqueue(bus):
    """Upstream re-enqueues the previously decoded object for topics that merely start with
    threatbus/snapshotenvelope (stale variable, §3.5)."""
    sub = bus.subscriber(["stix2/indicator", "stix2/sighting"])
    pub = bus.publisher()
    bus.sync(pub, sub)
    first = make_indicator("21.0.0.1")
    pub.send("stix2/indicator", first)
    assert sub.recv()[1]["id"] == first["id"]
    env = {"type": "snapshotenvelope", "snapshot_type": 1, "snapshot_id": str(uuid.uuid4()),
           "body": make_indicator("21.0.0.2")}
    pub.send("threatbus/snapshotenvelopeX", env)
    pub.send("threatbus/snapshotenvelope/x", env)
    pub.send("threatbus/snapshotenvelopes", make_indicator("21.0.0.3"))
    items = tbclient.fence(pub, sub)
    assert items == [], f"stale object re-enqueued: {items!r:.1000}"


@pytest.mark.fixed_upstream_bug
def test_multipart_continuation_does_not_reenqueue(bus):
    """Upstream treats later parts of a multi-part message as frames of their own; a part with a
    space and an unknown 'topic' re-enqueues the previously decoded object."""
    sub = bus.subscriber("stix2/indicator")
    pub = bus.publisher()
    bus.sync(pub, sub)
    first = make_indicator("22.0.0.1")
    pub.send("stix2/indicator", first)
    assert sub.recv()[1]["id"] == first["id"]
    pub.send_multipart([b"stix2/indicator", b'{"a": 1}'])
    pub.send_multipart([b"stix2/indicator x", b"y z"])
    items = tbclient.fence(pub, sub)
    assert items == [], f"stale object re-enqueued: {items!r:.1000}"
