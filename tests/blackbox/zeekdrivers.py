"""Two ways to play Zeek against the bus, behind one interface, so that the core Zeek scenarios
run against both:

* :class:`SpecZeek`: ``brokerpeer.Peer``, our own peer written from the spec (always available);
* :class:`RealZeek`: a real Broker endpoint through Broker's Python bindings, with the options
  Zeek sets (forwarding off; TLS unless ``disable_ssl``), doing what ``threatbus.zeek`` does.
  Enabled when ``BROKER_PYTHONPATH`` names a directory holding the bindings (``import broker``);
  without it those tests are skipped with :data:`REAL_BROKER_OFF`.

Both speak in Zeek's terms: subscribe (and take the acknowledgement, then Broker-subscribe the
p2p topic), intel, sightings, unsubscribe, and the goodbye at the bus's shutdown.
"""

from __future__ import annotations

import datetime
import os
import select
import sys
import time
import uuid

import pytest

import brokerpeer
from brokerpeer import Peer, s

HOST = "127.0.0.1"
MANAGE = "threatbus/manage"
SIGHTING_TOPIC = "stix2/sighting"

REAL_BROKER_OFF = (
    "real-Broker mode off: set BROKER_PYTHONPATH to a directory holding Broker's Python "
    "bindings (import broker) to run the Zeek scenarios against a real Broker too"
)

# Ids that order below / above any random version-4 bus id (both valid version-4 UUIDs).
SMALL_ID = bytes.fromhex("00000000000040008000000000000001")
LARGE_ID = bytes.fromhex("ffffffffffff4fffbfffffffffffffff")


def real_broker_path() -> str | None:
    return os.environ.get("BROKER_PYTHONPATH", "").strip() or None


def import_broker():
    """Broker's bindings, or a skip when the mode is off. A set but broken path fails."""
    path = real_broker_path()
    if path is None:
        pytest.skip(REAL_BROKER_OFF)
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        import broker  # noqa: PLC0415
    except ImportError as err:
        pytest.fail(f"BROKER_PYTHONPATH={path!r}: cannot import broker: {err}", pytrace=False)
    return broker


def bus_endpoint_id(bus) -> bytes:
    """The bus's Broker endpoint id, from its start-up log line."""
    deadline = time.monotonic() + 10
    while True:
        for line in bus.log().splitlines():
            if "Zeek app listening" in line and "endpoint_id=" in line:
                return uuid.UUID(line.split("endpoint_id=")[1].split()[0]).bytes
        assert time.monotonic() < deadline, "the bus did not log its endpoint id"
        time.sleep(0.05)


def record_of(args: list) -> list:
    """Intel's one argument, checked: a 5-field record [ts, id, type, indicator, operation]."""
    assert len(args) == 1, args
    return list(args[0])


class SpecZeek:
    """Zeek played by our spec peer."""

    kind = "spec-peer"

    def __init__(self, bus, tls=True, originator: bool | None = None):
        own_id = {True: SMALL_ID, False: LARGE_ID, None: None}[originator]
        self.peer = Peer(bus.zeek_port, tls=tls, own_id=own_id)
        self.originator = self.peer.originator
        self.bus_id = self.peer.bus_id

    def subscribe(self, topic="stix2/indicator", snapshot_ns=0) -> str:
        zeek = self.peer
        zeek.publish(MANAGE, brokerpeer.event("Tenzir::subscribe", s(topic), ("timespan", snapshot_ns)))
        got_topic, name, args = zeek.recv_event()
        assert (got_topic, name) == (MANAGE, "Tenzir::subscription_acknowledged"), (got_topic, name)
        p2p = brokerpeer.plain(args[0])
        zeek.subscribe(p2p)
        return p2p

    def intel(self, p2p: str, timeout: float = 10) -> list:
        topic, name, args = self.peer.recv_event(timeout)
        assert (topic, name) == (p2p, "Tenzir::intel"), (topic, name, args)
        ts, *rest = args[0][1]
        assert ts[0] == "timestamp", ts
        return [ts[1], *(brokerpeer.plain(v) for v in rest)]

    def expect_no_intel(self, duration: float = 1.0):
        self.peer.expect_no_event(duration)
        assert not self.peer.ignored, f"a real Zeek would have dropped: {self.peer.ignored}"

    def sighting(self, ts_ns: int, intel_id: str, context: dict):
        table = ("table", [(s(k), ("boolean", v)) for k, v in context.items()])
        self.peer.publish(SIGHTING_TOPIC, brokerpeer.event("Tenzir::sighting", ("timestamp", ts_ns), s(intel_id), table))

    def unsubscribe(self, p2p: str):
        self.peer.publish(MANAGE, brokerpeer.event("Tenzir::unsubscribe", s(p2p)))

    def ping_pong(self):
        self.peer.ping(b"are you there")
        self.peer.wait_pong(b"are you there")

    def wait_goodbye(self, timeout: float = 10) -> str:
        """Waits for the bus's BYE (answered with a pong); returns how the peering ended."""
        deadline = time.monotonic() + timeout
        while not any(p.startswith(b"BYE") for p in self.peer.pings):
            assert time.monotonic() < deadline, "no BYE from the bus"
            try:
                self.peer.recv_envelope(timeout=1)
            except (TimeoutError, ConnectionError):
                pass
        return "BYE"

    def close(self):
        self.peer.close()


class RealZeek:
    """Zeek played by a real Broker endpoint, configured as Zeek configures its own."""

    kind = "real-broker"

    def __init__(self, bus, tls=True, originator: bool | None = None, timeout: float = 15):
        broker = import_broker()
        self.broker = broker
        self.bus_id = bus_endpoint_id(bus)
        # Broker picks its own random id; the handshake role follows from the two ids, so make
        # endpoints until one orders as asked.
        for _ in range(64):
            options = broker.BrokerOptions()
            options.disable_forwarding = True  # Zeek's Broker::forward_messages = F
            options.disable_ssl = not tls  # Zeek's Broker::disable_ssl
            options.ignore_broker_conf = True
            endpoint = broker.Endpoint(broker.Configuration(options))
            own = uuid.UUID(endpoint.node_id()).bytes
            if originator is None or (own < self.bus_id) == originator:
                break
            endpoint.shutdown()
        else:
            raise AssertionError("no Broker endpoint id with the wanted order in 64 tries")
        self.endpoint = endpoint
        self.own_id = own
        self.originator = own < self.bus_id
        # threatbus.zeek subscribes to the manage topic in zeek_init, before it peers.
        self.manage = endpoint.make_subscriber(MANAGE)
        self.status = endpoint.make_status_subscriber(True)
        self.subscribers: dict[str, object] = {}
        endpoint.peer_nosync(HOST, bus.zeek_port, 1)
        self.statuses: list = []
        self.wait_status("PeerAdded", timeout)

    # -- status (StatusSubscriber.get(timeout) cannot convert its result in Broker 2.8: poll
    # the file descriptor instead)
    def _drain_status(self, timeout: float):
        ready, _, _ = select.select([self.status.fd()], [], [], max(0.0, timeout))
        if ready:
            self.statuses.extend(self.status.poll())

    def wait_status(self, code_name: str, timeout: float = 15):
        code = getattr(self.broker.SC, code_name)
        deadline = time.monotonic() + timeout
        while True:
            for item in self.statuses:
                if isinstance(item, self.broker.Status) and item.code() == code:
                    return item
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"Broker reported no {code_name} within {timeout}s; statuses: {self.statuses}")
            self._drain_status(min(left, 0.5))

    def _get(self, subscriber, timeout: float):
        """The next (topic, data) of a subscriber, or None."""
        ready, _, _ = select.select([subscriber.fd()], [], [], max(0.0, timeout))
        if not ready:
            return None
        return subscriber.get(0.0)

    def _event(self, subscriber, timeout: float):
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self._get(subscriber, left)
            if message is None:
                continue
            topic, data = message
            event = self.broker.zeek.Event(data)
            return topic, event.name(), event.args()
        raise TimeoutError("no event from the bus in time")

    def subscribe(self, topic="stix2/indicator", snapshot_ns=0) -> str:
        snapshot = datetime.timedelta(microseconds=snapshot_ns // 1000)
        self.endpoint.publish(MANAGE, self.broker.zeek.Event("Tenzir::subscribe", topic, snapshot))
        while True:
            got_topic, name, args = self._event(self.manage, 10)
            # Every Zeek sees its own subscribe too (it subscribed to the manage topic).
            if name == "Tenzir::subscription_acknowledged":
                break
        assert got_topic == MANAGE, got_topic
        (p2p,) = args
        self.subscribers[p2p] = self.endpoint.make_subscriber(p2p)
        return p2p

    def intel(self, p2p: str, timeout: float = 10) -> list:
        topic, name, args = self._event(self.subscribers[p2p], timeout)
        assert (topic, name) == (p2p, "Tenzir::intel"), (topic, name, args)
        ts, *rest = record_of(args)
        assert isinstance(ts, datetime.datetime), ts
        # Whole milliseconds (the bus sends created, which has millisecond precision here).
        ns = round(ts.timestamp() * 1000) * 1_000_000
        return [ns, *rest]

    def expect_no_intel(self, duration: float = 1.0):
        deadline = time.monotonic() + duration
        while (left := deadline - time.monotonic()) > 0:
            for p2p, subscriber in self.subscribers.items():
                message = self._get(subscriber, min(left, 0.1))
                assert message is None, f"unexpected message on {p2p}: {message}"

    def sighting(self, ts_ns: int, intel_id: str, context: dict):
        ts = datetime.datetime.fromtimestamp(ts_ns / 1e9, tz=datetime.timezone.utc)
        self.endpoint.publish(SIGHTING_TOPIC, self.broker.zeek.Event("Tenzir::sighting", ts, intel_id, context))

    def unsubscribe(self, p2p: str):
        self.endpoint.publish(MANAGE, self.broker.zeek.Event("Tenzir::unsubscribe", p2p))
        subscriber = self.subscribers.pop(p2p, None)
        if subscriber is not None:
            subscriber.reset()

    def ping_pong(self):
        # Broker has no ping API; a peering that is still listed is alive.
        peers = self.endpoint.peers()
        assert any(uuid.UUID(p.peer.node_id()).bytes == self.bus_id for p in peers), peers

    def wait_goodbye(self, timeout: float = 10) -> str:
        """Waits until Broker reports the peering gone (the bus said BYE and closed)."""
        deadline = time.monotonic() + timeout
        while True:
            for item in self.statuses:
                if isinstance(item, self.broker.Status) and item.code() in (
                        self.broker.SC.PeerLost, self.broker.SC.PeerRemoved):
                    return item.code().name
            left = deadline - time.monotonic()
            assert left > 0, f"Broker did not report the peer gone; statuses: {self.statuses}"
            self._drain_status(min(left, 0.5))

    def close(self):
        for subscriber in self.subscribers.values():
            subscriber.reset()
        self.subscribers.clear()
        self.endpoint.shutdown()


DRIVERS = {"spec-peer": SpecZeek, "real-broker": RealZeek}
