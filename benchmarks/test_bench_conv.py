"""NDRange conv (kernels/conv.cl) on every distinct conv layer of ResNet-50 (batch 1, 224x224)
and its dense layer: GOPS from CL profiling events and the fraction of the measured int8 peak.

    .venv/bin/python -m pytest benchmarks/test_bench_conv.py --benchmark-disable-gc
"""

from __future__ import annotations

import numpy as np
import pytest

from accel import numerics
from accel.numerics import Activation
from accel.ops import conv as ops

from conv_shapes import resnet50_convs, resnet50_dense

ROUNDS = 30


def _distinct(items):
    return list(dict.fromkeys(items))


CONV_LAYERS = _distinct(resnet50_convs())
DENSE_LAYERS = _distinct(resnet50_dense())


def _conv_name(shape) -> str:
    h, w, cin, cout, k, stride, pad = shape
    return f"{h}x{w}x{cin}->{cout} {k}x{k}/{stride}"


def _bench(benchmark, ctx, layer: ops.ConvLayer, name: str, int8_peak, record_gops):
    rng = np.random.default_rng(0)
    weights = rng.integers(-127, 128, layer.weight_shape).astype(np.int8)
    bias = rng.integers(-1000, 1000, layer.out_channels).astype(np.int32)
    multipliers, shifts = numerics.quantize_multipliers(np.full(layer.out_channels, 1e-4))
    prepared = ops.prepare(ctx, layer, weights, bias, multipliers, shifts)
    x = ctx.upload(rng.integers(-128, 128, layer.input_bytes).astype(np.int8))
    out = ctx.buffer(layer.output_bytes)
    kernel, global_size, local_size = ops.bind(prepared, x, out)
    kernel.launch(ctx.queue, list(global_size), list(local_size)).wait()  # warm-up
    times: list[int] = []

    def run():
        event = kernel.launch(ctx.queue, list(global_size), list(local_size))
        event.wait()
        times.append(event.duration_ns)

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    record_gops(benchmark, ctx.device, name, layer.macs, times, int8_peak)


@pytest.mark.parametrize("shape", CONV_LAYERS, ids=_conv_name)
def test_bench_conv_resnet50(benchmark, ctx, shape, int8_peak, record_gops):
    h, w, cin, cout, k, stride, pad = shape
    layer = ops.ConvLayer(batch=1, in_height=h, in_width=w, in_channels=cin, out_channels=cout,
                          kernel_h=k, kernel_w=k, stride=(stride, stride), pads=(pad,) * 4,
                          activation=Activation.relu(0))
    _bench(benchmark, ctx, layer, "conv " + _conv_name(shape), int8_peak, record_gops)


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("features", DENSE_LAYERS, ids=lambda f: f"{f[0]}->{f[1]}")
def test_bench_dense_resnet50(benchmark, ctx, features, batch, int8_peak, record_gops):
    layer = ops.dense_layer(batch, *features)
    _bench(benchmark, ctx, layer, f"dense {features[0]}->{features[1]} batch {batch}", int8_peak,
           record_gops)
