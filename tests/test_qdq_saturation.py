"""Why QDQ test models use reduce_range on hosts without VNNI (tests/qdq_host.py).

A one-pixel-deep 1x1 QDQ conv whose two u8 inputs and two s8 weights are at their largest:
255*127 + 255*127 = 64770 does not fit int16. onnxruntime's MLAS adds such a pair with
vpmaddubsw (saturating at 32767) on hosts without VNNI, and exactly with vpdpbusd where VNNI
exists. accel's kernels always add exactly. With 7-bit weights (reduce_range) the pair
stays below 32767 and onnxruntime is exact on every host.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import accel
from qdq_host import ort_u8s8_saturates

SX, SY = 1.0, 2.54  # input and output scales (zero points 0); weights w/127, so real w = 1 at 127


def one_pair_conv(weight: int):
    inits = [numpy_helper.from_array(np.float32(SX), "sx"),
             numpy_helper.from_array(np.uint8(0), "zx"),
             numpy_helper.from_array(np.full((1, 2, 1, 1), weight, np.int8), "wq"),
             numpy_helper.from_array(np.full((1,), 1 / 127, np.float32), "sw"),
             numpy_helper.from_array(np.zeros((1,), np.int8), "zw"),
             numpy_helper.from_array(np.float32(SY), "sy"),
             numpy_helper.from_array(np.uint8(0), "zy")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"]),
             helper.make_node("QuantizeLinear", ["y", "sy", "zy"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["out"])]
    graph = helper.make_graph(
        nodes, "one_pair", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def expected_levels(x_level: int, weight: int, saturate: bool) -> int:
    """The output's u8 level: the pair sum (saturated to int16 as vpmaddubsw does, or
    exact), requantized by sx * (1/127) / sy and rounded."""
    pair = 2 * x_level * weight
    if saturate:
        pair = min(pair, 32767)
    return int(np.clip(np.rint(np.float32(pair) * np.float32(SX / 127 / SY)), 0, 255))


@pytest.mark.parametrize("weight", [127, 64], ids=["8-bit", "reduce_range"])
def test_onnxruntime_saturates_u8s8_pairs_only_without_vnni_and_accel_never(weight):
    model = one_pair_conv(weight)
    x = np.full((1, 2, 4, 4), 255, np.float32)
    x[0, :, 0, :] = 100  # 2 * 100 * 127 = 25400: no pair overflows in this row
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    theirs = np.rint(session.run(None, {"x": x})[0][0, 0] / SY).astype(int)
    ours = np.rint(accel.compile(model, progress=False).run(x)["out"][0, 0] / SY).astype(int)

    exact = [expected_levels(100, weight, False), expected_levels(255, weight, False)]
    assert (ours[0] == exact[0]).all() and (ours[1:] == exact[1]).all()  # accel: exact sums
    saturating = ort_u8s8_saturates()
    ort_expected = [expected_levels(100, weight, saturating),
                    expected_levels(255, weight, saturating)]
    assert (theirs[0] == ort_expected[0]).all() and (theirs[1:] == ort_expected[1]).all()
    if weight == 64 or not saturating:  # 2 * 255 * 64 < 32767: the same everywhere
        np.testing.assert_array_equal(ours, theirs)
    else:
        assert ort_expected[1] < exact[1]  # 102 against 201: the saturation is real here
