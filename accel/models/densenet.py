"""DenseNet-121 (Huang et al. 2017): dense blocks of 6/12/24/16 layers, growth rate 32,
bottleneck width 4 x growth (bn_size 4), transitions halving the channels (compression 0.5)
with 2x2 average pooling; BN-ReLU-Conv pre-activation order, ImageNet head with softmax.

Each dense layer concatenates all earlier features of its block (as torch.onnx exports it),
so the BatchNorm after a concat cannot fold into a convolution: the compiler keeps it as a
per-channel affine. Initializer names follow torchvision (``features.denseblock1.denselayer1.
norm1.weight``, ``classifier.weight``...).
"""

from __future__ import annotations

import numpy as np
import onnx

from ._graph import INPUT_NAME, INPUT_STD, Feature, GraphBuilder

BLOCK_LAYERS = (6, 12, 24, 16)
GROWTH = 32
BN_SIZE = 4
STEM_CHANNELS = 64


def _dense_layer(g: GraphBuilder, features: list[Feature], prefix: str) -> Feature:
    x = g.concat(features, f"{prefix}.concat") if len(features) > 1 else features[0]
    y = g.relu(g.batchnorm(x, f"{prefix}.norm1"), f"{prefix}.relu1")
    y = g.conv(y, BN_SIZE * GROWTH, 1, f"{prefix}.conv1")
    y = g.relu(g.batchnorm(y, f"{prefix}.norm2"), f"{prefix}.relu2")
    return g.conv(y, GROWTH, 3, f"{prefix}.conv2")


def build_densenet121(seed: int, batch: int = 1) -> onnx.ModelProto:
    g = GraphBuilder(seed, batch)
    x = Feature(INPUT_NAME, 3, np.full(3, INPUT_STD ** 2))
    x = g.conv(x, STEM_CHANNELS, 7, "features.conv0", stride=2, pad=3)
    x = g.relu(g.batchnorm(x, "features.norm0"), "features.relu0")
    x = g.maxpool(x, 3, 2, "features.pool0", pads=[1, 1, 1, 1])
    for b, layers in enumerate(BLOCK_LAYERS):
        features = [x]
        for i in range(layers):
            features.append(_dense_layer(g, features,
                                         f"features.denseblock{b + 1}.denselayer{i + 1}"))
        x = g.concat(features, f"features.denseblock{b + 1}.concat")
        if b + 1 < len(BLOCK_LAYERS):
            prefix = f"features.transition{b + 1}"
            x = g.relu(g.batchnorm(x, f"{prefix}.norm"), f"{prefix}.relu")
            x = g.conv(x, x.channels // 2, 1, f"{prefix}.conv")
            x = g.avgpool(x, 2, 2, f"{prefix}.pool")
    x = g.relu(g.batchnorm(x, "features.norm5"), "features.relu5")
    logits = g.classifier(x, 1000, "classifier")
    output = "classifier/densenet121/predictions/Softmax:0"
    g.op("Softmax", [logits], "classifier/densenet121/predictions/Softmax", output=output, axis=1)
    return g.model("densenet121", [3, 224, 224], [(output, [1000])])
