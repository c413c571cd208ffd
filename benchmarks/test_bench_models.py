"""Model latency, batch 1: accel's int8 plan vs onnxruntime fp32 and int8 (a QDQ model from
quantize_static) on the same ONNX model, in the same process, with the same number of
threads (every core: the OpenCL CPU runtimes use them all, so onnxruntime gets
intra_op_num_threads = os.cpu_count()).

    .venv/bin/python -m pytest benchmarks/test_bench_models.py -s
    ACCEL_BENCH_MODELS=resnet50,densenet121 \
        .venv/bin/python -m pytest benchmarks/test_bench_models.py -s

Prints, per model and device, ours / onnxruntime fp32 median latency, and the device time
by op with the slowest layers (where the time goes). Compile + calibration time is in
extra_info (--benchmark-json)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import accel
from accel import models

MODELS = [m for m in os.environ.get("ACCEL_BENCH_MODELS", "resnet50").split(",") if m]
ROUNDS, WARMUP = 10, 2
MEDIANS: dict[tuple[str, str], float] = {}  # (model, runner) -> seconds


@pytest.fixture(scope="module", params=MODELS)
def model_name(request):
    return request.param


@pytest.fixture(scope="module")
def onnx_model(model_name):
    return models.build(model_name)


@pytest.fixture(scope="module")
def images(model_name):
    rng = np.random.default_rng(0)
    shape = models.input_shape(model_name)
    return [rng.normal(0, 60, shape).astype(np.float32) for _ in range(3)]


@pytest.fixture(scope="session", autouse=True)
def report():
    yield
    print(f"\nbatch-1 median latency, {os.cpu_count()} threads:")
    for model in MODELS:
        base = MEDIANS.get((model, "onnxruntime fp32"))
        for (name, runner), value in MEDIANS.items():
            if name == model:
                ratio = f"  (/ onnxruntime fp32 = {value / base:.2f})" if base else ""
                print(f"  {model:12s} {runner:28s} {value * 1e3:8.1f} ms{ratio}")


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _bench_session(benchmark, session, x):
    feed = {session.get_inputs()[0].name: x}
    benchmark.pedantic(session.run, args=(None, feed), rounds=ROUNDS, warmup_rounds=WARMUP)
    return float(benchmark.stats.stats.median)


def test_onnxruntime_fp32(benchmark, model_name, onnx_model, images):
    MEDIANS[(model_name, "onnxruntime fp32")] = _bench_session(
        benchmark, _session(onnx_model), images[2])


@pytest.fixture(scope="module")
def qdq_model(onnx_model, images):
    """onnxruntime's quantize_static QDQ model (u8 activations, s8 per-channel weights)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{onnx_model.graph.input[0].name: x} for x in images[:2]])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "qdq.onnx"
        onnx.save(onnx_model, src)
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True)
        return onnx.load(dst)


def test_onnxruntime_int8(benchmark, model_name, qdq_model, images):
    MEDIANS[(model_name, "onnxruntime int8 (QDQ)")] = _bench_session(
        benchmark, _session(qdq_model), images[2])


def test_accel_on_the_qdq_model(benchmark, device, model_name, qdq_model, images):
    """accel running onnxruntime's QDQ file itself (its float32 requantization and the
    float islands onnxruntime keeps), next to onnxruntime's int8 on the same file."""
    compiled = accel.compile(qdq_model, device=device, progress=False)
    benchmark.pedantic(compiled.run, args=(images[2],), rounds=ROUNDS, warmup_rounds=WARMUP)
    MEDIANS[(model_name, f"accel on the QDQ {device.short_name}")] = \
        float(benchmark.stats.stats.median)


def test_accel_int8(benchmark, device, model_name, onnx_model, images):
    start = time.perf_counter()
    compiled = accel.compile(onnx_model, calibration=images[:2], device=device, progress=False)
    benchmark.extra_info["compile_and_calibrate_s"] = round(time.perf_counter() - start, 2)
    benchmark.pedantic(compiled.run, args=(images[2],), rounds=ROUNDS, warmup_rounds=WARMUP)
    MEDIANS[(model_name, f"accel int8 {device.short_name}")] = float(benchmark.stats.stats.median)
    layers = compiled.profile(images[2], repeat=3)
    total = sum(t.ms for t in layers)
    by_op: dict[str, float] = {}
    for t in layers:
        by_op[t.op] = by_op.get(t.op, 0.0) + t.ms
    benchmark.extra_info["device_ms"] = round(total, 2)
    benchmark.extra_info["device_ms_by_op"] = {k: round(v, 2) for k, v in by_op.items()}
    slowest = sorted(layers, key=lambda t: -t.ms)[:4]
    print(f"\n{model_name} on {device.short_name}: compile+calibrate "
          f"{benchmark.extra_info['compile_and_calibrate_s']} s; device time {total:.1f} ms in "
          f"{len(layers)} launches; by op { {k: round(v, 1) for k, v in by_op.items()} }; "
          f"slowest {[(t.name, round(t.ms, 1)) for t in slowest]}")
