"""The intel store (issue 17): what the bus routes is kept, versioned as STIX 2.1 says, and
answers snapshots; it survives SIGTERM and kill -9; a store that cannot be used stops the start
and is left as it was."""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import sqlite3
import subprocess
import time

import os
import shutil
import uuid

import pytest

import tbclient
from conftest import base_command, default_config, free_ports, port_accepts, serves_metrics
from tbclient import make_indicator, make_sighting
from test_rabbitmq import backbone, vhost  # noqa: F401

pytestmark = pytest.mark.skipif(not serves_metrics(), reason="the store is not in the Python original")

#: What the store promises: routed intel is on disk within this long.
DURABLE_WITHIN = 1.0

PG_PORT = 5432


def psql(sql: str, database: str = "postgres") -> None:
    done = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", "-d", database,
                           "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def pg_database():
    """A scratch PostgreSQL database of this test's own (user postgres, trust auth), dropped
    afterwards; its URL."""
    if not port_accepts(PG_PORT) or not shutil.which("psql"):
        why = (f"PostgreSQL is not reachable on 127.0.0.1:{PG_PORT} (or psql is missing): the "
               "PostgreSQL store tests need it")
        if os.environ.get("THREATBUS_REQUIRE_SERVICES") == "1":
            pytest.fail(why, pytrace=False)
        pytest.skip(why + "; set THREATBUS_REQUIRE_SERVICES=1 to make a missing server fail the run")
    name = f"threatbus_blackbox_{uuid.uuid4().hex[:10]}"
    psql(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@127.0.0.1:{PG_PORT}/{name}"
    psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["embedded", "postgresql"])
def backend(request, tmp_path):
    """The `store` section of each backend: a file, or a scratch PostgreSQL database."""
    if request.param == "embedded":
        return {"path": str(tmp_path / "store")}
    return {"url": request.getfixturevalue("pg_database")}


def stamp(delta: dt.timedelta = dt.timedelta()) -> str:
    moment = dt.datetime.now(dt.timezone.utc) + delta
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def store_bus(bus_factory, where, ports=None, wait=True, metrics=False, **store):
    """A bus with a store at `where`: a path, or a `store` section (see `backend`)."""
    manage, pub, sub = ports or free_ports(3)
    config = default_config(manage, pub, sub)
    section = dict(where) if isinstance(where, dict) else {"path": str(where)}
    config["store"] = {**section, **store}
    return bus_factory(config=config, ports=(manage, pub, sub), wait=wait, metrics=metrics)


def payloads(raw_frames) -> dict[tuple[str, str], bytes]:
    """The JSON bytes of frames, by STIX id and modified."""
    out = {}
    for raw in raw_frames:
        payload = raw.split(b" ", 1)[1]
        obj = json.loads(payload)
        out[(obj["id"], obj["modified"])] = payload
    return out


def snapshot(bus, topic: str, days: int, publisher, expected: int) -> list[tuple[str, dict]]:
    """What a new subscriber with a snapshot of `days` gets before a live fence."""
    subscriber = bus.subscriber(topic, snapshot=days)
    got = subscriber.recv_n(expected, timeout=20) if expected else []
    assert tbclient.fence(publisher, subscriber, kind="sighting" if "sighting" in topic else "indicator") == []
    return got, subscriber


def test_a_snapshot_from_the_store_is_the_current_live_intel_byte_for_byte(bus_factory, backend):
    bus = store_bus(bus_factory, backend, metrics=True)
    live = bus.subscriber("stix2")
    publisher = bus.publisher()
    bus.sync(publisher, live)

    a2 = make_indicator("10.0.0.1", modified=stamp(-dt.timedelta(hours=2)), name="second")
    a1 = dict(a2, modified=stamp(-dt.timedelta(hours=3)), name="first")  # arrives late
    b = make_indicator("10.0.0.2", modified=stamp(-dt.timedelta(hours=5)))
    b_removed = dict(b, modified=stamp(-dt.timedelta(hours=4)), x_threatbus_update="REMOVE")
    c = make_indicator("10.0.0.3", revoked=True)
    d = make_indicator("10.0.0.4", valid_until=stamp(-dt.timedelta(minutes=1)))
    e = make_indicator("10.0.0.5", created=stamp(-dt.timedelta(days=40)), modified=stamp(-dt.timedelta(days=40)))
    f = make_indicator("10.0.0.6", valid_until=stamp(dt.timedelta(days=1)))
    s1 = make_sighting(a2["id"])
    s2 = make_sighting(a2["id"], created=stamp(-dt.timedelta(days=40)), modified=stamp(-dt.timedelta(days=40)))
    indicators = [a2, a1, b, b_removed, c, d, e, f]
    for obj in indicators:
        publisher.send("stix2/indicator", obj)
    for obj in (s1, s2):
        publisher.send("stix2/sighting", obj)
    live.recv_n(len(indicators) + 2)
    published = payloads(live.raw_log)
    time.sleep(DURABLE_WITHIN)

    got, subscriber = snapshot(bus, "stix2/indicator", 30, publisher, expected=2)
    assert sorted(obj["id"] for _, obj in got) == sorted([a2["id"], f["id"]])
    # One line per answer: who asked, for how long a span, how many objects, how long it took.
    line = next(l for l in bus.log().splitlines() if "store answered a snapshot" in l and subscriber.p2p in l)
    assert f'requester="zmq {subscriber.p2p}"' in line and "seconds=2592000" in line, line
    assert re.search(r"objects=\d+ ms=\d+", line), line
    assert {obj["id"]: obj.get("name") for _, obj in got}[a2["id"]] == "second"
    # Byte for byte what the bus published (the bus's own sync probes, stored like any
    # indicator, are left out).
    answered = {key: payload for key, payload in payloads(subscriber.raw_log).items()
                if key[0] in (a2["id"], f["id"])}
    assert set(answered) == {(a2["id"], a2["modified"]), (f["id"], f["modified"])}
    for key, payload in answered.items():
        assert payload == published[key], key

    got, _ = snapshot(bus, "stix2/sighting", 30, publisher, expected=1)
    assert [obj["id"] for _, obj in got] == [s1["id"]]
    assert "store answered a snapshot" in bus.log()
    metrics = bus.metrics()
    assert metrics.value("threatbus_store_writes_total", outcome="history") == 1  # a1, late
    assert metrics.value("threatbus_store_writes_total", outcome="repeated") == 0
    # The store's own count matches its log line (the bus's sync probes are stored too).
    logged = re.search(r'store answered a snapshot .*kind="sighting" .*objects=(\d+)', bus.log())
    assert logged, bus.log_tail()
    assert metrics.value("threatbus_store_snapshot_objects_total", kind="sighting") == int(logged[1]) >= 1


def test_the_store_survives_sigterm_and_kill_9(bus_factory, backend):
    path = backend
    ports = free_ports(3)
    bus = store_bus(bus_factory, path, ports=ports)
    publisher = bus.publisher()
    first = [make_indicator(f"10.1.0.{n}") for n in range(20)]
    for obj in first:
        publisher.send("stix2/indicator", obj)
    probe = bus.subscriber("stix2/indicator")
    tbclient.fence(publisher, probe)
    publisher.close()
    bus.signal(signal.SIGTERM)
    assert bus.wait_exit(15) == 0, bus.log_tail()

    bus = store_bus(bus_factory, path, ports=ports)
    publisher = bus.publisher()
    got, _ = snapshot(bus, "stix2/indicator", 1, publisher, expected=20)
    assert {obj["id"] for _, obj in got} == {obj["id"] for obj in first}

    second = [make_indicator(f"10.2.0.{n}") for n in range(20)]
    for obj in second:
        publisher.send("stix2/indicator", obj)
    probe = bus.subscriber("stix2/indicator")
    tbclient.fence(publisher, probe)
    time.sleep(DURABLE_WITHIN + 0.5)
    bus.proc.kill()
    bus.proc.wait(10)

    bus = store_bus(bus_factory, path, ports=ports)
    publisher = bus.publisher()
    subscriber = bus.subscriber("stix2/indicator", snapshot=1)
    ids = set()
    deadline = time.monotonic() + 20
    wanted = {obj["id"] for obj in first + second}
    while not wanted <= ids and time.monotonic() < deadline:
        _, obj = subscriber.recv(timeout=max(deadline - time.monotonic(), 0.1))
        ids.add(obj["id"])
    assert wanted <= ids, f"missing after kill -9: {len(wanted - ids)}"


def test_a_store_that_cannot_be_used_stops_the_start_and_is_left_alone(bus_factory, tmp_path):
    def refused(path, *expected):
        bus = store_bus(bus_factory, path, wait=False)
        assert bus.wait_exit(15) == 1, bus.log_tail()
        log = bus.log()
        assert str(path) in log, log
        for text in expected:
            assert text in log, log

    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"this is not a database\n" * 300)
    before = garbage.read_bytes()
    refused(garbage, "not a Threat Bus store")
    assert garbage.read_bytes() == before

    newer = tmp_path / "newer"
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA application_id = 1413641076")  # "TBst"
        db.execute("PRAGMA user_version = 99")
    before = newer.read_bytes()
    refused(newer, "schema version 99", "newer Threat Bus")
    assert newer.read_bytes() == before

    held = tmp_path / "held"
    first = store_bus(bus_factory, held)
    refused(held, "locked by another process")
    assert first.alive()

    refused(tmp_path / "no" / "such" / "dir" / "store", "cannot create the lock file")


def run_store(bus_or_config_path, *args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    config_path = bus_or_config_path.config_path if hasattr(bus_or_config_path, "config_path") else bus_or_config_path
    return subprocess.run(base_command() + ["-c", str(config_path), "store", *args], input=stdin,
                          capture_output=True, timeout=60)


def test_store_commands_round_trip_and_say_when_the_bus_holds_the_store(bus_factory, tmp_path):
    bus = store_bus(bus_factory, tmp_path / "store", retention=30)
    publisher = bus.publisher()
    a2 = make_indicator("10.3.0.1", modified=stamp(-dt.timedelta(hours=1)))
    a1 = dict(a2, modified=stamp(-dt.timedelta(hours=2)))
    removed = make_indicator("10.3.0.2", x_threatbus_update="REMOVE")
    old = make_indicator("10.3.0.3", created=stamp(-dt.timedelta(days=60)), modified=stamp(-dt.timedelta(days=60)))
    objects = [a2, a1, removed, old] + [make_indicator(f"10.3.1.{n}") for n in range(50)]
    for obj in objects:
        publisher.send("stix2/indicator", obj)
    publisher.send("stix2/sighting", make_sighting(a2["id"]))
    probe = bus.subscriber("stix2")
    tbclient.fence(publisher, probe)
    time.sleep(DURABLE_WITHIN)

    # Reading while the bus runs works; writing is refused with what to do.
    running = run_store(bus, "stats")
    assert running.returncode == 0, running.stderr
    refused = run_store(bus, "prune")
    assert refused.returncode == 1
    assert b"locked by another process" in refused.stderr and b"stop the bus first" in refused.stderr
    publisher.close()
    bus.signal(signal.SIGTERM)
    assert bus.wait_exit(15) == 0

    stats = json.loads(run_store(bus, "stats").stdout)
    assert stats["indicators"]["withdrawn"] == 1
    assert stats["versions"] == stats["objects"] + 1  # a1 is history
    assert stats["bytes_on_disk"] > 0

    everything = run_store(bus, "export", "--all-versions")
    assert everything.returncode == 0, everything.stderr
    lines = everything.stdout.splitlines()
    assert len(lines) == stats["versions"]
    assert {json.loads(line)["id"] for line in lines} >= {obj["id"] for obj in objects}
    recent = run_store(bus, "export", "--since", "30")
    assert old["id"].encode() not in recent.stdout and a2["id"].encode() in recent.stdout
    bundle = json.loads(run_store(bus, "export", "--bundle").stdout)
    assert bundle["type"] == "bundle" and len(bundle["objects"]) == stats["objects"]

    # Into an empty store: the same stats (and a second import changes nothing).
    other = tmp_path / "other.yaml"
    other.write_text(json.dumps({"store": {"path": str(tmp_path / "copy")},
                                 "plugins": {"backbones": {"inmem": {}}, "apps": {"zmq": {"host": "127.0.0.1", "manage": 1, "pub": 2, "sub": 3}}}}))
    imported = run_store(other, "import", "-", stdin=everything.stdout + b"{\"type\": \"indicator\"}\n")
    assert imported.returncode == 0, imported.stderr
    assert b"skipped" in imported.stderr and b"1 skipped as invalid" in imported.stderr
    copy = json.loads(run_store(other, "stats").stdout)
    for key in ("indicators", "sightings", "objects", "versions", "oldest_modified", "newest_modified"):
        assert copy[key] == stats[key], key
    again = run_store(other, "import", "-", stdin=everything.stdout)
    assert f"{len(lines)} already stored".encode() in again.stderr, again.stderr

    # Retention 30 days: the 60-day-old indicator goes.
    pruned = run_store(bus, "prune")
    assert pruned.returncode == 0 and b"pruned 1 versions older than 30 days" in pruned.stderr, pruned.stderr
    assert json.loads(run_store(bus, "stats").stdout)["objects"] == stats["objects"] - 1


def test_two_instances_sharing_a_postgresql_store_answer_a_snapshot_once(bus_factory, pg_database, vhost):  # noqa: F811
    buses = []
    for suffix in ("one", "two"):
        manage, pub, sub = free_ports(3)
        config = default_config(manage, pub, sub)
        config["plugins"]["backbones"] = {"rabbitmq": backbone(vhost, f"shared-store-{suffix}")}
        config["store"] = {"url": pg_database}
        buses.append(bus_factory(config=config, ports=(manage, pub, sub)))
    one, two = buses
    publisher = one.publisher()
    watcher = two.subscriber("stix2/indicator")
    indicators = [make_indicator(f"10.4.0.{n}") for n in range(30)]
    tbclient.fence(publisher, watcher)  # the backbone carries one's messages to two
    for obj in indicators:
        publisher.send("stix2/indicator", obj)
    watcher.recv_n(len(indicators))
    time.sleep(DURABLE_WITHIN)
    # Both instances stored every message; the database holds each version once.
    subscriber = two.subscriber("stix2/indicator", snapshot=1)
    got = []
    wanted = {obj["id"] for obj in indicators}
    deadline = time.monotonic() + 20
    while not wanted <= {obj["id"] for obj in got} and time.monotonic() < deadline:
        got.append(subscriber.recv(timeout=max(deadline - time.monotonic(), 0.1))[1])
    assert tbclient.fence(publisher, subscriber) == []
    ids = [obj["id"] for obj in got]
    assert wanted <= set(ids)
    assert len(ids) == len(set(ids)), "an object arrived twice: both instances answered"
    assert "store answered a snapshot" in two.log()
    assert "store answered a snapshot" not in one.log()


def test_a_zeek_peer_gets_its_snapshot_from_the_store(bus_factory, tmp_path):
    from test_zeek import HOST as ZEEK_HOST, intel, peer, subscribe

    manage, pub, sub, zeek_port = free_ports(4)
    config = default_config(manage, pub, sub)
    config["plugins"]["apps"]["zeek"] = {"host": ZEEK_HOST, "port": zeek_port, "module_namespace": "Tenzir"}
    config["store"] = {"path": str(tmp_path / "store")}
    bus = bus_factory(config=config, ports=(manage, pub, sub), wait_ports=[manage, pub, sub, zeek_port])
    bus.zeek_port = zeek_port
    publisher = bus.publisher()
    probe = bus.subscriber("stix2/indicator")
    tbclient.sync(publisher, [probe])
    stored = make_indicator("5.5.5.5")
    withdrawn = make_indicator("5.5.5.6", x_threatbus_update="REMOVE")
    for obj in (stored, withdrawn):
        publisher.send("stix2/indicator", obj)
    tbclient.fence(publisher, probe)
    time.sleep(DURABLE_WITHIN)
    zeek = peer(bus)
    p2p = subscribe(zeek, snapshot_ns=86_400 * 10**9)
    seen = []
    deadline = time.monotonic() + 15
    while stored["id"] not in seen and time.monotonic() < deadline:
        seen.append(intel(zeek, p2p)[1])
    assert stored["id"] in seen
    assert withdrawn["id"] not in seen


def test_the_store_section_takes_environment_overrides_and_check_validates_it(tmp_path):
    def check(*, env, config=None, cwd=tmp_path):
        args = base_command() + (["-c", str(config)] if config else []) + ["check"]
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("THREATBUS_")}
        return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=cwd, env={**child_env, **env})

    # The embedded default has a store in the working directory.
    empty = tmp_path / "empty"
    empty.mkdir()
    done = check(env={}, cwd=empty)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["store"] == {"path": "threatbus-store", "retention": 90, "answer_snapshots": True}

    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"plugins": {"backbones": {"inmem": {}},
                                              "apps": {"zmq": {"host": "127.0.0.1", "manage": 1, "pub": 2, "sub": 3}}}}))
    done = check(config=config, env={})
    assert done.returncode == 0 and "store" not in json.loads(done.stdout), done.stdout  # no section: no store
    done = check(config=config, env={"THREATBUS_STORE__PATH": str(tmp_path / "env-store"),
                                     "THREATBUS_STORE__RETENTION": "7", "THREATBUS_STORE__ANSWER_SNAPSHOTS": "false"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["store"] == {"path": str(tmp_path / "env-store"), "retention": 7,
                                                "answer_snapshots": False}
    done = check(config=config, env={"THREATBUS_STORE__RETENTION": "0"})
    assert done.returncode == 1
    assert "store.retention: expected a whole number from 1 to 36500, got 0" in done.stderr, done.stderr


def test_store_commands_round_trip_on_postgresql_while_the_bus_runs(bus_factory, pg_database, tmp_path):
    bus = store_bus(bus_factory, {"url": pg_database})
    publisher = bus.publisher()
    objects = [make_indicator(f"10.5.0.{n}") for n in range(40)]
    first = objects[0]
    objects.append(dict(first, modified=stamp(dt.timedelta(seconds=-30))))  # older version: history
    for obj in objects:
        publisher.send("stix2/indicator", obj)
    probe = bus.subscriber("stix2/indicator")
    tbclient.fence(publisher, probe)
    time.sleep(DURABLE_WITHIN)
    # A shared database has no lock: every command works while the bus runs.
    stats = json.loads(run_store(bus, "stats").stdout)
    assert stats["store"].startswith("postgresql://127.0.0.1:") and stats["versions"] == stats["objects"] + 1
    everything = run_store(bus, "export", "--all-versions")
    assert everything.returncode == 0, everything.stderr
    copy_db = f"threatbus_blackbox_{uuid.uuid4().hex[:10]}"
    psql(f"CREATE DATABASE {copy_db}")
    try:
        other = tmp_path / "other.yaml"
        other.write_text(json.dumps({"store": {"url": f"postgresql://postgres@127.0.0.1:{PG_PORT}/{copy_db}"},
                                     "plugins": {"backbones": {"inmem": {}},
                                                 "apps": {"zmq": {"host": "127.0.0.1", "manage": 1, "pub": 2, "sub": 3}}}}))
        imported = run_store(other, "import", "-", stdin=everything.stdout)
        assert imported.returncode == 0, imported.stderr
        copy = json.loads(run_store(other, "stats").stdout)
        for key in ("indicators", "sightings", "objects", "versions", "oldest_modified", "newest_modified"):
            assert copy[key] == stats[key], key
        pruned = run_store(bus, "prune")
        assert pruned.returncode == 0 and b"pruned 0 versions" in pruned.stderr, pruned.stderr
    finally:
        psql(f"DROP DATABASE IF EXISTS {copy_db} WITH (FORCE)")


def test_the_bus_prunes_what_is_older_than_the_retention_when_it_starts(bus_factory, tmp_path):
    path = tmp_path / "store"
    ports = free_ports(3)
    bus = store_bus(bus_factory, path, ports=ports, retention=30)
    publisher = bus.publisher()
    old = make_indicator("10.6.0.1", created=stamp(-dt.timedelta(days=60)), modified=stamp(-dt.timedelta(days=60)))
    recent = make_indicator("10.6.0.2")
    for obj in (old, recent):
        publisher.send("stix2/indicator", obj)
    probe = bus.subscriber("stix2/indicator")
    tbclient.fence(publisher, probe)
    publisher.close()
    bus.signal(signal.SIGTERM)
    assert bus.wait_exit(15) == 0
    assert json.loads(run_store(bus, "stats").stdout)["versions"] >= 2

    bus = store_bus(bus_factory, path, ports=ports, retention=30, metrics=True)
    line = next((l for l in bus.log().splitlines() if "pruned versions older than store.retention" in l), None)
    deadline = time.monotonic() + 10
    while line is None and time.monotonic() < deadline:
        time.sleep(0.1)
        line = next((l for l in bus.log().splitlines() if "pruned versions older than store.retention" in l), None)
    assert line is not None and "versions=1" in line, bus.log_tail()
    assert bus.metrics().value("threatbus_store_pruned_versions_total") == 1
    publisher = bus.publisher()
    subscriber = bus.subscriber("stix2/indicator", snapshot=90)
    ids = set()
    while recent["id"] not in ids:
        ids.add(subscriber.recv(timeout=15)[1]["id"])
    assert tbclient.fence(publisher, subscriber) == []
    assert old["id"] not in ids


def test_a_dropped_postgresql_connection_is_reopened_and_nothing_is_lost(bus_factory, pg_database):
    """PostgreSQL restarted, a proxy closed the connection: the store reopens its connection and
    writes the batch that failed, instead of losing every write until the bus restarts."""
    bus = store_bus(bus_factory, {"url": pg_database}, metrics=True)
    publisher = bus.publisher()
    database = pg_database.rsplit("/", 1)[1]

    def stored() -> int:
        done = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", "-d", database,
                               "-tAc", "SELECT count(*) FROM threatbus_versions"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return int(done.stdout.strip())

    def wait_stored(n: int):
        deadline = time.monotonic() + 15
        while stored() < n:
            assert time.monotonic() < deadline, f"{stored()} of {n} versions stored\n{bus.log_tail()}"
            time.sleep(0.1)

    first = [tbclient.make_indicator(f"10.77.0.{i}") for i in range(5)]
    for indicator in first:
        publisher.send("stix2/indicator", indicator)
    wait_stored(5)
    # Every connection of the bus to its database goes, as when the server restarts.
    psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
         f"WHERE datname = '{database}' AND pid <> pg_backend_pid()")
    second = [tbclient.make_indicator(f"10.77.1.{i}") for i in range(5)]
    for indicator in second:
        publisher.send("stix2/indicator", indicator)
    wait_stored(10)
    assert stored() == 10
    log = bus.log()
    assert "store: write failed; reopening the store" in log, bus.log_tail()
    assert "store: reopened after a failed write" in log, bus.log_tail()
    assert "these records are lost" not in log
    metrics = bus.metrics()
    assert metrics.value("threatbus_store_writes_total", outcome="lost") == 0
    assert metrics.value("threatbus_store_writes_total", outcome="current") == 10
