"""Zeek app (spec upstream.md §5, zeek-broker.md): Zeek's side of the Broker protocol is played
against the built binary by our spec peer (brokerpeer.py) and, when ``BROKER_PYTHONPATH`` names
Broker's Python bindings, by a real Broker endpoint too (zeekdrivers.py): over plain TCP and
anonymous TLS, in both handshake roles; pyzmq apps publish indicators and receive sightings."""

from __future__ import annotations

import signal
import socket
import ssl
import struct
import threading
import uuid
from datetime import datetime
from pathlib import Path
import time

import pytest

import brokerpeer
import tbclient
import zeekdrivers
from brokerpeer import NoPeer, Peer, s
from conftest import HOST, default_config, free_ports
from tbclient import make_indicator
from test_operability import scrape
from zeekdrivers import LARGE_ID, SMALL_ID

ID = "indicator--46b3f973-5c03-41fc-9efe-49598a267a35"


TLS_DIR = Path(__file__).parent / "tls"


def pytest_generate_tests(metafunc):
    """``zeek_impl``: each core scenario runs with our spec peer and with a real Broker."""
    if "zeek_impl" in metafunc.fixturenames:
        metafunc.parametrize("zeek_impl", list(zeekdrivers.DRIVERS), indirect=True)


@pytest.fixture
def zeek_impl(request):
    driver = zeekdrivers.DRIVERS[request.param]
    if driver is zeekdrivers.RealZeek:
        zeekdrivers.import_broker()  # skips with a clear reason when the mode is off
    made = []

    def make(bus, **kwargs):
        zeek = driver(bus, **kwargs)
        made.append(zeek)
        return zeek

    yield make
    for zeek in made:
        zeek.close()


def start_zeek_bus(bus_factory, metrics=False, **zeek_keys):
    """A bus with the in-memory backbone, the ZeroMQ app and the Zeek app."""
    manage, pub, sub, zeek, metrics_port = free_ports(5)
    config = default_config(manage, pub, sub)
    config["plugins"]["apps"]["zeek"] = {"host": HOST, "port": zeek, "module_namespace": "Tenzir",
                                         **zeek_keys}
    wait = [manage, pub, sub, zeek]
    if metrics:
        config["metrics"] = {"listen": metrics_port}
        wait.append(metrics_port)
    bus = bus_factory(config=config, ports=(manage, pub, sub), wait_ports=wait)
    bus.zeek_port = zeek
    bus.metrics_port = metrics_port if metrics else None
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


TLS = pytest.mark.parametrize("tls", [True, False], ids=["anonymous-tls", "plain"])
ROLES = pytest.mark.parametrize("originator", [True, False], ids=["zeek-originates", "bus-originates"])


# --------------------------------------------------------------------------- endpoint ids


def version_and_variant(endpoint_id: bytes) -> tuple[int, int]:
    return endpoint_id[6] >> 4, endpoint_id[8] >> 6


def test_the_bus_id_is_a_random_uuid_v4_at_every_start(bus_factory):
    """Broker ignores a peer whose id is not a UUID of version 1-5 (spec §3.3); sixteen random
    bytes passed in only 5 of 16 starts. Twelve starts: the id in the bus's HELLO is a
    version-4 UUID with the RFC 4122 variant each time, a new one each time, and the one the
    bus logs."""
    seen = set()
    for _ in range(12):
        bus = start_zeek_bus(bus_factory)
        zeek = peer(bus, tls=False, own_id=SMALL_ID)  # Zeek originates: the bus sends HELLO
        assert zeek.originator
        assert version_and_variant(zeek.bus_id) == (4, 0b10), uuid.UUID(bytes=zeek.bus_id)
        assert zeekdrivers.bus_endpoint_id(bus) == zeek.bus_id
        seen.add(zeek.bus_id)
        zeek.close()
        bus.stop()
    assert len(seen) == 12


@pytest.mark.parametrize("version", [0, 7], ids=["version-0", "version-7"])
def test_the_bus_refuses_a_peer_whose_id_broker_would_ignore(bus_factory, version):
    bus = start_zeek_bus(bus_factory, metrics=True)
    bad = bytearray(uuid.uuid4().bytes)
    bad[6] = (version << 4) | (bad[6] & 0x0F)
    bad = bytes(bad)
    with pytest.raises(ConnectionError, match="DROP_CONN from the bus: code 3"):
        peer(bus, tls=False, own_id=bad)
    text = str(uuid.UUID(bytes=bad))
    wait_logged(bus, "Zeek connection refused: its Broker endpoint id")
    line = next(l for l in bus.log().splitlines() if "Zeek connection refused" in l)
    assert f"zeek_endpoint={text}" in line and "peer=127.0.0.1:" in line, line
    assert f"UUID version {version}" in line, line
    metrics = scrape(bus.metrics_port)
    assert metrics['threatbus_zeek_refused_connections_total{reason="invalid_endpoint_id"}'] == 1
    assert metrics.get("threatbus_zeek_peers", 0) == 0
    # A valid peer is still welcome.
    zeek = peer(bus)
    zeek.ping(b"x")
    zeek.wait_pong(b"x")


def fake_bus_responder(bus_id: bytes) -> int:
    """A listener that answers one HELLO the way Broker's responder does, with ``bus_id``."""
    server = socket.create_server((HOST, 0))
    port = server.getsockname()[1]

    def serve():
        conn, _ = server.accept()
        server.close()
        with conn:
            def frame():
                (n,) = struct.unpack(">I", conn.recv(4, socket.MSG_WAITALL))
                return conn.recv(n, socket.MSG_WAITALL)

            def send(payload):
                conn.sendall(struct.pack(">I", len(payload)) + payload)

            frame()  # HELLO
            send(bytes([7]) + struct.pack(">I", brokerpeer.MAGIC))
            send(brokerpeer.hello_frame(bus_id))
            frame()  # VERSION_SELECT
            frame()  # ORIGINATOR_SYN
            send(bytes([11]) + brokerpeer.filter_bytes([]))
            frame()  # ORIGINATOR_ACK
            time.sleep(0.5)

    threading.Thread(target=serve, daemon=True).start()
    return port


@pytest.mark.parametrize("bus_id,peered", [
    (bytes.fromhex("ffffffffffff0fffbfffffffffffffff"), False),  # version 0
    (bytes.fromhex("ffffffffffff7fffbfffffffffffffff"), False),  # version 7
    (bytes.fromhex("ffffffffffff4fffbfffffffffffffff"), True),  # version 4
    (bytes.fromhex("ffffffffffff5fff0fffffffffffffff"), True),  # version 5, variant 0
], ids=["version-0", "version-7", "version-4", "version-5-variant-0"])
def test_the_spec_peer_reports_no_peer_for_an_id_broker_ignores(bus_id, peered):
    """Our test peer agrees with Broker: the handshake bytes complete either way, but a bus
    with an id Broker ignores is not a peer."""
    port = fake_bus_responder(bus_id)
    if peered:
        zeek = Peer(port, tls=False, own_id=SMALL_ID)
        assert zeek.bus_id == bus_id and zeek.originator
        zeek.close()
    else:
        with pytest.raises(NoPeer, match="never reports such a peer"):
            Peer(port, tls=False, own_id=SMALL_ID)


# --------------------------------------------------------------------------- handshake


@TLS
@ROLES
def test_peering_in_both_roles_over_tls_and_plain_tcp(zeek_bus, zeek_impl, tls, originator):
    zeek = zeek_impl(zeek_bus, tls=tls, originator=originator)
    assert zeek.originator == originator
    wait_logged(zeek_bus, "Zeek peered")
    line = next(l for l in zeek_bus.log().splitlines() if "Zeek peered" in l)
    assert ("transport=anonymous TLS" if tls else "transport=plain TCP") in line, line
    assert f'originator="{"zeek" if originator else "bus"}"' in line, line
    zeek.ping_pong()
    assert zeek_bus.alive()


@TLS
@ROLES
def test_handshake_details_with_the_spec_peer(zeek_bus, tls, originator):
    own_id = SMALL_ID if originator else LARGE_ID
    zeek = peer(zeek_bus, tls=tls, own_id=own_id)
    assert zeek.originator == originator
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
    zeek.bye()
    assert zeek_bus.alive()
    wait_logged(zeek_bus, "Zeek peer disconnected")


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


@TLS
@ROLES
def test_indicators_reach_zeek_as_intel_one_per_mapped_type(zeek_bus, zeek_impl, tls, originator):
    publisher = synced_publisher(zeek_bus)
    zeek = zeek_impl(zeek_bus, tls=tls, originator=originator)
    p2p = zeek.subscribe()
    assert p2p.startswith("stix2/indicator") and len(p2p) == len("stix2/indicator") + 10
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
        ts, got_id, got_kind, got_value, operation = zeek.intel(p2p)
        assert (got_id, got_kind, got_value, operation) == (indicator["id"], kind, value, "ADD"), pattern
        created = datetime.fromisoformat(indicator["created"].replace("Z", "+00:00"))
        assert ts == round(created.timestamp() * 1000) * 1_000_000, (ts, indicator["created"])
    assert zeek.intel(p2p)[1:] == [removal["id"], "DOMAIN", "gone.org", "REMOVE"]
    zeek.expect_no_intel(1.0)


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


def test_unsubscribe_stops_intel_and_other_subscriptions_go_on(zeek_bus, zeek_impl):
    publisher = synced_publisher(zeek_bus)
    zeek = zeek_impl(zeek_bus)
    first = zeek.subscribe()
    second = zeek.subscribe()
    assert first != second
    zeek.unsubscribe(first)
    # An unknown p2p topic (Zeek sends one at start) changes nothing.
    zeek.unsubscribe("stix2/indicatorunknownxx")
    wait_logged(zeek_bus, "Zeek unsubscribed")
    indicator = make_indicator("8.8.8.8")
    publisher.send("stix2/indicator", indicator)
    assert zeek.intel(second)[1:4] == [indicator["id"], "ADDR", "8.8.8.8"]
    zeek.expect_no_intel(1.0)
    assert zeek_bus.log().count("Zeek unsubscribed") == 1


# --------------------------------------------------------------------------- sightings


def test_sightings_from_zeek_become_stix_sightings(zeek_bus, zeek_impl):
    """Twenty sightings, as threatbus.zeek sends them, reach a ZeroMQ app as STIX Sightings."""
    receiver = zeek_bus.subscriber("stix2/sighting")
    zeek = zeek_impl(zeek_bus)
    ts = 1_700_000_000_500_000_000  # exact in a float too (what a real Broker's bindings take)
    for i in range(20):
        zeek.sighting(ts, ID, {"noisy": i % 2 == 0})
    got = receiver.recv_n(20, timeout=15)
    for i, (_, sighting) in enumerate(got):
        assert sighting["type"] == "sighting" and sighting["sighting_of_ref"] == ID
        assert sighting["last_seen"].startswith("2023-11-14T22:13:20.5"), sighting["last_seen"]
        assert sighting["x_threatbus_sighting_context"] == {"noisy": i % 2 == 0}
    assert len({obj["id"] for _, obj in got}) == 20
    receiver.expect_nothing(0.5)


def test_sightings_with_and_without_the_namespace(zeek_bus):
    """upstream's test sends 17 sightings without the namespace; both forms are taken."""
    receiver = zeek_bus.subscriber("stix2/sighting")
    zeek = peer(zeek_bus, tls=True)
    ts = 1_700_000_000_123_456_789
    context = ("table", [(s("noisy"), ("boolean", False))])
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


def send_garbage(port: int, garbage: bytes):
    """Sends bytes on a new connection and reads until the bus closes it."""
    with socket.create_connection((HOST, port), timeout=5) as raw:
        raw.sendall(garbage)
        raw.shutdown(socket.SHUT_WR)
        raw.settimeout(10)
        try:
            while raw.recv(4096):
                pass
        except (ConnectionResetError, TimeoutError):
            pass


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
        send_garbage(port, garbage)
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


def test_bye_at_shutdown(zeek_bus, zeek_impl):
    """At shutdown the bus says BYE (a ping whose payload starts with BYE), Zeek sees the peer
    go, and the bus exits 0 without waiting out the 3 s BYE timeout."""
    zeek = zeek_impl(zeek_bus)
    zeek.subscribe()
    zeek.ping_pong()
    started = time.monotonic()
    zeek_bus.signal(signal.SIGTERM)
    zeek.wait_goodbye(10)
    assert zeek_bus.wait_exit(15) == 0
    wait_logged(zeek_bus, "Zeek peer disconnected at shutdown")
    assert time.monotonic() - started < 3, "the bus waited for a BYE pong that never came"


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


# --------------------------------------------------------------------------- connection caps


def closed_at_once(port: int, timeout: float = 5) -> bool:
    """Whether the bus closes a new connection without waiting for anything from it."""
    with socket.create_connection((HOST, port), timeout=timeout) as raw:
        raw.settimeout(timeout)
        try:
            return raw.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def test_connections_and_handshakes_are_capped(bus_factory):
    """A flood on the Zeek port cannot hold more than max_handshakes connections in the
    handshake nor more than max_connections in all: the excess is closed at once, logged
    (throttled) and counted; peers within the caps work, and places free up again."""
    bus = start_zeek_bus(bus_factory, metrics=True, max_connections=4, max_handshakes=2,
                         handshake_timeout=60)
    port = bus.zeek_port
    # The start-up check's probe of the port has left.
    wait_logged(bus, "connection closed before it sent anything")
    # Two connections that never say anything hold both handshake places ...
    silent = [socket.create_connection((HOST, port)) for _ in range(2)]
    time.sleep(0.3)
    # ... so a third is closed at once, and so is a real peer.
    assert closed_at_once(port)
    with pytest.raises((ConnectionError, OSError)):
        peer(bus, tls=False)
    wait_logged(bus, "Zeek connection refused: plugins.apps.zeek.max_handshakes reached")
    refused = scrape(bus.metrics_port)
    assert refused['threatbus_zeek_refused_connections_total{reason="max_handshakes"}'] >= 2
    # The silent ones go: their places come back.
    for sock in silent:
        sock.close()
    deadline = time.monotonic() + 5
    peers = []
    while len(peers) < 4:
        try:
            peers.append(peer(bus, tls=False))
        except (ConnectionError, OSError):
            assert time.monotonic() < deadline, "handshake places did not come back"
            time.sleep(0.1)
    # Four peers hold every connection place: a fifth connection is refused.
    assert closed_at_once(port)
    wait_logged(bus, "Zeek connection refused: plugins.apps.zeek.max_connections reached")
    metrics = scrape(bus.metrics_port)
    assert metrics["threatbus_zeek_peers"] == 4
    assert metrics['threatbus_zeek_refused_connections_total{reason="max_connections"}'] >= 1
    # The peers still work, and one leaving makes room for a new one.
    for zeek in peers:
        zeek.ping(b"x")
        zeek.wait_pong(b"x")
    peers.pop().bye()
    deadline = time.monotonic() + 5
    while True:
        try:
            again = peer(bus, tls=False)
            break
        except (ConnectionError, OSError):
            assert time.monotonic() < deadline, "a connection place did not come back"
            time.sleep(0.1)
    again.ping(b"y")
    again.wait_pong(b"y")
    assert bus.alive()


# --------------------------------------------------------------------------- careless and hostile peers


def test_a_subscription_whose_p2p_topic_zeek_never_covers_is_removed(bus_factory):
    """A peer that subscribes but never subscribes to its p2p topic (so nothing can be sent to
    it) loses the subscription after p2p_timeout; one that does keeps it."""
    bus = start_zeek_bus(bus_factory, metrics=True, p2p_timeout=1)
    publisher = synced_publisher(bus)
    careless = peer(bus)
    careless.publish("threatbus/manage", brokerpeer.event("Tenzir::subscribe", s("stix2/indicator"), ("timespan", 0)))
    _, name, args = careless.recv_event()
    assert name == "Tenzir::subscription_acknowledged"
    good = peer(bus)
    p2p = subscribe(good)
    wait_logged(bus, "Zeek did not subscribe to its p2p topic in time; subscription removed", timeout=10)
    line = next(l for l in bus.log().splitlines() if "did not subscribe to its p2p topic" in l)
    assert brokerpeer.plain(args[0]) in line, line
    deadline = time.monotonic() + 5
    while scrape(bus.metrics_port)['threatbus_subscribers{app="zeek"}'] != 1:
        assert time.monotonic() < deadline, "the careless subscription is still there"
        time.sleep(0.1)
    time.sleep(1.5)
    # The peer that covered its topic still gets intel; the careless one still answers pings.
    indicator = make_indicator("3.3.3.3")
    publisher.send("stix2/indicator", indicator)
    assert intel(good, p2p)[1] == indicator["id"]
    careless.ping(b"x")
    careless.wait_pong(b"x")


def test_huge_and_invalid_events_do_not_flood_the_log(zeek_bus):
    """20 subscribes with a 900 KB topic and 2,000 invalid sightings: refused and dropped, with a
    few bounded log lines (before: 68 MiB of log, the topic printed as a list of bytes, and one
    WARN line per sighting)."""
    receiver = zeek_bus.subscriber("stix2/sighting")
    zeek = peer(zeek_bus)
    before = len(zeek_bus.log())
    huge = "x" * 900_000
    for _ in range(20):
        zeek.publish("threatbus/manage", brokerpeer.event("Tenzir::subscribe", s(huge), ("timespan", 0)))
    for _ in range(2_000):
        zeek.publish("stix2/sighting", brokerpeer.event("Tenzir::sighting", ("timestamp", 1), s("not-an-id"), ("table", [])))
    zeek.publish("stix2/sighting", brokerpeer.event("Tenzir::sighting", ("timestamp", 1), s(ID), ("table", [])))
    assert receiver.recv_n(1, timeout=15)[0][1]["sighting_of_ref"] == ID
    zeek.ping(b"alive")
    zeek.wait_pong(b"alive")
    zeek.expect_no_event(0.5)  # no acknowledgement for the huge topic
    wait_logged(zeek_bus, "longer than the limit")
    grown = len(zeek_bus.log()) - before
    assert grown < 20_000, f"{grown} bytes of log"
    log = zeek_bus.log()[before:]
    assert "x" * 300 not in log and "120, 120, 120" not in log
    assert log.count("invalid sighting from Zeek") <= 20, log.count("invalid sighting from Zeek")
    assert "suppressed=" in log


def test_a_flood_of_failed_handshakes_does_not_flood_the_log(zeek_bus):
    """200 connections that send garbage: each is closed and counted, the log gets a burst of
    lines and a count of the rest, and a real peer still gets in."""
    before = len(zeek_bus.log())
    for _ in range(200):
        send_garbage(zeek_bus.zeek_port, struct.pack(">I", 5) + b"\x07ZEEL")  # PROBE, wrong magic
    zeek = peer(zeek_bus)
    zeek.ping(b"in")
    zeek.wait_pong(b"in")
    log = zeek_bus.log()[before:]
    lines = log.count("Zeek connection closed during the handshake")
    assert 1 <= lines <= 40, lines
