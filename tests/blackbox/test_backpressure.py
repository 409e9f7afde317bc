"""An app that stops reading must not cost the others anything, and what it misses is counted.

The bus holds a subscribed app's frames when ZeroMQ's buffer for that app is full
(`ZMQ_XPUB_NODROP`), so a stalled app's bus queue fills and the bus drops for that subscriber
alone, logging the count with the app's p2p topic. Without that, ZeroMQ drops the frames
silently and nothing in the bus says so.
"""

import re
import time

import zmq

import tbclient
from tbclient import make_indicator

N = 20000
CHUNK = 500


def stalled_app(bus):
    """Subscribes through the manage socket and connects a SUB socket that never reads, with the
    smallest buffers, so that frames pile up at the bus. Returns (reply, socket)."""
    reply = tbclient.manage(bus.manage_port, {"action": "subscribe", "topic": "stix2/indicator"})
    assert reply["status"] == "success", reply
    sock = tbclient.ctx().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.setsockopt(zmq.RCVBUF, 4096)
    sock.connect(f"tcp://127.0.0.1:{bus.pub_port}")
    sock.setsockopt_string(zmq.SUBSCRIBE, reply["topic"])
    return reply, sock


def send_chunks(pub, active, first: int, count: int) -> list[int]:
    """Publishes indicators numbered first..first+count in chunks, waiting for `active` to
    receive each chunk, so that the reading app never lags; returns the numbers it received."""
    received = []
    for start in range(first, first + count, CHUNK):
        for i in range(start, start + CHUNK):
            pub.send("stix2/indicator", make_indicator(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", x_seq=i))
        received.extend(obj["x_seq"] for _, obj in active.recv_n(CHUNK, timeout=60))
    return received


def test_stalled_app_loses_alone_and_its_drops_are_logged(bus_factory):
    bus = bus_factory(
        extra_zmq_keys={"send_hwm": 200},
        extra_top_level={"bus": {"queue_capacity": 500}},
    )
    stalled, stalled_sock = stalled_app(bus)

    active = bus.subscriber("stix2/indicator")
    pub = bus.publisher()
    bus.sync(pub, active)

    # Paced in chunks so that the active app never lags: whatever it misses is the bus's fault.
    assert send_chunks(pub, active, 0, N) == list(range(N))
    assert bus.alive()

    stalled_sock.close()
    bus.stop()
    log = bus.log()

    def dropped_total(p2p: str) -> int:
        totals = [
            int(m.group(1))
            for line in log.splitlines()
            if "subscriber queue full" in line and f"label={p2p}" in line
            for m in [re.search(r"dropped_total=(\d+)", line)]
            if m
        ]
        return max(totals, default=0)

    lost = dropped_total(stalled["topic"])
    assert 0 < lost <= N, f"no drop count for the stalled app in the log:\n{bus.log_tail()}"
    assert dropped_total(active.p2p) == 0


def test_frames_held_for_an_app_that_unsubscribed_but_reads_nothing_are_let_go(bus_factory):
    """The publisher holds frames for an app whose ZeroMQ buffer is full. If that app unsubscribes
    but keeps its socket subscribed without reading, the frames could never leave: the publisher
    gives them up (and the memory with them) instead of retrying forever."""
    bus = bus_factory(extra_zmq_keys={"send_hwm": 10}, extra_top_level={"bus": {"queue_capacity": 1000}})
    stalled, stalled_sock = stalled_app(bus)
    active = bus.subscriber("stix2/indicator")
    pub = bus.publisher()
    bus.sync(pub, active)

    send_chunks(pub, active, 0, N)
    reply = tbclient.manage(bus.manage_port, {"action": "unsubscribe", "topic": stalled["topic"]})
    assert reply["status"] == "success", reply
    send_chunks(pub, active, N, 2 * CHUNK)  # keeps the publisher busy while it retries
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "giving up its held frames" not in bus.log():
        time.sleep(0.1)
    held = [line for line in bus.log().splitlines() if "giving up its held frames" in line]
    assert held and stalled["topic"] in held[0], bus.log_tail()
    assert bus.alive()
    stalled_sock.close()
