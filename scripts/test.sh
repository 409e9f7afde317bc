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

# Tests that need a service: the RabbitMQ backbone's (a server on 127.0.0.1:5672, guest/guest)
# and the PostgreSQL store's (a server on 127.0.0.1:5432, user postgres without a password).
# Without the server they are skipped with a loud line, unless THREATBUS_REQUIRE_SERVICES=1 (CI)
# makes that a failure.
port_up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
skipped_binaries=()
needs_service() { # name port rust-test-binary crate what how-to-start
  if port_up "$2"; then return; fi
  if [ "${THREATBUS_REQUIRE_SERVICES:-}" = "1" ]; then
    echo "==> $1 is not reachable on 127.0.0.1:$2 and THREATBUS_REQUIRE_SERVICES=1: failing" >&2
    exit 1
  fi
  echo "!!! SKIPPING $5 (Rust $3 and the pytest tests that need it): no $1 on 127.0.0.1:$2."
  echo "!!! Start it ($6) to run them; THREATBUS_REQUIRE_SERVICES=1 turns a missing server into a failure."
  skipped_binaries+=("$3@$4")
}
needs_service RabbitMQ 5672 threatbus-rabbitmq::broker threatbus-rabbitmq \
  "the RabbitMQ backbone's integration tests" "rabbitmq-server -detached"
needs_service PostgreSQL 5432 threatbus-store::postgres threatbus-store \
  "the PostgreSQL store's tests" "pg_ctlcluster <version> main start"

echo "==> Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  rust_filter=()
  if [ ${#skipped_binaries[@]} -gt 0 ]; then
    expression=""
    for entry in "${skipped_binaries[@]}"; do
      expression="${expression:+$expression | }binary_id(${entry%%@*})"
    done
    rust_filter=(-E "not ($expression)")
  fi
  cargo nextest run --workspace --locked --no-fail-fast "${rust_filter[@]}"
elif [ ${#skipped_binaries[@]} -gt 0 ]; then
  excluded=()
  for entry in "${skipped_binaries[@]}"; do excluded+=(--exclude "${entry#*@}"); done
  cargo test --workspace --locked --no-fail-fast "${excluded[@]}"
  for entry in "${skipped_binaries[@]}"; do cargo test --locked --no-fail-fast -p "${entry#*@}" --lib; done
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
