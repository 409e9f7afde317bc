#!/usr/bin/env python3
"""Throughput of the two REST apps against fake servers from the black-box tests:

* MISP snapshot: N attributes answered by a fake MISP restSearch (pages of --page-size) reach a
  ZeroMQ app that subscribed with a 7-day snapshot;
* CIFv3 push: N indicators published by a ZeroMQ app reach a fake CIF (`POST /indicators`,
  one request each, deflate bodies).

The fakes are Python `http.server`s, so the figures are a lower bound for the bus: they show
where the bus would be the bottleneck, not what a real MISP or CIF sustains.

    .venv/bin/python scripts/rest-apps-throughput.py --bin target/release/threatbus
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "blackbox"))

import tbclient  # noqa: E402
from conftest import HOST, default_config, free_ports, port_accepts, to_yaml  # noqa: E402
from fakemisp import FakeMisp  # noqa: E402
from test_cif3 import FakeCif, cif3_section  # noqa: E402
from test_misp import search_attribute  # noqa: E402


def start(binary: str, config: dict, workdir: Path, ports) -> subprocess.Popen:
    config["logging"]["console_verbosity"] = "INFO"
    path = workdir / "config.yaml"
    path.write_text(to_yaml(config))
    log = open(workdir / "threatbus.log", "wb")
    proc = subprocess.Popen([binary, "-c", str(path)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while not all(port_accepts(p) for p in ports):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"the bus did not start; see {workdir / 'threatbus.log'}")
        time.sleep(0.05)
    return proc


def misp_snapshot(binary: str, count: int, page_size: int, workdir: Path) -> float:
    manage, pub, sub, feed, misp_port = free_ports(5)
    fake = FakeMisp(misp_port)
    fake.attributes = [search_attribute("domain", f"d{i}.example") for i in range(count)]
    fake.search_gate.clear()
    config = default_config(manage, pub, sub)
    config["plugins"]["apps"]["misp"] = {
        "zmq": {"host": HOST, "port": feed},
        "api": {"host": fake.url, "ssl": False, "key": fake.key, "page_size": page_size},
    }
    proc = start(binary, config, workdir, (manage, pub, sub))
    try:
        app = tbclient.Subscriber(manage, "stix2/indicator", snapshot=7)
        publisher = tbclient.Publisher(sub)
        tbclient.sync(publisher, [app])
        started = time.perf_counter()
        fake.search_gate.set()
        got = app.recv_n(count, timeout=300)
        elapsed = time.perf_counter() - started
        assert len({obj["id"] for _, obj in got}) == count
        return elapsed
    finally:
        proc.terminate()
        proc.wait(20)
        fake.close()


def cif_push(binary: str, count: int, workdir: Path) -> float:
    manage, pub, sub, cif_port = free_ports(4)
    fake = FakeCif(cif_port).start()
    config = default_config(manage, pub, sub)
    config["plugins"]["apps"]["cif3"] = cif3_section(cif_port)
    proc = start(binary, config, workdir, (manage, pub, sub))
    try:
        watcher = tbclient.Subscriber(manage, "stix2/indicator")
        publisher = tbclient.Publisher(sub)
        tbclient.sync(publisher, [watcher])
        with fake.cond:
            before = len(fake.accepted)
        started = time.perf_counter()
        for i in range(count):
            value = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
            publisher.send("stix2/indicator", tbclient.make_indicator(value))
        with fake.cond:
            ok = fake.cond.wait_for(lambda: len(fake.accepted) - before >= count, 300)
        elapsed = time.perf_counter() - started
        assert ok, f"CIF received {len(fake.accepted) - before} of {count}"
        assert not fake.problems, fake.problems[:3]
        return elapsed
    finally:
        proc.terminate()
        proc.wait(20)
        fake.server.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default=os.environ.get("THREATBUS_BIN", "target/release/threatbus"))
    parser.add_argument("--attributes", type=int, default=20000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--indicators", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "misp").mkdir()
        (work / "cif").mkdir()
        seconds = misp_snapshot(args.bin, args.attributes, args.page_size, work / "misp")
        print(f"MISP snapshot: {args.attributes} attributes in pages of {args.page_size}: "
              f"{seconds:.2f} s, {args.attributes / seconds:,.0f} indicators/s to the app")
        seconds = cif_push(args.bin, args.indicators, work / "cif")
        print(f"CIFv3 push: {args.indicators} indicators: {seconds:.2f} s, "
              f"{args.indicators / seconds:,.0f} indicators/s into CIF")


if __name__ == "__main__":
    main()
