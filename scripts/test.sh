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

# The RabbitMQ backbone's integration tests need a server on 127.0.0.1:5672. Without one they
# are skipped with a loud line, unless THREATBUS_REQUIRE_SERVICES=1 (CI) makes that a failure.
rabbitmq_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
rust_filter=()
if ! rabbitmq_up; then
  if [ "${THREATBUS_REQUIRE_SERVICES:-}" = "1" ]; then
    echo "==> RabbitMQ is not reachable on 127.0.0.1:5672 and THREATBUS_REQUIRE_SERVICES=1: failing" >&2
    exit 1
  fi
  echo "!!! SKIPPING the RabbitMQ backbone's integration tests (Rust threatbus-rabbitmq::broker and"
  echo "!!! pytest test_rabbitmq.py): no RabbitMQ on 127.0.0.1:5672. Start it (rabbitmq-server -detached)"
  echo "!!! to run them; THREATBUS_REQUIRE_SERVICES=1 turns a missing server into a failure."
  rust_filter=(-E 'not binary_id(threatbus-rabbitmq::broker)')
fi

echo "==> Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "${rust_filter[@]}"
elif [ ${#rust_filter[@]} -gt 0 ]; then
  cargo test --workspace --locked --no-fail-fast --exclude threatbus-rabbitmq
  cargo test --locked --no-fail-fast -p threatbus-rabbitmq --lib
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
