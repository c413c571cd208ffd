"""TensorFlow models -> ONNX with tf2onnx (the ``[tf]`` extra: tensorflow-cpu, tf2onnx).

    proto = convert("resnet50_saved/")                       # a SavedModel directory
    proto = convert("resnet50.keras", outputs=["avg_pool"])  # a Keras .keras / .h5 file
    convert("frozen.pb", output="model.onnx")                # a frozen GraphDef (Placeholder:0)

What the ONNX model's inputs and outputs are called, and what ``inputs``/``outputs`` select:
- frozen GraphDef: TensorFlow tensor names ("Placeholder:0", "resnet_v1_50/.../Softmax:0";
  ":0" may be left out). Default inputs: the Placeholders; default outputs: the tensors no
  node reads.
- SavedModel: its signature's input and output names ("serving_default", else the first
  signature), or any tensor name of the signature's graph.
- Keras: the model's input names and its output names, or the name of any layer (its output).
A name that is not there is a ``TensorNameError`` listing the names that are.

Batch stays dynamic as TensorFlow has it (accel.compile fixes it); the layout stays NHWC
(tf2onnx writes the NCHW transposes, which accel's frontend absorbs). ``preprocessing``
("imagenet", "ssd300", "none" or an accel.preprocess.PreprocessSpec) records the seed's
preprocessing, label set and task in the ONNX metadata (keys "accel.preprocessing",
"accel.labels", "accel.task"), which accel.compile reads. Models whose weights approach
protobuf's 2 GiB limit go through tf2onnx's large_model path and are saved with ONNX external
data. TensorFlow runs in a child process, never in the caller's (see convert()).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import onnx

from .errors import CompileError

DEFAULT_OPSET = 13  # per-channel QuantizeLinear (onnxruntime's quantize_static) needs >= 13
# Weights above this go through tf2onnx's large_model path and are saved as external data
# (protobuf cannot serialise a message over 2 GiB; the rest of the graph needs room too).
LARGE_MODEL_BYTES = 1_800_000_000
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
GRAPH_DEF_SUFFIXES = (".pb",)
# what the seed's preprocessing names stand for: (accel.preprocess spec, label set, task)
PREPROCESSING = {"imagenet": ("IMAGENET", "imagenet", "classification"),
                 "ssd300": ("SSD300", "voc", "detection")}
_SINK_OPS_IGNORED = {"Const", "NoOp", "Placeholder", "Assert", "VarHandleOp", "VariableV2"}


class TFModelError(CompileError):
    """A TensorFlow model that cannot be read or converted; the message says why."""


class TensorNameError(TFModelError):
    """``inputs``/``outputs`` name a tensor the model does not have."""


def tf_format(path) -> str | None:
    """"saved_model", "keras" or "graph_def" when ``path`` looks like that kind of TensorFlow
    model (by its name and, for a directory, its saved_model.pb), else None. Reads nothing."""
    if not isinstance(path, (str, os.PathLike)):
        return None
    p = Path(path)
    if p.is_dir():
        has_proto = (p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file()
        return "saved_model" if has_proto else None
    suffix = p.suffix.lower()
    if suffix in KERAS_SUFFIXES:
        return "keras"
    if suffix in GRAPH_DEF_SUFFIXES:
        return "graph_def"
    return None


def is_tf_model(path) -> bool:
    return tf_format(path) is not None


def convert(model, *, inputs: Sequence[str] | None = None,
            outputs: Sequence[str] | None = None, opset: int = DEFAULT_OPSET,
            output=None, preprocessing=None) -> onnx.ModelProto:
    """A TensorFlow model (SavedModel directory, .keras/.h5 file, frozen GraphDef .pb) as an
    onnx.ModelProto; written to ``output`` too when given (with external data when large).
    ``inputs``/``outputs`` select tensors (see the module docstring).

    TensorFlow runs in a child process: it exports its own copy of LLVM's symbols to the
    whole process, and an OpenCL runtime that JIT-compiles with LLVM (PoCL) then crashes in
    TensorFlow's copy; so TensorFlow never enters the process that runs accel's kernels.
    One child per call, or one for all calls inside ``with converter_session():``."""
    path, kind = _model_path(model)
    if not isinstance(opset, int) or not 11 <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(f"opset must be an int from 11 to {onnx.defs.onnx_opset_version()}, "
                         f"got {opset!r}")
    request = dict(path=path, kind=kind, inputs=_names(inputs, "inputs"),
                   outputs=_names(outputs, "outputs"), opset=opset,
                   preprocessing=_preprocessing(preprocessing),
                   large_model_bytes=LARGE_MODEL_BYTES)
    with tempfile.TemporaryDirectory(prefix="accel-tf-") as tmp:
        target = Path(tmp) / "model.onnx" if output is None else Path(output)
        if not target.parent.is_dir():
            raise FileNotFoundError(f"output directory {os.fspath(target.parent)!r} does not "
                                    "exist")
        request["output"] = os.fspath(target)
        if _session is not None:
            _session.convert(request)
        else:
            with _Converter() as converter:
                converter.convert(request)
        return onnx.load(target)  # external data, if any, from beside it


def save(proto: onnx.ModelProto, path) -> Path:
    """Write ``proto`` to ``path``; weights of a model near the 2 GiB protobuf limit go to
    ``<path>.data`` next to it (ONNX external data), which onnx and accel read back."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output directory {os.fspath(path.parent)!r} does not exist")
    if _weight_bytes(proto) > LARGE_MODEL_BYTES:
        onnx.save_model(proto, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
        # saving moved the weights out of ``proto``: read them back, the caller keeps it
        onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
    else:
        onnx.save_model(proto, path)
    return path


def _model_path(model) -> tuple[str, str]:
    kind = tf_format(model)
    path = os.fspath(model) if isinstance(model, (str, os.PathLike)) else model
    if kind is None:
        raise TFModelError(f"{path!r} is not a TensorFlow model: expected a SavedModel "
                           f"directory (with saved_model.pb), a Keras file "
                           f"({', '.join(KERAS_SUFFIXES)}) or a frozen GraphDef (.pb)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file or directory: {path!r}")
    if kind == "graph_def" and Path(path).name == "saved_model.pb":  # the SavedModel's own
        kind, path = "saved_model", os.fspath(Path(path).parent)
    return os.path.abspath(path), kind


# errors the child process reports by name, raised again here as they were there
_ERRORS = {cls.__name__: cls for cls in (TensorNameError, TFModelError, FileNotFoundError,
                                         ValueError, ImportError)}


class _Converter:
    """A child process (``python -m accel.compiler.tf``) that converts one request per line
    of its stdin and answers with one JSON line on its stdout; its stderr goes to a file,
    whose last line explains a crash."""

    def __init__(self):
        env = dict(os.environ)
        # TensorFlow's C++ start-up chatter stays out of the user's terminal (errors do not)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._process = subprocess.Popen([sys.executable, "-m", "accel.compiler.tf"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._stderr, text=True, env=env)

    def convert(self, request: dict) -> None:
        try:
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            code = self._process.wait()
            self._stderr.seek(0)
            lines = [text for text in self._stderr.read().splitlines() if text.strip()]
            raise TFModelError(f"converting {request['path']!r} failed (the converter "
                               f"process exited with code {code}): "
                               f"{lines[-1] if lines else 'no message'}")
        result = json.loads(line)
        if "error" in result:
            raise _ERRORS.get(result["error"], TFModelError)(result["message"])

    def close(self) -> None:
        if self._process.stdin and not self._process.stdin.closed:
            try:
                self._process.stdin.close()  # end of requests: the child exits
            except OSError:
                pass
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process.stdout.close()
        self._stderr.close()

    def __enter__(self) -> "_Converter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_session: _Converter | None = None


@contextlib.contextmanager
def converter_session():
    """Every convert() inside shares one child process (TensorFlow imported once)."""
    global _session
    if _session is not None:  # nested: the outer session serves
        yield
        return
    _session = _Converter()
    try:
        yield
    finally:
        session, _session = _session, None
        session.close()


def _convert_here(request: dict) -> onnx.ModelProto:
    """The conversion itself, in the child process."""
    _require_tensorflow()
    converter = {"saved_model": _from_saved_model, "keras": _from_keras,
                 "graph_def": _from_graph_def}[request["kind"]]
    with _tensorflow_logs_quiet():
        proto = converter(request["path"], request["inputs"], request["outputs"],
                          request["opset"])
    proto.producer_name = proto.producer_name or "tf2onnx"
    if request["preprocessing"] is not None:
        _set_metadata(proto, *request["preprocessing"])
    return proto


def _serve() -> None:
    """The child: one JSON request per line of stdin, one JSON result per line of stdout.
    Anything else that writes to stdout (TensorFlow, Keras) goes to stderr instead."""
    global LARGE_MODEL_BYTES
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        request = json.loads(line)
        LARGE_MODEL_BYTES = request["large_model_bytes"]
        try:
            save(_convert_here(request), request["output"])
            result = {"ok": True}
        except tuple(_ERRORS.values()) as e:
            name = next(n for n, cls in _ERRORS.items() if isinstance(e, cls))
            result = {"error": name, "message": str(e)}
        except Exception as e:  # noqa: BLE001 - tf2onnx's own failures: said, not fatal
            result = {"error": "TFModelError", "message": f"converting {request['path']!r} "
                      f"failed: {type(e).__name__}: {_first_line(e)}"}
        answers.write(json.dumps(result) + "\n")
        answers.flush()


# --- the three formats ----------------------------------------------------------------------


def _from_graph_def(path: str, inputs, outputs, opset: int) -> onnx.ModelProto:
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(Path(path).read_bytes())
    except (DecodeError, RuntimeError, ValueError) as e:
        raise TFModelError(f"{path!r} is not a TensorFlow GraphDef: {e}") from None
    if not graph_def.node:
        raise TFModelError(f"{path!r} is not a TensorFlow GraphDef (it has no nodes)")
    variables = [n.name for n in graph_def.node if n.op in ("VariableV2", "VarHandleOp")]
    if variables:
        raise TFModelError(f"{path!r} is not frozen: it has variables ({variables[:3]}); "
                           "freeze it (convert_variables_to_constants) or give the SavedModel")
    nodes = {n.name: n for n in graph_def.node}
    read = {i.lstrip("^").split(":")[0] for n in graph_def.node for i in n.input}
    placeholders = [f"{n.name}:0" for n in graph_def.node if n.op == "Placeholder"]
    sinks = [f"{n.name}:0" for n in graph_def.node
             if n.name not in read and n.op not in _SINK_OPS_IGNORED]
    inputs = _select(inputs, placeholders, lambda name: _graph_tensor(name, nodes), "input",
                     path, f"its {len(nodes)} nodes' tensors")
    outputs = _select(outputs, sinks, lambda name: _graph_tensor(name, nodes), "output", path,
                      f"its {len(nodes)} nodes' tensors")
    size = sum(len(n.attr["value"].tensor.tensor_content) for n in graph_def.node
               if n.op == "Const")
    return _convert_graph_def(graph_def, inputs, outputs, opset, size > LARGE_MODEL_BYTES,
                              Path(path).stem)


def _from_saved_model(path: str, inputs, outputs, opset: int) -> onnx.ModelProto:
    import tensorflow as tf
    from tf2onnx import tf_loader

    try:
        imported = tf.saved_model.load(path, tags=["serve"])
    except Exception as e:  # noqa: BLE001 - TensorFlow raises many kinds for a bad directory
        raise TFModelError(f"cannot load the SavedModel {path!r}: {_first_line(e)}") from None
    signatures = [k for k in imported.signatures.keys() if not k.startswith("_")]
    if not signatures:
        raise TFModelError(f"the SavedModel {path!r} has no signatures to convert")
    key = "serving_default" if "serving_default" in signatures else signatures[0]
    function = imported.signatures[key]
    # graph tensor names of the signature's inputs (first in function.inputs, before the
    # captured variables) and outputs, by signature name
    input_specs = [s for s in tf.nest.flatten(function.structured_input_signature)
                   if isinstance(s, tf.TensorSpec)]
    graph_inputs = [t.name for t in function.inputs[:len(input_specs)]]
    signature_inputs = dict(zip([s.name for s in input_specs], graph_inputs))
    structured = function.structured_outputs
    if isinstance(structured, dict):
        flat_outputs = [t.name for t in function.outputs if t.dtype != tf.dtypes.resource]
        signature_outputs = dict(zip(sorted(structured), flat_outputs))
    else:
        signature_outputs = {t.name: t.name for t in function.outputs}
    graph = function.graph
    known = {t.name for op in graph.get_operations() for t in op.outputs}

    def lookup(table):
        def find(name):
            if name in table:
                return table[name]
            tensor = name if ":" in name else f"{name}:0"
            return tensor if tensor in known else None
        return find

    in_sel = _select(inputs, list(signature_inputs), lookup(signature_inputs), "input", path,
                     f"the tensors of signature {key!r}")
    out_sel = _select(outputs, list(signature_outputs), lookup(signature_outputs), "output",
                      path, f"the tensors of signature {key!r}")
    rename = {v: k for k, v in {**signature_inputs, **signature_outputs}.items() if k != v}
    size = sum(v.shape.num_elements() * v.dtype.size for v in imported.variables)
    large = size > LARGE_MODEL_BYTES
    frozen, _ = tf_loader.from_trackable(imported, function, list(signature_inputs.values()),
                                         list(signature_outputs.values()), large)
    return _convert_graph_def(frozen, in_sel, out_sel, opset, large, Path(path).name,
                              rename={k: v for k, v in rename.items() if k in in_sel + out_sel})


def _from_keras(path: str, inputs, outputs, opset: int) -> onnx.ModelProto:
    import tensorflow as tf
    import tf2onnx

    try:
        model = tf.keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises many kinds for a bad file
        raise TFModelError(f"cannot load the Keras model {path!r}: {_first_line(e)}") from None
    input_names = [_keras_name(t) for t in model.inputs]
    output_names = list(getattr(model, "output_names", None) or
                        [_keras_name(t) for t in model.outputs])
    layers = {layer.name: layer for layer in model.layers}
    _select(inputs, input_names, lambda n: n if n in input_names else None, "input", path,
            "its inputs (a Keras model is converted from all of them)")
    if outputs:
        def layer_output(name):
            return name if name in output_names or name in layers else None
        selected = _select(outputs, output_names, layer_output, "output", path,
                           f"its {len(layers)} layers' outputs")
        if selected != output_names:
            by_name = dict(zip(output_names, model.outputs))
            tensors = [by_name[n] if n in by_name else layers[n].output for n in selected]
            model = tf.keras.Model(model.inputs, tensors, name=model.name)
    signature = [tf.TensorSpec(t.shape, t.dtype, name=name)
                 for t, name in zip(model.inputs, input_names)]
    large = sum(w.numpy().nbytes for w in model.weights) > LARGE_MODEL_BYTES
    return _tf2onnx(lambda: tf2onnx.convert.from_keras(
        model, input_signature=signature, opset=opset, large_model=large), large)


def _convert_graph_def(graph_def, inputs, outputs, opset, large, name, rename=None):
    import tf2onnx
    return _tf2onnx(lambda: tf2onnx.convert.from_graph_def(
        graph_def, name=name, input_names=inputs, output_names=outputs, opset=opset,
        large_model=large, tensors_to_rename=rename or None), large)


def _tf2onnx(call, large: bool) -> onnx.ModelProto:
    """``call()``'s model, with tf2onnx's optimizers run without their safety copies (3x
    faster: tf2onnx deep-copies the whole graph, weights included, before each optimizer so
    that it can skip one that fails); should one fail, the careful way again."""
    try:
        with _tf2onnx_options(large, catch_errors=False):
            return _inline(*call())
    except Exception:  # noqa: BLE001 - retried, and what fails again is reported
        if large:  # the large_model path never copies: nothing else to try
            raise
    with _tf2onnx_options(large, catch_errors=True):
        return _inline(*call())


# --- helpers --------------------------------------------------------------------------------


def _require_tensorflow() -> None:
    try:
        import tensorflow  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as e:
        raise ImportError(f"reading TensorFlow models needs the [tf] extra (pip install "
                          f"'accel[tf]': tensorflow-cpu and tf2onnx): {e}") from None


def _names(names, what: str) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    names = [str(n).strip() for n in names]
    if not names or not all(names):
        raise ValueError(f"{what} must be tensor names, got {names!r}")
    return names


def _select(wanted, defaults: list[str], find, what: str, path: str, where: str) -> list[str]:
    """The graph names of ``wanted`` (``find`` maps a user name to one, or None), or
    ``defaults``; TensorNameError naming the candidates for a name that is not there."""
    if wanted is None:
        if not defaults:
            raise TFModelError(f"{path!r}: found no {what}s; name them with {what}s=")
        return [find(name) for name in defaults]
    found = []
    for name in wanted:
        tensor = find(name)
        if tensor is None:
            raise TensorNameError(f"{what} {name!r} is not in {path!r}; its {what}s are "
                                  f"{defaults} (or any of {where})")
        found.append(tensor)
    return found


def _graph_tensor(name: str, nodes: dict) -> str | None:
    """``name`` as "node:index" when the node exists, else None."""
    node, _, index = name.partition(":")
    if node not in nodes or (index and not index.isdigit()):
        return None
    return f"{node}:{index or 0}"


def _keras_name(tensor) -> str:
    """The name of the Keras layer that makes ``tensor`` (its Input layer for an input)."""
    history = getattr(tensor, "_keras_history", None)
    operation = getattr(history, "operation", None) or getattr(history, "layer", None)
    return getattr(operation, "name", None) or tensor.name.split(":")[0]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _preprocessing(value):
    """(spec dict, label set, task) for ``preprocessing``, or None."""
    if value is None or value == "none":
        return None
    from .. import preprocess
    if isinstance(value, preprocess.PreprocessSpec):
        return dataclasses.replace(value, layout="NHWC").to_dict(), None, None
    if value not in PREPROCESSING:
        raise ValueError(f"preprocessing must be one of {sorted(PREPROCESSING) + ['none']} "
                         f"or a PreprocessSpec, got {value!r}")
    spec_name, labels, task = PREPROCESSING[value]
    spec = dataclasses.replace(getattr(preprocess, spec_name), layout="NHWC")
    return spec.to_dict(), labels, task


def _set_metadata(proto: onnx.ModelProto, spec: dict, labels, task) -> None:
    shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    if len(shape) != 4 or shape[3] != 3:
        raise ValueError(f"preprocessing is for image models with an NHWC RGB input; "
                         f"{proto.graph.input[0].name!r} has shape {shape}")
    if (shape[1], shape[2]) not in ((0, 0), (spec["height"], spec["width"])):
        raise ValueError(f"the preprocessing makes {spec['height']}x{spec['width']} images, "
                         f"but input {proto.graph.input[0].name!r} takes "
                         f"{shape[1]}x{shape[2]}")
    values = {"accel.preprocessing": json.dumps(spec), "accel.labels": labels,
              "accel.task": task}
    kept = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in values.items():
        if value is not None:
            proto.metadata_props.add(key=key, value=value)


def _weight_bytes(proto: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in proto.graph.initializer)


def _inline(proto: onnx.ModelProto, storage) -> onnx.ModelProto:
    """tf2onnx's large_model result with the external tensors' bytes put back in place."""
    if storage is None:
        return proto
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = {e.key: e.value for e in tensor.external_data}["location"]
            tensor.raw_data = storage.name_to_tensor_data[location]
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
    return proto


@contextlib.contextmanager
def _tf2onnx_options(large: bool, catch_errors: bool):
    """tf2onnx reads TF2ONNX_CATCH_ERRORS at conversion time. Its large_model path still
    calls numpy's ``np.product``, which numpy 2 removed."""
    import numpy as np
    key = "TF2ONNX_CATCH_ERRORS"
    before = os.environ.get(key)
    os.environ[key] = "TRUE" if catch_errors else "FALSE"
    if large and not hasattr(np, "product"):
        np.product = np.prod  # tf2onnx 1.17 with numpy >= 2
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


@contextlib.contextmanager
def _tensorflow_logs_quiet():
    """tf2onnx calls TensorFlow's v1 freezing functions, which log deprecation warnings."""
    import tensorflow as tf
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


__all__ = ["convert", "converter_session", "save", "tf_format", "is_tf_model", "TFModelError",
           "TensorNameError", "DEFAULT_OPSET", "LARGE_MODEL_BYTES"]


if __name__ == "__main__":
    _serve()
