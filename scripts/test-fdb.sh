#!/usr/bin/env bash
# The FoundationDB tests (docs/fdb.md, "Testing against a cluster"): builds with the `fdb`
# feature and runs the KV conformance suite, the store's tests and the two-replica end-to-end
# test against the cluster FDB_CLUSTER_FILE names. Needs libclang-dev and FoundationDB's 7.3
# client library (libfdb_c) installed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${FDB_CLUSTER_FILE:-}" ]; then
  echo "FDB_CLUSTER_FILE is not set: point it at a FoundationDB 7.3 cluster file" >&2
  exit 2
fi
if ! fdbcli --exec status --timeout 10 >/dev/null 2>&1; then
  echo "warning: fdbcli cannot reach the cluster in $FDB_CLUSTER_FILE (or is not installed)" >&2
fi

echo "== cargo build -p logbook --features fdb"
cargo build -p logbook --features fdb
export LOGBOOK_BIN="$PWD/target/debug/logbook"

status=0
echo "== store: KV conformance, log, watch, history, retention and property tests on FoundationDB"
LOGBOOK_TEST_STORE=fdb cargo nextest run -p logbook-store --features fdb --no-fail-fast \
  -E 'not (binary(crash) | binary(corruption))' || status=$?

echo "== two logbook serve replicas over the cluster"
cargo nextest run -p logbook-e2e --test fdb_replicas --no-fail-fast || status=$?
exit $status
