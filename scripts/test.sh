#!/usr/bin/env bash
# The one test command (README.md): installs what the tests need on a fresh machine, then
# runs every test in the workspace. CI (.ci/run) runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "== installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

echo "== cargo nextest run --workspace"
cargo nextest run --workspace --no-fail-fast "$@"
