"""accel.compile / accel.load: an ONNX model (fp32 with calibration inputs, or an int8 QDQ
model) to a CompiledModel on one device.

    model = accel.compile("resnet50.onnx", calibration=[x0, x1, x2], device="intel-cpu")
    probs = model.run(x)["classifier/resnet_v1_50/predictions/Softmax:0"]
    model.save("resnet50.accel"); model = accel.load("resnet50.accel")
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..compiler import interpret, ir, load_onnx, optimize
from ..devices import select_device
from ..quantization import MinMaxObserver, PercentileObserver
from . import quantize, schedule
from .compiled import CompiledModel, ModelLoadError
from .compiled import load as _load

OBSERVERS = {"minmax": MinMaxObserver, "percentile": PercentileObserver}


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


def compile(model, *, calibration=None, device=None, observer: str = "minmax",
            progress: bool = True, report: bool = False,
            input_shapes: Mapping[str, tuple] | None = None) -> CompiledModel:
    """Compile an ONNX model (a .onnx path or onnx.ModelProto; fp32, or a QDQ model from
    onnxruntime's quantize_static) to int8 on ``device`` (an accel.Device or a selector such
    as "pocl", "intel-cpu", "fpga-emulator"; default the best present). ``calibration``: an
    iterable of input arrays (or dicts by input name) from which activation scales are
    chosen ("minmax" or "percentile" ``observer``); optional for a QDQ model, whose own
    scales win where it has them. ``report``: measure every layer's error against the float
    model on the first calibration input (``.layer_errors``; the worst are printed when
    ``progress``). ``input_shapes``: static shapes for inputs the model leaves dynamic, e.g.
    {"input": (1, 3, 224, 224)} for a dynamic batch."""
    if observer not in OBSERVERS:
        raise ValueError(f"observer must be one of {sorted(OBSERVERS)}, got {observer!r}")
    device = select_device(device)  # fail early, before the slow part
    graph = load_onnx(model, input_shapes=input_shapes)
    optimize(graph)
    given = quantize.annotated(graph)  # a QDQ model's own activation scales
    if calibration is not None:
        calibration = list(calibration)  # read twice with report=True; gives the progress total
    if calibration is None and not given:
        raise ValueError(f"model {graph.name!r} is fp32: compile it with calibration=[...] "
                         "(representative inputs) so int8 scales can be chosen")
    observed = {} if calibration is None else quantize.observe(
        graph, calibration, observer=OBSERVERS[observer], progress=progress)
    head, _, tail = schedule.partition(graph)
    host_only = {n.output for n in tail} | {n.x for n in head if n.x in graph.inputs}
    qparams = quantize.assign(graph, observed, schedule.device_reshapes(graph), given,
                              optional=host_only, share_concat_scales=not given)
    # A QDQ model's convs requantize like onnxruntime (float32); calibrated fp32 models keep
    # the fixed-point contract.
    # and their concat inputs keep their own scales (requantized into the concat like ORT's
    # QLinearConcat).
    lowered = schedule.lower(graph, qparams, requant="float32" if given else "fixed",
                             concat_copies=bool(given))
    compiled = CompiledModel(lowered, device)
    compiled.source = model  # what it was compiled from (for accel.fpga.estimate); not saved
    if report:
        if not calibration:
            raise ValueError("report=True needs a calibration input to measure errors on")
        first = calibration[0]
        compiled.layer_errors = layer_errors(graph, compiled, quantize.as_input_dict(graph, first))
        if progress:
            worst = sorted(compiled.layer_errors, key=lambda e: -e.relative_error)[:5]
            print("largest int8 errors vs fp32: " + ", ".join(
                f"{e.name} ({e.op}) {e.relative_error:.3f}" for e in worst), file=sys.stderr)
    return compiled


def load(path, device=None) -> CompiledModel:
    """A model saved with CompiledModel.save, on ``device`` (default the best present)."""
    return _load(path, device)


__all__ = ["compile", "load", "CompiledModel", "ModelLoadError", "LayerError", "layer_errors"]
