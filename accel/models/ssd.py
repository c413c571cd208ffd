"""SSD-VGG300 (Liu et al. 2016) for Pascal VOC (21 classes), as in the seed's ssd_300_vgg.

- VGG-16 trunk (conv1_1 .. conv5_3, with bias and ReLU); pool3 pads its bottom/right edge by
  one so 75 -> 38 (Caffe's ceil mode); pool5 is 3x3, stride 1, pad 1.
- conv4_3 is L2-normalised over channels with a learned per-channel scale (initialised to 20),
  written with standard ONNX ops: ReduceL2 -> Max(eps) -> Div -> Mul(scale). The compiler's
  frontend recognises the pattern as one L2Norm node.
- fc6: 3x3, dilation 6, 1024 channels; fc7: 1x1, 1024 channels.
- Extra layers 8-11: 1x1 reductions then 3x3 (stride 2 pad 1 for 8 and 9, valid for 10, 11).
- Six heads (3x3 convs) on block4, 7, 8, 9, 10, 11 with 4/6/6/6/4/4 anchors per cell; each
  output is transposed to NHWC and reshaped to [N, H, W, anchors, 21] (class logits,
  ``ssd_300_vgg/blockK_box/Reshape_1:0``) and [N, H, W, anchors, 4] (box offsets,
  ``.../Reshape:0``), the seed's tensor names (COMPAT.md).
"""

from __future__ import annotations

import numpy as np
import onnx

from ._graph import INPUT_NAME, INPUT_STD, Feature, GraphBuilder
from .ssd_layout import HEADS, NUM_CLASSES, head_names, output_names  # noqa: F401
from .vgg import CONFIG_D, vgg_features

L2NORM_SCALE = 20.0
L2NORM_EPS = 1e-12
EXTRAS = (("block8", 256, 512, 2, 1), ("block9", 128, 256, 2, 1),
          ("block10", 128, 256, 1, 0), ("block11", 128, 256, 1, 0))


def _l2norm(g: GraphBuilder, x: Feature, name: str) -> Feature:
    norm = g.op("ReduceL2", [x.name], f"{name}/norm", axes=[1], keepdims=1)
    norm = g.op("Max", [norm, g.const(f"{name}.eps", np.array(L2NORM_EPS))], f"{name}/max")
    unit = g.op("Div", [x.name, norm], f"{name}/div")
    scale = np.full((1, x.channels, 1, 1), L2NORM_SCALE, np.float32)
    out = g.op("Mul", [unit, g.const(f"{name}.scale", scale)], f"{name}/mul")
    return Feature(out, x.channels, np.full(x.channels, L2NORM_SCALE ** 2 / x.channels))


def _head(g: GraphBuilder, x: Feature, block: str, size: int, anchors: int
          ) -> list[tuple[str, list[int]]]:
    outputs = []
    for kind, depth, target_std, output in (("cls", NUM_CLASSES, 2.0, head_names(block)[0]),
                                            ("loc", 4, 0.5, head_names(block)[1])):
        name = f"{block}_box.{kind}"
        gain = target_std / np.sqrt(2.0 * float(np.mean(x.power)))
        y = g.conv(x, anchors * depth, 3, name, bias=True, gain=gain)
        y = g.op("Transpose", [y.name], f"{name}/transpose", perm=[0, 2, 3, 1])
        shape = [size, size, anchors, depth]
        g.op("Reshape", [y, g.const(f"{name}.shape", np.array([g.batch] + shape, np.int64))],
             f"{name}/reshape", output=output)
        outputs.append((output, shape))
    return outputs


def build_ssd_vgg300(seed: int, batch: int = 1) -> onnx.ModelProto:
    g = GraphBuilder(seed, batch)
    x = Feature(INPUT_NAME, 3, np.full(3, INPUT_STD ** 2))
    x, stages = vgg_features(g, x, CONFIG_D, torch_names=False, last_pool=False,
                             pool_pads={2: [0, 0, 1, 1]})
    sources = {"block4": _l2norm(g, stages[3], "conv4_3_norm")}
    x = g.maxpool(x, 3, 1, "pool5", pads=[1, 1, 1, 1])
    x.power = x.power / 3.0  # overlapping windows, stride 1: barely larger than the input
    x = g.relu(g.conv(x, 1024, 3, "fc6", dilation=6, bias=True), "fc6.relu")
    x = g.relu(g.conv(x, 1024, 1, "fc7", bias=True), "fc7.relu")
    sources["block7"] = x
    for block, reduce, width, stride, pad in EXTRAS:
        n = block.removeprefix("block")
        x = g.relu(g.conv(x, reduce, 1, f"conv{n}_1", bias=True), f"conv{n}_1.relu")
        x = g.relu(g.conv(x, width, 3, f"conv{n}_2", stride=stride, pad=pad, bias=True),
                   f"conv{n}_2.relu")
        sources[block] = x
    outputs = []
    for block, size, anchors in HEADS:
        outputs += _head(g, sources[block], block, size, anchors)
    return g.model("ssd_vgg300", [3, 300, 300], outputs)
