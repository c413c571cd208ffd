"""EfficientNet-Lite0 (trained weights, the [pretrained] extra), batch 1: onnxruntime fp32,
onnxruntime int8 (its quantize_static QDQ model) and accel's int8 plan on each CPU OpenCL
device, on the same ONNX model and threads (every core), timed taking turns (one run of each
per round: accel.bench.time_runners), so that a shared machine's changing load falls on all
of them alike; min and median, with the load average before and after. Then, per device,
where accel's time goes (device time of every launch, CL events), and the depthwise layers'
effective bandwidth against the machine's measured copy bandwidth.

    .venv/bin/python -m pytest benchmarks/test_bench_efficientnet.py -s

Inputs: the bundled photos through the model's own preprocessing."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import accel
from accel import bench, images as bundled
from accel.models import efficientnet

ROUNDS, WARMUP = 30, 3
PROFILES = 10  # profiled runs; each launch's shortest is kept (the least disturbed by load)
COPY_BYTES = 256 << 20
# The FPGA emulator checks function, not speed (as benchmarks/conftest.py).
DEVICES = [d for d in accel.devices() if d.kind in ("cpu", "gpu")]


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


def layer_text(layer: dict) -> str:
    channels = (f"{layer['in_channels']}->{layer['out_channels']}" if "out_channels" in layer
                else f"{layer['channels']}")
    return (f"{layer['in_height']}x{layer['in_width']}x{channels} k{layer['kernel_h']} "
            f"s{layer['stride'][0]}")


def test_latency_batch1(proto, photos):
    threads = os.cpu_count() or 1
    fp32 = bench.ort_session(proto, threads)
    qdq = bench.ort_session(bench.ort_quantize(proto, photos), threads)
    feed = {fp32.get_inputs()[0].name: photos[0]}
    runners = {"onnxruntime fp32": lambda: fp32.run(None, feed),
               "onnxruntime int8 (QDQ)": lambda: qdq.run(None, feed)}
    compiled = {}
    for device in DEVICES:
        start = time.perf_counter()
        model = accel.compile(proto, calibration=photos, device=device, progress=False,
                              bias_correction=True)
        print(f"\ncompile + calibrate on {device.short_name}: "
              f"{time.perf_counter() - start:.1f} s")
        compiled[device.short_name] = model
        runners[f"accel int8 {device.short_name}"] = lambda m=model: m.run(photos[0])
    load_before = os.getloadavg()
    latencies = bench.time_runners(runners, iterations=ROUNDS, warmup=WARMUP, progress=False)
    load_after = os.getloadavg()

    base = latencies["onnxruntime fp32"]
    print(f"\nEfficientNet-Lite0 batch 1, {threads} threads, {ROUNDS} rounds taking turns; "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f"  {'runner':28s} {'min':>8s} {'median':>8s}   / onnxruntime fp32 (min, median)")
    for runner, values in latencies.items():
        print(f"  {runner:28s} {min(values):6.1f}ms {np.median(values):6.1f}ms   "
              f"{min(values) / min(base):5.2f} {np.median(values) / np.median(base):5.2f}")
    bandwidth = copy_bandwidth()
    for name, model in compiled.items():
        profile_report(name, model, photos[0], bandwidth)
    assert all(min(values) > 0 for values in latencies.values())


def profile_report(name: str, model, x, bandwidth: float) -> None:
    """Device time by op and of the slowest launches (each launch's shortest of PROFILES
    runs); the depthwise layers' bytes over their time against the copy bandwidth."""
    runs = [model.profile(x) for _ in range(PROFILES)]
    layers = [min(times, key=lambda t: t.ms) for times in zip(*runs)]
    total = sum(t.ms for t in layers)
    by_op: dict[str, float] = {}
    for t in layers:
        by_op[t.op] = by_op.get(t.op, 0.0) + t.ms
    attrs = {s.name: s.attrs.get("layer") for s in model.lowered.steps}
    depthwise = [t for t in layers if t.op == "depthwise"]
    moved = sum(depthwise_bytes(attrs[t.name]) for t in depthwise)
    depthwise_ms = sum(t.ms for t in depthwise)
    achieved = moved / (depthwise_ms * 1e-3) if depthwise_ms else 0.0
    print(f"\n{name}: device time {total:.1f} ms in {len(layers)} launches (each its best of "
          f"{PROFILES} runs); by op "
          f"{ {k: round(v, 2) for k, v in by_op.items()} }")
    print(f"  depthwise: {len(depthwise)} layers, {depthwise_ms:.2f} ms, {moved / 1e6:.1f} MB "
          f"moved at least: {achieved / 1e9:.2f} GB/s against {bandwidth / 1e9:.1f} GB/s "
          f"measured copy bandwidth ({achieved / bandwidth:.0%})")
    for t in sorted(depthwise, key=lambda t: -t.ms)[:4]:
        layer = attrs[t.name]
        print(f"    {t.ms:.3f} ms {layer_text(layer)}: "
              f"{depthwise_bytes(layer) / (t.ms * 1e-3) / 1e9:.2f} GB/s")
    print("  slowest convs:")
    for t in sorted((t for t in layers if t.op == "conv"), key=lambda t: -t.ms)[:6]:
        print(f"    {t.ms:.3f} ms {layer_text(attrs[t.name])}")
    assert total > 0 and moved > 0
