"""Model zoo: the five architectures as ONNX graphs with deterministic weights.

    model = accel.models.build("resnet50")                    # onnx.ModelProto, input "images"
    model = accel.models.build("vgg16", weights="vgg16.npz")  # arrays keyed by initializer name
    model = accel.models.build("ssd_vgg300", batch=8, input_layout="NHWC")
    boxes = accel.models.ssd_postprocess(outputs)             # SSD-VGG300 detections

Deterministic weights are random (He-normal convs, BatchNorm with non-trivial statistics),
scaled for inputs preprocessed as COMPAT.md says (mean-subtracted pixels, std ~64): every
layer's activations stay O(1). With random weights and random-noise inputs the classifiers'
top-1 barely depends on the input (global pooling averages the noise away); compare logits
or probabilities, or use real photos, where top-1 matters.
"""

from __future__ import annotations

from .zoo import MODEL_NAMES, build, input_shape, output_names
from .postprocess import Detection, ssd_anchors, ssd_postprocess

__all__ = ["MODEL_NAMES", "build", "input_shape", "output_names",
           "Detection", "ssd_anchors", "ssd_postprocess"]
