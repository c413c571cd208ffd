"""Dead code elimination: nodes whose output nothing reads (a graph output counts as read),
and tensors nothing refers to, go.

Unsafe never: a node without readers cannot change the outputs (nodes have no side effects).
"""

from __future__ import annotations

from .. import ir


def match(graph: ir.Graph) -> list[ir.Node]:
    used = set(graph.outputs)
    for node in graph.nodes:
        used.update(node.input_names())
    dead = [n for n in graph.nodes if n.output not in used]
    if not dead:
        referenced = set(graph.inputs) | used | {n.output for n in graph.nodes}
        if any(name not in referenced for name in graph.tensors):
            return ["tensors"]
    return dead


def apply(graph: ir.Graph, m) -> None:
    if m == "tensors":
        graph.remove_unused()
    else:
        graph.nodes.remove(m)
