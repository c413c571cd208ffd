"""kernels/depthwise.cl (NDRange depthwise conv) bit-exact against accel.reference.depthwise
on every device."""

from __future__ import annotations

import dataclasses
import re
import zlib

import numpy as np
import pytest

from accel import numerics
from accel.numerics import Activation
from accel.ops import depthwise as ops
from accel.ops.layout import pad_channels
from accel.reference import conv as conv_reference
from accel.reference import depthwise as reference


def make_case(rng, n, h, w, c, kh, kw, *, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
              activation=Activation(), requant="fixed", gain=1.0):
    """Random int8 data with per-channel multipliers that spread the outputs over int8."""
    x = rng.integers(-128, 128, (n, h, w, c)).astype(np.int8)
    weights = rng.integers(-127, 128, (c, kh, kw)).astype(np.int8)
    bias = rng.integers(-5000, 5000, c).astype(np.int32)
    reals = gain * 127.0 / (60.0 * np.sqrt(kh * kw) * 127.0) * rng.uniform(0.5, 2.0, c)
    if requant == "float32":
        multipliers, shifts = numerics.float32_multipliers(reals.astype(np.float32))
    else:
        multipliers, shifts = numerics.quantize_multipliers(reals)
    kwargs = dict(stride=stride, pads=pads, dilation=dilation,
                  input_zero_point=int(rng.integers(-128, 128)), multipliers=multipliers,
                  shifts=shifts, output_zero_point=int(rng.integers(-20, 20)),
                  activation=activation, requant=requant)
    return x, weights, bias, kwargs


def check(ctx, x, weights, bias, kwargs, knobs=None):
    expected = reference.conv2d(x, weights, bias, **kwargs)
    got = ops.conv2d(ctx, x, weights, bias, knobs=knobs, **kwargs)
    np.testing.assert_array_equal(got, expected)
    return expected


# (n, h, w, c, kh, kw, stride, pads, dilation): the odd corners of the kernel's indexing.
SHAPES = {
    "3x3-channels-not-16": (1, 5, 7, 3, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    "3x3-40-channels-batch2": (2, 9, 6, 40, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    "1x1-spatial-3x3": (1, 1, 1, 17, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    "5x5-stride2": (1, 11, 13, 24, 5, 5, (2, 2), (2, 2, 2, 2), (1, 1)),
    "5x5-stride2-asymmetric-pads": (1, 10, 9, 32, 5, 5, (2, 2), (1, 2, 2, 1), (1, 1)),
    "3x3-stride2-tf-same": (1, 8, 8, 16, 3, 3, (2, 2), (0, 0, 1, 1), (1, 1)),
    "3x3-dilation2": (1, 9, 10, 20, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)),
    "3x2-mixed-stride-dilation": (2, 7, 12, 5, 3, 2, (1, 2), (0, 3, 1, 0), (2, 3)),
    "7x7-wide-row": (1, 3, 37, 16, 7, 7, (1, 1), (3, 3, 3, 3), (1, 1)),
    # tiles inside the row on image rows, and on rows above and below the image (pad row)
    "5x5-stride2-wide": (1, 9, 30, 24, 5, 5, (2, 2), (2, 2, 2, 2), (1, 1)),
    "3x3-dilation2-wide": (1, 6, 29, 32, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)),
}
SMALLEST = {"3x3-channels-not-16", "1x1-spatial-3x3", "3x2-mixed-stride-dilation"}


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=[pytest.mark.oclgrind] if name in SMALLEST else [])
    for name in SHAPES])
def test_depthwise_shapes(ctx, name):
    n, h, w, c, kh, kw, stride, pads, dilation = SHAPES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    check(ctx, *make_case(rng, n, h, w, c, kh, kw, stride=stride, pads=pads,
                          dilation=dilation))


# Kernel widths 1, 2, 3 and 5: no tap pair, one pair, a pair and an odd tap, two and one.
PAIR_SHAPES = ["1x1-spatial-3x3", "3x2-mixed-stride-dilation", "5x5-stride2-wide",
               "3x3-dilation2-wide", "7x7-wide-row"]


@pytest.mark.parametrize("knobs", [{"PAIR_MAC_EMULATE": 1}, {"X86_PAIR_MAC": 0}],
                         ids=["pairs-emulated", "no-pairs"])
@pytest.mark.parametrize("name", PAIR_SHAPES)
def test_depthwise_tap_pairs(ctx, name, knobs):
    """The two-tap pair path in plain C (its zipping and tap walk checked on every device,
    whatever its instruction set) and the one-tap path (the default off x86)."""
    n, h, w, c, kh, kw, stride, pads, dilation = SHAPES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()) + 2)
    check(ctx, *make_case(rng, n, h, w, c, kh, kw, stride=stride, pads=pads,
                          dilation=dilation), knobs=knobs)


@pytest.mark.oclgrind
def test_depthwise_requantize_shifts_both_sides_of_32(ctx):
    """quant_vec.h's 16-lane requantization takes a 32-bit path when every shift of the block
    is at least 32 and the 64-bit one otherwise: blocks of each kind, and one mixing both."""
    rng = np.random.default_rng(11)
    x, weights, bias, kwargs = make_case(rng, 1, 6, 7, 48, 3, 3, pads=(1, 1, 1, 1),
                                         activation=Activation(-100, 120))
    # inputs near the zero point and a small bias: with multipliers above 1/2 (shifts below
    # 32) outputs still fall inside int8, so the rounding is compared, not just the clamp
    zx = kwargs["input_zero_point"]
    x = np.clip(zx + rng.integers(-3, 4, x.shape), -128, 127).astype(np.int8)
    bias = rng.integers(-60, 60, 48).astype(np.int32)
    reals = np.concatenate([rng.uniform(0.05, 0.4, 16),                       # all S >= 32
                            rng.uniform(0.05, 0.4, 8), rng.uniform(0.5, 3.0, 8),  # mixed
                            rng.uniform(0.5, 3.0, 16)])                      # all S < 32
    weights = (weights // 8).astype(np.int8)
    kwargs["multipliers"], kwargs["shifts"] = numerics.quantize_multipliers(reals)
    shifts = kwargs["shifts"].reshape(3, 16)
    assert (shifts[0] >= 32).all() and (shifts[2] < 32).all()
    assert (shifts[1] >= 32).any() and (shifts[1] < 32).any()
    y = check(ctx, x, weights, bias, kwargs)
    inside = ((y > -100) & (y < 120)).reshape(-1, 3, 16)
    assert inside.mean(axis=(0, 2)).min() > 0.5  # most outputs of every block unclamped


@pytest.mark.parametrize("case", ["relu", "relu6", "saturating"])
def test_depthwise_activations(ctx, case):
    """ReLU / ReLU6 folded into the clamp; large gains saturate at both ends of int8."""
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    zero = 7
    activation = {"relu": Activation(zero, 127), "relu6": Activation(zero, zero + 60),
                  "saturating": Activation()}[case]
    x, weights, bias, kwargs = make_case(rng, 1, 6, 6, 33, 3, 3, pads=(1, 1, 1, 1),
                                         activation=activation,
                                         gain=30.0 if case == "saturating" else 2.0)
    kwargs["output_zero_point"] = zero
    y = check(ctx, x, weights, bias, kwargs)
    # the case exercises its clamp: some outputs sit at each bound it sets
    assert (y == activation.lo).any() and (y == activation.hi).any()


@pytest.mark.parametrize("name", [pytest.param("3x3-channels-not-16", marks=pytest.mark.oclgrind),
                                  "5x5-stride2-asymmetric-pads", "3x3-dilation2"])
def test_depthwise_float32_requant(ctx, name):
    """onnxruntime's float32 requantization (QDQ models), exact in integers."""
    n, h, w, c, kh, kw, stride, pads, dilation = SHAPES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()) + 1)
    check(ctx, *make_case(rng, n, h, w, c, kh, kw, stride=stride, pads=pads,
                          dilation=dilation, activation=Activation(-5, 100),
                          requant="float32"))


@pytest.mark.slow  # with a cold program cache
def test_random_layers(ctx):
    """Random geometry: kernel 1-7, stride 1-3, dilation 1-3, any pads that fit, any
    channel count, either requantization mode."""
    rng = np.random.default_rng(2026)
    for _ in range(12):
        kh, kw = (int(v) for v in rng.integers(1, 8, 2))
        dilation = tuple(int(v) for v in rng.integers(1, 4, 2))
        stride = tuple(int(v) for v in rng.integers(1, 4, 2))
        pads = tuple(int(v) for v in rng.integers(0, 4, 4))
        h = max(1, (kh - 1) * dilation[0] + 1 - pads[0] - pads[2]) + int(rng.integers(0, 6))
        w = max(1, (kw - 1) * dilation[1] + 1 - pads[1] - pads[3]) + int(rng.integers(0, 9))
        c = int(rng.integers(1, 50))
        requant = "float32" if rng.random() < 0.5 else "fixed"
        check(ctx, *make_case(rng, int(rng.integers(1, 3)), h, w, c, kh, kw, stride=stride,
                              pads=pads, dilation=dilation, requant=requant))


@pytest.mark.parametrize("tile", [1, 3, 16])
def test_depthwise_tile_widths(ctx, tile):
    """Tiles that divide the row, leave a remainder, and exceed it."""
    rng = np.random.default_rng(tile)
    check(ctx, *make_case(rng, 1, 4, 11, 16, 3, 3, pads=(1, 1, 1, 1)), knobs={"TILE_W": tile})


def test_depthwise_writes_and_reads_channel_slices(ctx):
    """Input from, and output into, a slice of wider tensors (a concat): the other channels
    of the output are left alone."""
    rng = np.random.default_rng(3)
    x, weights, bias, kwargs = make_case(rng, 1, 5, 6, 20, 3, 3, pads=(1, 1, 1, 1))
    expected = reference.conv2d(x, weights, bias, **kwargs)
    layer = ops.layer_for_arrays(x, weights, **{k: kwargs[k] for k in (
        "stride", "pads", "dilation", "input_zero_point", "output_zero_point", "activation",
        "requant")})
    layer = dataclasses.replace(layer, in_channel_offset=16, in_channel_stride=64,
                                out_channel_offset=32, out_channel_stride=80)
    prepared = ops.prepare(ctx, layer, weights, bias, kwargs["multipliers"], kwargs["shifts"])
    wide_in = np.full((1, 5, 6, 64), 99, np.int8)
    wide_in[..., 16:48] = pad_channels(x, fill=kwargs["input_zero_point"])
    out = ctx.upload(np.full((1, 5, 6, 80), -77, np.int8))
    ops.launch(ctx, prepared, ctx.upload(wide_in), out)
    got = ctx.download(out, np.int8, (1, 5, 6, 80))
    np.testing.assert_array_equal(got[..., 32:52], expected)
    assert (got[..., :32] == -77).all() and (got[..., 64:] == -77).all()


def test_reference_equals_a_dense_conv_with_diagonal_weights():
    """The reference itself: a depthwise conv is the dense conv whose weights are zero off the
    channel diagonal (an independent formula for the same accumulators)."""
    rng = np.random.default_rng(5)
    x, weights, bias, kwargs = make_case(rng, 2, 7, 8, 5, 3, 3, stride=(2, 1),
                                         pads=(1, 0, 2, 1), dilation=(1, 2))
    dense = np.zeros((5, 3, 3, 5), np.int8)
    for c in range(5):
        dense[c, :, :, c] = weights[c]
    np.testing.assert_array_equal(reference.conv2d(x, weights, bias, **kwargs),
                                  conv_reference.conv2d(x, dense, bias, **kwargs))


BAD = [
    (lambda a: a.update(x=a["x"].astype(np.float32)), TypeError, "x must be int8"),
    (lambda a: a.update(weights=a["weights"][:, :, :, None]), ValueError,
     "depthwise weights must be [C, KH, KW]"),
    (lambda a: a.update(weights=a["weights"][:3]), ValueError, "weights have 3 channels, x has 5"),
    (lambda a: a.update(bias=a["bias"].astype(np.int64)), TypeError, "bias must be int32"),
    (lambda a: a.update(weights=np.full_like(a["weights"], -128)), ValueError,
     "weights must lie in [-127, 127]"),
    (lambda a: a.update(stride=(0, 1)), ValueError, "stride must be 2 positive integers"),
    (lambda a: a.update(pads=(1, 1, 1)), ValueError, "pads must be 4 non-negative integers"),
    (lambda a: a.update(dilation=(1, 0)), ValueError, "dilation must be 2 positive integers"),
    (lambda a: a.update(pads=(0, 0, 0, 0), dilation=(3, 3)), ValueError, "does not fit the"),
    (lambda a: a.update(input_zero_point=200), ValueError, "input zero point 200 is outside"),
    (lambda a: a.update(requant="float64"), ValueError, "requant must be one of"),
    (lambda a: a.update(shifts=np.zeros(5, np.int32)), ValueError, "shift"),
    (lambda a: a.update(knobs={"TILE_W": 0}), ValueError, "TILE_W=0 must be in 1..16"),
    (lambda a: a.update(knobs={"CIN_STEP": 4}), ValueError, "unknown knob(s) CIN_STEP"),
    (lambda a: a.update(knobs={"REQUANT_F32": 1}), ValueError, "not a caller's knob"),
]


@pytest.mark.parametrize("mutate, error, words", BAD, ids=[b[2] for b in BAD])
def test_bad_arguments_are_clear_errors(ctx, mutate, error, words):
    rng = np.random.default_rng(9)
    x, weights, bias, kwargs = make_case(rng, 1, 5, 5, 5, 3, 3, pads=(1, 1, 1, 1))
    args = dict(x=x, weights=weights, bias=bias, **kwargs)
    mutate(args)
    with pytest.raises(error, match=re.escape(words)):
        ops.conv2d(ctx, args.pop("x"), args.pop("weights"), args.pop("bias"), **args)


def test_bad_buffers_are_clear_errors(ctx):
    rng = np.random.default_rng(10)
    x, weights, bias, kwargs = make_case(rng, 1, 4, 4, 16, 3, 3, pads=(1, 1, 1, 1))
    layer = ops.layer_for_arrays(x, weights, **{k: kwargs[k] for k in (
        "stride", "pads", "dilation", "input_zero_point", "output_zero_point", "activation",
        "requant")})
    prepared = ops.prepare(ctx, layer, weights, bias, kwargs["multipliers"], kwargs["shifts"])
    with pytest.raises(ValueError, match="input buffer holds 16 bytes, the layer needs 256"):
        ops.bind(prepared, ctx.buffer(16), ctx.buffer(256))
    with pytest.raises(ValueError, match="no fused residual add"):
        ops.bind(prepared, ctx.buffer(256), ctx.buffer(256), ctx.buffer(256))
