"""kernels/conv.cl (NDRange conv) bit-exact against accel.reference.conv on every device."""

from __future__ import annotations

import dataclasses
import re
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import accel
from accel import numerics
from accel.numerics import Activation
from accel.ops import conv as ops
from accel.ops.layout import pad_channels
from accel.reference import conv as reference

import chosen_devices
from conv_shapes import densenet121_convs, resnet50_convs, vgg16_convs


def make_case(rng, n, h, w, cin, cout, kh, kw, *, stride=(1, 1), pads=(0, 0, 0, 0),
              dilation=(1, 1), gain=1.0, activation=Activation(), residual=False):
    """Random int8 data with per-channel multipliers that spread the outputs over int8
    (gain scales them: large gains saturate, tiny ones collapse to the zero point)."""
    x = rng.integers(-128, 128, (n, h, w, cin)).astype(np.int8)
    weights = rng.integers(-127, 128, (cout, kh, kw, cin)).astype(np.int8)
    bias = rng.integers(-20000, 20000, cout).astype(np.int32)
    spread = 60.0 * np.sqrt(kh * kw * cin) * 127.0
    multipliers, shifts = numerics.quantize_multipliers(
        gain * 127.0 / spread * rng.uniform(0.5, 2.0, cout))
    kwargs = dict(stride=stride, pads=pads, dilation=dilation,
                  input_zero_point=int(rng.integers(-128, 128)),
                  multipliers=multipliers, shifts=shifts,
                  output_zero_point=int(rng.integers(-20, 20)), activation=activation)
    if residual:
        oh = reference.output_size(h, kh, stride[0], pads[0], pads[2], dilation[0])
        ow = reference.output_size(w, kw, stride[1], pads[1], pads[3], dilation[1])
        m, s = numerics.quantize_multiplier(float(rng.uniform(0.3, 1.5)))
        kwargs.update(residual=rng.integers(-128, 128, (n, oh, ow, cout)).astype(np.int8),
                      residual_zero_point=int(rng.integers(-128, 128)),
                      residual_multiplier=m, residual_shift=s)
    return x, weights, bias, kwargs


def check(ctx, x, weights, bias, kwargs, knobs=None):
    expected = reference.conv2d(x, weights, bias, **kwargs)
    got = ops.conv2d(ctx, x, weights, bias, knobs=knobs, **kwargs)
    np.testing.assert_array_equal(got, expected)
    return got


# (n, h, w, cin, cout, kh, kw, stride, pads): the odd corners of the kernel's indexing.
SHAPES = {
    "3x3-channels-not-16": (1, 5, 7, 3, 5, 3, 3, (1, 1), (1, 1, 1, 1)),
    "1x1-spatial": (2, 1, 1, 40, 20, 1, 1, (1, 1), (0, 0, 0, 0)),
    "3x3-on-1x1-spatial": (1, 1, 1, 16, 17, 3, 3, (1, 1), (1, 1, 1, 1)),
    "stride2-odd": (1, 9, 11, 20, 33, 3, 3, (2, 2), (1, 1, 1, 1)),
    "7x7-stride2-pad3": (1, 15, 13, 3, 16, 7, 7, (2, 2), (3, 3, 3, 3)),
    "asymmetric-pads": (2, 6, 5, 18, 9, 2, 3, (1, 2), (0, 1, 2, 0)),
    "11x11-stride4": (1, 23, 19, 3, 8, 11, 11, (4, 4), (2, 2, 2, 2)),
    "1x1-stride2": (1, 7, 7, 32, 48, 1, 1, (2, 2), (0, 0, 0, 0)),
    "wide-row": (1, 2, 37, 16, 16, 1, 3, (1, 1), (0, 1, 0, 1)),
}
SMALLEST = {"3x3-channels-not-16", "1x1-spatial", "asymmetric-pads"}


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=[pytest.mark.oclgrind] if name in SMALLEST else [])
    for name in SHAPES])
def test_conv_shapes(ctx, name):
    n, h, w, cin, cout, kh, kw, stride, pads = SHAPES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    check(ctx, *make_case(rng, n, h, w, cin, cout, kh, kw, stride=stride, pads=pads))


# (n, h, w, cin, cout, kh, kw, stride, pads, dilation)
DILATED = {
    "dilation2": (1, 9, 9, 20, 24, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)),
    # SSD-VGG300 fc6 (3x3, dilation 6, pad 6) scaled down: most taps land in the padding.
    "dilation6-ssd-fc6-small": (1, 13, 13, 16, 32, 3, 3, (1, 1), (6, 6, 6, 6), (6, 6)),
    "dilation6-input-smaller-than-span": (1, 5, 4, 8, 16, 3, 3, (1, 1), (6, 6, 6, 6), (6, 6)),
    "dilation-2x3-stride-2x1-asymmetric": (2, 11, 10, 8, 16, 3, 2, (2, 1), (1, 0, 2, 3), (2, 3)),
    "dilation-small-oclgrind": (1, 6, 5, 5, 16, 3, 3, (1, 1), (2, 1, 2, 1), (2, 1)),
}


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=[pytest.mark.oclgrind] if name.endswith("oclgrind") else [])
    for name in DILATED])
def test_conv_dilation(ctx, name):
    n, h, w, cin, cout, kh, kw, stride, pads, dilation = DILATED[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    for residual in (False, True):
        check(ctx, *make_case(rng, n, h, w, cin, cout, kh, kw, stride=stride, pads=pads,
                              dilation=dilation, residual=residual))


def test_reference_dilation_is_a_zero_inflated_kernel():
    """The reference's dilation against the same conv written as a dense kernel with zeros
    between the taps, so the kernel tests above do not only compare two new code paths."""
    rng = np.random.default_rng(14)
    x, weights, bias, kwargs = make_case(rng, 2, 12, 11, 6, 7, 3, 2, stride=(1, 2),
                                         pads=(3, 2, 1, 4), dilation=(3, 4))
    inflated = np.zeros((7, 7, 5, 6), dtype=np.int8)
    inflated[:, ::3, ::4, :] = weights
    dilated = reference.conv2d(x, weights, bias, **kwargs)
    kwargs["dilation"] = (1, 1)
    np.testing.assert_array_equal(dilated, reference.conv2d(x, inflated, bias, **kwargs))


def test_real_ssd300_fc6_bit_exact(fastest_cpu):
    """SSD-VGG300 fc6 at full size (19x19x512 -> 1024, 3x3, dilation 6, pad 6) on the fastest
    CPU device (the others run the same code on the small dilated cases)."""
    ctx = accel.Context(fastest_cpu)
    rng = np.random.default_rng(15)
    check(ctx, *make_case(rng, 1, 19, 19, 512, 1024, 3, 3, pads=(6, 6, 6, 6), dilation=(6, 6),
                          activation=Activation.relu(0)))


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_conv_activation(ctx, activation):
    rng = np.random.default_rng(3)
    x, weights, bias, kwargs = make_case(rng, 1, 6, 6, 24, 20, 3, 3, pads=(1, 1, 1, 1))
    zy = kwargs["output_zero_point"]
    kwargs["activation"] = (Activation.relu(zy) if activation == "relu"
                            else Activation.relu6(0.05, zy))
    got = check(ctx, x, weights, bias, kwargs)
    assert got.min() == kwargs["activation"].lo  # the clamp was exercised
    if activation == "relu6":
        assert got.max() == kwargs["activation"].hi


@pytest.mark.oclgrind
def test_conv_residual(ctx):
    rng = np.random.default_rng(4)
    x, weights, bias, kwargs = make_case(rng, 2, 5, 4, 20, 24, 3, 3, pads=(1, 1, 1, 1),
                                         residual=True, activation=Activation.relu(3))
    check(ctx, x, weights, bias, kwargs)


def test_conv_saturates_both_ends(ctx):
    rng = np.random.default_rng(5)
    x, weights, bias, kwargs = make_case(rng, 1, 6, 6, 16, 16, 3, 3, pads=(1, 1, 1, 1),
                                         gain=300.0)
    got = check(ctx, x, weights, bias, kwargs)
    assert (got == -128).any() and (got == 127).any()


@pytest.mark.parametrize("real", [1.0 - 2.0**-24, 2.0**-31, 2.0**-32 * 1.0000001])
def test_conv_extreme_multipliers(ctx, real):
    rng = np.random.default_rng(6)
    x, weights, bias, kwargs = make_case(rng, 1, 4, 4, 8, 16, 1, 1)
    m, s = numerics.quantize_multiplier(real)
    kwargs["multipliers"] = np.full(16, m, dtype=np.int32)
    kwargs["shifts"] = np.full(16, s, dtype=np.int32)
    # Small accumulators, so a multiplier near 1 is not all saturated.
    weights //= 16
    bias //= 64
    check(ctx, x, weights, bias, kwargs)


@pytest.mark.parametrize("sign", [1, -1])
def test_conv_int32_wraparound_is_exact(ctx, sign):
    """bias near an int32 end and a large (zx + 128) * sum(w): the host-folded bias wraps
    modulo 2^32 and the kernel's accumulation wraps back; the result must be exact."""
    rng = np.random.default_rng(7)
    cin = 256
    x = np.full((1, 3, 3, cin), 127, dtype=np.int8)  # x == zx: the true acc is the bias
    weights = (sign * rng.integers(0, 128, (16, 3, 3, cin))).astype(np.int8)
    bias = (-sign * (2**31 - 1) + sign * rng.integers(0, 1000, 16)).astype(np.int32)
    multipliers, shifts = numerics.quantize_multipliers(np.full(16, 2.0**-25))
    kwargs = dict(pads=(1, 1, 1, 1), input_zero_point=127, multipliers=multipliers,
                  shifts=shifts, output_zero_point=0)
    check(ctx, x, weights, bias, kwargs)


@pytest.mark.oclgrind
def test_conv_channel_offset_write(ctx):
    """A conv writing its channels into a slice of a wider (concat) tensor, reading its input
    from a slice of another: the rest of the output tensor stays untouched."""
    rng = np.random.default_rng(8)
    x, weights, bias, kwargs = make_case(rng, 1, 4, 5, 20, 20, 3, 3, pads=(1, 1, 1, 1))
    expected = reference.conv2d(x, weights, bias, **kwargs)
    layer = ops.ConvLayer(batch=1, in_height=4, in_width=5, in_channels=20, out_channels=20,
                          kernel_h=3, kernel_w=3, pads=(1, 1, 1, 1),
                          input_zero_point=kwargs["input_zero_point"],
                          output_zero_point=kwargs["output_zero_point"],
                          in_channel_offset=16, in_channel_stride=64,
                          out_channel_offset=32, out_channel_stride=80)
    prepared = ops.prepare(ctx, layer, weights, bias, kwargs["multipliers"], kwargs["shifts"])
    wide_in = rng.integers(-128, 128, (1, 4, 5, 64)).astype(np.int8)
    wide_in[..., 16:48] = pad_channels(x)
    sentinel = rng.integers(-128, 128, (1, 4, 5, 80)).astype(np.int8)
    x_buf, out_buf = ctx.upload(wide_in), ctx.upload(sentinel)
    ops.launch(ctx, prepared, x_buf, out_buf)
    got = ctx.download(out_buf, np.int8, sentinel.shape)
    np.testing.assert_array_equal(got[..., 32:52], expected)
    np.testing.assert_array_equal(got[..., :32], sentinel[..., :32])
    np.testing.assert_array_equal(got[..., 64:], sentinel[..., 64:])
    # Padded output channels 52..63 hold the output zero point.
    assert (got[..., 52:64] == kwargs["output_zero_point"]).all()


def test_conv_bound_in_a_plan(ctx):
    """prepare + bind give a kernel that a Plan (the compiler's executor) can run."""
    rng = np.random.default_rng(13)
    x, weights, bias, kwargs = make_case(rng, 1, 6, 6, 16, 16, 3, 3, pads=(1, 1, 1, 1))
    layer = ops.ConvLayer(batch=1, in_height=6, in_width=6, in_channels=16, out_channels=16,
                          kernel_h=3, kernel_w=3, pads=(1, 1, 1, 1),
                          input_zero_point=kwargs["input_zero_point"],
                          output_zero_point=kwargs["output_zero_point"])
    prepared = ops.prepare(ctx, layer, weights, bias, kwargs["multipliers"], kwargs["shifts"])
    x_buf, out_buf = ctx.buffer(layer.input_bytes), ctx.buffer(layer.output_bytes)
    kernel, global_size, local_size = ops.bind(prepared, x_buf, out_buf)
    plan = ctx.plan()
    plan.add_input(x_buf)
    plan.add_launch(kernel, list(global_size), list(local_size))
    plan.add_output(out_buf)
    got = np.empty((1, 6, 6, 16), dtype=np.int8)
    plan.run([x], [got])
    np.testing.assert_array_equal(got, reference.conv2d(x, weights, bias, **kwargs))


@pytest.mark.parametrize("knobs", [{"TILE_W": 1, "CIN_STEP": 2}, {"TILE_W": 3, "CIN_STEP": 4},
                                   {"TILE_W": 8, "CIN_STEP": 16, "X86_PAIR_MAC": 0},
                                   {"TILE_W": 5, "CIN_STEP": 8, "X86_PAIR_MAC": 1},
                                   {"TILE_W": 3, "CIN_STEP": 16, "PAIR_MAC_EMULATE": 1},
                                   {"TILE_W": 2, "CIN_STEP": 8, "PAIR_MAC_EMULATE": 1},
                                   {"TILE_W": 3, "CIN_STEP": 16, "QUAD_MAC_EMULATE": 1},
                                   {"TILE_W": 2, "CIN_STEP": 4, "QUAD_MAC_EMULATE": 1},
                                   {"TILE_W": 1, "CIN_STEP": 8, "QUAD_MAC_EMULATE": 1}])
def test_conv_knobs(ctx, knobs):
    """Every knob value gives the same bits (tile edges: width 7 is not a multiple of 3 or 8)."""
    rng = np.random.default_rng(9)
    check(ctx, *make_case(rng, 1, 5, 7, 20, 20, 3, 3, pads=(1, 1, 1, 1)), knobs=knobs)


@pytest.mark.parametrize("knobs", [{"COUT_BLOCKS": 2}, {"COUT_BLOCKS": 2, "X86_PAIR_MAC": 0},
                                   {"COUT_BLOCKS": 2, "TILE_W": 3, "CIN_STEP": 4},
                                   {"COUT_BLOCKS": 2, "TILE_W": 2, "PAIR_MAC_EMULATE": 1},
                                   {"COUT_BLOCKS": 2, "TILE_W": 3, "QUAD_MAC_EMULATE": 1}])
@pytest.mark.parametrize("case", ["3x3-residual", "1x1-float32", "stride2-relu6"])
def test_two_output_blocks_per_work_item(ctx, knobs, case):
    """COUT_BLOCKS 2 gives the same bits: 52 outputs (64 padded: the last block is half
    padding), fused residual, float32 requantization, strides, tile edges."""
    rng = np.random.default_rng(len(case))
    if case == "3x3-residual":
        args = make_case(rng, 1, 6, 7, 20, 52, 3, 3, pads=(1, 1, 1, 1), residual=True)
    elif case == "1x1-float32":
        x, weights, bias, kwargs = make_case(rng, 2, 5, 5, 140, 64, 1, 1)
        mantissas, shifts = numerics.float32_multipliers(
            rng.uniform(2e-5, 8e-5, 64).astype(np.float32))
        args = x, weights, bias, {**kwargs, "multipliers": mantissas, "shifts": shifts,
                                  "requant": "float32"}
    else:
        args = make_case(rng, 1, 9, 11, 33, 96, 3, 3, stride=(2, 2), pads=(1, 1, 1, 1),
                         activation=Activation.relu6(0.05, -10))
    check(ctx, *args, knobs=knobs)


def test_two_output_blocks_follow_the_layer(first_ctx):
    """The tuned COUT_BLOCKS 2 applies only where it pays and fits (pairs_of_blocks_pay);
    asked for on a layer whose padded outputs are not a multiple of 32, it is refused."""
    def layer(cin, cout):
        return ops.ConvLayer(1, 7, 7, cin, cout, 1, 1)
    assert ops.pairs_of_blocks_pay(layer(256, 1024))
    assert ops.pairs_of_blocks_pay(layer(64, 256))
    assert not ops.pairs_of_blocks_pay(layer(256, 40))   # 48 padded outputs
    assert not ops.pairs_of_blocks_pay(ops.dense_layer(1, 2048, 1024))  # a GEMV
    x, weights, bias, kwargs = make_case(np.random.default_rng(3), 1, 4, 4, 16, 40, 1, 1)
    with pytest.raises(ValueError, match="COUT_BLOCKS=2 needs the padded output channels"):
        ops.conv2d(first_ctx, x, weights, bias, knobs={"COUT_BLOCKS": 2}, **kwargs)


@pytest.mark.parametrize("knobs, words", [
    ({"CIN_STEP": 32}, "CIN_STEP=32 must be one of (2, 4, 8, 16)"),  # reads past cin_pad=16
    ({"CIN_STEP": 3}, "CIN_STEP=3 must be one of (2, 4, 8, 16)"),    # not channel pairs
    ({"CIN_STEP": 6}, "CIN_STEP=6 must be one of (2, 4, 8, 16)"),    # 18 of 16 channels
    ({"TILE_W": 0}, "TILE_W=0 must be at least 1"),
    ({"TILE_W": 2.5}, "TILE_W must be an integer"),
    ({"X86_PAIR_MAC": 2}, "X86_PAIR_MAC=2 must be 0 or 1"),
    ({"PAIR_MAC_EMULATE": -1}, "PAIR_MAC_EMULATE=-1 must be 0 or 1"),
    ({"X86_QUAD_MAC": 3}, "X86_QUAD_MAC=3 must be 0 or 1"),
    ({"QUAD_MAC_EMULATE": 2}, "QUAD_MAC_EMULATE=2 must be 0 or 1"),
    ({"COUT_BLOCKS": 4}, "COUT_BLOCKS=4 must be 1 or 2"),
    ({"TILEW": 4, "CINSTEP": 4}, "unknown knob(s) CINSTEP, TILEW for conv.cl"),
    ({"HAS_RESIDUAL": 1}, "HAS_RESIDUAL is not a caller's knob"),
    ({"QUAD_PACKED": 1}, "QUAD_PACKED is not a caller's knob"),
], ids=str)
def test_conv_rejects_bad_knobs(first_ctx, knobs, words):
    x, weights, bias, kwargs = make_case(np.random.default_rng(14), 1, 4, 4, 16, 16, 3, 3,
                                         pads=(1, 1, 1, 1))
    with pytest.raises(ValueError, match=re.escape(words)):
        ops.conv2d(first_ctx, x, weights, bias, knobs=knobs, **kwargs)


@pytest.mark.parametrize("knobs, words", [
    ({"CIN_STEP": 32}, "CIN_STEP must be 2, 4, 8 or 16"),
    ({"CIN_STEP": 3}, "CIN_STEP must be 2, 4, 8 or 16"),
    ({"TILE_W": 0}, "TILE_W must be at least 1"),
    ({"X86_PAIR_MAC": 2}, "X86_PAIR_MAC must be 0 or 1"),
    ({"PAIR_MAC_EMULATE": 2}, "PAIR_MAC_EMULATE must be 0 or 1"),
    ({"COUT_BLOCKS": 3}, "COUT_BLOCKS must be 1 or 2"),
    ({"HAS_RESIDUAL": 3}, "HAS_RESIDUAL must be 0 or 1"),
    ({"REQUANT_F32": 2}, "REQUANT_F32 must be 0 or 1"),
    ({"REQUANT_F32": 1, "HAS_RESIDUAL": 1}, "REQUANT_F32 has no fused residual add"),
], ids=str)
def test_conv_kernel_refuses_impossible_knobs(ctx, knobs, words):
    """conv.cl itself fails to build (#error) with a knob value it cannot run correctly."""
    with pytest.raises(accel.BuildError) as error:
        ctx.build_file(ops.KERNEL_FILE, knobs, cache=False)
    assert words in error.value.log


def test_bind_refuses_a_cin_step_reading_past_the_padded_channels(first_ctx):
    """bind checks the channels the kernel will read, even for a PreparedConv whose knobs
    were not chosen by prepare."""
    x, weights, bias, kwargs = make_case(np.random.default_rng(15), 1, 4, 4, 16, 16, 3, 3,
                                         pads=(1, 1, 1, 1))
    layer = ops.layer_for_arrays(x, weights, pads=(1, 1, 1, 1), input_zero_point=0,
                                 output_zero_point=0)
    prepared = ops.prepare(first_ctx, layer, weights, bias, kwargs["multipliers"],
                           kwargs["shifts"])
    tampered = dataclasses.replace(prepared, knobs={**prepared.knobs, "CIN_STEP": 32})
    with pytest.raises(ValueError, match="would read 32 input channels of 16 padded ones"):
        ops.bind(tampered, first_ctx.buffer(layer.input_bytes), first_ctx.buffer(layer.output_bytes))


@pytest.mark.parametrize("n, k, cout", [
    pytest.param(1, 100, 10, marks=pytest.mark.oclgrind), (3, 48, 33), (5, 2048, 40)])
def test_dense(ctx, n, k, cout):
    rng = np.random.default_rng(10)
    x = rng.integers(-128, 128, (n, k)).astype(np.int8)
    weights = rng.integers(-127, 128, (cout, k)).astype(np.int8)
    bias = rng.integers(-20000, 20000, cout).astype(np.int32)
    multipliers, shifts = numerics.quantize_multipliers(rng.uniform(0.5, 2, cout) / (40 * k))
    kwargs = dict(input_zero_point=-7, multipliers=multipliers, shifts=shifts,
                  output_zero_point=4, activation=Activation.relu(4))
    np.testing.assert_array_equal(ops.dense(ctx, x, weights, bias, **kwargs),
                                  reference.dense(x, weights, bias, **kwargs))


@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_conv_property(ctx, data):
    kh = data.draw(st.integers(1, 4), "kh")
    kw = data.draw(st.integers(1, 4), "kw")
    stride = (data.draw(st.integers(1, 3), "sh"), data.draw(st.integers(1, 3), "sw"))
    pads = tuple(data.draw(st.integers(0, 2), f"pad{i}") for i in range(4))
    dilation = (data.draw(st.integers(1, 3), "dh"), data.draw(st.integers(1, 3), "dw"))
    span_h, span_w = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
    h = data.draw(st.integers(max(1, span_h - pads[0] - pads[2]), max(7, span_h)), "h")
    w = data.draw(st.integers(max(1, span_w - pads[1] - pads[3]), max(9, span_w)), "w")
    n = data.draw(st.integers(1, 2), "n")
    cin = data.draw(st.integers(1, 35), "cin")
    cout = data.draw(st.integers(1, 35), "cout")
    residual = data.draw(st.booleans(), "residual")
    gain = data.draw(st.sampled_from([0.01, 1.0, 50.0]), "gain")
    seed = data.draw(st.integers(0, 2**32 - 1), "seed")
    rng = np.random.default_rng(seed)
    zy = int(rng.integers(-20, 20))
    activation = data.draw(st.sampled_from([Activation(), Activation.relu(zy),
                                            Activation.relu6(0.1, zy)]), "activation")
    x, weights, bias, kwargs = make_case(rng, n, h, w, cin, cout, kh, kw, stride=stride,
                                         pads=pads, dilation=dilation, gain=gain,
                                         residual=residual, activation=activation)
    kwargs["output_zero_point"] = zy
    check(ctx, x, weights, bias, kwargs)


# Real layer shapes -------------------------------------------------------------------------

def _distinct(shapes):
    return sorted(set(shapes))


ALL_SHAPES = _distinct(resnet50_convs() + vgg16_convs() + densenet121_convs())


def _layer(shape, **extra) -> ops.ConvLayer:
    h, w, cin, cout, k, stride, pad = shape
    return ops.ConvLayer(batch=1, in_height=h, in_width=w, in_channels=cin, out_channels=cout,
                         kernel_h=k, kernel_w=k, stride=(stride, stride), pads=(pad,) * 4,
                         **extra)


def fast_cpu_device():
    """Among the test devices (tests/chosen_devices.py): PoCL if chosen (the fastest CPU
    runtime here), else the first CPU, else any device."""
    device = (chosen_devices.find("cpu", "Portable Computing Language")
              or chosen_devices.find("cpu") or next(iter(chosen_devices.chosen()), None))
    if device is None:
        pytest.skip(f"{chosen_devices.ENV} chooses no device")
    return device


# Each distinct layer configuration of the three models, spatial size aside:
# (kernel, stride, pad, cin, cout).
MODEL_CONFIGS = sorted({(k, stride, pad, cin, cout)
                        for _, _, cin, cout, k, stride, pad in ALL_SHAPES})
CROPPED_OUTPUT = 3  # output pixels per axis: the borders, an interior pixel, a partial tile


def cropped_input_size(k: int, stride: int, pad: int) -> int:
    """The input height/width giving CROPPED_OUTPUT outputs with this kernel, stride, pad."""
    return (CROPPED_OUTPUT - 1) * stride + k - 2 * pad


def test_every_model_layer_configuration_runs_bit_exact():
    """Every distinct (kernel, stride, pad, cin, cout) of ResNet-50, VGG-16 and DenseNet-121
    launched once, on a 3x3-output crop of its input (same stride and pad), bit-exact."""
    assert len(ALL_SHAPES) > 70  # the generators really walked the architectures
    assert len(MODEL_CONFIGS) > 50
    ctx = accel.Context(fast_cpu_device())
    rng = np.random.default_rng(13)
    for k, stride, pad, cin, cout in MODEL_CONFIGS:
        size = cropped_input_size(k, stride, pad)
        x, weights, bias, kwargs = make_case(rng, 1, size, size, cin, cout, k, k,
                                             stride=(stride, stride), pads=(pad,) * 4,
                                             activation=Activation.relu(0))
        expected = reference.conv2d(x, weights, bias, **kwargs)
        assert expected.shape == (1, CROPPED_OUTPUT, CROPPED_OUTPUT, cout)
        got = ops.conv2d(ctx, x, weights, bias, **kwargs)
        np.testing.assert_array_equal(got, expected, err_msg=f"k={k} stride={stride} "
                                      f"pad={pad} cin={cin} cout={cout}")


@pytest.mark.parametrize("shape", [
    (224, 224, 3, 64, 7, 2, 3),    # ResNet-50 / DenseNet-121 stem
    (56, 56, 64, 64, 3, 1, 1),     # ResNet-50 conv2_x 3x3
    (28, 28, 256, 512, 1, 2, 0),   # ResNet-50 conv3_1 downsample
    (7, 7, 512, 512, 3, 1, 1),     # ResNet-50 conv5_x 3x3
    (28, 28, 480, 128, 1, 1, 0),   # DenseNet-121 block 2 bottleneck, 480 input channels
], ids=str)
def test_model_shapes_bit_exact(shape, fastest_cpu):
    """A few real layers bit-exact on the fastest CPU device (the others run the same code)."""
    ctx = accel.Context(fastest_cpu)
    h, w, cin, cout, k, stride, pad = shape
    rng = np.random.default_rng(11)
    check(ctx, *make_case(rng, 1, h, w, cin, cout, k, k, stride=(stride, stride),
                          pads=(pad,) * 4, activation=Activation.relu(0)))


# Bad input ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def first_ctx(fastest_cpu):
    return accel.Context(fastest_cpu)


def _good(rng=None):
    rng = rng or np.random.default_rng(12)
    return make_case(rng, 1, 4, 4, 8, 8, 3, 3, pads=(1, 1, 1, 1))


@pytest.mark.parametrize("mutate, error, words", [
    (lambda a: a.update(x=a["x"].astype(np.float32)), TypeError, "x must be int8"),
    (lambda a: a.update(weights=a["weights"].astype(np.int16)), TypeError, "weights must be int8"),
    (lambda a: a.update(bias=a["bias"].astype(np.int64)), TypeError, "bias must be int32"),
    (lambda a: a.update(x=a["x"][:, :, :, :0]), ValueError, "x is empty"),
    (lambda a: a.update(x=a["x"][0]), ValueError, "NHWC"),
    (lambda a: a.update(weights=a["weights"][:, :, :, :5]), ValueError, "input channels"),
    (lambda a: a.update(bias=a["bias"][:3]), ValueError, "bias has shape"),
    (lambda a: a["weights"].__setitem__((0, 0, 0, 0), -128), ValueError, "-127, 127"),
    (lambda a: a["kwargs"]["multipliers"].__setitem__(0, 5), ValueError, "multiplier out of range"),
    (lambda a: a["kwargs"]["shifts"].__setitem__(0, 0), ValueError, "shift out of range"),
    (lambda a: (a.update(x=a["x"][:, :2, :2]), a["kwargs"].update(pads=(0, 0, 0, 0))),
     ValueError, "does not fit"),
    (lambda a: a["kwargs"].update(stride=(0, 1)), ValueError, "stride"),
    (lambda a: a["kwargs"].update(dilation=(1, 0)), ValueError, "dilation must be two positive"),
    (lambda a: a["kwargs"].update(dilation=2), ValueError, "dilation must be two positive"),
    (lambda a: a["kwargs"].update(dilation=(3, 1), pads=(0, 0, 0, 0)), ValueError,
     "with dilation (3, 1) and pads (0, 0, 0, 0) does not fit"),
    (lambda a: a["kwargs"].update(pads=(1, 1, -1, 1)), ValueError, "pads"),
    (lambda a: a["kwargs"].update(input_zero_point=200), ValueError, "input zero point"),
    (lambda a: a["kwargs"].update(activation=Activation(10, 5)), ValueError, "activation"),
    (lambda a: a["kwargs"].update(residual=np.zeros((1, 4, 4, 8), np.int8)), ValueError,
     "residual_multiplier"),
    (lambda a: a["kwargs"].update(residual=np.zeros((1, 3, 4, 8), np.int8),
                                  residual_multiplier=1 << 30, residual_shift=3),
     ValueError, "residual has shape"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_conv_rejects_bad_input(first_ctx, mutate, error, words):
    x, weights, bias, kwargs = _good()
    args = dict(x=x, weights=weights, bias=bias, kwargs=kwargs)
    mutate(args)
    with pytest.raises(error, match=re.escape(words)):
        ops.conv2d(first_ctx, args["x"], args["weights"], args["bias"], **args["kwargs"])


def test_bind_rejects_small_buffers_and_missing_residual(first_ctx):
    x, weights, bias, kwargs = _good()
    layer = ops.ConvLayer(batch=1, in_height=4, in_width=4, in_channels=8, out_channels=8,
                          kernel_h=3, kernel_w=3, pads=(1, 1, 1, 1),
                          residual=ops.Residual(0, 1 << 30, 1))
    prepared = ops.prepare(first_ctx, layer, weights, bias, kwargs["multipliers"], kwargs["shifts"])
    good_in, good_out = first_ctx.buffer(layer.input_bytes), first_ctx.buffer(layer.output_bytes)
    with pytest.raises(ValueError, match="input buffer holds"):
        ops.bind(prepared, first_ctx.buffer(layer.input_bytes - 1), good_out, good_out)
    with pytest.raises(ValueError, match="no residual buffer"):
        ops.bind(prepared, good_in, good_out)
    with pytest.raises(ValueError, match="out_channel_stride"):
        ops.ConvLayer(batch=1, in_height=4, in_width=4, in_channels=8, out_channels=20,
                      kernel_h=1, kernel_w=1, out_channel_offset=16, out_channel_stride=32)


def test_dense_rejects_bad_input(first_ctx):
    x = np.zeros((2, 10), np.int8)
    with pytest.raises(ValueError, match="inputs"):
        ops.dense(first_ctx, x, np.zeros((4, 11), np.int8), np.zeros(4, np.int32),
                  input_zero_point=0, multipliers=np.full(4, 1 << 30, np.int32),
                  shifts=np.full(4, 31, np.int32), output_zero_point=0)
    with pytest.raises(TypeError, match="x must be int8"):
        ops.dense(first_ctx, x.astype(np.uint8), np.zeros((4, 10), np.int8),
                  np.zeros(4, np.int32), input_zero_point=0,
                  multipliers=np.full(4, 1 << 30, np.int32), shifts=np.full(4, 31, np.int32),
                  output_zero_point=0)


# --- the float32 requantization (QDQ models: onnxruntime's arithmetic) --------------------


def float32_case(rng, n, h, w, cin, cout, kh, kw, *, gain=1.0, **geometry):
    """make_case with float32 multipliers (mantissa, shift) instead of fixed-point ones."""
    x, weights, bias, kwargs = make_case(rng, n, h, w, cin, cout, kh, kw, gain=gain, **geometry)
    spread = 60.0 * np.sqrt(kh * kw * cin) * 127.0
    reals = (gain * 127.0 / spread * rng.uniform(0.5, 2.0, cout)).astype(np.float32)
    kwargs["multipliers"], kwargs["shifts"] = numerics.float32_multipliers(reals)
    kwargs["requant"] = "float32"
    return x, weights, bias, kwargs, reals


@pytest.mark.parametrize("name", ["3x3-channels-not-16", "stride2-odd", "asymmetric-pads",
                                  "1x1-spatial"])
def test_conv_float32_requant_shapes(ctx, name):
    n, h, w, cin, cout, kh, kw, stride, pads = SHAPES[name]
    rng = np.random.default_rng(zlib.crc32(b"f32" + name.encode()))
    x, weights, bias, kwargs, _ = float32_case(rng, n, h, w, cin, cout, kh, kw, stride=stride,
                                               pads=pads, activation=Activation.relu(2))
    check(ctx, x, weights, bias, kwargs)


def test_conv_float32_requant_is_numpy_float32(ctx):
    """Large accumulators (|acc| > 2^24: float32(acc) rounds) and a dilated layer: the device
    equals rint(float32(acc) * float32(m)) computed by numpy, not only the reference."""
    rng = np.random.default_rng(11)
    x, weights, bias, kwargs, reals = float32_case(rng, 1, 7, 6, 48, 20, 3, 3, gain=0.02,
                                                   pads=(2, 2, 2, 2), dilation=(2, 2))
    bias = (bias.astype(np.int64) * 2000).astype(np.int32)  # ~ +-4e7: beyond 2^24
    reals = rng.uniform(1.0, 3.0, 20).astype(np.float32) * np.float32(1e-6)  # ~ +-100 out
    kwargs["multipliers"], kwargs["shifts"] = numerics.float32_multipliers(reals)
    kwargs["output_zero_point"] = 0
    got = check(ctx, x, weights, bias, kwargs)
    acc = reference.conv2d_accumulators(x, weights, bias, stride=(1, 1), pads=(2, 2, 2, 2),
                                        input_zero_point=kwargs["input_zero_point"],
                                        dilation=(2, 2))
    assert np.abs(acc).max() > 1 << 24
    expected = np.clip(np.rint(acc.astype(np.float32) * reals), -128, 127).astype(np.int8)
    np.testing.assert_array_equal(got, expected)
    assert -128 < got.min() and got.max() < 127  # compared unsaturated


@pytest.mark.parametrize("n, k, cout", [(1, 100, 10), (4, 2048, 40)])
def test_dense_float32_requant(ctx, n, k, cout):
    rng = np.random.default_rng(12)
    x = rng.integers(-128, 128, (n, k)).astype(np.int8)
    weights = rng.integers(-127, 128, (cout, k)).astype(np.int8)
    bias = rng.integers(-20000, 20000, cout).astype(np.int32)
    multipliers, shifts = numerics.float32_multipliers(rng.uniform(0.5, 2, cout) / (40 * k))
    kwargs = dict(input_zero_point=-7, multipliers=multipliers, shifts=shifts,
                  output_zero_point=4, activation=Activation.relu(4), requant="float32")
    np.testing.assert_array_equal(ops.dense(ctx, x, weights, bias, **kwargs),
                                  reference.dense(x, weights, bias, **kwargs))


def test_float32_requant_rejects_bad_input(first_ctx):
    rng = np.random.default_rng(13)
    x, weights, bias, kwargs, _ = float32_case(rng, 1, 4, 4, 8, 16, 1, 1)
    fixed = numerics.quantize_multipliers(np.full(16, 0.01))
    with pytest.raises(ValueError, match="mantissa"):  # fixed-point pairs in float32 mode
        ops.conv2d(first_ctx, x, weights, bias, **{**kwargs, "multipliers": fixed[0]})
    with pytest.raises(ValueError, match="requant must be"):
        ops.conv2d(first_ctx, x, weights, bias, **{**kwargs, "requant": "float16"})
    with pytest.raises(ValueError, match="no fused residual"):
        ops.layer_for_arrays(x, weights, input_zero_point=0, output_zero_point=0,
                             residual=np.zeros((1, 4, 4, 16), np.int8), residual_multiplier=1 << 30,
                             residual_shift=1, requant="float32")
    with pytest.raises(ValueError, match="REQUANT_F32"):
        ops.conv2d(first_ctx, x, weights, bias, knobs={"REQUANT_F32": 1}, **kwargs)


@pytest.mark.parametrize("out_width, tuned, chosen", [
    (56, 8, 8), (28, 8, 7), (14, 8, 7), (7, 8, 7), (38, 8, 8), (19, 8, 7), (224, 8, 8),
    (14, 4, 3), (7, 4, 4), (5, 1, 1), (7, 2, 2), (28, 2, 2)])
def test_tile_width_fits_the_row(out_width, tuned, chosen):
    assert ops.fitted_tile_width(out_width, tuned) == chosen


def test_layer_knobs_adapt_the_tuned_values():
    """PoCL's tuning (TILE_W 8, COUT_BLOCKS 2) becomes 7 x 2 on ResNet's layers (2 x 8
    accumulators spill), 8 x 1 on a GEMV; one block keeps TILE_W 8 on 56-wide rows."""
    pocl = {"TILE_W": 8, "CIN_STEP": 16, "COUT_BLOCKS": 2}
    conv = ops.ConvLayer(1, 56, 56, 64, 256, 1, 1)
    assert ops.layer_knobs(conv, pocl) == {"TILE_W": 7, "CIN_STEP": 16, "COUT_BLOCKS": 2}
    assert ops.layer_knobs(ops.dense_layer(1, 2048, 1024), pocl)["COUT_BLOCKS"] == 1
    assert ops.layer_knobs(conv, {"TILE_W": 8, "CIN_STEP": 16})["TILE_W"] == 8
    stem = ops.ConvLayer(1, 224, 224, 3, 64, 7, 7, (2, 2), (3, 3, 3, 3))
    assert ops.layer_knobs(stem, pocl)["CIN_STEP"] == ops.SMALL_CIN_STEP
