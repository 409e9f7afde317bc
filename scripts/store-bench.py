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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import free_ports, indicators, rss_mib, stop, target_dir, wait_for


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
    wait_for(proc, manage, log, "the bus", limit=60)
    return proc, time.monotonic() - started


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
        indicators(args.objects, feed, name="store benchmark", age=dt.timedelta(0), spacing=dt.timedelta(0),
                   seed=None)
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
        rss = rss_mib(proc.pid)[1]
        status = "complete" if tail.returncode == 0 else f"tail exited {tail.returncode}: {tail.stderr[-500:]}"
        print(f"snapshot   {args.objects:,} objects to a ZeroMQ subscriber in {snapshot_s:.1f} s: "
              f"{args.objects / snapshot_s:,.0f} objects/s; bus peak RSS {rss:.1f} MiB ({status})")
        with_store = loadgen(generator, manage, proc.pid, args.loadgen_n)
        stop(proc, 30)

        plain_config, plain_manage = config(workdir, store=False)
        proc, _ = start(threatbus, plain_config, plain_manage, workdir / "bus-plain.log")
        without_store = loadgen(generator, plain_manage, proc.pid, args.loadgen_n)
        stop(proc, 30)
        print(f"throughput K=1, N={args.loadgen_n:,}: store on {with_store:,.0f} msg/s, off {without_store:,.0f} msg/s "
              f"(ratio {with_store / without_store:.2f})")


if __name__ == "__main__":
    main()
