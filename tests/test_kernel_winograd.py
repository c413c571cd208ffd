"""kernels/winograd.cl (integer Winograd F(2x2, 3x3)) bit-exact against accel.reference.conv
on every device, its numpy model (accel.ops.winograd.accumulators) against the reference's
accumulators, and the eligibility rules."""

from __future__ import annotations

import re
import zlib

import numpy as np
import pytest

import accel
from accel import numerics
from accel.numerics import Activation
from accel.ops import conv as conv_ops
from accel.ops import winograd as ops
from accel.ops.layout import pad_channels
from accel.backend import api, binding
from accel.ops import fpga as fpga_ops
from accel.reference import conv as reference
from chosen_devices import ENV as DEVICES_ENV
from chosen_devices import chosen

POCL = [d for d in chosen() if d.short_name == "pocl-cpu"]


def make_case(rng, n, h, w, cin, cout, *, pads=(1, 1, 1, 1), gain=1.0,
              activation=Activation(), residual=False, requant="fixed"):
    """Random int8 data over the full ranges, with per-channel multipliers that spread the
    outputs over int8 (large gains saturate)."""
    x = rng.integers(-128, 128, (n, h, w, cin)).astype(np.int8)
    weights = rng.integers(-127, 128, (cout, 3, 3, cin)).astype(np.int8)
    bias = rng.integers(-20000, 20000, cout).astype(np.int32)
    reals = gain / (60.0 * np.sqrt(9 * cin)) * rng.uniform(0.5, 2.0, cout)
    if requant == "float32":
        multipliers, shifts = numerics.float32_multipliers(reals.astype(np.float32))
    else:
        multipliers, shifts = numerics.quantize_multipliers(reals)
    kwargs = dict(pads=pads, input_zero_point=int(rng.integers(-128, 128)),
                  multipliers=multipliers, shifts=shifts,
                  output_zero_point=int(rng.integers(-20, 20)), activation=activation,
                  requant=requant)
    if residual:
        oh, ow = h + pads[0] + pads[2] - 2, w + pads[1] + pads[3] - 2
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


# --- the maths, in numpy ---------------------------------------------------------------------

@pytest.mark.parametrize("n, h, w, cin, cout, pads", [
    (1, 5, 7, 3, 5, (1, 1, 1, 1)), (2, 6, 5, 18, 9, (0, 1, 2, 0)), (1, 1, 1, 4, 3, (1, 1, 1, 1)),
    (1, 8, 8, 16, 16, (0, 0, 0, 0)), (1, 7, 9, 5, 4, (2, 0, 1, 2)), (1, 3, 4, 2, 2, (3, 0, 2, 4))])
def test_numpy_model_is_the_direct_conv(n, h, w, cin, cout, pads):
    """Y' = A^T (U' * V) A is exactly 4 x the direct sum (asserted inside the model), and
    Y'/4 + bias is the reference's accumulator."""
    rng = np.random.default_rng(n * 1000 + h * 100 + w * 10 + cin)
    x = rng.integers(-128, 128, (n, h, w, cin)).astype(np.int8)
    weights = rng.integers(-127, 128, (cout, 3, 3, cin)).astype(np.int8)
    bias = rng.integers(-1000, 1000, cout).astype(np.int32)
    zx = int(rng.integers(-128, 128))
    np.testing.assert_array_equal(
        ops.accumulators(x, weights, bias, pads=pads, input_zero_point=zx),
        reference.conv2d_accumulators(x, weights, bias, pads=pads, input_zero_point=zx))


def test_transform_bounds_are_reached():
    """|U'| reaches 9 * 127 (the int16 bound the kernel relies on) and G2 = 2G."""
    weights = np.full((1, 3, 3, 1), 127, dtype=np.int8)
    assert np.abs(ops.transform_weights(weights)).max() == ops.U_MAX
    g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    np.testing.assert_array_equal(ops.G2, 2 * g)


# --- the kernel on every device --------------------------------------------------------------

# ResNet-50's 3x3 stride-1 layers (batch 1, pad 1).
RESNET50 = [(56, 64), (28, 128), (14, 256), (7, 512)]


@pytest.mark.parametrize("size, channels", RESNET50, ids=lambda v: str(v))
def test_resnet50_layers(ctx, size, channels):
    rng = np.random.default_rng(size * channels)
    check(ctx, *make_case(rng, 1, size, size, channels, channels, activation=Activation.relu(3)))


# (n, h, w, cin, cout, pads): partial tiles, padding, channel counts off 16.
SHAPES = {
    "odd-hw-cin-cout-not-16": (1, 5, 7, 3, 5, (1, 1, 1, 1)),
    "pad0": (1, 8, 9, 16, 16, (0, 0, 0, 0)),
    "asymmetric-pads-batch2": (2, 6, 5, 18, 9, (0, 1, 2, 0)),
    "pad2-and-3": (1, 7, 6, 20, 33, (2, 3, 2, 1)),
    "1x1-spatial": (1, 1, 1, 17, 16, (1, 1, 1, 1)),
    "3x3-to-1x1": (2, 3, 3, 32, 16, (0, 0, 0, 0)),
    "wide-row": (1, 3, 37, 16, 16, (1, 1, 1, 1)),
}
SMALLEST = {"odd-hw-cin-cout-not-16"}


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=[pytest.mark.oclgrind] if name in SMALLEST else [])
    for name in SHAPES])
def test_shapes(ctx, name):
    n, h, w, cin, cout, pads = SHAPES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    check(ctx, *make_case(rng, n, h, w, cin, cout, pads=pads))


@pytest.mark.parametrize("weight, x, zx", [(127, 127, -128), (-127, 127, -128),
                                           (127, -128, 127), (-127, -128, 127)])
def test_extremes_at_the_overflow_bound(ctx, weight, x, zx):
    """Every x at -128 or 127 and every weight +-127 with the largest eligible input channel
    count (3669: 4 * 128 * 127 * 9 * 3669 < 2^31 <= the same with 3670): |Y'| is within
    1% of 2^31, so a lost bit or a signed-overflow shortcut shows; the zero point at the
    other end makes |x - zx| = 255."""
    cin = 3669
    assert ops.overflow_ineligibility(np.full((1, 3, 3, cin), weight, np.int8)) is None
    assert ops.overflow_ineligibility(np.full((1, 3, 3, cin + 1), weight, np.int8)) is not None
    xs = np.full((1, 4, 3, cin), x, dtype=np.int8)
    xs[0, 3, 2, :5] = 0  # a few smaller inputs, so the output tiles differ
    weights = np.full((16, 3, 3, cin), weight, dtype=np.int8)
    bias = np.arange(16, dtype=np.int32) * 1000
    multipliers, shifts = numerics.quantize_multipliers(np.full(16, 2.0 ** -24))
    kwargs = dict(pads=(1, 0, 1, 0), input_zero_point=zx, multipliers=multipliers,
                  shifts=shifts, output_zero_point=0)
    raw = reference.conv2d_accumulators(xs, weights, np.zeros(16, np.int32), pads=(1, 0, 1, 0),
                                        input_zero_point=0)  # sum(x * w): Y' / 4
    assert np.abs(raw).max() * 4 > 0.99 * 2 ** 31
    got = check(ctx, xs, weights, bias, kwargs)
    assert len(np.unique(got)) > 1  # not all saturated: the multipliers keep the values


def test_intermediate_sums_wrap_and_the_result_is_exact(ctx):
    """Weights only at tap (0, 0) and an input whose V(0, 0) is -510: M(0, 0) = sum over
    12,000 channels of 508 * -510 leaves int32, while Y' = 4 x sum(x * w) fits. The kernel's
    modulo-2^32 sums must still give the exact result (the overflow rule is on Y', not M)."""
    cin = 12000
    weights = np.zeros((16, 3, 3, cin), dtype=np.int8)
    weights[:, 0, 0, :] = 127
    assert ops.overflow_ineligibility(weights) is None
    pattern = np.array([[-128, 0, 127, 0], [0, 0, 0, 0], [127, 0, -128, 0], [0, 0, 0, 0]])
    x = np.repeat(pattern[None, :, :, None], cin, axis=3).astype(np.int8)  # 4x4 -> one tile
    v = ops.B_T @ pattern @ ops.B_T.T
    m = cin * ops.transform_weights(weights[:1, :, :, :1])[0, 0] * v
    assert np.abs(m).max() >= 2 ** 31  # M wraps in the kernel
    bias = np.zeros(16, dtype=np.int32)
    multipliers, shifts = numerics.quantize_multipliers(np.full(16, 2.0 ** -22))
    check(ctx, x, weights, bias, dict(pads=(0, 0, 0, 0), input_zero_point=3,
                                      multipliers=multipliers, shifts=shifts,
                                      output_zero_point=0))


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_activation_clamps(ctx, activation):
    rng = np.random.default_rng(3)
    x, weights, bias, kwargs = make_case(rng, 1, 6, 6, 24, 20)
    zy = kwargs["output_zero_point"]
    kwargs["activation"] = (Activation.relu(zy) if activation == "relu"
                            else Activation.relu6(0.05, zy))
    got = check(ctx, x, weights, bias, kwargs)
    assert got.min() == kwargs["activation"].lo  # the clamp was exercised
    if activation == "relu6":
        assert got.max() == kwargs["activation"].hi


@pytest.mark.oclgrind
def test_fused_residual(ctx):
    rng = np.random.default_rng(4)
    check(ctx, *make_case(rng, 2, 5, 4, 20, 24, residual=True, activation=Activation.relu(3)))


def test_saturates_both_ends(ctx):
    rng = np.random.default_rng(5)
    got = check(ctx, *make_case(rng, 1, 6, 6, 16, 16, gain=300.0))
    assert (got == -128).any() and (got == 127).any()


def test_float32_requant(ctx):
    rng = np.random.default_rng(6)
    check(ctx, *make_case(rng, 1, 7, 5, 40, 20, requant="float32",
                          activation=Activation.relu(2)))


def test_channel_slices(ctx):
    """Input from a slice of a wider tensor, output into a slice of a concat tensor: the rest
    of the output stays untouched, padded output channels hold the output zero point."""
    rng = np.random.default_rng(8)
    x, weights, bias, kwargs = make_case(rng, 1, 4, 5, 20, 20)
    expected = reference.conv2d(x, weights, bias, **kwargs)
    layer = conv_ops.ConvLayer(batch=1, in_height=4, in_width=5, in_channels=20,
                               out_channels=20, kernel_h=3, kernel_w=3, pads=(1, 1, 1, 1),
                               input_zero_point=kwargs["input_zero_point"],
                               output_zero_point=kwargs["output_zero_point"],
                               in_channel_offset=16, in_channel_stride=64,
                               out_channel_offset=32, out_channel_stride=80)
    prepared = ops.prepare(ctx, layer, weights, bias, kwargs["multipliers"], kwargs["shifts"])
    wide_in = rng.integers(-128, 128, (1, 4, 5, 64)).astype(np.int8)
    wide_in[..., 16:48] = pad_channels(x, fill=kwargs["input_zero_point"])
    sentinel = rng.integers(-128, 128, (1, 4, 5, 80)).astype(np.int8)
    out_buf = ctx.upload(sentinel)
    ops.launch(ctx, prepared, ctx.upload(wide_in), out_buf)
    got = ctx.download(out_buf, np.int8, sentinel.shape)
    np.testing.assert_array_equal(got[..., 32:52], expected)
    np.testing.assert_array_equal(got[..., :32], sentinel[..., :32])
    np.testing.assert_array_equal(got[..., 64:], sentinel[..., 64:])
    assert (got[..., 52:64] == kwargs["output_zero_point"]).all()


def test_bound_in_a_plan_like_conv(ctx):
    """bind gives the same Binding as accel.ops.conv.bind, runnable in a Plan, and the same
    bits as the direct conv on the same buffers."""
    rng = np.random.default_rng(13)
    x, weights, bias, kwargs = make_case(rng, 1, 6, 6, 16, 16)
    layer = conv_ops.ConvLayer(batch=1, in_height=6, in_width=6, in_channels=16,
                               out_channels=16, kernel_h=3, kernel_w=3, pads=(1, 1, 1, 1),
                               input_zero_point=kwargs["input_zero_point"],
                               output_zero_point=kwargs["output_zero_point"])
    outputs = []
    for module in (ops, conv_ops):
        prepared = module.prepare(ctx, layer, weights, bias, kwargs["multipliers"],
                                  kwargs["shifts"])
        x_buf, out_buf = ctx.buffer(layer.input_bytes), ctx.buffer(layer.output_bytes)
        binding = module.bind(prepared, x_buf, out_buf)
        assert isinstance(binding, conv_ops.Binding)
        plan = ctx.plan()
        plan.add_input(x_buf)
        plan.add_launch(binding.kernel, list(binding.global_size), list(binding.local_size))
        plan.add_output(out_buf)
        outputs.append(np.empty((1, 6, 6, 16), dtype=np.int8))
        plan.run([x], [outputs[-1]])
    np.testing.assert_array_equal(outputs[0], reference.conv2d(x, weights, bias, **kwargs))
    np.testing.assert_array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize("knobs", [{"TILES": 1}, {"TILES": 3}, {"TILES": 2, "X86_PAIR_MAC": 0},
                                   {"TILES": 4, "X86_PAIR_MAC": 1},
                                   {"TILES": 2, "PAIR_MAC_EMULATE": 1}], ids=str)
def test_knobs(ctx, knobs):
    """Every knob value gives the same bits (row of 9 outputs: 5 tiles, not a multiple of
    2, 3 or 4)."""
    rng = np.random.default_rng(9)
    check(ctx, *make_case(rng, 1, 5, 9, 20, 20, residual=True), knobs=knobs)


@pytest.mark.parametrize("pocl_device", POCL, ids=[d.short_name for d in POCL])
@pytest.mark.parametrize("knobs", [{"X86_PAIR_MAC": 0}, {"X86_PAIR_MAC": 1},
                                   {"PAIR_MAC_EMULATE": 1}], ids=str)
def test_both_pocl_paths_resnet50_shape(pocl_device, knobs):
    """PoCL's target has AVX-512BW or AVX2, so X86_PAIR_MAC picks between the vpmaddwd
    builtins (kernels/conv_knobs.h) and the portable path there; the emulated pair path is
    the builtins' indexing in plain C: all bit-exact on a real layer."""
    ctx = accel.Context(pocl_device)
    rng = np.random.default_rng(10)
    x, weights, bias, kwargs = make_case(rng, 1, 14, 14, 256, 256, residual=True)
    check(ctx, x, weights, bias, kwargs, knobs=knobs)


def test_pocl_is_present_for_the_pair_path():
    """The X86_PAIR_MAC test above needs PoCL; without it that path would go untested."""
    if not POCL and any(d.short_name == "pocl-cpu" for d in accel.devices()):
        pytest.skip(f"{DEVICES_ENV} leaves PoCL out")
    assert POCL, "PoCL is not among the OpenCL devices: the vpmaddwd path is not tested"


# --- the compiler's use of it ---------------------------------------------------------------

def test_scheduler_runs_eligible_convs_as_winograd(device):
    """accel.compile runs the 3x3 stride-1 convs (a fused residual and a concat slice among
    them; outputs of 32x32 and 16x16 pixels) as Winograd where the device's tuning enables
    it, never on the FPGA emulator, and the model's int8 outputs are the direct conv's bit
    for bit."""
    from test_compile import branchy_net  # here: test_compile needs a default device, which
    # oclgrind's run of this file's small cases does not have
    model = branchy_net()
    rng = np.random.default_rng(0)
    images = [rng.normal(0, 1, (1, 3, 32, 32)).astype(np.float32) for _ in range(3)]
    compiled = {}
    for flag in (True, False):
        saved, binding.WINOGRAD = binding.WINOGRAD, flag
        try:
            compiled[flag] = api.compile(model, calibration=images[:2], device=device,
                                         progress=False)
        finally:
            binding.WINOGRAD = saved
    kernels = [kernel.name for launches in compiled[True]._bound.step_launches
               for kernel, _, _ in launches]
    uses = device.kind not in fpga_ops.FPGA_KINDS and ops.enabled_on(device.tuning_key)
    assert kernels.count(ops.KERNEL_NAME) == (4 if uses else 0), kernels
    assert ops.KERNEL_NAME not in [kernel.name for launches in compiled[False]._bound.step_launches
                                   for kernel, _, _ in launches]
    for x in images:
        for ours, direct in zip(compiled[True].run_int8(x), compiled[False].run_int8(x)):
            np.testing.assert_array_equal(ours, direct)


def test_winograd_is_enabled_on_pocl():
    """The tuning table turns Winograd on for PoCL (measured faster there), so the test
    above checks the scheduler's Winograd path; the 16x16 output image of branchy_net's
    smallest 3x3 conv is above PoCL's WINOGRAD_MIN_OUTPUT_PIXELS."""
    assert ops.enabled_on("pocl-cpu")
    assert not ops.enabled_on("intel-fpga-emulator")
    small = _layer(in_height=16, in_width=16)
    weights = np.ones(small.weight_shape, np.int8)
    assert ops.use_for("pocl-cpu", small, weights)
    assert not ops.use_for("intel-fpga-emulator", small, weights)
    assert not ops.use_for("pocl-cpu", _layer(in_height=7, in_width=7), weights)  # 7x7x512


def test_use_for_follows_eligibility():
    weights = np.ones((16, 1, 1, 16), np.int8)
    assert not ops.use_for("pocl-cpu", _layer(in_height=32, in_width=32, kernel_h=1,
                                               kernel_w=1, pads=(0, 0, 0, 0)), weights)


# --- eligibility and bad input ---------------------------------------------------------------

def _layer(**changes) -> conv_ops.ConvLayer:
    fields = dict(batch=1, in_height=8, in_width=8, in_channels=16, out_channels=16,
                  kernel_h=3, kernel_w=3, pads=(1, 1, 1, 1))
    fields.update(changes)
    return conv_ops.ConvLayer(**fields)


@pytest.mark.parametrize("changes, reason", [
    (dict(stride=(2, 2)), "stride (2, 2) is not (1, 1)"),
    (dict(stride=(1, 2)), "stride (1, 2) is not (1, 1)"),
    (dict(kernel_h=1, kernel_w=1, pads=(0, 0, 0, 0)), "kernel 1x1 is not 3x3"),
    (dict(kernel_h=5, kernel_w=5), "kernel 5x5 is not 3x3"),
    (dict(dilation=(2, 2)), "dilation (2, 2) is not (1, 1)"),
], ids=str)
def test_ineligible_layers_are_refused(changes, reason, fastest_cpu):
    layer = _layer(**changes)
    assert ops.ineligibility(layer) == reason
    weights = np.ones(layer.weight_shape, dtype=np.int8)
    ctx = accel.Context(fastest_cpu)
    with pytest.raises(ValueError, match=re.escape(f"not eligible for Winograd F(2x2, 3x3): "
                                                   f"{reason}")):
        ops.prepare(ctx, layer, weights, np.zeros(layer.out_channels, np.int32),
                    *numerics.quantize_multipliers(np.full(layer.out_channels, 0.01)))


def test_overflowing_weights_are_refused():
    layer = _layer(in_channels=3670)
    assert ops.ineligibility(layer) is None  # the shape alone is fine...
    weights = np.zeros(layer.weight_shape, dtype=np.int8)
    weights[5] = -127  # ...output channel 5's weights are not
    reason = ops.ineligibility(layer, weights)
    assert reason.startswith("overflow: output channel 5 has sum|w| = 4194810")
    weights[5, 0, 0, :4] = 0  # 4194302 < 2^22: eligible again
    assert ops.ineligibility(layer, weights) is None


@pytest.mark.parametrize("knobs, words", [
    ({"TILES": 0}, "TILES=0 must be at least 1"),
    ({"TILES": 2.5}, "TILES must be an integer"),
    ({"X86_PAIR_MAC": 2}, "X86_PAIR_MAC=2 must be 0 or 1"),
    ({"PAIR_MAC_EMULATE": 3}, "PAIR_MAC_EMULATE=3 must be 0 or 1"),
    ({"TILE_W": 4}, "unknown knob(s) TILE_W for winograd.cl"),
    ({"HAS_RESIDUAL": 1}, "HAS_RESIDUAL is not a caller's knob"),
    ({"REQUANT_F32": 1}, "REQUANT_F32 is not a caller's knob"),
], ids=str)
def test_bad_knobs_are_refused(knobs, words, fastest_cpu):
    ctx = accel.Context(fastest_cpu)
    x, weights, bias, kwargs = make_case(np.random.default_rng(14), 1, 4, 4, 16, 16)
    with pytest.raises(ValueError, match=re.escape(words)):
        ops.conv2d(ctx, x, weights, bias, knobs=knobs, **kwargs)


@pytest.mark.parametrize("knobs, words", [
    ({"TILES": 0}, "TILES must be at least 1"),
    ({"X86_PAIR_MAC": 2}, "X86_PAIR_MAC must be 0 or 1"),
    ({"HAS_RESIDUAL": 3}, "HAS_RESIDUAL must be 0 or 1"),
    ({"REQUANT_F32": 2}, "REQUANT_F32 must be 0 or 1"),
    ({"REQUANT_F32": 1, "HAS_RESIDUAL": 1}, "REQUANT_F32 has no fused residual add"),
], ids=str)
def test_kernel_refuses_impossible_knobs(knobs, words, fastest_cpu):
    """winograd.cl itself fails to build (#error) with a knob value it cannot run."""
    ctx = accel.Context(fastest_cpu)
    with pytest.raises(accel.BuildError) as error:
        ctx.build_file(ops.KERNEL_FILE, knobs, cache=False)
    assert words in error.value.log


def test_bad_arrays_are_refused(fastest_cpu):
    ctx = accel.Context(fastest_cpu)
    x, weights, bias, kwargs = make_case(np.random.default_rng(15), 1, 4, 4, 16, 16)
    with pytest.raises(TypeError, match="x must be int8"):
        ops.conv2d(ctx, x.astype(np.int16), weights, bias, **kwargs)
    with pytest.raises(ValueError, match=r"weights must lie in \[-127, 127\]"):
        ops.conv2d(ctx, x, np.full_like(weights, -128), bias, **kwargs)
    with pytest.raises(ValueError, match="bias has shape"):
        ops.conv2d(ctx, x, weights, bias[:3], **kwargs)
    layer = _layer()
    prepared = ops.prepare(ctx, layer, np.ones(layer.weight_shape, np.int8),
                           np.zeros(16, np.int32),
                           *numerics.quantize_multipliers(np.full(16, 0.01)))
    with pytest.raises(ValueError, match="input buffer holds 16 bytes"):
        ops.bind(prepared, ctx.buffer(16), ctx.buffer(layer.output_bytes))
    with pytest.raises(ValueError, match="a layer without a residual add"):
        ops.bind(prepared, ctx.buffer(layer.input_bytes), ctx.buffer(layer.output_bytes),
                 ctx.buffer(layer.output_bytes))
