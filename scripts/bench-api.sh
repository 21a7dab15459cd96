#!/usr/bin/env bash
# The committed API benchmark: builds `logbook` in release mode and runs
# `logbook bench api`, which starts `logbook serve` as a separate process on a temporary data
# directory and drives it over HTTPS with kube-rs clients. Progress on stderr, the Markdown
# table on stdout and in bench-out/api/results.md (raw numbers in results.json). Extra
# arguments are passed on (e.g. `scripts/bench-api.sh --quick`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p logbook >&2
exec target/release/logbook bench api --out bench-out/api "$@"
