"""CIFv3 app (spec upstream.md §7): a small HTTP server written here plays CIF's REST API
(`GET /ping`, `POST /indicators` with a deflate body); a pyzmq app publishes indicators and the
fake CIF checks every request and records what it was sent."""

from __future__ import annotations

import collections
import contextlib
import json
import re
import signal
import socket
import ssl
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import tbclient
from conftest import HOST, default_config, free_ports
from tbclient import make_indicator

TOKEN = "CIF_TOKEN_0123"
TLS_DIR = Path(__file__).parent / "tls"
PROBE_VALUE = "127.0.0.1"  # what tbclient.sync's probe indicators carry
KEYS = ["indicator", "itype", "tlp", "group", "count", "tags", "confidence", "uuid", "lasttime"]


class FakeCif:
    """CIFv3's REST API on 127.0.0.1:<port>. Checks method, path and headers of every request
    and inflates the bodies; anything wrong is recorded in `problems` and answered 400."""

    def __init__(self, port: int, tls: bool = False):
        self.port = port
        self.tls = tls
        self.cond = threading.Condition()
        self.accepted: list[dict] = []  # bodies answered 201, in order (probes included)
        self.attempts: collections.Counter = collections.Counter()  # indicator -> POSTs
        self.pings = 0
        self.problems: list[str] = []
        self.planned: dict[str, list] = {}  # indicator -> [(status, json)] to answer first
        self.connections: set = set()  # open client connections, closed by stop()
        self.server = None

    def answer_first(self, value: str, *replies):
        """Answer the first POSTs of `value` with `replies` (status, JSON body), then 201."""
        self.planned[value] = list(replies)

    def start(self):
        self.server = ThreadingHTTPServer((HOST, self.port), _handler(self))
        self.server.daemon_threads = True
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(TLS_DIR / "bus.pem", TLS_DIR / "bus.key")
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        """Goes down like a server process: no more connections, open ones closed."""
        if self.server:
            self.server.shutdown()
            self.server.server_close()
        with self.cond:
            connections, self.connections = self.connections, set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def received(self) -> list[dict]:
        with self.cond:
            return [doc for doc in self.accepted if doc.get("indicator") != PROBE_VALUE]

    def wait_for(self, value: str, timeout: float = 20) -> list[dict]:
        """Everything CIF took (probes left out) once it has taken `value`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not any(doc.get("indicator") == value for doc in self.accepted):
                left = deadline - time.monotonic()
                assert left > 0, f"CIF never got {value!r}; got {self.accepted}, problems {self.problems}"
                self.cond.wait(left)
        return self.received()


def _handler(cif: FakeCif):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as CIF's web server does
        disable_nagle_algorithm = True  # headers and body are written apart

        def log_message(self, *args):
            pass

        def setup(self):
            super().setup()
            with cif.cond:
                cif.connections.add(self.connection)

        def finish(self):
            with cif.cond:
                cif.connections.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        def reply(self, status: int, document):
            body = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def common_problems(self) -> list[str]:
            problems = []
            expected = {"Authorization": f"Token token={TOKEN}", "Accept": "application/vnd.cif.v3+json"}
            for name, value in expected.items():
                if self.headers.get(name) != value:
                    problems.append(f"{self.command} {self.path}: {name} is {self.headers.get(name)!r}")
            if not (self.headers.get("User-Agent") or "").startswith("threatbus/"):
                problems.append(f"User-Agent is {self.headers.get('User-Agent')!r}")
            return problems

        def refuse(self, problems: list[str]):
            with cif.cond:
                cif.problems.extend(problems)
                cif.cond.notify_all()
            self.reply(400, {"message": "; ".join(problems)})

        def do_GET(self):
            problems = self.common_problems()
            if self.path != "/ping":
                problems.append(f"GET {self.path}")
            if problems:
                return self.refuse(problems)
            with cif.cond:
                cif.pings += 1
            self.reply(200, {"status": "success", "data": time.time()})

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            problems = self.common_problems()
            if self.path != "/indicators":
                problems.append(f"POST {self.path}")
            for name, value in {"Content-Type": "application/json", "Content-Encoding": "deflate"}.items():
                if self.headers.get(name) != value:
                    problems.append(f"POST: {name} is {self.headers.get(name)!r}")
            try:
                document = json.loads(zlib.decompress(raw))  # zlib format, as zlib.compress writes
            except Exception as err:  # noqa: BLE001 - reported as a problem
                problems.append(f"POST body is not zlib-compressed JSON: {err}")
                document = {}
            if problems:
                return self.refuse(problems)
            value = document.get("indicator")
            with cif.cond:
                cif.attempts[value] += 1
                planned = cif.planned.get(value)
                reply = planned.pop(0) if planned else None
                if reply is None:
                    cif.accepted.append(document)
                cif.cond.notify_all()
            if reply is not None:
                return self.reply(*reply)
            self.reply(201, {"message": "success", "data": 1})

    return Handler


def cif3_section(port: int, scheme: str = "http", **extra) -> dict:
    section = {
        "api": {"host": f"{scheme}://{HOST}:{port}", "token": TOKEN, "ssl": False},
        "tags": ["Threat Bus", "test"],
        "tlp": "GREEN",
        "group": "Partners",
        "confidence": 8,
        "retry": {"min_delay": 0.05, "max_delay": 0.5},
    }
    section.update(extra)
    return section


def start_bus(bus_factory, section: dict, wait: bool = True):
    manage, pub, sub = free_ports(3)
    config = default_config(manage, pub, sub)
    config["plugins"]["apps"]["cif3"] = section
    return bus_factory(config=config, ports=(manage, pub, sub), wait=wait)


@pytest.fixture
def cif_port():
    return free_ports(1)[0]


@pytest.fixture
def cif(cif_port):
    server = FakeCif(cif_port).start()
    yield server
    server.stop()


def synced_publisher(bus):
    """A ZeroMQ publisher whose connection to the bus is up (probes reached a ZeroMQ app)."""
    publisher = bus.publisher()
    bus.sync(publisher, bus.subscriber("stix2/indicator"))
    return publisher


def indicator(pattern: str, created: str = "2022-05-16T12:00:00.123Z", **extra) -> dict:
    return make_indicator(pattern=pattern, created=created, modified=created, **extra)


def wait_logged(bus, text: str, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while text not in bus.log():
        assert time.monotonic() < deadline, f"{text!r} not logged within {timeout}s"
        time.sleep(0.05)


def stop_counts(bus) -> dict[str, int]:
    """Stops the bus gracefully and returns the counts of its "CIFv3 app stopped" line."""
    bus.signal(signal.SIGTERM)
    assert bus.wait_exit(20) == 0
    lines = [line for line in bus.log().splitlines() if "CIFv3 app stopped" in line]
    assert len(lines) == 1, bus.log()
    return {key: int(n) for key, n in re.findall(r"(\w+)=(\d+)", lines[0])}


MD5 = "D41D8CD98F00B204E9800998ECF8427E"
SHA1 = "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709"
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SSDEEP = "3:AXGBicFlgVNhBGcL6wCrFQEv:AXGHsNhxLsr2C"


def test_point_iocs_on_supported_paths_reach_cif(bus_factory, cif):
    bus = start_bus(bus_factory, cif3_section(cif.port))
    publisher = synced_publisher(bus)
    supported = [  # pattern, value CIF gets, itype
        ("[ipv4-addr:value = '198.051.100.007']", "198.51.100.7", "ipv4"),
        ("[ipv6-addr:value = '2001:DB8::7']", "2001:db8::7", "ipv6"),
        ("[domain-name:value = 'Evil.Example.COM']", "evil.example.com", "fqdn"),
        ("[email-addr:value = 'Phish@Example.ORG']", "phish@example.org", "email"),
        ("[url:value = 'HTTP://Evil.Example.com/Login/?']", "http://Evil.Example.com/Login", "url"),
        (f"[file:hashes.'MD5' = '{MD5}']", MD5.lower(), "md5"),
        (f"[file:hashes.'SHA-1' = '{SHA1}']", SHA1.lower(), "sha1"),
        (f"[file:hashes.'SHA-256' = '{SHA256}']", SHA256, "sha256"),
    ]
    skipped = [
        indicator("[ipv4-addr:value = '6.6.6.6'] AND [domain-name:value = 'compound.example']"),
        indicator("[ipv4-addr:value != '6.6.6.6']"),
        indicator("[domain-name:value = 'removed.example.com']", x_threatbus_update="REMOVE"),
        indicator("[domain-name:value = 'edited.example.com']", x_threatbus_update="EDIT"),
        indicator("[mac-addr:value = 'de:ad:be:ef:00:01']"),
        indicator(f"[file:hashes.SSDEEP = '{SSDEEP}']"),
        indicator("[domain-name:value = '1.2.3.4']"),  # an address on the domain path
        indicator("[x-custom:value = 'ignored']"),
    ]
    for (pattern, _, _), other in zip(supported, skipped, strict=True):
        publisher.send("stix2/indicator", indicator(pattern))
        publisher.send("stix2/indicator", other)
    publisher.send("stix2/indicator", indicator("[domain-name:value = 'last.example.net']",
                                                created="2021-03-01T11:53:55Z"))
    got = cif.wait_for("last.example.net")
    assert not cif.problems, cif.problems
    assert [(doc["indicator"], doc["itype"]) for doc in got] == \
        [(value, itype) for _, value, itype in supported] + [("last.example.net", "fqdn")], got
    for doc in got:
        assert list(doc) == KEYS, doc
        assert doc["tlp"] == "green" and doc["group"] == "partners"
        assert doc["tags"] == ["Threat Bus", "test"]
        assert doc["confidence"] == 8.0 and isinstance(doc["confidence"], float)
        assert doc["count"] == 1
    assert [doc["lasttime"] for doc in got] == ["2022-05-16T12:00:00.123000Z"] * len(supported) + \
        ["2021-03-01T11:53:55.000000Z"]
    assert len({doc["uuid"] for doc in got}) == len(got)
    wait_logged(bus, "is not what CIF takes as fqdn")
    counts = stop_counts(bus)
    assert counts["sent"] == len(cif.accepted)  # probes included
    assert (counts["rejected"], counts["unsent"]) == (0, 0)
    assert counts["skipped_not_point_ioc"] == 2
    assert counts["skipped_update"] == 2
    assert counts["skipped_unsupported_path"] == 2  # mac-addr:value, x-custom:value
    assert counts["skipped_no_cif_type"] == 1
    assert counts["skipped_value_does_not_fit"] == 1


def test_cif_down_at_start_indicators_wait_until_it_answers(bus_factory, cif_port):
    bus = start_bus(bus_factory, cif3_section(cif_port))
    wait_logged(bus, "ping failed")
    assert "Connection refused" in bus.log() or "cannot connect" in bus.log()
    publisher = synced_publisher(bus)  # the ZeroMQ app works meanwhile
    for n in range(3):
        publisher.send("stix2/indicator", indicator(f"[domain-name:value = 'early-{n}.example.com']"))
    time.sleep(0.5)
    assert bus.alive()
    cif = FakeCif(cif_port).start()
    try:
        got = cif.wait_for("early-2.example.com")
        assert [doc["indicator"] for doc in got] == [f"early-{n}.example.com" for n in range(3)]
        assert not cif.problems, cif.problems
        assert cif.pings >= 1
        wait_logged(bus, "CIF answers")
    finally:
        cif.stop()


def test_cif_restarting_mid_stream_loses_nothing(bus_factory, cif_port):
    cif = FakeCif(cif_port).start()
    bus = start_bus(bus_factory, cif3_section(cif_port))
    publisher = synced_publisher(bus)
    publisher.send("stix2/indicator", indicator("[domain-name:value = 'before.example.com']"))
    assert [doc["indicator"] for doc in cif.wait_for("before.example.com")] == ["before.example.com"]
    cif.stop()  # the kept-alive connection goes with it
    for n in range(3):
        publisher.send("stix2/indicator", indicator(f"[domain-name:value = 'during-{n}.example.com']"))
    wait_logged(bus, "submitting an indicator failed; retrying it")
    cif = FakeCif(cif_port).start()
    try:
        got = cif.wait_for("during-2.example.com")
        assert [doc["indicator"] for doc in got] == [f"during-{n}.example.com" for n in range(3)]
        assert not cif.problems, cif.problems
        wait_logged(bus, "CIF takes indicators again")
    finally:
        cif.stop()


def test_a_cif_outage_does_not_hold_up_the_shutdown(bus_factory, cif_port):
    bus = start_bus(bus_factory, cif3_section(cif_port))
    wait_logged(bus, "ping failed")
    receiver = bus.subscriber("stix2/indicator")
    publisher = bus.publisher()
    bus.sync(publisher, receiver)
    for n in range(3):
        publisher.send("stix2/indicator", indicator(f"[domain-name:value = 'queued-{n}.example.com']"))
    publisher.send("stix2/indicator", indicator("[mac-addr:value = 'de:ad:be:ef:00:01']"))
    assert len(tbclient.fence(publisher, receiver)) == 4  # routed to the CIF app's queue too
    started = time.monotonic()
    counts = stop_counts(bus)
    assert time.monotonic() - started < 5  # bus.shutdown_timeout is 10 s
    assert counts["sent"] == 0
    assert counts["unsent"] >= 3  # and the sync probes
    assert counts["skipped_unsupported_path"] == 1
    assert "CIF has not answered yet; queued indicators are not sent" in bus.log()


@pytest.mark.parametrize("status", [503, 429])
def test_a_busy_cif_gets_the_indicator_again(bus_factory, cif, status):
    bus = start_bus(bus_factory, cif3_section(cif.port))
    publisher = synced_publisher(bus)
    cif.answer_first("busy.example.com", (status, {"message": "system seems busy"}))
    publisher.send("stix2/indicator", indicator("[domain-name:value = 'busy.example.com']"))
    publisher.send("stix2/indicator", indicator("[domain-name:value = 'after.example.com']"))
    got = cif.wait_for("after.example.com")
    assert [doc["indicator"] for doc in got] == ["busy.example.com", "after.example.com"]
    assert cif.attempts["busy.example.com"] == 2
    assert not cif.problems, cif.problems
    wait_logged(bus, "retrying it")
    assert f"CIF answered {status}" in bus.log()


def test_a_rejected_indicator_is_logged_with_cifs_message_and_dropped(bus_factory, cif):
    bus = start_bus(bus_factory, cif3_section(cif.port))
    publisher = synced_publisher(bus)
    cif.answer_first("rejected.example.com", (422, {"message": "indicator is whitelisted"}))
    publisher.send("stix2/indicator", indicator("[domain-name:value = 'rejected.example.com']"))
    publisher.send("stix2/indicator", indicator("[domain-name:value = 'next.example.com']"))
    got = cif.wait_for("next.example.com")
    assert [doc["indicator"] for doc in got] == ["next.example.com"]
    assert cif.attempts["rejected.example.com"] == 1  # not sent again
    wait_logged(bus, "CIF rejected an indicator")
    rejection = next(line for line in bus.log().splitlines() if "CIF rejected" in line)
    assert "indicator is whitelisted" in rejection and "422" in rejection, rejection
    counts = stop_counts(bus)
    assert counts["rejected"] == 1 and counts["unsent"] == 0


def test_https_with_a_configured_ca(bus_factory, cif_port):
    cif = FakeCif(cif_port, tls=True).start()
    try:
        api = {"host": f"https://localhost:{cif_port}", "token": TOKEN, "ssl": True,
               "ca_file": str(TLS_DIR / "ca.pem")}
        bus = start_bus(bus_factory, cif3_section(cif_port, api=api))
        publisher = synced_publisher(bus)
        publisher.send("stix2/indicator", indicator("[domain-name:value = 'tls.example.com']"))
        assert [doc["indicator"] for doc in cif.wait_for("tls.example.com")] == ["tls.example.com"]
        assert not cif.problems, cif.problems
    finally:
        cif.stop()


def test_an_untrusted_certificate_fails_the_ping_and_the_bus_runs_on(bus_factory, cif_port):
    cif = FakeCif(cif_port, tls=True).start()
    try:
        api = {"host": f"https://localhost:{cif_port}", "token": TOKEN, "ssl": True}
        bus = start_bus(bus_factory, cif3_section(cif_port, api=api))
        wait_logged(bus, "ping failed")
        ping_line = next(line for line in bus.log().splitlines() if "ping failed" in line)
        assert "TLS handshake" in ping_line and "certificate" in ping_line.lower(), ping_line
        synced_publisher(bus)
        assert bus.alive() and cif.pings == 0
    finally:
        cif.stop()


@pytest.mark.parametrize("change, key, text", [
    ({"tags": None}, "plugins.apps.cif3.tags", "required"),
    ({"api": {"host": "localhost:5000", "token": TOKEN, "ssl": False}}, "plugins.apps.cif3.api.host",
     '"localhost:5000"'),
    ({"api": {"host": "http://localhost:5000", "ssl": False}}, "plugins.apps.cif3.api.token", "required"),
    ({"confidence": 75}, "plugins.apps.cif3.confidence", "75"),
    ({"colour": "red"}, "plugins.apps.cif3.colour", "unknown field"),
    ({"api": {"host": "https://localhost:5000", "token": TOKEN, "ssl": True, "ca_file": "/nonexistent/ca.pem"}},
     "plugins.apps.cif3.api.ca_file", "/nonexistent/ca.pem"),
])
def test_config_errors_name_the_key(bus_factory, change, key, text):
    section = cif3_section(1)
    for name, value in change.items():
        if value is None:
            del section[name]
        else:
            section[name] = value
    bus = start_bus(bus_factory, section, wait=False)
    assert bus.wait_exit(15) == 1
    line = next((line for line in bus.log().splitlines() if key in line), "")
    assert text in line, bus.log()
