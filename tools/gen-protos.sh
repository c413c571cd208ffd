#!/usr/bin/env bash
# Regenerates accel/serving/protos/*_pb2.py and *_pb2_grpc.py from the .proto files there
# with grpcio-tools (tests/test_serving_protos.py checks the committed files are what this
# gives). The generated modules register their descriptors in accel's own descriptor pool
# (accel/serving/protos/_pool.py), not protobuf's default one: their full names are
# TensorFlow's, so a process that also imports TensorFlow or the official
# tensorflow-serving-api stubs would otherwise fail with duplicate symbols.
#   usage: tools/gen-protos.sh [OUT_DIR]   (default: accel/serving/protos)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python=python3
out="${1:-$root/accel/serving/protos}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$root"
"$python" -m grpc_tools.protoc -I . --python_out="$tmp" --grpc_python_out="$tmp" \
    accel/serving/protos/tf_tensor.proto accel/serving/protos/tf_serving.proto \
    accel/serving/protos/model_info.proto
mkdir -p "$out"
rm -f "$tmp"/accel/serving/protos/{tf_tensor,model_info}_pb2_grpc.py  # no services: empty
for f in "$tmp"/accel/serving/protos/*.py; do
    sed -e 's/^from google\.protobuf import descriptor_pool as _descriptor_pool$/from accel.serving.protos import _pool as _descriptor_pool/' \
        -e 's/_descriptor_pool\.Default()/_descriptor_pool.POOL/' "$f" > "$out/$(basename "$f")"
done
