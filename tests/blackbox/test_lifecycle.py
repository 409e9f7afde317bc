"""Process lifecycle: signals, start-up failures, configuration (spec §1.6, §1.8)."""

import signal
import socket
import time

import pytest

import conftest
import tbclient
from tbclient import make_indicator

HOST = "127.0.0.1"


def exited(bus, timeout):
    rc = bus.wait_exit(timeout)
    assert rc is not None, f"threatbus still running after {timeout}s\n--- log ---\n{bus.log_tail(3000)}"
    return rc


def with_traffic(bus):
    sub = bus.subscriber(["stix2/indicator", "stix2/sighting"])
    pub = bus.publisher()
    bus.sync(pub, sub)
    ind = make_indicator("6.6.6.6")
    pub.send("stix2/indicator", ind)
    assert sub.recv()[1]["id"] == ind["id"]
    return sub, pub


@pytest.mark.fixed_upstream_bug
def test_sigterm_exits_zero(bus):
    bus.signal(signal.SIGTERM)
    rc = exited(bus, 10)
    assert rc == 0, f"exit code {rc} after SIGTERM\n{bus.log_tail(3000)}"


@pytest.mark.fixed_upstream_bug
def test_sigterm_with_connected_clients_exits_zero(bus):
    with_traffic(bus)
    bus.subscriber("stix2/sighting")
    bus.signal(signal.SIGTERM)
    rc = exited(bus, 10)
    assert rc == 0, f"exit code {rc} after SIGTERM\n{bus.log_tail(3000)}"


def test_sigint_exits_zero(bus):
    bus.signal(signal.SIGINT)
    rc = exited(bus, 15)
    assert rc == 0, f"exit code {rc} after SIGINT\n{bus.log_tail(3000)}"


@pytest.mark.fixed_upstream_bug
def test_sigint_with_connected_clients_exits_zero(bus):
    """Upstream ignores SIGINT now and then (4 of 18 runs here) once clients are connected --
    probably the signal lands on a libzmq I/O thread while the main thread blocks in a join,
    so the Python-level handler never runs."""
    with_traffic(bus)
    bus.subscriber("stix2/indicator", snapshot=1)
    bus.signal(signal.SIGINT)
    rc = exited(bus, 15)
    assert rc == 0, f"exit code {rc} after SIGINT\n{bus.log_tail(3000)}"


def test_ports_are_released_after_shutdown(bus_factory):
    ports = conftest.free_ports(3)
    first = bus_factory(ports=ports)
    first.signal(signal.SIGINT)
    assert exited(first, 15) == 0
    second = bus_factory(ports=ports)  # same ports bind again
    assert second.manage({"action": "FOO"}) == {"status": "unknown request"}


@pytest.mark.fixed_upstream_bug
@pytest.mark.parametrize("which", ["manage", "pub", "sub"])
def test_port_in_use_fails_fast(bus_factory, which):
    ports = dict(zip(("manage", "pub", "sub"), conftest.free_ports(3)))
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        blocker.bind((HOST, ports[which]))
        blocker.listen(1)
        b = bus_factory(ports=(ports["manage"], ports["pub"], ports["sub"]), wait=False)
        rc = exited(b, 10)
        assert rc != 0, f"exit code 0 although port {ports[which]} was in use\n{b.log_tail(3000)}"
        assert str(ports[which]) in b.log(), f"no message naming port {ports[which]}\n{b.log_tail(3000)}"
    finally:
        blocker.close()


@pytest.mark.fixed_upstream_bug
@pytest.mark.parametrize("section", ["apps", "backbones"])
def test_unknown_plugin_is_rejected(bus_factory, section):
    b = bus_factory(extra_top_level={"plugins": {section: {"foo": {}}}}, wait=False)
    rc = exited(b, 10)
    assert rc != 0, f"exit code 0 with unknown plugin\n{b.log_tail(3000)}"
    assert "foo" in b.log(), f"message does not name the plugin\n{b.log_tail(3000)}"


def test_bad_port_value_is_rejected(bus_factory):
    b = bus_factory(extra_zmq_keys={"manage": "abc"}, wait=False)
    rc = exited(b, 10)
    assert rc == 1, f"exit code {rc}\n{b.log_tail(3000)}"
    log = b.log()
    assert "plugins.apps.zmq.manage" in log.lower() and "abc" in log, f"message must name key and value\n{log}"


def test_missing_required_key_is_rejected(bus_factory):
    b = bus_factory(wait=False, config={
        "logging": {"console": True, "console_verbosity": "DEBUG", "file": False},
        "plugins": {"backbones": {"inmem": {}}, "apps": {"zmq": {"host": HOST, "manage": 1, "pub": 2}}},
    })
    rc = exited(b, 10)
    assert rc == 1, f"exit code {rc}\n{b.log_tail(3000)}"
    assert "plugins.apps.zmq.sub" in b.log().lower(), b.log_tail(3000)


def test_missing_plugins_section_is_rejected(bus_factory):
    b = bus_factory(wait=False, config={"logging": {"console": True, "file": False}})
    rc = exited(b, 10)
    assert rc == 1, f"exit code {rc}\n{b.log_tail(3000)}"
    assert "plugins" in b.log().lower(), b.log_tail(3000)


def test_bad_log_level_is_rejected(bus_factory):
    b = bus_factory(wait=False, extra_top_level={"logging": {"console_verbosity": "LOUD"}})
    rc = exited(b, 10)
    assert rc == 1, f"exit code {rc}\n{b.log_tail(3000)}"
    assert "console_verbosity" in b.log(), b.log_tail(3000)


def test_missing_config_file_is_rejected(bus_factory, tmp_path):
    b = bus_factory(wait=False, config_arg=str(tmp_path / "does-not-exist.yaml"))
    rc = exited(b, 10)
    assert rc not in (0, None) and rc > 0, f"exit code {rc}\n{b.log_tail(3000)}"


def test_config_must_be_yaml(bus_factory, tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{}")
    b = bus_factory(wait=False, config_arg=str(path))
    rc = exited(b, 10)
    assert rc not in (0, None) and rc > 0, f"exit code {rc}\n{b.log_tail(3000)}"
    assert "yaml" in b.log().lower() or "yml" in b.log().lower(), b.log_tail(3000)


def test_config_suffix_yml_accepted(bus_factory, tmp_path):
    ports = conftest.free_ports(3)
    yml = tmp_path / "threatbus.yml"
    yml.write_text(conftest.to_yaml(conftest.default_config(*ports)) + "\n")
    b = bus_factory(ports=ports, config_arg=str(yml))
    assert b.manage({"action": "FOO"}) == {"status": "unknown request"}


def test_env_overrides_file_value(bus_factory):
    file_manage, env_manage, pub, sub = conftest.free_ports(4)
    b = bus_factory(
        ports=(file_manage, pub, sub),
        env={"THREATBUS_PLUGINS__APPS__ZMQ__MANAGE": str(env_manage)},
        wait_ports=[env_manage, pub, sub],
    )
    reply = tbclient.manage(env_manage, {"action": "subscribe", "topic": "stix2/indicator"})
    assert reply["status"] == "success" and reply["pub_port"] == pub and reply["sub_port"] == sub, reply
    assert not conftest.port_accepts(file_manage), "the file's manage port is bound although overridden by env"


def test_env_override_logging(bus_factory):
    """Keys are case-insensitive, values parsed TOML-style (false -> bool)."""
    b = bus_factory(env={"THREATBUS_LOGGING__CONSOLE_VERBOSITY": "ERROR"})
    b.manage(b"FOO")
    b.manage({"action": "subscribe", "topic": "stix2"})
    assert "DEBUG" not in b.log() and " INFO " not in b.log(), b.log_tail(3000)


@pytest.mark.fixed_upstream_bug
def test_env_provides_absent_section(bus_factory):
    manage, pub, sub = conftest.free_ports(3)
    config = {
        "logging": {"console": True, "console_verbosity": "DEBUG", "file": False},
        "plugins": {"backbones": {"inmem": {}}, "apps": {}},
    }
    env = {
        "THREATBUS_PLUGINS__APPS__ZMQ__HOST": HOST,
        "THREATBUS_PLUGINS__APPS__ZMQ__MANAGE": str(manage),
        "THREATBUS_PLUGINS__APPS__ZMQ__PUB": str(pub),
        "THREATBUS_PLUGINS__APPS__ZMQ__SUB": str(sub),
    }
    bus_factory(ports=(manage, pub, sub), config=config, env=env)
    reply = tbclient.manage(manage, {"action": "subscribe", "topic": "stix2"})
    assert reply["status"] == "success" and reply["pub_port"] == pub and reply["sub_port"] == sub, reply


def test_file_logging(bus_factory, tmp_path):
    logfile = tmp_path / "file-sink.log"
    b = bus_factory(extra_top_level={"logging": {"file": True, "filename": str(logfile),
                                                 "file_verbosity": "DEBUG"}})
    b.manage({"action": "subscribe", "topic": "stix2/indicator"})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (logfile.exists() and logfile.stat().st_size > 0):
        time.sleep(0.1)
    assert logfile.exists() and logfile.stat().st_size > 0, "file sink not written"
    assert "\x1b[" not in logfile.read_text(errors="replace"), "file log must be plain (no ANSI colours)"
