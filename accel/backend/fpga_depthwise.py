"""Depthwise convs on the FPGA pipelines: each depthwise step becomes conv steps over groups
of its channels, with diagonal weights.

The FPGA conv pipeline (kernels/fpga_conv.cl) multiplies LANE_NUM output channels by
VEC_SIZE input channels per cycle; a depthwise layer has one input channel per output
channel. A group of G channels (G = lcm(VEC_SIZE, LANE_NUM, 16): every group starts on a
whole input vector and on the 16-channel alignment of tensor slices, and fills whole lane
groups) is a G -> G conv whose weights are zero off the diagonal: output channel c sums its
own channel's taps and the zeros add nothing, so the integers are the depthwise layer's
(bias, requantization and clamp are per channel, carried over slice by slice). Each group
reads its channels at their offset in the input and writes at its offset in the output, as
a concat member would; the tensors stay where they are. Each group costs what a dense
G -> G conv costs, 1/G of it useful products; the estimator charges the same
(accel.fpga.estimate: depthwise layers as these passes).

The FPGA binding (binding.bind) applies ``split_depthwise`` before it chooses the bitstream's
modes and layout, and keeps the result as the model's lowered form (which runs, and saves,
everywhere: the NDRange conv kernel runs the group convs too); without FPGA pipelines the
depthwise kernel runs the original steps.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from ..ops.layout import CHANNEL_ALIGN
from .lowered import Lowered, Step

CONV_KEYS = ("batch", "in_height", "in_width", "kernel_h", "kernel_w", "stride", "pads",
             "dilation", "input_zero_point", "output_zero_point", "activation",
             "in_channel_stride", "out_channel_stride", "requant")


def group_size(vec_size: int, lane_num: int) -> int:
    """Channels per conv a depthwise layer becomes."""
    return math.lcm(vec_size, lane_num, CHANNEL_ALIGN)


def split_depthwise(lowered: Lowered, vec_size: int, lane_num: int) -> Lowered:
    """``lowered`` itself when it has no depthwise step; else a copy in which each one is
    replaced by its group convs (named ``<step>/c<first channel>``)."""
    if not any(step.op == "depthwise" for step in lowered.steps):
        return lowered
    out = copy.copy(lowered)
    out.steps = [piece for step in lowered.steps
                 for piece in (group_convs(step, group_size(vec_size, lane_num))
                               if step.op == "depthwise" else [step])]
    return out


def group_convs(step: Step, group: int) -> list[Step]:
    """A depthwise step as conv steps over ``group`` channels each (the last may hold
    fewer)."""
    layer = step.attrs["layer"]
    weights = np.asarray(step.arrays["weights"], np.int8)  # [C, KH, KW]
    channels = layer["channels"]
    steps = []
    for first in range(0, channels, group):
        count = min(group, channels - first)
        diagonal = np.zeros((count, weights.shape[1], weights.shape[2], count), np.int8)
        index = np.arange(count)
        diagonal[index, :, :, index] = weights[first:first + count]
        conv = {key: layer[key] for key in CONV_KEYS}
        conv.update(in_channels=count, out_channels=count,
                    in_channel_offset=layer["in_channel_offset"] + first,
                    out_channel_offset=layer["out_channel_offset"] + first)
        part = slice(first, first + count)
        arrays = {"weights": diagonal, "bias": step.arrays["bias"][part],
                  "multipliers": step.arrays["multipliers"][part],
                  "shifts": step.arrays["shifts"][part]}
        steps.append(Step("conv", f"{step.name}/c{first}", list(step.inputs), step.output,
                          {"layer": conv}, arrays))
    return steps
