#!/usr/bin/env python3
"""Careless and hostile clients against a running bus, at full size, with the figures printed.
The black-box tests (tests/blackbox/test_hostile.py, test_zeek.py) run the same probes with
smaller counts; this script measures.

Probes (each starts its own bus from --bin on free loopback ports):

* manage-flood: 50,000 management requests (garbage, oversized, valid subscribes, heartbeats
  for unknown topics) from 20 clients that send and vanish, while a normal client subscribes
  and unsubscribes; prints the normal client's subscribe latency during the flood, the bus's
  RSS, log bytes and the subscriptions left behind.
* unread-subscriptions: 2,000 subscribe requests whose clients never connect a SUB socket, then
  20,000 indicators: how many a normal subscriber receives, the drops, the RSS, and what the bus
  holds once the unread subscriptions are paused and expired.
* big-topics: 100 subscriptions of 60,000 topics each (limits raised to allow them), then the
  latency of a normal subscribe, next to the same latency before.
* zeek-peers: 100 Zeek peers holding 64 subscriptions each that never announce their p2p
  topics, then 20,000 indicators; prints the RSS and the memory budget during and after, once
  the peers left.
* zeek-log: 20 `Tenzir::subscribe` events with a 900 KB argument and 2,000 invalid sightings
  from one Zeek peer; prints the log bytes they caused.
* slowloris: 100 slowloris connections and 16 idle keep-alive connections on the metrics port;
  prints the latency of fresh /health, /ready and /metrics probes during the attack.

    .venv/bin/python scripts/attack.py --bin target/release/threatbus [--probe NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "blackbox"))

import brokerpeer  # noqa: E402
import tbclient  # noqa: E402
from conftest import HOST, default_config, free_ports, port_accepts, to_yaml  # noqa: E402
from test_hostile import Slowloris, keep_alive_holders, probe  # noqa: E402
from test_operability import scrape  # noqa: E402


class RunningBus:
    def __init__(self, binary: str, config: dict, workdir: Path, wait_ports):
        self.workdir = workdir
        config.setdefault("logging", {})["console_verbosity"] = "INFO"
        (workdir / "config.yaml").write_text(to_yaml(config))
        self.log_path = workdir / "threatbus.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, "-c", str(workdir / "config.yaml")], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not all(port_accepts(p) for p in wait_ports):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"the bus did not start; see {self.log_path}")
            time.sleep(0.05)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def log_bytes(self) -> int:
        return self.log_path.stat().st_size

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def metrics_bus(binary: str, workdir: Path, **zmq_keys):
    """A bus with the ZeroMQ app (and `zmq_keys`) and the metrics listener; its four ports."""
    ports = free_ports(4)
    config = default_config(*ports[:3])
    config["metrics"] = {"listen": ports[3]}
    config["plugins"]["apps"]["zmq"].update(zmq_keys)
    return RunningBus(binary, config, workdir, ports), ports


def ms(values) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"median {statistics.median(values) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {values[-1] * 1000:.1f} ms"


def timed_subscribe(manage: int) -> float:
    started = time.perf_counter()
    reply = tbclient.manage(manage, {"action": "subscribe", "topic": "stix2/indicator"}, timeout=30)
    took = time.perf_counter() - started
    assert reply["status"] == "success", reply
    tbclient.manage(manage, {"action": "unsubscribe", "topic": reply["topic"]}, timeout=30)
    return took


def manage_flood(binary: str, workdir: Path):
    bus, (manage, pub, sub, metrics) = metrics_bus(binary, workdir)
    rss_before, log_before = bus.rss_mb(), bus.log_bytes()
    kinds = [
        b"FOO",
        b"{" + b"\xff" * 2_000,
        json.dumps({"action": "subscribe", "topic": "x" * 200_000}).encode(),
        json.dumps({"action": "subscribe", "topic": [f"t{i}" for i in range(5_000)]}).encode(),
        json.dumps({"action": "subscribe", "topic": "stix2/indicator"}).encode(),
        json.dumps({"action": "heartbeat", "topic": "nosuchtopic" * 100}).encode(),
        json.dumps({"action": "what", "topic": "x"}).encode(),
    ]
    total, clients = 50_000, 20
    # Sockets that vanish still linger until their request is out: allow many at once.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    context = zmq.Context()
    context.set(zmq.MAX_SOCKETS, 60_000)

    def flood(offset: int):
        # Clients that never read their replies (REQ_RELAXED lets a REQ socket send again
        # without receiving) and vanish: each connection is dropped after 100 requests and a
        # new one is opened.
        sock = None
        for i in range(total // clients):
            if i % 100 == 0:
                if sock is not None:
                    sock.close(linger=1000)
                sock = context.socket(zmq.REQ)
                sock.setsockopt(zmq.REQ_RELAXED, 1)
                sock.connect(f"tcp://{HOST}:{manage}")
            sock.send(kinds[(offset + i) % len(kinds)])
        sock.close(linger=1000)

    threads = [threading.Thread(target=flood, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    latencies, timeouts = [], 0
    while any(t.is_alive() for t in threads):
        try:
            latencies.append(timed_subscribe(manage))
        except tbclient.ManageTimeout:
            timeouts += 1
        time.sleep(0.05)
    for t in threads:
        t.join()
    flood_seconds = time.perf_counter() - started
    time.sleep(2)
    left = scrape(metrics).get('threatbus_subscribers{app="zmq"}', 0)
    print(f"manage-flood: {total} requests from {clients} vanishing clients in {flood_seconds:.1f} s")
    print(f"  normal subscribes during the flood: {len(latencies)} answered ({ms(latencies)}), {timeouts} timed out")
    print(f"  RSS {rss_before:.0f} -> {bus.rss_mb():.0f} MB; log +{(bus.log_bytes() - log_before) / 1024:.0f} KiB; "
          f"subscriptions left behind: {left:.0f}")
    bus.stop()


def unread_subscriptions(binary: str, workdir: Path):
    bus, (manage, pub, sub, metrics) = metrics_bus(binary, workdir, max_subscriptions=4_000,
                                                  listener_timeout=30)
    rss_before = bus.rss_mb()
    started = time.perf_counter()
    for _ in range(2_000):
        assert tbclient.manage(manage, {"action": "subscribe", "topic": "stix2/indicator"})["status"] == "success"
    subscribing = time.perf_counter() - started
    normal = tbclient.Subscriber(manage, "stix2/indicator")
    publisher = tbclient.Publisher(sub)
    tbclient.sync(publisher, [normal])
    time.sleep(6)  # the unread ones are paused after 5 s
    count = 20_000
    sent = [tbclient.make_indicator(f"10.2.{i // 256}.{i % 256}") for i in range(count)]
    started = time.perf_counter()
    for indicator in sent:
        publisher.send("stix2/indicator", indicator)
    try:
        got = len(normal.recv_n(count, timeout=300))
    except tbclient.RecvTimeout as err:
        got = int(str(err).split("got only ")[1].split()[0])
    took = time.perf_counter() - started
    values = scrape(metrics)
    drops = sum(v for k, v in values.items() if k.startswith("threatbus_dropped_messages_total"))
    rss_loaded = bus.rss_mb()
    time.sleep(32)  # listener_timeout: the unread subscriptions are removed
    values = scrape(metrics)
    print(f"unread-subscriptions: 2,000 subscriptions without a SUB socket (subscribed in {subscribing:.1f} s), then {count} indicators")
    print(f"  the normal subscriber received {got} of {count} in {took:.1f} s; drops {drops:.0f}; "
          f"RSS {rss_before:.0f} -> {rss_loaded:.0f} MB")
    left = values.get('threatbus_subscribers{app="zmq"}', 0)
    expired = values.get('threatbus_zmq_expired_subscriptions_total{reason="no_listener"}', 0)
    used = values.get("threatbus_memory_budget_used_bytes", 0) / 1024
    print(f"  after listener_timeout: {left:.0f} subscriptions left, {expired:.0f} expired, "
          f"RSS {bus.rss_mb():.0f} MB, budget used {used:.0f} KiB")
    bus.stop()


def big_topics(binary: str, workdir: Path):
    manage, pub, sub = free_ports(3)
    config = default_config(manage, pub, sub)
    config["plugins"]["apps"]["zmq"].update({"max_topics_per_request": 60_000, "max_request_size": 4 << 20,
                                             "max_message_size": 4 << 20})
    bus = RunningBus(binary, config, workdir, [manage, pub, sub])
    before = [timed_subscribe(manage) for _ in range(50)]
    topics = [f"topic/{i:06d}" for i in range(60_000)]
    started = time.perf_counter()
    for _ in range(100):
        reply = tbclient.manage(manage, {"action": "subscribe", "topic": topics}, timeout=120)
        assert reply["status"] == "success", reply
    held = time.perf_counter() - started
    after = [timed_subscribe(manage) for _ in range(50)]
    print(f"big-topics: 100 subscriptions of 60,000 topics took {held:.1f} s; RSS {bus.rss_mb():.0f} MB")
    print(f"  a normal subscribe + unsubscribe before: {ms(before)}")
    print(f"  the same with 6,000,000 topics held:    {ms(after)}")
    bus.stop()


def zeek_peers(binary: str, workdir: Path):
    manage, pub, sub, zeek_port, metrics = free_ports(5)
    config = default_config(manage, pub, sub)
    config["metrics"] = {"listen": metrics}
    config["plugins"]["apps"]["zeek"] = {"host": HOST, "port": zeek_port, "p2p_timeout": 60}
    bus = RunningBus(binary, config, workdir, [manage, pub, sub, zeek_port, metrics])
    rss_before = bus.rss_mb()
    peers = []
    for _ in range(100):
        zeek = brokerpeer.Peer(zeek_port, tls=False)
        for _ in range(64):
            zeek.publish("threatbus/manage", brokerpeer.event("Tenzir::subscribe", brokerpeer.s("stix2/indicator"), ("timespan", 0)))
        peers.append(zeek)
    publisher = tbclient.Publisher(sub)
    normal = tbclient.Subscriber(manage, "stix2/indicator")
    tbclient.sync(publisher, [normal])
    count = 20_000
    for i in range(count):
        publisher.send("stix2/indicator", tbclient.make_indicator(f"10.3.{i // 256}.{i % 256}"))
    got = len(normal.recv_n(count, timeout=300))
    values = scrape(metrics)
    held = values.get("threatbus_memory_budget_used_bytes", 0) / (1 << 20)
    rss_loaded = bus.rss_mb()
    subscribers = values.get('threatbus_subscribers{app="zeek"}', 0)
    for zeek in peers:
        zeek.close()
    time.sleep(3)
    values = scrape(metrics)
    print(f"zeek-peers: 100 peers x 64 subscriptions without their p2p topics ({subscribers:.0f} subscriptions), then {count} indicators")
    print(f"  normal subscriber received {got} of {count}; budget used {held:.1f} MiB of "
          f"{values['threatbus_memory_budget_bytes'] / (1 << 20):.0f}; RSS {rss_before:.0f} -> {rss_loaded:.0f} MB")
    print(f"  after the peers left: {values.get('threatbus_memory_budget_used_bytes', 0) / 1024:.0f} KiB charged, "
          f"RSS {bus.rss_mb():.0f} MB")
    bus.stop()


def zeek_log(binary: str, workdir: Path):
    manage, pub, sub, zeek_port = free_ports(4)
    config = default_config(manage, pub, sub)
    config["plugins"]["apps"]["zeek"] = {"host": HOST, "port": zeek_port}
    bus = RunningBus(binary, config, workdir, [manage, pub, sub, zeek_port])
    time.sleep(0.5)
    log_before = bus.log_bytes()
    zeek = brokerpeer.Peer(zeek_port)
    huge = "x" * 900_000
    for _ in range(20):
        zeek.publish("threatbus/manage", brokerpeer.event("Tenzir::subscribe", brokerpeer.s(huge), ("timespan", 0)))
    for _ in range(2_000):
        zeek.publish("stix2/sighting", brokerpeer.event("Tenzir::sighting", ("timestamp", 1), brokerpeer.s("bad"), ("table", [])))
    zeek.ping(b"done")
    zeek.wait_pong(b"done")
    time.sleep(0.5)
    text = bus.log_path.read_text(errors="replace")
    print(f"zeek-log: 20 subscribes of 900 KB and 2,000 invalid sightings: log +{(bus.log_bytes() - log_before) / 1024:.1f} KiB, "
          f"{text.count('invalid sighting from Zeek')} sighting warnings, RSS {bus.rss_mb():.0f} MB")
    zeek.close()
    bus.stop()


def slowloris(binary: str, workdir: Path):
    bus, (_, _, _, metrics) = metrics_bus(binary, workdir)
    holders = keep_alive_holders(metrics, 16)
    attack = Slowloris(metrics, 100)
    time.sleep(2)
    latencies, failures = [], 0
    for _ in range(30):
        for path in ("/health", "/ready", "/metrics"):
            try:
                status, took = probe(metrics, path, timeout=5)
                if status == 200:
                    latencies.append(took)
                else:
                    failures += 1
            except OSError:
                failures += 1
        time.sleep(0.2)
    attack.close()
    for conn in holders:
        conn.close()
    print(f"slowloris: 100 slowloris + 16 keep-alive holders: {len(latencies)} probes answered ({ms(latencies)}), "
          f"{failures} failed")
    bus.stop()


PROBES = {"manage-flood": manage_flood, "unread-subscriptions": unread_subscriptions, "zeek-peers": zeek_peers, "big-topics": big_topics, "zeek-log": zeek_log, "slowloris": slowloris}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.environ.get("THREATBUS_BIN", "target/release/threatbus"))
    parser.add_argument("--probe", action="append", choices=list(PROBES),
                        help="run only this probe (repeatable); default: all")
    args = parser.parse_args()
    for name in args.probe or PROBES:
        with tempfile.TemporaryDirectory(prefix=f"tb-{name}-") as tmp:
            PROBES[name](args.bin, Path(tmp))


if __name__ == "__main__":
    main()
