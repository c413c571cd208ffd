"""kernels/l2norm.cl: bit-exact against accel.reference.l2norm on every device, the integer
formula's error against the float formula, the integer square root, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import accel
from accel import kernel_source, numerics
from accel.numerics import Activation
from accel.ops import l2norm
from accel.ops.layout import pad_channels
from accel.reference import l2norm as reference

L = l2norm.L2NormParams


def random_i8(shape, seed):
    return np.random.default_rng(seed).integers(-128, 128, shape, dtype=np.int8)


def gammas(channels, low, high, seed=0):
    return np.random.default_rng(seed).uniform(low, high, channels)


def check(ctx, params, x=None, seed=0, defines=None):
    x = random_i8(params.input_shape, seed) if x is None else x
    expected = reference.l2norm(params, x)
    np.testing.assert_array_equal(l2norm.l2norm(ctx, params, x, defines), expected)
    return expected


CASES = [
    ("c20", L((1, 3, 4, 20), gammas(20, 0, 30), 0.2, 3, -2), True),
    ("c3_spatial1", L((1, 1, 1, 3), (1.0, 2.0, 0.5), 1 / 127, -128, 0), True),
    ("c512_ssd_like", L((2, 3, 3, 512), gammas(512, 15, 25), 20 / 127, 0, 0), True),
    ("negative_gamma", L((1, 3, 4, 24), gammas(24, -30, 30), 0.2, 3, -2), True),
    ("relu_clamp", L((1, 4, 4, 40), gammas(40, 0, 30), 0.1, 1, -60, Activation.relu(-60)), True),
    ("saturates", L((1, 5, 5, 16), gammas(16, 10, 50), 0.05, 0, 0), True),
    ("tiny_gain_rounds_to_zero", L((1, 3, 3, 16), gammas(16, 0, 0.2), 1.0, 0, 9), True),
    ("gain_near_quarter", L((1, 3, 3, 16), (0.25, -0.25, 0.2499, -0.2499) * 4, 1.0, 0, 0), True),
    ("huge_gain", L((1, 3, 3, 16), (2.0 ** 40,) * 16, 1.0, 0, 0), True),
]


@pytest.mark.parametrize("params", [
    pytest.param(p, id=name, marks=[pytest.mark.oclgrind] if small else [])
    for name, p, small in CASES])
def test_l2norm_is_bit_exact(ctx, params):
    check(ctx, params)


@pytest.mark.oclgrind
def test_all_zero_pixels_give_the_zero_point(ctx):
    params = L((1, 2, 2, 20), gammas(20, 1, 30), 0.2, 5, -7)
    x = np.full(params.input_shape, 5, np.int8)  # every d = 0: sum of squares 0
    x[0, 1, 1, 3] = 6  # one pixel with a single non-zero channel: y = gain there
    out = check(ctx, params, x)
    assert (out[0, :1] == -7).all() and (out[0, 1, 0] == -7).all()
    assert out[0, 1, 1, 3] == min(127, -7 + math.floor(params.gamma[3] / 0.2 + 0.5))


def test_saturation_case_reaches_both_ends():
    params = dict((name, p) for name, p, _ in CASES)["saturates"]
    out = reference.l2norm(params, random_i8(params.input_shape, 0))
    assert out.min() == -128 and out.max() == 127


@pytest.mark.oclgrind
@pytest.mark.parametrize("vec", [1, 4, 8])
def test_vector_width_knob(ctx, vec):
    check(ctx, L((1, 3, 3, 48), gammas(48, 0, 30), 0.2, 2, 1), defines={"VEC": vec})


@pytest.mark.oclgrind
def test_padded_channel_contents_do_not_matter(ctx):
    """Garbage in the padded input channels changes nothing; padded outputs hold z_y."""
    params = L((1, 2, 3, 5), gammas(5, 1, 30), 0.2, 4, 6)
    x = random_i8(params.input_shape, 7)
    padded = pad_channels(x, fill=4)
    padded[..., 5:] = random_i8(padded[..., 5:].shape, 8)
    out_buf = ctx.buffer(padded.nbytes)
    kernel, global_size, local_size = l2norm.bind(ctx, params, [ctx.upload(padded)], out_buf)
    kernel.launch(ctx.queue, global_size, local_size).wait()
    out = ctx.download(out_buf, np.int8, padded.shape)
    np.testing.assert_array_equal(out[..., :5], reference.l2norm(params, x))
    np.testing.assert_array_equal(out[..., 5:], 6)


@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_random_l2norms_are_bit_exact(ctx, data):
    channels = data.draw(st.integers(1, 70))
    params = L((1, data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)), channels),
               gammas(channels, -10, data.draw(st.floats(0.1, 100.0)), data.draw(st.integers(0, 99))),
               data.draw(st.floats(0.01, 2.0)), data.draw(st.integers(-128, 127)),
               data.draw(st.integers(-128, 127)))
    check(ctx, params, seed=data.draw(st.integers(0, 1000)))


def test_ssd_conv4_3_norm_shape():
    ctx = accel.Context(accel.select_device("cpu"))
    check(ctx, L((1, 38, 38, 512), gammas(512, 15, 25), 20 / 127, -3, 0))


# Precision of the integer formula --------------------------------------------------------
# Bound: at most 1 LSB from the float formula rounded half up, on at most 0.1% of outputs.
# Before the final rounding the integer value is within 2^-7 LSB of the float one (see
# kernels/l2norm.cl), so only outputs that close to a half can differ.
PRECISION_CASES = [
    (512, 15.0, 25.0, 20 / 127, None),  # SSD: gamma ~ 20, output covering [-20, 20]
    (512, 0.0, 20.0, 0.05, None),       # many outputs saturate
    (512, -25.0, 25.0, 20 / 127, None),  # negative gammas
    (64, 0.0, 5.0, 0.02, None),
    (16, 0.0, 5.0, 0.01, None),
    (3, 0.0, 1.0, 1 / 127, None),
    (16, 0.0, 100.0, 1.0, 2),           # inputs within 2 of z_x: small sums of squares
]


@pytest.mark.parametrize("channels, gamma_lo, gamma_hi, out_scale, spread", PRECISION_CASES)
def test_integer_formula_is_within_one_lsb_of_float(channels, gamma_lo, gamma_hi, out_scale,
                                                    spread):
    params = L((4, 16, 16, channels), gammas(channels, gamma_lo, gamma_hi, channels), out_scale,
               -3, 2)
    rng = np.random.default_rng(channels)
    if spread is None:
        x = random_i8(params.input_shape, channels)
    else:
        x = (rng.integers(-spread, spread + 1, params.input_shape) - 3).astype(np.int8)
    exact = reference.l2norm(params, x).astype(np.int32)
    ideal = reference.l2norm_float(params, x).astype(np.int32)
    error = np.abs(exact - ideal)
    print(f"C={channels}: max error {error.max()} LSB, {np.mean(error > 0):.2e} of outputs differ")
    assert error.max() <= 1
    assert np.mean(error > 0) <= 1e-3


def test_integer_square_root_is_exact():
    rng = np.random.default_rng(0)
    values = np.concatenate([np.arange(0, 300, dtype=np.uint64),
                             rng.integers(0, 2 ** 63, 20000, dtype=np.uint64),
                             np.array([2 ** 62 - 1, 2 ** 62, 2 ** 63 - 1, 2 ** 64 - 1], np.uint64)])
    roots = numerics.isqrt64(values)
    assert all(int(r) == math.isqrt(int(v)) for r, v in zip(roots, values))


HELPER_KERNELS = """
__kernel void isqrt(__global const ulong* in, __global ulong* out) {
  out[get_global_id(0)] = accel_isqrt64(in[get_global_id(0)]);
}
__kernel void inv_sqrt(__global const int* in, __global long* out) {
  out[get_global_id(0)] = accel_inv_sqrt_q46(in[get_global_id(0)]);
}
"""


@pytest.mark.oclgrind
def test_quant_h_helpers_match_numerics(ctx):
    """accel_isqrt64 and accel_inv_sqrt_q46 of kernels/quant.h against accel.numerics."""
    program = ctx.build(kernel_source.load("quant.h") + HELPER_KERNELS)
    rng = np.random.default_rng(1)
    values = np.concatenate([np.arange(64, dtype=np.uint64), 2 ** np.arange(64, dtype=np.uint64),
                             np.array([2 ** 64 - 1, 2 ** 63 - 1, (2 ** 32 - 1) ** 2,
                                       (2 ** 32 - 1) ** 2 - 1], np.uint64),
                             rng.integers(0, 2 ** 63, 124, dtype=np.uint64)])
    out = ctx.buffer(values.nbytes)
    ctx.launch(program, "isqrt", [values.size], ctx.upload(values), out)
    np.testing.assert_array_equal(ctx.download(out, np.uint64, values.size), numerics.isqrt64(values))
    sums = np.concatenate([np.arange(100), [2 ** 31 - 1, 512 * 65025],
                           rng.integers(0, 2 ** 31, 154)]).astype(np.int32)
    out = ctx.buffer(sums.size * 8)
    ctx.launch(program, "inv_sqrt", [sums.size], ctx.upload(sums), out)
    np.testing.assert_array_equal(ctx.download(out, np.int64, sums.size), numerics.inv_sqrt_q46(sums))


def test_inverse_square_root_is_close():
    sums = np.array([1, 2, 3, 100, 65025, 512 * 65025, 2 ** 31 - 1], dtype=np.int64)
    inv = numerics.inv_sqrt_q46(sums).astype(np.float64)
    ideal = 2.0 ** 46 / np.sqrt(sums.astype(np.float64))
    assert np.all(np.abs(inv / ideal - 1) <= 2.0 ** -16)
    assert numerics.inv_sqrt_q46(0) == 0


# Bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(input_shape=(1, 0, 2, 4)), "zero-size"),
    (dict(gamma=(1.0, 2.0)), "gamma has 2 values for 4 channels"),
    (dict(gamma=(1.0, float("inf"), 1.0, 1.0)), "finite"),
    (dict(output_scale=0.0), "output_scale"),
    (dict(input_zero_point=300), "input_zero_point"),
    (dict(gamma=(2.0 ** 62,) * 4), r"gamma\[0\].*out of range"),
    (dict(input_shape=(1, 1, 1, 40000), gamma=(1.0,) * 40000), "overflow"),
])
def test_bad_parameters_are_clear_errors(kwargs, match):
    base = dict(input_shape=(1, 2, 2, 4), gamma=(1.0,) * 4, output_scale=0.1)
    with pytest.raises(ValueError, match=match):
        L(**{**base, **kwargs})


def test_bad_arrays_and_buffers_are_clear_errors():
    ctx = accel.Context(accel.select_device("cpu"))
    params = L((1, 2, 2, 4), (1.0,) * 4, 0.1)
    with pytest.raises(TypeError, match="int8"):
        l2norm.l2norm(ctx, params, np.zeros((1, 2, 2, 4), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        l2norm.l2norm(ctx, params, np.zeros((2, 2, 4), np.int8))
    with pytest.raises(ValueError, match="input buffer"):
        l2norm.bind(ctx, params, [ctx.buffer(16)], ctx.buffer(64))
    with pytest.raises(ValueError, match="VEC"):
        l2norm.bind(ctx, params, [ctx.buffer(64)], ctx.buffer(64), defines={"VEC": 32})


def test_unknown_knobs_are_refused():
    ctx = accel.Context(accel.select_device("cpu"))
    params = L((1, 2, 2, 4), (1.0,) * 4, 0.1)
    with pytest.raises(ValueError, match=r"unknown knob\(s\) VECTOR for l2norm.cl"):
        l2norm.bind(ctx, params, [ctx.buffer(64)], ctx.buffer(64), defines={"VECTOR": 4})


@pytest.mark.parametrize("vec, words", [(3, "VEC must divide 16"), (0, "VEC must be at least 1")])
def test_kernel_refuses_impossible_vec(ctx, vec, words):
    with pytest.raises(accel.BuildError) as error:
        ctx.build_file(l2norm.KERNEL_FILE, {"VEC": vec}, cache=False)
    assert words in error.value.log
