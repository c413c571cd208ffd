"""BatchNorm folding: Conv -> BatchNormalization becomes one Conv with per-output-channel
scaled weights and a bias: w' = w * s, b' = (b - mean) * s + beta, s = gamma / sqrt(var + eps).

Unsafe when the conv's output is also read by another node (it would lose its un-normalised
value: not matched), when the conv already has an epilogue (clamp or residual: not matched),
or when its weights are not constant. A tiny running variance makes s huge for that channel,
which per-channel weight quantization absorbs but per-tensor would not.
"""

from __future__ import annotations

import numpy as np

from .. import ir


def match(graph: ir.Graph) -> list[tuple[ir.Conv, ir.BatchNorm]]:
    producers, users = graph.producers(), graph.consumers()
    matches = []
    for bn in graph.nodes:
        if not isinstance(bn, ir.BatchNorm):
            continue
        conv = producers.get(bn.x)
        if (isinstance(conv, ir.Conv) and len(users[conv.output]) == 1
                and conv.output not in graph.outputs and conv.clamp.is_identity
                and conv.residual is None and graph.const(conv.weight) is not None
                and (conv.bias is None or graph.const(conv.bias) is not None)
                and all(graph.const(n) is not None for n in (bn.gamma, bn.beta, bn.mean, bn.var))):
            matches.append((conv, bn))
    return matches


def apply(graph: ir.Graph, m: tuple[ir.Conv, ir.BatchNorm]) -> None:
    conv, bn = m
    weight = graph.const(conv.weight).astype(np.float64)
    bias = np.zeros(weight.shape[0]) if conv.bias is None else graph.const(conv.bias)
    scale = graph.const(bn.gamma) / np.sqrt(graph.const(bn.var).astype(np.float64) + bn.eps)
    new_weight = (weight * scale[:, None, None, None]).astype(np.float32)
    new_bias = ((bias - graph.const(bn.mean)) * scale + graph.const(bn.beta)).astype(np.float32)
    # new constants: the old weights may be shared with another conv
    conv.weight = graph.add_const(f"{conv.name}.weight_bn", new_weight)
    conv.bias = graph.add_const(f"{conv.name}.bias_bn", new_bias)
    graph.take_output(conv, bn)
