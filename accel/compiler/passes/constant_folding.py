"""Constant folding: a node whose inputs are all constants becomes a constant.

Unsafe when a folded value would be much larger than its inputs (a broadcast), which costs
memory, and where a graph output would become a constant (left alone: a model must compute
its outputs). Results are computed by the float interpreter, so folded float arithmetic may
differ from onnxruntime's in the last bit.
"""

from __future__ import annotations

from .. import ir
from ..interpret import evaluate_node


def match(graph: ir.Graph) -> list[ir.Node]:
    return [node for node in graph.nodes
            if node.input_names() and node.output not in graph.outputs
            and all(graph.tensors[n].is_const for n in node.input_names())]


def apply(graph: ir.Graph, node: ir.Node) -> None:
    env = {n: graph.tensors[n].data for n in node.input_names()}
    graph.tensors[node.output].data = evaluate_node(node, graph, env)
    graph.nodes.remove(node)
