"""QDQ annotation: the QuantizeLinear/DequantizeLinear nodes of a QDQ model (onnxruntime's
``quantize_static``) become quantization parameters on the float tensors they quantize.

- DequantizeLinear of a constant (weights, int32 biases) becomes the float constant
  (q - zero_point) * scale, annotated with scale, zero point, integer type and axis.
- A QuantizeLinear -> DequantizeLinear pair on an activation goes; the activation is annotated
  with the pair's scale and zero point (the quantizer uses them instead of calibrating).

Runs first: constant folding would fold the weight DequantizeLinears without annotating them.
Unsafe for float semantics: removing a pair removes a rounding step, and onnxruntime's
quantizer drops ReLUs whose clamp the zero point implies; interpret(..., fake_quant=True)
rounds annotated tensors and so keeps the QDQ model's behaviour. A Q whose output is read by
anything but matching DQs is left alone (and later refused as an unsupported op).
"""

from __future__ import annotations

import numpy as np

from .. import ir
from ..interpret import dequantize


def _params(graph: ir.Graph, node) -> tuple[np.ndarray, np.ndarray]:
    scale = graph.const(node.scale)
    if node.zero_point is None:
        return scale, np.zeros((), "uint8")
    return scale, graph.const(node.zero_point)


def _quant(graph: ir.Graph, node, dtype: str) -> ir.QuantParams:
    scale, zero_point = _params(graph, node)
    per_channel = scale.size > 1
    if per_channel:
        scale, zero_point = scale.astype(np.float32), zero_point.astype(np.int64)
    else:
        scale, zero_point = float(scale.reshape(-1)[0]), int(zero_point.reshape(-1)[0])
    return ir.QuantParams(scale=scale, zero_point=zero_point,
                          dtype=dtype, axis=node.axis if per_channel else None)


def _same(graph: ir.Graph, a, b) -> bool:
    (sa, za), (sb, zb) = _params(graph, a), _params(graph, b)
    return (a.axis == b.axis or sa.size == 1) and np.array_equal(sa, sb) and np.array_equal(za, zb)


def match(graph: ir.Graph) -> list[tuple]:
    users = graph.consumers()
    matches = []
    for node in graph.nodes:
        if isinstance(node, ir.Dequantize) and graph.tensors[node.x].is_const:
            matches.append(("constant", node))
        elif isinstance(node, ir.Quantize) and not graph.tensors[node.x].is_const:
            readers = users.get(node.output, [])
            pairs = all(isinstance(r, ir.Dequantize) and _same(graph, node, r) for r in readers)
            if readers and node.output not in graph.outputs and pairs:
                matches.append(("pair", node, readers))
    return matches


def apply(graph: ir.Graph, m: tuple) -> None:
    if m[0] == "constant":
        dq = m[1]
        q = graph.const(dq.x)
        scale, zero_point = _params(graph, dq)
        tensor = graph.tensors[dq.output]
        tensor.data = dequantize(q, scale, zero_point, dq.axis if scale.size > 1 else None)
        tensor.quant = _quant(graph, dq, str(q.dtype))
        graph.nodes.remove(dq)
        return
    _, q, readers = m
    quant = _quant(graph, q, graph.tensors[q.output].dtype)
    if graph.tensors[q.x].quant is None:
        graph.tensors[q.x].quant = quant
    for dq in readers:
        if dq.output in graph.outputs:  # keep the output's name: an Identity, removed later
            graph.nodes[graph.nodes.index(dq)] = ir.Identity(dq.name, dq.output, x=q.x,
                                                             origin="DequantizeLinear")
            graph.tensors[dq.output].quant = quant
        else:
            graph.nodes.remove(dq)
            graph.replace_uses(dq.output, q.x)
            del graph.tensors[dq.output]
    graph.nodes.remove(q)
    del graph.tensors[q.output]


def ort_keeps_int8(graph: ir.Graph, node: ir.Node) -> bool:
    """Whether onnxruntime on x86 runs ``node`` of an annotated QDQ model in float
    (DequantizeLinear -> float op -> QuantizeLinear) instead of a fused QLinear kernel.

    Its QDQ selectors (qdq_selectors.cc) fuse int8 activations only on ARM or with the session
    option session.qdqisint8allowed=1; on x86 a node is fused only where every activation it
    touches was turned into uint8 by QDQS8ToU8Transformer (qdq_s8_to_u8.cc), which does that
    to a Q -> DQ pair only where the Q has a single output edge. EnsureUniqueDQForNodeUnit
    first gives every reader of a tensor its own DQ (a graph output its own as well), so a
    tensor stays int8 where readers + graph output > 1: a ResNet block's input (first conv
    and shortcut) and the convs and Adds touching it. uint8 models are fused throughout."""
    names = [n for n in node.input_names() if not graph.tensors[n].is_const] + [node.output]
    quants = [graph.tensors[n].quant for n in names]
    if not any(q is not None and q.dtype == "int8" for q in quants):
        return False
    users = graph.consumers()
    return any(len(users.get(n, [])) + (n in graph.outputs) != 1 for n in names)
