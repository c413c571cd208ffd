"""Depthwise convs on the FPGA pipelines (accel.backend.fpga_depthwise): a depthwise step
becomes conv steps over channel groups with diagonal weights; run through the FPGA conv
pipeline on Intel's FPGA Emulation Platform they are bit-exact against the depthwise numpy
reference, and a model's depthwise layers bind as pipeline stages."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import accel
from accel.backend import api
from accel.backend.fpga_depthwise import group_convs, group_size, split_depthwise
from accel.backend.lowered import Step
from accel.backend.steps import conv_layer
from accel.numerics import Activation
from accel.ops import fpga
from accel.ops.layout import pad_channels, round_up
from accel.reference import depthwise as reference

from test_compile import FASTEST, inputs_for
from test_depthwise_model import mobile_net
from test_kernel_depthwise import SHAPES, make_case


@pytest.fixture(scope="module")
def emu(emulator):
    return accel.Context(emulator)


def depthwise_step(x, weights, bias, kwargs, stride_align=16) -> Step:
    """A lowered depthwise step as op_lowering writes one, tensors padded to
    ``stride_align`` channels."""
    n, h, w, c = x.shape
    stride = round_up(c, stride_align)
    act = kwargs["activation"]
    layer = dict(batch=n, in_height=h, in_width=w, channels=c, kernel_h=weights.shape[1],
                 kernel_w=weights.shape[2], stride=list(kwargs["stride"]),
                 pads=list(kwargs["pads"]), dilation=list(kwargs["dilation"]),
                 input_zero_point=kwargs["input_zero_point"],
                 output_zero_point=kwargs["output_zero_point"], activation=[act.lo, act.hi],
                 in_channel_offset=0, in_channel_stride=stride, out_channel_offset=0,
                 out_channel_stride=stride, requant=kwargs["requant"])
    arrays = {"weights": weights, "bias": bias, "multipliers": kwargs["multipliers"],
              "shifts": kwargs["shifts"]}
    return Step("depthwise", "dw", ["x"], "y", {"layer": layer}, arrays)


def run_split(emu, x, weights, bias, kwargs, config=fpga.DEFAULT_CONFIG):
    """The depthwise layer as group convs, each an FPGA pipeline stage on the emulator."""
    stride_align = max(16, config.vec_size)
    step = depthwise_step(x, weights, bias, kwargs, stride_align)
    n, h, w, c = x.shape
    stride = step.attrs["layer"]["in_channel_stride"]
    x_buf = emu.upload(pad_channels(x, stride, kwargs["input_zero_point"]))
    expected = reference.conv2d(x, weights, bias, **kwargs)
    out_shape = expected.shape[:3] + (stride,)
    y_buf = emu.upload(np.full(out_shape, 99, np.int8))
    convs = group_convs(step, group_size(config.vec_size, config.lane_num))
    for conv in convs:
        a = conv.arrays
        prepared = fpga.prepare(emu, conv_layer(conv.attrs), a["weights"], a["bias"],
                                a["multipliers"], a["shifts"],
                                config=config.with_modes((kwargs["requant"],)))
        fpga.run_stage(emu, fpga.bind(prepared, x_buf, y_buf), timeout_s=120)
    got = emu.download(y_buf, np.int8, out_shape)[..., :c]
    np.testing.assert_array_equal(got, expected)
    return convs


def test_group_convs_carry_the_depthwise_layer_slice_by_slice():
    rng = np.random.default_rng(0)
    x, weights, bias, kwargs = make_case(rng, 1, 5, 5, 40, 3, 3, pads=(1, 1, 1, 1))
    step = depthwise_step(x, weights, bias, kwargs)
    step.attrs["layer"].update(in_channel_offset=16, out_channel_offset=32)
    convs = group_convs(step, 16)
    assert [c.name for c in convs] == ["dw/c0", "dw/c16", "dw/c32"]
    for conv, first, count in zip(convs, (0, 16, 32), (16, 16, 8)):
        layer = conv.attrs["layer"]
        assert (layer["in_channels"], layer["out_channels"]) == (count, count)
        assert layer["in_channel_offset"] == 16 + first
        assert layer["out_channel_offset"] == 32 + first
        w = conv.arrays["weights"]  # [out, KH, KW, in]: the depthwise taps on the diagonal
        assert w.shape == (count, 3, 3, count)
        for o in range(count):
            np.testing.assert_array_equal(w[o, :, :, o], weights[first + o])
            assert not np.any(np.delete(w[o], o, axis=2))
        np.testing.assert_array_equal(conv.arrays["bias"], bias[first:first + count])
        np.testing.assert_array_equal(conv.arrays["shifts"],
                                      kwargs["shifts"][first:first + count])
    assert group_size(16, 16) == 16 and group_size(32, 64) == 64 and group_size(8, 40) == 80


@pytest.mark.parametrize("name", ["3x3-40-channels-batch2", "5x5-stride2-asymmetric-pads",
                                  "3x3-dilation2", "3x2-mixed-stride-dilation",
                                  "3x3-channels-not-16"])
def test_depthwise_through_the_fpga_conv_pipeline_is_bit_exact(emu, name):
    n, h, w, c, kh, kw, stride, pads, dilation = SHAPES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    case = make_case(rng, n, h, w, c, kh, kw, stride=stride, pads=pads, dilation=dilation,
                     activation=Activation.relu6(0.05, 3))
    run_split(emu, *case)


def test_float32_requantization_and_other_knobs(emu):
    """A QDQ model's float32 requantization, and a bitstream whose group is 80 channels (VEC
    8, LANE 40: groups start on whole input vectors, on 16-channel slices, and fill the
    lanes)."""
    rng = np.random.default_rng(5)
    run_split(emu, *make_case(rng, 1, 6, 7, 24, 3, 3, pads=(1, 1, 1, 1), requant="float32"))
    config = fpga.FpgaConfig(vec_size=8, lane_num=40, epilogue_steps=2, systolic=True)
    convs = run_split(emu, *make_case(rng, 1, 6, 5, 96, 5, 5, pads=(2, 2, 2, 2)), config=config)
    assert [c.attrs["layer"]["in_channels"] for c in convs] == [80, 16]


def test_a_models_depthwise_layers_run_as_pipeline_stages(emulator):
    """mobile_net on the emulator: no depthwise step is left in the bound plan, each of its
    channel groups is a stage of the pipeline's kernels, and the outputs equal the NDRange
    run of the same compiled model on the fastest CPU device; so do the group convs, as the
    emulator's bound (and saved) form, run by the CPU's NDRange conv kernel."""
    model = mobile_net()
    compiled = api.compile(model, calibration=inputs_for(model, 4, 0), device=FASTEST,
                           progress=False)
    on_fpga = api.CompiledModel(compiled.lowered, emulator)
    steps = on_fpga.lowered.steps
    assert "depthwise" not in [s.op for s in steps]
    names = on_fpga._bound.launch_names
    assert [n for n in names if n.startswith("dw")] == ["dw9/c0", "dw23/c0", "dw23/c16"]
    assert all(count > 1 for name, count in zip(names, on_fpga._bound.launch_counts)
               if name.startswith("dw"))  # pipeline stages, several kernels each
    groups_on_cpu = api.CompiledModel(on_fpga.lowered, FASTEST)
    for x in inputs_for(model, 2, 3):
        want = compiled.run_int8(x)
        for runner in (on_fpga, groups_on_cpu):
            for got, expected in zip(runner.run_int8(x), want):
                np.testing.assert_array_equal(got, expected)


def test_depthwise_groups_run_in_a_persistent_segment(emulator):
    """The persistent design: the group convs are layers of the segment's descriptor table,
    one launch for the whole run of pipeline steps; outputs as on the CPU."""
    model = mobile_net()
    compiled = api.compile(model, calibration=inputs_for(model, 4, 0), device=FASTEST,
                           progress=False)
    persistent = api.CompiledModel(compiled.lowered, emulator, fpga_design="persistent")
    assert persistent._bound.stage_ops == ["fpga_segment"]  # every step a segment layer
    steps = persistent.lowered.steps
    assert "depthwise" not in [s.op for s in steps]
    assert {s.name.split("/")[0] for s in steps if "/c" in s.name} == {"dw9", "dw23"}
    x = inputs_for(model, 1, 4)[0]
    for got, want in zip(persistent.run_int8(x), compiled.run_int8(x)):
        np.testing.assert_array_equal(got, want)


def test_split_leaves_a_model_without_depthwise_layers_alone():
    lowered = api.compile(mobile_net(), calibration=inputs_for(mobile_net(), 2, 0),
                          device=FASTEST, progress=False).lowered
    convs_only = split_depthwise(lowered, 16, 16)
    assert convs_only is not lowered and "depthwise" in [s.op for s in lowered.steps]
    assert split_depthwise(convs_only, 16, 16) is convs_only
