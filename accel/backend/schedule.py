"""Lowering a quantized IR graph to kernel launches, and binding them into one C++ Plan.

``lower(graph, qparams)`` is device-independent and serialisable (a ``Lowered``: int8
weights, layer parameters, where every tensor lives); ``bind(ctx, lowered)`` prepares every
op on a device, allocates buffers with liveness-based reuse and records a Plan.

Where tensors live (``Placement``): every device tensor is NHWC int8 with channels padded to
CHANNEL_ALIGN, inside one device buffer (its *root*) at a channel offset, with the root's
padded channel count as pixel stride. Concat members are written in place at their offset of
the concat's buffer (DenseNet's nested concats all become prefixes of the block's last one).
In a QDQ model, whose concat inputs keep their own scales, an input at other QParams than
its concat's is rounded at its own scale and copied into its slice by a "requantize" step
(onnxruntime's QLinearConcat table), so each concat has its own buffer.
A Reshape the device need not execute aliases its input.

What runs where:
- host head: Transpose/Reshape of a graph input (tf2onnx's NHWC -> NCHW), in float; then
  quantize, and for a stem conv (stride >= 2, <= 4 input channels) space-to-depth, which
  turns it into a stride-1 conv on the kernel's many-channel path (space_to_depth_stems);
- device: Conv (+ residual, dilation), depthwise Conv (groups == channels: its own kernel,
  accel.ops.depthwise, also on the FPGA emulator), Dense (as a conv whose
  kernel covers the whole input image), Pool, Add, Affine, L2Norm; Concat is free;
- host tail: Softmax/Reshape/Transpose after the last device op, in float on dequantized
  outputs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from .. import numerics
from ..compiler import ir
from ..compiler.errors import CompileError
from ..numerics import INT8_MAX, INT8_MIN, Activation
from ..ops import affine as affine_ops
from ..ops import conv as conv_ops
from ..ops import depthwise as depthwise_ops
from ..ops import eltwise as eltwise_ops
from ..ops import fpga as fpga_ops
from ..ops import l2norm as l2norm_ops
from ..ops import pool as pool_ops
from ..ops import winograd as winograd_ops
from ..ops.layout import CHANNEL_ALIGN, padded_channels
from ..quantization import (QParams, quantize_bias, quantize_weights_per_channel,
                            requant_multipliers)

HOST_OPS = (ir.Softmax, ir.Reshape, ir.Transpose, ir.Identity)
# Rewrite a strided few-channel conv on a model input as space-to-depth on the host plus a
# stride-1 conv (see space_to_depth_stems); tests turn it off to compare against the plain one.
SPACE_TO_DEPTH = True
SPACE_TO_DEPTH_MAX_CHANNELS = 4  # e.g. RGB: the conv kernel's slow few-channel path
# Run eligible 3x3 stride-1 convs as Winograd where the device's tuning enables it (see
# ndrange_conv_ops); tests turn it off to compare against the direct conv.
WINOGRAD = True
# ops that can write into a concat
OFFSET_WRITERS = ("conv", "depthwise", "pool", "global_avg_pool", "affine", "requantize")


# --- the lowered model ----------------------------------------------------------------------


@dataclass
class Placement:
    """Where a device tensor lives: buffer ``root`` at channel ``offset``, ``stride`` padded
    channels per pixel; ``shape`` is its logical NHWC shape."""
    root: str
    offset: int
    stride: int
    shape: tuple[int, int, int, int]

    @property
    def contiguous(self) -> bool:
        return self.offset == 0 and self.stride == padded_channels(self.shape[3])

    @property
    def nbytes(self) -> int:
        n, h, w, _ = self.shape
        return n * h * w * self.stride


@dataclass
class Step:
    """One kernel launch: ``op`` in conv / depthwise / pool / global_avg_pool / add / affine /
    l2norm / requantize."""
    op: str
    name: str
    inputs: list[str]
    output: str
    attrs: dict
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class HostNode:
    """Softmax / Reshape / Transpose run on the host in float."""
    op: str
    x: str
    output: str
    attrs: dict


@dataclass
class SpaceToDepth:
    """How the host rearranges a quantized input before upload: pad it with its zero point
    onto a ``height`` x ``width`` canvas (``pad_top`` rows and ``pad_left`` columns before
    it; the canvas may end before the input does), then fold every ``block`` x ``block``
    patch into channels, channel (dy * block + dx) * C + c."""
    block: int
    pad_top: int
    pad_left: int
    height: int  # multiples of block
    width: int

    def __post_init__(self):
        if self.block < 2 or min(self.pad_top, self.pad_left) < 0 or min(
                self.height, self.width) <= 0 or self.height % self.block or \
                self.width % self.block:
            raise ValueError(f"bad space-to-depth {self}: block >= 2, pads >= 0, and a "
                             "positive height and width that are multiples of block")


@dataclass
class TensorSpec:
    name: str
    shape: tuple[int, ...]      # logical (ONNX) shape
    qparams: QParams | None = None
    space_to_depth: SpaceToDepth | None = None  # device inputs only


@dataclass
class Lowered:
    name: str
    inputs: list[TensorSpec]            # the model's inputs (float32)
    outputs: list[TensorSpec]           # the model's outputs (float32)
    head: list[HostNode]
    device_inputs: list[TensorSpec]     # quantized on the host, uploaded
    steps: list[Step]
    device_outputs: list[TensorSpec]    # downloaded, dequantized
    tail: list[HostNode]
    placements: dict[str, Placement]


# --- helpers --------------------------------------------------------------------------------


def nhwc_shape(shape: tuple[int, ...], what: str) -> tuple[int, int, int, int]:
    """The device (NHWC) shape of a logical NCHW (or [N, K]) tensor."""
    if len(shape) == 4:
        n, c, h, w = shape
        return (n, h, w, c)
    if len(shape) == 2:
        return (shape[0], 1, 1, shape[1])
    raise CompileError(f"tensor {what!r} of shape {shape} cannot live on the device "
                       "(only NCHW or [N, features] tensors do)")


def activation_for(clamp: ir.Clamp, q: QParams) -> Activation:
    """A float clamp as an int8 range at the output's scale and zero point."""
    lo = INT8_MIN if clamp.lo == -math.inf else q.zero_point + round(clamp.lo / q.scale)
    hi = INT8_MAX if clamp.hi == math.inf else q.zero_point + round(clamp.hi / q.scale)
    lo, hi = max(INT8_MIN, min(INT8_MAX, lo)), max(INT8_MIN, min(INT8_MAX, hi))
    return Activation(int(lo), int(hi))


def _storage_offset(graph: ir.Graph, name: str) -> int:
    """What onnxruntime adds to our int8 values to store a QDQ model's tensor: 0 for an int8
    Q/DQ pair, else 128 (uint8, quantize_static's default)."""
    quant = graph.tensors[name].quant
    return 0 if quant is not None and quant.dtype == "int8" else 128


def _ort_int8_stays(graph: ir.Graph, node: ir.Node) -> bool:
    """Whether onnxruntime on x86 keeps an int8 QDQ op's tensors int8, and so runs the op in
    float: its QDQ fusions allow int8 only on ARM, and it turns an int8 Q/DQ pair into uint8
    (QDQS8ToU8Transformer) only where the tensor has one reader. An op is fused to its uint8
    QLinear kernel when its input and output were both turned."""
    names = [n for n in node.input_names() if not graph.tensors[n].is_const] + [node.output]
    if all(_storage_offset(graph, n) for n in names):
        return False  # a uint8 model
    users = graph.consumers()
    return not all(len(users.get(n, [])) == 1 and n not in graph.outputs for n in names)


def _multiplier(real: float, what: str) -> tuple[int, int]:
    try:
        return numerics.quantize_multiplier(real)
    except ValueError as e:
        raise CompileError(f"{what}: {e}") from None


def _per_channel(node: ir.Node, x_scale: float, weight_scales, out_scale: float):
    try:
        return requant_multipliers(x_scale, weight_scales, out_scale)
    except ValueError as e:
        raise CompileError(f"{node.op} {node.name!r}: {e}") from None


def _float32_per_channel(node: ir.Node, x_scale: float, weight_scales, out_scale: float):
    """Per-channel float32 (mantissa, shift) of x_scale * weight_scale[c] / out_scale,
    computed in float32 left to right as onnxruntime's QLinearConv does."""
    reals = (np.float32(x_scale) * np.asarray(weight_scales, np.float32)) / np.float32(out_scale)
    try:
        return numerics.float32_multipliers(reals.astype(np.float32))
    except ValueError as e:
        raise CompileError(f"{node.op} {node.name!r}: {e}") from None


def _bias(node: ir.Node, bias, x_scale: float, weight_scales) -> np.ndarray:
    try:
        return quantize_bias(bias, x_scale, weight_scales)
    except ValueError as e:
        raise CompileError(f"{node.op} {node.name!r}: {e}") from None


# --- partition: host head / device / host tail ------------------------------------------------


def partition(graph: ir.Graph) -> tuple[list[ir.Node], list[ir.Node], list[ir.Node]]:
    consumers = graph.consumers()
    head: list[ir.Node] = []
    head_outputs = set(graph.inputs)
    for node in graph.nodes:
        if isinstance(node, (ir.Transpose, ir.Reshape)) and node.x in head_outputs:
            head.append(node)
            head_outputs.add(node.output)
    tail_set: set[str] = set()
    for node in reversed(graph.nodes):
        if node in head or not isinstance(node, HOST_OPS):
            continue
        if all(user.output in tail_set for user in consumers.get(node.output, [])):
            tail_set.add(node.output)
    tail = [n for n in graph.nodes if n.output in tail_set]
    device = [n for n in graph.nodes if n not in head and n.output not in tail_set]
    return head, device, tail


def _host_node(node: ir.Node) -> HostNode:
    if isinstance(node, ir.Softmax):
        return HostNode("softmax", node.x, node.output, {"axis": node.axis})
    if isinstance(node, ir.Reshape):
        return HostNode("reshape", node.x, node.output, {"shape": list(node.shape)})
    if isinstance(node, ir.Transpose):
        return HostNode("transpose", node.x, node.output, {"perm": list(node.perm)})
    if isinstance(node, ir.Identity):  # a graph output that is also read on the device
        return HostNode("identity", node.x, node.output, {})
    raise CompileError(f"{node.op} {node.name!r} cannot run on the host")


def run_host_node(node: HostNode, env: dict[str, np.ndarray]) -> np.ndarray:
    x = env[node.x]
    if node.op == "softmax":
        e = np.exp(x - x.max(axis=node.attrs["axis"], keepdims=True))
        return (e / e.sum(axis=node.attrs["axis"], keepdims=True)).astype(np.float32)
    if node.op == "reshape":
        return x.reshape(node.attrs["shape"])
    if node.op == "transpose":
        return np.ascontiguousarray(x.transpose(node.attrs["perm"]))
    if node.op == "identity":
        return x.copy()
    raise ValueError(f"unknown host op {node.op!r}")


def device_reshapes(graph: ir.Graph) -> set[str]:
    """Outputs of the Reshapes the device does not execute (they alias or feed a Dense)."""
    _, device, _ = partition(graph)
    return {n.output for n in device if isinstance(n, ir.Reshape)}


# --- placement --------------------------------------------------------------------------------


# QDQ models: the producers whose output may be written straight into a concat
IN_PLACE_PRODUCERS = (ir.Conv, ir.Pool, ir.Affine, ir.Activation, ir.Concat)


def _place(graph: ir.Graph, device: list[ir.Node], device_tensors: list[str],
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


# --- lowering ---------------------------------------------------------------------------------


def lower(graph: ir.Graph, qparams: dict[str, QParams],
          space_to_depth: bool | None = None, requant: str = "fixed",
          concat_copies: bool = False) -> Lowered:
    """The quantized, device-independent launch list of an optimized graph.
    ``space_to_depth`` (default: SPACE_TO_DEPTH) rewrites stem convs, see
    space_to_depth_stems; the outputs are bit-identical either way. ``requant``: the
    requantization of convs, dense layers and Adds, "fixed" (the numerics contract) or
    "float32" (onnxruntime's float32 arithmetic, for QDQ models: QLinearConv's,
    QLinearAdd's, QLinearAveragePool's and QLinearGlobalAveragePool's; convs with a fused
    residual add stay "fixed", see _conv_step).
    ``concat_copies`` (QDQ models): a concat input at other QParams than the concat's is
    requantized into its slice by a "requantize" step (ORT's QLinearConcat table), see
    _place; otherwise every input is written in place at the concat's shared scale."""
    if requant not in conv_ops.REQUANT_MODES:
        raise ValueError(f"requant must be one of {conv_ops.REQUANT_MODES}, got {requant!r}")
    for node in graph.nodes:
        if not isinstance(node, ir.CANONICAL_NODE_TYPES + (ir.Activation, ir.Identity)):
            raise CompileError(f"{node.op} {node.name!r} is not a canonical node; run the "
                               "compiler's pass pipeline first")
    head, device, tail = partition(graph)
    tail_outputs = {n.output for n in tail}

    # A Reshape that only feeds Dense nodes: the Dense reads its source directly.
    consumers = graph.consumers()
    dense_sources: dict[str, str] = {}
    for node in device:
        if isinstance(node, ir.Reshape) and consumers.get(node.output) and all(
                isinstance(u, ir.Dense) for u in consumers[node.output]):
            source = dense_sources.get(node.x, node.x)
            dense_sources[node.output] = source

    device_produced = [n.output for n in device]
    read_on_device = {name for n in device for name in n.input_names()
                      if not graph.tensors[name].is_const}
    device_inputs = [name for name in list(graph.inputs) + [n.output for n in head]
                     if name in read_on_device]
    device_tensors = [t for t in device_inputs + device_produced if t not in dense_sources]
    copies: list[tuple[ir.Concat, str, str]] | None = [] if concat_copies else None
    placements = _place(graph, device, device_tensors, dense_sources, qparams, copies)
    for name, source in dense_sources.items():
        placements[name] = placements[source]

    steps: list[Step] = []
    for node in device:
        step = _lower_node(node, graph, qparams, placements, dense_sources, requant)
        if isinstance(node, ir.Concat):  # its inputs are all computed by now
            for concat, name, copy in copies or []:
                if concat is node:
                    step = _requantize_step(concat, name, copy, qparams, placements)
                    q = qparams[node.output]
                    step.attrs["output_qparams"] = [float(q.scale), int(q.zero_point)]
                    steps.append(step)
            continue
        if step is not None:
            q = qparams[step.output]  # for dequantizing traced values
            step.attrs["output_qparams"] = [float(q.scale), int(q.zero_point)]
            steps.append(step)

    for step in steps:
        if placements[step.output].root != step.output and step.op not in OFFSET_WRITERS:
            raise CompileError(f"{step.name!r} ({step.op}) feeds a concat but cannot write at a "
                               "channel offset")
    for name, p in placements.items():
        if p.root != name and (name in device_inputs):
            raise CompileError(f"input {name!r} feeds a concat directly; the backend needs a "
                               "device op to write it in place")

    graph_outputs = set(graph.outputs)
    host_reads = {n.x for n in tail} | graph_outputs
    device_outputs = [name for name in device_produced if name in host_reads]
    for name in device_outputs:
        if not placements[name].contiguous or placements[name].root != name:
            raise CompileError(f"output {name!r} lives inside a larger tensor (a concat); "
                               "the backend downloads whole tensors only")
    for name in graph.outputs:
        if name not in device_outputs and name not in tail_outputs:
            raise CompileError(f"graph output {name!r} is not computed (an input passed "
                               "through is not supported)")

    def spec(name, with_q=True):
        return TensorSpec(name, tuple(graph.shape(name)), qparams[name] if with_q else None)

    lowered = Lowered(
        name=graph.name,
        inputs=[spec(n, False) for n in graph.inputs],
        outputs=[spec(n, False) for n in graph.outputs],
        head=[_host_node(n) for n in head],
        device_inputs=[spec(n) for n in device_inputs],
        steps=steps,
        device_outputs=[spec(n) for n in device_outputs],
        tail=[_host_node(n) for n in tail],
        placements=placements)
    if SPACE_TO_DEPTH if space_to_depth is None else space_to_depth:
        space_to_depth_stems(lowered)
    return lowered


# --- space-to-depth of stem convs -------------------------------------------------------------


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
    out = np.full((n, rows, cols, folded if channels is None else channels), zero_point,
                  dtype=x.dtype)
    # Splitting the folded channels into (dy, dx, c) is a view of out: one strided copy.
    out[..., :folded].reshape(n, rows, cols, b, b, c)[...] = \
        canvas.reshape(n, rows, b, cols, b, c).transpose(0, 1, 3, 2, 4, 5)
    return out


def _need_contiguous(node: ir.Node, name: str, placements: dict[str, Placement]) -> Placement:
    p = placements[name]
    if not p.contiguous:
        raise CompileError(f"{node.op} {node.name!r} reads {name!r}, which sits inside a "
                           "concat; this op reads whole tensors only")
    return p


def _lower_node(node, graph, qparams, placements, dense_sources,
                requant: str = "fixed") -> Step | None:
    if isinstance(node, (ir.Concat, ir.Reshape)):
        return None  # placement only
    out = placements[node.output]
    qy = qparams[node.output]
    if isinstance(node, ir.Conv):
        return _lower_conv(node, graph, qparams, placements, requant)
    if isinstance(node, ir.Dense):
        return _lower_dense(node, graph, qparams, placements, dense_sources, requant)
    if isinstance(node, ir.Pool):
        x = _need_contiguous(node, node.x, placements)
        qx = qparams[node.x]
        n, h, w, c = x.shape
        common = dict(input_zero_point=qx.zero_point, output_zero_point=qy.zero_point,
                      scale_ratio=qx.scale / qy.scale)
        placement = {"out_channel_stride": out.stride, "out_channel_offset": out.offset}
        if node.kind == "global_avg":
            params = dict(input_shape=list(x.shape), **common)
            if requant == "float32":  # onnxruntime's QLinearGlobalAveragePool
                params.update(requant=requant, input_scale=qx.scale, output_scale=qy.scale)
            return Step("global_avg_pool", node.name, [node.x], node.output,
                        {"params": params, **placement})
        if node.kind == "global_max":
            kind, kernel, strides, pads = "max", (h, w), (1, 1), (0, 0, 0, 0)
        else:
            kind, kernel, strides, pads = node.kind, node.kernel, node.strides, node.pads
        params = dict(kind=kind, input_shape=list(x.shape), kernel=list(kernel),
                      stride=list(strides), pads=list(pads),
                      count_include_pad=bool(node.count_include_pad), **common)
        if requant == "float32" and kind == "avg":
            # onnxruntime's QLinearAveragePool adds the zero point before rounding, in uint8
            # (our int8 + 128). Where it leaves int8 tensors it runs a float AveragePool and a
            # QuantizeLinear instead, which rounds first: an offset of -z_y (_ort_int8_stays).
            # Checked in test_qdq.py, test_tf_graphs.py, test_tf_models.py (DenseNet-121).
            offset = -qy.zero_point if _ort_int8_stays(graph, node) else 128
            params.update(requant=requant, input_scale=qx.scale, output_scale=qy.scale,
                          storage_offset=offset)
        return Step("pool", node.name, [node.x], node.output, {"params": params, **placement})
    if isinstance(node, ir.Add):
        a = _need_contiguous(node, node.a, placements)
        _need_contiguous(node, node.b, placements)
        qa, qb = qparams[node.a], qparams[node.b]
        act = activation_for(node.clamp, qy)
        params = dict(shape=list(a.shape), a_zero_point=qa.zero_point,
                      a_scale_ratio=qa.scale / qy.scale, b_zero_point=qb.zero_point,
                      b_scale_ratio=qb.scale / qy.scale, output_zero_point=qy.zero_point,
                      activation=[act.lo, act.hi], requant=requant,
                      storage_offset=_storage_offset(graph, node.output))
        return Step("add", node.name, [node.a, node.b], node.output, {"params": params})
    if isinstance(node, (ir.Affine, ir.Activation)):  # a ReLU no producer absorbed: scale 1
        return _lower_affine(node, graph, qparams, placements, requant)
    if isinstance(node, ir.L2Norm):
        if node.axis % 4 != 1:
            raise CompileError(f"L2Norm {node.name!r}: only the channel axis is supported")
        x = _need_contiguous(node, node.x, placements)
        qx = qparams[node.x]
        gamma = graph.const(node.scale)
        gamma = np.ones(x.shape[3], np.float32) if gamma is None else gamma
        params = dict(input_shape=list(x.shape), output_scale=qy.scale,
                      input_zero_point=qx.zero_point, output_zero_point=qy.zero_point)
        return Step("l2norm", node.name, [node.x], node.output, {"params": params},
                    {"gamma": np.asarray(gamma, np.float64)})
    raise CompileError(f"{node.op} {node.name!r} has no device lowering")


def _requantize_step(node: ir.Concat, name: str, copy: str, qparams, placements) -> Step:
    """Concat input ``name`` (at its own QParams) copied into its slice of the concat."""
    x, out = placements[name], placements[copy]
    qx, qy = qparams[name], qparams[node.output]
    try:
        table = affine_ops.requantize_table(qx.scale, qx.zero_point, qy.scale, qy.zero_point)
    except ValueError as e:
        raise CompileError(f"Concat {node.name!r} input {name!r}: {e}") from None
    params = dict(shape=list(x.shape), in_channel_stride=x.stride, in_channel_offset=x.offset,
                  out_channel_stride=out.stride, out_channel_offset=out.offset)
    return Step("requantize", f"{node.name}/{name}", [name], copy, {"params": params},
                {"table": table})


def quantize_weights(weights: np.ndarray, given: ir.QuantParams | None):
    """(int8 weights, per-output-channel scales): the QDQ model's own integers and scales
    where it has symmetric int8 ones along the output channels, else our per-channel ones."""
    if given is not None and given.dtype == "int8" and given.axis in (None, 0) \
            and np.all(np.asarray(given.zero_point) == 0):
        scales = np.asarray(given.scale, np.float32).reshape(-1)
        if scales.size in (1, weights.shape[0]) and np.all(scales > 0):
            scales = np.broadcast_to(scales, (weights.shape[0],)).astype(np.float32)
            shape = (-1,) + (1,) * (weights.ndim - 1)
            q = np.rint(weights / scales.reshape(shape))
            if q.min() >= -numerics.WEIGHT_MAX and q.max() <= numerics.WEIGHT_MAX:
                return q.astype(np.int8), scales
    return quantize_weights_per_channel(weights)


def _conv_step(node, name_x, x: Placement, out: Placement, qx: QParams, qy: QParams,
               weights_oihw: np.ndarray, bias, stride, pads, clamp, residual=None,
               weight_quant: ir.QuantParams | None = None, dilation=(1, 1),
               requant: str = "fixed") -> Step:
    wq, sw = quantize_weights(weights_oihw, weight_quant)
    cout = weights_oihw.shape[0]
    bias = np.zeros(cout, np.float32) if bias is None else bias
    # onnxruntime adds a residual as a separate QLinearAdd (after rounding the conv output
    # to int8); our fused add has no float32 form, so such convs keep the fixed contract.
    if residual is not None:
        requant = "fixed"
    if requant == "float32":
        mult, shift = _float32_per_channel(node, qx.scale, sw, qy.scale)
    else:
        mult, shift = _per_channel(node, qx.scale, sw, qy.scale)
    act = activation_for(clamp, qy)
    n, h, w, c = x.shape
    layer = dict(batch=n, in_height=h, in_width=w, in_channels=c, out_channels=cout,
                 kernel_h=int(weights_oihw.shape[2]), kernel_w=int(weights_oihw.shape[3]),
                 stride=list(stride), pads=list(pads), dilation=list(dilation),
                 input_zero_point=qx.zero_point,
                 output_zero_point=qy.zero_point, activation=[act.lo, act.hi],
                 in_channel_offset=x.offset, in_channel_stride=x.stride,
                 out_channel_offset=out.offset, out_channel_stride=out.stride, requant=requant)
    inputs = [name_x]
    if residual is not None:
        res_name, res, qr = residual
        layer["residual"] = [qr.zero_point, *_multiplier(qr.scale / qy.scale,
                                                         f"Conv {node.name!r} residual")]
        layer["residual_channel_stride"] = res.stride
        inputs.append(res_name)
    arrays = {"weights": np.ascontiguousarray(wq.transpose(0, 2, 3, 1)),
              "bias": _bias(node, bias, qx.scale, sw), "multipliers": mult, "shifts": shift}
    return Step("conv", node.name, inputs, node.output, {"layer": layer}, arrays)


def _depthwise_step(node: ir.Conv, graph, qparams, placements, requant: str) -> Step:
    """A depthwise Conv (groups == input channels == output channels) as a "depthwise"
    step: weights [C, KH, KW], the conv's quantization, no residual."""
    x, out = placements[node.x], placements[node.output]
    qx, qy = qparams[node.x], qparams[node.output]
    weights = graph.const(node.weight)  # [C, 1, KH, KW]
    wq, sw = quantize_weights(weights, graph.tensors[node.weight].quant)
    c = weights.shape[0]
    bias = graph.const(node.bias)
    bias = np.zeros(c, np.float32) if bias is None else bias
    if requant == "float32":
        mult, shift = _float32_per_channel(node, qx.scale, sw, qy.scale)
    else:
        mult, shift = _per_channel(node, qx.scale, sw, qy.scale)
    act = activation_for(node.clamp, qy)
    n, h, w, _ = x.shape
    layer = dict(batch=n, in_height=h, in_width=w, channels=c,
                 kernel_h=int(weights.shape[2]), kernel_w=int(weights.shape[3]),
                 stride=list(node.strides), pads=list(node.pads), dilation=list(node.dilations),
                 input_zero_point=qx.zero_point, output_zero_point=qy.zero_point,
                 activation=[act.lo, act.hi], in_channel_offset=x.offset,
                 in_channel_stride=x.stride, out_channel_offset=out.offset,
                 out_channel_stride=out.stride, requant=requant)
    arrays = {"weights": np.ascontiguousarray(wq[:, 0]), "bias": _bias(node, bias, qx.scale, sw),
              "multipliers": mult, "shifts": shift}
    return Step("depthwise", node.name, [node.x], node.output, {"layer": layer}, arrays)


def _lower_conv(node: ir.Conv, graph, qparams, placements, requant: str = "fixed") -> Step:
    if node.groups != 1:
        channels = graph.shape(node.x)[1]
        if node.groups == channels == graph.shape(node.output)[1] and node.residual is None:
            return _depthwise_step(node, graph, qparams, placements, requant)
        raise CompileError(f"Conv {node.name!r}: grouped convolution (groups={node.groups}, "
                           f"{channels} input channels) has no kernel; only depthwise "
                           "(groups == input channels == output channels) has one")
    weights = graph.const(node.weight)
    residual = None
    if node.residual is not None:
        res = placements[node.residual]
        if res.offset != 0:
            raise CompileError(f"Conv {node.name!r}: residual {node.residual!r} sits inside a "
                               "concat at a channel offset")
        residual = (node.residual, res, qparams[node.residual])
    return _conv_step(node, node.x, placements[node.x], placements[node.output],
                      qparams[node.x], qparams[node.output], weights, graph.const(node.bias),
                      node.strides, node.pads, node.clamp, residual,
                      graph.tensors[node.weight].quant, node.dilations, requant)


def _lower_dense(node: ir.Dense, graph, qparams, placements, dense_sources,
                 requant: str = "fixed") -> Step:
    source = dense_sources.get(node.x, node.x)
    x = placements[source]
    n, h, w, c = x.shape
    out_features, in_features = graph.shape(node.weight)
    if in_features != c * h * w:
        raise CompileError(f"Dense {node.name!r}: {in_features} features but its input "
                           f"{source!r} holds {c * h * w}")
    weights = graph.const(node.weight).reshape(out_features, c, h, w)
    if (h, w) == (1, 1) and n > 1:  # batch rows as image columns: one weight load for all
        x = dataclasses.replace(x, shape=(1, 1, n, c))
    out = placements[node.output]
    out_view = dataclasses.replace(out, shape=(x.shape[0], 1, x.shape[2] if (h, w) == (1, 1) else 1,
                                               out_features))
    return _conv_step(node, source, x, out_view, qparams[source], qparams[node.output], weights,
                      graph.const(node.bias), (1, 1), (0, 0, 0, 0), node.clamp,
                      weight_quant=graph.tensors[node.weight].quant, requant=requant)


def _lower_affine(node: ir.Affine | ir.Activation, graph, qparams, placements,
                  requant: str = "fixed") -> Step:
    axis = getattr(node, "axis", 1)
    if axis % 4 != 1 or len(graph.shape(node.x)) != 4:
        raise CompileError(f"Affine {node.name!r}: only per-channel affines of NCHW tensors "
                           "run on the device")
    x, out = placements[node.x], placements[node.output]
    qx, qy = qparams[node.x], qparams[node.output]
    c = x.shape[3]
    scale = graph.const(getattr(node, "scale", None))
    shift = graph.const(getattr(node, "shift", None))
    scale = np.ones(c, np.float32) if scale is None else scale
    shift = np.zeros(c, np.float32) if shift is None else shift
    act = activation_for(node.clamp, qy)
    if requant == "float32":  # QDQ: onnxruntime's float32 BatchNorm, tabulated per channel
        table = affine_ops.affine_table(scale, shift, qx.scale, qx.zero_point, qy.scale,
                                        qy.zero_point, act.lo, act.hi)
        params = dict(shape=list(x.shape), in_channel_stride=x.stride,
                      in_channel_offset=x.offset, out_channel_stride=out.stride,
                      out_channel_offset=out.offset, pad_value=qy.zero_point)
        return Step("requantize", node.name, [node.x], node.output, {"params": params},
                    {"table": table})
    wq, sw = quantize_weights_per_channel(scale.reshape(c, 1))
    mult, shifts = _per_channel(node, qx.scale, sw, qy.scale)
    params = dict(shape=list(x.shape), input_zero_point=qx.zero_point,
                  output_zero_point=qy.zero_point, activation=[act.lo, act.hi],
                  in_channel_stride=x.stride, in_channel_offset=x.offset,
                  out_channel_stride=out.stride, out_channel_offset=out.offset)
    arrays = {"weights": wq.reshape(c).astype(np.int32), "bias": _bias(node, shift, qx.scale, sw),
              "multipliers": mult, "shifts": shifts}
    return Step("affine", node.name, [node.x], node.output, {"params": params}, arrays)


# --- binding: buffers + Plan ------------------------------------------------------------------


def _activation(pair) -> Activation:
    return Activation(int(pair[0]), int(pair[1]))


def conv_layer(attrs: dict) -> conv_ops.ConvLayer:
    layer = dict(attrs["layer"])
    layer["stride"] = tuple(layer["stride"])
    layer["pads"] = tuple(layer["pads"])
    layer["dilation"] = tuple(layer.get("dilation", (1, 1)))
    layer["activation"] = _activation(layer["activation"])
    if layer.get("residual") is not None:
        layer["residual"] = conv_ops.Residual(*(int(v) for v in layer["residual"]))
    return conv_ops.ConvLayer(**layer)


def depthwise_layer(attrs: dict) -> depthwise_ops.DepthwiseLayer:
    layer = dict(attrs["layer"])
    for key in ("stride", "pads", "dilation"):
        layer[key] = tuple(layer[key])
    layer["activation"] = _activation(layer["activation"])
    return depthwise_ops.DepthwiseLayer(**layer)


def op_params(step: Step):
    """The op module's parameter object of a step."""
    if step.op == "conv":
        return conv_layer(step.attrs)
    if step.op == "depthwise":
        return depthwise_layer(step.attrs)
    p = dict(step.attrs["params"])
    if "activation" in p:
        p["activation"] = _activation(p["activation"])
    if step.op == "pool":
        return pool_ops.PoolParams(**{**p, "input_shape": tuple(p["input_shape"]),
                                      "kernel": tuple(p["kernel"]), "stride": tuple(p["stride"]),
                                      "pads": tuple(p["pads"])})
    if step.op == "global_avg_pool":
        return pool_ops.GlobalAvgPoolParams(**{**p, "input_shape": tuple(p["input_shape"])})
    if step.op == "add":
        return eltwise_ops.AddParams(**{**p, "shape": tuple(p["shape"])})
    if step.op == "affine":
        return affine_ops.AffineParams(**{**p, "shape": tuple(p["shape"])}, **step.arrays)
    if step.op == "requantize":
        return affine_ops.RequantizeParams(**{**p, "shape": tuple(p["shape"])},
                                           table=np.asarray(step.arrays["table"], np.int8))
    if step.op == "l2norm":
        return l2norm_ops.L2NormParams(**{**p, "input_shape": tuple(p["input_shape"])},
                                       gamma=tuple(step.arrays["gamma"]))
    raise CompileError(f"unknown step op {step.op!r}")


@dataclass
class BoundPlan:
    plan: object
    input_buffers: list
    output_buffers: list
    buffers: list          # every device buffer (kept alive with the plan)
    launch_names: list[str]
    launch_counts: list[int]  # kernels per step (an FPGA pipeline stage has several)
    device_bytes: int
    step_launches: list = field(default_factory=list)  # per step: [(kernel, global, local)]
    buffer_of: dict = field(default_factory=dict)      # root tensor -> Buffer


def allocate(lowered: Lowered) -> tuple[dict[str, int], list[int]]:
    """Liveness-based buffer plan: root tensor -> buffer index, and each buffer's size.
    Inputs and outputs get buffers of their own (the Plan copies them whole)."""
    roots: dict[str, int] = {}  # root -> bytes
    for name, p in lowered.placements.items():
        roots[p.root] = max(roots.get(p.root, 0), p.nbytes if p.root == name else 0)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, step in enumerate(lowered.steps):
        root = lowered.placements[step.output].root
        first.setdefault(root, i)
        last[root] = max(last.get(root, i), i)
        for name in step.inputs:
            r = lowered.placements[name].root
            last[r] = max(last.get(r, i), i)
    pinned = [lowered.placements[t.name].root
              for t in lowered.device_inputs + lowered.device_outputs]
    sizes: list[int] = []
    assignment: dict[str, int] = {}
    for root in dict.fromkeys(pinned):
        assignment[root] = len(sizes)
        sizes.append(roots[root])
    free: list[int] = []
    ending: dict[int, list[str]] = {}
    for root, end in last.items():
        if root not in assignment:
            ending.setdefault(end, []).append(root)
    for i, step in enumerate(lowered.steps):
        for root in [r for r, f in first.items() if f == i and r not in assignment]:
            fits = [b for b in free if sizes[b] >= roots[root]]
            if fits:
                best = min(fits, key=lambda b: sizes[b])
            elif free:  # grow the largest free buffer rather than add one
                best = max(free, key=lambda b: sizes[b])
                sizes[best] = roots[root]
            else:
                best = len(sizes)
                sizes.append(roots[root])
            if best in free:
                free.remove(best)
            assignment[root] = best
        for root in ending.get(i, []):  # after this step's output is placed: no aliasing
            free.append(assignment[root])
    for root in roots:  # never written nor read (cannot happen in a checked graph)
        if root not in assignment:
            assignment[root] = len(sizes)
            sizes.append(roots[root])
    return assignment, sizes


def ndrange_conv_ops(ctx, layer: conv_ops.ConvLayer, weights: np.ndarray):
    """The op module that runs a conv step as an NDRange kernel: accel.ops.winograd (same
    bits, fewer multiplies) for the 3x3 stride-1 layers it can run where the device's
    kernels/tuning.json entry for winograd.cl says it is faster (winograd_ops.use_for),
    never on an FPGA; accel.ops.conv otherwise. WINOGRAD = False turns it off (tests)."""
    if (WINOGRAD and not fpga_ops.is_fpga(ctx)
            and winograd_ops.use_for(ctx.device.tuning_key, layer, weights)):
        return winograd_ops
    return conv_ops


def bind(ctx, lowered: Lowered, fpga_pipelines: bool | None = None) -> BoundPlan:
    """Prepare every step on ``ctx``, allocate the buffers and record one Plan.

    ``fpga_pipelines`` (default: when the device is an FPGA or the FPGA emulator) runs conv,
    dense and pooling as the FPGA pipelines of accel.ops.fpga (concurrent single-work-item
    kernels joined by channels); every other op, and everything on other devices, runs as
    NDRange kernels. Both shapes are bit-exact against the same reference."""
    fpga = fpga_ops.is_fpga(ctx) if fpga_pipelines is None else bool(fpga_pipelines)
    assignment, sizes = allocate(lowered)
    buffers = [ctx.buffer(max(size, 1)) for size in sizes]

    def buf(name):
        return buffers[assignment[lowered.placements[name].root]]

    plan = ctx.plan()
    input_buffers = [buf(t.name) for t in lowered.device_inputs]
    output_buffers = [buf(t.name) for t in lowered.device_outputs]
    for b in input_buffers:
        plan.add_input(b)
    for b in output_buffers:
        plan.add_output(b)
    keep = []
    names, counts, step_launches = [], [], []
    for step in lowered.steps:
        params = op_params(step)
        stage = None
        try:
            if fpga and step.op == "conv":
                a = step.arrays
                prepared = fpga_ops.prepare(ctx, params, a["weights"], a["bias"],
                                            a["multipliers"], a["shifts"])
                keep.append(prepared)
                residual = buf(step.inputs[1]) if len(step.inputs) > 1 else None
                stage = fpga_ops.bind(prepared, buf(step.inputs[0]), buf(step.output), residual)
            elif fpga and step.op in ("pool", "global_avg_pool"):
                stage = fpga_ops.bind_pool(
                    ctx, params, buf(step.inputs[0]), buf(step.output),
                    out_channel_stride=step.attrs["out_channel_stride"],
                    out_channel_offset=step.attrs["out_channel_offset"])
            elif step.op == "conv":
                a = step.arrays
                ops = ndrange_conv_ops(ctx, params, a["weights"])
                prepared = ops.prepare(ctx, params, a["weights"], a["bias"],
                                       a["multipliers"], a["shifts"])
                keep.append(prepared)
                residual = buf(step.inputs[1]) if len(step.inputs) > 1 else None
                kernel, global_size, local_size = ops.bind(
                    prepared, buf(step.inputs[0]), buf(step.output), residual)
            elif step.op == "depthwise":  # NDRange on every device, the FPGA emulator too
                a = step.arrays
                prepared = depthwise_ops.prepare(ctx, params, a["weights"], a["bias"],
                                                 a["multipliers"], a["shifts"])
                keep.append(prepared)
                kernel, global_size, local_size = depthwise_ops.bind(
                    prepared, buf(step.inputs[0]), buf(step.output))
            elif step.op in ("pool", "global_avg_pool"):
                kernel, global_size, local_size = pool_ops.bind(
                    ctx, params, [buf(step.inputs[0])], buf(step.output),
                    out_channel_stride=step.attrs["out_channel_stride"],
                    out_channel_offset=step.attrs["out_channel_offset"])
            elif step.op == "add":
                kernel, global_size, local_size = eltwise_ops.bind(
                    ctx, params, [buf(n) for n in step.inputs], buf(step.output))
            elif step.op == "affine":
                kernel, global_size, local_size = affine_ops.bind(
                    ctx, params, buf(step.inputs[0]), buf(step.output))
            elif step.op == "requantize":
                kernel, global_size, local_size = affine_ops.bind_requantize(
                    ctx, params, buf(step.inputs[0]), buf(step.output))
            elif step.op == "l2norm":
                kernel, global_size, local_size = l2norm_ops.bind(
                    ctx, params, [buf(step.inputs[0])], buf(step.output))
            else:
                raise CompileError(f"unknown step op {step.op!r}")
        except (ValueError, TypeError) as e:
            if isinstance(e, CompileError):
                raise
            raise CompileError(f"{step.op} {step.name!r}: {e}") from e
        if stage is not None:
            launches = [(k, list(g), list(lo)) for k, g, lo in stage]
            plan.add_concurrent(launches)
        else:
            launches = [(kernel, list(global_size), list(local_size))]
            plan.add_launch(*launches[0])
        keep.extend(launches)
        step_launches.append(launches)
        names.append(step.name)
        counts.append(1 if stage is None else len(stage))
    buffer_of = {root: buffers[index] for root, index in assignment.items()}
    return BoundPlan(plan, input_buffers, output_buffers, buffers + keep, names, counts,
                     sum(sizes), step_launches, buffer_of)
