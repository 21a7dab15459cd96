#!/usr/bin/env bash
# Regenerates node/src/cri/runtime.v1.rs from node/proto/api.proto (CRI runtime.v1, from
# kubernetes/cri-api, Apache-2.0). The generated file is committed so that building
# logbook needs no protoc; run this only after changing the .proto.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || apt-get install -y --no-install-recommends protobuf-compiler
cargo run --quiet --manifest-path node/cri-gen/Cargo.toml --target-dir target/cri-gen -- \
  "$PWD/node/src/cri" "$PWD/node/proto"
echo "wrote node/src/cri/runtime.v1.rs"
