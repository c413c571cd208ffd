"""``lower(graph, qparams)``: a quantized, optimized IR graph -> a ``Lowered`` model, the
device-independent launch list that accel.backend.binding binds to a device.

The steps: partition (host head / device / host tail, accel.backend.partition), placement
of the device tensors (accel.backend.placement), one step per device node (its registered
lowering, accel.backend.op_lowering), the checks that every step can write where its output
lives, then the space-to-depth rewrite of stem convs (accel.backend.stem).
"""

from __future__ import annotations

from ..compiler import ir
from ..compiler.errors import CompileError
from ..ops import conv as conv_ops
from ..quantization import QParams
from . import stem
from .lowered import Lowered, Step, TensorSpec
from .op_lowering import LoweringContext, lower_node, requantize_step
from .partition import host_node, partition
from .placement import place
from .steps import step_kind


def lower(graph: ir.Graph, qparams: dict[str, QParams],
          space_to_depth: bool | None = None, requant: str = "fixed",
          concat_copies: bool = False) -> Lowered:
    """The quantized, device-independent launch list of an optimized graph.
    ``space_to_depth`` (default: stem.SPACE_TO_DEPTH) rewrites stem convs, see
    stem.space_to_depth_stems; the outputs are bit-identical either way. ``requant``: the
    requantization of convs, dense layers and Adds, "fixed" (the numerics contract) or
    "float32" (onnxruntime's float32 arithmetic, for QDQ models: QLinearConv's,
    QLinearAdd's, QLinearAveragePool's and QLinearGlobalAveragePool's; convs with a fused
    residual add stay "fixed", see op_lowering._conv_step).
    ``concat_copies`` (QDQ models): a concat input at other QParams than the concat's is
    requantized into its slice by a "requantize" step (ORT's QLinearConcat table), see
    placement.place; otherwise every input is written in place at the concat's shared scale."""
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
    placements = place(graph, device, device_tensors, dense_sources, qparams, copies)
    for name, source in dense_sources.items():
        placements[name] = placements[source]

    cx = LoweringContext(graph, qparams, placements, dense_sources, requant)
    steps: list[Step] = []
    for node in device:
        if isinstance(node, ir.Concat):  # its inputs are all computed by now
            new = [requantize_step(concat, name, copy, cx)
                   for concat, name, copy in copies or [] if concat is node]
        else:
            step = lower_node(node, cx)
            new = [] if step is None else [step]
        for step in new:
            q = qparams[node.output]  # for dequantizing traced values
            step.attrs["output_qparams"] = [float(q.scale), int(q.zero_point)]
            steps.append(step)

    for step in steps:
        if placements[step.output].root != step.output and \
                not step_kind(step.op).writes_at_offset:
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
        head=[host_node(n) for n in head],
        device_inputs=[spec(n) for n in device_inputs],
        steps=steps,
        device_outputs=[spec(n) for n in device_outputs],
        tail=[host_node(n) for n in tail],
        placements=placements)
    if stem.SPACE_TO_DEPTH if space_to_depth is None else space_to_depth:
        stem.space_to_depth_stems(lowered)
    return lowered
