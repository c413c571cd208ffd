"""The float32 average pools of QDQ models (pool.cl's avg_pool_f32_i8 and global_avg_pool_i8
with requant_f32, fpga_pool.cl's float32_mode):

- the references (accel.reference.pool) equal onnxruntime's QLinearAveragePool and
  QLinearGlobalAveragePool value for value: a QDQ AveragePool / GlobalAveragePool
  (DequantizeLinear -> pool -> QuantizeLinear) that onnxruntime fuses, uint8 and int8, on
  random inputs, scales and zero points;
- the kernels equal the reference bit for bit on every device and in the FPGA pipeline,
  including scales that put many averages exactly halfway (rounding half to even);
- numerics.div_f32 (quant.h's accel_div_f32, division from a host reciprocal) equals IEEE
  float32 division, and numerics.reciprocal_f32 is the correctly rounded reciprocal.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import accel
from accel import numerics
from accel.numerics import Activation
from accel.ops import fpga, pool
from accel.reference import pool as reference

ort = pytest.importorskip("onnxruntime")


def f32_pool(shape, kernel, stride=1, pads=(0, 0, 0, 0), *, input_scale=0.02, output_scale=0.03,
             input_zero_point=0, output_zero_point=0, storage_offset=128, **kwargs):
    return pool.PoolParams("avg", shape, kernel, stride, pads, requant="float32",
                           input_scale=input_scale, output_scale=output_scale,
                           input_zero_point=input_zero_point,
                           output_zero_point=output_zero_point, storage_offset=storage_offset,
                           **kwargs)


def random_i8(shape, seed):
    return np.random.default_rng(seed).integers(-128, 128, shape, dtype=np.int8)


# --- the reference is onnxruntime's QLinearAveragePool ------------------------------------------
def onnxruntime_qdq_pool(params, x: np.ndarray, offset: int | None = None) -> np.ndarray:
    """onnxruntime on DQ -> AveragePool or GlobalAveragePool -> Q (fused to its QLinear op)
    for our int8 x; returns our int8 values (stored - offset)."""
    offset = params.storage_offset if offset is None else offset
    dtype, onnx_type = (np.uint8, TensorProto.UINT8) if offset else (np.int8, TensorProto.INT8)
    inits = [numpy_helper.from_array(np.float32(params.input_scale), "xs"),
             numpy_helper.from_array(np.array(params.input_zero_point + offset, dtype), "xz"),
             numpy_helper.from_array(np.float32(params.output_scale), "ys"),
             numpy_helper.from_array(np.array(params.output_zero_point + offset, dtype), "yz")]
    if isinstance(params, pool.GlobalAvgPoolParams):
        pooling = helper.make_node("GlobalAveragePool", ["xf"], ["yf"])
    else:
        pooling = helper.make_node("AveragePool", ["xf"], ["yf"], kernel_shape=list(params.kernel),
                                   strides=list(params.stride), pads=list(params.pads),
                                   ceil_mode=int(params.ceil_mode),
                                   count_include_pad=int(params.count_include_pad))
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]), pooling,
             helper.make_node("QuantizeLinear", ["yf", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "qdq_pool", [helper.make_tensor_value_info("x", onnx_type, None)],
                              [helper.make_tensor_value_info("y", onnx_type, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    stored = (x.astype(np.int32) + offset).astype(dtype)
    y = session.run(None, {"x": np.transpose(stored, (0, 3, 1, 2))})[0]
    return np.transpose(y.astype(np.int32) - offset, (0, 2, 3, 1))


ORT_GEOMETRIES = [
    dict(kernel=2, stride=2),                                              # DenseNet transition
    dict(kernel=3, stride=1, pads=(1, 1, 1, 1)),                           # divisors 4, 6, 9
    dict(kernel=3, stride=1, pads=(1, 1, 1, 1), count_include_pad=True),
    dict(kernel=3, stride=2, pads=(1, 1, 1, 1), ceil_mode=True),
    dict(kernel=(2, 3), stride=(1, 2), pads=(1, 0, 0, 2)),
]


@pytest.mark.parametrize("offset", [128, 0], ids=["uint8", "int8"])
@pytest.mark.parametrize("geometry", ORT_GEOMETRIES, ids=lambda g: str(sorted(g.items())))
def test_reference_equals_onnxruntime(geometry, offset):
    rng = np.random.default_rng(len(str(geometry)) + offset)
    for trial in range(4):
        if trial % 2:  # scales with few bits: exact halfway averages are frequent
            xs, ys = np.float32(rng.integers(1, 16) / 64), np.float32(rng.integers(1, 16) / 64)
        else:
            xs = np.float32(np.exp(rng.uniform(-6, -1)))
            ys = np.float32(xs * np.exp(rng.uniform(-1, 1)))
        params = f32_pool((1, 9, 8, 24), input_scale=xs, output_scale=ys,
                          input_zero_point=int(rng.integers(-128, 128)),
                          output_zero_point=int(rng.integers(-128, 128)),
                          storage_offset=offset, **geometry)
        x = random_i8(params.input_shape, trial)
        np.testing.assert_array_equal(reference.pool2d(params, x).astype(np.int32),
                                      onnxruntime_qdq_pool(params, x))


def test_halfway_cases_are_exercised():
    """With s_x = s_y = 1 a 2x2 mean is a multiple of 1/4: a quarter of the outputs lie
    exactly halfway, where rounding half to even and half up differ."""
    params = f32_pool((1, 8, 8, 16), 2, 2, input_scale=1.0, output_scale=1.0)
    x = random_i8(params.input_shape, 0)
    total = x.astype(np.int32).reshape(1, 4, 2, 4, 2, 16).sum(axis=(2, 4))
    assert np.mean(total % 4 == 2) > 0.2
    np.testing.assert_array_equal(reference.pool2d(params, x), np.rint(total / 4).astype(np.int8))


def f32_global(shape, *, input_scale=0.02, output_scale=0.03, input_zero_point=0,
               output_zero_point=0, **kwargs):
    return pool.GlobalAvgPoolParams(shape, input_zero_point, output_zero_point,
                                    requant="float32", input_scale=input_scale,
                                    output_scale=output_scale, **kwargs)


@pytest.mark.parametrize("offset", [128, 0], ids=["uint8", "int8"])
@pytest.mark.parametrize("plane", [(2, 2), (7, 7), (5, 3)])
def test_global_reference_equals_onnxruntime(plane, offset):
    """With scales of few bits, 2x2 planes put a quarter of the averages exactly halfway:
    the fixed-point contract (half up, exact multiplier) then differs, the float32 mode not."""
    rng = np.random.default_rng(plane[0] * 10 + plane[1] + offset)
    fixed_differs = 0
    for trial in range(4):
        if trial % 2:
            xs, ys = np.float32(rng.integers(1, 16) / 64), np.float32(rng.integers(1, 16) / 64)
        else:
            xs = np.float32(np.exp(rng.uniform(-6, -1)))
            ys = np.float32(xs * np.exp(rng.uniform(-1, 1)))
        xz, yz = (int(v) for v in rng.integers(-128, 128, 2))
        params = f32_global((2,) + plane + (64,), input_scale=xs, output_scale=ys,
                            input_zero_point=xz, output_zero_point=yz)
        x = random_i8(params.input_shape, trial)
        expected = onnxruntime_qdq_pool(params, x, offset)
        np.testing.assert_array_equal(reference.pool2d(params, x).astype(np.int32), expected)
        fixed = pool.GlobalAvgPoolParams(params.input_shape, xz, yz, scale_ratio=float(xs / ys))
        fixed_differs += int(np.sum(reference.pool2d(fixed, x) != expected))
    if plane == (2, 2):
        assert fixed_differs > 0  # so the float32 mode is needed (and tested) here


# --- the kernels equal the reference -------------------------------------------------------
F32_CASES = {
    "densenet-2x2": f32_pool((1, 8, 8, 40), 2, 2, input_scale=0.0213, output_scale=0.0187,
                             input_zero_point=-128, output_zero_point=-128),
    "halfway-2x2": f32_pool((2, 6, 6, 16), 2, 2, input_scale=1.0, output_scale=1.0),
    "3x3-exclude-pad": f32_pool((1, 7, 5, 20), 3, 1, (1, 1, 1, 1), input_scale=0.05,
                                output_scale=0.07, input_zero_point=5, output_zero_point=-3),
    "3x3-include-pad-ceil": f32_pool((1, 6, 6, 16), 3, 2, (1, 1, 1, 1), count_include_pad=True,
                                     ceil_mode=True, input_scale=0.3, output_scale=0.1),
    "int8-storage": f32_pool((1, 5, 6, 33), (2, 3), (1, 2), (1, 0, 0, 2), storage_offset=0,
                             input_zero_point=-7, output_zero_point=9),
    "saturates-relu": f32_pool((1, 4, 4, 16), 2, 2, input_scale=0.5, output_scale=0.05,
                               output_zero_point=-20, activation=Activation.relu(-20)),
}


F32_CASES.update({
    "global-7x7": f32_global((2, 7, 7, 40), input_scale=0.011, output_scale=0.013,
                             input_zero_point=-128, output_zero_point=-128),
    "global-halfway-2x2": f32_global((1, 2, 2, 32), input_scale=0.25, output_scale=0.25,
                                     input_zero_point=3, output_zero_point=-5,
                                     activation=Activation.relu(-5)),
})


@pytest.mark.oclgrind
@pytest.mark.parametrize("case", F32_CASES, ids=list(F32_CASES))
def test_kernel_is_bit_exact(ctx, case):
    params = F32_CASES[case]
    x = random_i8(params.input_shape, len(case))
    np.testing.assert_array_equal(pool.pool2d(ctx, params, x), reference.pool2d(params, x))


def test_saturation_case_reaches_both_ends():
    params = F32_CASES["saturates-relu"]
    out = reference.pool2d(params, random_i8(params.input_shape, len("saturates-relu")))
    assert out.min() == -20 and out.max() == 127


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_random_float32_pools_are_bit_exact(ctx, data):
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    pads = (data.draw(st.integers(0, kh - 1)), data.draw(st.integers(0, kw - 1)),
            data.draw(st.integers(0, kh - 1)), data.draw(st.integers(0, kw - 1)))
    h = data.draw(st.integers(max(1, kh - pads[0] - pads[2]), 8))
    w = data.draw(st.integers(max(1, kw - pads[1] - pads[3]), 8))
    xs = data.draw(st.floats(1e-4, 1.0))
    params = f32_pool((1, h, w, data.draw(st.integers(1, 40))), (kh, kw),
                      (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))), pads,
                      ceil_mode=data.draw(st.booleans()),
                      count_include_pad=data.draw(st.booleans()), input_scale=xs,
                      output_scale=xs * data.draw(st.floats(0.25, 4.0)),
                      input_zero_point=data.draw(st.integers(-128, 127)),
                      output_zero_point=data.draw(st.integers(-128, 127)),
                      storage_offset=data.draw(st.sampled_from([0, 128])))
    x = random_i8(params.input_shape, data.draw(st.integers(0, 1000)))
    np.testing.assert_array_equal(pool.pool2d(ctx, params, x), reference.pool2d(params, x))


@pytest.mark.oclgrind
def test_output_into_a_channel_slice(ctx):
    params = F32_CASES["densenet-2x2"]
    x = random_i8(params.input_shape, 3)
    _, oh, ow, _ = params.output_shape
    out_buf = ctx.upload(np.full((1, oh, ow, 96), 77, dtype=np.int8))
    in_buf = ctx.upload(np.concatenate([x, np.full((1, 8, 8, 8), -128, np.int8)], axis=3))
    kernel, global_size, local_size = pool.bind(ctx, params, [in_buf], out_buf,
                                                out_channel_stride=96, out_channel_offset=48)
    kernel.launch(ctx.queue, global_size, local_size).wait()
    out = ctx.download(out_buf, np.int8, (1, oh, ow, 96))
    np.testing.assert_array_equal(out[..., 48:88], reference.pool2d(params, x))
    np.testing.assert_array_equal(out[..., 88:], -128)  # padded channels: z_y
    np.testing.assert_array_equal(out[..., :48], 77)


@pytest.mark.parametrize("case", ["densenet-2x2", "3x3-exclude-pad", "int8-storage",
                                  "global-7x7", "global-halfway-2x2"])
def test_fpga_pipeline_is_bit_exact(case, emulator):
    emu = accel.Context(emulator)
    params = F32_CASES[case]
    x = random_i8(params.input_shape, len(case) + 1)
    np.testing.assert_array_equal(fpga.pool2d(emu, params, x), reference.pool2d(params, x))


# --- numerics ----------------------------------------------------------------------------
def test_div_f32_equals_ieee_division():
    rng = np.random.default_rng(0)
    divisors = [np.float32(n) for n in range(1, 50)] + \
        [np.float32(rng.uniform(0.5, 1) * 2.0 ** rng.integers(-30, 4)) for _ in range(40)]
    for b in divisors:
        a = (rng.uniform(-1, 1, 50_000) * 2.0 ** rng.integers(-20, 20, 50_000)).astype(np.float32)
        np.testing.assert_array_equal(numerics.div_f32(a, b, numerics.reciprocal_f32(b)),
                                      a / b)


def test_reciprocal_f32_is_correctly_rounded():
    rng = np.random.default_rng(1)
    for value in [np.float32(v) for v in (1, 3, 7, 9, 49, 0.1, 3.0e-5)] + \
            [np.float32(rng.uniform(0.5, 1) * 2.0 ** rng.integers(-40, 40)) for _ in range(200)]:
        got = numerics.reciprocal_f32(value)
        exact = 1 / Fraction(float(value))
        error = abs(Fraction(float(got)) - exact)
        for neighbour in (np.nextafter(got, np.float32(0)), np.nextafter(got, np.float32(np.inf))):
            assert error <= abs(Fraction(float(neighbour)) - exact)


# --- bad parameters ------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="max"), "average pool"),
    (dict(input_scale=0.0), "input_scale"),
    (dict(output_scale=2.0 ** 70), "output_scale"),
    (dict(input_scale=1.0, output_scale=2.0 ** -20), "scale ratio"),
    (dict(storage_offset=7), "storage_offset"),
    (dict(requant="float16"), "requant"),
])
def test_bad_float32_parameters_are_clear_errors(kwargs, match):
    base = dict(kind="avg", input_shape=(1, 4, 4, 4), kernel=2, stride=2, requant="float32",
                input_scale=0.1, output_scale=0.1)
    with pytest.raises(ValueError, match=match):
        pool.PoolParams(**{**base, **kwargs})


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_scale=0.0), "input_scale"),
    (dict(output_scale=float("inf")), "output_scale"),
    (dict(input_scale=1.0, output_scale=2.0 ** -30), "out of range"),
    (dict(requant="float16"), "requant"),
])
def test_bad_float32_global_parameters_are_clear_errors(kwargs, match):
    base = dict(input_shape=(1, 4, 4, 4), requant="float32", input_scale=0.1, output_scale=0.1)
    with pytest.raises(ValueError, match=match):
        pool.GlobalAvgPoolParams(**{**base, **kwargs})
