"""Pad fusion: an explicit Pad (tf2onnx writes Keras' ZeroPadding2D so) becomes the padding of
the Conv or pool that reads it.

- Conv: zero padding is what conv padding means; always fused when the value is 0.
- AveragePool: fused as count_include_pad=1 padding when the pool has no padding of its own
  (or already counts it), value 0.
- MaxPool: a pool pads with -inf; zero padding is the same only when the input is never
  negative and every window keeps at least one real element (pad < kernel). Never negative:
  its producer clamps at >= 0 (a fused ReLU), or a QDQ model quantizes it with the zero point
  at the integer type's minimum (onnxruntime's quantizer drops such ReLUs: Keras'
  ZeroPadding2D before ResNet's and DenseNet's stem pool), the Pad's output at the same
  scale. Fused only then, or when the value is -inf.

Unsafe otherwise (a non-zero value, or a MaxPool over values that can be negative): not
matched (pad_to_conv takes those zero Pads). Every reader of the Pad must accept it, or none
is rewritten.
"""

from __future__ import annotations

import math

from .. import ir


QUANT_MIN = {"int8": -128, "uint8": 0}


def _nonnegative(graph: ir.Graph, producers, pad: ir.Pad) -> bool:
    node = producers.get(pad.x)
    if node is not None and hasattr(node, "clamp") and node.clamp.lo >= 0:
        return True
    quant, out = graph.tensors[pad.x].quant, graph.tensors[pad.output].quant
    return (quant is not None and quant.axis is None
            and quant.zero_point == QUANT_MIN.get(quant.dtype)
            and (out is None or (out.axis is None and out == quant)))


def _accepts(graph: ir.Graph, producers, pad: ir.Pad, reader: ir.Node) -> bool:
    if isinstance(reader, ir.Conv):
        return pad.value == 0 and reader.x == pad.output and reader.residual != pad.output
    if isinstance(reader, ir.Pool) and not reader.is_global:
        if reader.kind == "avg":
            return pad.value == 0 and (reader.count_include_pad or not any(reader.pads))
        total = [a + b for a, b in zip(reader.pads, pad.pads)]
        fits = all(p < reader.kernel[i % 2] for i, p in enumerate(total))
        return fits and (pad.value == -math.inf or
                         (pad.value == 0 and _nonnegative(graph, producers, pad)))
    return False


def match(graph: ir.Graph) -> list[ir.Pad]:
    producers, users = graph.producers(), graph.consumers()
    return [n for n in graph.nodes if isinstance(n, ir.Pad) and n.output not in graph.outputs
            and users.get(n.output)
            and all(_accepts(graph, producers, n, r) for r in users[n.output])]


def apply(graph: ir.Graph, pad: ir.Pad) -> None:
    for reader in graph.consumers()[pad.output]:
        reader.pads = tuple(a + b for a, b in zip(reader.pads, pad.pads))
        if isinstance(reader, ir.Pool) and reader.kind == "avg":
            reader.count_include_pad = True
        reader.replace_input(pad.output, pad.x)
    graph.nodes.remove(pad)
    del graph.tensors[pad.output]
