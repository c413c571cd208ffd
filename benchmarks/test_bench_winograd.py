"""Winograd F(2x2, 3x3) (kernels/winograd.cl) against the direct conv (kernels/conv.cl) on every
distinct 3x3 stride-1 conv of ResNet-50 (batch 1, 224x224), each runtime with its tuned knobs.

    .venv/bin/python -m pytest benchmarks/test_bench_winograd.py --benchmark-disable-gc

The two kernels run alternately on the same buffers (one round = one launch of each), so a
busy machine slows both alike; each keeps the best CL profiling time of ROUNDS launches.
GOPS are the direct conv's 2 x MACs over the time (Winograd's are "effective": it does 2.25x
fewer multiplies, more with partial tiles). The table at the end gives the ratio.
"""

from __future__ import annotations

import numpy as np
import pytest

from accel import numerics
from accel.numerics import Activation
from accel.ops import conv as conv_ops
from accel.ops import winograd

from conv_shapes import resnet50_convs

ROUNDS = 30
RATIOS: list[dict] = []

LAYERS = list(dict.fromkeys(
    shape for shape in resnet50_convs() if shape[4] == 3 and shape[5] == 1))


def _name(shape) -> str:
    h, w, cin, cout, k, stride, pad = shape
    return f"{h}x{w}x{cin}->{cout} {k}x{k}/{stride}"


@pytest.fixture(scope="module", autouse=True)
def ratio_table(request):
    """Print the direct / Winograd table once the module's benchmarks are done."""
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
    if not RATIOS or reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():  # teardown output is captured otherwise
        write = reporter.write_line
        write("")
        write("| ResNet-50 3x3/1 layer | device | direct ms | Winograd ms | speed-up |")
        write("|---|---|---:|---:|---:|")
        for r in RATIOS:
            write(f"| {r['name']} | {r['device']} | {r['direct_ms']:.3f} | "
                  f"{r['winograd_ms']:.3f} | {r['direct_ms'] / r['winograd_ms']:.2f}x |")


def _launcher(ctx, module, layer, weights, bias, multipliers, shifts, x, out):
    prepared = module.prepare(ctx, layer, weights, bias, multipliers, shifts)
    kernel, global_size, local_size = module.bind(prepared, x, out)
    kernel.launch(ctx.queue, list(global_size), list(local_size)).wait()  # warm-up

    def launch() -> int:
        event = kernel.launch(ctx.queue, list(global_size), list(local_size))
        event.wait()
        return event.duration_ns

    return launch


@pytest.mark.parametrize("shape", LAYERS, ids=_name)
def test_bench_winograd_resnet50(benchmark, ctx, shape, int8_peak, record_gops):
    h, w, cin, cout, k, stride, pad = shape
    layer = conv_ops.ConvLayer(batch=1, in_height=h, in_width=w, in_channels=cin,
                               out_channels=cout, kernel_h=3, kernel_w=3, pads=(pad,) * 4,
                               activation=Activation.relu(0))
    assert winograd.ineligibility(layer) is None
    rng = np.random.default_rng(0)
    weights = rng.integers(-127, 128, layer.weight_shape).astype(np.int8)
    bias = rng.integers(-1000, 1000, cout).astype(np.int32)
    multipliers, shifts = numerics.quantize_multipliers(np.full(cout, 1e-4))
    x = ctx.upload(rng.integers(-128, 128, layer.input_bytes).astype(np.int8))
    out_direct, out_winograd = ctx.buffer(layer.output_bytes), ctx.buffer(layer.output_bytes)
    direct = _launcher(ctx, conv_ops, layer, weights, bias, multipliers, shifts, x, out_direct)
    fast = _launcher(ctx, winograd, layer, weights, bias, multipliers, shifts, x, out_winograd)
    # Same bits, or the timing means nothing.
    np.testing.assert_array_equal(ctx.download(out_direct, np.int8, layer.output_bytes),
                                  ctx.download(out_winograd, np.int8, layer.output_bytes))
    direct_ns: list[int] = []
    winograd_ns: list[int] = []

    def one_round():
        direct_ns.append(direct())
        winograd_ns.append(fast())

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    name = _name(shape)
    record_gops(benchmark, ctx.device, "direct " + name, layer.macs, direct_ns, int8_peak)
    record_gops(benchmark, ctx.device, "winograd " + name, layer.macs, winograd_ns, int8_peak)
    RATIOS.append(dict(name=name, device=ctx.device.short_name, direct_ms=min(direct_ns) / 1e6,
                       winograd_ms=min(winograd_ns) / 1e6))
