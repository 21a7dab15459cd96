#!/usr/bin/env bash
# Pod startup latency with real containers (issue 11's benchmark): starts a private
# containerd (scripts/containerd.sh: CRI, runc, CNI bridge, local busybox and pause images),
# builds logbook in release mode and runs `logbook bench pod-startup` (a real node agent,
# 50 pods created at once; p50/p90/p99 from create to Running). Results in
# bench-out/pod-startup/results.{md,json}. Needs root (containerd). Extra arguments go to
# the benchmark (e.g. --pods 100).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-pod-startup.sh: containerd needs root" >&2; exit 1; }
scripts/containerd.sh install
CTRD_DIR="/tmp/lbk-bench-$$"
trap 'scripts/containerd.sh stop "$CTRD_DIR" >/dev/null 2>&1 || true; rm -rf "$CTRD_DIR"' EXIT
SOCK="$(scripts/containerd.sh start "$CTRD_DIR")"
cargo build --release -p logbook
target/release/logbook bench pod-startup --cri-socket "$SOCK" "$@"
