"""Fixtures for the Threat Bus black-box tests.

The bus under test is started as a subprocess:
  * ``THREATBUS_CMD``: a whole command line (e.g. ``/tmp/tbvenv-orig/bin/threatbus``), wins if set;
  * otherwise ``THREATBUS_BIN``: path of the Rust binary.
``-c <tmpdir>/config.yaml`` is appended in both cases. Neither set / missing -> the test fails.

``bus_factory(metrics=True)`` turns on the bus's metrics listener; ``Bus.metrics()`` scrapes it.
The Python original has no metrics: under ``THREATBUS_CMD`` the listener is not configured and
``Bus.metrics()`` returns None, so a test checks its counters only where there are some.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tbclient  # noqa: E402

HOST = "127.0.0.1"
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def pytest_report_header(config):
    path = os.environ.get("BROKER_PYTHONPATH", "").strip()
    if path:
        return f"real-Broker mode on: Zeek scenarios also run against Broker's bindings in {path}"
    return ("real-Broker mode off: set BROKER_PYTHONPATH to a directory holding Broker's Python "
            "bindings (import broker) to run the Zeek scenarios against a real Broker too")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "fixed_upstream_bug: behaviour the Rust port deliberately fixes; may fail against the Python original",
    )


# --------------------------------------------------------------------------- helpers


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (bind port 0, read, close)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_accepts(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _yaml_scalar(v) -> str:
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, dict)):
        return json.dumps(v)  # flow style, valid YAML
    return json.dumps(str(v))


def to_yaml(d: dict, indent: int = 0) -> str:
    lines = []
    pad = "  " * indent
    for k, v in d.items():
        if isinstance(v, dict) and v:
            lines.append(f"{pad}{k}:")
            lines.append(to_yaml(v, indent + 1))
        elif isinstance(v, dict):
            lines.append(f"{pad}{k}: {{}}")
        else:
            lines.append(f"{pad}{k}: {_yaml_scalar(v)}")
    return "\n".join(lines)


def deep_merge(base: dict, extra: dict) -> dict:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def default_config(manage: int, pub: int, sub: int) -> dict:
    return {
        "logging": {"console": True, "console_verbosity": "DEBUG", "file": False},
        "plugins": {
            "backbones": {"inmem": {}},
            "apps": {"zmq": {"host": HOST, "manage": manage, "pub": pub, "sub": sub}},
        },
    }


def serves_metrics() -> bool:
    """Whether the bus under test has the metrics listener: THREATBUS_BIN (ours) does,
    THREATBUS_CMD (meant for the Python original) is not assumed to."""
    return not os.environ.get("THREATBUS_CMD", "").strip()


def base_command() -> list[str]:
    cmd = os.environ.get("THREATBUS_CMD", "").strip()
    if cmd:
        argv = shlex.split(cmd)
        exe = argv[0]
        if not (os.path.isfile(exe) or shutil.which(exe)):
            pytest.fail(f"THREATBUS_CMD={cmd!r}: executable {exe!r} not found", pytrace=False)
        return argv
    binary = os.environ.get("THREATBUS_BIN", "").strip()
    if not binary:
        pytest.fail(
            "Neither THREATBUS_BIN (path of the threatbus binary) nor THREATBUS_CMD is set; "
            "e.g. THREATBUS_BIN=target/release/threatbus pytest tests/blackbox",
            pytrace=False,
        )
    if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
        pytest.fail(f"THREATBUS_BIN={binary!r} does not exist or is not executable", pytrace=False)
    return [os.path.abspath(binary)]


# --------------------------------------------------------------------------- the bus


class Bus:
    def __init__(self, workdir: Path, config: dict, manage_port: int, pub_port: int, sub_port: int,
                 env: dict | None = None, config_text: str | None = None, config_arg: str | None = None):
        self.workdir = workdir
        self.manage_port = manage_port
        self.pub_port = pub_port
        self.sub_port = sub_port
        self.config = config
        self.config_path = workdir / "config.yaml"
        self.log_path = workdir / "threatbus.log"
        self.config_path.write_text(config_text if config_text is not None else to_yaml(config) + "\n")
        child_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("THREATBUS_")}
        child_env["PYTHONUNBUFFERED"] = "1"
        child_env.setdefault("RUST_BACKTRACE", "1")
        child_env.update(env or {})
        self.env = child_env
        self.cmd = base_command() + ["-c", config_arg if config_arg is not None else str(self.config_path)]
        self._logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.cmd, cwd=str(workdir), stdout=self._logf, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=child_env,
        )
        self._subs: list = []
        self._pubs: list = []
        self.metrics_port: int | None = None  # set by bus_factory(metrics=True)

    # -- process
    def log(self) -> str:
        try:
            return ANSI_RE.sub("", self.log_path.read_bytes().decode("utf-8", "replace"))
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 20000) -> str:
        text = self.log()
        return text if len(text) <= n else "...\n" + text[-n:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, ports=None, timeout: float = 15):
        ports = ports if ports is not None else [self.manage_port, self.pub_port, self.sub_port]
        deadline = time.monotonic() + timeout
        pending = list(ports)
        while pending:
            if not self.alive():
                pytest.fail(
                    f"threatbus exited with code {self.proc.returncode} during start-up "
                    f"(cmd {self.cmd}).\n--- log ---\n{self.log_tail()}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(
                    f"threatbus did not accept connections on ports {pending} within {timeout}s "
                    f"(cmd {self.cmd}).\n--- log ---\n{self.log_tail()}", pytrace=False)
            if port_accepts(pending[0]):
                pending.pop(0)
            else:
                time.sleep(0.1)
        return self

    def wait_exit(self, timeout: float = 10):
        """Return the exit code, or None if still running after timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        for s in self._subs:
            with contextlib.suppress(Exception):
                s.close()
        for p in self._pubs:
            with contextlib.suppress(Exception):
                p.close()
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            if self.wait_exit(10) is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(10)
        self._logf.close()

    # -- metrics
    def metrics(self) -> tbclient.Samples | None:
        """A scrape of the bus's /metrics; None if the bus under test serves none (the Python
        original, see serves_metrics)."""
        if self.metrics_port is None:
            assert not serves_metrics(), "started without metrics=True"
            return None
        return tbclient.scrape(self.metrics_port)

    # -- clients
    def manage(self, obj_or_raw, timeout: float = 5):
        return tbclient.manage(self.manage_port, obj_or_raw, timeout=timeout)

    def subscriber(self, topic, snapshot=0, connect=True) -> tbclient.Subscriber:
        s = tbclient.Subscriber(self.manage_port, topic, snapshot=snapshot, connect=connect)
        self._subs.append(s)
        return s

    def spy(self, prefix: str = "", kinds=("indicator",)) -> tbclient.Subscriber:
        s = tbclient.Subscriber.spy(self.pub_port, prefix, kinds=kinds)
        self._subs.append(s)
        return s

    def publisher(self, settle: float = 0.3) -> tbclient.Publisher:
        p = tbclient.Publisher(self.sub_port, settle=settle)
        self._pubs.append(p)
        return p

    def sync(self, publisher, *subscribers, timeout: float = 20):
        tbclient.sync(publisher, subscribers, timeout=timeout)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def bus_factory(tmp_path, request):
    """bus_factory(extra_zmq_keys=None, extra_top_level=None, env=None, config=None,
    config_text=None, wait=True, wait_ports=None) -> Bus

    * extra_zmq_keys: merged into plugins.apps.zmq
    * extra_top_level: deep-merged into the whole config
    * config: replaces the generated config dict entirely (ports still allocated)
    * config_text: raw config file content (overrides everything)
    * env: extra environment variables for the bus process
    * config_arg: the value passed after -c instead of the written config file's path
    * wait: wait until the ports (default: manage, pub, sub; or wait_ports) accept TCP
    * metrics: listen for /metrics on a free port too (``bus.metrics_port``, ``bus.metrics()``),
      if the bus under test has metrics (serves_metrics)
    """
    buses: list[Bus] = []
    request.node._tb_buses = buses

    def make(extra_zmq_keys=None, extra_top_level=None, env=None, config=None, config_text=None,
             wait=True, wait_ports=None, ports=None, config_arg=None, metrics=False):
        manage, pub, sub = ports or free_ports(3)
        cfg = config if config is not None else default_config(manage, pub, sub)
        if extra_zmq_keys:
            cfg["plugins"]["apps"]["zmq"].update(extra_zmq_keys)
        if extra_top_level:
            deep_merge(cfg, extra_top_level)
        metrics_port = None
        if metrics and serves_metrics():
            metrics_port = next(p for p in free_ports(4) if p not in (manage, pub, sub))
            cfg["metrics"] = {"listen": metrics_port}
            wait_ports = list(wait_ports or (manage, pub, sub)) + [metrics_port]
        workdir = tmp_path / f"bus{len(buses)}"
        workdir.mkdir()
        b = Bus(workdir, cfg, manage, pub, sub, env=env, config_text=config_text, config_arg=config_arg)
        b.metrics_port = metrics_port
        buses.append(b)
        if wait:
            b.wait_ready(wait_ports)
        return b

    yield make
    for b in buses:
        b.stop()


@pytest.fixture
def bus(bus_factory) -> Bus:
    return bus_factory()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for i, b in enumerate(getattr(item, "_tb_buses", [])):
            status = "running" if b.alive() else f"exited {b.proc.returncode}"
            rep.sections.append((f"threatbus #{i} log ({status}, {b.log_path})", b.log_tail()))


@pytest.fixture(scope="module")
def module_bus(tmp_path_factory, request):
    """One bus shared by the tests of a module that do not interfere with each other."""
    tmp = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    manage, pub, sub = free_ports(3)
    b = Bus(tmp, default_config(manage, pub, sub), manage, pub, sub)
    try:
        b.wait_ready()
        yield b
    finally:
        b.stop()


@pytest.fixture
def shared_bus(module_bus, request):
    """The module's shared bus; its log is attached to this test's failure report."""
    request.node._tb_buses = [module_bus]
    assert module_bus.alive(), "bus died during an earlier test"
    return module_bus
