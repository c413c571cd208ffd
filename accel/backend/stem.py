"""The space-to-depth rewrite of stem convs: a strided conv with few input channels on a
model input (e.g. ResNet's 7x7/2 over RGB) becomes host padding + an s x s fold of the
input into channels + a stride-1 conv on the conv kernel's many-channel path. The host
half (apply_space_to_depth) runs in every CompiledModel.run; numpy only."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..ops import tuning
from ..ops.layout import padded_channels
from .lowered import Lowered, Placement, SpaceToDepth, Step
from .steps import conv_layer

# Rewrite a strided few-channel conv on a model input (see space_to_depth_stems); tests
# turn it off to compare against the plain one.
SPACE_TO_DEPTH = True
# e.g. RGB: the conv kernel's slow few-channel path (a rule in kernels/tuning.json; the
# lowering is the same for every device, so it is read at the "default" key)
SPACE_TO_DEPTH_MAX_CHANNELS = tuning.rule("conv.cl", "SPACE_TO_DEPTH_MAX_CHANNELS")


def space_to_depth_stems(lowered: Lowered) -> None:
    """Rewrite, in place, each conv with stride s >= 2 and at most
    SPACE_TO_DEPTH_MAX_CHANNELS input channels that alone reads a device input (quantized on
    the host anyway): the host pads the input and folds s x s patches into channels
    (SpaceToDepth), and the conv becomes stride 1, no pads, kernel ceil(K / s), over s*s*C
    channels, with the weights rearranged the same way and zeros where the kernel, padded to
    a multiple of s, has no tap. Every output sums the same products (the added taps have
    zero weights; padding carries the input zero point as before) and sum(w), which the
    kernel's bias folds, is unchanged: bit-identical, on the kernel's many-channel path."""
    readers: dict[str, list[Step]] = {}
    for step in lowered.steps:
        for name in step.inputs:
            readers.setdefault(name, []).append(step)
    for i, spec in enumerate(lowered.device_inputs):
        users = readers.get(spec.name, [])
        placement = lowered.placements[spec.name]
        aliases = [name for name, p in lowered.placements.items()
                   if p.root == spec.name and name != spec.name]  # e.g. a Reshape's output
        if len(users) != 1 or aliases or placement.root != spec.name or \
                not placement.contiguous:
            continue
        step = users[0]
        if step.op != "conv" or step.inputs[0] != spec.name or not _fits_space_to_depth(step):
            continue
        rearranged = space_to_depth_conv(step, placement)
        if rearranged is None:
            continue
        s2d, shape = rearranged
        lowered.device_inputs[i] = dataclasses.replace(spec, space_to_depth=s2d)
        lowered.placements[spec.name] = Placement(spec.name, 0, padded_channels(shape[3]), shape)


def _fits_space_to_depth(step: Step) -> bool:
    layer = step.attrs["layer"]
    s = layer["stride"][0]
    return (s >= 2 and layer["stride"][1] == s and list(layer["dilation"]) == [1, 1]
            and layer["in_channels"] <= SPACE_TO_DEPTH_MAX_CHANNELS
            and layer["in_channel_offset"] == 0
            and layer["kernel_h"] >= s and layer["kernel_w"] >= s)  # else no tap is saved


def space_to_depth_conv(step: Step, x: Placement):
    """Rewrite one conv step (attrs and weights); returns (SpaceToDepth, new input shape),
    or None where the conv's window leaves the input altogether (nothing to gain)."""
    layer = step.attrs["layer"]
    params = conv_layer(step.attrs)
    s = params.stride[0]
    n, h, w, c = x.shape
    kh, kw = -(-params.kernel_h // s), -(-params.kernel_w // s)  # kernel in blocks
    # The canvas holds exactly the blocks the stride-1 conv reads.
    height, width = s * (params.out_height - 1 + kh), s * (params.out_width - 1 + kw)
    top, left = params.pads[0], params.pads[1]
    if height <= top or width <= left:
        return None
    weights = step.arrays["weights"]  # [cout, KH, KW, C]
    cout = weights.shape[0]
    padded = np.zeros((cout, kh * s, kw * s, c), np.int8)
    padded[:, :params.kernel_h, :params.kernel_w, :] = weights
    folded = padded.reshape(cout, kh, s, kw, s, c).transpose(0, 1, 3, 2, 4, 5)
    step.arrays["weights"] = np.ascontiguousarray(folded.reshape(cout, kh, kw, s * s * c))
    shape = (n, height // s, width // s, s * s * c)
    layer.update(in_height=shape[1], in_width=shape[2], in_channels=shape[3],
                 in_channel_stride=padded_channels(shape[3]), kernel_h=kh, kernel_w=kw,
                 stride=[1, 1], pads=[0, 0, 0, 0])
    step.attrs["space_to_depth"] = s  # for readers of the lowered model; binding ignores it
    return SpaceToDepth(s, top, left, height, width), shape


def apply_space_to_depth(x: np.ndarray, s2d: SpaceToDepth, zero_point: int,
                         channels: int | None = None) -> np.ndarray:
    """The host side of the rewrite: int8 NHWC [N, H, W, C] -> [N, height / block,
    width / block, channels], the first block * block * C channels the folded patches, the
    rest (default none) the zero point, like any padded channel."""
    n, h, w, c = x.shape
    b, folded = s2d.block, s2d.block * s2d.block * c
    rows, cols = s2d.height // b, s2d.width // b
    canvas = np.full((n, s2d.height, s2d.width, c), zero_point, dtype=x.dtype)
    top, left = s2d.pad_top, s2d.pad_left
    inside_h, inside_w = min(h, s2d.height - top), min(w, s2d.width - left)
    canvas[:, top:top + inside_h, left:left + inside_w] = x[:, :inside_h, :inside_w]
    fold = s2d.fold_width
    out = np.full((n, rows, cols, folded if channels is None or fold > 1 else channels),
                  zero_point, dtype=x.dtype)
    # Splitting the folded channels into (dy, dx, c) is a view of out: one strided copy.
    out[..., :folded].reshape(n, rows, cols, b, b, c)[...] = \
        canvas.reshape(n, rows, b, cols, b, c).transpose(0, 1, 3, 2, 4, 5)
    if fold == 1:
        return out
    width = cols - fold + 1  # each pixel carries its next fold - 1 neighbours' channels
    wide = np.full((n, rows, width, max(fold * folded, channels or 0)), zero_point, x.dtype)
    for j in range(fold):
        wide[..., j * folded:(j + 1) * folded] = out[:, :, j:j + width]
    return wide
