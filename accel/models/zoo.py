"""``build(name)``: the five architectures by name, with deterministic or user weights."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .. import preprocess
from . import efficientnet, ssd
from ._graph import INPUT_NAME, INPUT_STD
from .densenet import build_densenet121
from .resnet import build_resnet
from .ssd import build_ssd_vgg300
from .vgg import build_vgg16

_BUILDERS: dict[str, Callable[[int, int], onnx.ModelProto]] = {
    "resnet50": lambda seed, batch: build_resnet("resnet50", seed, batch),
    "resnet152": lambda seed, batch: build_resnet("resnet152", seed, batch),
    "densenet121": build_densenet121,
    "vgg16": build_vgg16,
    "ssd_vgg300": build_ssd_vgg300,
}
MODEL_NAMES = tuple(_BUILDERS)  # the seed's architectures, deterministic placeholder weights
# networks with trained weights from an optional extra (efficientnet.py: [pretrained])
PRETRAINED_NAMES = (efficientnet.NAME,)
PRETRAINED = "pretrained"  # build(..., weights=PRETRAINED): the packaged trained weights
# the seed's model names (azureml-accel-models' classes), accepted wherever a zoo name is
ALIASES = {
    "QuantizedResnet50": "resnet50",
    "QuantizedResnet152": "resnet152",
    "Densenet121": "densenet121",
    "QuantizedVgg16": "vgg16",
    "QuantizedSsdVgg": "ssd_vgg300",
}

_OUTPUTS = {
    "resnet50": ["classifier/resnet_v1_50/predictions/Softmax:0"],
    "resnet152": ["classifier/resnet_v1_152/predictions/Softmax:0"],
    "densenet121": ["classifier/densenet121/predictions/Softmax:0"],
    "vgg16": ["classifier/vgg_16/fc8/squeezed:0"],
    "ssd_vgg300": ssd.output_names(),
}


def canonical_name(name: str) -> str:
    """The zoo name ``name`` stands for: a zoo name or one of the seed's (ALIASES), in any
    case. ValueError for others."""
    if isinstance(name, str):
        known = {n.lower(): n for n in MODEL_NAMES + PRETRAINED_NAMES}
        known.update({alias.lower(): target for alias, target in ALIASES.items()})
        canonical = known.get(name.strip().lower())
        if canonical is not None:
            return canonical
    raise ValueError(f"unknown model {name!r}; known models: "
                     f"{', '.join(MODEL_NAMES + PRETRAINED_NAMES)} "
                     f"(or the seed's names: {', '.join(ALIASES)})")


def _check_name(name: str) -> str:
    return canonical_name(name)


def input_shape(name: str, *, batch: int = 1, input_layout: str = "NCHW"
                ) -> tuple[int, int, int, int]:
    """Input shape of a model: [N, 3, 224, 224] ([N, 3, 300, 300] for SSD), or [N, H, W, 3]
    for ``input_layout="NHWC"``."""
    name = _check_name(name)
    side = 300 if name == "ssd_vgg300" else 224
    return (batch, side, side, 3) if input_layout == "NHWC" else (batch, 3, side, side)


def output_names(name: str) -> list[str]:
    """The model's output tensor names (the seed's names, COMPAT.md), in graph order."""
    name = _check_name(name)
    if name == efficientnet.NAME:
        return [efficientnet.OUTPUT_NAME]
    return list(_OUTPUTS[name])


def _count(what: str, value, minimum: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {value!r}")
    return int(value)


def build(name: str, *, weights: str | os.PathLike | None = None, seed: int = 0,
          batch: int = 1, input_layout: str = "NCHW", center_head: bool = False
          ) -> onnx.ModelProto:
    """The ONNX graph of ``name`` (one of MODEL_NAMES).

    The input is ``images``, float32, preprocessed as COMPAT.md says (mean-subtracted RGB,
    not divided by a std): NCHW, or NHWC (what ``preprocess_array`` returns) followed by a
    Transpose, as tf2onnx writes it, for ``input_layout="NHWC"``. Weights are drawn
    deterministically from ``seed``; ``weights`` names an .npz (or .onnx) file whose arrays,
    keyed by initializer name, replace them (the others keep their drawn values).

    ``center_head`` (classifiers with a softmax): redraw the last layer so that it sees the
    features minus their mean over a few synthetic images. Random deep nets map every input
    to nearly the same pooled features, so without it the top-1 class barely depends on the
    input; with it, photos get different classes, which makes top-1 agreement a real test.
    It runs the float interpreter on four images (seconds: ResNet-152 is the slowest).

    ``efficientnet_lite0`` (PRETRAINED_NAMES) always has its ImageNet-trained weights
    (``weights="pretrained"``, the default for it; the [pretrained] extra, else
    efficientnet.MissingExtraError), exported with torch.onnx; ``seed`` does not apply.

    The model's metadata_props record its preprocessing, label set and task ("accel.*" keys,
    which accel.compile saves with the compiled model). The seed's names (ALIASES, e.g.
    "QuantizedResnet50") are accepted too.
    """
    name = _check_name(name)
    seed = _count("seed", seed, 0)
    batch = _count("batch", batch, 1)
    if input_layout not in ("NCHW", "NHWC"):
        raise ValueError(f"input_layout must be 'NCHW' or 'NHWC', got {input_layout!r}")
    if center_head and name not in _HEADS:
        raise ValueError(f"center_head applies to {sorted(_HEADS)}, not {name!r}")
    pretrained = isinstance(weights, str) and weights == PRETRAINED
    if pretrained and name not in PRETRAINED_NAMES:
        raise ValueError(f"{name} has no pretrained weights (those with: "
                         f"{', '.join(PRETRAINED_NAMES)}); give an .npz or .onnx weights file")
    if pretrained:
        weights = None
    if name in PRETRAINED_NAMES:  # trained weights always (seed unused), MissingExtraError
        model = efficientnet.build_efficientnet_lite0(batch)
    else:
        model = _BUILDERS[name](seed, batch)
    if center_head:
        _center_head(model, _HEADS[name], seed)
    if input_layout == "NHWC":
        _nhwc_input(model)
    if weights is not None:
        load_weights(model, weights)
    _set_metadata(model, name, input_layout)
    return model


def preprocessing(name: str, *, input_layout: str = "NCHW") -> preprocess.PreprocessSpec:
    """The preprocessing a zoo model's input wants (the seed's, COMPAT.md; EfficientNet-Lite0
    its training recipe's, efficientnet.PREPROCESSING)."""
    name = _check_name(name)
    spec = {"ssd_vgg300": preprocess.SSD300,
            efficientnet.NAME: efficientnet.PREPROCESSING}.get(name, preprocess.IMAGENET)
    return dataclasses.replace(spec, layout=input_layout)


def _set_metadata(model: onnx.ModelProto, name: str, input_layout: str) -> None:
    detector = name == "ssd_vgg300"
    props = {"accel.preprocessing": json.dumps(preprocessing(name, input_layout=input_layout)
                                               .to_dict()),
             "accel.labels": "voc" if detector else "imagenet",
             "accel.task": "detection" if detector else "classification"}
    existing = {p.key: p for p in model.metadata_props}
    for key, value in props.items():
        entry = existing[key] if key in existing else model.metadata_props.add()
        entry.key, entry.value = key, value


_HEADS = {"resnet50": "fc", "resnet152": "fc", "densenet121": "classifier"}
CENTER_IMAGES = 4
HEAD_LOGIT_STD = 2.5


def _synthetic_image(rng: np.random.Generator, shape, index: int) -> np.ndarray:
    """Blocky noise at one of four scales: coarse structure, unlike white noise."""
    n, c, h, w = shape
    cells = (7, 14, 28, 56)[index % 4]
    small = rng.normal(0, INPUT_STD, (n, c, cells, cells)).astype(np.float32)
    return np.repeat(np.repeat(small, h // cells, axis=2), w // cells, axis=3)


def _center_head(model: onnx.ModelProto, head: str, seed: int) -> None:
    from ..compiler import interpret, load_onnx  # the models package does not need it otherwise

    graph = load_onnx(model)
    features_name = f"{head}/flatten:0"
    rng = np.random.default_rng([seed, 1])
    shape = graph.shape(graph.inputs[0])
    features = np.concatenate([
        interpret(graph, _synthetic_image(rng, shape, i), keep=True)[features_name]
        for i in range(CENTER_IMAGES)])
    mean = features.mean(axis=0).astype(np.float64)
    spread = np.sqrt(((features - mean) ** 2).sum(axis=1).mean())
    classes = graph.shape(graph.outputs[0])[1]
    weight = rng.standard_normal((classes, features.shape[1])) * (HEAD_LOGIT_STD / spread)
    bias = -weight @ mean + rng.normal(0, 0.1, classes)
    initializers = {t.name: t for t in model.graph.initializer}
    for key, value in ((f"{head}.weight", weight), (f"{head}.bias", bias)):
        initializers[key].CopyFrom(numpy_helper.from_array(value.astype(np.float32), key))


def _nhwc_input(model: onnx.ModelProto) -> None:
    """Make the input NHWC, transposed to NCHW by the graph's first node."""
    graph = model.graph
    nchw = f"{INPUT_NAME}/nchw:0"
    for node in graph.node:
        node.input[:] = [nchw if i == INPUT_NAME else i for i in node.input]
    graph.node.insert(0, helper.make_node("Transpose", [INPUT_NAME], [nchw],
                                          name=f"{INPUT_NAME}/nchw", perm=[0, 3, 1, 2]))
    dims = graph.input[0].type.tensor_type.shape.dim
    n, c, h, w = (d.dim_value for d in dims)
    for d, value in zip(dims, (n, h, w, c)):
        d.dim_value = value


def _read_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path!r} does not exist")
    if path.endswith(".onnx"):
        try:
            other = onnx.load(path)
        except Exception as e:  # protobuf raises several types for garbage
            raise ValueError(f"weights file {path!r} is not a readable ONNX model: {e}") from e
        return {t.name: numpy_helper.to_array(t) for t in other.graph.initializer}
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {key: arrays[key] for key in arrays.files}
    except Exception as e:
        raise ValueError(f"weights file {path!r} is not a readable .npz archive "
                         f"(or .onnx model): {e}") from e


def load_weights(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Replace ``model``'s initializers in place by the same-named arrays of ``path``."""
    arrays = _read_weights(path)
    initializers = {t.name: t for t in model.graph.initializer}
    unknown = sorted(set(arrays) - set(initializers))
    if unknown:
        raise ValueError(f"weights file {os.fspath(path)!r} has {len(unknown)} array(s) that are "
                         f"not initializers of {model.graph.name}: {unknown[:5]}"
                         f"{' ...' if len(unknown) > 5 else ''}")
    for key, array in arrays.items():
        tensor = initializers[key]
        expected = numpy_helper.to_array(tensor)
        if tuple(array.shape) != expected.shape:
            raise ValueError(f"weights file array {key!r} has shape {tuple(array.shape)}, "
                             f"the model expects {expected.shape}")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"weights file array {key!r} has dtype {array.dtype}, not a number")
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            raise ValueError(f"weights file array {key!r} has NaN or infinite values")
        tensor.CopyFrom(numpy_helper.from_array(array.astype(expected.dtype), key))
