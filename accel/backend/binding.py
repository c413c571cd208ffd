"""Binding a lowered model to one device: buffers (accel.backend.allocate), the kernel
each step runs (its step kind's NDRange or FPGA binding; Winograd or the direct conv), and
one C++ Plan recording every launch with its arguments set once."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..ops import conv as conv_ops
from ..ops import fpga as fpga_ops
from ..ops import fpga_segment
from ..ops import winograd as winograd_ops
from ..runtime import check_concurrent_kernels
from .allocate import allocate
from .errors import compile_errors
from . import fpga_segments
from .fpga_depthwise import split_depthwise
from .fpga_layout import layout_for_fpga
from .lowered import Lowered
from .steps import step_kind

# Run eligible 3x3 stride-1 convs as Winograd where the device's tuning enables it (see
# ndrange_conv_ops); tests turn it off to compare against the direct conv.
WINOGRAD = True
# A plan with FPGA pipelines waits at most this long for a run (seconds; 0: forever), then
# raises accel.LaunchError naming the kernels that had not finished, instead of hanging on a
# channel deadlock.
FPGA_TIMEOUT_ENV = "ACCEL_FPGA_TIMEOUT_S"


def fpga_timeout_s() -> float:
    """ACCEL_FPGA_TIMEOUT_S, else accel.ops.fpga.DEFAULT_TIMEOUT_S."""
    given = os.environ.get(FPGA_TIMEOUT_ENV, "").strip()
    if not given:
        return fpga_ops.DEFAULT_TIMEOUT_S
    try:
        seconds = float(given)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 1e7:
        raise ValueError(f"{FPGA_TIMEOUT_ENV}={given!r} must be a number of seconds in "
                         "[0, 1e7] (0: no limit)")
    return seconds


def ndrange_conv_ops(ctx, layer: conv_ops.ConvLayer, weights):
    """The op module that runs a conv step as an NDRange kernel: accel.ops.winograd (same
    bits, fewer multiplies) for the 3x3 stride-1 layers it can run where the device's
    kernels/tuning.json entry for winograd.cl says it is faster (winograd_ops.use_for),
    never on an FPGA; accel.ops.conv otherwise. WINOGRAD = False turns it off (tests)."""
    if (WINOGRAD and not fpga_ops.is_fpga(ctx)
            and winograd_ops.use_for(ctx.device.tuning_key, layer, weights)):
        return winograd_ops
    return conv_ops


@dataclass
class BoundPlan:
    plan: object
    input_buffers: list
    output_buffers: list
    buffers: list          # every device buffer (kept alive with the plan)
    launch_names: list[str]   # per stage of the plan: its step (or a segment's steps)
    launch_counts: list[int]  # kernels per stage (an FPGA pipeline stage has several)
    device_bytes: int
    step_launches: list = field(default_factory=list)  # per step: [(kernel, global, local)]
    buffer_of: dict = field(default_factory=dict)      # root tensor -> Buffer
    lowered: Lowered | None = None  # what was bound (re-strided for an FPGA's VEC_SIZE)
    # The plan's stages as recorded, and each one's op: one per step, except with a
    # persistent FPGA design, where a segment of pipeline steps is one stage
    # ("fpga_segment", named "first..last").
    stages: list = field(default_factory=list)
    stage_ops: list = field(default_factory=list)


class Binder:
    """What a step kind's binder needs: the context, the buffer of a tensor, somewhere to
    keep prepared objects alive, and the NDRange conv kernel choice."""

    def __init__(self, ctx, buffer_of_tensor):
        self.ctx = ctx
        self.buf = buffer_of_tensor
        self.kept: list = []
        self.fpga_config = fpga_ops.DEFAULT_CONFIG  # the model's bitstream (bind sets it)

    def keep(self, obj):
        self.kept.append(obj)
        return obj

    def conv_ops(self, layer, weights):
        return ndrange_conv_ops(self.ctx, layer, weights)


def bind(ctx, lowered: Lowered, fpga_pipelines: bool | None = None,
         fpga_design=None) -> BoundPlan:
    """Prepare every step on ``ctx``, allocate the buffers and record one Plan.

    ``fpga_pipelines`` (default: when the device is an FPGA or the FPGA emulator) runs the
    steps whose kind has an FPGA binding (conv, dense, pooling; depthwise convs as convs over
    channel groups: fpga_depthwise) as the FPGA pipelines of
    accel.ops.fpga (concurrent single-work-item kernels joined by channels); every other
    op, and everything on other devices, runs as NDRange kernels. Both shapes are bit-exact
    against the same reference. ``fpga_design``: the bitstream's knobs (an
    accel.fpga.FpgaDesign; default accel.ops.fpga.DEFAULT_CONFIG), narrowed to the model's
    modes; the model's stem is folded and, with VEC_SIZE above 16, its tensors re-strided
    for it (fpga_layout.layout_for_fpga); ``BoundPlan.lowered`` is what was bound. A
    persistent design (``FpgaDesign.persistent``) puts every activation in one arena and
    launches each run of consecutive pipeline steps once, with a table of layer descriptors
    (accel.backend.fpga_segments, accel.ops.fpga_segment)."""
    fpga = fpga_ops.is_fpga(ctx) if fpga_pipelines is None else bool(fpga_pipelines)
    if fpga:  # one bitstream for the model, carrying only the modes its layers use
        design = fpga_design or fpga_ops.DEFAULT_CONFIG
        # depthwise steps run as convs over channel groups (fpga_depthwise)
        lowered = split_depthwise(lowered, design.vec_size, design.lane_num)
        fpga_config = fpga_ops.config_for(
            [step_kind(s.op).params(s) for s in lowered.steps if step_kind(s.op).bind_fpga],
            design)
        with compile_errors("the FPGA layout", (ValueError,)):
            lowered = layout_for_fpga(lowered, fpga_config.vec_size)
    assignment, sizes = allocate(lowered)
    persistent = fpga and fpga_config.persistent
    if persistent:  # the segments' descriptors address every activation in one arena
        arena, buffers, offsets = fpga_segments.arena(ctx, sizes)
    else:
        buffers = [ctx.buffer(max(size, 1)) for size in sizes]

    def buf(name):
        return buffers[assignment[lowered.placements[name].root]]

    plan = ctx.plan()
    if fpga:  # a deadlocked pipeline raises instead of hanging
        plan.set_timeout(fpga_timeout_s())
    input_buffers = [buf(t.name) for t in lowered.device_inputs]
    output_buffers = [buf(t.name) for t in lowered.device_outputs]
    for b in input_buffers:
        plan.add_input(b)
    for b in output_buffers:
        plan.add_output(b)
    binder = Binder(ctx, buf)
    if fpga:
        binder.fpga_config = fpga_config
    names, counts, step_launches, stages, stage_ops = [], [], [], [], []

    def add_stage(launches, name, op):
        if len(launches) == 1:
            plan.add_launch(*launches[0])
        else:  # an FPGA stage: its kernels run at the same time, one queue each
            plan.add_concurrent(launches)
        binder.keep(launches)
        stages.append(launches)
        names.append(name)
        counts.append(len(launches))
        stage_ops.append(op)

    segment = []  # persistent design: the pipeline steps not yet launched, as segment layers

    def end_segment():
        if not segment:
            return
        with compile_errors(f"the FPGA segment {segment[0].name!r}..{segment[-1].name!r}",
                            (ValueError, TypeError)):
            bound = fpga_segment.bind_segment(ctx, segment, arena, config=fpga_config)
            singles = fpga_segment.single_layer_stages(ctx, segment, bound, config=fpga_config)
        binder.keep(bound)
        for stage, row in singles:  # each step alone (trace); the plan runs the segment
            binder.keep(row)
            step_launches.append([(k, list(g), list(lo)) for k, g, lo in stage])
        binder.keep(step_launches[-len(singles):])
        name = segment[0].name if len(segment) == 1 else f"{segment[0].name}..{segment[-1].name}"
        add_stage([(k, list(g), list(lo)) for k, g, lo in bound.stage], name, "fpga_segment")
        segment.clear()

    def region(tensor):
        index = assignment[lowered.placements[tensor].root]
        return offsets[index], sizes[index]

    for step in lowered.steps:
        with compile_errors(f"{step.op} {step.name!r}", (ValueError, TypeError)):
            kind = step_kind(step.op)
            params = kind.params(step)
            if persistent and kind.bind_fpga is not None:
                segment.append(fpga_segments.describe(step, params, region, fpga_config))
                continue
            binds = kind.bind_fpga if fpga and kind.bind_fpga is not None else kind.bind
            launches = [(k, list(g), list(lo)) for k, g, lo in binds(binder, step, params)]
        end_segment()
        step_launches.append(launches)
        add_stage(launches, step.name, step.op)
    end_segment()
    if counts:  # too few emulator threads: a clear error, not a deadlocked pipeline
        check_concurrent_kernels(ctx.device, max(counts))
    buffer_of = {root: buffers[index] for root, index in assignment.items()}
    kept = buffers + binder.kept + ([arena] if persistent else [])
    return BoundPlan(plan, input_buffers, output_buffers, kept, names, counts,
                     sum(sizes), step_launches, buffer_of, lowered, stages, stage_ops)
