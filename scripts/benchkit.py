"""Helpers shared by the benchmark scripts (store-bench.py, taxii-bench.py, taxii-feeds-bench.py).

Finding the release binaries, picking free ports, waiting for a process to listen and stopping it,
reading a process's memory and CPU time from /proc, and writing STIX 2.1 indicators as NDJSON.
The scripts run as `python3 scripts/X.py`, so this folder is on `sys.path` and `import benchkit` works.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLLECTION = "3b8d8b4e-3f5a-4c1e-9c7d-1e2f3a4b5c61"  # the TAXII app's indicators collection
USER, PASSWORD = "bench", "bench-password"  # the TAXII user the benchmarks configure
TICK = os.sysconf("SC_CLK_TCK")


def target_dir() -> Path:
    """Cargo's target folder: $CARGO_TARGET_DIR, else target/ in the repository."""
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports on 127.0.0.1 that are free now (all bound at once, then released)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(proc: subprocess.Popen, port: int, log: Path, what: str, limit: float = 120,
             interval: float = 0.005) -> float:
    """Seconds until `port` accepts; exits the script (with the log's tail) if `proc` exits or `limit` passes."""
    started = time.monotonic()
    while not accepts(port):
        if proc.poll() is not None:
            sys.exit(f"{what} exited: {log.read_text()[-2000:]}")
        if time.monotonic() - started > limit:
            sys.exit(f"{what} did not start within {limit:.0f} s")
        time.sleep(interval)
    return time.monotonic() - started


def stop(proc: subprocess.Popen, limit: float = 60) -> float:
    """SIGTERM, wait up to `limit` seconds, then SIGKILL; the seconds the process took to exit."""
    started = time.monotonic()
    proc.terminate()
    try:
        proc.wait(limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return time.monotonic() - started


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB, from /proc/PID/status; NaN where a field is missing."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", float("nan")), fields.get("VmHWM", float("nan"))


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def stix_time(at: dt.datetime) -> str:
    """A STIX timestamp with milliseconds: `2026-12-06T10:00:00.123Z`."""
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def indicators(n: int, path: Path, *, name: str = "taxii benchmark", age: dt.timedelta = dt.timedelta(days=30),
               spacing: dt.timedelta = dt.timedelta(milliseconds=1), seed: int | None = 2112) -> None:
    """Writes n valid STIX 2.1 indicators to `path`, one JSON object per line.

    Indicator i has the pattern `[ipv4-addr:value = '10.a.b.c']` (i's low three bytes), the name
    `{name} {i}`, and created = modified = valid_from = (now, whole seconds) - `age` + i * `spacing`.
    Its id is a version-4 UUID drawn from random.Random(seed), or with `seed=None` the UUID of the
    integer i (so ids are sequential).
    """
    rng = random.Random(seed)
    base = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - age
    with open(path, "w") as out:
        for i in range(n):
            when = stix_time(base + i * spacing)
            ident = uuid.UUID(int=i if seed is None else rng.getrandbits(128), version=4)
            out.write(
                f'{{"type":"indicator","spec_version":"2.1","id":"indicator--{ident}",'
                f'"created":"{when}","modified":"{when}","name":"{name} {i}",'
                f'"pattern":"[ipv4-addr:value = \'10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}\']",'
                f'"pattern_type":"stix","valid_from":"{when}","labels":["malicious-activity"]}}\n'
            )
