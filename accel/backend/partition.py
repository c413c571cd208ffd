"""What runs where: the host's float head (Transpose/Reshape of a graph input, e.g.
tf2onnx's NHWC -> NCHW), the device, and the host's float tail (Softmax/Reshape/Transpose
after the last device op, on dequantized outputs)."""

from __future__ import annotations

from ..compiler import ir
from ..compiler.errors import CompileError
from .lowered import HostNode

TAIL_OPS = (ir.Softmax, ir.Reshape, ir.Transpose, ir.Identity)


def partition(graph: ir.Graph) -> tuple[list[ir.Node], list[ir.Node], list[ir.Node]]:
    """(host head, device, host tail) nodes of ``graph``, each in graph order."""
    consumers = graph.consumers()
    head: list[ir.Node] = []
    head_outputs = set(graph.inputs)
    for node in graph.nodes:
        if isinstance(node, (ir.Transpose, ir.Reshape)) and node.x in head_outputs:
            head.append(node)
            head_outputs.add(node.output)
    tail_set: set[str] = set()
    for node in reversed(graph.nodes):
        if node in head or not isinstance(node, TAIL_OPS):
            continue
        if all(user.output in tail_set for user in consumers.get(node.output, [])):
            tail_set.add(node.output)
    tail = [n for n in graph.nodes if n.output in tail_set]
    device = [n for n in graph.nodes if n not in head and n.output not in tail_set]
    return head, device, tail


def host_node(node: ir.Node) -> HostNode:
    """The HostNode (accel.backend.lowered.HOST_OPS) of a head or tail node."""
    if isinstance(node, ir.Softmax):
        return HostNode("softmax", node.x, node.output, {"axis": node.axis})
    if isinstance(node, ir.Reshape):
        return HostNode("reshape", node.x, node.output, {"shape": list(node.shape)})
    if isinstance(node, ir.Transpose):
        return HostNode("transpose", node.x, node.output, {"perm": list(node.perm)})
    if isinstance(node, ir.Identity):  # a graph output that is also read on the device
        return HostNode("identity", node.x, node.output, {})
    raise CompileError(f"{node.op} {node.name!r} cannot run on the host")


def device_reshapes(graph: ir.Graph) -> set[str]:
    """Outputs of the Reshapes the device does not execute (they alias or feed a Dense)."""
    _, device, _ = partition(graph)
    return {n.output for n in device if isinstance(n, ir.Reshape)}
