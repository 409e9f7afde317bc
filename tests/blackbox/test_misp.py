"""MISP app (spec upstream.md §6): a real ZeroMQ PUB socket plays MISP's feed; a pyzmq app
subscribed to stix2/indicator receives what the bus makes of it."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import zmq

from conftest import HOST, default_config, free_ports

TOPIC = "misp_json_attribute"


def notification(kind="domain", value="example.com", action="add", to_ids=True, orgc_id="1",
                 attribute_uuid=None, tags=(), timestamp="1614599635") -> dict:
    """A MISP attribute notification shaped like spec §6.8 fixture 3."""
    return {
        "Attribute": {
            "id": "15", "event_id": "1", "object_id": "0", "object_relation": None,
            "category": "Network activity", "type": kind, "value1": value, "value2": "",
            "to_ids": to_ids, "uuid": attribute_uuid or str(uuid.uuid4()), "timestamp": timestamp,
            "distribution": "5", "sharing_group_id": "0", "comment": "", "deleted": False,
            "disable_correlation": False, "first_seen": None, "last_seen": None, "value": value,
            "Tag": [{"id": str(i), "name": name} for i, name in enumerate(tags)], "Sighting": [],
        },
        "Event": {"id": "1", "org_id": "1", "orgc_id": orgc_id,
                  "Orgc": {"id": orgc_id, "uuid": str(uuid.uuid4()), "name": "ORGNAME"}},
        "action": action,
    }


class FakeMispFeed:
    """MISP's ZeroMQ plugin: a PUB socket the bus connects to."""

    def __init__(self, port: int):
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(f"tcp://{HOST}:{port}")

    def send(self, document):
        payload = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.sock.send(TOPIC.encode() + b" " + payload)

    def close(self):
        self.sock.close()


@pytest.fixture
def misp(bus_factory):
    manage, pub, sub, feed_port = free_ports(4)
    feed = FakeMispFeed(feed_port)
    config = default_config(manage, pub, sub)
    config["plugins"]["apps"]["misp"] = {
        "zmq": {"host": HOST, "port": feed_port},
        # The README's example done right: one entry, so org AND type must both match.
        "filter": [{"orgs": ["1", 25], "types": ["domain", "ip-src", "url"]}],
    }
    bus = bus_factory(config=config, ports=(manage, pub, sub))
    receiver = bus.subscriber("stix2/indicator")
    yield bus, feed, receiver
    feed.close()


def sync(feed: FakeMispFeed, receiver, timeout: float = 20):
    """Sends probe attributes until one arrives (ZeroMQ drops what a SUB is not yet connected
    for); returns once a last probe has arrived, so that nothing else is in flight."""
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, "no probe from the fake MISP feed reached the bus"
        probe = notification(value="probe.invalid")
        feed.send(probe)
        try:
            _, obj = receiver.recv(timeout=0.3)
        except AssertionError:
            continue
        if obj["pattern"] == "[domain-name:value = 'probe.invalid']":
            break
    fence(feed, receiver)


def fence(feed: FakeMispFeed, receiver) -> list[dict]:
    """Everything that arrives before a fence attribute sent now."""
    marker = str(uuid.uuid4())
    feed.send(notification(value="fence.invalid", attribute_uuid=marker))
    got = []
    while True:
        _, obj = receiver.recv(timeout=15)
        if obj["id"] == f"indicator--{marker}":
            return got
        if "probe.invalid" not in obj["pattern"]:
            got.append(obj)


def test_feed_attributes_become_indicators(misp):
    bus, feed, receiver = misp
    sync(feed, receiver)
    fixture = notification(attribute_uuid="5e1f2787-fcfc-4718-a58a-00b4c0a82f06")
    removal = notification(kind="ip-src", value="6.6.6.6", action="delete")
    edit_off = notification(kind="url", value="http://evil.com/x", action="edit", to_ids=False)
    compound = notification(kind="domain|ip", value="example.com|1.2.3.4")
    feed.send(fixture)
    feed.send(notification(to_ids=False))  # add, not for detection: nothing
    feed.send(removal)
    feed.send(edit_off)
    feed.send(compound)
    got = fence(feed, receiver)
    assert [obj["id"] for obj in got] == [f"indicator--{n['Attribute']['uuid']}"
                                          for n in (fixture, removal, edit_off)], got
    first = got[0]
    assert first["type"] == "indicator" and first["spec_version"] == "2.1"
    assert first["pattern"] == "[domain-name:value = 'example.com']"
    assert first["pattern_type"] == "stix"
    assert first["created"] == "2021-03-01T11:53:55.000Z"  # the attribute's time, in UTC
    assert "x_threatbus_update" not in first
    assert got[1]["pattern"] == "[ipv4-addr:value = '6.6.6.6']"
    assert got[1]["x_threatbus_update"] == "REMOVE"  # upstream turned deletions into adds
    assert got[2]["x_threatbus_update"] == "REMOVE"
    # The compound attribute is not among them: `domain|ip` is not in the filter's types.


def test_filters_apply_and_garbage_does_not_stop_the_feed(misp):
    bus, feed, receiver = misp
    sync(feed, receiver)
    feed.send(notification(orgc_id="7"))  # another org
    feed.send(notification(orgc_id=25))  # org as a number, matches 25
    feed.send(notification(kind="email-src", value="a@b.c"))  # type not in the filter
    for garbage in [b"not json", b"[1, 2]", b"{}", json.dumps({"Attribute": {}, "Event": {}}).encode(),
                    json.dumps(notification(action="INVALID_ACTION")).encode(),
                    json.dumps(notification(kind="port", value="80")).encode(), b"\xff\xfe"]:
        feed.send(garbage)
    feed.sock.send(b"misp_json_attribute")  # no document at all
    after = notification(value="after-garbage.example")
    feed.send(after)
    got = fence(feed, receiver)
    assert [obj["pattern"] for obj in got] == ["[domain-name:value = 'example.com']",
                                               "[domain-name:value = 'after-garbage.example']"], got
    assert bus.alive()
    assert "dropped an attribute from MISP" in bus.log()


def test_kafka_is_refused_with_a_clear_error(bus_factory):
    manage, pub, sub = free_ports(3)
    config = default_config(manage, pub, sub)
    config["plugins"]["apps"]["misp"] = {"kafka": {"topics": ["misp_attribute"], "config": {}}}
    bus = bus_factory(config=config, ports=(manage, pub, sub), wait=False)
    assert bus.wait_exit(15) == 1
    assert "plugins.apps.misp.kafka" in bus.log() and "not supported yet" in bus.log()
