"""A small helper for writing ONNX graphs by hand, with deterministic weights.

Weights are drawn so that activations keep an O(1) scale through very deep nets: every
builder tracks an estimate of each tensor's per-channel second moment (``Feature.power``) and
sets convolution weights (He-normal), BatchNorm running statistics and head scales from it.
The estimates are rough on purpose (within a factor of ~2): BatchNorm statistics that only
approximately normalise are "non-trivial", which is what BatchNorm folding should be tested
on. Inputs are expected to be preprocessed as COMPAT.md says (mean-subtracted pixels, a
standard deviation of roughly ``INPUT_STD``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 13  # ReduceL2 and friends still take ``axes`` as an attribute here
INPUT_NAME = "images"  # the seed's alias for its input (COMPAT.md)
INPUT_STD = 64.0  # typical standard deviation of a mean-subtracted image pixel


@dataclass
class Feature:
    """An NCHW activation while a graph is being built."""

    name: str
    channels: int
    power: np.ndarray  # estimated E[x^2] per channel, for choosing weight scales


class GraphBuilder:
    """Writes nodes and initializers straight into one ModelProto (VGG-16 has 553 MB of
    weights: every avoided copy shows in the build time)."""

    def __init__(self, seed: int, batch: int = 1):
        self.rng = np.random.default_rng(seed)
        self.batch = batch
        self.proto = helper.make_model(helper.make_graph([], "g", [], []),
                                       producer_name="accel.models",
                                       opset_imports=[helper.make_opsetid("", OPSET)])
        self.proto.ir_version = 8  # readable by every onnxruntime we support
        self._names: set[str] = set()

    # --- plumbing -------------------------------------------------------------------------

    def const(self, name: str, array: np.ndarray) -> str:
        """An initializer: float32, or int64 for integer arrays (shapes)."""
        if name in self._names:
            raise ValueError(f"duplicate tensor name {name!r}")
        self._names.add(name)
        is_int = np.issubdtype(np.asarray(array).dtype, np.integer)
        array = np.ascontiguousarray(array, dtype=np.int64 if is_int else np.float32)
        tensor = self.proto.graph.initializer.add()
        tensor.name = name
        tensor.data_type = TensorProto.INT64 if is_int else TensorProto.FLOAT
        tensor.dims.extend(array.shape)
        tensor.raw_data = array.tobytes()
        return name

    def op(self, op_type: str, inputs: list[str], name: str, output: str | None = None,
           **attrs) -> str:
        output = output or f"{name}:0"
        if output in self._names:
            raise ValueError(f"duplicate tensor name {output!r}")
        self._names.add(output)
        self.proto.graph.node.append(helper.make_node(op_type, inputs, [output], name=name,
                                                      **attrs))
        return output

    def normal(self, shape, std: float) -> np.ndarray:
        values = self.rng.standard_normal(shape, dtype=np.float32)
        values *= np.float32(std)
        return values

    def model(self, graph_name: str, input_chw: list[int],
              outputs: list[tuple[str, list[int]]]) -> onnx.ModelProto:
        """Finish the model; shapes are given without the batch dimension."""
        graph = self.proto.graph
        graph.name = graph_name
        graph.input.append(helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT,
                                                         [self.batch] + list(input_chw)))
        graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT,
                                                          [self.batch] + list(s))
                            for n, s in outputs)
        return self.proto

    # --- layers ---------------------------------------------------------------------------

    def conv(self, x: Feature, out_channels: int, kernel: int, name: str, *, stride: int = 1,
             pad: int | None = None, dilation: int = 1, bias: bool = False,
             gain: float = 1.0, input_std: float | None = None) -> Feature:
        """He-normal convolution. ``gain`` scales the output's standard deviation; the
        weight std is divided by ``input_std`` when given (the first layer of a net without
        BatchNorm, which sees raw pixels)."""
        if pad is None:
            pad = dilation * (kernel - 1) // 2
        fan_in = x.channels * kernel * kernel
        std = gain * np.sqrt(2.0 / fan_in)
        in_power = float(np.mean(x.power))
        if input_std is not None:
            std /= input_std
            in_power /= input_std ** 2
        inputs = [x.name, self.const(f"{name}.weight",
                                     self.normal((out_channels, x.channels, kernel, kernel), std))]
        out_power = 2.0 * gain * gain * in_power  # He-normal on post-ReLU inputs keeps E[x^2]
        if bias:
            inputs.append(self.const(f"{name}.bias",
                                     self.normal((out_channels,), 0.05 * np.sqrt(out_power))))
        out = self.op("Conv", inputs, name, kernel_shape=[kernel, kernel],
                      strides=[stride, stride], pads=[pad] * 4, dilations=[dilation, dilation])
        return Feature(out, out_channels, np.full(out_channels, out_power))

    def batchnorm(self, x: Feature, name: str, *, gamma_scale: float = 1.0) -> Feature:
        """BatchNormalization with running statistics near (not at) the estimated ones."""
        c = x.channels
        var = x.power * self.rng.uniform(0.7, 1.4, c)
        mean = self.rng.standard_normal(c) * 0.1 * np.sqrt(x.power)
        gamma = self.rng.uniform(0.7, 1.2, c) * gamma_scale
        beta = self.rng.standard_normal(c) * 0.1 * gamma_scale
        inputs = [x.name,
                  self.const(f"{name}.weight", gamma),
                  self.const(f"{name}.bias", beta),
                  self.const(f"{name}.running_mean", mean),
                  self.const(f"{name}.running_var", var)]
        out = self.op("BatchNormalization", inputs, name, epsilon=1e-5)
        return Feature(out, c, gamma ** 2 + beta ** 2)

    def relu(self, x: Feature, name: str) -> Feature:
        return Feature(self.op("Relu", [x.name], name), x.channels, x.power / 2.0)

    def maxpool(self, x: Feature, kernel: int, stride: int, name: str,
                pads: list[int] | None = None) -> Feature:
        pads = pads if pads is not None else [0] * 4
        out = self.op("MaxPool", [x.name], name, kernel_shape=[kernel, kernel],
                      strides=[stride, stride], pads=pads)
        return Feature(out, x.channels, x.power * 3.0)  # a max is larger than its inputs

    def avgpool(self, x: Feature, kernel: int, stride: int, name: str) -> Feature:
        out = self.op("AveragePool", [x.name], name, kernel_shape=[kernel, kernel],
                      strides=[stride, stride])
        return Feature(out, x.channels, x.power)

    def add(self, a: Feature, b: Feature, name: str) -> Feature:
        return Feature(self.op("Add", [a.name, b.name], name), a.channels, a.power + b.power)

    def concat(self, xs: list[Feature], name: str) -> Feature:
        out = self.op("Concat", [x.name for x in xs], name, axis=1)
        return Feature(out, sum(x.channels for x in xs), np.concatenate([x.power for x in xs]))

    def classifier(self, x: Feature, num_classes: int, name: str, *, logit_std: float = 2.5
                   ) -> str:
        """GlobalAveragePool -> Flatten -> Gemm, torch.onnx style; returns the logits' name."""
        pooled = self.op("GlobalAveragePool", [x.name], f"{name}/pool")
        flat = self.op("Flatten", [pooled], f"{name}/flatten", axis=1)
        std = logit_std / np.sqrt(x.channels * float(np.mean(x.power)))
        weight = self.const(f"{name}.weight", self.normal((num_classes, x.channels), std))
        bias = self.const(f"{name}.bias", self.normal((num_classes,), 0.1))
        return self.op("Gemm", [flat, weight, bias], f"{name}/gemm", transB=1)
