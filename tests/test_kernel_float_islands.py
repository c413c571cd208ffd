"""The float islands of int8 QDQ models (the ops onnxruntime runs in float between DQ and Q):
kernels/conv_f32.cl (MLAS's summation order) and eltwise.cl's add_dq_f32_i8, bit-exact
against accel.reference on every device; MLAS's K blocks; bad input. That the references
are onnxruntime's own arithmetic: tests/test_qdq.py (float islands)."""

from __future__ import annotations

import numpy as np
import pytest

from accel.numerics import Activation
from accel.ops import conv_f32, eltwise
from accel.reference import conv_f32 as reference
from accel.reference import eltwise as eltwise_reference


def params(input_shape, weight_shape, seed=0, **kwargs) -> conv_f32.ConvF32Params:
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, weight_shape).astype(np.int8)
    return conv_f32.ConvF32Params(
        input_shape, w, rng.uniform(0.0005, 0.004, weight_shape[0]).astype(np.float32),
        0.0371, 3, 0.05, -5, bias=rng.normal(0, 0.5, weight_shape[0]), **kwargs)


CASES = {
    # 3x3, stride (2, 1), asymmetric pads, 19 channels (padded on the device), 2 images
    "3x3_odd": params((2, 9, 7, 19), (13, 19, 3, 3), stride=(2, 1), pads=(1, 1, 1, 0)),
    # 1x1 over 16x16 pixels with K = 300: three MLAS blocks (128, 128, 44)
    "1x1_blocks": params((1, 16, 16, 300), (8, 300, 1, 1)),
    # a ResNet block input's strided 1x1, ReLU as the clamp
    "1x1_stride2_relu": params((1, 8, 8, 64), (24, 64, 1, 1), stride=(2, 2),
                               activation=Activation.relu(-5)),
    "dilated": params((1, 9, 9, 5), (3, 5, 3, 3), pads=(2, 2, 2, 2), dilation=(2, 2)),
}


# The small cases also run under oclgrind's memory checks (tests/test_oclgrind.py).
SMALL = {"3x3_odd", "dilated", "resnet_relu"}


def _cases(names):
    return [pytest.param(n, marks=[pytest.mark.oclgrind] if n in SMALL else []) for n in names]


@pytest.mark.parametrize("name", _cases(sorted(CASES)))
def test_conv_f32_is_bit_exact_against_reference(ctx, name):
    p = CASES[name]
    x = np.random.default_rng(1).integers(-128, 128, p.input_shape).astype(np.int8)
    expected = reference.conv2d_f32(p, x)
    np.testing.assert_array_equal(conv_f32.conv2d_f32(ctx, p, x), expected)
    assert len(np.unique(expected)) > 20  # not saturated
    if p.weights.shape[2:] == (1, 1) and not any(p.pads):  # conv1x1_f32_i8's groups
        for channels, pixels in ((8, 1), (16, 2), (1, 16)):  # partial groups at the ends
            knobs = {"CONV1X1_CHANNELS": channels, "CONV1X1_PIXELS": pixels}
            np.testing.assert_array_equal(conv_f32.conv2d_f32(ctx, p, x, knobs), expected)


def test_mlas_k_blocks():
    """MlasSgemmOperation's StrideK for (N output pixels, depth K)."""
    assert conv_f32.mlas_block_k(256, 64) == 64  # N >= K: all of K in one block
    assert conv_f32.mlas_block_k(256, 256) == 128
    assert conv_f32.mlas_block_k(64, 512) == 256  # ResNet stage 3 at 64x64 inputs
    assert conv_f32.mlas_block_k(16, 1024) == 1024
    assert conv_f32.mlas_block_k(4, 2048) == 1024  # StrideN stops at 16
    assert CASES["1x1_blocks"].block_k == 128


def test_bad_parameters_are_clear_errors(ctx):
    with pytest.raises(ValueError, match="CONV1X1_CHANNELS"):
        conv_f32.knobs(ctx, {"CONV1X1_CHANNELS": 3})
    with pytest.raises(ValueError, match="CONV1X1_PIXELS"):
        conv_f32.knobs(ctx, {"VEC": 4})
    w = np.zeros((4, 3, 1, 1), np.int8)
    with pytest.raises(ValueError, match="weights must be int8"):
        conv_f32.ConvF32Params((1, 4, 4, 5), w, np.ones(4), 0.1, 0, 0.1, 0)
    with pytest.raises(ValueError, match="positive weight scales"):
        conv_f32.ConvF32Params((1, 4, 4, 3), w, np.zeros(4), 0.1, 0, 0.1, 0)
    with pytest.raises(ValueError, match="input_scale"):
        conv_f32.ConvF32Params((1, 4, 4, 3), w, np.ones(4), 0.0, 0, 0.1, 0)
    with pytest.raises(ValueError, match="output shape"):
        conv_f32.ConvF32Params((1, 1, 1, 3), np.zeros((4, 3, 3, 3), np.int8), np.ones(4),
                               0.1, 0, 0.1, 0)


DQ_ADDS = {
    "resnet_relu": eltwise.AddParams((2, 5, 5, 40), -3, 1.0, 7, 1.0, -128,
                                     Activation.relu(-128), "float32_dq", a_scale=0.0371,
                                     b_scale=0.0529, output_scale=0.061),
    "ties": eltwise.AddParams((1, 16, 16, 256), 0, 1.0, 0, 1.0, 3, requant="float32_dq",
                              a_scale=0.1, b_scale=0.2, output_scale=0.2),
}


@pytest.mark.parametrize("name", _cases(sorted(DQ_ADDS)))
def test_dq_add_is_bit_exact_against_reference(ctx, name):
    p = DQ_ADDS[name]
    if name == "ties":  # every (a, b) pair once
        a, b = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128))
        a, b = (v.astype(np.int8).reshape(p.shape) for v in (a, b))
    else:
        rng = np.random.default_rng(2)
        a, b = (rng.integers(-128, 128, p.shape).astype(np.int8) for _ in range(2))
    expected = eltwise_reference.add(p, a, b)
    np.testing.assert_array_equal(eltwise.add(ctx, p, a, b), expected)
    assert len(np.unique(expected)) > 50


def test_dq_add_needs_its_scales():
    with pytest.raises(ValueError, match="output_scale"):
        eltwise.AddParams((1, 2, 2, 16), requant="float32_dq", a_scale=0.1, b_scale=0.1)
