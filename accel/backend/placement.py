"""Where device tensors live (``Placement``): every device tensor is NHWC int8 with
channels padded to CHANNEL_ALIGN, inside one device buffer (its *root*) at a channel
offset, with the root's padded channel count as pixel stride. Concat members are written in
place at their offset of the concat's buffer (DenseNet's nested concats all become prefixes
of the block's last one). In a QDQ model, whose concat inputs keep their own scales, an
input at other QParams than its concat's is rounded at its own scale and copied into its
slice by a "requantize" step (onnxruntime's QLinearConcat table), so each concat has its
own buffer. A Reshape the device need not execute aliases its input."""

from __future__ import annotations

import dataclasses

from ..compiler import ir
from ..compiler.errors import CompileError
from ..ops.layout import CHANNEL_ALIGN, padded_channels
from ..quantization import QParams
from .lowered import Placement


def nhwc_shape(shape: tuple[int, ...], what: str) -> tuple[int, int, int, int]:
    """The device (NHWC) shape of a logical NCHW (or [N, K]) tensor."""
    if len(shape) == 4:
        n, c, h, w = shape
        return (n, h, w, c)
    if len(shape) == 2:
        return (shape[0], 1, 1, shape[1])
    raise CompileError(f"tensor {what!r} of shape {shape} cannot live on the device "
                       "(only NCHW or [N, features] tensors do)")


# QDQ models: the producers whose output may be written straight into a concat
IN_PLACE_PRODUCERS = (ir.Conv, ir.Pool, ir.Affine, ir.Activation, ir.Concat)


def place(graph: ir.Graph, device: list[ir.Node], device_tensors: list[str],
           dense_sources: dict[str, str], qparams: dict[str, QParams] | None = None,
           copies: list[tuple[ir.Concat, str, str]] | None = None) -> dict[str, Placement]:
    """Placements of the device tensors. With ``copies`` (a list to fill; QDQ models) a
    concat input is written in place only where its QParams equal the concat's and its
    producer can write there; every other input gets (concat, input, copy name) in
    ``copies``: a requantizing copy into the concat's slice, named by the copy name."""
    shapes = {name: nhwc_shape(graph.shape(name), name) for name in device_tensors}
    producers = {n.output: n for n in device}
    copy_slots: dict[str, tuple[str, int, str]] = {}  # copy name -> (root, offset, input)
    where: dict[str, tuple[str, int]] = {}  # tensor -> (root, channel offset)
    concats = [n for n in device if isinstance(n, ir.Concat)]
    for node in reversed(concats):
        if len(graph.shape(node.output)) != 4 or node.axis % 4 != 1:
            raise CompileError(f"Concat {node.name!r}: only channel concats of NCHW tensors "
                               f"run on the device (axis {node.axis}, shape "
                               f"{graph.shape(node.output)})")
        for name in node.inputs[:-1]:
            if graph.shape(name)[1] % CHANNEL_ALIGN:
                raise CompileError(f"Concat {node.name!r}: input {name!r} has "
                                   f"{graph.shape(name)[1]} channels, not a multiple of "
                                   f"{CHANNEL_ALIGN}, so it cannot be written in place")
        if node.output not in where:
            enclosing = None if copies is not None else _enclosing(node, graph, where)
            where[node.output] = enclosing or (node.output, 0)
        root, offset = where[node.output]
        for name in node.inputs:
            if copies is not None and (
                    name in where or qparams[name] != qparams[node.output]
                    or not isinstance(producers.get(name), IN_PLACE_PRODUCERS)
                    or name in graph.outputs):
                copy = f"{name}@{node.output}"
                copies.append((node, name, copy))
                copy_slots[copy] = (root, offset, name)
                offset += graph.shape(name)[1]
                continue
            if name in where and where[name] != (root, offset):
                raise CompileError(f"Concat {node.name!r}: input {name!r} is also part of "
                                   f"another concat at a different place; a copy would be "
                                   "needed, which the backend does not do")
            where[name] = (root, offset)
            offset += graph.shape(name)[1]
    placements: dict[str, Placement] = {}
    for name in device_tensors:
        root, offset = where.get(name, (name, 0))
        placements[name] = Placement(root, offset, padded_channels(shapes[root][3]), shapes[name])
    for copy, (root, offset, name) in copy_slots.items():
        placements[copy] = Placement(root, offset, padded_channels(shapes[root][3]), shapes[name])
    # Reshapes the device skips: alias their input when the bytes are the same.
    for node in device:
        if isinstance(node, ir.Reshape):
            src = placements[node.x]
            if node.output in dense_sources:
                continue
            if src.shape[1:3] != (1, 1) or nhwc_shape(node.shape, node.output)[3] != src.shape[3]:
                raise CompileError(f"Reshape {node.name!r} {graph.shape(node.x)} -> {node.shape} "
                                   "moves data on the device; only flattening before a Dense "
                                   "or a change of [N, C, 1, 1] <-> [N, C] is supported")
            placements[node.output] = dataclasses.replace(
                src, shape=nhwc_shape(node.shape, node.output))
    return placements


def _enclosing(node: ir.Concat, graph: ir.Graph, where) -> tuple[str, int] | None:
    """Where a concat goes when its inputs already sit, in order, in a larger concat."""
    if not all(name in where for name in node.inputs):
        return None
    root, start = where[node.inputs[0]]
    offset = start
    for name in node.inputs:
        if where[name] != (root, offset):
            return None
        offset += graph.shape(name)[1]
    return root, start
