"""Zeek app (spec upstream.md §5, zeek-broker.md): a peer written here (brokerpeer.py) plays
Zeek's side of the Broker protocol against the built binary, over plain TCP and anonymous TLS,
in both handshake roles; pyzmq apps publish indicators and receive sightings."""

from __future__ import annotations

import signal
import socket
import ssl
import struct
from datetime import datetime
from pathlib import Path
import time

import pytest

import brokerpeer
import tbclient
from brokerpeer import Peer, s
from conftest import HOST, default_config, free_ports
from tbclient import make_indicator

SMALL_ID = bytes(15) + b"\x01"  # smaller than any bus id: Zeek originates
LARGE_ID = b"\xff" * 16  # larger than any bus id: the bus originates
ID = "indicator--46b3f973-5c03-41fc-9efe-49598a267a35"


TLS_DIR = Path(__file__).parent / "tls"


def start_zeek_bus(bus_factory, **zeek_keys):
    """A bus with the in-memory backbone, the ZeroMQ app and the Zeek app."""
    manage, pub, sub, zeek = free_ports(4)
    config = default_config(manage, pub, sub)
    config["plugins"]["apps"]["zeek"] = {"host": HOST, "port": zeek, "module_namespace": "Tenzir",
                                         **zeek_keys}
    bus = bus_factory(config=config, ports=(manage, pub, sub), wait_ports=[manage, pub, sub, zeek])
    bus.zeek_port = zeek
    return bus


@pytest.fixture
def zeek_bus(bus_factory):
    return start_zeek_bus(bus_factory)


def peer(bus, **kwargs) -> Peer:
    return Peer(bus.zeek_port, **kwargs)


def subscribe(zeek: Peer, topic="stix2/indicator", snapshot_ns=0) -> str:
    """Zeek's side of threatbus.zeek: subscribe, take the ack, Broker-subscribe the p2p topic."""
    zeek.publish("threatbus/manage", brokerpeer.event("Tenzir::subscribe", s(topic), ("timespan", snapshot_ns)))
    topic_got, name, args = zeek.recv_event()
    assert (topic_got, name) == ("threatbus/manage", "Tenzir::subscription_acknowledged"), (topic_got, name)
    p2p = brokerpeer.plain(args[0])
    assert p2p.startswith(topic) and len(p2p) == len(topic) + 10 and p2p[len(topic):].isalpha()
    assert p2p[len(topic):].islower()
    zeek.subscribe(p2p)
    return p2p


def synced_publisher(bus):
    """A ZeroMQ publisher whose connection to the bus is up (probes reached a ZeroMQ app)."""
    publisher = bus.publisher()
    tbclient.sync(publisher, [bus.subscriber("stix2/indicator")])
    return publisher


def wait_logged(bus, text: str, timeout: float = 10):
    """The bus logs asynchronously: wait for a line rather than read the log once."""
    deadline = time.monotonic() + timeout
    while text not in bus.log():
        assert time.monotonic() < deadline, f"{text!r} not logged within {timeout}s"
        time.sleep(0.1)


def intel(zeek: Peer, p2p: str) -> list:
    topic, name, args = zeek.recv_event()
    assert (topic, name) == (p2p, "Tenzir::intel"), (topic, name, args)
    assert len(args) == 1 and args[0][0] == "vector" and len(args[0][1]) == 5, args
    ts, *rest = args[0][1]
    assert ts[0] == "timestamp", ts
    return [ts[1], *(brokerpeer.plain(v) for v in rest)]


# --------------------------------------------------------------------------- handshake


@pytest.mark.parametrize("tls", [True, False], ids=["anonymous-tls", "plain"])
@pytest.mark.parametrize("own_id", [SMALL_ID, LARGE_ID], ids=["zeek-originates", "bus-originates"])
def test_handshake_in_both_roles_over_tls_and_plain_tcp(zeek_bus, tls, own_id):
    zeek = peer(zeek_bus, tls=tls, own_id=own_id)
    assert zeek.originator == (own_id == SMALL_ID)
    assert zeek.bus_id not in (bytes(16), own_id)
    # The bus announces what threatbus.zeek publishes on.
    assert "threatbus/manage" in zeek.bus_filter and "stix2/sighting" in zeek.bus_filter
    if tls:
        assert (zeek.tls_version, zeek.cipher) == ("TLSv1.2", "AECDH-AES256-SHA")
    # Pings are answered with the same payload.
    zeek.ping(b"hello")
    zeek.wait_pong(b"hello")
    # The bus pinged first (its gate for data) and the peer answered.
    assert b"threatbus-ready" in zeek.pings
    # Zeek's graceful unpeering: a BYE ping, answered like any ping.
    bye = b"BYE" + struct.pack("=Q", 7)
    zeek.ping(bye)
    zeek.wait_pong(bye)
    zeek.close()
    assert zeek_bus.alive()
    assert "Zeek peered" in zeek_bus.log()


# --------------------------------------------------------------------------- intel


MAPPED = [
    ("[domain-name:value = 'evil.com']", "DOMAIN", "evil.com"),
    ("[email-addr:value = 'a@evil.com']", "EMAIL", "a@evil.com"),
    ("[file:name = 'evil.exe']", "FILE_NAME", "evil.exe"),
    ("[file:hashes.MD5 = 'd41d8cd98f00b204e9800998ecf8427e']", "FILE_HASH", "d41d8cd98f00b204e9800998ecf8427e"),
    # Hash names are compared as STIX defines them (upstream wanted this exact text).
    ("[file:hashes.md5 = 'd41d8cd98f00b204e9800998ecf8427e']", "FILE_HASH", "d41d8cd98f00b204e9800998ecf8427e"),
    ("[file:hashes.'SHA-256' = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855']",
     "FILE_HASH", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    ("[ipv4-addr:value = '6.6.6.6']", "ADDR", "6.6.6.6"),
    ("[ipv6-addr:value = '2001:db8::1']", "ADDR", "2001:db8::1"),
    ("[ipv4-addr:value = '10.0.0.0/8']", "SUBNET", "10.0.0.0/8"),
    ("[software:name = 'nginx']", "SOFTWARE", "nginx"),
    ("[url:value = 'http://evil.com/path']", "URL", "evil.com/path"),
    ("[user:user_id = 'root']", "USER_NAME", "root"),
    ("[x509-certificate:hashes.'SHA-1' = 'da39a3ee5e6b4b0d3255bfef95601890afd80709']",
     "CERT_HASH", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
]
NOT_SENT = [
    "[ipv4-addr:value = '1.1.1.1' OR ipv4-addr:value = '2.2.2.2']",
    "[process:name = 'evil']",
    "[file:size = 100]",
]


@pytest.mark.parametrize("tls", [True, False], ids=["anonymous-tls", "plain"])
@pytest.mark.parametrize("own_id", [SMALL_ID, LARGE_ID], ids=["zeek-originates", "bus-originates"])
def test_indicators_reach_zeek_as_intel_one_per_mapped_type(zeek_bus, tls, own_id):
    publisher = synced_publisher(zeek_bus)
    zeek = peer(zeek_bus, tls=tls, own_id=own_id)
    p2p = subscribe(zeek)
    sent = []
    for i, (pattern, _, _) in enumerate(MAPPED):
        # An unmapped or compound indicator before each mapped one: none of them may arrive.
        bad = make_indicator(pattern=NOT_SENT[i % len(NOT_SENT)])
        good = make_indicator(pattern=pattern)
        publisher.send("stix2/indicator", bad)
        publisher.send("stix2/indicator", good)
        sent.append(good)
    removal = make_indicator(pattern="[domain-name:value = 'gone.org']", x_threatbus_update="REMOVE")
    publisher.send("stix2/indicator", removal)
    for (pattern, kind, value), indicator in zip(MAPPED, sent):
        ts, got_id, got_kind, got_value, operation = intel(zeek, p2p)
        assert (got_id, got_kind, got_value, operation) == (indicator["id"], kind, value, "ADD"), pattern
        created = datetime.fromisoformat(indicator["created"].replace("Z", "+00:00"))
        assert ts == round(created.timestamp() * 1000) * 1_000_000, (ts, indicator["created"])
    assert intel(zeek, p2p)[1:] == [removal["id"], "DOMAIN", "gone.org", "REMOVE"]
    zeek.expect_no_event(1.0)


def test_upstream_receive_iocs_scenario(zeek_bus):
    """upstream test_zeek_inmem · receive_iocs: 13 indicators arrive as 13 Tenzir::intel events
    with (created, id, "DOMAIN", "example.com", "ADD")."""
    publisher = synced_publisher(zeek_bus)
    zeek = peer(zeek_bus)
    p2p = subscribe(zeek)
    sent = [make_indicator(pattern="[domain-name:value = 'example.com']") for _ in range(13)]
    for indicator in sent:
        publisher.send("stix2/indicator", indicator)
    for indicator in sent:
        ts, *rest = intel(zeek, p2p)
        assert rest == [indicator["id"], "DOMAIN", "example.com", "ADD"]
        created = datetime.fromisoformat(indicator["created"].replace("Z", "+00:00"))
        assert ts == round(created.timestamp() * 1000) * 1_000_000
    zeek.expect_no_event(0.5)


def test_intel_waits_until_zeek_subscribes_to_the_p2p_topic(zeek_bus):
    """Upstream raced here and lost the first intel: the bus holds it until Zeek's filter
    covers the p2p topic."""
    publisher = synced_publisher(zeek_bus)
    zeek = peer(zeek_bus)
    zeek.publish("threatbus/manage", brokerpeer.event("Tenzir::subscribe", s("stix2/indicator"), ("timespan", 0)))
    _, name, args = zeek.recv_event()
    assert name == "Tenzir::subscription_acknowledged"
    p2p = brokerpeer.plain(args[0])
    indicator = make_indicator("7.7.7.7")
    publisher.send("stix2/indicator", indicator)
    # Not subscribed yet: nothing may be sent.
    zeek.expect_no_event(1.0)
    zeek.subscribe(p2p)
    assert intel(zeek, p2p)[1:4] == [indicator["id"], "ADDR", "7.7.7.7"]


def test_snapshot_interval_requests_a_snapshot_whose_answer_reaches_zeek(zeek_bus):
    """upstream test_zeek_inmem · subscription: subscribe with 5 days; here a ZeroMQ app
    answers the snapshot request and the answer reaches Zeek as intel."""
    answerer = zeek_bus.subscriber("stix2/sighting")
    publisher = zeek_bus.publisher()
    tbclient.sync(publisher, [answerer])
    zeek = peer(zeek_bus)
    five_days = 5 * 86_400 * 10**9
    p2p = subscribe(zeek, snapshot_ns=five_days)
    suffix, request = answerer.recv(timeout=15)
    assert suffix == "snapshotrequest" and request["snapshot_type"] == 1, (suffix, request)
    assert request["snapshot"] == 5 * 86_400  # seconds on the ZeroMQ wire
    body = make_indicator("4.4.4.4")
    publisher.send("threatbus/snapshotenvelope", {"type": "snapshotenvelope", "snapshot_type": 1,
                                                  "snapshot_id": request["snapshot_id"], "body": body})
    assert intel(zeek, p2p)[1:4] == [body["id"], "ADDR", "4.4.4.4"]


def test_unsubscribe_stops_intel_and_other_subscriptions_go_on(zeek_bus):
    publisher = synced_publisher(zeek_bus)
    zeek = peer(zeek_bus)
    first = subscribe(zeek)
    second = subscribe(zeek)
    zeek.publish("threatbus/manage", brokerpeer.event("Tenzir::unsubscribe", s(first)))
    # An unknown p2p topic (Zeek sends one at start) changes nothing.
    zeek.publish("threatbus/manage", brokerpeer.event("Tenzir::unsubscribe", s("stix2/indicatorunknownxx")))
    time.sleep(0.5)
    indicator = make_indicator("8.8.8.8")
    publisher.send("stix2/indicator", indicator)
    topic, name, args = zeek.recv_event()
    assert (topic, name) == (second, "Tenzir::intel")
    zeek.expect_no_event(1.0)
    wait_logged(zeek_bus, "Zeek unsubscribed")


# --------------------------------------------------------------------------- sightings


def test_sightings_from_zeek_become_stix_sightings(zeek_bus):
    receiver = zeek_bus.subscriber("stix2/sighting")
    zeek = peer(zeek_bus, tls=True)
    ts = 1_700_000_000_123_456_789
    context = ("table", [(s("noisy"), ("boolean", False))])
    # With the namespace, and without it (upstream's test sends 17 without).
    zeek.publish("stix2/sighting", brokerpeer.event("Tenzir::sighting", ("timestamp", ts), s(ID), context))
    for _ in range(17):
        zeek.publish("stix2/sighting", brokerpeer.event("sighting", ("timestamp", ts), s(ID), ("table", [])))
    got = receiver.recv_n(18, timeout=15)
    first = got[0][1]
    assert first["type"] == "sighting" and first["sighting_of_ref"] == ID
    assert first["last_seen"] == "2023-11-14T22:13:20.123456789Z"
    assert first["x_threatbus_sighting_context"] == {"noisy": False}
    assert all(obj["sighting_of_ref"] == ID for _, obj in got)
    assert len({obj["id"] for _, obj in got}) == 18


def test_invalid_events_are_skipped_and_the_peer_keeps_working(zeek_bus):
    receiver = zeek_bus.subscriber("stix2/sighting")
    zeek = peer(zeek_bus)
    bad = [
        brokerpeer.event("Tenzir::sighting", ("timestamp", 1), s("not-an-id"), ("table", [])),
        brokerpeer.event("Tenzir::sighting", ("count", 1), s(ID), ("table", [])),
        brokerpeer.event("Tenzir::sighting", ("timestamp", 1), s(ID)),
        brokerpeer.encode(("count", 5)),  # data, but not a Zeek event
        b"\x0f\x00",  # not even data
    ]
    for payload in bad:
        zeek.publish("stix2/sighting", payload)
    zeek.publish("threatbus/manage", brokerpeer.event("Tenzir::subscribe", ("count", 1), ("timespan", 0)))
    zeek.publish("threatbus/manage", brokerpeer.event("Tenzir::subscribe", s(""), ("timespan", 0)))
    zeek.publish("stix2/sighting", brokerpeer.event("Tenzir::sighting", ("timestamp", 1), s(ID), ("table", [])))
    got = receiver.recv_n(1, timeout=10)
    assert got[0][1]["sighting_of_ref"] == ID
    receiver.expect_nothing(0.5)
    # The same connection still answers.
    zeek.ping(b"still here")
    zeek.wait_pong(b"still here")


# --------------------------------------------------------------------------- robustness


def test_garbage_closes_only_that_connection(zeek_bus):
    port = zeek_bus.zeek_port
    attempts = [
        b"GET / HTTP/1.1\r\n\r\n",
        struct.pack(">I", 0x7FFFFFFF) + b"x",  # a frame far above max_frame_size
        struct.pack(">I", 5) + b"\x07ZEEL",  # PROBE with a wrong magic
        b"\x16\x03\x01\x00\x05hello",  # a broken TLS ClientHello
        b"",
    ]
    for garbage in attempts:
        with socket.create_connection((HOST, port), timeout=5) as raw:
            raw.sendall(garbage)
            raw.shutdown(socket.SHUT_WR)
            raw.settimeout(10)
            try:
                while raw.recv(4096):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
    # A bad envelope after a good handshake.
    zeek = peer(zeek_bus)
    zeek.send_frame(b"\x00" * 10)
    with pytest.raises((ConnectionError, TimeoutError, OSError)):
        zeek.recv_envelope(timeout=5)
    assert zeek_bus.alive()
    # A new peer works, and so does ZeroMQ.
    publisher = synced_publisher(zeek_bus)
    zeek = peer(zeek_bus)
    p2p = subscribe(zeek)
    publisher.send("stix2/indicator", make_indicator("9.9.9.9"))
    assert intel(zeek, p2p)[2:4] == ["ADDR", "9.9.9.9"]
    wait_logged(zeek_bus, "Zeek connection closed")


def test_subscriptions_per_peer_are_bounded(zeek_bus):
    zeek = peer(zeek_bus)
    for _ in range(64):
        subscribe(zeek)
    zeek.publish("threatbus/manage", brokerpeer.event("Tenzir::subscribe", s("stix2/indicator"), ("timespan", 0)))
    zeek.expect_no_event(1.0)
    wait_logged(zeek_bus, "too many subscriptions")
    zeek.ping(b"alive")
    zeek.wait_pong(b"alive")


def test_several_peers_and_a_reconnecting_peer(zeek_bus):
    publisher = synced_publisher(zeek_bus)
    one, two = peer(zeek_bus, tls=True), peer(zeek_bus, tls=False)
    p2p_one = subscribe(one)
    # Only the subscribing peer gets its acknowledgement (upstream broadcast it to every Zeek,
    # and a Zeek not yet subscribed could take another's p2p topic).
    p2p_two = subscribe(two)
    one.expect_no_event(0.5)
    indicator = make_indicator("5.5.5.5")
    publisher.send("stix2/indicator", indicator)
    assert intel(one, p2p_one)[1] == indicator["id"]
    assert intel(two, p2p_two)[1] == indicator["id"]
    # The second peer goes away and comes back, as Zeek does after a restart.
    two.close()
    time.sleep(0.5)
    again = peer(zeek_bus, tls=False)
    p2p_again = subscribe(again)
    indicator = make_indicator("5.5.5.6")
    publisher.send("stix2/indicator", indicator)
    assert intel(one, p2p_one)[1] == indicator["id"]
    assert intel(again, p2p_again)[1] == indicator["id"]


def test_bye_at_shutdown(zeek_bus):
    """At shutdown the bus says BYE (a ping whose payload starts with BYE) and exits 0."""
    zeek = peer(zeek_bus)
    zeek.ping(b"x")
    zeek.wait_pong(b"x")
    zeek_bus.signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while not any(p.startswith(b"BYE") for p in zeek.pings):
        assert time.monotonic() < deadline, "no BYE from the bus"
        try:
            zeek.recv_envelope(timeout=1)
        except (TimeoutError, ConnectionError):
            pass
    assert zeek_bus.wait_exit(15) == 0


def test_a_silent_peer_is_dropped(bus_factory):
    """Broker has no keep-alive: the bus pings every ping_interval and drops a peer that has
    said nothing for two."""
    bus = start_zeek_bus(bus_factory, ping_interval=1)
    zeek = peer(bus)
    subscribe(zeek)
    # The peer stops reading and answering (a hung Zeek).
    wait_logged(bus, "dead peer", timeout=15)
    assert bus.alive()
    # Its subscription went with it.
    deadline = time.monotonic() + 5
    while not any("subscriber removed" in line and "zeek" in line for line in bus.log().splitlines()):
        assert time.monotonic() < deadline, "the dropped peer's subscriber was not removed"
        time.sleep(0.1)


def test_certificate_tls_verifies_both_sides(bus_factory):
    tls = {"cert_file": str(TLS_DIR / "bus.pem"), "key_file": str(TLS_DIR / "bus.key"),
           "ca_file": str(TLS_DIR / "ca.pem")}
    bus = start_zeek_bus(bus_factory, tls=tls, allow_plain=False)
    ca = str(TLS_DIR / "ca.pem")
    context = brokerpeer.certificate_tls_client(ca, str(TLS_DIR / "zeek.pem"), str(TLS_DIR / "zeek.key"))
    zeek = peer(bus, tls=context)
    p2p = subscribe(zeek)
    assert p2p.startswith("stix2/indicator")
    # Without a client certificate, with anonymous TLS, or in plain TCP: refused.
    refused = [brokerpeer.certificate_tls_client(ca, None, None), True, False]
    for attempt in refused:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError, AssertionError)):
            peer(bus, tls=attempt, timeout=5).recv_event(timeout=2)
    assert bus.alive()
    wait_logged(bus, "TLS handshake failed")
    wait_logged(bus, "allow_plain is false")
