#!/usr/bin/env bash
# kubectl apply of a 200-object manifest against `logbook serve` (release build, temporary
# data directory): wall time of the first apply (creates) and of a second apply that changes
# every object (client-side three-way patches), with kubectl's default client-side
# validation (OpenAPI) and with --validate=false, each the median of RUNS runs in fresh
# namespaces. Shows how much OpenAPI and strategic merge patch cost. Progress on stderr; a
# Markdown table on stdout and in bench-out/kubectl/results.md.
#
# Usage: scripts/bench-kubectl.sh [RUNS]   (default 3; LOGBOOK_BIN to use another binary)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-3}"
# Objects in the manifest (a third each: ConfigMaps, Deployments, Services).
OBJECTS=200
OUT=bench-out/kubectl
mkdir -p "$OUT"
if [ -z "${LOGBOOK_BIN:-}" ]; then
  cargo build --release -p logbook >&2
  LOGBOOK_BIN=target/release/logbook
fi
TMP=$(mktemp -d)
trap 'kill $(cat "$TMP/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$TMP"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$LOGBOOK_BIN" serve --data-dir "$TMP/data" --listen "127.0.0.1:$PORT" >"$TMP/server.log" 2>&1 &
echo $! >"$TMP/pid"
for _ in $(seq 1 100); do
  grep -q "logbook serving" "$TMP/server.log" 2>/dev/null && break
  sleep 0.1
done
KC="$TMP/data/kubeconfig"
export HOME="$TMP/home"
mkdir -p "$HOME"

manifest() { # $1 = image tag, $2 = data value
  python3 - "$OBJECTS" "$1" "$2" <<'EOF'
import sys
n, tag, val = int(sys.argv[1]), sys.argv[2], sys.argv[3]
docs = []
for i in range(n):
    k = i % 3
    if k == 0:
        docs.append(f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\n  labels: {{app: bench}}\ndata:\n  value: \"{val}\"\n")
    elif k == 1:
        docs.append(f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: dep-{i}
  labels: {{app: bench}}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: dep-{i}}}
  template:
    metadata:
      labels: {{app: dep-{i}}}
    spec:
      containers:
      - name: web
        image: nginx:{tag}
        ports:
        - containerPort: 80
        env:
        - name: VALUE
          value: "{val}"
""")
    else:
        docs.append(f"apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  labels: {{app: bench}}\nspec:\n  selector: {{app: dep-{i}}}\n  ports:\n  - port: 80\n    targetPort: 8080\n")
print("---\n".join(docs))
EOF
}
manifest 1.25 one >"$TMP/first.yaml"
manifest 1.26 two >"$TMP/second.yaml"

seconds() { python3 -c 'import time; print(time.monotonic())'; }
median() { python3 -c 'import sys, statistics; print("%.2f" % statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

declare -A RESULTS
for mode in default novalidate; do
  first=() second=()
  for run in $(seq 1 "$RUNS"); do
    ns="bench-$mode-$run"
    kubectl --kubeconfig "$KC" create namespace "$ns" >/dev/null
    extra=()
    [ "$mode" = novalidate ] && extra=(--validate=false)
    t0=$(seconds)
    kubectl --kubeconfig "$KC" -n "$ns" apply -f "$TMP/first.yaml" "${extra[@]}" >/dev/null
    t1=$(seconds)
    kubectl --kubeconfig "$KC" -n "$ns" apply -f "$TMP/second.yaml" "${extra[@]}" >/dev/null
    t2=$(seconds)
    f=$(python3 -c "print($t1-$t0)"); s=$(python3 -c "print($t2-$t1)")
    first+=("$f"); second+=("$s")
    echo "  $mode run $run: first apply $(printf %.2f "$f") s, second apply $(printf %.2f "$s") s" >&2
  done
  RESULTS[$mode-first]=$(median "${first[@]}")
  RESULTS[$mode-second]=$(median "${second[@]}")
  RESULTS[$mode-first-all]="${first[*]}"
  RESULTS[$mode-second-all]="${second[*]}"
done
# Every second apply must have changed every Deployment.
changed=$(kubectl --kubeconfig "$KC" -n bench-default-1 get deployments -o jsonpath='{range .items[*]}{.spec.template.spec.containers[0].image}{"\n"}{end}' | grep -c 'nginx:1.26' || true)

{
  echo "| kubectl apply, $OBJECTS objects ($(kubectl version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')) | first apply (creates) | second apply (patches) |"
  echo "|---|---:|---:|"
  echo "| default (client-side validation from OpenAPI) | ${RESULTS[default-first]} s | ${RESULTS[default-second]} s |"
  echo "| --validate=false | ${RESULTS[novalidate-first]} s | ${RESULTS[novalidate-second]} s |"
  echo
  echo "Median of $RUNS runs each (all runs: default ${RESULTS[default-first-all]} / ${RESULTS[default-second-all]}; --validate=false ${RESULTS[novalidate-first-all]} / ${RESULTS[novalidate-second-all]}). Deployments changed by the second apply in one namespace: $changed of $(python3 -c "print(len([i for i in range($OBJECTS) if i % 3 == 1]))")."
} | tee "$OUT/results.md"
