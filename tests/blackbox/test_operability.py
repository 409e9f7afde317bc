"""Operability: `threatbus check`, `--version`/`--help`, the metrics listener (`/metrics`,
`/health`, `/ready`), JSON logs and the periodic summary line, against the built binary.

The RabbitMQ readiness test needs the local RabbitMQ server (like test_rabbitmq.py) and stops
and starts its application with ``rabbitmqctl``; it fails, never skips, without it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
import urllib.error
import urllib.request

import pytest

import tbclient
from conftest import HOST, base_command, default_config, free_ports, to_yaml
from tbclient import http_get, make_indicator, make_sighting, scrape
from test_rabbitmq import backbone, rabbit_bus, rabbitmqctl, vhost, wait_for_log  # noqa: F401

# --------------------------------------------------------------------------- helpers


def run_cli(*args, cwd=None, env=None, timeout=30):
    child_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("THREATBUS_")}
    child_env.update(env or {})
    return subprocess.run(base_command() + list(args), capture_output=True, text=True, cwd=cwd,
                          env=child_env, timeout=timeout)


def delta(after: dict, before: dict, key: str) -> float:
    return after.get(key, 0) - before.get(key, 0)


def metrics_bus(bus_factory, zmq=None, **extra):
    manage, pub, sub, metrics = free_ports(4)
    config = default_config(manage, pub, sub)
    config["plugins"]["apps"]["zmq"].update(zmq or {})
    config["metrics"] = {"listen": metrics}
    for key, value in extra.items():
        config[key] = value
    bus = bus_factory(config=config, ports=(manage, pub, sub), wait_ports=[manage, pub, sub, metrics])
    return bus, metrics


def wait_until(predicate, timeout: float = 20, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        time.sleep(0.1)


# --------------------------------------------------------------------------- CLI basics


def test_version_and_help():
    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"threatbus \d+\.\d+\.\d+\n", done.stdout), done.stdout
    done = run_cli("--help")
    assert done.returncode == 0, done.stderr
    for word in ("check", "publish", "tail", "--config", "THREATBUS_"):
        assert word in done.stdout, f"{word!r} missing from --help:\n{done.stdout}"
    done = run_cli("check", "--help")
    assert done.returncode == 0 and "secrets masked" in done.stdout, done.stdout
    done = run_cli("frobnicate")
    assert done.returncode == 2 and "frobnicate" in done.stderr, done.stderr


# --------------------------------------------------------------------------- check


def write_config(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_check_prints_the_effective_config_with_secrets_masked(tmp_path):
    path = write_config(tmp_path, to_yaml({
        "logging": {"console_verbosity": "DEBUG"},
        "plugins": {
            "backbones": {"rabbitmq": {"host": "localhost", "port": 5672, "username": "guest",
                                       "password": "very-secret-password"}},
            "apps": {
                "zmq": {"host": HOST, "manage": 13370, "pub": 13371, "sub": 13372},
                "misp": {"zmq": {"host": "misp.example.org", "port": 50000},
                         "api": {"host": "https://misp.example.org", "ssl": True, "key": "MISPKEY123"}},
            },
        },
    }))
    done = run_cli("check", "-c", str(path),
                   env={"THREATBUS_PLUGINS__APPS__ZMQ__MANAGE": "14000",
                        "THREATBUS_PLUGINS__APPS__CIF3__API__TOKEN": "CIFTOKEN",
                        "THREATBUS_PLUGINS__APPS__CIF3__API__HOST": "https://cif.example.org",
                        "THREATBUS_PLUGINS__APPS__CIF3__API__SSL": "true",
                        "THREATBUS_PLUGINS__APPS__CIF3__TAGS": "[]"})
    assert done.returncode == 0, done.stderr
    effective = json.loads(done.stdout)
    # Environment overrides applied, core defaults filled in.
    assert effective["plugins"]["apps"]["zmq"]["manage"] == 14000
    assert effective["logging"] == {"console": True, "console_verbosity": "DEBUG", "file": False,
                                    "file_verbosity": "INFO", "filename": "threatbus.log",
                                    "format": "text", "summary_interval": 60}
    assert effective["bus"]["queue_capacity"] == 10000
    assert effective["bus"]["when_full"] == "drop_newest"
    assert effective["metrics"] == {"listen": None}
    # Plugin sections too, defaults filled in by each plugin.
    assert effective["plugins"]["apps"]["zmq"]["send_hwm"] == 1000
    assert effective["plugins"]["apps"]["zmq"]["subscription_timeout"] is None
    assert effective["plugins"]["apps"]["misp"]["api"]["page_size"] == 1000
    assert "kafka" not in effective["plugins"]["apps"]["misp"]
    assert effective["plugins"]["apps"]["cif3"]["group"] == "everyone"
    assert effective["plugins"]["apps"]["cif3"]["retry"] == {"min_delay": 0.5, "max_delay": 30}
    assert effective["plugins"]["backbones"]["rabbitmq"]["vhost"] == "/"
    assert effective["plugins"]["backbones"]["rabbitmq"]["tls"]["verify"] is True
    assert effective["plugins"]["backbones"]["rabbitmq"]["reconnect"] == {"min_delay": 0.5, "max_delay": 30}
    # Secrets masked, other values shown.
    rabbitmq = effective["plugins"]["backbones"]["rabbitmq"]
    assert rabbitmq["password"] == "********" and rabbitmq["username"] == "guest"
    assert effective["plugins"]["apps"]["misp"]["api"]["key"] == "********"
    assert effective["plugins"]["apps"]["cif3"]["api"]["token"] == "********"
    for secret in ("very-secret-password", "MISPKEY123", "CIFTOKEN"):
        assert secret not in done.stdout and secret not in done.stderr
    assert f"configuration is valid: {path}; backbone rabbitmq, apps zmq, misp, cif3" in done.stderr


def test_check_lists_every_error_and_fails(tmp_path):
    # Errors in the core sections and in the plugin sections are reported together (serde
    # stops at the first error inside one section).
    path = write_config(tmp_path, to_yaml({
        "logging": {"console_verbosity": "LOUD"},
        "bus": {"queue_capacity": 0},
        "metrics": {"listen": "example.org:80"},
        "plugins": {"backbones": {"inmem": {}}, "apps": {"zmq": {"host": HOST}}},
    }))
    done = run_cli("check", "-c", str(path))
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == "threatbus: invalid config:"
    assert lines[1].startswith("  logging.console_verbosity: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got \"LOUD\""), lines
    assert lines[2].startswith("  bus.queue_capacity:"), lines
    assert lines[3].startswith("  metrics.listen: expected a port (e.g. 9090) or an IP address with a port"), lines
    assert "example.org:80" in lines[3], lines
    assert lines[4].startswith("  plugins.apps.zmq.manage: required"), lines
    assert len(lines) == 5, lines
    # A start reports the same errors the same way.
    start = run_cli("-c", str(path))
    assert start.returncode == 1 and start.stderr == done.stderr, start.stderr

    # Plugin sections: every plugin's errors, each naming key and value.
    path = write_config(tmp_path, to_yaml({
        "plugins": {
            "backbones": {"rabbitmq": {"host": "localhost", "port": 99999, "username": "guest"}},
            "apps": {
                "zmq": {"host": HOST, "manage": "x", "pub": 13371, "sub": 13372},
                "misp": {"zmq": {"host": "misp", "port": 50000}, "kafka": {"topics": ["misp_event"]}},
                "nonsense": {},
            },
        },
    }))
    done = run_cli("check", "-c", str(path))
    assert done.returncode == 1
    errors = done.stderr.splitlines()[1:]
    joined = "\n".join(errors)
    assert any(e.startswith("  plugins.apps.zmq.manage:") and "\"x\"" in e for e in errors), joined
    assert any(e.startswith("  plugins.apps.misp") and "kafka" in e.lower() for e in errors), joined
    assert any(e.startswith("  plugins.apps.nonsense: unknown plugin \"nonsense\"; compiled-in apps: zmq, zeek, misp, cif3, taxii, taxii_feeds")
               for e in errors), joined
    assert any(e.startswith("  plugins.backbones.rabbitmq") and "99999" in e for e in errors), joined

    # A file that is not there, and one that is not YAML.
    done = run_cli("check", "-c", str(tmp_path / "missing.yaml"))
    assert done.returncode == 1 and "missing.yaml" in done.stderr, done.stderr
    path = write_config(tmp_path, "plugins: [unclosed\n")
    done = run_cli("check", "-c", str(path))
    assert done.returncode == 1 and "invalid YAML" in done.stderr, done.stderr


def test_check_without_a_file_checks_the_embedded_default(tmp_path):
    done = run_cli("check", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    effective = json.loads(done.stdout)
    assert effective["plugins"]["apps"]["zmq"]["manage"] == 13370
    assert "embedded default" in done.stderr


def test_check_binds_nothing(tmp_path):
    # The ports of a valid config stay free: check builds the plugins without starting them.
    manage, pub, sub, metrics = free_ports(4)
    config = default_config(manage, pub, sub)
    config["metrics"] = {"listen": metrics}
    path = write_config(tmp_path, to_yaml(config))
    import socket
    holders = []
    try:
        for port in (manage, pub, sub, metrics):
            s = socket.socket()
            s.bind((HOST, port))
            s.listen()
            holders.append(s)
        # Every port is taken: a start would fail, the check does not.
        done = run_cli("check", "-c", str(path))
        assert done.returncode == 0, done.stderr
    finally:
        for s in holders:
            s.close()


# --------------------------------------------------------------------------- metrics


def test_metrics_count_a_known_traffic_pattern(bus_factory):
    bus, port = metrics_bus(bus_factory)
    status, _, body = http_get(port, "/health")
    assert (status, body) == (200, "ok\n")
    wait_until(lambda: http_get(port, "/ready")[0] == 200, what="/ready 200")
    assert http_get(port, "/ready")[2] == "ready\n"

    indicators = bus.subscriber("stix2/indicator")
    everything = bus.subscriber("stix2")
    publisher = bus.publisher()
    bus.sync(publisher, indicators, everything)
    before = scrape(port)
    assert before['threatbus_subscribers{app="zmq"}'] == 2
    assert before['threatbus_ready{component="app:zmq"}'] == 1
    assert before['threatbus_ready{component="backbone:inmem"}'] == 1
    assert before['threatbus_build_info{version="0.1.0"}'] == 1
    assert 'threatbus_ready{component="service:metrics"}' not in before

    for n in range(7):
        publisher.send("stix2/indicator", make_indicator(f"192.0.2.{n}"))
    for _ in range(3):
        publisher.send("stix2/sighting", make_sighting())
    # (Frames on topics the bus does not subscribe to never reach it: ZeroMQ filters them.)
    for garbage in (b"stix2/indicator {not json", b"stix2/indicator {}", b"stix2/sighting []", b"stix2/indicator"):
        publisher.send_raw(garbage)
    assert len(indicators.recv_n(7)) == 7
    assert len(everything.recv_n(10)) == 10

    after = scrape(port)
    expect = {
        'threatbus_app_received_messages_total{app="zmq",kind="indicator"}': 7,
        'threatbus_app_received_messages_total{app="zmq",kind="sighting"}': 3,
        'threatbus_app_rejected_input_total{app="zmq"}': 4,
        'threatbus_backbone_sent_messages_total{backbone="inmem",kind="indicator"}': 7,
        'threatbus_backbone_sent_messages_total{backbone="inmem",kind="sighting"}': 3,
        'threatbus_backbone_received_messages_total{backbone="inmem",kind="indicator"}': 7,
        'threatbus_backbone_received_messages_total{backbone="inmem",kind="sighting"}': 3,
        # Two subscribers get the indicators, one the sightings.
        'threatbus_app_sent_messages_total{app="zmq",kind="indicator"}': 14,
        'threatbus_app_sent_messages_total{app="zmq",kind="sighting"}': 3,
        'threatbus_dropped_messages_total{plugin="zmq",reason="queue_full"}': 0,
    }
    for key, value in expect.items():
        assert delta(after, before, key) == value, f"{key}: {before.get(key)} -> {after.get(key)}"
    assert after['threatbus_subscriber_queued_messages{app="zmq"}'] == 0

    # Snapshot requests are counted by kind; an unsubscribe lowers the subscriber count.
    snapshotting = bus.subscriber("stix2/indicator", snapshot=3)
    wait_until(lambda: delta(scrape(port), before, 'threatbus_snapshot_requests_total{kind="indicator"}') == 1,
               what="one snapshot request counted")
    assert scrape(port)['threatbus_subscribers{app="zmq"}'] == 3
    snapshotting.unsubscribe()
    wait_until(lambda: scrape(port)['threatbus_subscribers{app="zmq"}'] == 2, what="subscriber count 2")

    # Unknown paths and other methods are refused; the listener survives garbage.
    assert http_get(port, "/nope")[0] == 404
    request = urllib.request.Request(f"http://{HOST}:{port}/metrics", method="POST", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 405
    import socket
    with socket.create_connection((HOST, port), timeout=5) as raw:
        raw.sendall(b"\x16\x03\x01\x00\xa5garbage that is not HTTP\r\n\r\n")
        raw.recv(1024)
    assert http_get(port, "/health")[0] == 200
    assert bus.alive()


def test_metrics_listener_is_off_by_default_and_a_taken_port_fails_clearly(bus_factory, tmp_path):
    bus = bus_factory()
    assert "metrics listener" not in bus.log()
    # A port that is taken: the bus exits with an error naming the key and the address.
    import socket
    holder = socket.socket()
    holder.bind((HOST, 0))
    holder.listen()
    taken = holder.getsockname()[1]
    try:
        manage, pub, sub = free_ports(3)
        config = default_config(manage, pub, sub)
        config["metrics"] = {"listen": taken}
        second = bus_factory(config=config, ports=(manage, pub, sub), wait=False)
        assert second.wait_exit(15) == 1, second.log_tail()
        assert f"metrics.listen: cannot listen on 127.0.0.1:{taken}" in second.log()
    finally:
        holder.close()


def test_ready_follows_the_rabbitmq_connection(bus_factory, vhost):  # noqa: F811
    manage, pub, sub, port = free_ports(4)
    config = default_config(manage, pub, sub)
    config["plugins"]["backbones"] = {"rabbitmq": backbone(vhost, "ready", reconnect={"min_delay": 0.2, "max_delay": 1})}
    config["metrics"] = {"listen": port}
    bus = bus_factory(config=config, ports=(manage, pub, sub), wait_ports=[manage, pub, sub, port])
    wait_until(lambda: http_get(port, "/ready")[0] == 200, what="/ready 200 while RabbitMQ is up")
    metrics = scrape(port)
    assert metrics["threatbus_rabbitmq_connected"] == 1
    assert metrics["threatbus_rabbitmq_connects_total"] == 2  # publisher and consumer

    sub_client = bus.subscriber("stix2/indicator")
    publisher = bus.publisher()
    bus.sync(publisher, sub_client)
    metrics = scrape(port)
    assert metrics["threatbus_rabbitmq_confirm_latency_seconds_count"] >= 1
    # What went through RabbitMQ comes back: once every sync probe is confirmed and received,
    # the two counts agree.
    assert metrics["threatbus_rabbitmq_confirmed_messages_total"] >= 1

    def balanced():
        m = scrape(port)
        return m["threatbus_rabbitmq_received_messages_total"] == m["threatbus_rabbitmq_confirmed_messages_total"]
    wait_until(balanced, what="as many messages received from RabbitMQ as confirmed")
    assert metrics["threatbus_rabbitmq_undecodable_messages_total"] == 0
    assert metrics['threatbus_dropped_messages_total{plugin="rabbitmq",reason="publish_buffer_full"}'] == 0

    rabbitmqctl("stop_app")
    try:
        wait_until(lambda: http_get(port, "/ready")[0] == 503, what="/ready 503 while RabbitMQ is down")
        status, _, body = http_get(port, "/ready")
        assert body == "not ready: backbone:rabbitmq\n", body
        assert scrape(port)["threatbus_rabbitmq_connected"] == 0
        assert http_get(port, "/health")[0] == 200
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
    wait_until(lambda: http_get(port, "/ready")[0] == 200, timeout=60, what="/ready 200 after RabbitMQ is back")
    metrics = scrape(port)
    assert metrics["threatbus_rabbitmq_connected"] == 1
    assert metrics["threatbus_rabbitmq_connects_total"] >= 4
    assert bus.alive()


# --------------------------------------------------------------------------- logging


def test_json_logs_and_the_periodic_summary(bus_factory):
    manage, pub, sub = free_ports(3)
    config = default_config(manage, pub, sub)
    config["logging"] = {"console": True, "console_verbosity": "INFO", "format": "json",
                         "summary_interval": 1}
    bus = bus_factory(config=config, ports=(manage, pub, sub))
    subscriber = bus.subscriber("stix2/indicator")
    publisher = bus.publisher()
    bus.sync(publisher, subscriber)
    # Let one summary interval pass after the sync probes, then send a known amount.
    time.sleep(2.2)
    mark = len(bus.log())
    for n in range(5):
        publisher.send("stix2/indicator", make_indicator(f"198.51.100.{n}"))
    assert len(subscriber.recv_n(5)) == 5

    def summaries():
        lines = [json.loads(line) for line in bus.log()[mark:].splitlines() if line.strip()]
        return [line for line in lines if line.get("message", "").startswith("traffic in the last 1 s")]
    wait_until(lambda: sum(s["indicators_in"] for s in summaries()) >= 5, what="a summary with 5 indicators")
    total = sum(s["indicators_in"] for s in summaries())
    assert total == 5, summaries()
    summary = summaries()[0]
    assert summary["level"] == "INFO"
    assert {"sightings_in", "delivered", "dropped", "rejected", "timestamp"} <= set(summary)

    # Every line the bus wrote is a JSON object with a level and a message.
    for line in bus.log().splitlines():
        if line.strip():
            record = json.loads(line)
            assert record["level"] in {"TRACE", "DEBUG", "INFO", "WARN", "ERROR"}, record
            assert "message" in record, record
    assert any(json.loads(line).get("message") == "ZeroMQ app subscribed"
               for line in bus.log().splitlines() if line.strip())


def test_the_example_config_checks_clean():
    # config.example.yaml is what docs/deploy.md tells operators to start from, and what the
    # systemd unit's ExecStartPre checks once installed.
    from pathlib import Path
    example = Path(__file__).resolve().parents[2] / "config.example.yaml"
    done = run_cli("check", "-c", str(example))
    assert done.returncode == 0, done.stderr
    effective = json.loads(done.stdout)
    assert effective["plugins"]["apps"]["zmq"]["manage"] == 13370
    assert "warning" not in done.stderr, done.stderr


def test_drops_and_queue_depth_of_a_stalled_app(bus_factory):
    from test_backpressure import CHUNK, send_chunks, stalled_app
    n = 20000
    capacity = 500
    bus, port = metrics_bus(bus_factory, zmq={"send_hwm": 200}, bus={"queue_capacity": capacity})
    stalled, stalled_sock = stalled_app(bus)
    active = bus.subscriber("stix2/indicator")
    publisher = bus.publisher()
    bus.sync(publisher, active)
    before = scrape(port)
    try:
        assert send_chunks(publisher, active, 0, n) == list(range(n))
        after = scrape(port)
    finally:
        stalled_sock.close()
    sent = delta(after, before, 'threatbus_app_sent_messages_total{app="zmq",kind="indicator"}')
    dropped = delta(after, before, 'threatbus_dropped_messages_total{plugin="zmq",reason="queue_full"}')
    # Every indicator went to both subscribers or was dropped for the stalled one.
    assert sent + dropped == 2 * n, (sent, dropped)
    assert dropped > 0
    # The stalled app's queue is full; the active one's is (nearly) empty.
    queued = after['threatbus_subscriber_queued_messages{app="zmq"}']
    assert capacity <= queued <= capacity + CHUNK, queued
    assert delta(after, before, 'threatbus_app_received_messages_total{app="zmq",kind="indicator"}') == n


def test_zeek_peers_and_subscriptions_in_the_metrics(bus_factory):
    from brokerpeer import Peer
    from test_zeek import subscribe
    manage, pub, sub, zeek, port = free_ports(5)
    config = default_config(manage, pub, sub)
    config["plugins"]["apps"]["zeek"] = {"host": HOST, "port": zeek}
    config["metrics"] = {"listen": port}
    bus = bus_factory(config=config, ports=(manage, pub, sub), wait_ports=[manage, pub, sub, zeek, port])
    wait_until(lambda: http_get(port, "/ready")[0] == 200, what="/ready with the Zeek app bound")
    assert scrape(port)['threatbus_ready{component="app:zeek"}'] == 1
    one, two = Peer(zeek, tls=True), Peer(zeek, tls=False)
    subscribe(one)
    wait_until(lambda: scrape(port)["threatbus_zeek_peers"] == 2, what="two Zeek peers")
    assert scrape(port)['threatbus_subscribers{app="zeek"}'] == 1
    one.close()
    wait_until(lambda: scrape(port)["threatbus_zeek_peers"] == 1, what="one Zeek peer left")
    wait_until(lambda: scrape(port).get('threatbus_subscribers{app="zeek"}') == 0,
               what="the leaving peer's subscription gone")
    two.close()
    wait_until(lambda: scrape(port)["threatbus_zeek_peers"] == 0, what="no Zeek peer")


def documented_metrics() -> list[str]:
    """Every metric name in docs/metrics.md's table."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    names = re.findall(r"^\| `(threatbus_[a-z_]+)`", doc, flags=re.M)
    assert len(names) >= 20, names
    return names


def test_every_documented_metric_is_served_and_the_text_is_valid(bus_factory, vhost, tmp_path):  # noqa: F811
    """With every part that has metrics of its own (RabbitMQ backbone, ZeroMQ, Zeek, TAXII and
    TAXII feeds apps, store),
    /metrics names every metric docs/metrics.md lists, with its HELP and TYPE lines, and the
    reference parser reads the whole text."""
    from prometheus_client.parser import text_string_to_metric_families

    manage, pub, sub, zeek, port, taxii = free_ports(6)
    config = default_config(manage, pub, sub)
    config["plugins"]["backbones"] = {"rabbitmq": backbone(vhost, "documented")}
    config["plugins"]["apps"]["zeek"] = {"host": HOST, "port": zeek}
    config["plugins"]["apps"]["taxii"] = {"port": taxii}
    # A feed following this bus's own TAXII server: its per-feed series render at start.
    config["plugins"]["apps"]["taxii_feeds"] = [{
        "name": "self", "url": f"http://{HOST}:{taxii}/threatbus/", "collection": "Indicators",
        "poll_interval": 3600,
    }]
    config["store"] = {"path": str(tmp_path / "store")}
    config["metrics"] = {"listen": port}
    bus = bus_factory(config=config, ports=(manage, pub, sub), wait_ports=[manage, pub, sub, zeek, port, taxii])
    # A TAXII request makes the labelled request counter render a sample.
    http_get(taxii, "/taxii2/")
    wait_until(lambda: http_get(port, "/ready")[0] == 200, what="/ready with RabbitMQ and Zeek up")
    status, _, text = http_get(port, "/metrics")
    assert status == 200
    families = list(text_string_to_metric_families(text))
    served = {line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE ")}
    helped = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}
    missing = [name for name in documented_metrics() if name not in served or name not in helped]
    assert missing == [], f"documented but not served: {missing}\n{bus.log_tail()}"
    undocumented = sorted(set(served) - set(documented_metrics()))
    assert undocumented == [], f"served but not in docs/metrics.md: {undocumented}"
    # Counters end in _total; every family the parser found is one the bus declared.
    assert all(name.endswith("_total") == (kind == "counter") for name, kind in served.items()), served
    assert len(families) == len(served), (len(families), len(served))
