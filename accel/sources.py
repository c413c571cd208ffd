"""What a user names a model by (the command line, accel.bench): a zoo name (the seed's names
too), an ONNX file, a TensorFlow model (a SavedModel directory, a .keras/.h5 file, a frozen
GraphDef .pb) or a compiled model directory (model.json + params.npz).

    source = resolve("resnet50")           # ModelSource(kind="zoo", ref="resnet50")
    proto = onnx_model(source)             # onnx.ModelProto (built, read or converted)
    spec = preprocessing_of(proto)         # the PreprocessSpec its inputs want

Nothing here imports the compiler or onnx until a model is actually read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

COMPILED_MARKER = "model.json"
TF_FILE_SUFFIXES = (".keras", ".h5", ".hdf5", ".pb")


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "zoo", "onnx", "tf" or "compiled"
    ref: str   # the zoo name or the path

    def __str__(self) -> str:
        return self.ref


def zoo_names() -> tuple[str, ...]:
    from .models import MODEL_NAMES
    return tuple(MODEL_NAMES)


def zoo_aliases() -> dict[str, str]:
    """The seed's model names and the zoo name each stands for."""
    from .models import zoo
    return dict(zoo.ALIASES)


def zoo_name(text: str) -> str | None:
    """The zoo name ``text`` stands for (a zoo or seed name, any case), or None."""
    from .models import zoo
    try:
        return zoo.canonical_name(text)
    except ValueError:
        return None


def resolve(spec: str | os.PathLike) -> ModelSource:
    """What ``spec`` names: an existing path first, then a zoo name. FileNotFoundError for a
    path that does not exist, ValueError for a name the zoo does not know."""
    path = Path(spec)
    text = os.fspath(spec)
    if path.is_dir():
        if (path / COMPILED_MARKER).is_file():
            return ModelSource("compiled", text)
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return ModelSource("tf", text)
        raise ValueError(f"{text!r} is a directory but neither a compiled model (no "
                         f"{COMPILED_MARKER}) nor a TensorFlow SavedModel (no saved_model.pb)")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            return ModelSource("onnx", text)
        if suffix in TF_FILE_SUFFIXES:
            return ModelSource("tf", text)
        raise ValueError(f"{text!r}: unknown model file type {suffix or '(no suffix)'!r}; "
                         f"expected .onnx, {', '.join(TF_FILE_SUFFIXES)}, a SavedModel "
                         "directory or a compiled model directory")
    name = zoo_name(text)
    if name is not None:
        return ModelSource("zoo", name)
    looks_like_path = os.sep in text or "." in Path(text).name
    known = ", ".join(zoo_names() + tuple(zoo_aliases()))
    if looks_like_path:
        raise FileNotFoundError(f"no such file or directory: {text!r}")
    raise ValueError(f"unknown model {text!r}: not a file, and not a zoo model ({known})")


def has_head_to_center(name: str) -> bool:
    """Whether accel.models.build can centre this zoo classifier's last layer."""
    from .models import zoo
    return zoo.canonical_name(name) in zoo._HEADS


def build_zoo(name: str, *, batch: int = 1, seed: int = 0, input_layout: str = "NCHW"):
    """A zoo model as the command line builds it: deterministic placeholder weights, and for
    the classifiers a centred head (accel.models.build's ``center_head``), so that different
    photos get different classes."""
    from . import models
    return models.build(name, seed=seed, batch=batch, input_layout=input_layout,
                        center_head=has_head_to_center(name))


def onnx_model(source: ModelSource, *, batch: int = 1):
    """The onnx.ModelProto of a zoo, ONNX or TensorFlow source (a compiled model has none)."""
    if source.kind == "zoo":
        return build_zoo(source.ref, batch=batch)
    if source.kind == "onnx":
        from .compiler.frontend import read_model
        return read_model(source.ref)
    if source.kind == "tf":
        return _convert_tf(source.ref)
    raise ValueError(f"{source.ref!r} is a compiled model: it has no ONNX graph to read "
                     "(give the .onnx file or the zoo name)")


def _convert_tf(path: str):
    from .compiler.tf import convert
    try:
        return convert(path)
    except ImportError as e:  # TensorFlow or tf2onnx (the [tf] extra) is not installed
        raise ValueError(f"{path!r} is a TensorFlow model; reading it needs the [tf] extra "
                         f"(tensorflow-cpu, tf2onnx): {e}") from None


def is_qdq(proto) -> bool:
    """Whether an ONNX model is already quantized (QuantizeLinear/DequantizeLinear pairs)."""
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node)


def input_shape(proto) -> tuple:
    """The first input's shape; dynamic dimensions are None."""
    initializers = {t.name for t in proto.graph.initializer}
    first = next(i for i in proto.graph.input if i.name not in initializers)
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                 for d in first.type.tensor_type.shape.dim)


def preprocessing_of(proto):
    """The PreprocessSpec the model records (metadata "accel.preprocessing"), else the
    seed's ImageNet preprocessing fitted to the model's input."""
    from . import preprocess
    from .backend.api import model_metadata
    recorded = model_metadata(proto)["preprocessing"]
    return recorded if recorded is not None else fit_preprocessing(proto, preprocess.IMAGENET)


def fit_preprocessing(proto, spec):
    """``spec`` with the model's input layout (NCHW when axis 1 holds 3 channels, else NHWC)
    and size."""
    shape = input_shape(proto)
    if len(shape) != 4:
        raise ValueError(f"the model's input has shape {shape}: not an image batch, so images "
                         "cannot be fed to it")
    layout = "NCHW" if shape[1] == 3 else "NHWC"
    height, width = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    if height is None or width is None:
        return replace(spec, layout=layout)
    changes = dict(layout=layout, height=height, width=width)
    if spec.preserve_aspect_ratio and spec.resize_side < min(height, width):
        changes["resize_side"] = min(height, width)
    return replace(spec, **changes)


def static_input_shapes(proto, batch: int) -> dict[str, tuple] | None:
    """``input_shapes`` for accel.compile fixing a dynamic batch (as TensorFlow exports have)
    to ``batch``; None when the inputs are static already."""
    initializers = {t.name for t in proto.graph.initializer}
    shapes = {}
    for tensor in proto.graph.input:
        if tensor.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in tensor.type.tensor_type.shape.dim]
        if dims and dims[0] is None and all(d is not None for d in dims[1:]):
            shapes[tensor.name] = (batch, *dims[1:])
    return shapes or None


def input_batch(proto) -> int:
    """The model's batch size (1 when dynamic: accel.compile then takes the calibration
    inputs' batch)."""
    shape = input_shape(proto)
    return shape[0] if shape and shape[0] else 1
