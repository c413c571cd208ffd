"""Dense: Gemm with a constant B (and C), and MatMul by a constant matrix, become Dense
([out, in] weight, optional bias); a following Add of a constant vector (tf2onnx's
MatMul + Add) folds into the Dense bias.

Unsafe when A is transposed (transA=1: not matched), when B is not constant (not matched),
or when C broadcasts along rows rather than columns (not matched). alpha and beta fold into
weight and bias, which changes float rounding in the last bit.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import ir


def _bias_vector(value: np.ndarray, out_features: int) -> np.ndarray | None:
    if value.size == 1 or (value.ndim >= 1 and value.shape[-1] == out_features
                           and value.size == out_features):
        return np.broadcast_to(value.reshape(-1), (out_features,)).astype(np.float32)
    return None


def _carry_quant(graph: ir.Graph, source: str, target: str, transposed: bool) -> None:
    """Keep a QDQ model's weight quantization on the rewritten (unscaled) constant."""
    quant = graph.tensors[source].quant
    if quant is not None:
        axis = quant.axis if quant.axis is None or not transposed else 1 - quant.axis
        graph.tensors[target].quant = dataclasses.replace(quant, axis=axis)


def match(graph: ir.Graph) -> list[tuple]:
    producers, users = graph.producers(), graph.consumers()
    matches, taken = [], set()
    for node in graph.nodes:
        if isinstance(node, ir.Gemm):
            b, c = graph.const(node.b), graph.const(node.c)
            out_features = graph.shape(node.output)[1]
            bias_ok = node.c is None or (c is not None and
                                         _bias_vector(c, out_features) is not None)
            if not node.trans_a and b is not None and len(graph.shape(node.a)) == 2 and bias_ok:
                matches.append(("gemm", node))
        elif isinstance(node, ir.MatMul):
            if graph.const(node.b) is not None and len(graph.shape(node.a)) == 2:
                matches.append(("matmul", node))
        elif isinstance(node, ir.Affine):
            dense = producers.get(node.x)
            if (isinstance(dense, ir.Dense) and id(dense) not in taken and node.scale is None
                    and node.axis == 1 and len(users[dense.output]) == 1
                    and dense.output not in graph.outputs and dense.clamp.is_identity
                    and (dense.bias is None or graph.const(dense.bias) is not None)):
                taken.add(id(dense))
                matches.append(("bias", dense, node))
    return matches


def apply(graph: ir.Graph, m: tuple) -> None:
    kind, node = m[0], m[1]
    if kind == "gemm":
        b = graph.const(node.b)
        weight = b if node.trans_b else b.T
        if node.alpha != 1.0:
            weight = weight * np.float32(node.alpha)
        bias = None
        if node.c is not None:
            vector = _bias_vector(graph.const(node.c), weight.shape[0]) * np.float32(node.beta)
            vector = vector.astype(np.float32)
            bias = graph.add_const(f"{node.name}.bias", vector)
        dense = ir.Dense(node.name, node.output, x=node.a, bias=bias,
                         weight=graph.add_const(f"{node.name}.weight",
                                                np.ascontiguousarray(weight, dtype=np.float32)))
        if node.alpha == 1.0:
            _carry_quant(graph, node.b, dense.weight, transposed=not node.trans_b)
        if bias is not None and node.beta == 1.0 and graph.shape(node.c) == (weight.shape[0],):
            _carry_quant(graph, node.c, bias, transposed=False)
        graph.nodes[graph.nodes.index(node)] = dense
    elif kind == "matmul":
        weight = np.ascontiguousarray(graph.const(node.b).T, dtype=np.float32)
        dense = ir.Dense(node.name, node.output, x=node.a,
                         weight=graph.add_const(f"{node.name}.weight", weight))
        _carry_quant(graph, node.b, dense.weight, transposed=True)
        graph.nodes[graph.nodes.index(node)] = dense
    else:
        affine = m[2]
        shift = graph.const(affine.shift)
        bias = shift if node.bias is None else graph.const(node.bias) + shift
        node.bias = graph.add_const(f"{node.name}.bias", bias.astype(np.float32))
        node.clamp = affine.clamp
        graph.take_output(node, affine)
