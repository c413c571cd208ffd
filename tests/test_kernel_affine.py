"""The channel-wise int8 affine (kernels/affine.cl) is bit-exact against its numpy reference
on every device, including channel slices of wider tensors (concat in place)."""

import numpy as np
import pytest

from accel import numerics
from accel.numerics import Activation
from accel.ops import affine as affine_ops
from accel.ops.layout import padded_channels
from accel.reference import affine as affine_ref


def _params(rng, shape, **kwargs):
    c = shape[3]
    reals = rng.uniform(0.001, 0.006, c)  # acc reaches ~3e4: outputs span int8
    mult, shift = numerics.quantize_multipliers(reals)
    return affine_ops.AffineParams(
        shape=shape, weights=rng.integers(-127, 128, c), bias=rng.integers(-5000, 5000, c),
        multipliers=mult, shifts=shift, **kwargs)


@pytest.mark.oclgrind
@pytest.mark.parametrize("shape", [(1, 5, 7, 24), (2, 3, 3, 16), (1, 1, 1, 3)])
@pytest.mark.parametrize("relu", [False, True])
def test_affine_matches_reference(ctx, shape, relu):
    rng = np.random.default_rng(sum(shape) + relu)
    zy = -7
    params = _params(rng, shape, input_zero_point=11, output_zero_point=zy,
                     activation=Activation.relu(zy) if relu else Activation())
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    expected = affine_ref.affine(params, x)
    got = affine_ops.affine(ctx, params, x)
    np.testing.assert_array_equal(got, expected)
    if expected.size > 16:  # the test exercises real values, not a clamp
        assert len(np.unique(expected)) > 8


@pytest.mark.parametrize("vec", [1, 2, 4, 8, 16])
def test_affine_vector_widths(ctx, vec):
    rng = np.random.default_rng(vec)
    shape = (1, 3, 5, 40)
    params = _params(rng, shape, input_zero_point=-5, output_zero_point=9)
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    got = affine_ops.affine(ctx, params, x, defines={"VEC": vec})
    np.testing.assert_array_equal(got, affine_ref.affine(params, x))


def test_affine_rejects_a_vector_width_that_does_not_divide_16(ctx):
    params = _params(np.random.default_rng(0), (1, 2, 2, 4))
    with pytest.raises(ValueError, match="VEC=3"):
        affine_ops.affine(ctx, params, np.zeros((1, 2, 2, 4), np.int8), defines={"VEC": 3})


@pytest.mark.oclgrind
def test_affine_reads_and_writes_channel_slices(ctx):
    rng = np.random.default_rng(5)
    shape = (1, 4, 6, 20)
    cp = padded_channels(20)
    in_stride, in_offset, out_stride, out_offset = 64, 16, 48, 16
    params = _params(rng, shape, input_zero_point=3, output_zero_point=-2,
                     in_channel_stride=in_stride, in_channel_offset=in_offset,
                     out_channel_stride=out_stride, out_channel_offset=out_offset)
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    wide_in = rng.integers(-128, 128, (1, 4, 6, in_stride), dtype=np.int8)
    wide_in[..., in_offset:in_offset + 20] = x
    sentinel = np.full((1, 4, 6, out_stride), 99, dtype=np.int8)
    x_buf, out_buf = ctx.upload(wide_in), ctx.upload(sentinel)
    kernel, global_size, local_size = affine_ops.bind(ctx, params, x_buf, out_buf)
    kernel.launch(ctx.queue, global_size, local_size).wait()
    out = ctx.download(out_buf, np.int8, sentinel.shape)
    np.testing.assert_array_equal(out[..., out_offset:out_offset + 20],
                                  affine_ref.affine(params, x))
    np.testing.assert_array_equal(out[..., out_offset + 20:out_offset + cp], -2)  # padded: z_y
    np.testing.assert_array_equal(out[..., :out_offset], 99)  # the rest untouched
    np.testing.assert_array_equal(out[..., out_offset + cp:], 99)


def test_affine_rejects_bad_parameters():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="weights"):
        affine_ops.AffineParams((1, 2, 2, 4), weights=[200, 0, 0, 0], bias=[0] * 4,
                                multipliers=[1 << 30] * 4, shifts=[1] * 4)
    with pytest.raises(ValueError, match="bias"):
        affine_ops.AffineParams((1, 2, 2, 4), weights=[1] * 4, bias=[0] * 3,
                                multipliers=[1 << 30] * 4, shifts=[1] * 4)
    with pytest.raises(ValueError, match="multiplier"):
        affine_ops.AffineParams((1, 2, 2, 4), weights=[1] * 4, bias=[0] * 4,
                                multipliers=[5] * 4, shifts=[1] * 4)
    with pytest.raises(ValueError, match="in_channel_offset"):
        _params(rng, (1, 2, 2, 4), in_channel_offset=8)
    with pytest.raises(TypeError, match="int8"):
        params = _params(rng, (1, 2, 2, 4))
        affine_ops.affine(None, params, np.zeros((1, 2, 2, 4), np.float32))
