"""RabbitMQ backbone (spec §4): several bus processes on one exchange, against the real server.

Needs RabbitMQ on 127.0.0.1:5672 with the user guest/guest and ``rabbitmqctl`` (the tests create
a virtual host of their own and delete it afterwards). A test fails, never skips, when the server
is unreachable. The mixed-deployment test installs the Python Threat Bus into a virtual
environment of its own on first use (``THREATBUS_UPSTREAM_VENV``, default
``~/.cache/threatbus/upstream-venv``).

Run against the Rust binary only: these tests start their bus processes with ``THREATBUS_BIN``
(or ``THREATBUS_CMD``) and, for the mixed deployment, the Python original beside it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

import tbclient
from conftest import HOST, default_config, free_ports, port_accepts
from stixutil import assert_same_stix
from tbclient import make_indicator, make_sighting

AMQP_PORT = 5672
KINDS = ["stix2/indicator", "stix2/sighting"]

# The Python original and its RabbitMQ backbone, as on PyPI (spec: 2022.5.16). The libraries they
# pull in are pinned to versions known to work with it.
UPSTREAM_PACKAGES = [
    "threatbus==2022.5.16",
    "threatbus-rabbitmq==2022.5.16",
    "threatbus-zmq==2022.5.16",
    "threatbus-inmem==2022.5.16",
    "pika==1.4.4",
    "dynaconf==3.3.5",
]


# --------------------------------------------------------------------------- helpers


def rabbitmqctl(*args: str, timeout: float = 120) -> str:
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    if not os.path.exists(exe):
        pytest.fail("rabbitmqctl not found: these tests need a local RabbitMQ server", pytrace=False)
    done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}",
                    pytrace=False)
    return done.stdout


@pytest.fixture(scope="module")
def vhost():
    """A virtual host of this module's own, deleted afterwards with everything in it."""
    if not port_accepts(AMQP_PORT):
        why = (f"RabbitMQ is not reachable on {HOST}:{AMQP_PORT} (guest/guest): the RabbitMQ "
               "backbone tests need it; start it (`rabbitmq-server -detached`)")
        if os.environ.get("THREATBUS_REQUIRE_SERVICES") == "1":
            pytest.fail(why, pytrace=False)
        pytest.skip(why + ", or set THREATBUS_REQUIRE_SERVICES=1 to make a missing server fail the run")
    name = f"threatbus-blackbox-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield name
    subprocess.run([shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl", "delete_vhost", name],
                   capture_output=True, timeout=120)


def backbone(vhost: str, suffix: str, **extra) -> dict:
    """A ``plugins.backbones.rabbitmq`` section (upstream's keys, plus ``extra``)."""
    section = {
        "host": HOST, "port": AMQP_PORT, "username": "guest", "password": "guest",
        "vhost": vhost, "exchange_name": "threatbus",
        "queue": {"name_suffix": suffix, "name_join_symbol": ".", "durable": True, "lazy": True,
                  "auto_delete": False, "exclusive": False, "max_items": 0},
    }
    section.update(extra)
    return section


def rabbit_bus(bus_factory, section: dict, wait: bool = True):
    """A bus process with the RabbitMQ backbone (and no other) and the ZeroMQ app."""
    manage, pub, sub = free_ports(3)
    config = default_config(manage, pub, sub)
    config["plugins"]["backbones"] = {"rabbitmq": section}
    return bus_factory(config=config, ports=(manage, pub, sub), wait=wait)


def numbered(n: int) -> dict:
    return make_indicator(f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}", x_seq=n)


def sequence(items) -> list[int]:
    return [obj.get("x_seq") for _, obj in items]


def wait_for_log(bus, text: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while text not in bus.log():
        assert bus.alive(), f"bus exited ({bus.proc.returncode}) while waiting for {text!r}"
        assert time.monotonic() < deadline, f"{text!r} not logged within {timeout}s"
        time.sleep(0.1)


# --------------------------------------------------------------------------- two instances


# Upstream's one bus message per AMQP message, and batches (``batch_messages``).
BATCHING = pytest.mark.parametrize("batch_messages", [1, 50], ids=["single", "batched"])


@BATCHING
def test_two_processes_share_one_exchange(bus_factory, vhost, batch_messages):
    """Two bus processes with their own queues on one exchange: a stream published at either
    reaches the subscribers of both, once each, in order."""
    exchange = f"pair-{uuid.uuid4().hex[:6]}"
    a = rabbit_bus(bus_factory, backbone(vhost, "a", exchange_name=exchange,
                                         batch_messages=batch_messages))
    b = rabbit_bus(bus_factory, backbone(vhost, "b", exchange_name=exchange,
                                         batch_messages=batch_messages))
    at_a = a.subscriber(KINDS)
    at_b = b.subscriber("stix2/indicator")
    pub_a, pub_b = a.publisher(), b.publisher()
    # Probes until both subscribers receive from both publishers: both queues are bound.
    tbclient.sync(pub_a, [at_a, at_b])
    tbclient.sync(pub_b, [at_a, at_b])

    n = 500
    for i in range(1, n + 1):
        pub_a.send("stix2/indicator", numbered(i))
    expected = list(range(1, n + 1))
    assert sequence(at_a.recv_n(n, timeout=60)) == expected
    assert sequence(at_b.recv_n(n, timeout=60)) == expected

    for i in range(n + 1, n + 11):
        pub_b.send("stix2/indicator", numbered(i))
    expected = list(range(n + 1, n + 11))
    assert sequence(at_a.recv_n(10, timeout=30)) == expected
    assert sequence(at_b.recv_n(10, timeout=30)) == expected

    # Exactly once: nothing else arrived before a fence sent after the stream.
    assert tbclient.fence(pub_a, at_a) == []
    assert tbclient.fence(pub_a, at_b) == []


# --------------------------------------------------------------------------- broker restart


@BATCHING
def test_broker_restart_mid_stream_loses_nothing(bus_factory, vhost, batch_messages):
    """RabbitMQ is stopped and started while an app publishes a numbered stream at instance A:
    every message the bus accepted reaches the subscribers of A and B afterwards, in order, and
    none twice (resent messages are recognised by their message id; see docs/rabbitmq.md).

    The exchange is durable here, so that its bindings survive the restart: with upstream's
    non-durable exchange, B would miss what A publishes before B has bound its queue again."""
    exchange = f"restart-{uuid.uuid4().hex[:6]}"
    a = rabbit_bus(bus_factory, backbone(vhost, "a", exchange_name=exchange, exchange_durable=True,
                                         batch_messages=batch_messages))
    b = rabbit_bus(bus_factory, backbone(vhost, "b", exchange_name=exchange, exchange_durable=True,
                                         batch_messages=batch_messages))
    at_a, at_b = a.subscriber("stix2/indicator"), b.subscriber("stix2/indicator")
    pub = a.publisher()
    tbclient.sync(pub, [at_a, at_b])

    n = 1500
    sent = threading.Event()

    def publish():
        for i in range(1, n + 1):
            pub.send("stix2/indicator", numbered(i))
            time.sleep(0.002)
        sent.set()

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    time.sleep(0.8)
    try:
        rabbitmqctl("stop_app")
        time.sleep(2)
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
    assert sent.wait(60), "the publishing app did not finish"
    expected = list(range(1, n + 1))
    got_a = sequence(at_a.recv_n(n, timeout=90))
    got_b = sequence(at_b.recv_n(n, timeout=90))
    assert got_a == expected, f"A: missing {sorted(set(expected) - set(got_a))[:20]}"
    assert got_b == expected, f"B: missing {sorted(set(expected) - set(got_b))[:20]}"
    assert tbclient.fence(pub, at_a, timeout=30) == []
    assert tbclient.fence(pub, at_b, timeout=30) == []
    assert a.alive() and b.alive()
    # The outage was noticed and survived.
    assert "RabbitMQ publisher connected" in a.log()
    assert "lost its connection" in a.log()


# --------------------------------------------------------------------------- failures


def test_bus_keeps_running_while_rabbitmq_is_unreachable(bus_factory, vhost):
    """The apps work while the backbone retries; shutdown is clean and says what was lost."""
    closed_port = free_ports(1)[0]
    bus = rabbit_bus(bus_factory, backbone(vhost, "x", port=closed_port,
                                           reconnect={"min_delay": 0.1, "max_delay": 0.5}))
    sub = bus.subscriber("stix2/indicator")
    pub = bus.publisher()
    pub.send("stix2/indicator", make_indicator("6.6.6.6"))
    wait_for_log(bus, "RabbitMQ publisher cannot connect")
    assert bus.manage({"action": "heartbeat", "topic": sub.p2p})["status"] == "success"
    time.sleep(1)
    assert bus.alive()
    bus.signal(signal.SIGTERM)
    assert bus.wait_exit(20) == 0, bus.log_tail()
    assert "not confirmed" in bus.log(), bus.log_tail()


def test_mismatched_exchange_fails_the_bus_once_with_a_clear_error(bus_factory, vhost):
    """An exchange that exists with other flags: exit 1 with a message naming the exchange and
    the refusal, instead of upstream's endless reconnect loop."""
    exchange = f"mismatch-{uuid.uuid4().hex[:6]}"
    first = rabbit_bus(bus_factory, backbone(vhost, "first", exchange_name=exchange, exchange_durable=True))
    sub = first.subscriber("stix2/indicator")
    tbclient.sync(first.publisher(), [sub])  # the durable exchange exists now
    first.stop()

    second = rabbit_bus(bus_factory, backbone(vhost, "second", exchange_name=exchange), wait=False)
    code = second.wait_exit(30)
    log = second.log()
    assert code == 1, log
    assert "PRECONDITION_FAILED" in log, log
    assert f'"{exchange}"' in log, log
    # Not retried: no reconnect attempt was made.
    assert "cannot connect" not in log and "lost its connection" not in log, log


# --------------------------------------------------------------------------- mixed deployment


@pytest.fixture(scope="session")
def upstream_threatbus() -> str:
    """The Python Threat Bus with its RabbitMQ backbone, installed on first use."""
    venv = Path(os.environ.get("THREATBUS_UPSTREAM_VENV")
                or Path.home() / ".cache" / "threatbus" / "upstream-venv")
    exe = venv / "bin" / "threatbus"
    marker = venv / "threatbus-blackbox-packages.txt"
    wanted = "\n".join(UPSTREAM_PACKAGES) + "\n"
    if exe.exists() and marker.exists() and marker.read_text() == wanted:
        return str(exe)
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
              "--disable-pip-version-check", *UPSTREAM_PACKAGES]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.fail(f"installing the Python Threat Bus into {venv} failed: {' '.join(step)}\n"
                        f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}", pytrace=False)
    marker.write_text(wanted)
    return str(exe)


def test_mixed_deployment_with_the_python_threat_bus(bus_factory, vhost, upstream_threatbus, monkeypatch):
    """The Python Threat Bus (threatbus-rabbitmq 2022.5.16) and ours on one exchange exchange
    indicators and sightings in both directions."""
    exchange = f"mixed-{uuid.uuid4().hex[:6]}"
    ours = rabbit_bus(bus_factory, backbone(vhost, "rust", exchange_name=exchange))
    monkeypatch.setenv("THREATBUS_CMD", upstream_threatbus)
    python = rabbit_bus(bus_factory, backbone(vhost, "python", exchange_name=exchange))
    monkeypatch.delenv("THREATBUS_CMD")

    at_ours, at_python = ours.subscriber(KINDS), python.subscriber(KINDS)
    pub_ours, pub_python = ours.publisher(), python.publisher()
    tbclient.sync(pub_python, [at_ours, at_python], timeout=40)
    tbclient.sync(pub_ours, [at_ours, at_python], timeout=40)

    # Python -> ours (and back to Python's own subscriber, as upstream's fanout does).
    indicator = make_indicator("1.2.3.4", x_custom="from python")
    sighting = make_sighting(indicator["id"], x_threatbus_source="python")
    pub_python.send("stix2/indicator", indicator)
    pub_python.send("stix2/sighting", sighting)
    for receiver in (at_ours, at_python):
        items = tbclient.fence(pub_python, receiver, timeout=30)
        assert [kind for kind, _ in items] == ["indicator", "sighting"], items
        assert_same_stix(items[0][1], indicator)
        assert_same_stix(items[1][1], sighting)

    # Ours -> Python.
    indicator = make_indicator("5.6.7.8", x_custom="from rust")
    sighting = make_sighting(indicator["id"], x_threatbus_source="rust")
    pub_ours.send("stix2/indicator", indicator)
    pub_ours.send("stix2/sighting", sighting)
    for receiver in (at_python, at_ours):
        items = tbclient.fence(pub_ours, receiver, timeout=30)
        assert [kind for kind, _ in items] == ["indicator", "sighting"], items
        assert_same_stix(items[0][1], indicator)
        assert_same_stix(items[1][1], sighting)

    assert python.alive() and ours.alive()
    assert "error decoding message" not in python.log(), python.log_tail()
    assert "not a bus message" not in ours.log(), ours.log_tail()
