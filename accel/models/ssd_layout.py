"""SSD-VGG300's heads and output names (the seed's, COMPAT.md): what the graph builder
(ssd.py) and the host postprocessing share, without onnx."""

from __future__ import annotations

NUM_CLASSES = 21  # 20 Pascal VOC classes + background (class 0)
# (block name, feature map size, anchors per cell); the order of the seed's outputs
HEADS = (("block4", 38, 4), ("block7", 19, 6), ("block8", 10, 6),
         ("block9", 5, 6), ("block10", 3, 4), ("block11", 1, 4))


def head_names(block: str) -> tuple[str, str]:
    """(class logits, box offsets) output names of one head."""
    return f"ssd_300_vgg/{block}_box/Reshape_1:0", f"ssd_300_vgg/{block}_box/Reshape:0"


def output_names() -> list[str]:
    return [name for block, _, _ in HEADS for name in head_names(block)]
