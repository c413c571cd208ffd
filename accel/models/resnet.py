"""ResNet v1 (He et al. 2015) with bottleneck blocks, ImageNet head with softmax.

The stride of a downsampling block sits on its 3x3 convolution (the torchvision layout, often
called "v1.5"), not on the first 1x1 as in the original Caffe model; the first block of
stages 2-4 downsamples. Initializer names follow torchvision (``layer1.0.conv1.weight``,
``layer1.0.bn1.running_mean``, ``fc.weight``...), so a torchvision state_dict saved as .npz
loads with ``build(name, weights=...)``.
"""

from __future__ import annotations

import numpy as np
import onnx

from ._graph import INPUT_NAME, INPUT_STD, Feature, GraphBuilder

STAGE_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet152": (3, 8, 36, 3)}
EXPANSION = 4
# Scale of the last BatchNorm of each residual branch: keeps the residual stream from growing
# too fast through 36 blocks (the same idea as zero-initialising it, without making it trivial).
BRANCH_GAMMA = 0.3


def _bottleneck(g: GraphBuilder, x: Feature, planes: int, stride: int, prefix: str) -> Feature:
    y = g.relu(g.batchnorm(g.conv(x, planes, 1, f"{prefix}.conv1"), f"{prefix}.bn1"),
               f"{prefix}.relu1")
    y = g.relu(g.batchnorm(g.conv(y, planes, 3, f"{prefix}.conv2", stride=stride),
                           f"{prefix}.bn2"), f"{prefix}.relu2")
    y = g.batchnorm(g.conv(y, planes * EXPANSION, 1, f"{prefix}.conv3"), f"{prefix}.bn3",
                    gamma_scale=BRANCH_GAMMA)
    if stride != 1 or x.channels != planes * EXPANSION:
        shortcut = g.batchnorm(g.conv(x, planes * EXPANSION, 1, f"{prefix}.downsample.0",
                                      stride=stride), f"{prefix}.downsample.1")
    else:
        shortcut = x
    out = g.relu(g.add(y, shortcut, f"{prefix}.add"), f"{prefix}.relu3")
    # The shortcut is mostly positive (a ReLU output) and the branch small, so the ReLU keeps
    # nearly all of the shortcut's power, not half of it.
    out.power = shortcut.power + y.power / 2 if shortcut is x else out.power
    return out


def build_resnet(name: str, seed: int, batch: int = 1) -> onnx.ModelProto:
    g = GraphBuilder(seed, batch)
    x = Feature(INPUT_NAME, 3, np.full(3, INPUT_STD ** 2))
    x = g.relu(g.batchnorm(g.conv(x, 64, 7, "conv1", stride=2, pad=3), "bn1"), "relu")
    x = g.maxpool(x, 3, 2, "maxpool", pads=[1, 1, 1, 1])
    for stage, blocks in enumerate(STAGE_BLOCKS[name]):
        planes = 64 * 2 ** stage
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _bottleneck(g, x, planes, stride, f"layer{stage + 1}.{block}")
    logits = g.classifier(x, 1000, "fc")
    depth = name.removeprefix("resnet")
    output = f"classifier/resnet_v1_{depth}/predictions/Softmax:0"
    g.op("Softmax", [logits], f"classifier/resnet_v1_{depth}/predictions/Softmax",
         output=output, axis=1)
    return g.model(name, [3, 224, 224], [(output, [1000])])
