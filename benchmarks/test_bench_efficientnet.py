"""EfficientNet-Lite0 (trained weights, the [pretrained] extra), batch 1: accel's int8 plan
against onnxruntime fp32 and onnxruntime int8 (its quantize_static QDQ model) on the same ONNX
model, in the same run and threads (every core); then where accel's time goes, and the
depthwise layers' effective bandwidth against the machine's measured copy bandwidth
(depthwise convs do ~9-25 MACs per byte moved: memory-bound).

    .venv/bin/python -m pytest benchmarks/test_bench_efficientnet.py -s

Inputs: the bundled photos through the model's own preprocessing."""

from __future__ import annotations

import os
import time

import numpy as np
import onnxruntime as ort
import pytest

import accel
from accel import bench, images as bundled
from accel.models import efficientnet

ROUNDS, WARMUP = 20, 3
MEDIANS: dict[str, float] = {}  # runner -> seconds
COPY_BYTES = 256 << 20


@pytest.fixture(scope="module")
def proto():
    if not efficientnet.available():
        pytest.skip("the [pretrained] extra is not installed")
    return accel.models.build("efficientnet_lite0", weights="pretrained")


@pytest.fixture(scope="module")
def photos():
    from accel.preprocess import preprocess, to_model_input
    spec = efficientnet.PREPROCESSING
    return [to_model_input(preprocess(p.read_bytes(), spec), spec)
            for p in bundled.bundled_photos()]


def copy_bandwidth() -> float:
    """Bytes per second of a large array copy (read + write), best of five, one thread: a
    floor of what the memory system gives."""
    src = np.ones(COPY_BYTES, np.uint8)
    dst = np.empty_like(src)
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(5))
    return 2 * COPY_BYTES / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def depthwise_bytes(layer: dict) -> int:
    """Bytes a depthwise launch must move at least: int8 input and output, int8 weights,
    int32 bias, multipliers and shifts."""
    c, h, w = layer["channels"], layer["in_height"], layer["in_width"]
    (sh, sw), (top, left, bottom, right) = layer["stride"], layer["pads"]
    kh, kw = layer["kernel_h"], layer["kernel_w"]
    oh, ow = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
    return layer["batch"] * c * (h * w + oh * ow) + c * (kh * kw + 12)


@pytest.fixture(scope="session", autouse=True)
def report():
    yield
    base = MEDIANS.get("onnxruntime fp32")
    print(f"\nEfficientNet-Lite0 batch-1 median latency, {os.cpu_count()} threads:")
    for runner, value in MEDIANS.items():
        ratio = f"  (/ onnxruntime fp32 = {value / base:.2f})" if base else ""
        print(f"  {runner:30s} {value * 1e3:8.1f} ms{ratio}")


def _session(model) -> ort.InferenceSession:
    return bench.ort_session(model, os.cpu_count() or 1)


def _bench_session(benchmark, session, x) -> float:
    feed = {session.get_inputs()[0].name: x}
    benchmark.pedantic(session.run, args=(None, feed), rounds=ROUNDS, warmup_rounds=WARMUP)
    return float(benchmark.stats.stats.median)


def test_onnxruntime_fp32(benchmark, proto, photos):
    MEDIANS["onnxruntime fp32"] = _bench_session(benchmark, _session(proto), photos[0])


def test_onnxruntime_int8(benchmark, proto, photos):
    qdq = bench.ort_quantize(proto, photos)
    MEDIANS["onnxruntime int8 (QDQ)"] = _bench_session(benchmark, _session(qdq), photos[0])


def test_accel_int8(benchmark, device, proto, photos):
    start = time.perf_counter()
    compiled = accel.compile(proto, calibration=photos, device=device, progress=False,
                             bias_correction=True)
    benchmark.extra_info["compile_and_calibrate_s"] = round(time.perf_counter() - start, 2)
    benchmark.pedantic(compiled.run, args=(photos[0],), rounds=ROUNDS, warmup_rounds=WARMUP)
    MEDIANS[f"accel int8 {device.short_name}"] = float(benchmark.stats.stats.median)
    layers = compiled.profile(photos[0], repeat=5)
    total = sum(t.ms for t in layers)
    by_op: dict[str, float] = {}
    for t in layers:
        by_op[t.op] = by_op.get(t.op, 0.0) + t.ms
    layer_attrs = {s.name: s.attrs.get("layer") for s in compiled.lowered.steps
                   if s.op == "depthwise"}
    moved = sum(depthwise_bytes(layer_attrs[t.name]) for t in layers if t.name in layer_attrs)
    depthwise_ms = sum(t.ms for t in layers if t.name in layer_attrs)
    bandwidth = copy_bandwidth()
    achieved = moved / (depthwise_ms * 1e-3) if depthwise_ms else 0.0
    benchmark.extra_info.update(
        device_ms=round(total, 2), device_ms_by_op={k: round(v, 2) for k, v in by_op.items()},
        depthwise_gb_per_s=round(achieved / 1e9, 2), copy_gb_per_s=round(bandwidth / 1e9, 2))
    per_layer = sorted(((t.ms, t.name) for t in layers if t.name in layer_attrs), reverse=True)
    print(f"\nEfficientNet-Lite0 on {device.short_name}: compile+calibrate "
          f"{benchmark.extra_info['compile_and_calibrate_s']} s; device time {total:.1f} ms in "
          f"{len(layers)} launches; by op { {k: round(v, 1) for k, v in by_op.items()} }")
    print(f"  depthwise: {len(layer_attrs)} layers, {depthwise_ms:.1f} ms, {moved / 1e6:.1f} MB "
          f"moved at least: {achieved / 1e9:.2f} GB/s against {bandwidth / 1e9:.1f} GB/s "
          f"measured copy bandwidth ({achieved / bandwidth:.0%})")
    for ms, name in per_layer[:4]:
        layer = layer_attrs[name]
        print(f"    {name}: {ms:.2f} ms, {layer['in_height']}x{layer['in_width']}x"
              f"{layer['channels']} k{layer['kernel_h']} s{layer['stride'][0]}, "
              f"{depthwise_bytes(layer) / (ms * 1e-3) / 1e9:.2f} GB/s")
    assert total > 0 and moved > 0
