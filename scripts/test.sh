#!/usr/bin/env bash
# The one test command (README.md): installs what the tests need on a fresh machine, then
# runs every test in the workspace — Rust (store, API, kubectl and kube-rs end to end) and
# the official Python client against the real binary — then fuzzes every decoder briefly
# (cargo fuzz) and checks and lints the FoundationDB backend (feature `fdb`). CI (.ci/run) runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "== installing cargo-nextest"
  cargo install cargo-nextest --locked
fi
if ! command -v openssl >/dev/null 2>&1; then
  echo "== installing openssl (the TLS probes in tests/tests/security_defaults.rs)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl
fi
if ! command -v kubectl >/dev/null 2>&1; then
  echo "== kubectl is not on PATH: installing Debian's kubernetes-client"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client
fi

# The end-to-end tests start the real binary: build it first so they never run a stale one.
echo "== cargo build -p logbook"
cargo build -p logbook
export LOGBOOK_BIN="$PWD/target/debug/logbook"
# The latency test (tests/tests/fairness.rs: a noisy user at 10x capacity) measures an
# optimized build, as the benchmark does.
echo "== cargo build --release -p logbook"
cargo build --release -p logbook
export LOGBOOK_RELEASE_BIN="$PWD/target/release/logbook"

# Real containers for the node agent's tests (tests/tests/node_agent.rs): containerd with
# its CRI plugin, runc, a CNI bridge and locally built busybox and pause images, on a
# private socket (scripts/containerd.sh), stopped when this script exits.
if [ "$(id -u)" = 0 ]; then
  echo "== containerd for the node agent tests"
  scripts/containerd.sh install
  CTRD_DIR="/tmp/lbk-ctrd-$$"
  trap 'scripts/containerd.sh stop "$CTRD_DIR" >/dev/null 2>&1 || true; rm -rf "$CTRD_DIR"' EXIT
  LOGBOOK_CRI_SOCKET="$(scripts/containerd.sh start "$CTRD_DIR")"
  export LOGBOOK_CRI_SOCKET
else
  echo "== not root: the node agent tests print skip lines (containerd needs root)"
fi

echo "== cargo nextest run --workspace"
status=0
cargo nextest run --workspace --no-fail-fast "$@" || status=$?

# The Python `kubernetes` client, in a venv made here (pinned versions).
VENV="$PWD/target/pyvenv"
if [ ! -x "$VENV/bin/pytest" ]; then
  echo "== creating $VENV (kubernetes, pytest)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r tests/python/requirements.txt
fi
echo "== pytest tests/python"
"$VENV/bin/pytest" -q tests/python || status=$?

# Short fuzz runs of every decoder (JSON/YAML/protobuf bodies, selectors, patches):
# scripts/fuzz.sh, FUZZ_SECONDS each (20 by default).
echo "== scripts/fuzz.sh"
scripts/fuzz.sh || status=$?

# The FoundationDB backend: this machine has no FoundationDB, so CI proves it compiles and is
# lint-clean (bindgen needs libclang; linking, which needs libfdb_c, is not done here). Its
# tests against a real cluster: scripts/test-fdb.sh (docs/fdb.md).
if ! dpkg -s libclang-dev >/dev/null 2>&1; then
  echo "== installing libclang-dev (bindgen, for the fdb feature)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev
fi
echo "== cargo check / clippy with --features fdb"
cargo check -p logbook-store -p logbook --features logbook-store/fdb,logbook/fdb || status=$?
cargo clippy -p logbook-store -p logbook -p logbook-e2e --all-targets \
  --features logbook-store/fdb,logbook/fdb -- -D warnings || status=$?
exit $status
