"""The TAXII feeds app (`plugins.apps.taxii_feeds`) against real TAXII 2.1 servers.

Two servers are polled:

* OASIS `medallion` (the reference TAXII 2.1 server), run as a subprocess with its memory
  backend, loaded from a data file each test writes (so it can also serve what a real server
  may hold: objects that are not valid STIX, types the bus does not carry);
* this project's own TAXII server (`plugins.apps.taxii`) in a second, "source", bus with a
  store; objects go into it with taxii2-client's `add_objects`.

The "follower" bus runs the ZeroMQ app and `taxii_feeds`; a ZeroMQ subscriber on it receives
what the feeds publish.

A feed polls as soon as the bus starts, before a test's subscriber could connect. So the feeds
reach their servers through a `Gate`: a TCP forwarder that does not listen until the test opens
it. Until then the feed's requests fail and are retried quickly (`retry` below); the poll that
was under way goes on once the gate opens, so it is still the feed's first poll.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from taxii2client.v21 import Collection

from conftest import HOST, default_config, free_ports, port_accepts, serves_metrics, to_yaml
from tbclient import make_indicator, make_sighting
from test_store import backend, pg_database  # noqa: F401  (fixtures)
from test_taxii import (INDICATORS_ID, READER, SIGHTINGS_ID, WRITER, collection, envelope, run_cli,
                        stored, taxii_bus, wait_until)

pytestmark = pytest.mark.skipif(not serves_metrics(), reason="the TAXII feeds app is not in the Python original")

TAXII = "application/taxii+json;version=2.1"
STIX = "application/stix+json;version=2.1"
MEDALLION_USER = ("feeder", "m-Secret-2342")
OBJECTS = "threatbus_taxii_feed_objects_total"
ERRORS = "threatbus_taxii_feed_errors_total"
POLLS = "threatbus_taxii_feed_polls_total"
FAST_RETRY = {"min_delay": 0.1, "max_delay": 0.4}


# --------------------------------------------------------------------------- helpers


def date_added(seconds_ago: float, index: int = 0) -> str:
    """A TAXII date_added `seconds_ago` in the past plus `index` milliseconds (distinct, ordered)."""
    moment = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds_ago) + dt.timedelta(milliseconds=index)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def indicators(n: int, net: int = 1) -> list[dict]:
    return [make_indicator(f"10.{net}.{i // 256}.{i % 256}", name=f"i{i}") for i in range(n)]


def sightings(n: int) -> list[dict]:
    return [make_sighting() for _ in range(n)]


def identity() -> dict:
    return {"type": "identity", "spec_version": "2.1", "id": f"identity--{uuid.uuid4()}",
            "created": "2024-01-01T00:00:00.000Z", "modified": "2024-01-01T00:00:00.000Z",
            "name": "ACME CERT", "identity_class": "organization"}


def malware() -> dict:
    return {"type": "malware", "spec_version": "2.1", "id": f"malware--{uuid.uuid4()}",
            "created": "2024-01-01T00:00:00.000Z", "modified": "2024-01-01T00:00:00.000Z",
            "name": "Poison Ivy", "is_family": True}


def ids(objects) -> list[str]:
    return [o["id"] for o in objects]


def received_ids(items) -> list[str]:
    return [obj["id"] for _, obj in items]


class Medallion:
    """The OASIS reference TAXII 2.1 server with its memory backend, as a subprocess.

    `collections`: ``[{"id", "title", "objects": [(object, date_added), ...]}]`` under the API
    root ``/api1/``; readable and writable by MEDALLION_USER."""

    def __init__(self, workdir: Path, collections, max_page_size: int = 50):
        self.port = free_ports(1)[0]
        self.root = f"http://{HOST}:{self.port}/api1/"
        data = {
            "/discovery": {"title": "medallion", "default": self.root, "api_roots": [self.root]},
            "api1": {
                "information": {"title": "Feeds", "versions": [TAXII], "max_content_length": 9765625},
                "status": [],
                "collections": [{
                    "id": c["id"], "title": c["title"], "can_read": True, "can_write": True,
                    "media_types": [STIX],
                    "objects": [o for o, _ in c["objects"]],
                    "manifest": [{"id": o["id"], "date_added": added, "media_type": STIX,
                                  "version": o.get("modified", o.get("created"))}
                                 for o, added in c["objects"]],
                } for c in collections],
            },
        }
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "data.json").write_text(json.dumps(data))
        config = {
            "backend": {"module": "medallion.backends.memory_backend", "module_class": "MemoryBackend",
                        "filename": str(workdir / "data.json")},
            "users": {MEDALLION_USER[0]: MEDALLION_USER[1]},
            "taxii": {"max_page_size": max_page_size},
        }
        (workdir / "config.json").write_text(json.dumps(config))
        self.log_path = workdir / "medallion.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "medallion.scripts.run", "--host", HOST, "--port", str(self.port),
             "--log-level", "WARN", str(workdir / "config.json")],
            cwd=str(workdir), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while not port_accepts(self.port):
            assert self.proc.poll() is None, f"medallion exited: {self.log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"medallion not up: {self.log_path.read_text()[-3000:]}"
            time.sleep(0.1)
        return self

    def collection(self, cid: str) -> Collection:
        return Collection(f"{self.root}collections/{cid}/", user=MEDALLION_USER[0], password=MEDALLION_USER[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@pytest.fixture
def medallion(tmp_path):
    """medallion(collections, max_page_size=50) -> a started Medallion (stopped after the test)."""
    started: list[Medallion] = []

    def make(collections, max_page_size=50):
        server = Medallion(tmp_path / f"medallion{len(started)}", collections, max_page_size)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


class Gate:
    """A TCP forwarder from a fixed port of its own to 127.0.0.1:`target`. Nothing listens on
    its port until `open()`; `close()` stops listening and cuts the connections."""

    def __init__(self, target: int):
        self.target = target
        self.port = free_ports(1)[0]
        self.listener: socket.socket | None = None
        self.connections: list[socket.socket] = []
        self.accepted = 0

    def url(self, path: str = "/api1/") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def open(self):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self.port))
        listener.listen(16)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self.accepted += 1
            try:
                upstream = socket.create_connection((HOST, self.target), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self):
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for s in self.connections:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.connections.clear()


@pytest.fixture
def gates():
    made: list[Gate] = []

    def make(target: int) -> Gate:
        gate = Gate(target)
        made.append(gate)
        return gate

    yield make
    for gate in made:
        gate.close()


def feed(name: str, url: str, collection_: str, user=MEDALLION_USER, **extra) -> dict:
    section = {"name": name, "url": url, "collection": collection_, "poll_interval": 1,
               "retry": dict(FAST_RETRY)}
    if user:
        section["username"], section["password"] = user
    section.update(extra)
    return section


def follower(bus_factory, feeds, store=None, metrics=True):
    """A bus with the ZeroMQ app and `taxii_feeds` (and a store at `store`, if given)."""
    manage, pub, sub = free_ports(3)
    config = default_config(manage, pub, sub)
    if store is not None:
        config["store"] = dict(store) if isinstance(store, dict) else {"path": str(store)}
    config["plugins"]["apps"]["taxii_feeds"] = feeds
    return bus_factory(config=config, ports=(manage, pub, sub), metrics=metrics)


def subscribe(bus):
    return bus.subscriber(["stix2/indicator", "stix2/sighting"])


FIELD_RE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def fields(line: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in FIELD_RE.findall(line)}


def log_lines(bus, message: str, feed_name: str | None = None) -> list[str]:
    return [line for line in bus.log().splitlines()
            if message in line and (feed_name is None or fields(line).get("feed") == feed_name)]


def polls(bus, feed_name: str) -> list[dict[str, int]]:
    """The counts of every "taxii feed polled" line of the feed, in order."""
    out = []
    for line in log_lines(bus, "taxii feed polled", feed_name):
        f = fields(line)
        out.append({k: int(f[k]) for k in ("pages", "published", "skipped", "invalid")})
    return out


def wait_polls(bus, feed_name: str, n: int = 1, timeout: float = 20) -> list[dict[str, int]]:
    return wait_until(lambda: (p := polls(bus, feed_name)) and len(p) >= n and p, timeout,
                      f"{n} polls of feed {feed_name}")


def wait_log(bus, message: str, feed_name: str | None = None, timeout: float = 20) -> list[str]:
    return wait_until(lambda: log_lines(bus, message, feed_name), timeout, f"log line {message!r} ({feed_name})")


def metric(bus, name: str, **labels) -> float:
    return bus.metrics().value(name, **labels)


def intel_collection(objects, title="Intel", seconds_ago=3600.0) -> dict:
    """A medallion collection holding `objects`, added one millisecond apart `seconds_ago`."""
    return {"id": str(uuid.uuid4()), "title": title,
            "objects": [(o, date_added(seconds_ago, i)) for i, o in enumerate(objects)]}


# --------------------------------------------------------------------------- 1. + 2. medallion


def test_medallion_first_poll_pages_every_indicator_and_sighting_once_then_only_new_ones(
        bus_factory, medallion, gates, tmp_path):
    wanted = indicators(100) + sightings(40)
    others = [identity(), identity(), malware()]
    objects = wanted[:50] + others[:1] + wanted[50:] + others[1:]  # 143 objects: 3 pages of 50
    intel = intel_collection(objects)
    server = medallion([intel, intel_collection(indicators(3, net=9), title="Other")], max_page_size=50)
    gate = gates(server.port)
    bus = follower(bus_factory, [feed("oasis", gate.url(), intel["id"])], store=tmp_path / "store")
    sub = subscribe(bus)
    server.wait_ready()
    gate.open()

    got = sub.recv_n(len(wanted), timeout=30)
    assert sorted(received_ids(got)) == sorted(ids(wanted)), "not every indicator and sighting, or one twice"
    assert {suffix for suffix, _ in got} == {"indicator", "sighting"}
    first = wait_polls(bus, "oasis")[0]
    assert first == {"pages": 3, "published": 140, "skipped": 3, "invalid": 0}, first
    sub.expect_nothing(2.5)  # two more polls: nothing again
    assert all(p["published"] == 0 for p in polls(bus, "oasis")[1:]), polls(bus, "oasis")
    assert len(polls(bus, "oasis")) >= 2

    # Objects added later (by a TAXII client, so medallion dates them now) arrive once.
    new = indicators(2, net=2) + sightings(1)
    status = server.collection(intel["id"]).add_objects(envelope(new))
    assert status.success_count == 3, status
    later = sub.recv_n(3, timeout=10)
    assert sorted(received_ids(later)) == sorted(ids(new))
    sub.expect_nothing(2.5)
    m = bus.metrics()
    assert m.value(OBJECTS, feed="oasis", outcome="published") == 143
    assert m.value(OBJECTS, feed="oasis", outcome="skipped") == 3
    assert m.value(OBJECTS, feed="oasis", outcome="invalid") == 0
    assert m.value(POLLS, feed="oasis", outcome="failed") == 0
    assert m.value(POLLS, feed="oasis", outcome="ok") >= 4
    assert m.value("threatbus_taxii_feed_last_success_timestamp_seconds", feed="oasis") >= time.time() - 10
    assert log_lines(bus, "taxii feed: collection found", "oasis")


# --------------------------------------------------------------------------- 1. + 2. + 7. our server


def test_our_server_first_poll_pages_both_collections_by_id_and_title_then_only_new_ones(
        bus_factory, gates, tmp_path):
    source = taxii_bus(bus_factory, tmp_path / "source", {"page_size": 50})
    sent_indicators, sent_sightings = indicators(120), sightings(60)
    assert collection(source).add_objects(envelope(sent_indicators)).success_count == 120
    assert collection(source, "sightings").add_objects(envelope(sent_sightings)).success_count == 60
    for first in range(0, 120, 40):  # the server's pages hold 50: ask for fewer at a time
        stored(collection(source), ids(sent_indicators[first:first + 40]), timeout=30)
    for first in range(0, 60, 40):
        stored(collection(source, "sightings"), ids(sent_sightings[first:first + 40]), timeout=30)

    gate = gates(source.taxii_port)
    url = gate.url("/threatbus/")
    bus = follower(bus_factory, [feed("tb-indicators", url, INDICATORS_ID, user=READER),
                                 feed("tb-sightings", url, "Sightings", user=READER)],
                   store=tmp_path / "store")
    sub = subscribe(bus)
    gate.open()

    got = sub.recv_n(180, timeout=30)
    assert sorted(received_ids(got)) == sorted(ids(sent_indicators + sent_sightings))
    by_kind = {kind: sorted(obj["id"] for suffix, obj in got if suffix == kind) for kind in ("indicator", "sighting")}
    assert by_kind == {"indicator": sorted(ids(sent_indicators)), "sighting": sorted(ids(sent_sightings))}
    assert wait_polls(bus, "tb-indicators")[0] == {"pages": 3, "published": 120, "skipped": 0, "invalid": 0}
    assert wait_polls(bus, "tb-sightings")[0] == {"pages": 2, "published": 60, "skipped": 0, "invalid": 0}
    found = log_lines(bus, "taxii feed: collection found", "tb-sightings")
    assert found and fields(found[0])["collection"] == SIGHTINGS_ID, found
    sub.expect_nothing(2.5)

    new_indicators, new_sightings = indicators(2, net=2), sightings(1)
    assert collection(source).add_objects(envelope(new_indicators)).success_count == 2
    assert collection(source, "sightings").add_objects(envelope(new_sightings)).success_count == 1
    later = sub.recv_n(3, timeout=15)
    assert sorted(received_ids(later)) == sorted(ids(new_indicators + new_sightings))
    sub.expect_nothing(2.5)
    m = bus.metrics()
    assert m.value(OBJECTS, feed="tb-indicators", outcome="published") == 122
    assert m.value(OBJECTS, feed="tb-sightings", outcome="published") == 61


# --------------------------------------------------------------------------- 3. restarts


def test_a_restart_on_the_same_store_resumes_after_the_stored_cursor(bus_factory, medallion, gates, backend):
    first_batch = indicators(60) + sightings(10)
    intel = intel_collection(first_batch)
    server = medallion([intel])
    gate = gates(server.port)
    store = backend
    feeds = [feed("oasis", gate.url(), intel["id"])]
    bus = follower(bus_factory, feeds, store=store)
    sub = subscribe(bus)
    server.wait_ready()
    gate.open()
    assert sorted(received_ids(sub.recv_n(70, timeout=30))) == sorted(ids(first_batch))
    assert wait_polls(bus, "oasis")[0]["pages"] == 2
    wait_log(bus, "taxii feed: first poll reaches back initial_lookback", "oasis")
    # A clean stop on either store (a PostgreSQL connection must be closed off the runtime).
    bus.signal(signal.SIGTERM)
    assert bus.wait_exit(15) == 0, bus.log_tail()
    assert "panicked" not in bus.log()
    bus.stop()
    gate.close()

    # Added while the follower is down.
    new = indicators(3, net=3)
    assert server.collection(intel["id"]).add_objects(envelope(new)).success_count == 3

    again = follower(bus_factory, feeds, store=store)
    sub = subscribe(again)
    gate.open()
    assert sorted(received_ids(sub.recv_n(3, timeout=20))) == sorted(ids(new))
    sub.expect_nothing(2.5)
    assert wait_log(again, "taxii feed: resuming after the stored cursor", "oasis")
    assert polls(again, "oasis")[0]["published"] == 3
    assert metric(again, OBJECTS, feed="oasis", outcome="published") == 3


def test_without_a_store_a_restart_reaches_back_initial_lookback_and_publishes_again(
        bus_factory, medallion, gates, tmp_path):
    recent = indicators(30)
    old = indicators(5, net=5)
    intel = intel_collection(recent)
    # Added three days ago: before the one-day lookback, so never published.
    intel["objects"] = [(o, date_added(3 * 86400, i)) for i, o in enumerate(old)] + intel["objects"]
    server = medallion([intel])
    gate = gates(server.port)
    feeds = [feed("oasis", gate.url(), intel["id"], initial_lookback=1)]
    for run in range(2):
        bus = follower(bus_factory, feeds)
        sub = subscribe(bus)
        server.wait_ready()
        gate.open()
        assert sorted(received_ids(sub.recv_n(30, timeout=30))) == sorted(ids(recent)), f"run {run}"
        sub.expect_nothing(2.5)
        assert wait_log(bus, "no store, so cursors are not kept")
        assert wait_polls(bus, "oasis")[0] == {"pages": 1, "published": 30, "skipped": 0, "invalid": 0}
        bus.stop()
        gate.close()


# --------------------------------------------------------------------------- 4. wrong password


def test_a_wrong_password_is_logged_counted_and_the_other_feed_keeps_publishing(
        bus_factory, medallion, gates):
    wanted = indicators(20)
    intel = intel_collection(wanted)
    server = medallion([intel])
    gate = gates(server.port)
    bad_password = "not-the-Password-777"
    bus = follower(bus_factory, [
        feed("wrong-pw", gate.url(), intel["id"], user=(MEDALLION_USER[0], bad_password)),
        feed("right-pw", gate.url(), intel["id"]),
    ])
    sub = subscribe(bus)
    server.wait_ready()
    gate.open()
    assert sorted(received_ids(sub.recv_n(20, timeout=20))) == sorted(ids(wanted))
    errors = wait_until(lambda: len(log_lines(bus, "taxii feed: poll failed", "wrong-pw")) >= 2
                        and log_lines(bus, "taxii feed: poll failed", "wrong-pw"), 15, "two failed polls")
    line = errors[0]
    assert "ERROR" in line and fields(line)["reason"] == "unauthorized" and "401" in line, line
    assert not log_lines(bus, "taxii feed: poll failed", "right-pw")
    sub.expect_nothing(1.5)  # the good feed publishes nothing twice, the bad one nothing at all
    m = bus.metrics()
    assert m.value(ERRORS, feed="wrong-pw", reason="unauthorized") >= 2
    assert m.value(POLLS, feed="wrong-pw", outcome="failed") >= 2
    assert m.value(OBJECTS, feed="wrong-pw", outcome="published") == 0
    assert m.value(ERRORS, feed="right-pw", reason="unauthorized") == 0
    assert m.value(OBJECTS, feed="right-pw", outcome="published") == 20
    assert m.value(POLLS, feed="right-pw", outcome="ok") >= 2
    assert bad_password not in bus.log() and MEDALLION_USER[1] not in bus.log()


# --------------------------------------------------------------------------- 5. server down


def test_a_server_that_is_down_is_retried_and_caught_up_with_when_it_comes_up(bus_factory, tmp_path):
    port = free_ports(1)[0]
    bus = follower(bus_factory, [feed("late", f"http://{HOST}:{port}/threatbus/", "Indicators", user=READER,
                                      retry={"min_delay": 0.2, "max_delay": 0.5})])
    sub = subscribe(bus)
    line = wait_log(bus, "taxii feed: request failed; retrying", "late")[0]
    assert "WARN" in line and fields(line)["reason"] == "network" and str(port) in line, line
    wait_until(lambda: metric(bus, ERRORS, feed="late", reason="network") >= 3, 10, "three network errors")
    assert metric(bus, POLLS, feed="late", outcome="ok") == 0

    source = taxii_bus(bus_factory, tmp_path / "source", {"page_size": 20}, port=port)
    sent = indicators(50)
    assert collection(source).add_objects(envelope(sent)).success_count == 50
    assert sorted(received_ids(sub.recv_n(50, timeout=20))) == sorted(ids(sent))
    sub.expect_nothing(2.5)
    assert wait_log(bus, "taxii feed: the server answers again", "late")
    assert sum(p["published"] for p in polls(bus, "late")) == 50
    assert metric(bus, OBJECTS, feed="late", outcome="published") == 50


# --------------------------------------------------------------------------- 6. invalid and other types


def test_invalid_objects_and_other_types_are_skipped_counted_and_logged(bus_factory, medallion, gates):
    valid_indicators, valid_sightings = indicators(30), sightings(6)
    bad_pattern = make_indicator(pattern="[ipv4-addr:value = '10.0.0.1'")
    no_spec = make_indicator("10.0.0.2")
    del no_spec["spec_version"]
    bad_time = make_indicator("10.0.0.3", valid_from="yesterday")
    invalid = [bad_pattern, no_spec, bad_time]
    others = [identity(), malware()]
    objects = valid_indicators[:10] + invalid[:1] + others[:1] + valid_sightings + valid_indicators[10:] \
        + invalid[1:] + others[1:]
    intel = intel_collection(objects)
    server = medallion([intel])
    gate = gates(server.port)
    bus = follower(bus_factory, [feed("everything", gate.url(), intel["id"]),
                                 feed("indicators-only", gate.url(), "Intel", types=["indicator"])])
    sub = subscribe(bus)
    server.wait_ready()
    gate.open()
    got = sub.recv_n(36 + 30, timeout=30)
    assert sorted(received_ids(got)) == sorted(ids(valid_indicators + valid_sightings) + ids(valid_indicators))
    sub.expect_nothing(2)
    assert wait_polls(bus, "everything")[0] == {"pages": 1, "published": 36, "skipped": 2, "invalid": 3}
    assert wait_polls(bus, "indicators-only")[0] == {"pages": 1, "published": 30, "skipped": 8, "invalid": 3}
    m = bus.metrics()
    assert m.value(OBJECTS, feed="everything", outcome="invalid") == 3
    assert m.value(OBJECTS, feed="everything", outcome="skipped") == 2
    assert m.value(OBJECTS, feed="everything", outcome="published") == 36
    assert m.value(OBJECTS, feed="indicators-only", outcome="invalid") == 3
    assert m.value(OBJECTS, feed="indicators-only", outcome="skipped") == 8
    assert m.value(OBJECTS, feed="indicators-only", outcome="published") == 30
    for name in ("everything", "indicators-only"):
        logged = {fields(line).get("id") for line in log_lines(bus, "taxii feed: invalid object skipped", name)}
        assert logged == set(ids(invalid)), (name, logged)


# --------------------------------------------------------------------------- 7. collections by title


def test_a_collection_by_title_and_a_missing_one_that_names_the_titles_there_are(bus_factory, medallion, gates):
    wanted = indicators(5)
    intel = intel_collection(wanted, title="Partner Indicators")
    other = intel_collection([], title="Partner Sightings")
    server = medallion([intel, other])
    gate = gates(server.port)
    bus = follower(bus_factory, [feed("by-title", gate.url(), "Partner Indicators"),
                                 feed("missing", gate.url(), "No Such Collection")])
    sub = subscribe(bus)
    server.wait_ready()
    gate.open()
    assert sorted(received_ids(sub.recv_n(5, timeout=20))) == sorted(ids(wanted))
    found = wait_log(bus, "taxii feed: collection found", "by-title")[0]
    assert fields(found)["collection"] == intel["id"], found
    line = wait_log(bus, "taxii feed: poll failed", "missing")[0]
    assert fields(line)["reason"] == "not_found", line
    assert '\\"No Such Collection\\"' in line or '"No Such Collection"' in line, line
    for c in (intel, other):
        assert c["title"] in line and c["id"] in line, line
    wait_until(lambda: metric(bus, ERRORS, feed="missing", reason="not_found") >= 2, 10, "a second attempt")
    assert metric(bus, OBJECTS, feed="by-title", outcome="published") == 5


# --------------------------------------------------------------------------- 8. threatbus check


def test_check_validates_feeds_without_contacting_them_and_names_the_bad_key(tmp_path):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((HOST, 0))
    listener.listen(4)
    listener.settimeout(0.5)
    watched = listener.getsockname()[1]
    secret = "Feed-Secret-31337"
    manage, pub, sub = free_ports(3)

    def check(feeds):
        config = default_config(manage, pub, sub)
        config["plugins"]["apps"]["taxii_feeds"] = feeds
        path = tmp_path / f"config{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(to_yaml(config) + "\n")
        return run_cli("check", "-c", str(path))

    good = [feed("first", f"http://{HOST}:{watched}/api1/", "Intel", user=("u", secret)),
            feed("second", "https://taxii.invalid:9443/taxii2/root/", "c0ffee", user=None)]
    done = check(good)
    assert done.returncode == 0, done.stderr
    effective = json.loads(done.stdout)["plugins"]["apps"]["taxii_feeds"]
    assert [f["name"] for f in effective] == ["first", "second"]
    assert effective[0]["password"] in ("(set)", "********") and effective[0]["username"] == "u"
    assert effective[0]["poll_interval"] == 1 and effective[1]["types"] == ["indicator", "sighting"]
    assert secret not in done.stdout and secret not in done.stderr
    with pytest.raises(socket.timeout):
        listener.accept()  # nothing connected: check contacts no feed
    listener.close()

    done = check([good[0], dict(good[1], poll_interval=0)])
    assert done.returncode != 0
    assert "plugins.apps.taxii_feeds[1].poll_interval" in done.stderr and '"second"' in done.stderr, done.stderr
    assert secret not in done.stdout + done.stderr

    done = check([dict(good[0], colour="red"), good[1]])
    assert done.returncode != 0
    assert "plugins.apps.taxii_feeds[0]" in done.stderr and "colour" in done.stderr, done.stderr
    assert '"first"' in done.stderr, done.stderr
    assert secret not in done.stdout + done.stderr

    done = check([dict(good[0], url="ftp://example.org/api1/")])
    assert done.returncode != 0 and "plugins.apps.taxii_feeds[0].url" in done.stderr, done.stderr


# --------------------------------------------------------------------------- 9. 429 Retry-After


class FakeTaxii(BaseHTTPRequestHandler):
    """A TAXII 2.1 API root at /api/ with one collection, `c1`, whose objects requests the
    server's `answer(query) -> (status, body, headers)` answers (and records, with their time)."""

    server: "FakeServer"

    def log_message(self, *args):
        pass

    def _send(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", TAXII)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlsplit(self.path)
        srv = self.server
        if url.path == "/api/":
            versions = getattr(srv, "versions", [TAXII])
            return self._send(200, {"title": "fake", "versions": versions, "max_content_length": 100000})
        if url.path == "/api/collections/":
            return self._send(200, {"collections": [{"id": "c1", "title": "Fake", "can_read": True,
                                                     "can_write": False, "media_types": [STIX]}]})
        if url.path == "/api/collections/c1/objects/":
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            srv.requests.append((time.monotonic(), query))
            return self._send(*srv.answer(query))
        self._send(404, {"title": "not found", "http_status": "404"})


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port, answer):
        super().__init__((HOST, port), FakeTaxii)
        self.answer = answer
        self.requests: list[tuple[float, dict]] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self):
        self.shutdown()
        self.server_close()


def dates(stamp: str):
    return [("X-TAXII-Date-Added-First", stamp), ("X-TAXII-Date-Added-Last", stamp)]


def test_a_429_with_retry_after_is_honoured(bus_factory):
    port = free_ports(1)[0]
    bus = follower(bus_factory, [feed("throttled", f"http://{HOST}:{port}/api/", "c1", user=None)])
    sub = subscribe(bus)
    wait_log(bus, "taxii feed: request failed; retrying", "throttled")
    objects, last_added = indicators(2) + sightings(1), date_added(60)

    def answer(query):
        if len(server.requests) == 1:
            return 429, {"title": "slow down", "http_status": "429"}, [("Retry-After", "2")]
        if query["added_after"] >= last_added:
            return 200, {"more": False}, []
        return 200, {"more": False, "objects": objects}, dates(last_added)

    server = FakeServer(port, answer)
    try:
        got = sub.recv_n(3, timeout=20)
        assert sorted(received_ids(got)) == sorted(ids(objects))
        (first, _), (second, query) = server.requests[:2]
        assert second - first >= 1.9, f"retried after {second - first:.2f}s despite Retry-After: 2"
        assert second - first < 5
        assert query["added_after"] < last_added
        # The next poll asks for what came after the X-TAXII-Date-Added-Last it got.
        wait_until(lambda: len(server.requests) >= 3, 10, "a further poll")
        assert server.requests[2][1]["added_after"] == last_added
        sub.expect_nothing(1.5)
        m = bus.metrics()
        assert m.value(ERRORS, feed="throttled", reason="throttled") == 1
        assert m.value(OBJECTS, feed="throttled", outcome="published") == 3
        retry = [line for line in log_lines(bus, "taxii feed: request failed; retrying", "throttled")
                 if fields(line).get("reason") == "throttled"]
        assert retry and fields(retry[0])["retry_in_ms"] == "2000", retry
    finally:
        server.stop()


def test_a_poll_cut_short_between_pages_with_the_same_date_added_loses_nothing(bus_factory):
    """medallion gives every object of one POST the same date_added, so a page may end in the
    middle of objects added at the same moment. When the poll then ends early (here: the `next`
    token expired, a 400 as medallion answers), the next poll must not ask for what came after
    that date: the rest of the objects added at that moment would never be fetched."""
    port = free_ports(1)[0]
    bus = follower(bus_factory, [feed("ties", f"http://{HOST}:{port}/api/", "c1", user=None)])
    sub = subscribe(bus)
    wait_log(bus, "taxii feed: request failed; retrying", "ties")
    batch, moment = indicators(6), date_added(60)

    def answer(query):
        if "next" in query:
            return 400, {"title": "'next' not valid", "http_status": "400"}, []
        if query["added_after"] >= moment:
            return 200, {"more": False}, []
        if len(server.requests) == 1:  # the first page of the first poll
            return 200, {"more": True, "next": "n1", "objects": batch[:3]}, dates(moment)
        return 200, {"more": False, "objects": batch}, dates(moment)

    server = FakeServer(port, answer)
    try:
        failed = wait_log(bus, "taxii feed: poll failed", "ties")[0]
        assert "HTTP 400" in failed, failed
        # The first page, then (from before their date again) the whole batch: at least once.
        got = received_ids(sub.recv_n(9, timeout=10))
        assert got[:3] == ids(batch[:3]) and got[3:] == ids(batch), got
        wait_until(lambda: any(q.get("added_after") == moment for _, q in server.requests), 10,
                   "a poll after the whole batch")
        sub.expect_nothing(1.5)
    finally:
        server.stop()


def test_a_taxii_2_0_only_server_is_a_clear_error_and_the_other_feed_keeps_publishing(bus_factory):
    old, new = free_ports(2)
    feeds = [feed("old", f"http://{HOST}:{old}/api/", "c1", user=None),
             feed("new", f"http://{HOST}:{new}/api/", "c1", user=None)]
    objects, last_added = indicators(2), date_added(60)

    def answer(query):
        if query["added_after"] >= last_added:
            return 200, {"more": False}, []
        return 200, {"more": False, "objects": objects}, dates(last_added)

    legacy = FakeServer(old, answer)
    legacy.versions = ["application/taxii+json;version=2.0"]
    current = FakeServer(new, answer)
    try:
        bus = follower(bus_factory, feeds)
        failed = wait_log(bus, "taxii feed: poll failed", "old")
        assert "TAXII 2.0-only servers are not supported" in failed[0], failed[0]
        assert fields(failed[0])["reason"] == "protocol"
        assert legacy.requests == [], "objects were asked of a 2.0 server"
        assert wait_polls(bus, "new")[0]["published"] == 2
        assert metric(bus, ERRORS, feed="old", reason="protocol") >= 1
        assert metric(bus, OBJECTS, feed="new", outcome="published") == 2
    finally:
        legacy.stop()
        current.stop()


def test_https_feeds_trust_their_ca_file_and_verify_can_be_turned_off(bus_factory, tmp_path, monkeypatch):
    # requests lets these override the client's CA file (the bus under test does not read them).
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    tls_dir = Path(__file__).parent / "tls"
    tls = {"certificate": str(tls_dir / "bus.pem"), "key": str(tls_dir / "bus.key")}
    source = taxii_bus(bus_factory, tmp_path / "source", {"tls": tls})
    sent = indicators(12, net=5)
    coll = Collection(f"{source.url}/threatbus/collections/{INDICATORS_ID}/", user=WRITER[0],
                      password=WRITER[1], verify=str(tls_dir / "ca.pem"))
    assert coll.add_objects(envelope(sent)).success_count == 12
    wait_until(lambda: len(coll.get_objects().get("objects", [])) == 12, 15, "12 indicators stored")

    url = f"https://127.0.0.1:{source.taxii_port}/threatbus/"
    bus = follower(bus_factory, [
        feed("trusted", url, INDICATORS_ID, user=READER, ca_file=str(tls_dir / "ca.pem")),
        feed("untrusted", url, INDICATORS_ID, user=READER),
        feed("unverified", url, INDICATORS_ID, user=READER, verify=False),
    ])
    assert wait_polls(bus, "trusted")[0]["published"] == 12
    assert wait_polls(bus, "unverified")[0]["published"] == 12
    # Without the CA the certificate is refused: a network error, retried, nothing published.
    refused = wait_log(bus, "taxii feed: request failed; retrying", "untrusted")
    assert fields(refused[0])["reason"] == "network", refused[0]
    assert "certificate" in refused[0].lower() or "tls" in refused[0].lower(), refused[0]
    assert polls(bus, "untrusted") == []
    assert metric(bus, OBJECTS, feed="untrusted", outcome="published") == 0
    assert metric(bus, ERRORS, feed="untrusted", reason="network") >= 1


def test_a_page_over_the_size_cap_ends_the_poll_instead_of_being_retried(bus_factory):
    port = free_ports(1)[0]

    def answer(query):
        return 200, {"more": False, "objects": [], "padding": "x" * (65 << 20)}, []

    server = FakeServer(port, answer)
    try:
        bus = follower(bus_factory, [feed("huge", f"http://{HOST}:{port}/api/", "c1", user=None,
                                          poll_interval=3600)])
        failed = wait_log(bus, "taxii feed: poll failed", "huge")
        assert fields(failed[0])["reason"] == "protocol", failed[0]
        assert "larger than" in failed[0], failed[0]
        time.sleep(1)
        assert len(server.requests) == 1, "an answer over the cap was asked for again at once"
        assert metric(bus, ERRORS, feed="huge", reason="protocol") == 1
    finally:
        server.stop()
