"""A tiny image classifier for the registry, packaging and deployment tests: a 3x32x32 conv
net (conv+ReLU, conv+ReLU, global average pool, Gemm, Softmax over 4 classes) built with
onnx.helper and compiled with accel.compile in about a second."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIDE = 32
LABELS = ["red", "green", "blue", "grey"]


def tiny_onnx(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)

    def init(name, shape, scale):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32),
                                       name)
    inits = [init("w1", (8, 3, 3, 3), 0.3), init("b1", (8,), 0.1),
             init("w2", (16, 8, 3, 3), 0.2), init("b2", (16,), 0.1),
             init("wf", (4, 16), 0.5), init("bf", (4,), 0.1)]
    nodes = [
        helper.make_node("Conv", ["images", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                      [1, 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def compile_tiny(directory: Path, device=None) -> tuple[Path, Path, str]:
    """Compile the tiny net into ``directory``/tiny.accel; returns (artifact, onnx file,
    the kind of device it was compiled for)."""
    import accel
    from accel.preprocess import PreprocessSpec

    directory.mkdir(parents=True, exist_ok=True)
    model = tiny_onnx()
    source = directory / "tiny.onnx"
    onnx.save(model, source)
    rng = np.random.default_rng(1)
    calibration = [rng.normal(0, 60, (1, 3, SIDE, SIDE)).astype(np.float32) for _ in range(4)]
    spec = PreprocessSpec(height=SIDE, width=SIDE, resize_side=SIDE, layout="NCHW")
    compiled = accel.compile(model, calibration=calibration, device=device, progress=False,
                             preprocessing=spec, labels=LABELS, task="classification")
    artifact = compiled.save(directory / "tiny.accel")
    return artifact, source, compiled.device.kind
