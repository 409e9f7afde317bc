#!/usr/bin/env python3
"""The intel store's end-to-end figures (docs/performance.md, "The intel store"):

1. import N indicators into an empty embedded store with `threatbus store import` (rate, disk);
2. start a bus on that store (time until its manage socket answers);
3. a ZeroMQ subscriber (`threatbus tail`) takes a snapshot of all N (objects/s, the bus's peak RSS);
4. bus throughput, K = 1, with the load generator: the store on next to the store off.

Usage (release builds first):
    cargo build --release -p threatbus -p threatbus-loadgen
    python3 scripts/store-bench.py [--objects 1000000] [--loadgen-n 200000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def config(workdir: Path, store: bool) -> tuple[Path, int]:
    manage, pub, sub = free_ports(3)
    text = (
        "logging: {console: true, console_verbosity: WARNING}\n"
        + (f"store: {{path: {workdir / 'store'}}}\n" if store else "")
        + "plugins:\n  backbones: {inmem: {}}\n"
        + f"  apps: {{zmq: {{host: 127.0.0.1, manage: {manage}, pub: {pub}, sub: {sub}}}}}\n"
    )
    path = workdir / f"config-{'store' if store else 'nostore'}-{manage}.yaml"
    path.write_text(text)
    return path, manage


def start(binary: Path, config_path: Path, manage: int, log: Path) -> tuple[subprocess.Popen, float]:
    started = time.monotonic()
    proc = subprocess.Popen([str(binary), "-c", str(config_path)], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT)
    while not accepts(manage):
        if proc.poll() is not None:
            sys.exit(f"the bus exited: {log.read_text()[-2000:]}")
        if time.monotonic() - started > 60:
            sys.exit("the bus did not start within 60 s")
        time.sleep(0.005)
    return proc, time.monotonic() - started


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(30)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def indicators(n: int, path: Path) -> None:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    with open(path, "w") as out:
        for i in range(n):
            out.write(
                f'{{"type":"indicator","spec_version":"2.1","id":"indicator--{uuid.UUID(int=i, version=4)}",'
                f'"created":"{now}","modified":"{now}","pattern":"[ipv4-addr:value = \'10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}\']",'
                f'"pattern_type":"stix","valid_from":"{now}","name":"store benchmark {i}","labels":["malicious-activity"]}}\n'
            )


def loadgen(binary: Path, manage: int, pid: int, n: int) -> float:
    done = subprocess.run([str(binary), "--manage", str(manage), "-k", "1", "-n", str(n), "--bus-pid", str(pid),
                           "--hwm", "1000", "--json"], capture_output=True, text=True, timeout=600)
    report = next(json.loads(line) for line in reversed(done.stdout.splitlines()) if line.startswith("{"))
    return report["subscribers"][0]["throughput"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--loadgen-n", type=int, default=200_000)
    args = parser.parse_args()
    release = target_dir() / "release"
    threatbus, generator = release / "threatbus", release / "threatbus-loadgen"
    for binary in (threatbus, generator):
        if not binary.exists():
            sys.exit(f"{binary} missing: cargo build --release -p threatbus -p threatbus-loadgen")

    with tempfile.TemporaryDirectory(prefix="threatbus-store-bench-") as tmp:
        workdir = Path(tmp)
        feed = workdir / "indicators.ndjson"
        indicators(args.objects, feed)
        store_config, manage = config(workdir, store=True)

        started = time.monotonic()
        imported = subprocess.run([str(threatbus), "-c", str(store_config), "store", "import", str(feed)],
                                  capture_output=True, text=True, timeout=3600)
        import_s = time.monotonic() - started
        if imported.returncode != 0:
            sys.exit(imported.stderr)
        stats = json.loads(subprocess.run([str(threatbus), "-c", str(store_config), "store", "stats"],
                                          capture_output=True, text=True, timeout=600).stdout)
        print(f"import     {args.objects:,} indicators in {import_s:.1f} s: {args.objects / import_s:,.0f}/s; "
              f"{stats['bytes_on_disk'] / 2**20:.0f} MiB on disk, {stats['bytes_per_version']} bytes per indicator")

        proc, startup_s = start(threatbus, store_config, manage, workdir / "bus-store.log")
        print(f"start-up   {startup_s * 1000:.0f} ms with {stats['objects']:,} stored objects (until the manage socket answers)")

        started = time.monotonic()
        tail = subprocess.run([str(threatbus), "tail", "--manage", str(manage), "--snapshot", "1", "--count",
                               str(args.objects), "--idle", "30", "stix2/indicator"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=3600)
        snapshot_s = time.monotonic() - started
        rss = peak_rss_mib(proc.pid)
        status = "complete" if tail.returncode == 0 else f"tail exited {tail.returncode}: {tail.stderr[-500:]}"
        print(f"snapshot   {args.objects:,} objects to a ZeroMQ subscriber in {snapshot_s:.1f} s: "
              f"{args.objects / snapshot_s:,.0f} objects/s; bus peak RSS {rss:.1f} MiB ({status})")
        with_store = loadgen(generator, manage, proc.pid, args.loadgen_n)
        stop(proc)

        plain_config, plain_manage = config(workdir, store=False)
        proc, _ = start(threatbus, plain_config, plain_manage, workdir / "bus-plain.log")
        without_store = loadgen(generator, plain_manage, proc.pid, args.loadgen_n)
        stop(proc)
        print(f"throughput K=1, N={args.loadgen_n:,}: store on {with_store:,.0f} msg/s, off {without_store:,.0f} msg/s "
              f"(ratio {with_store / without_store:.2f})")


if __name__ == "__main__":
    main()
