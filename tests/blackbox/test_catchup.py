"""Bulk loads lose nothing (issue 20): with a store, a subscriber that falls behind is fed what it
missed from the store, in the order the bus routed it, then goes live again; without a store, or
past `bus.catch_up_timeout`, the bus drops for it as before, counted and logged."""

from __future__ import annotations

import json
import re
import signal
import time

import pytest
import zmq

import brokerpeer
import tbclient
from conftest import default_config, free_ports, serves_metrics
from tbclient import make_indicator
from test_rabbitmq import backbone, vhost  # noqa: F401
from test_store import pg_database  # noqa: F401

pytestmark = pytest.mark.skipif(not serves_metrics(), reason="catch-up is not in the Python original")

N = 100_000
#: Small bus queues and ZeroMQ buffers, so that a reader that pauses falls behind early.
QUEUE = 1000
#: The memory budget, and the bound for what the bus's RSS may grow by during the burst (above
#: its baseline once started, as docs/configuration.md sizes the budget): well below the
#: ~165 MiB that holding the whole burst of N indicators in memory would take.
BUDGET = 96 * 1024 * 1024


def catch_up_bus(bus_factory, tmp_path, store=True, bus_keys=None, **kw):
    manage, pub, sub = free_ports(3)
    config = default_config(manage, pub, sub)
    config["plugins"]["apps"]["zmq"]["send_hwm"] = 100
    config["bus"] = {"queue_capacity": QUEUE, "memory_budget": BUDGET, **(bus_keys or {})}
    if store is True:
        config["store"] = {"path": str(tmp_path / "store")}
    elif store:
        config["store"] = store
    return bus_factory(config=config, ports=(manage, pub, sub), metrics=True, **kw)


class SlowReader:
    """A ZeroMQ app with the smallest buffers: subscribes through the manage socket and reads
    only when told to, so that the bus's queue for it fills."""

    def __init__(self, bus, topic="stix2/indicator", snapshot=0):
        self.reply = tbclient.manage(bus.manage_port, {"action": "subscribe", "topic": topic, "snapshot": snapshot})
        assert self.reply["status"] == "success", self.reply
        self.p2p = self.reply["topic"]
        self.sock = tbclient.ctx().socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 50)
        self.sock.setsockopt(zmq.RCVBUF, 8192)
        self.sock.connect(f"tcp://127.0.0.1:{bus.pub_port}")
        self.sock.setsockopt_string(zmq.SUBSCRIBE, self.p2p)
        self.objects: list[dict] = []

    def read(self, until: int, timeout: float, pause_every: int = 0, pause: float = 0.0):
        """Reads until `until` objects (probes skipped) or `timeout` seconds of silence."""
        last = time.monotonic()
        while len(self.objects) < until and time.monotonic() - last < timeout:
            if not self.sock.poll(100, zmq.POLLIN):
                continue
            raw = self.sock.recv()
            last = time.monotonic()
            obj = json.loads(raw.split(b" ", 1)[1])
            if obj.get("id") in tbclient.PROBE_IDS:
                continue
            self.objects.append(obj)
            if pause_every and len(self.objects) % pause_every == 0:
                time.sleep(pause)
        return self.objects

    def close(self):
        self.sock.close(linger=0)


def wait_connected(bus, pub, reader: SlowReader, timeout=20):
    """Sends probes until `reader` gets one (ZeroMQ's slow joiner), then reads up to a fence."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = tbclient._probe("indicator")
        pub.send("stix2/indicator", probe)
        if reader.sock.poll(200, zmq.POLLIN):
            break
    else:
        pytest.fail("the slow reader never got a probe")
    fence = tbclient._probe("indicator")
    pub.send("stix2/indicator", fence)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if reader.sock.poll(200, zmq.POLLIN):
            obj = json.loads(reader.sock.recv().split(b" ", 1)[1])
            if obj["id"] == fence["id"]:
                return
    pytest.fail("the fence never reached the slow reader")


def fast_publisher(bus) -> tbclient.Publisher:
    pub = bus.publisher()
    pub.sock.setsockopt(zmq.SNDHWM, 0)
    return pub


def publish(pub, count: int, first: int = 0) -> None:
    for i in range(first, first + count):
        pub.send("stix2/indicator", make_indicator(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", x_seq=i))


def peak_rss_mib(bus, field="VmHWM") -> float:
    """The bus's peak RSS (or, with field="VmRSS", its RSS now) in MiB."""
    status = open(f"/proc/{bus.proc.pid}/status").read()
    return int(re.search(field + r":\s+(\d+) kB", status).group(1)) / 1024


def wait_metric(bus, name, value, timeout=30, **labels):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if bus.metrics().value(name, **labels) == value:
            return
        time.sleep(0.2)
    assert bus.metrics().value(name, **labels) == value, name


def wait_behind(bus, app="zmq", timeout=30):
    """Waits until a subscriber of `app` has fallen behind."""
    deadline = time.monotonic() + timeout
    while bus.metrics().value("threatbus_subscribers_behind", app=app) < 1:
        assert time.monotonic() < deadline, bus.log_tail()
        time.sleep(0.1)


def assert_caught_up(bus, reader: SlowReader, n: int):
    """`reader` gets indicators 0..n-1 once and in order, through catch-up, with no drops."""
    got = [o["x_seq"] for o in reader.read(n, timeout=30)]
    assert got == list(range(n)), f"{len(got)} of {n}, in order: {got == sorted(got)}"
    samples = bus.metrics()
    assert samples.value("threatbus_replayed_messages_total", app="zmq") > 0
    assert samples.value("threatbus_dropped_messages_total", plugin="zmq", reason="queue_full") == 0


def test_a_reader_that_pauses_during_a_burst_gets_every_indicator_once_in_order(bus_factory, tmp_path):
    bus = catch_up_bus(bus_factory, tmp_path)
    slow = SlowReader(bus)
    pub = fast_publisher(bus)
    wait_connected(bus, pub, slow)
    baseline = peak_rss_mib(bus, "VmRSS")

    # The burst, while the reader reads nothing.
    publish(pub, N)
    wait_behind(bus)
    assert bus.metrics().value("threatbus_subscribers_behind", app="zmq") == 1, bus.log_tail()
    time.sleep(2)
    # Now it reads, with pauses.
    got = slow.read(N, timeout=30, pause_every=5000, pause=0.5)
    seqs = [obj["x_seq"] for obj in got]
    assert len(seqs) == N, f"got {len(seqs)} of {N}\n{bus.log_tail()}"
    assert seqs == list(range(N)), "gap, duplicate or reordering"

    samples = bus.metrics()
    assert samples.value("threatbus_replayed_messages_total", app="zmq") > 0
    assert samples.value("threatbus_dropped_messages_total", plugin="zmq", reason="queue_full") == 0
    assert samples.value("threatbus_dropped_messages_total", plugin="zmq", reason="memory_budget") == 0
    wait_metric(bus, "threatbus_subscribers_behind", 0, app="zmq")
    # Live again: the next indicator comes straight through.
    publish(pub, 1, first=N)
    assert [o["x_seq"] for o in slow.read(N + 1, timeout=10)][-1] == N
    rss = peak_rss_mib(bus)
    print(f"RSS: {baseline:.1f} MiB before the burst, peak {rss:.1f} MiB")
    assert rss - baseline < BUDGET / 2**20, f"RSS grew from {baseline:.1f} to {rss:.1f} MiB: more than the budget"
    log = bus.log()
    assert "subscriber fell behind" in log and "caught up from the store" in log, bus.log_tail()
    caught = re.search(r"caught up from the store.*", log).group(0)
    assert re.search(r"replayed=\d+", caught) and re.search(r"ms=\d+", caught), caught
    slow.close()


def test_without_a_store_the_bus_drops_for_a_reader_that_falls_behind_as_before(bus_factory, tmp_path):
    bus = catch_up_bus(bus_factory, tmp_path, store=False)
    slow = SlowReader(bus)
    pub = fast_publisher(bus)
    wait_connected(bus, pub, slow)
    def routed():
        return bus.metrics().value("threatbus_backbone_received_messages_total", backbone="inmem", kind="indicator")

    before = routed()
    publish(pub, 20_000)
    # Everything routed before the reader reads (the publisher's socket may still hold some).
    deadline = time.monotonic() + 30
    while routed() < before + 20_000:
        assert time.monotonic() < deadline, bus.log_tail()
        time.sleep(0.1)
    got = slow.read(20_000, timeout=5)
    samples = bus.metrics()
    dropped = samples.value("threatbus_dropped_messages_total", plugin="zmq", reason="queue_full")
    assert dropped > 0 and len(got) + dropped == 20_000, (len(got), dropped)
    assert samples.value("threatbus_replayed_messages_total", app="zmq") == 0
    assert samples.value("threatbus_subscribers_behind", app="zmq") == 0
    assert "subscriber queue full" in bus.log() and "fell behind" not in bus.log()
    slow.close()


def test_a_reader_that_never_reads_is_given_up_after_the_catch_up_timeout(bus_factory, tmp_path):
    bus = catch_up_bus(bus_factory, tmp_path, bus_keys={"catch_up_timeout": 3})
    dead = SlowReader(bus)
    live = SlowReader(bus)
    pub = fast_publisher(bus)
    wait_connected(bus, pub, dead)
    wait_connected(bus, pub, live)
    n = 20_000

    def paced(first, count):
        # In chunks the live reader takes before the next: it never lags (3 s would give it up).
        for start in range(first, first + count, 500):
            publish(pub, 500, first=start)
            live.read(start + 500, timeout=30)

    paced(0, n)
    # The live reader got everything; the dead one fell behind.
    assert [o["x_seq"] for o in live.objects] == list(range(n))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        samples = bus.metrics()
        if samples.value("threatbus_dropped_messages_total", plugin="zmq", reason="catch_up_timeout") > 0:
            break
        time.sleep(0.2)
    samples = bus.metrics()
    given_up = samples.value("threatbus_dropped_messages_total", plugin="zmq", reason="catch_up_timeout")
    assert 0 < given_up <= n, bus.log_tail()
    assert samples.value("threatbus_subscribers_behind", app="zmq") == 0
    # Nothing is kept for it any more: the journal is empty, pruning may go on.
    assert samples.value("threatbus_catch_up_journal_entries") == 0
    line = next(l for l in bus.log().splitlines() if "bus.catch_up_timeout" in l)
    assert f"label={dead.p2p}" in line and f"dropped={int(given_up)}" in line and 'reason="catch_up_timeout"' in line, line
    # It gets messages as with plain drop_newest now: more are dropped for it, not journaled.
    paced(n, 2000)
    assert [o["x_seq"] for o in live.objects] == list(range(n + 2000))
    samples = bus.metrics()
    assert samples.value("threatbus_dropped_messages_total", plugin="zmq", reason="queue_full") > 0
    assert samples.value("threatbus_catch_up_journal_entries") == 0
    assert bus.alive()
    dead.close()
    live.close()


def test_kill_9_while_a_reader_is_behind_then_a_snapshot_gives_a_consistent_set(bus_factory, tmp_path):
    store_path = tmp_path / "store"
    bus = catch_up_bus(bus_factory, tmp_path)
    slow = SlowReader(bus)
    pub = fast_publisher(bus)
    wait_connected(bus, pub, slow)
    n = 50_000
    sent = []
    for i in range(n):
        obj = make_indicator(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", x_seq=i)
        sent.append(obj["id"])
        pub.send("stix2/indicator", obj)
    deadline = time.monotonic() + 60
    while bus.metrics().value("threatbus_store_writes_total", outcome="current") < n + 2:
        assert time.monotonic() < deadline, bus.log_tail()
        time.sleep(0.2)
    assert bus.metrics().value("threatbus_subscribers_behind", app="zmq") == 1
    slow.read(5_000, timeout=10)  # mid-way through catching up
    bus.proc.send_signal(signal.SIGKILL)
    bus.proc.wait(10)
    slow.close()

    again = catch_up_bus(bus_factory, tmp_path, store={"path": str(store_path)})
    subscriber = again.subscriber("stix2/indicator", snapshot=1)
    got = subscriber.recv_n(n, timeout=60)
    ids = [obj["id"] for _, obj in got if obj["id"] not in tbclient.PROBE_IDS]
    assert len(ids) == len(set(ids)) == n, (len(ids), len(set(ids)))
    assert set(ids) == set(sent)
    again_pub = again.publisher()
    assert tbclient.fence(again_pub, subscriber) == []


def test_a_zeek_peer_that_pauses_during_a_burst_gets_every_indicator_once_in_order(bus_factory, tmp_path):
    from test_zeek import HOST as ZEEK_HOST, peer, subscribe

    manage, pub_port, sub_port, zeek_port = free_ports(4)
    config = default_config(manage, pub_port, sub_port)
    config["plugins"]["apps"]["zeek"] = {"host": ZEEK_HOST, "port": zeek_port, "module_namespace": "Tenzir"}
    config["bus"] = {"queue_capacity": QUEUE, "memory_budget": BUDGET}
    config["store"] = {"path": str(tmp_path / "store")}
    bus = bus_factory(config=config, ports=(manage, pub_port, sub_port), metrics=True,
                      wait_ports=[manage, pub_port, sub_port, zeek_port])
    bus.zeek_port = zeek_port
    zeek = peer(bus, tls=False)
    p2p = subscribe(zeek)
    pub = fast_publisher(bus)
    probe = SlowReader(bus)
    wait_connected(bus, pub, probe)
    probe.close()
    # The fences on the way reached Zeek too: read them before the burst.
    first = make_indicator("10.255.255.255")
    pub.send("stix2/indicator", first)
    while True:
        topic, name, args = zeek.recv_event(timeout=15)
        if name == "Tenzir::intel" and brokerpeer.plain(args[0][1][1]) == first["id"]:
            break

    sent = []
    for i in range(N):
        obj = make_indicator(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
        sent.append(obj["id"])
        pub.send("stix2/indicator", obj)
    wait_behind(bus, app="zeek", timeout=60)
    time.sleep(2)
    got = []
    while len(got) < N:
        topic, name, args = zeek.recv_event(timeout=30)
        assert (topic, name) == (p2p, "Tenzir::intel"), (topic, name)
        got.append(brokerpeer.plain(args[0][1][1]))
        if len(got) % 20_000 == 0:
            time.sleep(0.5)
    assert got == sent, "gap, duplicate or reordering"
    samples = bus.metrics()
    assert samples.value("threatbus_replayed_messages_total", app="zeek") > 0
    assert samples.value("threatbus_dropped_messages_total", plugin="zeek", reason="queue_full") == 0
    wait_metric(bus, "threatbus_subscribers_behind", 0, app="zeek")
    zeek.close()


def test_a_snapshot_and_catch_up_together_lose_nothing(bus_factory, tmp_path):
    """A reader asks for a snapshot and falls behind while the answer streams: it gets the whole
    snapshot once and every live indicator once, in order."""
    bus = catch_up_bus(bus_factory, tmp_path)
    pub = fast_publisher(bus)
    probe = SlowReader(bus)
    wait_connected(bus, pub, probe)
    probe.close()
    m = 3000
    for i in range(m):
        pub.send("stix2/indicator", make_indicator(f"10.200.{i // 256}.{i % 256}", x_pre=i))
    deadline = time.monotonic() + 30
    while bus.metrics().value("threatbus_store_writes_total", outcome="current") < m + 2:
        assert time.monotonic() < deadline, bus.log_tail()
        time.sleep(0.1)

    slow = SlowReader(bus, snapshot=1)
    # Expired indicators: live traffic that no snapshot answers with, so that the two streams
    # can be told apart.
    n = 30_000
    for i in range(n):
        pub.send("stix2/indicator", make_indicator(
            f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", x_seq=i,
            valid_from="1999-01-01T00:00:00.000Z", valid_until="2000-01-01T00:00:00.000Z"))
    wait_behind(bus, app="zmq", timeout=30)
    got = slow.read(m + n, timeout=30)
    snapshot = sorted(o["x_pre"] for o in got if "x_pre" in o)
    live = [o["x_seq"] for o in got if "x_seq" in o]
    assert snapshot == list(range(m)), f"{len(snapshot)} snapshot objects"
    assert live == list(range(n)), f"{len(live)} live objects, in order: {live == sorted(live)}"
    assert "store answered a snapshot" in bus.log()
    samples = bus.metrics()
    assert samples.value("threatbus_replayed_messages_total", app="zmq") > 0
    # (The probe's subscription, behind with nobody reading, may lose the snapshot request that
    # every ZeroMQ subscription is offered: requests are not replayed.)
    assert not [l for l in bus.log().splitlines() if "queue full" in l and slow.p2p in l]
    slow.close()


def test_catch_up_from_a_shared_postgresql_store(bus_factory, tmp_path, pg_database):
    """The same with the PostgreSQL store: versions are found by id and `modified`."""
    bus = catch_up_bus(bus_factory, tmp_path, store={"url": pg_database})
    slow = SlowReader(bus)
    pub = fast_publisher(bus)
    wait_connected(bus, pub, slow)
    n = 30_000
    publish(pub, n)
    wait_behind(bus, app="zmq", timeout=30)
    assert_caught_up(bus, slow, n)
    slow.close()
    bus.stop()
    assert bus.proc.returncode == 0, bus.log_tail()


def test_catch_up_on_an_instance_fed_by_rabbitmq_from_a_shared_store(bus_factory, tmp_path, pg_database, vhost):  # noqa: F811
    """Two instances on one RabbitMQ exchange share a PostgreSQL store: a reader on the second
    falls behind while the first publishes, and gets every indicator once, in order."""
    buses = []
    for suffix in ("one", "two"):
        manage, pub, sub = free_ports(3)
        config = default_config(manage, pub, sub)
        config["plugins"]["backbones"] = {"rabbitmq": backbone(vhost, f"catch-up-{suffix}")}
        config["plugins"]["apps"]["zmq"]["send_hwm"] = 100
        config["bus"] = {"queue_capacity": QUEUE, "memory_budget": BUDGET}
        config["store"] = {"url": pg_database}
        buses.append(bus_factory(config=config, ports=(manage, pub, sub), metrics=True))
    one, two = buses
    slow = SlowReader(two)
    pub = fast_publisher(one)
    wait_connected(one, pub, slow)
    n = 20_000
    publish(pub, n)
    wait_behind(two, app="zmq", timeout=60)
    assert_caught_up(two, slow, n)
    slow.close()
