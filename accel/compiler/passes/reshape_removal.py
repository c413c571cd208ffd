"""Reshape removal: a Reshape (what Flatten/Squeeze/Unsqueeze become) goes where it is a
layout no-op:
- its output shape equals its input shape;
- it flattens [N, C, 1, 1] to [N, C] for Dense readers only (Dense flattens its input
  anyway, and with H = W = 1 the NCHW and NHWC orders agree);
- two Reshapes in a row become one.

Unsafe for a flatten of [N, C, H, W] with H*W > 1 (VGG-16's 512x7x7): in the NHWC device layout
that is a transpose, so it is not removed here (the scheduler permutes fc6's weights or
transposes). A Reshape whose output is a graph output keeps it.
"""

from __future__ import annotations

import math

from .. import ir


def _squeezes_spatial(graph: ir.Graph, node: ir.Reshape) -> bool:
    shape = graph.shape(node.x)
    return (len(shape) >= 2 and all(d == 1 for d in shape[2:])
            and tuple(node.shape) == (shape[0], math.prod(shape[1:])))


def match(graph: ir.Graph) -> list[tuple]:
    producers, users = graph.producers(), graph.consumers()
    matches, taken = [], set()
    for node in graph.nodes:
        if not isinstance(node, ir.Reshape) or id(node) in taken:
            continue
        readers = users.get(node.output, [])
        if graph.shape(node.x) == tuple(node.shape):
            if graph.can_bypass(node, node.x):
                matches.append(("identity", node))
                taken.add(id(node))
        elif (readers and node.output not in graph.outputs
              and all(isinstance(r, ir.Dense) for r in readers) and _squeezes_spatial(graph, node)):
            matches.append(("dense", node))
            taken.add(id(node))
        else:
            inner = producers.get(node.x)
            if (isinstance(inner, ir.Reshape) and id(inner) not in taken
                    and len(users[inner.output]) == 1 and inner.output not in graph.outputs):
                matches.append(("chain", inner, node))
                taken.update((id(inner), id(node)))
    return matches


def apply(graph: ir.Graph, m: tuple) -> None:
    kind, node = m[0], m[1]
    if kind == "identity":
        graph.bypass(node, node.x)
    elif kind == "dense":
        graph.nodes.remove(node)
        graph.replace_uses(node.output, node.x)
        del graph.tensors[node.output]
    else:
        outer = m[2]
        outer.x = node.x
        graph.nodes.remove(node)
        del graph.tensors[node.output]
