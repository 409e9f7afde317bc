"""The operator tools `threatbus publish` and `threatbus tail` (docs/tools.md), run as
subprocesses against a running bus and checked with pyzmq apps.

The tools are part of the Rust binary: they run from THREATBUS_BIN (also when THREATBUS_CMD
starts another bus, e.g. the Python one, under test).
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
import uuid

import pytest

import tbclient
from conftest import free_ports, to_yaml
from stixutil import assert_same_json
from tbclient import make_indicator, make_sighting

DAY = 86400
AGAINST_OUR_BUS = not os.environ.get("THREATBUS_CMD", "").strip()


@pytest.fixture
def tool(tmp_path):
    """tool(*args, input=None, timeout=30) -> CompletedProcess of the threatbus binary."""
    binary = os.environ.get("THREATBUS_BIN", "").strip()
    if not binary:
        pytest.skip("the tools are part of the Rust binary: set THREATBUS_BIN")
    binary = os.path.abspath(binary)

    def run(*args, input: str | None = None, timeout: float = 30):
        return subprocess.run(
            [binary, *map(str, args)], input=input, capture_output=True, text=True,
            timeout=timeout, cwd=tmp_path, env=tool_env(),
        )

    run.binary = binary
    run.cwd = tmp_path
    return run


def tool_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("THREATBUS_")}
    env["RUST_BACKTRACE"] = "1"
    return env


class Tail:
    """A running `threatbus tail`; stdout lines and stderr lines are collected by threads."""

    def __init__(self, tool, *args):
        self.proc = subprocess.Popen(
            [tool.binary, "tail", *map(str, args)], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=tool.cwd, env=tool_env(),
        )
        self.out: queue.Queue = queue.Queue()
        self.err: list[str] = []
        self._err_lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.out.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self._on_err), daemon=True).start()

    @staticmethod
    def _pump(stream, sink):
        for raw in iter(stream.readline, b""):
            sink(raw.decode("utf-8", "replace"))
        stream.close()

    def _on_err(self, line: str):
        self.err.append(line)
        self._err_lines.put(line)

    def stderr(self) -> str:
        return "".join(self.err)

    def wait_subscribed(self, timeout: float = 15) -> str:
        """Waits for the status line; returns the p2p topic."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._err_lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"tail did not subscribe within {timeout}s; stderr: {self.stderr()!r}") from None
            match = re.search(r"subscribed to .* as ([a-z]{32}) ", line)
            if match:
                return match.group(1)

    def lines(self, n: int, timeout: float = 15) -> list[str]:
        deadline = time.monotonic() + timeout
        got = []
        while len(got) < n:
            try:
                got.append(self.out.get(timeout=max(deadline - time.monotonic(), 0.01)))
            except queue.Empty:
                raise AssertionError(f"tail printed {len(got)} of {n} lines within {timeout}s: {got!r:.2000}; "
                                     f"stderr: {self.stderr()!r}") from None
        return got

    def wait(self, timeout: float = 15) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"tail still running after {timeout}s; stderr: {self.stderr()!r}") from None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def tails(tool):
    started: list[Tail] = []

    def start(*args) -> Tail:
        t = Tail(tool, *args)
        started.append(t)
        return t

    yield start
    for t in started:
        t.kill()


def ndjson(objects) -> str:
    return "".join(json.dumps(o) + "\n" for o in objects)


def by_id(objects) -> dict:
    return {o["id"]: o for o in objects}


def synced_subscriber(bus, topic="stix2"):
    sub = bus.subscriber(topic)
    bus.sync(bus.publisher(), sub)
    return sub


def wait_for_log(bus, pattern: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, bus.log())
        if match:
            return match.group(0)
        time.sleep(0.1)
    raise AssertionError(f"bus log has no {pattern!r} within {timeout}s")


# --------------------------------------------------------------------------- publish


def test_publish_ndjson_file_and_bundle_reach_a_subscriber(bus, tool, tmp_path):
    sub = synced_subscriber(bus)
    indicators = [make_indicator(f"10.0.0.{i}") for i in range(1, 4)]
    path = tmp_path / "indicators.ndjson"
    path.write_text(ndjson(indicators))
    done = tool("publish", "--sub", bus.sub_port, path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert (f"published 3 objects (3 indicators, 0 sightings) to tcp://127.0.0.1:{bus.sub_port}"
            in done.stderr), done.stderr

    indicator = make_indicator("10.0.0.9")
    sighting = make_sighting(indicator["id"])
    bundle = {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": [indicator, sighting]}
    done = tool("publish", "--sub", bus.sub_port, "-", input=json.dumps(bundle, indent=2))
    assert done.returncode == 0, done.stderr
    assert "published 2 objects (1 indicators, 1 sightings)" in done.stderr, done.stderr

    sent = indicators + [indicator, sighting]
    got = sub.recv_n(len(sent))
    sub.expect_nothing(1)
    received = by_id(obj for _, obj in got)
    assert set(received) == {o["id"] for o in sent}
    for obj in sent:
        assert_same_json(received[obj["id"]], obj)
    # The frames went out on the topic of their type.
    assert sorted(suffix for suffix, _ in got) == ["indicator"] * 4 + ["sighting"]


def test_publish_concatenated_values_arrays_and_skipped_types(bus, tool):
    sub = synced_subscriber(bus)
    a, b, c = (make_indicator(f"10.0.1.{i}") for i in range(3))
    identity = {"type": "identity", "spec_version": "2.1", "id": f"identity--{uuid.uuid4()}",
                "created": a["created"], "modified": a["created"], "name": "ACME"}
    text = json.dumps(a) + json.dumps([b]) + "\n" + json.dumps(
        {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": [identity, c]}, indent=4)
    refused = tool("publish", "--sub", bus.sub_port, "-", input=text)
    assert refused.returncode == 1
    assert identity["id"] in refused.stderr and "--skip-other-types" in refused.stderr, refused.stderr
    sub.expect_nothing(1)

    done = tool("publish", "--sub", bus.sub_port, "--skip-other-types", "-", input=text)
    assert done.returncode == 0, done.stderr
    assert "published 3 objects" in done.stderr and "skipped 1" in done.stderr, done.stderr
    got = by_id(obj for _, obj in sub.recv_n(3))
    assert set(got) == {a["id"], b["id"], c["id"]}
    sub.expect_nothing(1)


def test_invalid_input_lists_every_problem_and_publishes_nothing(bus, tool, tmp_path):
    sub = synced_subscriber(bus)
    good = make_indicator("10.0.2.1")
    bad_pattern = make_indicator("10.0.2.2", pattern="[ipv4-addr:value = ")
    malware = {"type": "malware", "spec_version": "2.1", "id": f"malware--{uuid.uuid4()}",
               "created": good["created"], "modified": good["created"], "name": "x", "is_family": False}
    path = tmp_path / "mixed.ndjson"
    path.write_text(json.dumps(good) + "\nthis is not JSON\n" + json.dumps(malware) + "\n"
                    + json.dumps(bad_pattern) + "\n")
    done = tool("publish", "--sub", bus.sub_port, path)
    assert done.returncode == 1, done.stderr
    assert "3 problem(s)" in done.stderr and "nothing published" in done.stderr, done.stderr
    lines = [line.strip() for line in done.stderr.splitlines() if line.startswith("  ")]
    assert len(lines) == 3, done.stderr
    assert lines[0].startswith("line 2: not JSON"), lines
    assert lines[1].startswith(f"line 3, object 2 ({malware['id']}): "), lines
    assert lines[2].startswith(f"line 4, object 3 ({bad_pattern['id']}): ") and "pattern" in lines[2], lines
    sub.expect_nothing(2)

    # --dry-run validates without connecting anywhere.
    path.write_text(json.dumps(good))
    done = tool("publish", "--dry-run", "--sub", free_ports(1)[0], path)
    assert done.returncode == 0, done.stderr
    assert "1 objects (1 indicators, 0 sightings) valid" in done.stderr, done.stderr
    sub.expect_nothing(1)


# --------------------------------------------------------------------------- tail


def test_tail_prints_what_a_publisher_sends_and_unsubscribes(bus, tails):
    tail = tails("stix2/indicator", "--count", 3, "--manage", bus.manage_port)
    p2p = tail.wait_subscribed()
    # Sync the publisher with a sightings-only app: the probes are sightings, which the tail
    # (on stix2/indicator) does not get.
    pub = bus.publisher()
    bus.sync(pub, bus.subscriber("stix2/sighting"))
    pub.send("stix2/sighting", make_sighting())  # not on the tail's topic
    sent = [make_indicator(f"10.0.3.{i}", labels=["ü", f"n{i}"]) for i in range(3)]
    for obj in sent:
        pub.send("stix2/indicator", obj)
    lines = tail.lines(3)
    assert tail.wait() == 0, tail.stderr()
    for line, obj in zip(lines, sent):
        assert line.endswith("\n") and "\n" not in line[:-1]
        assert_same_json(json.loads(line), obj)
    assert tail.out.empty(), "more than --count lines"
    assert f"unsubscribed {p2p} after 3 object(s)" in tail.stderr(), tail.stderr()
    if AGAINST_OUR_BUS:
        wait_for_log(bus, rf'ZeroMQ app unsubscribed p2p_topic="{p2p}"')
    assert bus.manage({"action": "heartbeat", "topic": p2p}) == {"status": "error"}


def test_publish_then_tail_round_trip(bus, tool, tails, tmp_path):
    tail = tails("--manage", bus.manage_port, "--count", 4)  # topic stix2: both types
    tail.wait_subscribed()
    indicators = [make_indicator(f"10.0.4.{i}", x_custom={"i": i}) for i in range(3)]
    sent = indicators + [make_sighting(indicators[0]["id"])]
    path = tmp_path / "feed.json"
    path.write_text(json.dumps(sent, indent=2))
    done = tool("publish", "--sub", bus.sub_port, path)
    assert done.returncode == 0, done.stderr
    lines = tail.lines(4)
    assert tail.wait() == 0, tail.stderr()
    # One publisher, one subscriber: the order is kept.
    for line, obj in zip(lines, sent):
        assert_same_json(json.loads(line), obj)


def test_tail_with_snapshot_gets_the_snapshot_answer(bus, tails):
    # An app with history: it answers snapshot requests with envelopes (as in test_snapshot).
    app = bus.subscriber("stix2/indicator")
    app_pub = bus.publisher()
    bus.sync(app_pub, app)
    tail = tails("stix2/indicator", "--snapshot", 30, "--count", 1, "--manage", bus.manage_port)
    tail.wait_subscribed()
    suffix, request = app.recv(timeout=15)
    assert suffix == "snapshotrequest", (suffix, request)
    assert request["snapshot_type"] == 1 and request["snapshot"] == 30 * DAY, request
    body = make_indicator("10.0.5.1", labels=["from-snapshot"])
    app_pub.send("threatbus/snapshotenvelope", {
        "type": "snapshotenvelope", "snapshot_type": 1,
        "snapshot_id": request["snapshot_id"], "body": body,
    })
    (line,) = tail.lines(1)
    assert tail.wait() == 0, tail.stderr()
    assert_same_json(json.loads(line), body)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_tail_stops_on_a_signal_and_unsubscribes(bus, tails, sig):
    tail = tails("--manage", bus.manage_port)
    p2p = tail.wait_subscribed()
    tail.proc.send_signal(sig)
    assert tail.wait(10) == 0, tail.stderr()
    assert f"unsubscribed {p2p}" in tail.stderr(), tail.stderr()
    assert bus.manage({"action": "heartbeat", "topic": p2p}) == {"status": "error"}


def test_tail_idle_exits_and_heartbeats_keep_the_subscription(bus_factory, tails):
    # The bus forgets silent subscriptions after 2 s; the tail heartbeats (every 1 s here).
    bus = bus_factory(extra_zmq_keys={"subscription_timeout": 2})
    tail = tails("--manage", bus.manage_port, "--heartbeat", 1, "--idle", 4)
    p2p = tail.wait_subscribed()
    started = time.monotonic()
    assert tail.wait(15) == 0, tail.stderr()
    assert 3.5 < time.monotonic() - started < 10
    # Still known at the end: unsubscribed, not expired.
    assert f"unsubscribed {p2p} after 0 object(s)" in tail.stderr(), tail.stderr()
    if AGAINST_OUR_BUS:
        assert "expired" not in bus.log()


# --------------------------------------------------------------------------- no bus


def test_no_bus_listening_fails_within_the_timeout(tool, tmp_path):
    manage, sub = free_ports(2)
    path = tmp_path / "one.json"
    path.write_text(json.dumps(make_indicator("10.0.6.1")))
    for args, endpoint in [
        (("publish", "--sub", sub, "--timeout", 1, path), f"tcp://127.0.0.1:{sub}"),
        (("tail", "--manage", manage, "--timeout", 1), f"tcp://127.0.0.1:{manage}"),
    ]:
        started = time.monotonic()
        done = tool(*args, timeout=20)
        elapsed = time.monotonic() - started
        assert done.returncode != 0, (args, done.stderr)
        assert endpoint in done.stderr and "is a bus listening there?" in done.stderr, done.stderr
        assert done.stdout == ""
        assert elapsed < 4, (args, elapsed)


# --------------------------------------------------------------------------- -c config


def test_config_file_gives_host_and_ports(bus_factory, tool, tails, tmp_path):
    # The bus binds the wildcard address; the tools connect to the loopback address.
    bus = bus_factory(extra_zmq_keys={"host": "0.0.0.0"})
    tail = tails("-c", bus.config_path, "--count", 1)
    tail.wait_subscribed()
    obj = make_indicator("10.0.7.1")
    path = tmp_path / "one.json"
    path.write_text(json.dumps(obj))
    done = tool("-c", bus.config_path, "publish", path)
    assert done.returncode == 0, done.stderr
    assert f"to tcp://127.0.0.1:{bus.sub_port}" in done.stderr, done.stderr
    (line,) = tail.lines(1)
    assert tail.wait() == 0, tail.stderr()
    assert_same_json(json.loads(line), obj)

    # Explicit flags win over the file.
    wrong = tmp_path / "wrong-ports.yaml"
    wrong_ports = free_ports(3)
    wrong.write_text(to_yaml({"plugins": {"backbones": {"inmem": {}}, "apps": {"zmq": {
        "host": "127.0.0.1", "manage": wrong_ports[0], "pub": wrong_ports[1], "sub": wrong_ports[2]}}}}) + "\n")
    tail = tails("-c", wrong, "--manage", bus.manage_port, "--count", 1)
    tail.wait_subscribed()
    done = tool("-c", wrong, "publish", "--sub", bus.sub_port, path)
    assert done.returncode == 0, done.stderr
    (line,) = tail.lines(1)
    assert tail.wait() == 0, tail.stderr()

    # A bad config is reported, nothing runs.
    bad = tmp_path / "bad.yaml"
    bad.write_text("plugins:\n  backbones:\n    inmem: {}\n  apps:\n    zmq:\n      host: 127.0.0.1\n      manage: nope\n")
    for args in (("-c", bad, "tail"), ("-c", bad, "publish", path)):
        done = tool(*args, timeout=20)
        assert done.returncode == 1, done.stderr
        assert "invalid config" in done.stderr and "plugins.apps.zmq.manage" in done.stderr, done.stderr
    no_zmq = tmp_path / "no-zmq.yaml"
    no_zmq.write_text("plugins:\n  backbones:\n    inmem: {}\n  apps:\n    cif3:\n      api:\n        host: http://localhost\n        token: x\n")
    done = tool("-c", no_zmq, "tail", timeout=20)
    assert done.returncode == 1 and "plugins.apps.zmq" in done.stderr, done.stderr
