"""VGG-16 (Simonyan & Zisserman 2014, configuration D): 13 3x3 convolutions with bias and
ReLU, five 2x2 max pools, fc6/fc7 (4096, ReLU) and fc8 (1000) as Flatten + Gemm, torch.onnx
style. Returns logits, like the seed (``classifier/vgg_16/fc8/squeezed:0``). Initializer names
follow torchvision (``features.0.weight`` ... ``classifier.6.bias``).
"""

from __future__ import annotations

import numpy as np
import onnx

from ._graph import INPUT_NAME, INPUT_STD, Feature, GraphBuilder

# (output channels per conv) per stage; a max pool ends every stage.
CONFIG_D = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
OUTPUT = "classifier/vgg_16/fc8/squeezed:0"


def vgg_features(g: GraphBuilder, x: Feature, stages=CONFIG_D, *, torch_names: bool = True,
                 last_pool: bool = True, pool_pads: dict[int, list[int]] | None = None
                 ) -> tuple[Feature, list[Feature]]:
    """The convolutional trunk; returns the output and each stage's last ReLU output."""
    index = 0  # torchvision's position in nn.Sequential
    stage_outputs = []
    for s, widths in enumerate(stages):
        for i, width in enumerate(widths):
            name = f"features.{index}" if torch_names else f"conv{s + 1}_{i + 1}"
            x = g.conv(x, width, 3, name, bias=True,
                       input_std=INPUT_STD if index == 0 else None)
            x = g.relu(x, f"{name}.relu")
            index += 2
        stage_outputs.append(x)
        if s + 1 < len(stages) or last_pool:
            name = f"features.{index}" if torch_names else f"pool{s + 1}"
            pads = (pool_pads or {}).get(s, [0, 0, 0, 0])
            x = g.maxpool(x, 2, 2, name, pads=pads)
            x.power = x.power / 1.5  # 2x2 windows: a smaller gain than 3x3
            index += 1
    return x, stage_outputs


def build_vgg16(seed: int, batch: int = 1) -> onnx.ModelProto:
    g = GraphBuilder(seed, batch)
    x, _ = vgg_features(g, Feature(INPUT_NAME, 3, np.full(3, INPUT_STD ** 2)))
    flat = g.op("Flatten", [x.name], "flatten", axis=1)
    features = 512 * 7 * 7
    power = float(np.mean(x.power))
    for i, (index, width) in enumerate(((0, 4096), (3, 4096), (6, 1000))):
        last = width == 1000
        # He-normal for the hidden layers; the last one aims at logits of std ~2.5
        std = 2.5 / np.sqrt(features * power) if last else np.sqrt(2.0 / features)
        w = g.const(f"classifier.{index}.weight", g.normal((width, features), std))
        b = g.const(f"classifier.{index}.bias", g.normal((width,), 0.01))
        name = f"classifier.{index}"
        flat = g.op("Gemm", [flat, w, b], name, output=OUTPUT if last else None, transB=1)
        if not last:
            flat = g.op("Relu", [flat], f"{name}.relu")
            power = 2.0 * power / 2.0
        features = width
    return g.model("vgg16", [3, 224, 224], [(OUTPUT, [1000])])
