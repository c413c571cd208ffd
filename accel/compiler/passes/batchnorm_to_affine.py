"""BatchNorm to Affine: a BatchNormalization that could not fold into a conv (DenseNet's BN
after a Concat) becomes a per-channel Affine: x * s + (beta - mean * s).

Unsafe never in float (the same arithmetic, rounded once); it needs constant statistics.
"""

from __future__ import annotations

import numpy as np

from .. import ir


def match(graph: ir.Graph) -> list[ir.BatchNorm]:
    return [n for n in graph.nodes if isinstance(n, ir.BatchNorm)
            and all(graph.const(i) is not None for i in (n.gamma, n.beta, n.mean, n.var))]


def apply(graph: ir.Graph, bn: ir.BatchNorm) -> None:
    scale = graph.const(bn.gamma) / np.sqrt(graph.const(bn.var).astype(np.float64) + bn.eps)
    shift = graph.const(bn.beta) - graph.const(bn.mean) * scale
    affine = ir.Affine(bn.name, bn.output, x=bn.x, axis=1,
                       scale=graph.add_const(f"{bn.name}.scale", scale.astype(np.float32)),
                       shift=graph.add_const(f"{bn.name}.shift", shift.astype(np.float32)))
    graph.nodes[graph.nodes.index(bn)] = affine
