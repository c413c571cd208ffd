"""Model zoo: the five architectures as ONNX graphs with deterministic weights.

    model = accel.models.build("resnet50")                    # onnx.ModelProto, input "images"
    model = accel.models.build("vgg16", weights="vgg16.npz")  # arrays keyed by initializer name
    model = accel.models.build("ssd_vgg300", batch=8, input_layout="NHWC")
    model = accel.models.build("efficientnet_lite0", weights="pretrained")  # [pretrained] extra
    boxes = accel.models.ssd_postprocess(outputs)             # SSD-VGG300 detections

Deterministic weights are random (He-normal convs, BatchNorm with non-trivial statistics),
scaled for inputs preprocessed as COMPAT.md says (mean-subtracted pixels, std ~64): every
layer's activations stay O(1). With random weights and random-noise inputs the classifiers'
top-1 barely depends on the input (global pooling averages the noise away); compare logits
or probabilities, or use real photos, where top-1 matters.
"""

from __future__ import annotations

from .labels import imagenet_labels, label_set, voc_labels
from .postprocess import Detection, ssd_anchors, ssd_postprocess

_ZOO = ("MODEL_NAMES", "PRETRAINED_NAMES", "ALIASES", "build", "input_shape", "output_names",
        "canonical_name",
        "preprocessing")


def __getattr__(name: str):
    # the builders need onnx; labels and postprocessing (what serving uses) do not
    if name in _ZOO:
        from . import zoo
        return getattr(zoo, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MODEL_NAMES", "PRETRAINED_NAMES", "ALIASES", "build", "input_shape", "output_names",
           "canonical_name",
           "preprocessing",
           "Detection", "ssd_anchors", "ssd_postprocess",
           "imagenet_labels", "voc_labels", "label_set"]
