#!/usr/bin/env python3
"""Side-by-side benchmark: the Python Threat Bus (threatbus 2022.5.16) against this Rust rewrite.

Rerun from the repository root, with any Python 3.9+ (standard library only; the script makes
its own venv for the Python original and matplotlib):

    python3 scripts/side-by-side.py            # everything (about 15-25 minutes on 2 cores)
    python3 scripts/side-by-side.py --quick    # throughput rows only
    python3 scripts/side-by-side.py --help     # every option

One invocation:

1. builds `threatbus` and `threatbus-loadgen` (cargo build --release; skip with --no-build or
   point --bin-dir at existing binaries) and copies both binaries aside, so a rebuild by someone
   else during the run does not change what is measured;
2. creates or reuses the venv with the Python original (scripts/bench-requirements.txt);
3. throughput: for each implementation and each K (1, 4, 16) starts a FRESH bus on free ports,
   runs `threatbus-loadgen --json --bus-pid PID -k K -n N --hwm H`, stops the bus with SIGTERM;
4. ours only: paced latency (--rate 10000, K = 1, 4, 16, N = 100000) and a stalled subscriber
   (K = 4 plus --stall 1, N = 1000000), the latter reading the bus's own drop counters from its
   "subscriber queue full" warnings;
5. prints the tables to stdout and writes OUT/side-by-side.json (every raw loadgen report, the
   configs, the machine), OUT/side-by-side.txt (the tables) and OUT/throughput.png.

Both buses get the same configuration in every common key (in-memory backbone, the ZeroMQ app on
127.0.0.1, console logging at WARNING). Ours runs with its documented defaults (send_hwm 1000,
receive_hwm 1000, bus.queue_capacity 10000, bus.when_full drop_newest), and the load
generator's publisher blocks instead of dropping (threatbus-loadgen --hwm > 0 sets
ZMQ_XPUB_NODROP), so any loss is the bus's. --ours-send-hwm, --ours-receive-hwm,
--ours-when-full and --ours-bus set other values (e.g. `--ours-when-full block` for the
docs/zmq.md advice for bulk loads). The stalled-subscriber rows always use
`when_full: drop_newest`: with `block` one stalled app holds up every app by design.

Progress goes to stderr, the result tables to stdout. Exit status: 0 when every row succeeded,
1 when any row failed (its row is marked FAILED and the others still run), 130 on Ctrl-C (all
child processes are killed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = Path(__file__).resolve().parent / "bench-requirements.txt"
PYTHON_VERSION_PIN = "2022.5.16"
HOST = "127.0.0.1"

# --------------------------------------------------------------------------------------------
# Child processes: every one is started in its own session (process group) and remembered, so
# Ctrl-C or an error kills exactly the processes this script started.

CHILDREN: dict[int, subprocess.Popen] = {}


def spawn(argv, **kwargs) -> subprocess.Popen:
    proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
    CHILDREN[proc.pid] = proc
    return proc


def forget(proc: subprocess.Popen) -> None:
    CHILDREN.pop(proc.pid, None)


def kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_children() -> None:
    for proc in list(CHILDREN.values()):
        if proc.poll() is None:
            kill_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for proc in list(CHILDREN.values()):
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill_group(proc, signal.SIGKILL)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        forget(proc)


def on_sigterm(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Small helpers


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now; held together so they differ from each other."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def other_builds() -> list[str]:
    """cargo/rustc processes on the machine (someone building) and load generators this script
    did not start (someone else benchmarking), as 'pid command' strings."""
    found = []
    # "threatbus-loadg" is threatbus-loadgen's name as the kernel truncates it (15 characters).
    for name in ("cargo", "rustc", "threatbus-loadg"):
        result = subprocess.run(["pgrep", "-a", "-x", name], capture_output=True, text=True)
        found += [line for line in result.stdout.splitlines() if line.strip()]
    own = {str(pid) for pid in CHILDREN}
    return [line for line in found if line.split()[0] not in own]


def wait_quiet(max_wait: float) -> None:
    """Waits while cargo or rustc runs (another build would skew the numbers)."""
    start = time.monotonic()
    told = False
    while True:
        busy = other_builds()
        if not busy:
            if told:
                log(f"  build finished after {time.monotonic() - start:.0f} s; measuring")
                time.sleep(2)
            return
        if time.monotonic() - start > max_wait:
            log(f"  still building after {max_wait:.0f} s; measuring anyway (numbers may be noisy)")
            return
        if not told:
            log(f"  waiting for a build or another benchmark to finish: {'; '.join(busy)[:200]}")
            told = True
        time.sleep(3)


class BuildWatch:
    """Notes whether cargo/rustc ran at any moment while a measurement was in progress."""

    def __init__(self):
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.wait(1.0):
            busy = other_builds()
            if busy and not self.seen:
                self.seen = busy

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run_text(argv, cwd=None) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=60)
        return result.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_info() -> dict:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split(":", 1)[1].split()[0])
                mem_total = f"{kib / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    dirty = run_text(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO)
    return {
        "nproc": os.cpu_count(),
        "nproc_cmd": run_text(["nproc"]),
        "cpu_model": cpu_model or platform.processor(),
        "mem_total": mem_total,
        "kernel": platform.release(),
        "uname": " ".join(platform.uname()),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": run_text(["git", "rev-parse", "HEAD"], cwd=REPO),
        "git_dirty_files": dirty.splitlines(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().strip()
        if Path("/proc/loadavg").exists()
        else "",
    }


# --------------------------------------------------------------------------------------------
# Setup: binaries and the venv


def find_binaries(args) -> tuple[Path, dict]:
    """Builds (unless told not to) and returns the directory with both binaries."""
    notes = {}
    if args.bin_dir:
        bin_dir = Path(args.bin_dir).resolve()
        notes["source"] = "--bin-dir"
    else:
        meta = subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps"],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        if meta.returncode != 0:
            sys.exit(f"cargo metadata failed (use --bin-dir):\n{meta.stderr}")
        bin_dir = Path(json.loads(meta.stdout)["target_directory"]) / "release"
        notes["source"] = "cargo metadata target_directory"
        if not args.no_build:
            wait_quiet(args.max_build_wait)
            log("building: cargo build --release -p threatbus -p threatbus-loadgen")
            build = spawn(
                ["cargo", "build", "--release", "-p", "threatbus", "-p", "threatbus-loadgen"],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            output, _ = build.communicate()
            forget(build)
            notes["build_exit"] = build.returncode
            if build.returncode != 0:
                log(output[-4000:])
                log("WARNING: the build failed; using the binaries already in " + str(bin_dir))
                notes["build_output_tail"] = output[-4000:]
    for name in ("threatbus", "threatbus-loadgen"):
        if not (bin_dir / name).is_file():
            sys.exit(f"{bin_dir / name} not found (build it or pass --bin-dir)")
    return bin_dir, notes


def snapshot_binaries(bin_dir: Path, work: Path) -> tuple[Path, Path, dict]:
    """Copies both binaries aside so every row measures the same build."""
    info = {}
    copies = []
    for name in ("threatbus", "threatbus-loadgen"):
        src = bin_dir / name
        dst = work / name
        shutil.copy2(src, dst)
        copies.append(dst)
        info[name] = {
            "path": str(src),
            "mtime": dt.datetime.fromtimestamp(src.stat().st_mtime, dt.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "sha256": sha256(dst),
        }
    info["loadgen_version"] = run_text([str(copies[1]), "--version"])
    return copies[0], copies[1], info


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def venv_ok(venv: Path) -> bool:
    python = venv_python(venv)
    if not python.exists() or not (venv / "bin" / "threatbus").exists():
        return False
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, threatbus, threatbus_zmq, threatbus_inmem, matplotlib;"
            f"assert m.version('threatbus') == '{PYTHON_VERSION_PIN}', m.version('threatbus')",
        ],
        capture_output=True,
        text=True,
    )
    return probe.returncode == 0


def ensure_venv(venv: Path) -> dict:
    if not venv_ok(venv):
        log(f"creating the bench venv {venv} (pip install -r {REQUIREMENTS.relative_to(REPO)})")
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check"]
        subprocess.run(pip + ["-q", "--upgrade", "pip"], check=False)
        result = subprocess.run(pip + ["-r", str(REQUIREMENTS)])
        if result.returncode != 0 or not venv_ok(venv):
            sys.exit(f"could not install the Python Threat Bus into {venv}")
    versions = run_text(
        [
            str(venv_python(venv)),
            "-c",
            "import importlib.metadata as m, json, sys;"
            "print(json.dumps({p: m.version(p) for p in "
            "['threatbus','threatbus-zmq','threatbus-inmem','pyzmq','stix2','dynaconf','matplotlib']}"
            " | {'python': sys.version.split()[0]}))",
        ]
    )
    try:
        return json.loads(versions)
    except json.JSONDecodeError:
        return {}


# --------------------------------------------------------------------------------------------
# Configurations: identical in every key both implementations know


def yaml_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(str(value))


def config_text(ports, verbosity, zmq_extra=None, bus_section=None, store=False) -> str:
    manage, pub, sub = ports
    zmq = {"host": HOST, "manage": manage, "pub": pub, "sub": sub}
    zmq.update(zmq_extra or {})
    lines = [
        "logging:",
        "  console: true",
        f"  console_verbosity: {verbosity}",
    ]
    if bus_section:
        lines.append("bus:")
        lines += [f"  {key}: {yaml_scalar(value)}" for key, value in bus_section.items()]
    lines += [
        "plugins:",
        "  backbones:",
        "    inmem: {}",
        "  apps:",
        "    zmq:",
    ]
    lines += [f"      {key}: {yaml_scalar(value)}" for key, value in zmq.items()]
    if store:
        # In the run's own directory (the bus's working directory): a fresh store per run.
        lines += ["store:", "  path: store"]
    return "\n".join(lines) + "\n"


def parse_kv(items: list[str], what: str) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            sys.exit(f"{what}: expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = int(value) if re.fullmatch(r"-?\d+", value.strip()) else value.strip()
    return out


# --------------------------------------------------------------------------------------------
# One measurement


class Impl:
    def __init__(self, name, label, argv_prefix, startup_timeout, zmq_extra, bus_section):
        self.name = name  # "ours" or "python"
        self.label = label
        self.argv_prefix = argv_prefix
        self.startup_timeout = startup_timeout
        self.zmq_extra = zmq_extra
        self.bus_section = bus_section
        self.store = False


def start_bus(impl: Impl, cfg: str, run_dir: Path):
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.yaml"
    config_path.write_text(cfg)
    stdout = (run_dir / "bus.stdout").open("wb")
    stderr = (run_dir / "bus.stderr").open("wb")
    proc = spawn(
        impl.argv_prefix + ["-c", str(config_path)],
        cwd=run_dir,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
    )
    stdout.close()
    stderr.close()
    return proc


def stop_bus(proc: subprocess.Popen, grace: float) -> int | None:
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log(f"  bus pid {proc.pid} ignored SIGTERM for {grace:.0f} s: SIGKILL")
            kill_group(proc, signal.SIGKILL)
            proc.wait(timeout=10)
    # Stray helpers of the bus (e.g. Python multiprocessing) share its process group.
    kill_group(proc, signal.SIGKILL)
    forget(proc)
    return proc.returncode


def parse_report(stdout: str):
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def bus_log_figures(stderr_text: str) -> dict:
    """Our bus's "subscriber queue full" warnings (largest dropped_total per label) and the
    order of "ZeroMQ app subscribed" lines (INFO only)."""
    drops: dict[str, dict] = {}
    subscribed: list[str] = []
    summary = None
    for raw in stderr_text.splitlines():
        line = ANSI.sub("", raw)
        totals = re.search(r"\bdelivered (\d+), dropped \(queue full\) (\d+)", line)
        if totals:  # the shutdown summary, logged at INFO
            summary = {"delivered": int(totals.group(1)), "dropped_queue_full": int(totals.group(2)),
                       "line": line.strip()[-400:]}
        if "subscriber queue full" in line:
            label = re.search(r"\blabel=(\S+)", line)
            total = re.search(r"\bdropped_total=(\d+)", line)
            sub = re.search(r"\bsubscriber=(\S+)", line)
            if label and total:
                key = label.group(1).strip('"')
                entry = drops.setdefault(key, {"subscriber": sub.group(1) if sub else None, "dropped_total": 0})
                entry["dropped_total"] = max(entry["dropped_total"], int(total.group(1)))
        elif "ZeroMQ app subscribed" in line:
            topic = re.search(r"\bp2p_topic=(\S+)", line)
            if topic:
                subscribed.append(topic.group(1).strip('"'))
    return {
        "dropped_by_label": drops,
        "dropped_total": sum(entry["dropped_total"] for entry in drops.values()),
        "subscribed_order": subscribed,
        "shutdown_summary": summary,
    }


def figures(report: dict) -> dict:
    subs = report.get("subscribers") or []
    rates = [s.get("throughput", 0.0) for s in subs]
    latency = report.get("latency") or {}
    bus = report.get("bus") or {}

    def ms(key):
        return latency[key] / 1000.0 if key in latency else None

    return {
        "sub_mean": sum(rates) / len(rates) if rates else 0.0,
        "sub_min": min(rates) if rates else 0.0,
        "deliveries_per_s": report.get("deliveries_per_s", 0.0),
        "lost": report.get("lost", 0),
        "duplicates": report.get("duplicates", 0),
        "reordered": report.get("reordered", 0),
        "p50_ms": ms("p50_us"),
        "p99_ms": ms("p99_us"),
        "max_ms": ms("max_us"),
        "rss_peak_mib": bus.get("hwm_mib"),
        "rss_sampled_peak_mib": bus.get("rss_peak_mib"),
        "rss_start_mib": bus.get("rss_start_mib"),
        "cpu_percent": bus.get("cpu_percent"),
        "send_rate": report.get("send_rate"),
        "duration_s": report.get("duration_s"),
        "complete": report.get("complete"),
    }


def measure(args, impl: Impl, mode: str, k: int, n: int, loadgen: Path, work: Path,
            extra_args=(), verbosity="WARNING", zmq_extra=None, variant="",
            bus_section=None) -> dict:
    """Fresh bus, one loadgen run, bus stopped. Never raises for a failed run."""
    ports = free_ports(3)
    zmq_extra = impl.zmq_extra if zmq_extra is None else zmq_extra
    cfg = config_text(ports, verbosity, zmq_extra,
                      impl.bus_section if bus_section is None else bus_section, store=impl.store)
    run_dir = work / f"{impl.name}-{mode}{('-' + variant) if variant else ''}-k{k}-n{n}-{time.time_ns()}"
    row = {
        "impl": impl.name,
        "mode": mode,
        "variant": variant,
        "k": k,
        "n": n,
        "status": "failed",
        "error": None,
        "config": cfg,
        "report": None,
        "figures": None,
        "bus_exit": None,
        "bus_log": None,
    }
    started = time.monotonic()
    bus = start_bus(impl, cfg, run_dir)
    try:
        deadline = time.monotonic() + impl.startup_timeout
        while not port_answers(ports[0]):
            if bus.poll() is not None:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if bus.poll() is not None or not port_answers(ports[0]):
            why = (f"exited with status {bus.returncode}" if bus.poll() is not None
                   else f"manage port {ports[0]} not answering after {impl.startup_timeout:.0f} s")
            row["error"] = f"bus did not start: {why}"
            log(f"  FAILED: {row['error']}; bus stderr:\n{tail(run_dir / 'bus.stderr')}")
            return row
        row["startup_s"] = round(time.monotonic() - started, 3)
        timeout = args.python_timeout if impl.name == "python" else args.ours_timeout
        argv = [
            str(loadgen), "--json", "--host", HOST, "--manage", str(ports[0]),
            "--bus-pid", str(bus.pid), "-k", str(k), "-n", str(n),
            "--hwm", str(args.hwm), "--timeout", str(timeout), *extra_args,
        ]
        row["loadgen_argv"] = argv[1:]
        # Wall-clock guard for a hung generator (it normally ends by itself within --timeout
        # of the last receive): generous, from the slowest rate we expect.
        guard = 300 + timeout * 3 + n / (50.0 if impl.name == "python" else 2000.0)
        with BuildWatch() as watch:
            gen = spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True)
            try:
                out, err = gen.communicate(timeout=guard)
            except subprocess.TimeoutExpired:
                kill_group(gen, signal.SIGKILL)
                out, err = gen.communicate()
                err += f"\n(killed after {guard:.0f} s)"
            # Forgotten only once it has ended: on Ctrl-C it stays registered and is killed.
            forget(gen)
        row["noisy_builds"] = watch.seen
        row["loadgen_exit"] = gen.returncode
        row["loadgen_stderr"] = err[-4000:]
        report = parse_report(out)
        row["report"] = report
        if gen.returncode != 0 or report is None:
            row["error"] = f"loadgen exit {gen.returncode}" + ("" if report else ", no JSON report")
            log(f"  FAILED: {row['error']}; loadgen stderr:\n{err[-3000:]}\n"
                f"  bus stderr:\n{tail(run_dir / 'bus.stderr')}")
            return row
        if bus.poll() is not None:
            row["error"] = f"bus exited during the run with status {bus.returncode}"
            log(f"  FAILED: {row['error']}; bus stderr:\n{tail(run_dir / 'bus.stderr')}")
            return row
        row["figures"] = figures(report)
        row["status"] = "ok"
        return row
    finally:
        row["bus_exit"] = stop_bus(bus, args.stop_grace)
        stderr_text = ""
        try:
            stderr_text = (run_dir / "bus.stderr").read_text(errors="replace")
        except OSError:
            pass
        row["bus_stderr_tail"] = "\n".join(stderr_text.splitlines()[-30:])
        if impl.name == "ours":
            row["bus_log"] = bus_log_figures(stderr_text)
        row["wall_s"] = round(time.monotonic() - started, 2)
        if not args.keep_work:
            shutil.rmtree(run_dir, ignore_errors=True)


def measure_checked(args, impl, mode, k, n, loadgen, work, **kwargs) -> dict:
    """measure() with reruns of rows that overlapped a build or look implausibly slow."""
    attempts = []
    for attempt in range(1 + args.retries):
        wait_quiet(args.max_build_wait)
        row = measure(args, impl, mode, k, n, loadgen, work, **kwargs)
        attempts.append(row)
        reason = None
        if row["status"] == "ok":
            if row.get("noisy_builds"):
                reason = f"a build or another benchmark ran during the measurement ({row['noisy_builds'][0][:60]})"
            elif (impl.name == "ours" and mode == "throughput" and k == 1
                  and row["figures"]["sub_mean"] < args.ours_k1_floor):
                reason = (f"ours at K=1 moved {row['figures']['sub_mean']:.0f} msg/s, below "
                          f"{args.ours_k1_floor:.0f}")
        if reason is None or attempt == args.retries:
            if reason:
                row["suspect"] = reason
                log(f"  note: {reason}; keeping this result after {attempt + 1} attempt(s)")
            break
        log(f"  rerunning: {reason}")
    final = attempts[-1]
    final["attempts"] = len(attempts)
    if len(attempts) > 1:
        final["discarded_attempts"] = [
            {"figures": a.get("figures"), "status": a["status"], "suspect": a.get("suspect"),
             "noisy_builds": a.get("noisy_builds"), "report": a.get("report")}
            for a in attempts[:-1]
        ]
    return final


def describe(row: dict) -> str:
    if row["status"] != "ok":
        return f"FAILED ({row['error']}) in {row.get('wall_s', 0):.0f} s"
    f = row["figures"]
    text = (f"{f['sub_mean']:,.0f} msg/s/sub (min {f['sub_min']:,.0f}), lost {f['lost']:,}, "
            f"p99 {fmt_ms(f['p99_ms'])} ms, RSS {fmt_num(f['rss_peak_mib'], 1)} MiB, "
            f"CPU {fmt_num(f['cpu_percent'], 0)} % in {row['wall_s']:.0f} s")
    if row.get("bus_log") and row["bus_log"]["dropped_total"]:
        text += f"; bus logged {row['bus_log']['dropped_total']:,} queue-full drops"
    return text


# --------------------------------------------------------------------------------------------
# Tables


def fmt_num(value, digits=0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def fmt_ms(value) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def fmt_ratio(a, b) -> str:
    if a is None or b is None or b == 0:
        return "-"
    ratio = a / b
    return f"{ratio:,.1f}x" if ratio >= 10 else f"{ratio:.2f}x"


def table(headers, rows, align=None) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    align = align or ["<"] + [">"] * (len(headers) - 1)
    def line(cells):
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    return "\n".join(out)


def throughput_table(rows, ks, labels) -> str:
    headers = ["implementation", "K", "N", "msg/s/sub mean", "msg/s/sub min", "deliveries/s",
               "lost", "dup", "bus drops", "p50 ms", "p99 ms", "peak RSS MiB", "CPU %", "status"]
    body = []
    by_key = {(r["impl"], r["k"]): r for r in rows}
    for impl in ("python", "ours"):
        for k in ks:
            r = by_key.get((impl, k))
            if r is None:
                continue
            f = r["figures"] or {}
            drops = "-"
            if impl == "ours" and r["status"] == "ok" and r.get("bus_log") is not None:
                drops = f"{r['bus_log']['dropped_total']:,}"
            status = "ok" if r["status"] == "ok" else "FAILED"
            if r["status"] == "ok" and not f.get("complete"):
                status = "lossy" if f.get("lost") else "incomplete"
            if r.get("suspect"):
                status += " (suspect)"
            body.append([
                labels[impl], str(k), f"{r['n']:,}",
                fmt_num(f.get("sub_mean")), fmt_num(f.get("sub_min")),
                fmt_num(f.get("deliveries_per_s")), fmt_num(f.get("lost")),
                fmt_num(f.get("duplicates")), drops, fmt_ms(f.get("p50_ms")),
                fmt_ms(f.get("p99_ms")), fmt_num(f.get("rss_peak_mib"), 1),
                fmt_num(f.get("cpu_percent")), status,
            ])
    for k in ks:
        ours, py = by_key.get(("ours", k)), by_key.get(("python", k))
        if not ours or not py:
            continue
        fo, fp = ours["figures"] or {}, py["figures"] or {}
        body.append([
            "ratio ours/python", str(k), "",
            fmt_ratio(fo.get("sub_mean"), fp.get("sub_mean")),
            fmt_ratio(fo.get("sub_min"), fp.get("sub_min")),
            fmt_ratio(fo.get("deliveries_per_s"), fp.get("deliveries_per_s")),
            "", "", "", fmt_ratio(fo.get("p50_ms"), fp.get("p50_ms")),
            fmt_ratio(fo.get("p99_ms"), fp.get("p99_ms")),
            fmt_ratio(fo.get("rss_peak_mib"), fp.get("rss_peak_mib")),
            fmt_ratio(fo.get("cpu_percent"), fp.get("cpu_percent")),
            "" if (ours["status"] == "ok" and py["status"] == "ok") else "FAILED",
        ])
    return table(headers, body)


def latency_table(rows) -> str:
    headers = ["implementation", "K", "N", "rate msg/s", "sent msg/s", "lost", "p50 ms",
               "p99 ms", "max ms", "peak RSS MiB", "CPU %", "status"]
    body = []
    for r in rows:
        f = r["figures"] or {}
        rate = (r.get("report") or {}).get("config", {}).get("rate")
        body.append([
            "ours", str(r["k"]), f"{r['n']:,}", fmt_num(rate), fmt_num(f.get("send_rate")),
            fmt_num(f.get("lost")), fmt_ms(f.get("p50_ms")), fmt_ms(f.get("p99_ms")),
            fmt_ms(f.get("max_ms")), fmt_num(f.get("rss_peak_mib"), 1),
            fmt_num(f.get("cpu_percent")),
            ("ok" if r["status"] == "ok" else "FAILED") + (" (suspect)" if r.get("suspect") else ""),
        ])
    return table(headers, body)


def stall_table(rows) -> str:
    headers = ["config", "K+stalled", "N", "msg/s/sub mean", "msg/s/sub min", "loadgen lost",
               "bus drops stalled", "bus drops others", "bus drops (summary)", "peak RSS MiB",
               "CPU %", "status"]
    body = []
    for r in rows:
        f = r["figures"] or {}
        s = r.get("stall") or {}
        body.append([
            r["variant"], f"{r['k']}+{s.get('stalled', 1)}", f"{r['n']:,}",
            fmt_num(f.get("sub_mean")), fmt_num(f.get("sub_min")), fmt_num(f.get("lost")),
            fmt_num(s.get("bus_dropped_stalled")), fmt_num(s.get("bus_dropped_measured")),
            fmt_num(s.get("bus_dropped_shutdown_summary")),
            fmt_num(f.get("rss_peak_mib"), 1), fmt_num(f.get("cpu_percent")),
            ("ok" if r["status"] == "ok" else "FAILED") + (" (suspect)" if r.get("suspect") else ""),
        ])
    return table(headers, body)


def stall_figures(row: dict, k: int, stalled: int) -> dict:
    log_figures = row.get("bus_log") or {}
    order = log_figures.get("subscribed_order") or []
    drops = log_figures.get("dropped_by_label") or {}
    out = {"stalled": stalled, "subscribed_order_seen": len(order)}
    summary = log_figures.get("shutdown_summary") or {}
    out["bus_dropped_shutdown_summary"] = summary.get("dropped_queue_full")
    if len(order) >= k + stalled:
        # The loadgen subscribes the K measured subscribers first, then the stalled ones.
        measured, stalled_labels = order[:k], order[k:k + stalled]
        out["stalled_labels"] = stalled_labels
        out["bus_dropped_stalled"] = sum(drops.get(l, {}).get("dropped_total", 0) for l in stalled_labels)
        out["bus_dropped_measured"] = sum(drops.get(l, {}).get("dropped_total", 0) for l in measured)
    else:
        out["note"] = "no 'ZeroMQ app subscribed' lines to tell the stalled subscriber apart"
        out["bus_dropped_all"] = log_figures.get("dropped_total")
    return out


# --------------------------------------------------------------------------------------------
# Chart (runs under the venv's python, which has matplotlib)


def plot(results_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(results_path.read_text())
    machine = data["machine"]
    ks = data["settings"]["ks"]
    labels = data["settings"]["labels"]
    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=120)
    styles = {"ours": ("tab:orange", "o"), "python": ("tab:blue", "s")}
    for impl in ("ours", "python"):
        rows = [r for r in data["throughput"] if r["impl"] == impl and r["status"] == "ok"]
        rows.sort(key=lambda r: r["k"])
        if not rows:
            continue
        xs = [r["k"] for r in rows]
        mean = [r["figures"]["sub_mean"] for r in rows]
        low = [r["figures"]["sub_min"] for r in rows]
        n = rows[0]["n"]
        color, marker = styles[impl]
        ax.plot(xs, mean, marker=marker, color=color, linewidth=2,
                label=f"{labels[impl]} (N = {n:,}; mean, band down to min)")
        ax.fill_between(xs, low, mean, color=color, alpha=0.18, linewidth=0)
        for x, y in zip(xs, mean):
            ax.annotate(f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(0, 8),
                        ha="center", fontsize=8, color=color)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    ax.set_ylim(low / 1.5, high * 2.0)  # room for the value labels
    ax.set_xlabel("subscribers K")
    ax.set_ylabel("throughput per subscriber (msg/s, log scale)")
    date = machine["date"][:10]
    ax.set_title(
        f"Threat Bus throughput per subscriber: Rust rewrite vs Python 2022.5.16\n"
        f"{machine['cpu_model']}, {machine['nproc']} CPUs, Linux {machine['kernel']}, {date}",
        fontsize=9.5,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    settings = data["settings"]
    zmq = settings.get("ours_zmq", {})
    fig.text(
        0.01, 0.005,
        f"commit {machine.get('git_commit', '')[:12]}; threatbus-loadgen --hwm {settings.get('loadgen_hwm')}, "
        f"1 publisher, flat out\nours: "
        + (", ".join(f"{k} {v}" for k, v in {**zmq, **(settings.get("ours_bus") or {})}.items())
           or "default settings")
        + "; Python: pyzmq defaults; data: side-by-side.json",
        fontsize=6.5, color="gray",
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(png)
    print(f"wrote {png}")


# --------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=(
            "Benchmark the Python Threat Bus (threatbus 2022.5.16, installed into a venv) and this "
            "Rust rewrite side by side with threatbus-loadgen: per-subscriber throughput, "
            "deliveries/s, loss, latency, bus peak RSS and CPU for K subscribers, plus (ours "
            "only) paced latency and a stalled-subscriber run. Prints tables to stdout and "
            "writes OUT/side-by-side.json, OUT/side-by-side.txt and OUT/throughput.png."
        ),
        epilog=(
            "Every run starts a fresh bus on free ports and stops it with SIGTERM. Both buses get "
            "the same config in the keys both know (inmem backbone, zmq app on 127.0.0.1, console "
            "logging at WARNING); ours runs with its documented defaults unless --ours-* options say "
            "otherwise; its stall rows use when_full: drop_newest. Runs wait while cargo/rustc is running "
            "or another threatbus-loadgen runs elsewhere and are repeated (--retries) if a build overlapped them or ours moves fewer "
            "than --ours-k1-floor msg/s at K=1. Exit status 1 if any row failed, 130 on Ctrl-C."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", default=str(REPO / "docs" / "perf"),
                        help="output directory (created)")
    parser.add_argument("--venv", default=str(Path.home() / ".cache" / "threatbus" / "bench-venv"),
                        help="venv for the Python original and matplotlib (created if missing)")
    parser.add_argument("--bin-dir", help="directory with threatbus and threatbus-loadgen "
                        "(default: cargo metadata's target_directory/release, built first)")
    parser.add_argument("--no-build", action="store_true",
                        help="do not run cargo build; use the binaries as they are")
    parser.add_argument("--impls", default="python,ours",
                        help="implementations to run, comma-separated: python, ours")
    parser.add_argument("--ks", default="1,4,16", help="subscriber counts K for the throughput rows")
    parser.add_argument("--n-python", type=int, default=20000,
                        help="indicators per throughput run against the Python bus (~900 msg/s)")
    parser.add_argument("--n-ours", type=int, default=200000,
                        help="indicators per throughput run against our bus")
    parser.add_argument("--hwm", type=int, default=1000,
                        help="threatbus-loadgen --hwm for every run: the generator's publisher "
                        "waits for room at this many queued messages instead of dropping, so any "
                        "loss is the bus's (0 = unlimited buffers in the generator)")
    parser.add_argument("--ours-send-hwm", type=int, default=None,
                        help="plugins.apps.zmq.send_hwm for our bus (default: not set, i.e. 1000; "
                        "Python: pyzmq default 1000)")
    parser.add_argument("--ours-receive-hwm", type=int, default=None,
                        help="plugins.apps.zmq.receive_hwm for our bus (default: not set, i.e. "
                        "1000; Python: pyzmq default 1000)")
    parser.add_argument("--ours-when-full", choices=("block", "drop_newest"), default=None,
                        help="bus.when_full of our bus in the throughput and latency rows "
                        "(docs/zmq.md: block for bulk loads where no message may be lost); the "
                        "stall rows always use drop_newest")
    parser.add_argument("--ours-store", action="store_true",
                        help="run ours with an embedded store (a fresh `store.path` per run): "
                             "subscribers that fall behind catch up from it instead of losing messages")
    parser.add_argument("--ours-bus", action="append", default=[], metavar="KEY=VALUE",
                        help="add another `bus:` setting to our config, e.g. queue_capacity=100000 "
                        "(repeatable; applies to every row of ours)")
    parser.add_argument("--python-timeout", type=float, default=60.0,
                        help="threatbus-loadgen --timeout against the Python bus, seconds")
    parser.add_argument("--ours-timeout", type=float, default=10.0,
                        help="threatbus-loadgen --timeout against our bus, seconds")
    parser.add_argument("--python-startup", type=float, default=90.0,
                        help="seconds to wait for the Python bus's manage port")
    parser.add_argument("--ours-startup", type=float, default=20.0,
                        help="seconds to wait for our bus's manage port")
    parser.add_argument("--stop-grace", type=float, default=20.0,
                        help="seconds a bus gets after SIGTERM before SIGKILL")
    parser.add_argument("--quick", action="store_true",
                        help="throughput rows only (same as --no-latency --no-stall)")
    parser.add_argument("--latency", action=argparse.BooleanOptionalAction, default=True,
                        help="paced latency rows for ours: --rate RATE, K in --latency-ks, N = --latency-n")
    parser.add_argument("--rate", type=float, default=10000.0, help="rate of the paced latency rows")
    parser.add_argument("--latency-ks", default="1,4,16", help="K for the paced latency rows")
    parser.add_argument("--latency-n", type=int, default=100000, help="N of the paced latency rows")
    parser.add_argument("--stall", action=argparse.BooleanOptionalAction, default=True,
                        help="stalled-subscriber rows for ours: K = --stall-k plus one "
                        "subscriber that never reads, N = --stall-n")
    parser.add_argument("--stall-k", type=int, default=4, help="measured subscribers of the stall rows")
    parser.add_argument("--stall-n", type=int, default=1000000, help="N of the stall rows")
    parser.add_argument("--stall-configs", default="bulk,default",
                        help="socket settings of our bus in the stall rows: bulk (the "
                        "--ours-send-hwm/--ours-receive-hwm of the other rows) and/or default "
                        "(no send_hwm/receive_hwm keys: 1000 each). Logged at INFO to tell the "
                        "stalled subscriber's drops apart")
    parser.add_argument("--retries", type=int, default=3,
                        help="reruns of a row that overlapped a build or looks implausibly slow")
    parser.add_argument("--ours-k1-floor", type=float, default=30000.0,
                        help="ours below this many msg/s at K=1 counts as implausible (rerun)")
    parser.add_argument("--max-build-wait", type=float, default=1800.0,
                        help="longest wait, in seconds, for other cargo/rustc processes and load "
                        "generators this script did not start to finish")
    parser.add_argument("--keep-work", action="store_true",
                        help="keep each run's config and bus logs (path printed at the end)")
    parser.add_argument("--plot-from", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.latency = False
        args.stall = False
    return args


def ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.plot_from:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        plot(Path(args.plot_from), Path(args.out) / "throughput.png")
        return 0

    signal.signal(signal.SIGTERM, on_sigterm)
    wall_start = time.monotonic()
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    impls_wanted = [name.strip() for name in args.impls.split(",") if name.strip()]
    for name in impls_wanted:
        if name not in ("python", "ours"):
            sys.exit(f"--impls: unknown implementation {name!r}")
    ks = ints(args.ks)
    work = Path(tempfile.mkdtemp(prefix="threatbus-side-by-side-"))
    finisher = [None]  # writes the outputs; set once the setup is done

    try:
        venv = Path(args.venv).expanduser()
        python_versions = ensure_venv(venv)
        bin_dir, build_notes = find_binaries(args)
        bus_bin, loadgen_bin, binaries = snapshot_binaries(bin_dir, work)
        binaries["build"] = build_notes
        machine = machine_info()

        ours_zmq = {key: value for key, value in
                    (("send_hwm", args.ours_send_hwm), ("receive_hwm", args.ours_receive_hwm))
                    if value is not None}
        ours_bus = {"when_full": args.ours_when_full} if args.ours_when_full else {}
        ours_bus.update(parse_kv(args.ours_bus, "--ours-bus"))
        stall_bus = dict(ours_bus, when_full="drop_newest")
        impls = {
            "python": Impl("python", f"Python threatbus {python_versions.get('threatbus', PYTHON_VERSION_PIN)}",
                           [str(venv / "bin" / "threatbus")], args.python_startup, {}, None),
            "ours": Impl("ours", "ours (Rust)", [str(bus_bin)], args.ours_startup, ours_zmq,
                         ours_bus or None),
        }
        impls["ours"].store = args.ours_store
        labels = {name: impl.label for name, impl in impls.items()}

        doc_says_block = args.ours_when_full == "block"
        header = [
            "Threat Bus side by side: Python original vs Rust rewrite (threatbus-loadgen)",
            f"machine   {machine['cpu_model']}, {machine['nproc']} CPUs, {machine['mem_total']}, "
            f"Linux {machine['kernel']}, {machine['date']}",
            f"commit    {machine['git_commit'][:12]}"
            + (f" (+{len(machine['git_dirty_files'])} modified files)" if machine["git_dirty_files"] else ""),
            f"python    threatbus {python_versions.get('threatbus')}, threatbus-zmq "
            f"{python_versions.get('threatbus-zmq')}, pyzmq {python_versions.get('pyzmq')}, "
            f"Python {python_versions.get('python')} ({venv})",
            f"ours      {binaries['threatbus']['path']} (built {binaries['threatbus']['mtime']})",
            "config    both: inmem backbone, zmq app on 127.0.0.1 (fresh free ports per run), "
            "console logging WARNING",
            "          ours: " + (", ".join(f"{k} {v}" for k, v in ours_zmq.items())
                                  or "default socket settings (send_hwm 1000, receive_hwm 1000)"),
            "          bus: " + (", ".join(f"{k}={v}" for k, v in ours_bus.items())
                              or "defaults (queue_capacity 10000, when_full drop_newest)")
            + (" (docs/zmq.md: when_full block for bulk loads where no message may be lost)"
               if doc_says_block and args.ours_when_full == "block" else "")
            + "; stall rows: when_full=drop_newest"
            + ("; embedded store on (catch-up)" if args.ours_store else "; no store"),
            "          python: pyzmq default HWMs (1000), unbounded internal queues (never drops)",
            f"loadgen   --hwm {args.hwm} (ZMQ_XPUB_NODROP: the publisher blocks instead of dropping), 1 publisher, "
            f"timeout {args.python_timeout:g} s python / {args.ours_timeout:g} s ours; "
            f"N = {args.n_python:,} python, {args.n_ours:,} ours",
        ]
        log("\n".join(header))

        plan = []
        for impl_name in ("python", "ours"):
            if impl_name in impls_wanted:
                for k in ks:
                    n = args.n_python if impl_name == "python" else args.n_ours
                    plan.append(("throughput", impl_name, k, n))
        if "ours" in impls_wanted and args.latency:
            for k in ints(args.latency_ks):
                plan.append(("latency", "ours", k, args.latency_n))
        if "ours" in impls_wanted and args.stall:
            for variant in [v.strip() for v in args.stall_configs.split(",") if v.strip()]:
                if variant not in ("bulk", "default"):
                    sys.exit(f"--stall-configs: unknown {variant!r}")
                if variant == "bulk" and not ours_zmq:
                    continue  # the same as `default` when no socket settings are given
                plan.append(("stall:" + variant, "ours", args.stall_k, args.stall_n))

        results = {"throughput": [], "latency": [], "stall": []}
        def finish(interrupted: bool) -> int:
            sections = ["\n".join(header), "",
                        "THROUGHPUT (flat out; msg/s per subscriber = distinct messages / time from "
                        "first send to that subscriber's last receive; peak RSS = VmHWM of the fresh bus; "
                        "bus drops = our bus's logged queue-full drops; ratio = ours / python)",
                        throughput_table(results["throughput"], ks, labels)]
            if results["latency"]:
                sections += ["", f"PACED LATENCY (ours; --rate {args.rate:g}; latency = receive - send time "
                             "over all deliveries)", latency_table(results["latency"])]
            if results["stall"]:
                sections += ["", "STALLED SUBSCRIBER (ours; one extra subscriber with a one-message "
                             "receive buffer that never reads; when_full drop_newest; bulk = "
                             "send/receive_hwm as above, "
                             "default = no send_hwm/receive_hwm keys (1000 each); bus drops = largest dropped_total of the bus's "
                             "'subscriber queue full' warnings, stalled vs measured subscribers, and "
                             "the 'dropped (queue full)' total of its shutdown summary; frames a "
                             "stalled app's ZeroMQ buffer holds (up to send_hwm) show in the RSS)",
                             stall_table(results["stall"])]
            elapsed = time.monotonic() - wall_start
            failed = [r for rows in results.values() for r in rows if r["status"] != "ok"]
            sections += ["", f"total time {elapsed / 60:.1f} min; "
                         + ("INTERRUPTED: rows missing; " if interrupted else "")
                         + (f"{len(failed)} row(s) FAILED" if failed else "all rows ok")]
            text = "\n".join(sections) + "\n"

            json_path = out_dir / "side-by-side.json"
            payload = {
                "machine": machine,
                "settings": {
                    "ks": ks, "labels": labels, "n_python": args.n_python, "n_ours": args.n_ours,
                    "loadgen_hwm": args.hwm, "ours_zmq": ours_zmq, "ours_bus": ours_bus,
                    "ours_bus_stall_rows": stall_bus,
                    "python_timeout": args.python_timeout, "ours_timeout": args.ours_timeout,
                    "rate": args.rate, "latency_n": args.latency_n, "stall_k": args.stall_k,
                    "stall_n": args.stall_n, "argv": sys.argv[1:],
                },
                "python_versions": python_versions,
                "binaries": binaries,
                "elapsed_s": round(elapsed, 1),
                "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "interrupted": interrupted,
                "table": text,
                **results,
            }
            json_path.write_text(json.dumps(payload, indent=1) + "\n")
            (out_dir / "side-by-side.txt").write_text(text)

            png = out_dir / "throughput.png"
            plotted = subprocess.run([str(venv_python(venv)), str(Path(__file__).resolve()),
                                      "--plot-from", str(json_path), "--out", str(out_dir)],
                                     capture_output=True, text=True)
            if plotted.returncode != 0:
                log(f"plotting failed:\n{plotted.stderr[-3000:]}")

            print(text, end="")
            print(f"\nwrote {json_path}\nwrote {out_dir / 'side-by-side.txt'}"
                  + (f"\nwrote {png}" if plotted.returncode == 0 else "\nchart NOT written"))
            if args.keep_work:
                print(f"run logs kept in {work}")
            return 1 if failed or plotted.returncode != 0 else 0

        finisher[0] = finish

        for index, (mode, impl_name, k, n) in enumerate(plan, 1):
            impl = impls[impl_name]
            log(f"[{index}/{len(plan)}] {mode} {impl.label} K={k} N={n:,}")
            if mode == "throughput":
                row = measure_checked(args, impl, "throughput", k, n, loadgen_bin, work)
                results["throughput"].append(row)
            elif mode == "latency":
                row = measure_checked(args, impl, "latency", k, n, loadgen_bin, work,
                                      extra_args=["--rate", f"{args.rate:g}"])
                results["latency"].append(row)
            else:
                variant = mode.split(":", 1)[1]
                row = measure_checked(
                    args, impl, "stall", k, n, loadgen_bin, work, variant=variant,
                    extra_args=["--stall", "1"], verbosity="INFO",
                    zmq_extra=(impl.zmq_extra if variant == "bulk" else {}), bus_section=stall_bus,
                )
                row["stall"] = stall_figures(row, k, 1)
                results["stall"].append(row)
            log(f"  {describe(row)}")

        return finish(False)
    except KeyboardInterrupt:
        log("\ninterrupted: stopping child processes")
        kill_children()
        if finisher[0] is not None:
            log("writing the rows measured so far (marked INTERRUPTED)")
            try:
                finisher[0](True)
            except KeyboardInterrupt:
                pass
        return 130
    finally:
        kill_children()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
