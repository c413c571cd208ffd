"""kernels/eltwise.cl add_i8: bit-exact against accel.reference.eltwise on every device, the
reference against the float formula, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import accel
from accel.numerics import Activation
from accel.ops import eltwise
from accel.ops.layout import pad_channels
from accel.reference import eltwise as reference

A = eltwise.AddParams


def random_i8(shape, seed):
    return np.random.default_rng(seed).integers(-128, 128, shape, dtype=np.int8)


def check(ctx, params, seed=0, defines=None):
    a, b = random_i8(params.shape, seed), random_i8(params.shape, seed + 1)
    expected = reference.add(params, a, b)
    np.testing.assert_array_equal(eltwise.add(ctx, params, a, b, defines), expected)
    return expected


CASES = [
    ("c20_odd", A((1, 3, 5, 20), 3, 0.7, -4, 1.9, 5), True),
    ("spatial1_c5", A((1, 1, 1, 5), -128, 1.0, 127, 1.0, 0), True),
    ("resnet_relu", A((2, 7, 7, 48), -3, 0.8, 5, 1.3, -128, Activation.relu(-128)), True),
    ("relu6", A((1, 4, 4, 16), 0, 0.5, 0, 0.5, -100, Activation.relu6(0.05, -100)), True),
    ("saturates", A((1, 4, 4, 32), 0, 4.0, 0, 3.0, 0), True),
    ("ratio_near_1", A((1, 4, 4, 16), 1, 1.0 - 2.0 ** -30, -1, 1.0 - 2.0 ** -29, 2), True),
    ("ratio_near_2^-31", A((1, 4, 4, 16), 0, 1.2 * 2.0 ** -31, 0, 1.7 * 2.0 ** -31, 7), True),
    ("ratio_large", A((1, 2, 2, 16), 0, 2.0 ** 20, 0, 2.0 ** -20, 0), True),
    ("flat_1d", A((37,), 2, 0.9, 3, 1.1, 4), True),
]


@pytest.mark.parametrize("params", [
    pytest.param(p, id=name, marks=[pytest.mark.oclgrind] if small else [])
    for name, p, small in CASES])
def test_add_is_bit_exact(ctx, params):
    check(ctx, params)


def test_resnet50_residual_add_shape(ctx):
    check(ctx, A((1, 56, 56, 256), -5, 0.6, 2, 0.9, -128, Activation.relu(-128)))


def test_saturation_case_reaches_both_ends():
    params = dict((name, p) for name, p, _ in CASES)["saturates"]
    out = reference.add(params, random_i8(params.shape, 0), random_i8(params.shape, 1))
    assert out.min() == -128 and out.max() == 127


@pytest.mark.oclgrind
@pytest.mark.parametrize("vec", [1, 2, 8, 16])
def test_vector_width_knob(ctx, vec):
    check(ctx, A((1, 3, 3, 24), 1, 0.6, 2, 1.4, 3), defines={"VEC": vec})
    check(ctx, A((1, 3, 3, 24), 1, 0.6, 2, 1.4, 3, requant="float32"), defines={"VEC": vec})


def test_reference_matches_the_float_formula():
    """Dequantize, add, quantize in float64: the fixed-point result is within 1 LSB."""
    params = A((4, 9, 9, 64), 7, 0.61, -9, 1.37, 3)
    a, b = random_i8(params.shape, 2), random_i8(params.shape, 3)
    real = (a - 7.0) * 0.61 + (b + 9.0) * 1.37
    expected = np.clip(np.floor(real + 0.5) + 3, -128, 127)
    assert np.abs(reference.add(params, a, b) - expected).max() <= 1


def test_padded_channels_hold_the_output_zero_point(ctx):
    params = A((1, 2, 2, 5), 3, 0.7, -4, 1.9, 11)
    a, b = random_i8(params.shape, 4), random_i8(params.shape, 5)
    a_buf = ctx.upload(pad_channels(a, fill=3))
    b_buf = ctx.upload(pad_channels(b, fill=-4))
    out_buf = ctx.buffer(2 * 2 * 16)
    kernel, global_size, local_size = eltwise.bind(ctx, params, [a_buf, b_buf], out_buf)
    kernel.launch(ctx.queue, global_size, local_size).wait()
    out = ctx.download(out_buf, np.int8, (1, 2, 2, 16))
    np.testing.assert_array_equal(out[..., :5], reference.add(params, a, b))
    np.testing.assert_array_equal(out[..., 5:], 11)


@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_random_adds_are_bit_exact(ctx, data):
    shape = tuple(data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))) + \
        (data.draw(st.integers(1, 40)),)
    zp = st.integers(-128, 127)
    ratio = st.floats(2.0 ** -20, 16.0)
    params = A(shape, data.draw(zp), data.draw(ratio), data.draw(zp), data.draw(ratio),
               data.draw(zp))
    check(ctx, params, seed=data.draw(st.integers(0, 1000)))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(shape=(1, 0, 4)), ValueError, "zero-size"),
    (dict(shape=()), ValueError, "empty"),
    (dict(a_zero_point=-129), ValueError, "a_zero_point"),
    (dict(b_scale_ratio=-1.0), ValueError, "b_scale_ratio"),
    (dict(a_scale_ratio=2.0 ** 30), ValueError, "a_scale_ratio.*out of range"),
    (dict(b_scale_ratio=2.0 ** -33), ValueError, "b_scale_ratio.*out of range"),
    (dict(activation=Activation(0, 200)), ValueError, "clamp"),
])
def test_bad_parameters_are_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        A(**{"shape": (1, 2, 2, 4), **kwargs})


def test_bad_arrays_and_buffers_are_clear_errors(ctx):
    params = A((1, 2, 2, 4))
    good = np.zeros(params.shape, np.int8)
    with pytest.raises(TypeError, match="b must be int8"):
        eltwise.add(ctx, params, good, good.astype(np.int16))
    with pytest.raises(ValueError, match="a has shape"):
        eltwise.add(ctx, params, np.zeros((1, 2, 2, 5), np.int8), good)
    with pytest.raises(ValueError, match="two input buffers"):
        eltwise.bind(ctx, params, [ctx.buffer(64)], ctx.buffer(64))
    with pytest.raises(ValueError, match="output buffer"):
        eltwise.bind(ctx, params, [ctx.buffer(64), ctx.buffer(64)], ctx.buffer(16))


@pytest.mark.oclgrind
def test_bound_ops_run_as_one_plan(ctx):
    """bind() of Add, MaxPool, L2Norm and GlobalAvgPool chained in a Plan: one upload,
    four launches, one download, the same bits as the references chained."""
    from accel.ops import l2norm, pool
    from accel.reference import l2norm as l2norm_reference
    from accel.reference import pool as pool_reference

    add_params = A((1, 6, 6, 20), 3, 0.7, -4, 1.9, 5)
    pool_params = pool.PoolParams("max", (1, 6, 6, 20), 2, 2, input_zero_point=5,
                                  output_zero_point=5)
    norm_params = l2norm.L2NormParams((1, 3, 3, 20), np.linspace(-5, 20, 20), 0.2, 5, -1)
    gap_params = pool.GlobalAvgPoolParams((1, 3, 3, 20), -1, 2, 0.5)
    a, b = random_i8(add_params.shape, 11), random_i8(add_params.shape, 12)

    a_buf, b_buf = ctx.buffer(6 * 6 * 32), ctx.buffer(6 * 6 * 32)
    added, pooled, normed, out = (ctx.buffer(n) for n in (6 * 6 * 32, 3 * 3 * 32, 3 * 3 * 32, 32))
    plan = ctx.plan()
    plan.add_input(a_buf)
    plan.add_input(b_buf)
    for launch in (eltwise.bind(ctx, add_params, [a_buf, b_buf], added),
                   pool.bind(ctx, pool_params, [added], pooled),
                   l2norm.bind(ctx, norm_params, [pooled], normed),
                   pool.bind(ctx, gap_params, [normed], out)):
        plan.add_launch(*launch)
    plan.add_output(out)
    result = np.zeros((1, 1, 1, 32), np.int8)
    plan.run([pad_channels(a, fill=3), pad_channels(b, fill=-4)], [result])

    expected = pool_reference.pool2d(gap_params, l2norm_reference.l2norm(
        norm_params, pool_reference.pool2d(pool_params, reference.add(add_params, a, b))))
    np.testing.assert_array_equal(result[..., :20], expected)


def test_unknown_knobs_are_refused(ctx):
    params = A((1, 2, 2, 4))
    with pytest.raises(ValueError, match=r"unknown knob\(s\) VECTOR for eltwise.cl"):
        eltwise.bind(ctx, params, [ctx.buffer(64), ctx.buffer(64)], ctx.buffer(64),
                     defines={"VECTOR": 4})


@pytest.mark.parametrize("vec, words", [(3, "VEC must divide 16"), (0, "VEC must be at least 1")])
def test_kernel_refuses_impossible_vec(ctx, vec, words):
    with pytest.raises(accel.BuildError) as error:
        ctx.build_file(eltwise.KERNEL_FILE, {"VEC": vec}, cache=False)
    assert words in error.value.log


# --- requant="float32": onnxruntime's QLinearAdd arithmetic (add_f32_i8, ADD_F32=1) ---------


def f32_add(shape, za, ra, zb, rb, zy, activation=None, offset=128):
    return A(shape, za, ra, zb, rb, zy, activation or Activation(), requant="float32",
             storage_offset=offset)


F32_CASES = [
    ("c20_odd", f32_add((1, 3, 5, 20), 3, 0.7, -4, 1.9, 5)),
    ("resnet_relu", f32_add((2, 7, 7, 48), -128, 0.8, -120, 1.3, -128, Activation.relu(-128))),
    ("saturates", f32_add((1, 4, 4, 32), 0, 4.0, 0, 3.0, 0)),
    # ratios with few significant bits: many sums land exactly halfway (round half to even)
    ("ties", f32_add((1, 4, 4, 64), 0, 0.5, 7, 0.25, -3)),
    ("ties_fixed_part", f32_add((1, 4, 4, 64), -61, 0.375, 17, 0.625, 9)),
    ("tiny_and_large", f32_add((1, 2, 2, 16), 5, 2.0 ** -20, -7, 300.0, 1)),
    ("int8_storage", f32_add((1, 4, 4, 64), -61, 0.375, 17, 0.625, 9, offset=0)),
    ("int8_saturates", f32_add((1, 4, 4, 32), 0, 4.0, 0, 3.0, 0, offset=0)),
]


@pytest.mark.parametrize("params", [pytest.param(p, id=name) for name, p in F32_CASES])
def test_float32_add_is_bit_exact(ctx, params):
    check(ctx, params)


def test_float32_add_resnet50_shape_and_padded_channels(ctx):
    params = f32_add((1, 56, 56, 250), -128, 0.613, -121, 0.937, -128, Activation.relu(-128))
    check(ctx, params, seed=7)
    small = f32_add((1, 2, 2, 5), 3, 0.7, -4, 1.9, 11)
    a, b = random_i8(small.shape, 4), random_i8(small.shape, 5)
    a_buf, b_buf = ctx.upload(pad_channels(a, fill=3)), ctx.upload(pad_channels(b, fill=-4))
    out_buf = ctx.buffer(2 * 2 * 16)
    kernel, global_size, local_size = eltwise.bind(ctx, small, [a_buf, b_buf], out_buf)
    kernel.launch(ctx.queue, global_size, local_size).wait()
    out = ctx.download(out_buf, np.int8, (1, 2, 2, 16))
    np.testing.assert_array_equal(out[..., :5], reference.add(small, a, b))
    np.testing.assert_array_equal(out[..., 5:], 11)


@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_random_float32_adds_are_bit_exact(ctx, data):
    shape = (data.draw(st.integers(1, 4)), data.draw(st.integers(1, 40)))
    zp = st.integers(-128, 127)
    # a few significant bits half the time, so that exact halfway cases are frequent
    ratio = st.one_of(st.floats(2.0 ** -20, 16.0),
                      st.builds(lambda m, e: m * 2.0 ** e, st.integers(1, 63), st.integers(-10, 0)))
    params = f32_add(shape, data.draw(zp), data.draw(ratio), data.draw(zp), data.draw(ratio),
                     data.draw(zp), offset=data.draw(st.sampled_from([0, 128])))
    check(ctx, params, seed=data.draw(st.integers(0, 1000)))


def test_float32_add_is_within_one_lsb_of_the_exact_sum():
    params = f32_add((4, 9, 9, 64), 7, 0.61, -9, 1.37, 3)
    a, b = random_i8(params.shape, 2), random_i8(params.shape, 3)
    real = (a - 7.0) * 0.61 + (b + 9.0) * 1.37
    expected = np.clip(np.rint(real) + 3, -128, 127)
    assert np.abs(reference.add(params, a, b) - expected).max() <= 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(requant="float64"), "requant must be one of"),
    (dict(requant="float32", storage_offset=1), "storage_offset must be 0"),
    (dict(requant="float32", a_scale_ratio=2.0 ** 17), "a_scale_ratio.*float32 add"),
    (dict(requant="float32", b_scale_ratio=2.0 ** -30), "b_scale_ratio.*float32 add"),
])
def test_bad_float32_parameters_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        A(**{"shape": (1, 2, 2, 4), **kwargs})
