"""Small hand-made ONNX graphs in the styles of two exporters, and an onnxruntime helper,
for the frontend and pass tests."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def ort_session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def run_ort(model, inputs) -> dict[str, np.ndarray]:
    """onnxruntime fp32 outputs by name. ``model``: a ModelProto or a session made by
    ``ort_session``; ``inputs``: an array (single input) or a dict."""
    session = model if isinstance(model, ort.InferenceSession) else ort_session(model)
    if not isinstance(inputs, dict):
        inputs = {session.get_inputs()[0].name: inputs}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs)))


def assert_close(ours: dict, reference: dict, rtol: float = 1e-4) -> None:
    """Every output within ``rtol`` of the reference's largest magnitude."""
    assert set(ours) == set(reference), (sorted(ours), sorted(reference))
    for name, ref in reference.items():
        got = ours[name]
        assert got.shape == ref.shape, (name, got.shape, ref.shape)
        scale = max(float(np.abs(ref).max()), 1e-6)
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * scale, err_msg=name)


class Maker:
    """A tiny graph writer: ``const`` and ``op`` return tensor names."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.count = 0

    def const(self, array, name: str | None = None) -> str:
        self.count += 1
        name = name or f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, *shape, std: float = 0.3) -> str:
        return self.const(self.rng.normal(0, std, shape).astype(np.float32))

    def op(self, op_type: str, inputs: list[str], outputs: int = 1, name: str | None = None,
           **attrs) -> str:
        self.count += 1
        name = name or f"{op_type.lower()}_{self.count}"
        outs = [f"{name}_out{i}" if i else f"{name}_out" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs[0]

    def bn(self, x: str, channels: int) -> str:
        r = self.rng
        return self.op("BatchNormalization", [
            x, self.const(r.uniform(0.5, 1.5, channels).astype(np.float32)),
            self.const(r.normal(0, 0.2, channels).astype(np.float32)),
            self.const(r.normal(0, 0.2, channels).astype(np.float32)),
            self.const(r.uniform(0.5, 2.0, channels).astype(np.float32))], epsilon=1e-3)

    def model(self, inputs: list[tuple[str, list]], outputs: list[tuple[str, list]],
              opset: int = 13) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "test",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
            initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def torch_style(seed: int = 0) -> onnx.ModelProto:
    """What torch.onnx makes of a small ResNet-ish net in eval mode: NCHW, Conv + BN + Relu,
    MaxPool with ceil_mode, a residual Add, Relu6 as Clip, a DenseNet-like Concat and average
    pool, x.view(x.size(0), -1) as Shape/Gather/Unsqueeze/Concat/Reshape, Dropout, Identity,
    Gemm (transB=1) and Softmax."""
    m = Maker(seed)
    x = "input"
    y = m.op("Conv", [x, m.weight(8, 3, 3, 3), m.weight(8, std=0.1)], pads=[1, 1, 1, 1],
             strides=[2, 2], name="conv1")
    y = m.op("Relu", [m.bn(y, 8)], name="relu1")
    y = m.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, name="pool1")
    b = m.op("Conv", [y, m.weight(8, 8, 3, 3)], pads=[1, 1, 1, 1], name="block.conv1")
    b = m.op("Relu", [m.bn(b, 8)])
    b = m.op("Conv", [b, m.weight(8, 8, 3, 3)], pads=[1, 1, 1, 1], name="block.conv2")
    b = m.bn(b, 8)
    y = m.op("Relu", [m.op("Add", [b, y], name="block.add")], name="block.relu")
    z = m.op("Conv", [y, m.weight(4, 8, 1, 1)], name="branch.conv")
    z = m.op("Clip", [z, m.const(np.array(0, np.float32)), m.const(np.array(6, np.float32))],
             name="relu6")
    y = m.op("Concat", [y, z], axis=1, name="concat")
    y = m.op("Relu", [m.bn(y, 12)], name="concat.bn.relu")
    y = m.op("AveragePool", [y], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
             count_include_pad=0, name="avgpool")
    y = m.op("GlobalAveragePool", [y], name="gap")
    shape = m.op("Shape", [y])
    batch = m.op("Gather", [shape, m.const(np.array(0, np.int64))], axis=0)
    batch = m.op("Unsqueeze", [batch, m.const(np.array([0], np.int64))])
    target = m.op("Concat", [batch, m.const(np.array([-1], np.int64))], axis=0)
    y = m.op("Reshape", [y, target], name="view")
    y = m.op("Dropout", [y], name="dropout")
    y = m.op("Identity", [y], name="identity")
    y = m.op("Gemm", [y, m.weight(10, 12), m.weight(10, std=0.1)], transB=1, alpha=0.5,
             name="fc")
    m.op("Softmax", [y], axis=1, name="output")
    return m.model([("input", [1, 3, 32, 32])], [("output_out", [1, 10])])


def tf2onnx_style(seed: int = 0) -> onnx.ModelProto:
    """What tf2onnx makes of a small Keras net: an NHWC input transposed to NCHW, SAME
    padding via auto_pad, weights stored HWIO and transposed by a node, batch norm as Mul +
    Add of constants, Relu6 as Clip, an L2 normalisation written as
    x * Reciprocal(Sqrt(Max(ReduceSum(x*x), eps))), a spatial ReduceMean, MatMul + Add,
    Softmax; plus the output transposed back to NHWC for a side output."""
    m = Maker(seed)
    x = m.op("Transpose", ["input"], perm=[0, 3, 1, 2], name="input_nchw")
    hwio = m.const(m.rng.normal(0, 0.3, (3, 3, 3, 16)).astype(np.float32))
    oihw = m.op("Transpose", [hwio], perm=[3, 2, 0, 1], name="weight_oihw")
    y = m.op("Conv", [x, oihw, m.weight(16, std=0.1)], auto_pad="SAME_UPPER", strides=[2, 2],
             kernel_shape=[3, 3], name="conv1")
    y = m.op("Mul", [y, m.const(m.rng.uniform(0.5, 1.5, (1, 16, 1, 1)).astype(np.float32))],
             name="bn.mul")
    y = m.op("Add", [y, m.const(m.rng.normal(0, 0.2, (1, 16, 1, 1)).astype(np.float32))],
             name="bn.add")
    y = m.op("Clip", [y, m.const(np.array(0, np.float32)), m.const(np.array(6, np.float32))],
             name="relu6")
    y = m.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER",
             name="pool")
    square = m.op("Mul", [y, y], name="l2.square")
    total = m.op("ReduceSum", [square, m.const(np.array([1], np.int64))], keepdims=1,
                 name="l2.sum")
    total = m.op("Max", [total, m.const(np.array(1e-12, np.float32))], name="l2.max")
    inverse = m.op("Reciprocal", [m.op("Sqrt", [total], name="l2.sqrt")], name="l2.recip")
    y = m.op("Mul", [y, inverse], name="l2.mul")
    side = m.op("Transpose", [y], perm=[0, 2, 3, 1], name="side_output")
    y = m.op("Conv", [y, m.weight(24, 16, 1, 1), m.weight(24, std=0.1)], name="conv2")
    y = m.op("Relu", [y], name="relu2")
    y = m.op("ReduceMean", [y], axes=[2, 3], keepdims=0, name="mean")
    y = m.op("MatMul", [y, m.weight(24, 5)], name="dense.matmul")
    y = m.op("Add", [y, m.weight(5, std=0.1)], name="dense.add")
    m.op("Softmax", [y], axis=-1, name="probs")
    return m.model([("input", [1, 24, 24, 3])], [("probs_out", [1, 5]), (side, [1, 6, 6, 16])])


def keras_stem(seed: int = 0, opset: int = 13) -> onnx.ModelProto:
    """tf2onnx's rendering of Keras ResNet50's stem: ZeroPadding2D as explicit Pad ops before
    a VALID 7x7/2 conv and before the max pool, BatchNormalization, then an average pool
    behind another Pad, and a Pad of possibly negative values that must stay."""
    m = Maker(seed)
    x = m.op("Transpose", ["input"], perm=[0, 3, 1, 2], name="input_nchw")
    pads = lambda p: m.const(np.array([0, 0, p, p, 0, 0, p, p], np.int64))  # noqa: E731
    y = m.op("Pad", [x, pads(3)], name="conv1_pad")
    y = m.op("Conv", [y, m.weight(8, 3, 7, 7, std=0.1), m.weight(8, std=0.1)],
             strides=[2, 2], kernel_shape=[7, 7], name="conv1_conv")
    y = m.op("Relu", [m.bn(y, 8)], name="conv1_relu")
    y = m.op("Pad", [y, pads(1)], name="pool1_pad")
    y = m.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], name="pool1_pool")
    y = m.op("Pad", [y, pads(1)], name="avg_pad")
    y = m.op("AveragePool", [y], kernel_shape=[3, 3], strides=[1, 1], name="avg_pool")
    z = m.op("Conv", [y, m.weight(8, 8, 1, 1)], name="signed")  # no ReLU: may be negative
    z = m.op("Pad", [z, pads(1)], name="signed_pad")
    z = m.op("MaxPool", [z], kernel_shape=[3, 3], strides=[1, 1], name="signed_pool")
    return m.model([("input", [1, 32, 32, 3])], [(z, [1, 8, 8, 8])], opset=opset)
