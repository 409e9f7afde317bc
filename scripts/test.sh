#!/usr/bin/env bash
# Runs the whole test suite: formatting and lint checks, the Rust unit and integration tests,
# and the black-box tests that drive the built `threatbus` binary over real ZeroMQ sockets with
# pyzmq clients. Needs only cargo and python3; it creates a Python virtual environment for the
# test clients (in .venv, or where THREATBUS_TEST_VENV points) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${THREATBUS_TEST_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating the test clients' Python environment in $venv"
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/blackbox/requirements.txt

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

echo "==> STIX pattern corpus: recorded verdicts against the reference validator"
"$venv/bin/python" -m pytest tests/patterns -q -p no:cacheprovider

echo "==> black-box tests against the built binary"
cargo build --locked --bin threatbus
target_dir=$(cargo metadata --format-version 1 --no-deps | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
export THREATBUS_BIN="$target_dir/debug/threatbus"
"$venv/bin/python" -m pytest tests/blackbox -q -p no:cacheprovider "$@"
