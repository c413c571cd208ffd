"""The FPGA pipelines' activation layout: every tensor an FPGA pipeline reads padded to a
multiple of the bitstream's VEC_SIZE channels per pixel.

The lowering pads channels to CHANNEL_ALIGN (16) for every device. The FPGA reader loads
whole aligned VEC_SIZE-byte vectors (kernels/fpga_conv.cl, fpga_pool.cl), so with VEC_SIZE
32 a tensor of 16 or 48 padded channels cannot be read. ``pad_for_fpga`` returns a copy of a
lowered model in which each such tensor's buffer (its root and everything placed in it) has
its pixel stride rounded up to VEC_SIZE, and every step that reads or writes it gets the
new stride. The extra channels are read with zero weights, so results are unchanged; the
NDRange kernels honour the same strides, so the copy still runs (and saves) everywhere.

In the zoo models only the model inputs change (3 or 12 channels); a tensor read by a step
that assumes the contiguous 16-padded layout (an NDRange pool or add) cannot be re-strided
and is refused with a message saying so.

Before that, ``fold_stems`` packs a space-to-depth stem's kernel columns into its channels
where that shortens the stem's reduction (the host does the folding, like space-to-depth).
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from ..compiler.errors import CompileError
from ..ops.layout import CHANNEL_ALIGN, padded_channels, round_up
from .lowered import Lowered, Placement
from .steps import step_kind

# Which attribute holds the stride of a step's tensor: input 0, the output, input 1 (a
# conv's fused residual). Searched in attrs and in its dict values ("layer", "params",
# "layout").
_STRIDE_KEYS = {"input": "in_channel_stride", "output": "out_channel_stride",
                "residual": "residual_channel_stride"}


def _stride_dicts(attrs: dict, key: str) -> list[dict]:
    found = [attrs] if key in attrs else []
    found += [v for v in attrs.values() if isinstance(v, dict) and key in v]
    return found


def _roles(step) -> list[tuple[str, str]]:
    roles = [("input", step.inputs[0])] if step.inputs else []
    if step.op == "conv" and len(step.inputs) > 1:
        roles.append(("residual", step.inputs[1]))
    roles += [("other", name) for name in step.inputs[1 + (step.op == "conv"):]]
    roles.append(("output", step.output))
    return roles


def layout_for_fpga(lowered: Lowered, vec_size: int) -> Lowered:
    """What the FPGA binding runs: the stems folded (fold_stems), then re-strided for
    VEC_SIZE (pad_for_fpga). ``lowered`` itself when neither changes anything."""
    return pad_for_fpga(fold_stems(lowered, vec_size), vec_size)


def _stem_vectors(kernel_h: int, kernel_w: int, channels: int, vec_size: int) -> tuple:
    """The reduction in VEC_SIZE vectors per output pixel: as it is, and with the kernel's
    columns folded into channels."""
    return (kernel_h * kernel_w * -(-channels // vec_size),
            kernel_h * -(-kernel_w * channels // vec_size))


def fold_stems(lowered: Lowered, vec_size: int) -> Lowered:
    """A space-to-depth stem (accel.backend.stem: e.g. ResNet's 7x7/2 on RGB, now 4x4 over
    12 channels) reads a few channels per tap, most of each VEC_SIZE-byte vector padding.
    Where it shortens the reduction, the host also folds the kernel's columns into channels
    (SpaceToDepth.fold_width): the conv becomes KH x 1 over KW x C channels, its weights the
    same bytes reshaped ([Cout, KH, KW, C] -> [Cout, KH, 1, KW * C]); every output sums the
    same products. ResNet-50 at VEC_SIZE 32: 16 vectors per output pixel -> 8."""
    out = None
    for i, spec in enumerate(lowered.device_inputs):
        s2d = spec.space_to_depth
        if s2d is None or s2d.fold_width != 1:
            continue
        readers = [s for s in lowered.steps if spec.name in s.inputs]
        if len(readers) != 1 or readers[0].op != "conv":
            continue
        layer = readers[0].attrs["layer"]
        kh, kw, c = layer["kernel_h"], layer["kernel_w"], layer["in_channels"]
        before, after = _stem_vectors(kh, kw, c, vec_size)
        if kw == 1 or after >= before or layer["in_channel_offset"] != 0:
            continue
        if out is None:
            out = copy.deepcopy(lowered)
        step = next(s for s in out.steps if spec.name in s.inputs)
        layer = step.attrs["layer"]
        width = layer["in_width"] - kw + 1
        layer.update(in_width=width, in_channels=kw * c,
                     in_channel_stride=padded_channels(kw * c), kernel_w=1)
        weights = step.arrays["weights"]  # [cout, KH, KW, C]: the same bytes as [.., 1, KW*C]
        step.arrays["weights"] = np.ascontiguousarray(weights).reshape(
            weights.shape[0], kh, 1, kw * c)
        out.device_inputs[i] = dataclasses.replace(
            spec, space_to_depth=dataclasses.replace(s2d, fold_width=kw))
        n, h, _, _ = out.placements[spec.name].shape
        out.placements[spec.name] = Placement(spec.name, 0, padded_channels(kw * c),
                                              (n, h, width, kw * c))
    return lowered if out is None else out


def pad_for_fpga(lowered: Lowered, vec_size: int) -> Lowered:
    """``lowered`` itself when every tensor an FPGA pipeline reads already has a stride that
    is a multiple of ``vec_size``; else a copy with those tensors' buffers re-strided."""
    if vec_size <= CHANNEL_ALIGN:
        return lowered  # CHANNEL_ALIGN is a multiple of every smaller power of two
    placements = lowered.placements
    roots = {placements[s.inputs[0]].root for s in lowered.steps
             if step_kind(s.op).bind_fpga is not None
             and placements[s.inputs[0]].stride % vec_size}
    if not roots:
        return lowered
    stride = {root: round_up(placements[root].stride, vec_size) for root in roots}
    out = copy.deepcopy(lowered)
    for name, p in out.placements.items():
        if p.root in roots:
            out.placements[name] = dataclasses.replace(p, stride=stride[p.root])
    for step in out.steps:
        for role, name in _roles(step):
            root = placements[name].root
            if root not in roots:
                continue
            dicts = _stride_dicts(step.attrs, _STRIDE_KEYS.get(role, "-"))
            if not dicts:
                raise CompileError(
                    f"{step.op} {step.name!r} reads {name!r} as a contiguous "
                    f"{placements[name].stride}-channel tensor, but an FPGA pipeline needs it "
                    f"padded to VEC_SIZE {vec_size}: use a bitstream with VEC_SIZE <= "
                    f"{CHANNEL_ALIGN} for this model")
            for d in dicts:
                d[_STRIDE_KEYS[role]] = stride[root]
    return out
