"""accel.compile / accel.load: an ONNX model (fp32 with calibration inputs, or an int8 QDQ
model) to a CompiledModel on one device.

    model = accel.compile("resnet50.onnx", calibration=[x0, x1, x2], device="intel-cpu")
    probs = model.run(x)["classifier/resnet_v1_50/predictions/Softmax:0"]
    model.save("resnet50.accel"); model = accel.load("resnet50.accel")
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..compiler import interpret, ir, load_onnx, optimize
from ..compiler.frontend import read_model
from ..compiler.tf import convert as convert_tf
from ..compiler.tf import tf_format
from ..models.labels import label_set
from ..preprocess import PreprocessSpec
from ..devices import select_device
from ..fpga import presets as fpga_presets
from ..runtime import Context
from ..quantization import MinMaxObserver, MSEObserver, PercentileObserver
from . import quantize
from .compiled import TASKS, CompiledModel, ModelLoadError
from .compiled import load as _load
from .lower import lower
from .partition import device_reshapes, partition

OBSERVERS = {"minmax": MinMaxObserver, "percentile": PercentileObserver, "mse": MSEObserver}


@dataclass(frozen=True)
class LayerError:
    """How far one int8 layer output is from the float model's on the same input."""
    name: str
    op: str
    cosine: float
    relative_error: float  # ||int8 - float|| / ||float||


def layer_errors(graph: ir.Graph, compiled: CompiledModel, inputs) -> list[LayerError]:
    """Every device step's dequantized output against the float interpreter's value of the
    same tensor, on one input (errors accumulate through the network, as in a real run)."""
    reference = interpret(graph, inputs, keep=True)
    traced = compiled.trace(inputs)
    errors = []
    for step in compiled.lowered.steps:
        if step.output not in reference:  # a concat input's requantized copy: no graph tensor
            continue
        ref = reference[step.output].astype(np.float64).ravel()
        got = traced[step.output].reshape(reference[step.output].shape).astype(np.float64).ravel()
        norm = np.linalg.norm(ref)
        cosine = float(got @ ref / (np.linalg.norm(got) * norm)) if norm and got.any() else 1.0
        relative = float(np.linalg.norm(got - ref) / norm) if norm else 0.0
        errors.append(LayerError(step.name, step.op, cosine, relative))
    return errors


# ONNX metadata_props keys that describe how images feed a model (accel.models.build sets them)
META_PREPROCESSING = "accel.preprocessing"  # JSON of PreprocessSpec.to_dict()
META_LABELS = "accel.labels"  # a bundled label set ("imagenet", "voc") or a JSON list of names
META_TASK = "accel.task"  # "classification" or "detection"


def model_metadata(proto) -> dict:
    """The preprocessing (PreprocessSpec), labels (list) and task an ONNX model records in its
    metadata_props; None for those it does not record."""
    props = {p.key: p.value for p in proto.metadata_props}
    out = {"preprocessing": None, "labels": None, "task": props.get(META_TASK) or None}
    if props.get(META_PREPROCESSING):
        try:
            out["preprocessing"] = PreprocessSpec.from_dict(json.loads(props[META_PREPROCESSING]))
        except (json.JSONDecodeError, TypeError, ValueError) as e:
            raise ValueError(f"the model's {META_PREPROCESSING!r} metadata is not a valid "
                             f"preprocessing spec: {e}") from None
    if props.get(META_LABELS):
        out["labels"] = props[META_LABELS]  # checked (and expanded) by _metadata
    return out


def _metadata(recorded: dict, preprocessing, labels, task) -> dict:
    """The given metadata, else the recorded one, checked (ValueError/TypeError) before the
    slow part of compile."""
    if isinstance(preprocessing, dict):
        preprocessing = PreprocessSpec.from_dict(preprocessing)
    if preprocessing is not None and not isinstance(preprocessing, PreprocessSpec):
        raise TypeError(f"preprocessing must be a PreprocessSpec or a dict, got "
                        f"{type(preprocessing).__name__}")
    task = recorded["task"] if task is None else task
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    labels = recorded["labels"] if labels is None else labels
    return {"preprocessing": recorded["preprocessing"] if preprocessing is None else preprocessing,
            "labels": None if labels is None else label_set(labels), "task": task}


def _check_preprocessing(spec: PreprocessSpec | None, graph: ir.Graph) -> None:
    if spec is None or len(graph.inputs) != 1:
        return
    shape = tuple(graph.shape(graph.inputs[0]))
    expected = spec.input_shape(shape[0]) if shape else ()
    if shape != expected:
        raise ValueError(f"the preprocessing ({spec.height}x{spec.width}, {spec.layout}) feeds "
                         f"inputs of shape {expected}, but the model's input "
                         f"{graph.inputs[0]!r} has shape {shape}")


def _batch_of(calibration) -> int | None:
    """The first calibration input's batch: what a model's dynamic batch becomes."""
    if not calibration:
        return None
    first = calibration[0]
    first = next(iter(first.values()), None) if isinstance(first, Mapping) else first
    shape = np.shape(first)
    return int(shape[0]) if len(shape) >= 2 else None


def compile(model, *, calibration=None, device=None, observer: str = "minmax",
            progress: bool = True, report: bool = False, bias_correction: bool = False,
            weight_rounding: str = "nearest", adaround_iterations: int | None = None,
            input_shapes: Mapping[str, tuple] | None = None,
            preprocessing: PreprocessSpec | dict | None = None, labels=None,
            task: str | None = None, fpga_design=None) -> CompiledModel:
    """Compile an ONNX model (a .onnx path or onnx.ModelProto; fp32, or a QDQ model from
    onnxruntime's quantize_static; or a TensorFlow SavedModel directory, .keras/.h5 file or
    frozen GraphDef .pb, converted by accel.compiler.tf) to int8 on ``device`` (an
    accel.Device or a selector such as "pocl", "intel-cpu", "fpga-emulator"; default the
    best present; or an accel.Context, e.g. one over pyopencl's). ``calibration``: an
    iterable of input arrays (or dicts by input name) from which activation scales are
    chosen ("minmax", "percentile", "mse" or "auto" ``observer``: min/max, the 99.99th
    percentile of each tail, the range of least int8 squared error, or min/max for tensors
    a ReLU6 bounds and MSE for the rest: quantize.bounded_observers); optional for a QDQ
    model, whose own scales win where it has them. ``report``: measure every layer's error
    against the float model on the first calibration input (``.layer_errors``; the worst
    are printed when ``progress``). ``bias_correction`` (fp32 models): shift each conv's
    bias by the mean output error its int8 weights cause on the calibration inputs
    (quantize.correct_biases; EfficientNet-Lite0's softmax KL to fp32 drops about 5x);
    "empirical": by the mean error
    of a simulation of the whole int8 network, layer by layer (weights and every earlier
    layer's activation rounding: quantize.correct_biases_empirically; holds every
    calibration input's live activations in memory twice). ``weight_rounding`` (fp32 models,
    with calibration): "nearest", or "adaround" to round each layer's int8 weights up or down
    as its output on the calibration inputs needs (accel.quantization.adaround; then the bias
    correction, if any, for those weights), or "block" to learn that rounding for each block
    of layers together against the block's output (accel.backend.reconstruct),
    ``adaround_iterations`` steps per layer or block (default 300). ``input_shapes``: static
    shapes for inputs the model leaves dynamic, e.g. {"input": (1, 3, 224, 224)}; a dynamic
    batch alone defaults to the calibration inputs' batch, or 1 (with a
    DynamicBatchWarning).

    ``preprocessing`` (a PreprocessSpec), ``labels`` (a bundled label set "imagenet" / "voc",
    or a list of class names) and ``task`` ("classification" / "detection") are saved with
    the compiled model, so that ``accel.Classifier(path)`` needs nothing else; each defaults
    to what the ONNX model records in its metadata_props ("accel.preprocessing",
    "accel.labels", "accel.task"), as ``accel.models.build`` writes them.

    ``fpga_design``: on an FPGA or the FPGA emulator, the bitstream's design, a name
    ("default", "board", "persistent": accel.fpga.presets) or an accel.fpga.FpgaDesign;
    default the compiler's (VEC 16 x LANE 16, broadcast). Saved with the compiled model."""
    if observer not in OBSERVERS and observer != "auto":
        raise ValueError(f"observer must be one of {sorted(OBSERVERS) + ['auto']}, "
                         f"got {observer!r}")
    if bias_correction not in (False, True, "analytic", "empirical"):
        raise ValueError("bias_correction must be False, True (\"analytic\") or "
                         f"\"empirical\", got {bias_correction!r}")
    if weight_rounding not in quantize.WEIGHT_ROUNDINGS:
        raise ValueError(f"weight_rounding must be one of {quantize.WEIGHT_ROUNDINGS}, got "
                         f"{weight_rounding!r}")
    fpga_design = fpga_presets.resolve(fpga_design)  # a bad name fails before the slow part
    if not isinstance(device, Context):  # an accel.Context (e.g. over pyopencl's) as it is
        device = select_device(device)  # fail early, before the slow part
    if tf_format(model) is not None:  # a SavedModel, Keras or frozen GraphDef: ONNX first
        model = convert_tf(model)
    if calibration is not None:
        calibration = list(calibration)  # read twice with report=True; gives the progress total
    proto = read_model(model)  # parsed once: its metadata and its graph
    metadata = _metadata(model_metadata(proto), preprocessing, labels, task)  # checked early
    graph = load_onnx(proto, input_shapes=input_shapes, batch=_batch_of(calibration))
    _check_preprocessing(metadata["preprocessing"], graph)
    optimize(graph)
    given = quantize.annotated(graph)  # a QDQ model's own activation scales
    if calibration is None and not given:
        raise ValueError(f"model {graph.name!r} is fp32: compile it with calibration=[...] "
                         "(representative inputs) so int8 scales can be chosen")
    empirical = bias_correction == "empirical" and not given and calibration is not None
    channel_means = {} if bias_correction and not empirical and not given else None
    observed = {} if calibration is None else quantize.observe(
        graph, calibration, observer=OBSERVERS.get(observer, MinMaxObserver),
        progress=progress, channel_means=channel_means,
        observer_for=quantize.bounded_observers(graph) if observer == "auto" else None)
    reference = graph
    adaround = weight_rounding != "nearest" and not given and calibration is not None
    if (channel_means or empirical or adaround) and report:  # errors are measured
        reference = copy.deepcopy(graph)  # against the float model as it was
    if channel_means and not adaround:
        quantize.correct_biases(graph, channel_means)
    head, _, tail = partition(graph)
    host_only = {n.output for n in tail} | {n.x for n in head if n.x in graph.inputs}
    qparams = quantize.assign(graph, observed, device_reshapes(graph), given,
                              optional=host_only, share_concat_scales=not given)
    if empirical or adaround:  # after the scales: it simulates the int8 network they make
        rounded: dict = {}
        quantize.correct_biases_empirically(
            graph, qparams, calibration, host_only, correct=empirical, rounded=rounded,
            weight_rounding=weight_rounding if adaround else "nearest",
            iterations=adaround_iterations, progress=progress)
        if adaround:
            if channel_means:  # analytic correction, for the weights AdaRound chose
                quantize.correct_biases(graph, channel_means, rounded)
            quantize.apply_rounding(graph, rounded)
    # A QDQ model's convs requantize like onnxruntime (float32); calibrated fp32 models keep
    # the fixed-point contract.
    # and their concat inputs keep their own scales (requantized into the concat like ORT's
    # QLinearConcat).
    lowered = lower(graph, qparams, requant="float32" if given else "fixed",
                    concat_copies=bool(given))
    compiled = CompiledModel(lowered, device, fpga_design=fpga_design, **metadata)
    compiled.source = model  # what it was compiled from (for accel.fpga.estimate); not saved
    if report:
        if not calibration:
            raise ValueError("report=True needs a calibration input to measure errors on")
        first = calibration[0]
        compiled.layer_errors = layer_errors(reference, compiled,
                                             quantize.as_input_dict(graph, first))
        if progress:
            worst = sorted(compiled.layer_errors, key=lambda e: -e.relative_error)[:5]
            print("largest int8 errors vs fp32: " + ", ".join(
                f"{e.name} ({e.op}) {e.relative_error:.3f}" for e in worst), file=sys.stderr)
    return compiled


def load(path, device=None) -> CompiledModel:
    """A model saved with CompiledModel.save, on ``device`` (default the best present)."""
    return _load(path, device)


__all__ = ["compile", "load", "CompiledModel", "ModelLoadError", "LayerError", "layer_errors",
           "model_metadata", "META_PREPROCESSING", "META_LABELS", "META_TASK"]
