"""A QDQ model's Concat like onnxruntime's QLinearConcat: each input keeps its own int8 scale
(its producer rounds to it) and is requantized into its channel slice of the concat through
ORT's 256-entry table (accel.ops.affine.requantize_table, affine.cl lut_i8); an
input already at the concat's scale and zero point is written in place."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from accel.backend import api
from accel.ops import affine as affine_ops
from test_qdq import assert_bit_equal_to_onnxruntime_and_after_load, assert_qdq_bit_equal_on
from test_compile import FASTEST, Net, inputs_for, ort_outputs, output_scale, \
    quantize_with_onnxruntime


def dq_concat_q_model(dtype, scales, zero_points) -> onnx.ModelProto:
    """Two int8/uint8 inputs -> DequantizeLinear each -> Concat -> QuantizeLinear (ORT fuses
    it to QLinearConcat)."""
    elem = TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8
    inits, nodes = [], []
    for i in range(3):
        inits += [numpy_helper.from_array(np.float32(scales[i]), f"s{i}"),
                  numpy_helper.from_array(dtype(zero_points[i]), f"z{i}")]
    nodes = [helper.make_node("DequantizeLinear", [f"x{i}", f"s{i}", f"z{i}"], [f"d{i}"])
             for i in range(2)]
    nodes += [helper.make_node("Concat", ["d0", "d1"], ["c"], axis=1),
              helper.make_node("QuantizeLinear", ["c", "s2", "z2"], ["y"])]
    graph = helper.make_graph(
        nodes, "dq_concat_q",
        [helper.make_tensor_value_info(f"x{i}", elem, [1, 256, 1, 1]) for i in range(2)],
        [helper.make_tensor_value_info("y", elem, [1, 512, 1, 1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_requantize_table_equals_onnxruntime_qlinear_concat(dtype):
    """Every one of the 256 input values, for random scales and zero points (some equal to
    the output's): the table gives ORT's bytes."""
    rng = np.random.default_rng(3)
    offset = 128 if dtype == np.uint8 else 0  # ORT's stored value = ours + offset
    info = np.iinfo(dtype)
    values = np.arange(info.min, info.max + 1).astype(dtype).reshape(1, 256, 1, 1)
    for trial in range(40):
        scales = np.exp(rng.uniform(-6, 1, 3)).astype(np.float32)
        zero_points = rng.integers(info.min, info.max + 1, 3)
        if trial % 5 == 0:
            scales[1], zero_points[1] = scales[2], zero_points[2]
        session = ort.InferenceSession(
            dq_concat_q_model(dtype, scales, zero_points).SerializeToString(),
            providers=["CPUExecutionProvider"])
        ref = session.run(None, {"x0": values, "x1": values})[0].astype(np.int64).ravel()
        ours = np.concatenate([affine_ops.requantize_table(
            scales[i], zero_points[i] - offset, scales[2], zero_points[2] - offset)
            for i in range(2)]).astype(np.int64) + offset  # table entry q + 128 <-> value q
        np.testing.assert_array_equal(ours, ref)


def test_requantize_table_rejects_bad_parameters():
    with pytest.raises(ValueError, match="out_scale"):
        affine_ops.requantize_table(0.1, 0, 0.0, 0)
    with pytest.raises(ValueError, match="in_zero_point"):
        affine_ops.requantize_table(0.1, 300, 0.1, 0)
    with pytest.raises(ValueError, match="table"):
        affine_ops.RequantizeParams((1, 2, 2, 16), np.zeros(255, np.int8))


def test_requantize_kernel_is_bit_exact(ctx):
    """The device copy (into a channel slice too) against the table on the host."""
    rng = np.random.default_rng(5)
    table = affine_ops.requantize_table(0.037, -5, 0.05, 11)
    x = rng.integers(-128, 128, (1, 5, 7, 20)).astype(np.int8)
    params = affine_ops.RequantizeParams((1, 5, 7, 20), table)
    np.testing.assert_array_equal(affine_ops.requantize(ctx, params, x, -5),
                                  table[x.astype(np.int32) + 128])
    # into channels [32, 52) of a 64-channel tensor
    from accel.ops.layout import pad_channels
    src = ctx.upload(pad_channels(x, fill=-5))
    dst = ctx.upload(np.full((1, 5, 7, 64), 99, np.int8))
    sliced = affine_ops.RequantizeParams((1, 5, 7, 20), table, out_channel_stride=64,
                                         out_channel_offset=32)
    kernel, global_size, local_size = affine_ops.bind_requantize(ctx, sliced, src, dst)
    kernel.launch(ctx.queue, global_size, local_size).wait()
    out = ctx.download(dst, np.int8, (1, 5, 7, 64))
    np.testing.assert_array_equal(out[..., 32:52], table[x.astype(np.int32) + 128])
    np.testing.assert_array_equal(out[..., 52:64], table[-5 + 128])  # padding: z_x -> z_y
    assert np.all(out[..., :32] == 99)


def concat_net() -> onnx.ModelProto:
    """Two convs at different scales concatenated, then a dense-block-like nested concat
    (its first inputs again, plus a conv of the first concat), a max pool and a last conv."""
    n = Net(11)
    x = n.conv("input", 3, 16)
    a = n.conv(x, 16, 16)
    b = n.conv(x, 16, 32, relu=False)
    first = n.op("Concat", [a, b], axis=1)
    c = n.conv(first, 48, 16)
    second = n.op("Concat", [a, b, c], axis=1)
    pooled = n.op("MaxPool", [second], kernel_shape=[2, 2], strides=[2, 2])
    y = n.conv(pooled, 64, 8, relu=False)
    n.nodes.append(helper.make_node("Identity", [y], ["output"], name="out"))
    return n.model([("input", [1, 3, 16, 16])], [("output", [1, 8, 8, 8])], "concat")


@pytest.mark.parametrize("activation_type", ["QUInt8", "QInt8"])
def test_qdq_concat_net_is_bit_equal_to_onnxruntime(activation_type, tmp_path):
    fp32 = concat_net()
    qdq = quantize_with_onnxruntime(fp32, inputs_for(fp32, 8, 0), tmp_path, activation_type)
    compiled = api.compile(qdq, device=FASTEST, progress=False)
    ops = [s.op for s in compiled.lowered.steps]
    assert ops.count("requantize") >= 3, ops  # the inputs' scales differ from the concats'
    assert_bit_equal_to_onnxruntime_and_after_load(compiled, qdq, inputs_for(fp32, 4, 1),
                                                   tmp_path)
    calibrated = api.compile(fp32, calibration=inputs_for(fp32, 4, 0), device=FASTEST,
                             progress=False)
    assert "requantize" not in [s.op for s in calibrated.lowered.steps]  # shared scale


def test_qdq_concat_net_is_bit_equal_on_every_device(ctx, tmp_path):
    assert_qdq_bit_equal_on(ctx.device, concat_net(), tmp_path)


def test_qdq_concat_input_at_the_concat_scale_is_written_in_place(tmp_path):
    """Give the last conv feeding the second concat the concat's own Q/DQ parameters: it
    is then written straight into its slice (no copy), still bit-equal to ORT."""
    fp32 = concat_net()
    qdq = quantize_with_onnxruntime(fp32, inputs_for(fp32, 8, 0), tmp_path, "QUInt8")
    concats = [n for n in qdq.graph.node if n.op_type == "Concat"]
    last_input = concats[1].input[2]  # the DQ output of the conv's tensor
    (dq,) = [n for n in qdq.graph.node if n.output[0] == last_input]
    (q_out,) = [n for n in qdq.graph.node
                if n.op_type == "QuantizeLinear" and n.input[0] == concats[1].output[0]]
    for node in qdq.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") \
                and node.input[1] == dq.input[1]:
            node.input[1], node.input[2] = q_out.input[1], q_out.input[2]
    compiled = api.compile(qdq, device=FASTEST, progress=False)
    steps = compiled.lowered.steps
    assert [s.op for s in steps].count("requantize") == 4, [s.op for s in steps]
    (writer,) = [s for s in steps if s.op == "conv" and s.inputs[0] == concats[0].output[0]]
    placement = compiled.lowered.placements[writer.output]
    assert (placement.root, placement.offset) == (concats[1].output[0], 48)  # in place
    for x in inputs_for(fp32, 3, 1):
        ours, ref = compiled.run(x)["output"], ort_outputs(qdq, x)["output"]
        lsb = output_scale(compiled, "output")
        np.testing.assert_array_equal(np.rint((ours - ref) / lsb), 0)


def concat_batchnorm_net() -> onnx.ModelProto:
    """DenseNet's pattern: a concat, then a BatchNorm + ReLU no conv can absorb, then a conv."""
    n = Net(13)
    x = n.conv("input", 3, 16)
    a = n.conv(x, 16, 16)
    normed = n.batchnorm(n.op("Concat", [x, a], axis=1), 32)
    y = n.conv(n.op("Relu", [normed]), 32, 8, relu=False)
    n.nodes.append(helper.make_node("Identity", [y], ["output"], name="out"))
    return n.model([("input", [1, 3, 16, 16])], [("output", [1, 8, 16, 16])], "concat_bn")


def test_qdq_batchnorm_after_concat_is_bit_equal_on_every_device(ctx, tmp_path):
    """ORT runs that BatchNorm in float32 between DQ and Q: the affine becomes a per-channel
    256-entry table of that arithmetic (affine_table, affine.cl lut_i8)."""
    from test_qdq import ort_pre_processed
    fp32 = ort_pre_processed(concat_batchnorm_net(), tmp_path)
    qdq = quantize_with_onnxruntime(fp32, inputs_for(fp32, 8, 0), tmp_path, "QUInt8")
    assert "BatchNormalization" in [n.op_type for n in qdq.graph.node]
    compiled = api.compile(qdq, device=ctx.device, progress=False)
    tables = [s for s in compiled.lowered.steps if s.op == "requantize"
              and np.ndim(s.arrays["table"]) == 2]
    assert len(tables) == 1  # the BatchNorm
    for x in inputs_for(fp32, 2, 1):
        ours, ref = compiled.run(x)["output"], ort_outputs(qdq, x)["output"]
        lsb = output_scale(compiled, "output")
        np.testing.assert_array_equal(np.rint((ours - ref) / lsb), 0)
