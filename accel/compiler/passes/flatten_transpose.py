"""Flatten transpose: tf2onnx's Transpose(NCHW -> NHWC) before the Flatten/Reshape that feeds a
classifier's first dense layer (Keras' Flatten works on NHWC: VGG-16's fc1) goes; the Dense
layers reading the flattened tensor get their weight columns permuted instead, so they read
the NCHW flatten, which the scheduler handles. In numbers:
dense(flatten(transpose(x, perm)), W) == dense(flatten(x), W'), W' = W's columns reordered.

Unsafe when the transpose moves the batch axis (perm[0] != 0), when the Transpose or the
Reshape has another reader or is a graph output, when the Reshape is not a flatten to
[N, rest], or when a reader is not a Dense with constant weights: none of these is matched.
A QDQ model's per-output-channel weight scales go with their rows unchanged.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .. import ir


def match(graph: ir.Graph) -> list[tuple[ir.Transpose, ir.Reshape, list[ir.Dense]]]:
    producers, users = graph.producers(), graph.consumers()
    matches = []
    for reshape in graph.nodes:
        if not isinstance(reshape, ir.Reshape) or reshape.output in graph.outputs:
            continue
        transpose = producers.get(reshape.x)
        readers = users.get(reshape.output, [])
        if (not isinstance(transpose, ir.Transpose) or transpose.perm[:1] != (0,)
                or len(users[transpose.output]) != 1 or transpose.output in graph.outputs):
            continue
        shape = graph.shape(transpose.output)
        if tuple(reshape.shape) != (shape[0], math.prod(shape[1:])):
            continue
        if readers and all(isinstance(r, ir.Dense) and r.x == reshape.output
                           and graph.const(r.weight) is not None for r in readers):
            matches.append((transpose, reshape, readers))
    return matches


def apply(graph: ir.Graph, m: tuple[ir.Transpose, ir.Reshape, list[ir.Dense]]) -> None:
    transpose, reshape, readers = m
    shape = graph.shape(transpose.output)
    # axis d of the transpose's input is axis perm.index(d) of its output
    order = [0] + [transpose.perm.index(d) for d in range(1, len(shape))]
    for dense in readers:
        weight = graph.const(dense.weight)
        out_features = weight.shape[0]
        permuted = weight.reshape(out_features, *shape[1:]).transpose(order)
        name = graph.add_const(f"{dense.name}.weight_nchw",
                               np.ascontiguousarray(permuted.reshape(out_features, -1)))
        quant = graph.tensors[dense.weight].quant
        if quant is not None:  # per output row: the rows stay where they are
            graph.tensors[name].quant = dataclasses.replace(quant)
        dense.weight = name
    reshape.x = transpose.x
    graph.nodes.remove(transpose)
    del graph.tensors[transpose.output]
