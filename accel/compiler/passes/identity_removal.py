"""Identity removal: Identity, inference-time Dropout and same-type Cast nodes disappear, their
readers reading the input instead; so do 1x1 stride-1 unpadded pools (torchvision's
AdaptiveAvgPool2d((7, 7)) on a 7x7 input exports as one).

Unsafe only for a Dropout in training mode (the frontend refuses those). An Identity between
a graph input and a graph output stays (the output needs a producer).
"""

from __future__ import annotations

from .. import ir


def _is_identity(node: ir.Node) -> bool:
    if isinstance(node, ir.Identity):
        return True
    return (isinstance(node, ir.Pool) and not node.is_global and node.kernel == (1, 1)
            and node.strides == (1, 1) and not any(node.pads))


def match(graph: ir.Graph) -> list[ir.Node]:
    return [n for n in graph.nodes if _is_identity(n) and graph.can_bypass(n, n.x)]


def apply(graph: ir.Graph, node: ir.Node) -> None:
    graph.bypass(node, node.x)
