"""Residual fusion: Add(conv_out, other) (with its clamp, e.g. a fused ReLU) becomes the
conv's epilogue: Conv(..., residual=other, clamp=add.clamp). The conv moves to the Add's
place in the node order, after ``other`` is computed.

Unsafe when the conv's output is also read elsewhere (not matched), when the conv already has
a clamp (the clamp would move after the add: not matched) or a residual, and when both Add
inputs are the same tensor. In int8, the residual is rescaled to the conv's output scale in
the epilogue, so rounding differs from a separate Add by at most one step.

Not matched either when the conv's output carries its own scale from a QDQ model's Q/DQ
pair: onnxruntime rounds that conv to int8 at this scale and then runs a separate QLinearAdd,
which the backend reproduces bit for bit only unfused (eltwise.cl's float32 add).
"""

from __future__ import annotations

from .. import ir


def _fusable(graph: ir.Graph, conv, users, other: str) -> bool:
    # grouped (depthwise) convs have no fused residual add
    return (isinstance(conv, ir.Conv) and conv.groups == 1 and conv.residual is None
            and conv.clamp.is_identity
            and len(users[conv.output]) == 1 and conv.output not in graph.outputs
            and conv.output != other and graph.tensors[conv.output].quant is None)


def match(graph: ir.Graph) -> list[tuple[ir.Conv, ir.Add, str]]:
    producers, users = graph.producers(), graph.consumers()
    matches = []
    for add in graph.nodes:
        if not isinstance(add, ir.Add):
            continue
        for mine, other in ((add.a, add.b), (add.b, add.a)):  # prefer the first input
            conv = producers.get(mine)
            if _fusable(graph, conv, users, other):
                matches.append((conv, add, other))
                break
    return matches


def apply(graph: ir.Graph, m: tuple[ir.Conv, ir.Add, str]) -> None:
    conv, add, other = m
    conv.residual = other
    conv.clamp = add.clamp
    graph.nodes.remove(conv)
    graph.nodes.insert(graph.nodes.index(add), conv)
    graph.take_output(conv, add)
