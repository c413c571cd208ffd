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
    # float32 as onnxruntime's BatchNormalization computes them (a QDQ model's affine
    # tabulates ORT's arithmetic exactly): 1 / sqrt(var + eps), times gamma; beta - mean * s.
    f32 = np.float32
    inv_std = f32(1) / np.sqrt(graph.const(bn.var).astype(f32) + f32(bn.eps))
    scale = (inv_std * graph.const(bn.gamma).astype(f32)).astype(f32)
    shift = (graph.const(bn.beta).astype(f32) - graph.const(bn.mean).astype(f32) * scale)
    affine = ir.Affine(bn.name, bn.output, x=bn.x, axis=1,
                       scale=graph.add_const(f"{bn.name}.scale", scale.astype(np.float32)),
                       shift=graph.add_const(f"{bn.name}.shift", shift.astype(np.float32)))
    graph.nodes[graph.nodes.index(bn)] = affine
