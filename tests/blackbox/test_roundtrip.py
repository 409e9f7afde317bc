"""Message round trips through the bus (spec §1.2, §1.3, §3.4, §3.5, §9.2)."""

import json
import uuid
from datetime import datetime, timezone

import stix2

import tbclient
from stixutil import assert_same_json, assert_same_stix
from tbclient import make_indicator, make_sighting

INDICATOR_ID = "indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc"


def ms_now():
    d = datetime.now(timezone.utc)
    return d.replace(microsecond=d.microsecond // 1000 * 1000)


def test_upstream_integration_roundtrip(bus):
    """tests/integration/test_zmq_app_message_roundtrips.py, with a real slow-joiner guard."""
    receiver = bus.subscriber(["stix2/indicator", "stix2/sighting"], snapshot=100)
    sender = bus.publisher()
    bus.sync(sender, receiver)

    created = ms_now()
    indicator = stix2.Indicator(
        id=INDICATOR_ID, created=created, modified=created,
        pattern="[ipv4-addr:value = '6.6.6.6']", pattern_type="stix", spec_version="2.1",
    )
    sighting = stix2.Sighting(
        created=created, modified=created, sighting_of_ref=INDICATOR_ID, spec_version="2.1",
    )
    sender.send("stix2/indicator", indicator)
    sender.send("stix2/sighting", sighting)

    items = tbclient.fence(sender, receiver)  # everything that arrived before the fence
    assert [s for s, _ in items] == ["indicator", "sighting"], f"expected exactly 2 frames, got {items!r:.2000}"
    assert_same_stix(items[0][1], indicator)
    assert_same_stix(items[1][1], sighting)
    assert receiver.unsubscribe() == {"status": "success"}


def test_frame_shape(bus):
    """<p2p><suffix> <json>: suffix glued to the 32-char p2p topic, one space, then a JSON object."""
    sub = bus.subscriber("stix2/indicator")
    pub = bus.publisher()
    bus.sync(pub, sub)
    ind = make_indicator("1.2.3.4")
    pub.send("stix2/indicator", ind)
    sub.recv()
    raw = sub.raw_log[-1]
    head, sep, payload = raw.partition(b" ")
    assert head == (sub.p2p + "indicator").encode(), raw[:100]
    assert json.loads(payload)["id"] == ind["id"]


def test_custom_properties_preserved(bus):
    sub = bus.subscriber("stix2/indicator")
    pub = bus.publisher()
    bus.sync(pub, sub)
    ind = make_indicator(
        "7.7.7.7",
        name="Ünïcødé ☃ — \"quoted\" \\ back",
        description="line1\nline2\ttab",
        labels=["malicious-activity", "ünï"],
        external_references=[{"source_name": "example", "url": "https://example.com/a?b=c"}],
        x_vendor_score=7,
        x_threatbus_update="EDIT",
        x_nested={"a": [1, None, {"b": True}], "c": 1.5, "d": "ü"},
    )
    pub.send("stix2/indicator", ind)
    suffix, obj = sub.recv()
    assert suffix == "indicator"
    assert_same_json(obj, ind)


def test_sighting_with_threatbus_extensions(bus):
    sub = bus.subscriber("stix2/sighting")
    pub = bus.publisher()
    bus.sync(pub, sub)
    nested_ind = make_indicator("6.6.6.6", id=INDICATOR_ID, x_threatbus_update="REMOVE")
    sighting = make_sighting(
        INDICATOR_ID,
        last_seen="2020-05-01T12:34:56.789Z",
        count=3,
        x_threatbus_source="VAST",
        x_threatbus_match_type="RETRO",
        x_threatbus_indicator_value="6.6.6.6",
        x_threatbus_sighting_context={
            "ts": "2017-03-03T23:56:09.263Z", "uid": "C6oWXy2BnDf5wxnDp3", "id.orig_h": "6.6.6.6",
            "nested": {"list": [1, "two", None, {"deep": [False]}], "empty": {}, "zero": 0},
            "noisy": False,
        },
        x_threatbus_indicator=nested_ind,
    )
    pub.send("stix2/sighting", sighting)
    suffix, obj = sub.recv()
    assert suffix == "sighting"
    assert_same_json(obj, sighting)
    assert_same_stix(obj, sighting)


def test_sighting_on_indicator_topic_is_routed_by_type(bus):
    """§1.2: the routing topic comes from the object type, not from the ZMQ topic."""
    ind_sub = bus.subscriber("stix2/indicator")
    sig_sub = bus.subscriber("stix2/sighting")
    pub = bus.publisher()
    bus.sync(pub, ind_sub, sig_sub)
    sighting = make_sighting()
    indicator = make_indicator("5.5.5.5")
    pub.send("stix2/indicator", sighting)
    pub.send("stix2/sighting", indicator)
    pub.send("stix2/whatever", make_indicator("5.5.5.6"))
    suffix, obj = sig_sub.recv()
    assert (suffix, obj["id"]) == ("sighting", sighting["id"])
    suffix, obj = ind_sub.recv()
    assert (suffix, obj["id"]) == ("indicator", indicator["id"])
    suffix, obj = ind_sub.recv()
    assert (suffix, obj["pattern"]) == ("indicator", "[ipv4-addr:value = '5.5.5.6']")
    assert tbclient.fence(pub, ind_sub, "indicator") == []
    assert tbclient.fence(pub, sig_sub, "sighting") == []


def test_stix2_topic_receives_both(bus):
    sub = bus.subscriber("stix2")
    pub = bus.publisher()
    bus.sync(pub, sub)
    ind, sig = make_indicator("4.4.4.4"), make_sighting()
    pub.send("stix2/indicator", ind)
    pub.send("stix2/sighting", sig)
    items = tbclient.fence(pub, sub)
    assert [(s, o["id"]) for s, o in items] == [("indicator", ind["id"]), ("sighting", sig["id"])]


def test_string_prefix_subscription(bus):
    """§1.3: plain string prefix: 'stix2/ind' gets indicators, not sightings."""
    sub = bus.subscriber("stix2/ind")
    pub = bus.publisher()
    bus.sync(pub, sub)
    sig, ind = make_sighting(), make_indicator("3.3.3.3")
    pub.send("stix2/sighting", sig)
    pub.send("stix2/indicator", ind)
    items = tbclient.fence(pub, sub)
    assert [(s, o["id"]) for s, o in items] == [("indicator", ind["id"])]


def test_unrelated_topic_receives_nothing(bus_factory):
    """A subscription to a topic no message type falls under gets no indicator and no sighting.

    The bus's counters say what it queued for the ZeroMQ app's subscribers: the indicator and
    the fence for the stix2/indicator subscriber, nothing more. That the TOPIC subscriber is
    connected and listened to shows afterwards: a snapshot request (which goes to every ZeroMQ
    subscriber) reaches it, as the first and only frame it ever got."""
    bus = bus_factory(metrics=True)
    sub = bus.subscriber("TOPIC")
    ind_sub = bus.subscriber("stix2/indicator")
    pub = bus.publisher()
    bus.sync(pub, ind_sub)
    before = bus.metrics()
    indicator = make_indicator()
    pub.send("stix2/indicator", indicator)
    pub.send("stix2/sighting", make_sighting())
    assert ind_sub.recv()[1]["id"] == indicator["id"]
    # Routed in order: once the fence is through, so are the indicator and the sighting.
    assert tbclient.fence(pub, ind_sub) == []
    after = bus.metrics()
    if after is not None:
        assert after.value("threatbus_subscribers", app="zmq") == 2
        # the bus took the indicator, the fence and the sighting ...
        received = after.kinds("threatbus_app_received_messages_total", since=before, app="zmq")
        assert received == {"indicator": 2, "sighting": 1, "snapshotrequest": 0, "snapshotenvelope": 0}
        # ... and queued one copy each of the indicator and the fence, for ind_sub; none for the
        # TOPIC subscriber
        sent = after.kinds("threatbus_app_sent_messages_total", since=before, app="zmq")
        assert sent == {"indicator": 2, "sighting": 0, "snapshotrequest": 0, "snapshotenvelope": 0}
    bus.subscriber("stix2/indicator", snapshot=1)
    suffix, request = sub.recv()
    assert (suffix, request["type"]) == ("snapshotrequest", "snapshotrequest"), (suffix, request)
    assert len(sub.raw_log) == 1, f"the TOPIC subscriber got more than the request: {sub.raw_log!r:.2000}"


def test_two_subscribers_and_unsubscribe(bus_factory):
    bus = bus_factory(metrics=True)
    s1 = bus.subscriber("stix2/indicator")
    s2 = bus.subscriber("stix2/indicator")
    pub = bus.publisher()
    bus.sync(pub, s1, s2)
    first = make_indicator("2.2.2.2")
    pub.send("stix2/indicator", first)
    for s in (s1, s2):
        suffix, obj = s.recv()
        assert (suffix, obj["id"]) == ("indicator", first["id"])
    before = bus.metrics()
    assert s1.unsubscribe() == {"status": "success"}
    second = make_indicator("2.2.2.3")
    pub.send("stix2/indicator", second)
    suffix, obj = s2.recv()
    assert (suffix, obj["id"]) == ("indicator", second["id"])
    assert tbclient.fence(pub, s2) == []
    after = bus.metrics()
    if after is not None:
        assert (before.value("threatbus_subscribers", app="zmq"),
                after.value("threatbus_subscribers", app="zmq")) == (2, 1)
        # the second indicator and the fence, each queued once: for s2, not for s1
        assert after.delta(before, "threatbus_app_sent_messages_total", app="zmq", kind="indicator") == 2
    s1.expect_nothing(1.5)


def test_no_echo_suppression(bus):
    """An app (subscriber + publisher) gets its own indicator back (§1.3)."""
    app_sub = bus.subscriber(["stix2/indicator", "stix2/sighting"])
    app_pub = bus.publisher()
    bus.sync(app_pub, app_sub)
    ind = make_indicator("8.8.4.4")
    app_pub.send("stix2/indicator", ind)
    suffix, obj = app_sub.recv()
    assert (suffix, obj["id"]) == ("indicator", ind["id"])


def test_many_indicators_in_order(bus):
    sub = bus.subscriber("stix2/indicator")
    pub = bus.publisher()
    bus.sync(pub, sub)
    sent = [make_indicator(f"10.0.{i // 256}.{i % 256}", x_seq=i) for i in range(200)]
    for ind in sent:
        pub.send("stix2/indicator", ind)
    got = sub.recv_n(200, timeout=60)
    assert [o["id"] for _, o in got] == [i["id"] for i in sent]
    assert all(s == "indicator" for s, _ in got)
    assert [o["x_seq"] for _, o in got] == list(range(200))
    assert tbclient.fence(pub, sub) == []


def test_several_publishers(bus):
    sub = bus.subscriber("stix2")
    p1, p2 = bus.publisher(), bus.publisher()
    bus.sync(p1, sub)
    bus.sync(p2, sub)
    a, b = make_indicator("11.1.1.1"), make_sighting()
    p1.send("stix2/indicator", a)
    p2.send("stix2/sighting", b)
    got = {o["id"] for _, o in sub.recv_n(2)}
    assert got == {a["id"], b["id"]}


def test_subscriber_can_publish_before_subscribing_others(bus):
    """A subscription made after traffic started only sees later traffic."""
    early = bus.subscriber("stix2/indicator")
    pub = bus.publisher()
    bus.sync(pub, early)
    before = make_indicator("12.0.0.1")
    pub.send("stix2/indicator", before)
    assert early.recv()[1]["id"] == before["id"]
    late = bus.subscriber("stix2/indicator")
    bus.sync(pub, early, late)
    after = make_indicator("12.0.0.2")
    pub.send("stix2/indicator", after)
    assert late.recv()[1]["id"] == after["id"]
    assert early.recv()[1]["id"] == after["id"]
    assert tbclient.fence(pub, late) == []


def test_unicode_frame_is_utf8(bus):
    sub = bus.subscriber("stix2/indicator")
    pub = bus.publisher()
    bus.sync(pub, sub)
    ind = make_indicator("13.0.0.1", name="Ünïcødé ☃ 𝄞")
    pub.send("stix2/indicator", ind)
    _, obj = sub.recv()
    assert obj["name"] == "Ünïcødé ☃ 𝄞"
    assert uuid.UUID(obj["id"].split("--", 1)[1])


def test_burst_larger_than_zmq_defaults_arrives_complete(bus_factory):
    """The pub/sub buffer sizes (`send_hwm`, `receive_hwm`) reach the sockets.

    A reader that lags far behind a burst relies on the bus's per-app send buffer: here the
    reader's own buffer is small and it reads nothing until the whole burst is out, so frames pile
    up at the bus. With ZeroMQ's default of 1000 frames (what the bus got when it set the option
    after binding) part of the burst was dropped."""
    import time

    import zmq

    n = 20000
    bus = bus_factory(extra_zmq_keys={"send_hwm": 60000, "receive_hwm": 60000})
    reply = tbclient.manage(bus.manage_port, {"action": "subscribe", "topic": "stix2/indicator"})
    sock = tbclient.ctx().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 500)
    sock.connect(f"tcp://127.0.0.1:{bus.pub_port}")
    sock.setsockopt_string(zmq.SUBSCRIBE, reply["topic"])
    pub = bus.publisher()
    probe = tbclient.Subscriber(bus.manage_port, "stix2/indicator")
    bus.sync(pub, probe)  # both directions are connected once a probe gets through
    time.sleep(0.5)
    while sock.poll(100):
        sock.recv()  # probes of the sync above
    sent = [make_indicator(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", x_seq=i) for i in range(n)]
    for ind in sent:
        pub.send("stix2/indicator", ind)
    # The bus has published the whole burst once the probe subscriber has it; meanwhile nobody
    # read `sock`, so the burst piled up behind it.
    probe.recv_n(n, timeout=120)
    deadline = time.monotonic() + 120
    seqs = []
    while len(seqs) < n and time.monotonic() < deadline:
        if not sock.poll(5000):
            break
        frame = sock.recv()
        obj = json.loads(frame.split(b" ", 1)[1])
        if "x_seq" in obj:
            seqs.append(obj["x_seq"])
    assert seqs == list(range(n)), f"received {len(seqs)} of {n}; first gap at {next((i for i, s in enumerate(seqs) if s != i), None)}"
