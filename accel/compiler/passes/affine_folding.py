"""Affine folding: a per-channel Affine (x * s + t, from an unfolded BatchNorm or a Mul/Add by
a constant, as tf2onnx writes batch norm) folds into the Conv or Dense that produces its input
(w' = w * s per output channel, b' = b * s + t), and two Affines in a row become one.

Unsafe when the producer's output is also read elsewhere, when the producer already has a
clamp or a residual (the affine would have to act after them), or when the affine is not
along the channel axis (none of these are matched). A scale of 0 makes a weight row 0, which
is exact but leaves per-channel quantization a zero range to handle.
"""

from __future__ import annotations

import numpy as np

from .. import ir


def _vectors(graph: ir.Graph, affine: ir.Affine, channels: int) -> tuple[np.ndarray, np.ndarray]:
    scale, shift = graph.const(affine.scale), graph.const(affine.shift)
    scale = np.ones(channels, np.float32) if scale is None else scale
    shift = np.zeros(channels, np.float32) if shift is None else shift
    return scale.astype(np.float64), shift.astype(np.float64)


def _consts(graph: ir.Graph, *names) -> bool:
    return all(n is None or graph.const(n) is not None for n in names)


def match(graph: ir.Graph) -> list[tuple[ir.Node, ir.Affine]]:
    producers, users = graph.producers(), graph.consumers()
    matches, taken = [], set()
    for affine in graph.nodes:
        if not isinstance(affine, ir.Affine) or id(affine) in taken or affine.axis != 1:
            continue
        if not _consts(graph, affine.scale, affine.shift):
            continue
        producer = producers.get(affine.x)
        if producer is None or id(producer) in taken:
            continue
        if len(users[affine.x]) != 1 or affine.x in graph.outputs:
            continue
        ok = False
        if isinstance(producer, ir.Conv):
            ok = (producer.clamp.is_identity and producer.residual is None
                  and _consts(graph, producer.weight, producer.bias))
        elif isinstance(producer, ir.Dense):
            ok = producer.clamp.is_identity and _consts(graph, producer.weight, producer.bias)
        elif isinstance(producer, ir.Affine):
            ok = (producer.clamp.is_identity and producer.axis == 1
                  and _consts(graph, producer.scale, producer.shift))
        if ok:
            matches.append((producer, affine))
            taken.update((id(producer), id(affine)))
    return matches


def apply(graph: ir.Graph, m: tuple[ir.Node, ir.Affine]) -> None:
    producer, affine = m
    channels = graph.shape(affine.output)[1]
    scale, shift = _vectors(graph, affine, channels)
    if isinstance(producer, ir.Affine):
        s1, t1 = _vectors(graph, producer, channels)
        producer.scale = graph.add_const(f"{producer.name}.scale", (s1 * scale).astype(np.float32))
        producer.shift = graph.add_const(f"{producer.name}.shift",
                                         (t1 * scale + shift).astype(np.float32))
    else:
        weight = graph.const(producer.weight).astype(np.float64)
        bias = np.zeros(channels) if producer.bias is None else graph.const(producer.bias)
        weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
        producer.weight = graph.add_const(f"{producer.name}.weight_affine",
                                          weight.astype(np.float32))
        producer.bias = graph.add_const(f"{producer.name}.bias_affine",
                                        (bias * scale + shift).astype(np.float32))
    producer.clamp = affine.clamp
    graph.take_output(producer, affine)
