"""numerics.add_f32 (quant.h's accel_add_f32) against onnxruntime's QLinearAdd, value for
value: a QDQ Add (DequantizeLinear x2 -> Add -> QuantizeLinear, uint8 as quantize_static
writes them) that onnxruntime fuses into QLinearAdd, on random inputs, scales and zero
points. Our int8 tensors are the uint8 ones minus 128 (zero points too), an exact mapping.
Also numerics.fma_f32 against exact rational arithmetic."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from accel import numerics

ort = pytest.importorskip("onnxruntime")


def qdq_add_model(sa, za, sb, zb, sc, zc, n: int, dtype=np.uint8) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.float32(v), k) for k, v in
             (("sa", sa), ("sb", sb), ("sc", sc))]
    inits += [numpy_helper.from_array(dtype(v), k) for k, v in
              (("za", za), ("zb", zb), ("zc", zc))]
    onnx_type = TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8
    nodes = [helper.make_node("DequantizeLinear", ["a", "sa", "za"], ["fa"]),
             helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["fb"]),
             helper.make_node("Add", ["fa", "fb"], ["sum"]),
             helper.make_node("QuantizeLinear", ["sum", "sc", "zc"], ["c"])]
    graph = helper.make_graph(
        nodes, "qdq_add", [helper.make_tensor_value_info("a", onnx_type, [n]),
                           helper.make_tensor_value_info("b", onnx_type, [n])],
        [helper.make_tensor_value_info("c", onnx_type, [n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def ours(a_stored, sa, za, b_stored, sb, zb, sc, zc, offset=128) -> np.ndarray:
    """numerics.add_f32 on our int8 values (stored - offset), back to the stored type."""
    ratio_a, ratio_b = np.float32(sa) / np.float32(sc), np.float32(sb) / np.float32(sc)
    fixed = numerics.add_f32_fixed_part(ratio_a, za - offset, ratio_b, zb - offset,
                                        zc - offset, offset)
    a, b = a_stored.astype(np.int32) - offset, b_stored.astype(np.int32) - offset
    return numerics.add_f32(a, b, ratio_a, ratio_b, fixed, offset).astype(np.int32) + offset


def random_scales(rng, few_bits: bool):
    if few_bits:  # exact halfway sums and fixed-part roundings are frequent
        sa, sb = (np.float32(rng.integers(1, 64) / 2.0 ** rng.integers(6, 12)) for _ in "ab")
        sc = np.float32(rng.integers(1, 64) / 2.0 ** rng.integers(5, 9))
    else:
        sa, sb = (np.float32(np.exp(rng.uniform(-6, 0))) for _ in "ab")
        sc = np.float32(max(sa, sb) * np.exp(rng.uniform(-0.5, 1.5)))
    return sa, sb, sc


@pytest.mark.parametrize("dtype, offset", [(np.uint8, 128), (np.int8, 0)])
def test_add_f32_equals_onnxruntime_qlinear_add(dtype, offset):
    rng = np.random.default_rng(0)
    low, high = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max) + 1
    checked = 0
    for trial in range(120):
        sa, sb, sc = random_scales(rng, few_bits=trial % 2 == 0)
        za, zb, zc = (int(v) for v in rng.integers(low, high, 3))
        if trial % 5 == 0:
            zc = low  # a folded ReLU (quantize_static gives the Add the Relu's range)
        n = int(rng.integers(1, 700))  # odd lengths: MLAS's vector tail too
        a = rng.integers(low, high, n, dtype=dtype)
        b = rng.integers(low, high, n, dtype=dtype)
        model = qdq_add_model(sa, za, sb, zb, sc, zc, n, dtype)
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        expected = session.run(None, {"a": a, "b": b})[0]
        np.testing.assert_array_equal(ours(a, sa, za, b, sb, zb, sc, zc, offset), expected,
                                      err_msg=f"scales {sa} {sb} {sc}, zero points {za} {zb} {zc}")
        checked += n
    assert checked > 30_000


def test_int8_storage_needs_its_own_offset():
    """The offset matters: int8 tensors computed as if stored as uint8 differ from ORT."""
    rng = np.random.default_rng(3)
    differ = 0
    for _ in range(20):
        sa, sb, sc = random_scales(rng, few_bits=True)
        za, zb, zc = (int(v) for v in rng.integers(-128, 128, 3))
        a = rng.integers(-128, 128, 512, dtype=np.int8)
        b = rng.integers(-128, 128, 512, dtype=np.int8)
        model = qdq_add_model(sa, za, sb, zb, sc, zc, 512, np.int8)
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        expected = session.run(None, {"a": a, "b": b})[0].astype(np.int32)
        as_uint8 = ours(a.astype(np.int32) + 128, sa, za + 128, b.astype(np.int32) + 128, sb,
                        zb + 128, sc, zc + 128) - 128
        differ += int(np.sum(as_uint8 != expected))
    assert differ > 0


def test_fixed_point_contract_is_not_what_onnxruntime_does():
    """The test above can fail: the fixed-point add (one exact rounding) differs from ORT."""
    rng = np.random.default_rng(1)
    differ = 0
    for _ in range(20):
        sa, sb, sc = random_scales(rng, few_bits=True)
        za, zb, zc = (int(v) for v in rng.integers(0, 256, 3))
        a = rng.integers(0, 256, 512, dtype=np.uint8)
        b = rng.integers(0, 256, 512, dtype=np.uint8)
        session = ort.InferenceSession(qdq_add_model(sa, za, sb, zb, sc, zc, 512).SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        expected = session.run(None, {"a": a, "b": b})[0].astype(np.int32)
        (ma, sha), (mb, shb) = (numerics.quantize_multiplier(float(s) / float(sc)) for s in (sa, sb))
        fixed = numerics.requantize_add(a.astype(np.int32) - za, ma, sha, b.astype(np.int32) - 128,
                                        zb - 128, mb, shb, zc - 128).astype(np.int32) + 128
        differ += int(np.sum(fixed != expected))
    assert differ > 0


def exact_f32_fma(x: float, y: float, z: float) -> np.float32:
    """float32 rounding (half to even) of the exact x * y + z."""
    exact = Fraction(x) * Fraction(y) + Fraction(z)
    below = np.float32(float(exact))  # float64 then float32 rounding; fixed up below
    while Fraction(float(below)) > exact:
        below = np.nextafter(below, np.float32(-np.inf))
    while Fraction(float(np.nextafter(below, np.float32(np.inf)))) <= exact:
        below = np.nextafter(below, np.float32(np.inf))
    above = np.nextafter(below, np.float32(np.inf))
    low, high = exact - Fraction(float(below)), Fraction(float(above)) - exact
    if low < high or (low == high and int(below.view(np.int32)) % 2 == 0):
        return below
    return above


def test_fma_f32_rounds_once_even_at_double_rounding_traps():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, 400).astype(np.float32)
    y = rng.uniform(0.01, 4, 400).astype(np.float32)
    z = rng.uniform(-300, 300, 400).astype(np.float32)
    # traps: 3 * (1 + 2^-23) lies exactly halfway between two float32 values; a tiny z
    # vanishes from the float64 sum but decides the rounding of the exact one
    x[:100], y[:100] = 3, np.float32(1 + 2.0 ** -23)
    z[:100] = np.float32(2.0 ** -80) * rng.choice([-1, 1], 100)
    z[100:110] = 0  # a true tie: to even
    got = numerics.fma_f32(x, y, z)
    want = np.array([exact_f32_fma(float(a), float(b), float(c)) for a, b, c in zip(x, y, z)],
                    np.float32)
    np.testing.assert_array_equal(got, want)
