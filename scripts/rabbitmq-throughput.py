#!/usr/bin/env python3
"""Throughput between two Threat Bus instances on one RabbitMQ exchange, measured with the
project's load generator.

Two bus processes (A and B) share a fanout exchange in a virtual host of this script's own.
The load generator subscribes at B (`--manage`) and publishes at A (`--publish-port`), so every
indicator travels app -> A -> RabbitMQ -> B -> app, with publisher confirms. Both instances
consume every message (fanout), so RabbitMQ stores and delivers each one twice.

One row per setting, each with fresh processes and a fresh virtual host: upstream's defaults
(durable, lazy queue; persistent messages), an in-memory queue, and batching
(`batch_messages`). With --python the Python Threat Bus (2022.5.16, threatbus-rabbitmq) runs
the same measurement for comparison.

Needs a RabbitMQ server on 127.0.0.1:5672 with guest/guest and `rabbitmqctl` on the PATH. Builds
the release binaries unless --bin-dir is given. Prints the table; --json writes the rows.

    python3 scripts/rabbitmq-throughput.py
    python3 scripts/rabbitmq-throughput.py -n 300000 --python
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AMQP = ("127.0.0.1", 5672)

# name, extra keys of plugins.backbones.rabbitmq, whether the Python bus understands it
SETTINGS = [
    ("defaults (durable, lazy)", {}, True),
    ("in-memory queue", {"queue": {"durable": False, "lazy": False}}, True),
    ("batch_messages: 100", {"batch_messages": 100}, False),
    ("batch_messages: 1000", {"batch_messages": 1000}, False),
]


def log(message: str) -> None:
    print(f"[rabbitmq-throughput] {message}", file=sys.stderr, flush=True)


def rabbitmqctl(*args: str) -> None:
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        sys.exit(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def config(vhost: str, suffix: str, ports: list[int], extra: dict) -> dict:
    section = {
        "host": AMQP[0], "port": AMQP[1], "username": "guest", "password": "guest",
        "vhost": vhost, "exchange_name": "threatbus-bench",
        "queue": {"name_suffix": suffix, "name_join_symbol": ".", "durable": True, "lazy": True,
                  "auto_delete": False, "exclusive": False, "max_items": 0},
    }
    manage, pub, sub = ports
    return {
        "logging": {"console": True, "console_verbosity": "WARNING", "file": False},
        "plugins": {
            "backbones": {"rabbitmq": merged(section, extra)},
            "apps": {"zmq": {"host": "127.0.0.1", "manage": manage, "pub": pub, "sub": sub}},
        },
    }


def start(command: list[str], cfg: dict, work: Path, name: str, timeout: float):
    path = work / f"{name}.yaml"
    path.write_text(json.dumps(cfg, indent=1))  # JSON is YAML; both buses read it
    log_file = open(work / f"{name}.log", "wb")
    proc = subprocess.Popen([*command, "-c", str(path)], stdout=log_file, stderr=subprocess.STDOUT,
                            cwd=work, start_new_session=True)
    manage = cfg["plugins"]["apps"]["zmq"]["manage"]
    deadline = time.monotonic() + timeout
    while not answers(manage):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            sys.exit(f"{name} did not start; its log:\n{(work / f'{name}.log').read_text()[-3000:]}")
        time.sleep(0.1)
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def beam_cpu_seconds() -> float | None:
    """CPU time of the RabbitMQ server process so far (if it runs on this machine)."""
    found = subprocess.run(["pgrep", "-o", "beam.smp"], capture_output=True, text=True)
    if found.returncode != 0:
        return None
    fields = Path(f"/proc/{found.stdout.split()[0]}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(command, loadgen, extra, n, work, name, startup) -> dict:
    vhost = f"tb-throughput-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    procs = []
    try:
        ports_a, ports_b = free_ports(3), free_ports(3)
        procs.append(start(command, config(vhost, "a", ports_a, extra), work, f"{name}-a", startup))
        procs.append(start(command, config(vhost, "b", ports_b, extra), work, f"{name}-b", startup))
        time.sleep(1)  # both queues bound before the warm-up
        beam_before = beam_cpu_seconds()
        run = subprocess.run(
            [str(loadgen), "--manage", str(ports_b[0]), "--publish-port", str(ports_a[2]),
             "-k", "1", "-n", str(n), "--timeout", "30", "--bus-pid", str(procs[1].pid), "--json"],
            capture_output=True, text=True, timeout=3600)
        beam_after = beam_cpu_seconds()
        if run.returncode != 0:
            sys.exit(f"load generator failed:\n{run.stdout}\n{run.stderr}")
        report = json.loads(run.stdout.strip().splitlines()[-1])
        row = report["subscribers"][0]
        beam = None
        if beam_before is not None and beam_after is not None:
            beam = (beam_after - beam_before) / n * 1e6
        latency = row.get("latency") or {}
        return {"msg_s": row["throughput"], "lost": row["lost"], "duplicates": row["duplicates"],
                "reordered": row["reordered"], "p50_ms": latency.get("p50_us", 0) / 1000,
                "beam_us_per_msg": beam, "table": run.stdout}
    finally:
        for proc in procs:
            stop(proc)
        subprocess.run([shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl", "delete_vhost", vhost],
                       capture_output=True, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-n", type=int, default=100_000, help="indicators per row (ours)")
    parser.add_argument("--n-python", type=int, default=10_000, help="indicators per row (Python)")
    parser.add_argument("--bin-dir", help="directory with release threatbus and threatbus-loadgen")
    parser.add_argument("--python", action="store_true",
                        help="also measure the Python Threat Bus (installed by the black-box tests "
                             "into ~/.cache/threatbus/upstream-venv, or THREATBUS_UPSTREAM_VENV)")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()

    try:
        socket.create_connection(AMQP, timeout=2).close()
    except OSError:
        sys.exit(f"no RabbitMQ on {AMQP[0]}:{AMQP[1]}")
    if args.bin_dir:
        bin_dir = Path(args.bin_dir)
    else:
        log("building the release binaries")
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "threatbus",
                        "-p", "threatbus-loadgen"], cwd=REPO, check=True)
        meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                              cwd=REPO, capture_output=True, text=True, check=True)
        bin_dir = Path(json.loads(meta.stdout)["target_directory"]) / "release"
    ours, loadgen = [str(bin_dir / "threatbus")], bin_dir / "threatbus-loadgen"
    impls = [("ours", ours, args.n, 10.0)]
    if args.python:
        venv = Path(os.environ.get("THREATBUS_UPSTREAM_VENV")
                    or Path.home() / ".cache" / "threatbus" / "upstream-venv")
        exe = venv / "bin" / "threatbus"
        if not exe.exists():
            sys.exit(f"{exe} not found: run tests/blackbox/test_rabbitmq.py once, or set "
                     "THREATBUS_UPSTREAM_VENV")
        impls.insert(0, ("python", [str(exe)], args.n_python, 40.0))

    rows = []
    with tempfile.TemporaryDirectory(prefix="tb-rmq-bench-") as tmp:
        work = Path(tmp)
        for label, extra, upstream_reads_it in SETTINGS:
            for impl, command, n, startup in impls:
                if impl == "python" and not upstream_reads_it:
                    continue
                log(f"{impl}: {label}, {n:,} indicators")
                result = measure(command, loadgen, extra, n, work, impl, startup)
                result.update({"impl": impl, "setting": label, "n": n})
                rows.append(result)
                log(f"  {result['msg_s']:,.0f} msg/s, lost {result['lost']}")

    print(f"{'setting':<26} {'bus':<7} {'indicators':>10} {'msg/s A->B':>11} {'lost':>6} "
          f"{'dup':>5} {'p50 ms':>9} {'RabbitMQ µs/msg':>16}")
    for row in rows:
        beam = f"{row['beam_us_per_msg']:.0f}" if row["beam_us_per_msg"] is not None else "-"
        print(f"{row['setting']:<26} {row['impl']:<7} {row['n']:>10,} {row['msg_s']:>11,.0f} "
              f"{row['lost']:>6} {row['duplicates']:>5} {row['p50_ms']:>9.1f} {beam:>16}")
    if args.json:
        Path(args.json).write_text(json.dumps([{k: v for k, v in r.items() if k != "table"}
                                               for r in rows], indent=1) + "\n")


if __name__ == "__main__":
    main()
