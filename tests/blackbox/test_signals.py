"""Signals: SIGHUP reopens the log file (log rotation) and the bus goes on; every other
catchable terminating signal drains like SIGTERM, logs which signal arrived and exits 0."""

from __future__ import annotations

import signal
import time

import pytest

import tbclient
from tbclient import make_indicator


def wait_for(predicate, timeout: float = 10, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not met within {timeout}s"
        time.sleep(0.05)


def round_trip(bus):
    """A subscriber receives what a publisher sends: the bus is working."""
    subscriber = bus.subscriber("stix2/indicator")
    publisher = bus.publisher()
    tbclient.sync(publisher, [subscriber])
    indicator = make_indicator("1.2.3.4")
    publisher.send("stix2/indicator", indicator)
    got = subscriber.recv_n(1, timeout=10)
    assert got[0][1]["id"] == indicator["id"]


def test_sighup_reopens_the_log_file_for_rotation(bus_factory, tmp_path):
    log = tmp_path / "rotating.log"
    bus = bus_factory(extra_top_level={"logging": {"file": True, "filename": str(log),
                                                   "file_verbosity": "DEBUG"}})
    wait_for(lambda: log.exists() and "ZeroMQ app listening" in log.read_text(), what="log file written")
    # logrotate moves the file away, then signals the bus.
    rotated = tmp_path / "rotating.log.1"
    log.rename(rotated)
    bus.signal(signal.SIGHUP)
    wait_for(lambda: log.exists() and "reopened the log file" in log.read_text(), what="a new log file")
    assert 'signal="SIGHUP"' in log.read_text()
    round_trip(bus)
    wait_for(lambda: "ZeroMQ app subscribed" in log.read_text(), what="new lines in the new file")
    # Nothing new went to the rotated file.
    assert "ZeroMQ app subscribed" not in rotated.read_text()
    assert bus.alive()
    # Several rotations in a row.
    for n in range(2, 5):
        log.rename(tmp_path / f"rotating.log.{n}")
        bus.signal(signal.SIGHUP)
        wait_for(lambda: log.exists() and "reopened the log file" in log.read_text(), what=f"rotation {n}")
    assert bus.alive()


def test_sighup_without_a_log_file_changes_nothing(bus):
    bus.signal(signal.SIGHUP)
    wait_for(lambda: "no log file to reopen" in bus.log(), what="SIGHUP logged")
    assert bus.alive()
    round_trip(bus)


@pytest.mark.parametrize("sig", [signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGPWR],
                         ids=lambda s: s.name)
def test_other_terminating_signals_drain_like_sigterm(bus, sig):
    round_trip(bus)
    bus.signal(sig)
    assert bus.wait_exit(15) == 0, bus.log_tail()
    log = bus.log()
    assert f'signal="{sig.name}"' in log and "stopping gracefully" in log, log[-2000:]
    assert "Threat Bus stopped" in log
