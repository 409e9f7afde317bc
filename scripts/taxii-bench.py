#!/usr/bin/env python3
"""The TAXII server's figures (docs/performance.md, "The TAXII server"):

1. import N indicators (default 1,000,000) into an empty store with `threatbus store import`,
   start a bus with the TAXII app on it;
2. page latency: walk the whole indicators collection in pages of `--page-size` objects
   (consecutive pages, following `next`), then `--random-pages` requests at random
   `added_after` positions, each answered with a full page; one kept-alive `requests.Session`,
   timed from the request to the last byte of the body; p50/p90/p99/max;
3. paging with taxii2-client: `as_pages(collection.get_objects, per_request=PAGE)` for the
   first `--paging-objects` (default 100,000) of the N stored, objects/s, and the bus's RSS;
4. like for like: a fresh store holding just those first `--paging-objects` indicators, paged
   the same way;
5. OASIS medallion (memory backend, loaded from a JSON data file holding the first
   `--medallion-objects` of the same indicators, max_page_size = PAGE), paged with the same
   client, next to our server on a fresh store holding exactly those indicators.

medallion's memory backend does work quadratic in the collection's size on the first request
of a paging run, so it gets a time limit (`--medallion-timeout`): a size it does not finish
within the limit is reported as such, and the ratio is taken at the sizes it does finish.

Usage (release build first; the Python packages are in scripts/bench-requirements.txt):
    cargo build --release -p threatbus
    VENV/bin/python scripts/taxii-bench.py [--bin PATH] [--objects 1000000]
        [--paging-objects 100000] [--medallion-objects 1000,2000,5000,100000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from taxii2client.v21 import Collection, as_pages

from benchkit import COLLECTION, PASSWORD, USER, free_ports, indicators, rss_mib, stop, target_dir, wait_for

TAXII = "application/taxii+json;version=2.1"


def head(source: Path, n: int, path: Path) -> None:
    with open(source) as src, open(path, "w") as out:
        for _, line in zip(range(n), src):
            out.write(line)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    return {"n": len(ordered), "p50": statistics.median(ordered), "p90": at(0.90), "p99": at(0.99),
            "max": ordered[-1], "mean": statistics.fmean(ordered)}


def fmt_ms(stats: dict[str, float]) -> str:
    return " ".join(f"{k} {stats[k] * 1000:.1f} ms" for k in ("p50", "p90", "p99", "max")) + f" ({stats['n']} requests)"


class Bus:
    """A bus with the TAXII app on a store."""

    def __init__(self, binary: Path, workdir: Path, name: str, page_size: int) -> None:
        self.binary, self.workdir, self.name = binary, workdir, name
        self.port = free_ports(1)[0]
        self.store = workdir / f"store-{name}"
        self.config = workdir / f"config-{name}.yaml"
        self.config.write_text(
            "logging: {console: true, console_verbosity: WARNING}\n"
            f"store: {{path: {self.store}}}\n"
            "plugins:\n  backbones: {inmem: {}}\n"
            f"  apps: {{taxii: {{host: 127.0.0.1, port: {self.port}, page_size: {page_size}, "
            f"users: {{{USER}: {{password: {PASSWORD}}}}}}}}}\n"
        )
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}/threatbus/collections/{COLLECTION}/"

    def run(self, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
        done = subprocess.run([str(self.binary), "-c", str(self.config), *args], capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode != 0:
            sys.exit(f"threatbus {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done

    def import_(self, feed: Path, count: int) -> None:
        started = time.monotonic()
        self.run("store", "import", str(feed))
        took = time.monotonic() - started
        stats = json.loads(self.run("store", "stats").stdout)
        print(f"[{self.name}] import {count:,} indicators in {took:.1f} s ({count / took:,.0f}/s), "
              f"{stats['bytes_on_disk'] / 2**20:.0f} MiB on disk", flush=True)

    def start(self) -> None:
        log = self.workdir / f"bus-{self.name}.log"
        self.proc = subprocess.Popen([str(self.binary), "-c", str(self.config)], stdout=open(log, "wb"),
                                     stderr=subprocess.STDOUT)
        took = wait_for(self.proc, self.port, log, "the bus", interval=0.01)
        print(f"[{self.name}] TAXII server answers {took * 1000:.0f} ms after the start "
              f"(RSS {rss_mib(self.proc.pid)[0]:.1f} MiB)", flush=True)

    def stop(self) -> None:
        if self.proc:
            stop(self.proc, 30)
            self.proc = None

    def remove_store(self) -> None:
        shutil.rmtree(self.store, ignore_errors=True)
        for extra in self.workdir.glob(f"store-{self.name}*"):
            if extra.is_file():
                extra.unlink()


def micros_of(header: str) -> int:
    """`2026-12-06T10:00:00.123456Z` -> microseconds since the epoch."""
    at = dt.datetime.strptime(header, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    return int(at.timestamp()) * 1_000_000 + at.microsecond


def format_micros(micros: int) -> str:
    at = dt.datetime.fromtimestamp(micros // 1_000_000, dt.timezone.utc).replace(microsecond=micros % 1_000_000)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def timed_get(session: requests.Session, url: str, params: dict) -> tuple[float, requests.Response]:
    started = time.perf_counter()
    response = session.get(url, params=params)
    response.content  # noqa: B018 (read to the last byte; requests already has, without stream=True)
    took = time.perf_counter() - started
    if response.status_code != 200:
        sys.exit(f"GET {response.url}: {response.status_code} {response.text[:500]}")
    return took, response


def page_latency(bus: Bus, page: int, random_pages: int, expected: int) -> dict:
    """Consecutive pages over the whole collection, then pages at random `added_after`."""
    session = requests.Session()
    session.auth = (USER, PASSWORD)
    session.headers["Accept"] = TAXII
    url = bus.url + "objects/"
    timed_get(session, url, {"limit": 1})  # connect and warm up

    walk, firsts, seen = [], [], 0
    params: dict = {"limit": page}
    started = time.monotonic()
    while True:
        took, response = timed_get(session, url, params)
        envelope = response.json()
        objects = envelope.get("objects", [])
        walk.append(took)
        firsts.append(micros_of(response.headers["X-TAXII-Date-Added-First"]))
        seen += len(objects)
        if not envelope.get("more"):
            break
        params = {"limit": page, "next": envelope["next"]}
    walk_s = time.monotonic() - started
    if seen != expected:
        print(f"warning: the walk saw {seen:,} objects, {expected:,} expected", flush=True)

    # A random position strictly inside full page i (i + 1 < pages - 1): at least `page` objects follow.
    rng = random.Random(7)
    at_random, short = [], 0
    full_pages = len(firsts) - 2
    for _ in range(random_pages):
        i = rng.randrange(full_pages)
        after = rng.randrange(firsts[i], firsts[i + 1])
        took, response = timed_get(session, url, {"limit": page, "added_after": format_micros(after)})
        at_random.append(took)
        if len(response.json().get("objects", [])) != page:
            short += 1
    session.close()
    return {"walk": percentiles(walk), "walk_pages": len(walk), "walk_objects": seen, "walk_s": walk_s,
            "random": percentiles(at_random), "random_short_pages": short}


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, rss_mib(self.pid)[0])
            except OSError:
                return
            self.done.wait(0.05)


def paging(url: str, page: int, count: int, pid: int | None, timeout: float | None = None) -> dict:
    """taxii2-client `as_pages` over the first `count` objects of the collection at `url`."""
    collection = Collection(url, user=USER, password=PASSWORD)
    collection.title  # noqa: B018 (fetch the collection's information before the clock starts)
    sampler = RssSampler(pid) if pid else None
    if sampler:
        sampler.start()
    got, pages, first_page_s, first_page_objects = 0, 0, None, 0
    started = time.monotonic()
    for envelope in as_pages(collection.get_objects, per_request=page):
        pages += 1
        got += len(envelope.get("objects", []))
        if first_page_s is None:
            first_page_s, first_page_objects = time.monotonic() - started, got
        if got >= count:
            break
        if timeout and time.monotonic() - started > timeout:
            break
    took = time.monotonic() - started
    result = {"objects": got, "pages": pages, "seconds": took, "rate": got / took, "first_page_s": first_page_s,
              "complete": got >= count,
              # after the first page: medallion does its filtering and sorting on the first request
              "rate_after_first": (got - first_page_objects) / (took - first_page_s) if pages > 1 else None}
    if sampler:
        sampler.done.set()
        sampler.join()
        result["rss_peak_mib"] = sampler.peak
        result["rss_mib"], result["hwm_mib"] = rss_mib(pid)
    collection._conn.session.close()
    return result


def print_paging(label: str, result: dict) -> None:
    rss = (f"; server RSS while serving: peak {result['rss_peak_mib']:.1f} MiB sampled, VmHWM {result['hwm_mib']:.1f} MiB"
           if "rss_peak_mib" in result else "")
    state = "" if result["complete"] else " (INCOMPLETE: stopped at the time limit)"
    after = (f", {result['rate_after_first']:,.0f} objects/s after the first page"
             if result.get("rate_after_first") else "")
    print(f"{label}: {result['objects']:,} objects in {result['pages']} pages, {result['seconds']:.2f} s: "
          f"{result['rate']:,.0f} objects/s; first page {result['first_page_s'] * 1000:.0f} ms{after}{rss}{state}",
          flush=True)


def medallion_data(feed: Path, n: int, path: Path) -> None:
    """medallion's memory-backend file: discovery, one API root, one collection with objects and manifest."""
    objects = []
    with open(feed) as src:
        for _, line in zip(range(n), src):
            objects.append(json.loads(line))
    base = dt.datetime.now(dt.timezone.utc).replace(microsecond=0, tzinfo=None) - dt.timedelta(days=1)
    manifest = [{"id": o["id"], "date_added": (base + dt.timedelta(milliseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                 "version": o["modified"], "media_type": "application/stix+json;version=2.1"}
                for i, o in enumerate(objects)]
    data = {
        "/discovery": {"title": "medallion benchmark", "default": "http://127.0.0.1/bench/",
                       "api_roots": ["http://127.0.0.1/bench/"]},
        "bench": {
            "information": {"title": "bench", "versions": [TAXII], "max_content_length": 10 * 2**20},
            "status": [],
            "collections": [{
                "id": COLLECTION, "title": "indicators", "can_read": True, "can_write": False,
                "media_types": ["application/stix+json;version=2.1"], "objects": objects, "manifest": manifest,
            }],
        },
    }
    path.write_text(json.dumps(data))


def medallion_run(medallion: Path, feed: Path, n: int, page: int, workdir: Path, timeout: float) -> dict:
    data, conf = workdir / f"medallion-data-{n}.json", workdir / f"medallion-{n}.json"
    medallion_data(feed, n, data)
    conf.write_text(json.dumps({
        "backend": {"module": "medallion.backends.memory_backend", "module_class": "MemoryBackend",
                    "filename": str(data)},
        "users": {USER: PASSWORD},
        "taxii": {"max_page_size": page},
    }))
    port = free_ports(1)[0]
    log = workdir / f"medallion-{n}.log"
    proc = subprocess.Popen([str(medallion), "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARN",
                             str(conf)], stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(proc, port, log, "medallion", interval=0.01)
        result = paging_with_limit(f"http://127.0.0.1:{port}/bench/collections/{COLLECTION}/", page, n, proc.pid,
                                   timeout)
    finally:
        stop(proc, 30)
    return result


def paging_with_limit(url: str, page: int, count: int, pid: int, timeout: float) -> dict:
    """`paging`, but given up when one request takes longer than the time limit."""
    outcome: dict = {}

    def work() -> None:
        try:
            outcome.update(paging(url, page, count, pid, timeout))
        except Exception as err:  # the server was stopped under a request that ran out of time
            outcome["error"] = repr(err)

    worker = threading.Thread(target=work, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(timeout + 5)
    if worker.is_alive():
        took = time.monotonic() - started
        return {"objects": 0, "pages": 0, "seconds": took, "rate": 0.0, "first_page_s": took, "complete": False,
                "timed_out": True}
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", type=Path, default=target_dir() / "release" / "threatbus")
    parser.add_argument("--objects", type=int, default=1_000_000, help="indicators in the big store")
    parser.add_argument("--paging-objects", type=int, default=100_000, help="objects paged with taxii2-client")
    parser.add_argument("--page-size", type=int, default=1000, help="per_request, and both servers' max page size")
    parser.add_argument("--random-pages", type=int, default=300)
    parser.add_argument("--medallion-objects", default="1000,2000,5000,100000",
                        help="comma-separated collection sizes for medallion (and ours alongside)")
    parser.add_argument("--medallion-timeout", type=float, default=120, help="seconds per medallion paging run")
    parser.add_argument("--medallion", type=Path, default=Path(sys.executable).parent / "medallion")
    parser.add_argument("--skip-big", action="store_true", help="skip steps 1-3 (the big store)")
    args = parser.parse_args()
    if not args.bin.exists():
        sys.exit(f"{args.bin} missing: cargo build --release -p threatbus (or pass --bin)")
    sizes = [int(s) for s in args.medallion_objects.split(",") if s]
    report: dict = {"objects": args.objects, "paging_objects": args.paging_objects, "page_size": args.page_size}

    with tempfile.TemporaryDirectory(prefix="threatbus-taxii-bench-") as tmp:
        workdir = Path(tmp)
        feed = workdir / "indicators.ndjson"
        indicators(max(args.objects, args.paging_objects, *sizes), feed)

        if not args.skip_big:
            big = Bus(args.bin, workdir, "big", args.page_size)
            big_feed = workdir / "big.ndjson"
            head(feed, args.objects, big_feed)
            big.import_(big_feed, args.objects)
            big_feed.unlink()
            big.start()
            latency = page_latency(big, args.page_size, args.random_pages, args.objects)
            report["latency"] = latency
            print(f"[big] consecutive pages of {args.page_size} (whole collection, {latency['walk_objects']:,} objects "
                  f"in {latency['walk_s']:.1f} s, {latency['walk_objects'] / latency['walk_s']:,.0f} objects/s incl. "
                  f"JSON parsing): {fmt_ms(latency['walk'])}", flush=True)
            print(f"[big] random added_after: {fmt_ms(latency['random'])}; pages not full: "
                  f"{latency['random_short_pages']}", flush=True)
            result = paging(big.url, args.page_size, args.paging_objects, big.proc.pid)
            report["paging_big"] = result
            print_paging(f"[big] taxii2-client as_pages, {args.paging_objects:,} of {args.objects:,}", result)
            big.stop()
            big.remove_store()

        report["paging_fresh"], report["medallion"] = {}, {}
        for n in sorted(set([args.paging_objects, *sizes])):
            fresh = Bus(args.bin, workdir, f"fresh-{n}", args.page_size)
            part = workdir / f"first-{n}.ndjson"
            head(feed, n, part)
            fresh.import_(part, n)
            part.unlink()
            fresh.start()
            result = paging(fresh.url, args.page_size, n, fresh.proc.pid)
            report["paging_fresh"][n] = result
            print_paging(f"[fresh-{n}] taxii2-client as_pages, all {n:,}", result)
            fresh.stop()
            fresh.remove_store()
            if n in sizes:
                theirs = medallion_run(args.medallion, feed, n, args.page_size, workdir, args.medallion_timeout)
                report["medallion"][n] = theirs
                if theirs.get("timed_out"):
                    print(f"[medallion-{n}] no page within {args.medallion_timeout:.0f} s: given up", flush=True)
                    continue
                print_paging(f"[medallion-{n}] taxii2-client as_pages, all {n:,}", theirs)
                if theirs["complete"] and theirs["rate"]:
                    print(f"[ratio-{n}] ours {result['rate']:,.0f} / medallion {theirs['rate']:,.0f} objects/s "
                          f"= {result['rate'] / theirs['rate']:,.1f}x", flush=True)

    print("JSON " + json.dumps(report))


if __name__ == "__main__":
    main()
