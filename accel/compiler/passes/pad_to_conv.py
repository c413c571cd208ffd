"""Pad to conv: a zero Pad that no reader absorbed (pad_fusion) becomes a 1x1 Conv with identity
weights and the Pad's padding, which the device runs: a conv pads with its input's zero point,
real 0. Exact in float, and in int8 too: a weight of 1 quantizes to 127 at scale 1/127, so the
conv's requantization multiplies by 127 / 127 and rounds nothing away. It costs C x C MACs per
pixel (a MaxPool over values that can be negative after Keras' ZeroPadding2D, for one).

Unsafe for a non-zero value (the padded pixels would be 0, not the value) and for Pads of
anything but the spatial dims of NCHW (neither is matched, nor made by the frontend).
"""

from __future__ import annotations

import numpy as np

from .. import ir


def match(graph: ir.Graph) -> list[ir.Pad]:
    return [n for n in graph.nodes if isinstance(n, ir.Pad) and n.value == 0
            and len(graph.shape(n.x)) == 4]


def apply(graph: ir.Graph, pad: ir.Pad) -> None:
    channels = graph.shape(pad.x)[1]
    weight = np.eye(channels, dtype=np.float32).reshape(channels, channels, 1, 1)
    conv = ir.Conv(pad.name, pad.output, x=pad.x,
                   weight=graph.add_const(f"{pad.name}.identity", weight), pads=pad.pads)
    graph.nodes[graph.nodes.index(pad)] = conv
