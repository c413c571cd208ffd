"""Depthwise convolution through the compiler: a small MobileNet-style ONNX net (conv stem,
depthwise 3x3 + ReLU6, pointwise 1x1, depthwise 5x5 stride 2, GAP, Gemm) compiled and
compared with onnxruntime, as an fp32 model with calibration and as onnxruntime's QDQ
model; the same int8 outputs on every device (the FPGA emulator runs depthwise layers
through its conv pipelines, as convs over channel groups, or as NDRange kernels)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from accel.backend import api
from accel.compiler.errors import CompileError
from accel.ops import fpga as fpga_ops

from test_compile import (FASTEST, Net, cosine, inputs_for, ort_outputs, output_scale,
                          quantize_with_onnxruntime)


def depthwise(n: Net, x: str, c: int, k: int, stride: int = 1, relu6: bool = True) -> str:
    w = n.rng.normal(0, np.sqrt(2.0 / (k * k)), (c, 1, k, k))
    y = n.op("Conv", [x, n.const(w), n.const(n.rng.normal(0, 0.1, c), "b")], "dw",
             group=c, kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride, stride])
    return n.op("Clip", [y, n.const(0.0, "lo"), n.const(6.0, "hi")]) if relu6 else y


def mobile_net(batchnorm: bool = True) -> onnx.ModelProto:
    """24 channels (not a multiple of 16) through the second depthwise layer; a BatchNorm
    after the first one (folded into it) unless ``batchnorm`` is False."""
    n = Net(13)
    stem = n.op("Clip", [n.conv("input", 3, 16, stride=2, relu=False), n.const(0.0, "lo"),
                         n.const(6.0, "hi")])
    a = depthwise(n, stem, 16, 3, relu6=False)
    a = n.op("Clip", [n.batchnorm(a, 16) if batchnorm else a, n.const(0.0, "lo"),
                      n.const(6.0, "hi")])
    b = n.conv(a, 16, 24, k=1, relu=False)
    c = depthwise(n, b, 24, 5, stride=2)
    d = n.conv(c, 24, 32, k=1)
    g = n.op("Flatten", [n.op("GlobalAveragePool", [d])])
    logits = n.gemm(g, 32, 10)
    n.nodes.append(onnx.helper.make_node("Identity", [logits], ["logits"], name="out"))
    return n.model([("input", [1, 3, 32, 32])], [("logits", [1, 10])], "mobile")


@pytest.fixture(scope="module")
def model():
    return mobile_net()


@pytest.fixture(scope="module")
def compiled(model):
    return api.compile(model, calibration=inputs_for(model, 8, 0), device=FASTEST,
                       progress=False)


def test_depthwise_layers_lower_to_the_depthwise_kernel(compiled):
    ops = [step.op for step in compiled.lowered.steps]
    assert ops.count("depthwise") == 2, ops
    kernels = [step.attrs["layer"]["kernel_h"] for step in compiled.lowered.steps
               if step.op == "depthwise"]
    assert kernels == [3, 5]


def test_fp32_model_matches_onnxruntime(model, compiled):
    cosines, same_top1 = [], 0
    inputs = inputs_for(model, 8, 1)
    for x in inputs:
        ours, ref = compiled.run(x)["logits"], ort_outputs(model, x)["logits"]
        cosines.append(cosine(ours, ref))
        same_top1 += int(np.argmax(ours) == np.argmax(ref))
    # measured on PoCL: min cosine 0.99993, 8/8 top-1
    assert min(cosines) >= 0.99, cosines
    assert same_top1 == len(inputs)


@pytest.mark.parametrize("activation_type", ["QUInt8", "QInt8"])
def test_qdq_model_matches_onnxruntime_int8(activation_type, tmp_path):
    """Without the BatchNorm: quantize_static leaves a BatchNorm unfused between its Q/DQ
    pairs, which onnxruntime runs in float and we fold into the conv (with it, measured: 81%
    of the logits equal, the rest 1 LSB apart), which is not what this test is about."""
    model = mobile_net(batchnorm=False)
    qdq = quantize_with_onnxruntime(model, inputs_for(model, 8, 0), tmp_path, activation_type)
    compiled = api.compile(qdq, device=FASTEST, progress=False)  # the QDQ model's scales
    assert [s.op for s in compiled.lowered.steps].count("depthwise") == 2
    assert all(s.attrs["layer"]["requant"] == "float32" for s in compiled.lowered.steps
               if s.op == "depthwise")
    within, total = 0, 0
    for x in inputs_for(model, 16, 1):
        ours, ref = compiled.run(x)["logits"], ort_outputs(qdq, x)["logits"]
        error = np.abs(ours - ref) / output_scale(compiled, "logits")
        within += int(np.sum(error <= 1.0 + 1e-3))
        total += error.size
    # measured on PoCL (AVX2 host, reduce_range): every output equal, u8 and s8
    assert within / total >= 0.99, within / total


@pytest.mark.slow  # with a cold program cache
def test_same_int8_outputs_on_every_device(model, compiled, device):
    """Every device, and on the FPGA emulator both with its conv pipelines (depthwise layers
    then run through them as convs over channel groups) and without."""
    x = inputs_for(model, 1, 7)[0]
    reference = compiled.run_int8(x)
    for pipelines in ((None, False) if fpga_ops.is_fpga(device) else (None,)):
        other = api.CompiledModel(compiled.lowered, device, fpga_pipelines=pipelines)
        for got, want in zip(other.run_int8(x), reference):
            np.testing.assert_array_equal(got, want, err_msg=f"fpga_pipelines={pipelines}")


def test_grouped_conv_that_is_not_depthwise_is_a_clear_error():
    n = Net(3)
    w = n.rng.normal(0, 0.3, (8, 4, 3, 3))
    y = n.op("Conv", ["input", n.const(w)], "conv", group=2, kernel_shape=[3, 3],
             pads=[1, 1, 1, 1])
    n.nodes.append(onnx.helper.make_node("Identity", [y], ["out"], name="out"))
    grouped = n.model([("input", [1, 8, 6, 6])], [("out", [1, 8, 6, 6])], "grouped")
    with pytest.raises(CompileError, match="groups=2, 8 input channels.*only depthwise"):
        api.compile(grouped, calibration=inputs_for(grouped, 2, 0), device=FASTEST,
                    progress=False)


def test_fpga_estimate_charges_depthwise_layers_as_the_binding_runs_them(model):
    """As convs over channel groups (accel.backend.fpga_depthwise), with their depthwise MACs
    as the useful work and at least one cycle per tap and input vector of every output
    pixel."""
    from accel.fpga.estimate import estimate

    result = estimate(model, vec_size=16, lane_num=16)
    assert result.unmodelled == {}
    assert [row.type for row in result.layers] == ["conv"] * 6 + ["pool", "fc"]
    depthwise = [row for row in result.layers if "/c" in row.name]
    assert [row.name.rsplit("/", 1)[1] for row in depthwise] == ["c0", "c0", "c16"]
    assert [row.macs for row in depthwise] == [16 * 16 * 16 * 9, 16 * 8 * 8 * 25,
                                              8 * 8 * 8 * 25]
    for row, pixels, taps in zip(depthwise, (16 * 16, 8 * 8, 8 * 8), (9, 25, 25)):
        assert row.cycles >= pixels * taps
    assert "Conv (depthwise)" not in result.table()
