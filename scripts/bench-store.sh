#!/usr/bin/env bash
# The committed store benchmark: builds `logbook` in release mode with the etcd side by side
# and runs `logbook bench store --etcd --out bench-out`. Extra arguments are passed on
# (e.g. `scripts/bench-store.sh --quick`). Installs what it needs on a fresh Debian machine:
# etcd-server (the etcd binary it compares against) and protobuf-compiler (the etcd client
# crate generates its gRPC code at build time).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
if ((${#missing[@]})); then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    echo "bench-store: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
fi

cargo build --release -p logbook --features etcd >&2
exec cargo run --release -q -p logbook --features etcd -- bench store --etcd --out bench-out "$@"
