#!/usr/bin/env python3
"""The TAXII feeds app's figures (docs/performance.md, "TAXII feeds"): one bus follows another.

1. The script writes N valid STIX 2.1 indicators (default 100,000) and imports them with
   `threatbus store import` into the store of the *source* bus, whose only app is the TAXII
   server (`page_size` 1000, one user, HTTP Basic, the access log at INFO: one line per request
   with the server's time in `micros`).
2. The *follower* bus has the ZeroMQ app and `taxii_feeds` with one feed pointing at the
   source's API root (`poll_interval` one day, `initial_lookback` 30), with no store, or with a
   store of its own (then it also stores everything it publishes, and keeps the feed's cursor).
3. For each of the two follower set-ups, `--runs` times (default 3), each on fresh processes
   and, with a store, a fresh store:
   * **cold start**: the source runs; the follower is started and its first poll publishes all
     N. Timed from the follower's start (the script's clock, just before it spawns the process)
     to the log timestamp of its `taxii feed polled` INFO line, whose `ms=` (the poll alone,
     from looking the collection up to the last page) and `published=` are reported too. No
     subscriber is connected: the bus publishes into the router and nobody receives.
   * **with a subscriber** (the cross-check): the follower is started while the source is
     down (its feed retries every 50-100 ms), a pyzmq subscriber subscribes to
     `stix2/indicator` through the manage socket (docs/zmq.md) and connects its SUB socket,
     then the source is started. Timed from the log timestamp of the feed's
     `taxii feed: the server answers again` line (its first successful request) to the
     `taxii feed polled` line and to the subscriber's N-th distinct indicator.
   Meanwhile the follower's and the source's VmRSS are sampled every 50 ms (VmHWM read at the
   end), and both processes' CPU time (utime + stime from /proc/PID/stat) is read before and
   after. The source's access log gives the server's own time per page, so the poll's time
   splits into "serving" (source) and the rest (follower's parsing, validation, publishing,
   and the round trips).
4. With a store, after the run the follower is stopped (its writer flushes) and
   `threatbus store stats` counts what it stored.

Usage (release build first; Python packages: pyzmq, see scripts/bench-requirements.txt):
    cargo build --release -p threatbus
    VENV/bin/python scripts/taxii-feeds-bench.py [--bin PATH] [--objects 100000] [--runs 3]

The last line of the output is every figure as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

from benchkit import (COLLECTION, PASSWORD, USER, cpu_seconds, free_ports, indicators, rss_mib, stop, target_dir,
                      wait_for)


def log_time(stamp: str) -> float:
    """A tracing timestamp (`2026-12-06T10:00:00.123456789Z`) -> seconds since the epoch."""
    stamp = stamp.rstrip("Z")
    whole, _, fraction = stamp.partition(".")
    at = dt.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc)
    return at.timestamp() + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


class Log:
    """Reads a bus's JSON log as it grows."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.events, self.partial = path, 0, [], ""

    def read(self) -> list[dict]:
        with open(self.path) as f:
            f.seek(self.offset)
            text = f.read()
            self.offset = f.tell()
        text, self.partial = self.partial + text, ""
        lines = text.split("\n")
        if not text.endswith("\n"):
            self.partial = lines.pop()
        new = []
        for line in lines:
            if line.startswith("{"):
                try:
                    new.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        self.events.extend(new)
        return new

    def find(self, message: str) -> dict | None:
        return next((e for e in self.events if e.get("message") == message), None)


class Sampler(threading.Thread):
    """VmRSS of some processes every 50 ms; the peak of each."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.peak, self.samples, self.done = pids, {k: 0.0 for k in pids}, 0, threading.Event()

    def add(self, name: str, pid: int) -> None:
        self.peak.setdefault(name, 0.0)
        self.pids = {**self.pids, name: pid}

    def run(self) -> None:
        while not self.done.is_set():
            for name, pid in self.pids.items():
                try:
                    self.peak[name] = max(self.peak[name], rss_mib(pid)[0])
                except (OSError, ValueError):
                    pass
            self.samples += 1
            self.done.wait(0.05)


class Subscriber(threading.Thread):
    """A ZeroMQ app: subscribes to stix2/indicator through the manage socket, counts what arrives."""

    def __init__(self, manage: int, expected: int) -> None:
        super().__init__(daemon=True)
        self.context = zmq.Context()
        req = self.context.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.setsockopt(zmq.RCVTIMEO, 10_000)
        req.connect(f"tcp://127.0.0.1:{manage}")
        req.send_json({"action": "subscribe", "topic": "stix2/indicator", "snapshot": 0})
        reply = req.recv_json()
        if reply.get("status") != "success":
            sys.exit(f"subscribe failed: {reply}")
        self.req, self.p2p = req, reply["topic"]
        self.sub = self.context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, 0)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(f"tcp://127.0.0.1:{reply['pub_port']}")
        self.sub.setsockopt_string(zmq.SUBSCRIBE, self.p2p)
        self.prefix = (self.p2p + "indicator ").encode()
        self.expected, self.frames, self.ids = expected, 0, set()
        self.first: float | None = None
        self.last: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        while not self.done.is_set() and len(self.ids) < self.expected:
            if not poller.poll(100):
                continue
            while True:
                try:
                    frame = self.sub.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                now = time.time()
                if not frame.startswith(self.prefix):
                    continue
                self.frames += 1
                if self.first is None:
                    self.first = now
                self.last = now
                at = frame.find(b'"id":"indicator--')
                self.ids.add(frame[at + 6:at + 53] if at >= 0 else self.frames)

    def close(self) -> None:
        self.done.set()
        self.join(5)
        try:
            self.req.send_json({"action": "unsubscribe", "topic": self.p2p})
            self.req.recv_json()
        except zmq.ZMQError:
            pass
        self.sub.close()
        self.req.close()
        self.context.term()


class Source:
    """The source bus: the TAXII server on a store with the indicators."""

    def __init__(self, binary: Path, workdir: Path, port: int) -> None:
        self.binary, self.workdir, self.port = binary, workdir, port
        self.store = workdir / "store-source"
        self.config = workdir / "config-source.yaml"
        self.config.write_text(
            "logging: {console: true, console_verbosity: INFO, format: json, summary_interval: 0}\n"
            f"store: {{path: {self.store}}}\n"
            "plugins:\n  backbones: {inmem: {}}\n"
            f"  apps: {{taxii: {{host: 127.0.0.1, port: {port}, page_size: 1000, access_log: info, "
            f"users: {{{USER}: {{password: {PASSWORD}}}}}}}}}\n"
        )
        self.api_root = f"http://127.0.0.1:{port}/threatbus/"
        self.proc: subprocess.Popen | None = None
        self.log: Log | None = None
        self.runs = 0

    def import_(self, feed: Path, count: int) -> dict:
        started = time.monotonic()
        done = subprocess.run([str(self.binary), "-c", str(self.config), "store", "import", str(feed)],
                              capture_output=True, text=True, timeout=3600)
        took = time.monotonic() - started
        if done.returncode != 0:
            sys.exit(f"store import failed: {done.stderr[-2000:]}")
        stats = json.loads(subprocess.run([str(self.binary), "-c", str(self.config), "store", "stats"],
                                          capture_output=True, text=True, timeout=600).stdout)
        print(f"[source] imported {count:,} indicators in {took:.1f} s ({count / took:,.0f}/s), "
              f"{stats['bytes_on_disk'] / 2**20:.0f} MiB on disk", flush=True)
        return {"seconds": took, "objects": stats.get("objects")}

    def start(self) -> float:
        self.runs += 1
        path = self.workdir / f"source-{self.runs}.log"
        self.proc = subprocess.Popen([str(self.binary), "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=open(path, "wb"))
        self.log = Log(path)
        return wait_for(self.proc, self.port, path, "the source bus")

    def stop(self) -> None:
        if self.proc:
            stop(self.proc)
            self.proc = None


class Follower:
    """The follower bus: the ZeroMQ app and one TAXII feed, with or without a store."""

    def __init__(self, binary: Path, workdir: Path, name: str, api_root: str, store: bool, verbosity: str) -> None:
        self.binary, self.workdir, self.name = binary, workdir, name
        self.manage, self.pub, self.sub = free_ports(3)
        self.store = workdir / f"store-{name}" if store else None
        self.config = workdir / f"config-{name}.yaml"
        self.config.write_text(
            f"logging: {{console: true, console_verbosity: {verbosity}, format: json, summary_interval: 0}}\n"
            + (f"store: {{path: {self.store}}}\n" if self.store else "")
            + "plugins:\n  backbones: {inmem: {}}\n  apps:\n"
            f"    zmq: {{host: 127.0.0.1, manage: {self.manage}, pub: {self.pub}, sub: {self.sub}}}\n"
            "    taxii_feeds:\n"
            f"      - {{name: source, url: '{api_root}', collection: '{COLLECTION}', username: {USER}, "
            f"password: {PASSWORD}, poll_interval: 86400, initial_lookback: 30, "
            "retry: {min_delay: 0.05, max_delay: 0.1}}\n"
        )
        self.logpath = workdir / f"follower-{name}.log"
        self.log = Log(self.logpath)
        self.proc: subprocess.Popen | None = None
        self.spawned = 0.0

    def start(self) -> float:
        self.spawned = time.time()
        self.proc = subprocess.Popen([str(self.binary), "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.logpath, "wb"))
        return wait_for(self.proc, self.manage, self.logpath, "the follower bus")

    def stop(self) -> float:
        took = stop(self.proc) if self.proc else 0.0
        self.proc = None
        return took

    def stored(self) -> int | None:
        if not self.store:
            return None
        done = subprocess.run([str(self.binary), "-c", str(self.config), "store", "stats"], capture_output=True,
                              text=True, timeout=600)
        return json.loads(done.stdout).get("objects") if done.returncode == 0 else None

    def remove_store(self) -> None:
        if self.store:
            shutil.rmtree(self.store, ignore_errors=True)
            for extra in self.workdir.glob(f"store-{self.name}*"):
                if extra.is_file():
                    extra.unlink()


def wait_polled(follower: Follower, limit: float) -> dict:
    started = time.monotonic()
    while True:
        follower.log.read()
        polled = follower.log.find("taxii feed polled")
        if polled:
            return polled
        failed = follower.log.find("taxii feed: poll failed")
        if failed:
            sys.exit(f"the feed's poll failed: {failed}")
        if follower.proc.poll() is not None:
            sys.exit(f"the follower exited: {follower.logpath.read_text()[-2000:]}")
        if time.monotonic() - started > limit:
            sys.exit(f"no `taxii feed polled` line within {limit:.0f} s")
        time.sleep(0.01)


def serving(source: Source, since: float, until: float) -> dict:
    """The source's access-log lines for object pages answered in [since, until]."""
    source.log.read()
    pages = [e for e in source.log.events if e.get("message") == "taxii request" and "/objects/" in str(e.get("path"))
             and since - 0.001 <= log_time(e["timestamp"]) <= until + 0.001]
    micros = [int(e.get("micros", 0)) for e in pages]
    return {"pages": len(pages), "server_s": sum(micros) / 1e6,
            "page_ms_p50": statistics.median(micros) / 1000 if micros else None,
            "page_ms_max": max(micros) / 1000 if micros else None}


def one_run(args, source: Source, workdir: Path, store: bool, subscriber: bool, label: str) -> dict:
    follower = Follower(args.bin, workdir, label, source.api_root, store, args.verbosity)
    result: dict = {"label": label, "store": store, "subscriber": subscriber}
    sub = None
    if not subscriber:
        source.start()
        source_cpu0 = cpu_seconds(source.proc.pid)
        sampler = Sampler({"source": source.proc.pid})
        sampler.start()
        follower.start()
        sampler.add("follower", follower.proc.pid)
        begin = follower.spawned
    else:
        follower.start()
        sampler = Sampler({"follower": follower.proc.pid})
        sampler.start()
        sub = Subscriber(follower.manage, args.objects)
        sub.start()
        time.sleep(0.3)  # the bus sees the SUB socket's subscription (XPUB) before anything is published
        source.start()
        source_cpu0 = cpu_seconds(source.proc.pid)
        sampler.add("source", source.proc.pid)
        begin = None
    polled = wait_polled(follower, args.timeout)
    end = log_time(polled["timestamp"])
    follower_cpu = cpu_seconds(follower.proc.pid)
    source_cpu = cpu_seconds(source.proc.pid) - source_cpu0
    follower_hwm = rss_mib(follower.proc.pid)[1]
    source_hwm = rss_mib(source.proc.pid)[1]
    if subscriber:
        answered = follower.log.find("taxii feed: the server answers again")
        if not answered:
            sys.exit("no `the server answers again` line: did the feed reach the source on its first try?")
        begin = log_time(answered["timestamp"])
        deadline = time.monotonic() + args.idle
        while len(sub.ids) < args.objects and time.monotonic() < deadline:
            time.sleep(0.02)
        sub.close()
        result.update({"sub_frames": sub.frames, "sub_distinct": len(sub.ids),
                       "sub_first_s": sub.first - begin if sub.first else None,
                       "sub_last_s": sub.last - begin if sub.last else None})
    sampler.done.set()
    sampler.join()
    seconds = end - begin
    published = int(polled.get("published", 0))
    result.update({
        "published": published, "pages": int(polled.get("pages", 0)), "skipped": int(polled.get("skipped", 0)),
        "invalid": int(polled.get("invalid", 0)), "poll_ms": int(polled.get("ms", 0)),
        "seconds": seconds, "rate": published / seconds,
        "poll_rate": published / (int(polled.get("ms", 0)) / 1000) if polled.get("ms") else None,
        "follower_rss_peak_mib": sampler.peak.get("follower"), "follower_hwm_mib": follower_hwm,
        "follower_cpu_s": follower_cpu, "source_rss_peak_mib": sampler.peak.get("source"),
        "source_hwm_mib": source_hwm, "source_cpu_s": source_cpu, "rss_samples": sampler.samples,
        "serving": serving(source, begin, end),
    })
    if subscriber:
        result["sub_rate"] = result["sub_distinct"] / result["sub_last_s"] if result["sub_last_s"] else None
    result["follower_stop_s"] = follower.stop()
    result["stored"] = follower.stored()
    follower.remove_store()
    source.stop()
    return result


def show(r: dict) -> None:
    what = f"[{r['label']}] {'store' if r['store'] else 'no store'}, {'subscriber' if r['subscriber'] else 'cold start'}"
    clock = "feed's first answer" if r["subscriber"] else "follower's start"
    s = r["serving"]
    line = (f"{what}: {r['published']:,} published in {r['pages']} pages, {r['seconds']:.2f} s from the {clock}: "
            f"{r['rate']:,.0f} objects/s (poll ms={r['poll_ms']}, {r['poll_rate']:,.0f}/s); "
            f"follower RSS peak {r['follower_rss_peak_mib']:.1f} MiB sampled, VmHWM {r['follower_hwm_mib']:.1f} MiB, "
            f"CPU {r['follower_cpu_s']:.2f} s; source RSS peak {r['source_rss_peak_mib']:.1f} MiB, "
            f"VmHWM {r['source_hwm_mib']:.1f} MiB, CPU {r['source_cpu_s']:.2f} s "
            f"({r['source_cpu_s'] / r['seconds'] * 100:.0f}% of a core); source served {s['pages']} pages in "
            f"{s['server_s']:.2f} s (p50 {s['page_ms_p50'] or 0:.1f} ms, max {s['page_ms_max'] or 0:.1f} ms)")
    if r["subscriber"]:
        line += (f"; subscriber: {r['sub_distinct']:,} distinct of {r['sub_frames']:,} frames, last at "
                 f"{r['sub_last_s'] or float('nan'):.2f} s ({r['sub_rate'] or 0:,.0f}/s)")
    if r["store"]:
        line += f"; stored {r['stored']} (stop took {r['follower_stop_s']:.2f} s)"
    print(line, flush=True)


def summary(label: str, runs: list[dict]) -> dict:
    def med(key):
        values = [r[key] for r in runs if r.get(key) is not None]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)} if values else None

    keys = ["rate", "poll_rate", "seconds", "follower_rss_peak_mib", "follower_hwm_mib", "follower_cpu_s",
            "source_rss_peak_mib", "source_hwm_mib", "source_cpu_s", "sub_rate", "sub_last_s"]
    out = {k: med(k) for k in keys}
    parts = [f"{out['rate']['median']:,.0f} objects/s (range {out['rate']['min']:,.0f}-{out['rate']['max']:,.0f})",
             f"follower VmHWM max {out['follower_hwm_mib']['max']:.1f} MiB",
             f"source VmHWM max {out['source_hwm_mib']['max']:.1f} MiB",
             f"source CPU median {out['source_cpu_s']['median']:.2f} s"]
    if out["sub_rate"]:
        parts.append(f"subscriber {out['sub_rate']['median']:,.0f}/s")
    print(f"[summary {label}] " + "; ".join(parts), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", type=Path, default=target_dir() / "release" / "threatbus")
    parser.add_argument("--objects", type=int, default=100_000, help="indicators in the source's store")
    parser.add_argument("--runs", type=int, default=3, help="runs of each set-up")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the first poll to end")
    parser.add_argument("--idle", type=float, default=15, help="seconds the subscriber waits after the poll")
    parser.add_argument("--verbosity", default="INFO", help="the follower's console_verbosity (DEBUG for more)")
    parser.add_argument("--keep", type=Path, help="copy the logs and configs here")
    args = parser.parse_args()
    if not args.bin.exists():
        sys.exit(f"{args.bin} missing: cargo build --release -p threatbus (or pass --bin)")
    report: dict = {"objects": args.objects, "runs": []}
    with tempfile.TemporaryDirectory(prefix="threatbus-taxii-feeds-bench-") as tmp:
        workdir = Path(tmp)
        feed = workdir / "indicators.ndjson"
        indicators(args.objects, feed, age=dt.timedelta(days=1))
        source = Source(args.bin, workdir, free_ports(1)[0])
        report["import"] = source.import_(feed, args.objects)
        feed.unlink()
        setups = [("nostore", False, False), ("store", True, False), ("nostore-sub", False, True),
                  ("store-sub", True, True)]
        by_setup: dict[str, list[dict]] = {name: [] for name, _, _ in setups}
        for i in range(args.runs):
            for name, store, sub in setups:
                result = one_run(args, source, workdir, store, sub, f"{name}-{i + 1}")
                show(result)
                report["runs"].append(result)
                by_setup[name].append(result)
        report["summary"] = {name: summary(name, runs) for name, runs in by_setup.items()}
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for path in workdir.glob("*.log"):
                shutil.copy(path, args.keep)
            for path in workdir.glob("*.yaml"):
                shutil.copy(path, args.keep)
    print("JSON " + json.dumps(report))


if __name__ == "__main__":
    main()
