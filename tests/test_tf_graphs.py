"""What TensorFlow-side exporters write, on small hand-built graphs: each frontend fix against
onnxruntime, in fp32 (the float IR, and compiled with calibration) and, where a QDQ model
used to fail, as onnxruntime's quantize_static QDQ model (QUInt8 and QInt8 activations).

- Keras' ZeroPadding2D before a MaxPool (tf2onnx writes an explicit Pad): in a QDQ model the
  ReLU before it is gone (onnxruntime drops ReLUs its zero point implies), so the Pad folds
  into the pool by the tensor's quantization; over values that can be negative a zero Pad
  becomes an identity 1x1 conv with that padding (exact).
- The NCHW -> NHWC Transpose before Flatten -> MatMul of a VGG-style classifier: absorbed
  into the dense layer's weight columns.
- L2 normalisation written with ReduceSumSquare / ReduceSum(x * x), Max or Add epsilon,
  Sqrt, Reciprocal or Div, Mul (tf.math.l2_normalize as tf2onnx writes it, gamma folded in):
  one L2Norm.
- A dynamic batch: the calibration inputs' batch, or 1, with a DynamicBatchWarning.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from accel import compiler
from accel.backend import api
from accel.compiler import ir
from accel.compiler.errors import DynamicBatchWarning
from qdq_host import quantize_qdq
from test_compile import FASTEST, Net, cosine, inputs_for, ort_outputs, output_scale

ACTIVATION_TYPES = ["QUInt8", "QInt8"]


def float_ir(model: onnx.ModelProto) -> ir.Graph:
    graph = compiler.load_onnx(model)
    compiler.optimize(graph)
    return graph


def assert_float_ir_matches_onnxruntime(graph: ir.Graph, model: onnx.ModelProto) -> None:
    for x in inputs_for(model, 3, 5):
        ours, ref = compiler.interpret(graph, x), ort_outputs(model, x)
        for name, value in ref.items():
            np.testing.assert_allclose(ours[name], value, rtol=1e-4,
                                       atol=1e-4 * float(np.abs(value).max()), err_msg=name)


def assert_calibrated_matches_onnxruntime(model: onnx.ModelProto) -> None:
    compiled = api.compile(model, calibration=inputs_for(model, 8, 0), device=FASTEST,
                           progress=False)
    cosines = [cosine(compiled.run(x)["output"], ort_outputs(model, x)["output"])
               for x in inputs_for(model, 4, 1)]
    assert min(cosines) >= 0.99, cosines  # measured 0.9991-0.9999 on these nets


def quantize(model: onnx.ModelProto, calibration, tmp_path, activation_type: str,
             **options) -> onnx.ModelProto:
    """The tests' QDQ model (qdq_host.quantize_qdq) with quantize_static's other
    ``options`` (nodes_to_exclude, ...)."""
    return quantize_qdq(model, calibration, tmp_path, activation_type, **options)


def assert_qdq_within_one_lsb(model: onnx.ModelProto, activation_type: str, tmp_path,
                              minimum: float = 1.0, **options) -> api.CompiledModel:
    """quantize_static's QDQ model of ``model`` compiled without calibration: the share of
    "output" values within 1 LSB of onnxruntime's is at least ``minimum``."""
    qdq = quantize(model, inputs_for(model, 8, 0), tmp_path, activation_type, **options)
    compiled = api.compile(qdq, device=FASTEST, progress=False)
    lsb = output_scale(compiled, "output")
    errors = np.concatenate([np.abs(compiled.run(x)["output"] - ort_outputs(qdq, x)["output"]
                                    ).ravel() / lsb for x in inputs_for(model, 6, 1)])
    share = float(np.mean(errors <= 1 + 1e-3))
    assert share >= minimum, (share, float(errors.max()))
    return compiled


def int64(n: Net, values, hint: str) -> str:
    name = n.name(hint)
    n.inits.append(numpy_helper.from_array(np.array(values, np.int64), name))
    return name


def output(n: Net, y: str) -> None:
    n.nodes.append(helper.make_node("Identity", [y], ["output"], name="out"))


# --- ZeroPadding2D before a MaxPool --------------------------------------------------------


def padded_pool_net(relu: bool) -> onnx.ModelProto:
    """conv (+ ReLU) -> Pad 1 -> MaxPool 3x3/2 -> conv: Keras' ResNet/DenseNet stem."""
    n = Net(11)
    x = n.conv("input", 3, 16, stride=2, relu=relu)
    padded = n.op("Pad", [x, int64(n, [0, 0, 1, 1, 0, 0, 1, 1], "pads")])
    pooled = n.op("MaxPool", [padded], kernel_shape=[3, 3], strides=[2, 2])
    output(n, n.conv(pooled, 16, 8, relu=False))
    return n.model([("input", [1, 3, 32, 32])], [("output", [1, 8, 8, 8])], "padded_pool")


@pytest.mark.parametrize("relu", [True, False], ids=["after_relu", "signed"])
def test_zero_pad_before_max_pool_float(relu):
    model = padded_pool_net(relu)
    graph = float_ir(model)
    pools = [n for n in graph.nodes if isinstance(n, ir.Pool)]
    assert not any(isinstance(n, ir.Pad) for n in graph.nodes)
    if relu:  # exact as pool padding: every value is >= 0
        assert pools[0].pads == (1, 1, 1, 1) and len(graph.nodes) == 3
    else:  # values can be negative: the zero padding is an identity conv's
        identity = [n for n in graph.nodes if isinstance(n, ir.Conv) and n.pads == (1, 1, 1, 1)
                    and graph.const(n.weight).shape == (16, 16, 1, 1)]
        assert len(identity) == 1 and pools[0].pads == (0, 0, 0, 0)
    assert_float_ir_matches_onnxruntime(graph, model)
    assert_calibrated_matches_onnxruntime(model)


@pytest.mark.parametrize("activation_type", ACTIVATION_TYPES)
@pytest.mark.parametrize("relu", [True, False], ids=["after_relu", "signed"])
def test_zero_pad_before_max_pool_qdq(relu, activation_type, tmp_path):
    """The QDQ models that failed with "Pad '...' has no device lowering": onnxruntime drops
    the ReLU (its zero point is the integer minimum), so the Pad folds into the pool by the
    tensor's quantization; without a ReLU it becomes an identity conv. Both bit-equal to
    onnxruntime (measured: every value, u8 and s8)."""
    compiled = assert_qdq_within_one_lsb(padded_pool_net(relu), activation_type, tmp_path)
    convs = [s for s in compiled.lowered.steps if s.op == "conv"]
    pools = [s.attrs["params"] for s in compiled.lowered.steps if s.op == "pool"]
    assert pools[0]["pads"] == ([1, 1, 1, 1] if relu else [0, 0, 0, 0])
    assert len(convs) == (2 if relu else 3)


# --- the NHWC flatten of a VGG-style classifier --------------------------------------------


def nhwc_flatten_net(bias: bool = True) -> onnx.ModelProto:
    """conv -> MaxPool -> Transpose(0, 2, 3, 1) -> Reshape [N, H*W*C] -> MatMul (+ Add) ->
    Relu -> MatMul: Keras' Flatten on NHWC as tf2onnx writes it (VGG-16's fc1; tf2onnx
    drops the Add of a bias that is all zeros, as Keras initialises it)."""
    n = Net(12)
    x = n.op("MaxPool", [n.conv("input", 3, 16)], kernel_shape=[2, 2], strides=[2, 2])
    nhwc = n.op("Transpose", [x], perm=[0, 2, 3, 1])
    flat = n.op("Reshape", [nhwc, int64(n, [-1, 4 * 4 * 16], "shape")])
    w1 = n.const(n.rng.normal(0, np.sqrt(2 / 256), (256, 32)), "fc1")
    hidden = n.op("MatMul", [flat, w1])
    if bias:
        hidden = n.op("Add", [hidden, n.const(n.rng.normal(0, 0.1, 32), "b1")])
    hidden = n.op("Relu", [hidden])
    output(n, n.op("MatMul", [hidden, n.const(n.rng.normal(0, 0.25, (32, 10)), "fc2")]))
    return n.model([("input", [1, 3, 8, 8])], [("output", [1, 10])], "nhwc_flatten")


def test_nhwc_flatten_transpose_goes_into_the_dense_weights():
    model = nhwc_flatten_net()
    graph = float_ir(model)
    assert not any(isinstance(n, ir.Transpose) for n in graph.nodes)
    assert [n.op for n in graph.nodes] == ["Conv", "Pool", "Reshape", "Dense", "Dense"]
    assert_float_ir_matches_onnxruntime(graph, model)
    assert_calibrated_matches_onnxruntime(model)


@pytest.mark.parametrize("activation_type", ACTIVATION_TYPES)
def test_nhwc_flatten_transpose_qdq(activation_type, tmp_path):
    """Used to fail with "Transpose '...' has no device lowering"; bit-equal now (measured).
    Without the bias Add: onnxruntime rounds the MatMul to int8, then adds the bias as a
    QLinearAdd and rounds again, where our Dense adds the bias before its one rounding (with
    it: 98.3% within 1 LSB, max 2)."""
    assert_qdq_within_one_lsb(nhwc_flatten_net(bias=False), activation_type, tmp_path)


def test_a_transpose_read_elsewhere_stays():
    """The Transpose has a second reader (a graph output): the weights are left alone."""
    model = nhwc_flatten_net()
    nhwc = next(n.output[0] for n in model.graph.node if n.op_type == "Transpose")
    model.graph.output.append(helper.make_tensor_value_info(nhwc, TensorProto.FLOAT, None))
    graph = float_ir(model)
    assert sum(isinstance(n, ir.Transpose) for n in graph.nodes) == 1
    assert_float_ir_matches_onnxruntime(graph, model)


# --- L2 normalisation as TensorFlow exporters write it ----------------------------------------


def l2norm_net(form: str, opset: int = 13) -> onnx.ModelProto:
    """conv -> ReLU -> L2 normalisation over channels (written in ``form``) * gamma -> conv."""
    n = Net(13)
    x = n.conv("input", 3, 16)
    axes = int64(n, [1], "axes")
    if form in ("tf2onnx", "sum_of_mul"):  # Square as Mul(x, x), Sum: tf2onnx at opset 13
        squares = n.op("ReduceSum", [n.op("Mul", [x, x]), axes], keepdims=1)
    elif opset >= 18:
        squares = n.op("ReduceSumSquare", [x, axes], keepdims=1)
    else:
        squares = n.op("ReduceSumSquare", [x], axes=[1], keepdims=1)
    eps = n.const(np.full((1, 1, 1, 1), 1e-12), "eps")
    gamma = n.const(np.linspace(10, 30, 16).reshape(1, 16, 1, 1), "gamma")
    if form == "add_div":  # x / sqrt(sum + eps) * gamma
        norm = n.op("Sqrt", [n.op("Add", [squares, eps])])
        y = n.op("Mul", [n.op("Div", [x, norm]), gamma])
    elif form == "one_over":  # x * (1 / sqrt(max(sum, eps))) * gamma
        inverse = n.op("Div", [n.const(np.float32(1.0), "one"),
                               n.op("Sqrt", [n.op("Max", [squares, eps])])])
        y = n.op("Mul", [n.op("Mul", [x, inverse]), gamma])
    else:  # tf.math.l2_normalize: x * rsqrt(max(sum, eps)), gamma folded in by tf2onnx
        inverse = n.op("Reciprocal", [n.op("Sqrt", [n.op("Max", [squares, eps])])])
        y = n.op("Mul", [x, n.op("Mul", [inverse, gamma])])
    output(n, n.conv(y, 16, 8, relu=False))
    graph = helper.make_graph(
        n.nodes, "l2", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 12, 12])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8, 12, 12])], n.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


FORMS = [("tf2onnx", 13), ("sum_square", 13), ("sum_square", 18), ("add_div", 13),
         ("one_over", 13)]


@pytest.mark.parametrize("form, opset", FORMS)
def test_l2_normalisation_forms_are_one_l2norm(form, opset):
    model = l2norm_net(form, opset)
    graph = compiler.load_onnx(model)
    assert [n.op for n in graph.nodes] == ["Conv", "Activation", "L2Norm", "Conv", "Identity"]
    (l2,) = [n for n in graph.nodes if isinstance(n, ir.L2Norm)]
    np.testing.assert_allclose(graph.const(l2.scale), np.linspace(10, 30, 16), rtol=1e-6)
    assert l2.axis == 1 and l2.eps == pytest.approx(1e-6)  # sqrt of the eps under the root
    compiler.optimize(graph)
    assert_float_ir_matches_onnxruntime(graph, model)


def test_l2_normalisation_calibrated():
    assert_calibrated_matches_onnxruntime(l2norm_net("tf2onnx"))


NORM_OPS = ("Mul", "ReduceSum", "Max", "Sqrt", "Reciprocal")


@pytest.mark.parametrize("activation_type", ACTIVATION_TYPES)
def test_l2_normalisation_qdq(activation_type, tmp_path):
    """Used to fail (no handler for the Reciprocal times gamma). quantize_static quantizes
    every Mul, so by default it rounds x * x, 1/||x|| and 1/||x|| * gamma to 8 bits; quantized
    with the normalisation's nodes left in float (nodes_to_exclude) onnxruntime computes it in
    float32 like L2Norm: bit-equal (measured, u8 and s8)."""
    model = l2norm_net("tf2onnx")
    norm = [n.name for n in model.graph.node if n.op_type in NORM_OPS]
    assert_qdq_within_one_lsb(model, activation_type, tmp_path, nodes_to_exclude=norm)


def test_l2_normalisation_fully_quantized_is_closer_to_float_than_onnxruntime(tmp_path):
    """With every Mul quantized, onnxruntime's int8 result drifts from the float model (the
    squares and 1/||x|| in 8 bits); L2Norm keeps them exact and stays closer (measured cosine
    to fp32: onnxruntime 0.9926-0.9939, accel 0.9996)."""
    model = l2norm_net("tf2onnx")
    qdq = quantize(model, inputs_for(model, 8, 0), tmp_path, "QUInt8")
    compiled = api.compile(qdq, device=FASTEST, progress=False)
    for x in inputs_for(model, 2, 1):
        reference = ort_outputs(model, x)["output"]
        ours = cosine(compiled.run(x)["output"], reference)
        theirs = cosine(ort_outputs(qdq, x)["output"], reference)
        assert ours >= 0.999 and ours > theirs, (ours, theirs)


def test_a_reduce_sum_square_read_elsewhere_is_not_swallowed():
    model = l2norm_net("sum_square")
    squares = next(n.output[0] for n in model.graph.node if n.op_type == "ReduceSumSquare")
    model.graph.output.append(helper.make_tensor_value_info(squares, TensorProto.FLOAT, None))
    with pytest.raises(compiler.UnsupportedOpError, match="ReduceSumSquare.*L2 normalisation"):
        compiler.load_onnx(model)


# --- a dynamic batch ----------------------------------------------------------------------


def dynamic_batch_net() -> onnx.ModelProto:
    model = padded_pool_net(True)
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "unk__1"
    return model


def test_a_dynamic_batch_is_the_calibration_batch_or_one():
    model = dynamic_batch_net()
    calibration = [np.random.default_rng(i).normal(0, 1, (2, 3, 32, 32)).astype(np.float32)
                   for i in range(4)]
    with pytest.warns(DynamicBatchWarning, match="'input'.*batch 2 .the calibration"):
        compiled = api.compile(model, calibration=calibration, device=FASTEST, progress=False)
    assert compiled.inputs[0].shape == (2, 3, 32, 32)
    x = calibration[0]
    assert cosine(compiled.run(x)["output"], ort_outputs(model, x)["output"]) >= 0.99
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # input_shapes= chooses: no notice
        graph = compiler.load_onnx(model, input_shapes={"input": (3, 3, 32, 32)}, batch=2)
    assert graph.shape("input") == (3, 3, 32, 32)
    with pytest.warns(DynamicBatchWarning, match="batch 1 .the default"):
        graph = compiler.load_onnx(model)
    assert graph.shape("input") == (1, 3, 32, 32)


# --- an int8 QDQ model's average pool over values that can be negative ----------------------


def signed_pool_net(fan_out: bool) -> onnx.ModelProto:
    """conv (no ReLU) -> AveragePool 2x2 -> conv: a DenseNet transition as tf2onnx writes
    Keras' (BN -> ReLU -> conv -> pool), whose pool input has a zero point inside its range;
    with ``fan_out`` the pooled tensor is read twice (a conv and a Concat, as in DenseNet)."""
    n = Net(14)
    x = n.conv("input", 3, 16, relu=False)
    pooled = n.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
    y = n.conv(pooled, 16, 16, relu=False)
    if fan_out:
        y = n.op("Concat", [pooled, y], axis=1)
    output(n, n.conv(y, 32 if fan_out else 16, 8, relu=False))
    return n.model([("input", [1, 3, 16, 16])], [("output", [1, 8, 8, 8])], "signed_pool")


@pytest.mark.parametrize("activation_type", ACTIVATION_TYPES)
@pytest.mark.parametrize("fan_out", [False, True], ids=["one_reader", "two_readers"])
def test_qdq_average_pool_of_signed_values(fan_out, activation_type, tmp_path):
    """uint8: onnxruntime's QLinearAveragePool adds the zero point before rounding. int8 on
    x86: onnxruntime turns a tensor's int8 Q/DQ pair into uint8 only where it has one reader;
    a pool whose tensors stay int8 runs as a float AveragePool and a QuantizeLinear, which
    rounds first (storage offset -z_y). Bit-equal all four ways (measured; for int8 with one
    rule for both nets, 86% and 87% of the values were within 1 LSB, max 4-5 LSB on the
    other net; DenseNet-121's export 98.1% with the uint8 rule)."""
    compiled = assert_qdq_within_one_lsb(signed_pool_net(fan_out), activation_type, tmp_path)
    (pool,) = [s.attrs["params"] for s in compiled.lowered.steps if s.op == "pool"]
    rounds_first = fan_out and activation_type == "QInt8"
    assert pool["storage_offset"] == (-pool["output_zero_point"] if rounds_first else 128)
