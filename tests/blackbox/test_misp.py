"""MISP app (spec upstream.md §6): a real ZeroMQ PUB socket plays MISP's feed; a pyzmq app
subscribed to stix2/indicator receives what the bus makes of it."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import zmq

from conftest import HOST, default_config, free_ports
from fakemisp import FakeMisp
from tbclient import make_sighting

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
    # Without `api` nothing subscribes to sightings (upstream's queue grew without a reader).
    assert "label=misp sightings" not in bus.log()


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


def test_feed_reconnects_when_misp_restarts(bus_factory):
    manage, pub, sub, feed_port = free_ports(4)
    feed = FakeMispFeed(feed_port)
    config = default_config(manage, pub, sub)
    config["plugins"]["apps"]["misp"] = {"zmq": {"host": HOST, "port": feed_port}}
    bus = bus_factory(config=config, ports=(manage, pub, sub))
    receiver = bus.subscriber("stix2/indicator")
    sync(feed, receiver)
    feed.close()  # MISP goes away ...
    time.sleep(0.5)
    feed = FakeMispFeed(feed_port)  # ... and comes back on the same port
    try:
        sync(feed, receiver)  # probes flow again: the bus reconnected by itself
        after = notification(value="after-restart.example")
        feed.send(after)
        got = fence(feed, receiver)
        assert [obj["id"] for obj in got] == [f"indicator--{after['Attribute']['uuid']}"]
    finally:
        feed.close()


def test_kafka_is_refused_with_a_clear_error(bus_factory):
    manage, pub, sub = free_ports(3)
    config = default_config(manage, pub, sub)
    config["plugins"]["apps"]["misp"] = {"kafka": {"topics": ["misp_attribute"], "config": {}}}
    bus = bus_factory(config=config, ports=(manage, pub, sub), wait=False)
    assert bus.wait_exit(15) == 1
    assert "plugins.apps.misp.kafka" in bus.log() and "not supported yet" in bus.log()


# --------------------------------------------------------------------------- REST: sightings, snapshots

KEY = "MISP_API_KEY"


DEFAULT_FILTER = [{"orgs": ["1"], "types": ["domain", "ip-src"]}]


def rest_config(manage, pub, sub, feed_port, misp_port, filter=None, **api):
    config = default_config(manage, pub, sub)
    config["plugins"]["apps"]["misp"] = {
        "zmq": {"host": HOST, "port": feed_port},
        "api": {"host": f"http://{HOST}:{misp_port}", "ssl": False, "key": KEY, **api},
        "filter": filter or DEFAULT_FILTER,
    }
    return config


@pytest.fixture
def misp_rest(bus_factory):
    """A bus with the MISP app, its feed and a fake MISP REST API; yields a starter so that a
    test can choose to start the fake API later than the bus."""
    manage, pub, sub, feed_port, misp_port = free_ports(5)
    feed = FakeMispFeed(feed_port)
    fakes = []

    def start_api() -> FakeMisp:
        fake = FakeMisp(misp_port, key=KEY)
        fakes.append(fake)
        return fake

    def start_bus(**settings):
        return bus_factory(config=rest_config(manage, pub, sub, feed_port, misp_port, **settings),
                           ports=(manage, pub, sub))

    yield start_api, start_bus
    feed.close()
    for fake in fakes:
        fake.close()


def sightings_to(fake: FakeMisp, uuid_: str) -> list[dict]:
    return [r for r in fake.calls("/sightings/add") if (r["json"] or {}).get("id") == uuid_]


def test_sightings_reach_misp_with_upstreams_request(misp_rest):
    start_api, start_bus = misp_rest
    fake = start_api()
    attribute = str(uuid.uuid4())
    fake.known.add(attribute)
    bus = start_bus()
    # The start-up check: one authenticated GET.
    fake.wait_for(lambda rs: any(r["path"] == "/servers/getVersion" for r in rs))
    check = fake.calls("/servers/getVersion")[0]
    assert check["method"] == "GET" and check["headers"]["authorization"] == KEY
    publisher = bus.publisher()
    watcher = bus.subscriber("stix2/sighting")
    bus.sync(publisher, watcher)

    unknown = str(uuid.uuid4())
    publisher.send("stix2/sighting", make_sighting(f"malware--{uuid.uuid4()}"))  # not sent
    publisher.send("stix2/sighting", make_sighting(f"indicator--{unknown}"))  # MISP refuses
    sighting = make_sighting(f"indicator--{attribute}", x_threatbus_source="VAST",
                             created="2021-03-01T11:53:55.000Z",
                             last_seen="2021-03-02T10:00:00.250Z")
    publisher.send("stix2/sighting", sighting)
    fake.wait_for(lambda rs: any((r["json"] or {}).get("id") == attribute for r in rs))
    (sent,) = sightings_to(fake, attribute)
    assert sent["method"] == "POST"
    assert sent["headers"]["authorization"] == KEY
    assert sent["headers"]["accept"] == "application/json"
    assert sent["headers"]["content-type"] == "application/json"
    # last_seen (2021-03-02T10:00:00Z), not created as upstream sent
    assert sent["json"] == {"id": attribute, "source": "VAST", "type": "0",
                            "timestamp": "1614679200"}, sent["json"]
    assert len(sightings_to(fake, unknown)) == 1  # refused, logged, not retried
    assert not [r for r in fake.calls("/sightings/add")
                if not r["json"] or "malware" in json.dumps(r["json"])]
    deadline = time.monotonic() + 10
    while "MISP rejected a sighting" not in bus.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = bus.log()
    assert "MISP rejected a sighting" in log and "No valid attributes found" in log, log[-3000:]
    assert "label=misp sightings" in log  # subscribed because `api` is set
    assert bus.alive()


def test_sightings_wait_while_misp_is_down_and_are_retried(misp_rest):
    start_api, start_bus = misp_rest
    bus = start_bus()  # no MISP API yet
    publisher = bus.publisher()
    watcher = bus.subscriber("stix2/sighting")
    bus.sync(publisher, watcher)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    publisher.send("stix2/sighting", make_sighting(f"indicator--{first}"))
    publisher.send("stix2/sighting", make_sighting(f"indicator--{second}"))
    deadline = time.monotonic() + 10
    while "reporting a sighting to MISP failed; retrying" not in bus.log():
        assert time.monotonic() < deadline, bus.log()[-3000:]
        time.sleep(0.1)
    fake = start_api()
    fake.known.update({first, second})
    fake.failures.append(503)  # MISP comes up busy once more
    fake.wait_for(lambda rs: any((r["json"] or {}).get("id") == second for r in rs), timeout=60)
    assert len(sightings_to(fake, second)) == 1
    assert len(sightings_to(fake, first)) >= 1
    assert "MISP is reachable again" in bus.log()
    # MISP refusing the key is an outage too: the sighting waits for a fixed key.
    fake.key = "ROTATED"
    third = str(uuid.uuid4())
    fake.known.add(third)
    publisher.send("stix2/sighting", make_sighting(f"indicator--{third}"))
    fake.wait_for(lambda rs: len(sightings_to(fake, third)) >= 2, timeout=30)
    fake.key = KEY
    fake.wait_for(lambda rs: len(sightings_to(fake, third)) >= 3, timeout=60)
    assert "Authentication failed" in bus.log()


TLS = Path(__file__).parent / "tls"


@pytest.mark.parametrize("api, delivered", [
    ({"ssl": True, "ca_file": str(TLS / "ca.pem")}, True),  # verified against the test CA
    ({"ssl": True}, False),  # the system's trust store does not know the test CA
    ({"ssl": False}, True),  # encrypted, not verified
], ids=["ca_file", "untrusted", "no-verification"])
def test_sightings_over_https(bus_factory, api, delivered):
    manage, pub, sub, feed_port, misp_port = free_ports(5)
    feed = FakeMispFeed(feed_port)
    fake = FakeMisp(misp_port, key=KEY, tls=(str(TLS / "bus.pem"), str(TLS / "bus.key")))
    try:
        config = rest_config(manage, pub, sub, feed_port, misp_port)
        config["plugins"]["apps"]["misp"]["api"] = {"host": fake.url, "key": KEY, **api}
        bus = bus_factory(config=config, ports=(manage, pub, sub))
        attribute = str(uuid.uuid4())
        fake.known.add(attribute)
        publisher = bus.publisher()
        watcher = bus.subscriber("stix2/sighting")
        bus.sync(publisher, watcher)
        publisher.send("stix2/sighting", make_sighting(f"indicator--{attribute}"))
        if delivered:
            fake.wait_for(lambda rs: any((r["json"] or {}).get("id") == attribute for r in rs))
        else:
            deadline = time.monotonic() + 10
            while "UnknownIssuer" not in bus.log():
                assert time.monotonic() < deadline, bus.log()[-3000:]
                time.sleep(0.1)
            assert not fake.requests
            assert bus.alive()
    finally:
        fake.close()
        feed.close()


def search_attribute(kind, value, orgc_id="1", to_ids=True, tags=()):
    """An attribute as MISP's restSearch returns it (with its event's summary)."""
    return {
        "id": "15", "event_id": "1", "object_id": "0", "object_relation": None,
        "category": "Network activity", "type": kind, "to_ids": to_ids,
        "uuid": str(uuid.uuid4()), "timestamp": "1614599635", "distribution": "5",
        "sharing_group_id": "0", "comment": "", "deleted": False, "disable_correlation": False,
        "first_seen": None, "last_seen": None, "value": value,
        "Event": {"org_id": "1", "distribution": "1", "id": "1", "info": "evil",
                  "orgc_id": orgc_id, "uuid": str(uuid.uuid4())},
        "Tag": [{"id": str(i), "name": t} for i, t in enumerate(tags)],
    }


def test_snapshot_answered_from_misp_search(misp_rest):
    start_api, start_bus = misp_rest
    fake = start_api()
    domains = [search_attribute("domain", f"d{i}.example") for i in range(5)]
    ips = [search_attribute("ip-src", f"6.6.6.{i}") for i in range(3)]
    other_org = search_attribute("domain", "other-org.example", orgc_id="2")
    unmapped = search_attribute("ip-src", "")  # no value: cannot become an indicator
    fake.attributes = domains + ips + [other_org, unmapped]
    fake.search_gate.clear()
    bus = start_bus(page_size=2)
    requester = bus.subscriber("stix2/indicator", snapshot=7)
    publisher = bus.publisher()
    bus.sync(publisher, requester)
    fake.search_gate.set()
    got = requester.recv_n(len(domains) + len(ips), timeout=30)
    requester.expect_nothing(1.5)
    expected = {f"indicator--{a['uuid']}": a for a in domains + ips}
    assert {obj["id"] for _, obj in got} == set(expected)
    for suffix, obj in got:
        assert suffix == "indicator"
        attribute = expected[obj["id"]]
        kind = "domain-name" if attribute["type"] == "domain" else "ipv4-addr"
        assert obj["pattern"] == f"[{kind}:value = '{attribute['value']}']"
        assert obj["created"] == "2021-03-01T11:53:55.000Z"
        assert "x_threatbus_update" not in obj
    searches = fake.calls("/attributes/restSearch")
    now = time.time()
    for call in searches:
        assert call["method"] == "POST"
        assert call["headers"]["authorization"] == KEY
        assert call["headers"]["content-type"] == "application/json"
        body = call["json"]
        assert body["returnFormat"] == "json" and body["to_ids"] is True
        assert body["org"] == "1" and body["limit"] == 2
        assert abs(body["from"] - (now - 7 * 86400)) < 120, body
    pages = [(c["json"]["type"], c["json"]["page"]) for c in searches]
    # One query per org × type, paged until a short page: 6 domains (one of another org,
    # dropped by the bus's filter) → pages 1-3 full, 4 empty; 4 ip-src → 2 full, 3 empty.
    assert pages == [("domain", 1), ("domain", 2), ("domain", 3), ("domain", 4),
                     ("ip-src", 1), ("ip-src", 2), ("ip-src", 3)], pages
    log = bus.log()
    assert "snapshot from MISP sent" in log
    assert "indicators=8 duplicates=0 filtered=1 unmapped=1 pages=7" in log, log[-2000:]


def test_snapshot_sends_each_attribute_once_across_queries(misp_rest):
    start_api, start_bus = misp_rest
    fake = start_api()
    domains = [search_attribute("domain", f"twice{i}.example", tags=["tlp:red"]) for i in range(2)]
    tagged_ip = search_attribute("ip-src", "7.7.7.7", orgc_id="9", tags=["tlp:red"])
    plain_ip = search_attribute("ip-src", "8.8.8.8", orgc_id="9")
    fake.attributes = domains + [tagged_ip, plain_ip]
    fake.search_gate.clear()
    # Two entries, two queries; the second (tags only) finds the domains again.
    bus = start_bus(filter=[{"orgs": ["1"], "types": ["domain"]}, {"tags": ["tlp:red"]}])
    requester = bus.subscriber("stix2/indicator", snapshot=1)
    publisher = bus.publisher()
    bus.sync(publisher, requester)
    fake.search_gate.set()
    got = requester.recv_n(3, timeout=30)
    requester.expect_nothing(1.5)
    assert sorted(obj["id"] for _, obj in got) == sorted(
        f"indicator--{a['uuid']}" for a in domains + [tagged_ip])
    bodies = [c["json"] for c in fake.calls("/attributes/restSearch")]
    assert {"org": "1", "type": "domain"}.items() <= bodies[0].items()
    assert bodies[-1]["tags"] == {"OR": ["tlp:red"]} and "org" not in bodies[-1]
    assert "indicators=3 duplicates=2 filtered=1 unmapped=0" in bus.log()


def test_a_misp_error_ends_only_that_snapshot(misp_rest):
    start_api, start_bus = misp_rest
    fake = start_api()
    fake.search_error = {"name": "Not Found", "message": "Invalid API key or search", "url": "/x"}
    bus = start_bus()
    first = bus.subscriber("stix2/indicator", snapshot=3)
    fake.wait_for(lambda rs: any(r["path"] == "/attributes/restSearch" for r in rs))
    deadline = time.monotonic() + 10
    while "snapshot from MISP incomplete" not in bus.log():
        assert time.monotonic() < deadline, bus.log()[-3000:]
        time.sleep(0.1)
    assert "Invalid API key or search" in bus.log()
    fake.search_error = None
    attribute = search_attribute("domain", "after-error.example")
    fake.attributes = [attribute]
    fake.search_gate.clear()
    second = bus.subscriber("stix2/indicator", snapshot=3)
    publisher = bus.publisher()
    bus.sync(publisher, second, first)
    fake.search_gate.set()
    _, obj = second.recv(timeout=20)
    assert obj["id"] == f"indicator--{attribute['uuid']}"
    assert bus.alive()
