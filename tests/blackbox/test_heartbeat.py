"""Heartbeats (spec §3.6): purely client-driven, the server only answers success/error."""

import time

import tbclient
from tbclient import make_indicator


def test_heartbeats_while_traffic_flows(bus):
    sub = bus.subscriber("stix2/indicator")
    pub = bus.publisher()
    bus.sync(pub, sub)
    sent = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        assert sub.heartbeat() == {"status": "success"}
        assert time.monotonic() - t0 < 2.5, "heartbeat reply took too long"
        ind = make_indicator(f"30.0.0.{len(sent) + 1}")
        pub.send("stix2/indicator", ind)
        sent.append(ind["id"])
        time.sleep(0.2)
    assert len(sent) >= 4
    got = [o["id"] for _, o in sub.recv_n(len(sent), timeout=15)]
    assert got == sent
    assert tbclient.fence(pub, sub) == []


def test_heartbeat_after_unsubscribe_is_error(bus):
    sub = bus.subscriber("stix2/indicator")
    assert sub.heartbeat() == {"status": "success"}
    assert sub.unsubscribe() == {"status": "success"}
    assert sub.heartbeat() == {"status": "error"}
    assert sub.heartbeat() == {"status": "error"}


def test_heartbeat_for_each_of_several_subscriptions(bus):
    subs = [bus.subscriber(t) for t in ("stix2/indicator", "stix2/sighting", ["stix2/indicator", "stix2/sighting"])]
    for s in subs:
        assert s.heartbeat() == {"status": "success"}
    assert subs[1].unsubscribe() == {"status": "success"}
    assert [s.heartbeat()["status"] for s in subs] == ["success", "error", "success"]


def test_subscriptions_do_not_expire_without_heartbeats(bus):
    """No server-side expiry: a silent subscriber keeps receiving."""
    sub = bus.subscriber("stix2/indicator")
    pub = bus.publisher()
    bus.sync(pub, sub)
    time.sleep(6)
    ind = make_indicator("31.0.0.1")
    pub.send("stix2/indicator", ind)
    assert sub.recv()[1]["id"] == ind["id"]
    assert sub.heartbeat() == {"status": "success"}


def test_resubscribe_after_heartbeat_error(bus):
    """The official apps' recovery path: new subscription, then the old one is unsubscribed."""
    old = bus.subscriber("stix2/indicator")
    assert old.unsubscribe() == {"status": "success"}
    assert old.heartbeat() == {"status": "error"}
    new = bus.subscriber("stix2/indicator")
    assert new.p2p != old.p2p
    pub = bus.publisher()
    bus.sync(pub, new)
    ind = make_indicator("32.0.0.1")
    pub.send("stix2/indicator", ind)
    assert new.recv()[1]["id"] == ind["id"]
    assert old.unsubscribe() == {"status": "error"}
