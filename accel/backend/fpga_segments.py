"""Binding with a persistent FPGA design (FpgaDesign.persistent): the model's activations in
one arena buffer, and each run of consecutive pipeline steps (conv, dense, pooling) as one
segment, launched once with a table of layer descriptors (accel.ops.fpga_segment). A step
that is not a pipeline layer (an NDRange op) ends a segment."""

from __future__ import annotations

from ..ops import fpga_segment
from ..ops.fpga_segment import ARENA_ALIGN
from .lowered import Step


def arena(ctx, sizes: list[int]):
    """(arena, one region of it per allocated buffer, their offsets)."""
    offsets, total = [], 0
    for size in sizes:
        offsets.append(total)
        total += -(-max(size, 1) // ARENA_ALIGN) * ARENA_ALIGN
    whole = ctx.buffer(max(total, 1))
    return whole, [whole.region(o, max(s, 1)) for o, s in zip(offsets, sizes)], offsets


def describe(step: Step, params, region, config) -> fpga_segment.SegmentLayer:
    """A pipeline step (accel.backend.steps: conv, pool, global_avg_pool) as a segment
    layer; ``region(tensor name)``: (arena offset, bytes) of the tensor's root buffer."""
    if step.op == "conv":
        a = step.arrays
        residual = region(step.inputs[1]) if len(step.inputs) > 1 else None
        return fpga_segment.conv_layer(params, a["weights"], a["bias"], a["multipliers"],
                                       a["shifts"], region(step.inputs[0]),
                                       region(step.output), residual, config=config,
                                       name=step.name)
    if step.op in ("pool", "global_avg_pool"):
        return fpga_segment.pool_layer(params, region(step.inputs[0]), region(step.output),
                                       out_channel_stride=step.attrs["out_channel_stride"],
                                       out_channel_offset=step.attrs["out_channel_offset"],
                                       config=config, name=step.name)
    raise ValueError(f"step {step.name!r} ({step.op}) has no persistent FPGA pipeline layer")
