"""The ONNX frontend: graphs in two exporters' styles, patterns, and clear errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from accel import compiler
from accel.compiler import ir
from accel.compiler.errors import (CompileError, ModelFormatError, ShapeError,
                                   UnsupportedOpError)
from _models_graphs import Maker, assert_close, run_ort, tf2onnx_style, torch_style


def random_input(shape, seed=0):
    return np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)


@pytest.mark.parametrize("make, shape", [(torch_style, (1, 3, 32, 32)),
                                         (tf2onnx_style, (1, 24, 24, 3))])
def test_exporter_styles_match_onnxruntime_before_any_pass(make, shape):
    model = make()
    graph = compiler.load_onnx(model)
    graph.check()
    for seed in (0, 1):
        x = random_input(shape, seed)
        assert_close(compiler.interpret(graph, x), run_ort(model, x))


def test_torch_style_nodes():
    graph = compiler.load_onnx(torch_style())
    ops = graph.op_counts()
    assert ops["Conv"] == 4 and ops["BatchNorm"] == 4 and ops["Gemm"] == 1
    assert ops["Identity"] == 2  # Dropout and Identity
    pool1 = next(n for n in graph.nodes if n.name == "pool1")
    assert pool1.pads == (0, 0, 1, 1)  # ceil_mode as extra end padding: 16 -> 8
    view = next(n for n in graph.nodes if n.name == "view")
    assert isinstance(view, ir.Reshape) and view.shape == (1, 12)
    relu6 = next(n for n in graph.nodes if n.name == "relu6")
    assert relu6.clamp.kind == "relu6"


def test_tf2onnx_style_nodes():
    graph = compiler.load_onnx(tf2onnx_style())
    l2 = [n for n in graph.nodes if isinstance(n, ir.L2Norm)]
    assert len(l2) == 1 and l2[0].axis == 1 and l2[0].scale is None
    assert not any(isinstance(n, ir.Binary) for n in graph.nodes)
    conv1 = next(n for n in graph.nodes if n.name == "conv1")
    assert conv1.pads == (0, 0, 1, 1)  # SAME_UPPER, stride 2 on 24: pad 1 at the end
    mul = next(n for n in graph.nodes if n.name == "bn.mul")
    assert isinstance(mul, ir.Affine) and mul.scale is not None and mul.shift is None


def test_depthwise_conv_and_ceil_mode_average_pool():
    """MobileNet-like: grouped 3x3 conv, BN, ReLU6, an average pool in ceil mode, opset 11
    Softmax semantics."""
    m = Maker(5)
    y = m.op("Conv", ["input", m.weight(8, 1, 3, 3)], group=8, pads=[1, 1, 1, 1],
             strides=[2, 2], name="depthwise")
    y = m.op("Clip", [m.bn(y, 8)], min=0.0, max=6.0, name="relu6")
    y = m.op("Conv", [y, m.weight(6, 4, 1, 1)], group=2, name="grouped")
    y = m.op("AveragePool", [y], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1, name="avg")
    y = m.op("Softmax", [m.op("Flatten", [y], axis=1)], axis=1, name="probs")
    model = m.model([("input", [1, 8, 9, 9])], [(y, [1, 54])], opset=10)
    graph = compiler.load_onnx(model)
    assert next(n for n in graph.nodes if n.name == "avg").pads == (0, 0, 1, 1)
    x = random_input((1, 8, 9, 9))
    expected = run_ort(model, x)
    assert_close(compiler.interpret(graph, x), expected)
    compiler.optimize(graph)
    assert graph.op_counts() == {"Conv": 2, "Pool": 1, "Reshape": 1, "Softmax": 1}
    assert graph.nodes[0].clamp.kind == "relu6" and graph.nodes[0].groups == 8
    assert_close(compiler.interpret(graph, x), expected)


def test_ssd_l2norm_pattern_is_one_node():
    import accel.models as models
    graph = compiler.load_onnx(models.build("ssd_vgg300"))
    (l2,) = [n for n in graph.nodes if isinstance(n, ir.L2Norm)]
    np.testing.assert_array_equal(graph.const(l2.scale), np.full(512, 20.0, np.float32))
    assert not any(isinstance(n, (ir.Binary, ir.Affine)) for n in graph.nodes)


def l2_model(variant: str) -> onnx.ModelProto:
    m = Maker(3)
    x = "input"
    if variant == "reduce_l2":
        norm = m.op("ReduceL2", [x], axes=[1], keepdims=1)
        y = m.op("Div", [x, m.op("Add", [norm, m.const(np.array(1e-10, np.float32))])])
    else:  # Pow / ReduceSum / Sqrt, scale [C, 1, 1]
        total = m.op("ReduceSum", [m.op("Pow", [x, m.const(np.array(2.0, np.float32))]),
                                   m.const(np.array([1], np.int64))], keepdims=1)
        y = m.op("Div", [x, m.op("Sqrt", [total])])
        y = m.op("Mul", [y, m.const(np.arange(1, 9, dtype=np.float32).reshape(8, 1, 1))])
    return m.model([("input", [1, 8, 5, 5])], [(y, [1, 8, 5, 5])])


@pytest.mark.parametrize("variant", ["reduce_l2", "pow_sum_sqrt"])
def test_l2norm_variants(variant):
    model = l2_model(variant)
    graph = compiler.load_onnx(model)
    assert [n.op for n in graph.nodes] == ["L2Norm"]
    x = random_input((1, 8, 5, 5))
    assert_close(compiler.interpret(graph, x), run_ort(model, x))


def test_reduce_l2_used_elsewhere_is_not_swallowed():
    m = Maker()
    norm = m.op("ReduceL2", ["input"], axes=[1], keepdims=1, name="norm")
    y = m.op("Div", ["input", norm])
    model = m.model([("input", [1, 4, 3, 3])], [(y, [1, 4, 3, 3]), (norm, [1, 1, 3, 3])])
    with pytest.raises(UnsupportedOpError, match="ReduceL2.*'norm'.*L2 normalisation"):
        compiler.load_onnx(model)


# --- errors ---------------------------------------------------------------------------------


def test_not_onnx(tmp_path):
    text = tmp_path / "model.onnx"
    text.write_text("this is a text file, not a protobuf\n" * 10)
    with pytest.raises(ModelFormatError, match="not an ONNX model"):
        compiler.load_onnx(text)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(ModelFormatError):
        compiler.load_onnx(junk)
    with pytest.raises(ModelFormatError, match="does not exist"):
        compiler.load_onnx(tmp_path / "missing.onnx")
    with pytest.raises(ModelFormatError, match="expected an ONNX model"):
        compiler.load_onnx(42)
    with pytest.raises(ModelFormatError, match="no nodes"):
        compiler.load_onnx(onnx.ModelProto())


def test_truncated_file(tmp_path):
    data = torch_style().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError):
        compiler.load_onnx(path)


def test_model_from_path_and_bytes(tmp_path):
    model = torch_style()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    x = random_input((1, 3, 32, 32))
    expected = compiler.interpret(compiler.load_onnx(model), x)
    for source in (path, str(path), model.SerializeToString()):
        assert_close(compiler.interpret(compiler.load_onnx(source), x), expected, rtol=0)


def test_unsupported_op_names_op_and_node():
    m = Maker()
    y = m.op("Erf", ["input"], name="my_erf_node")
    model = m.model([("input", [1, 4])], [(y, [1, 4])])
    with pytest.raises(UnsupportedOpError, match="'Erf'.*'my_erf_node'") as info:
        compiler.load_onnx(model)
    assert info.value.op_type == "Erf" and info.value.node_name == "my_erf_node"


def test_unsupported_attribute_and_custom_domain():
    m = Maker()
    y = m.op("MaxPool", ["input"], kernel_shape=[2, 2], dilations=[2, 2], name="dilated")
    model = m.model([("input", [1, 2, 8, 8])], [(y, [1, 2, 6, 6])])
    with pytest.raises(UnsupportedOpError, match="'dilated'.*dilated pooling"):
        compiler.load_onnx(model)
    model = torch_style()
    model.graph.node[0].domain = "com.example"
    with pytest.raises(UnsupportedOpError, match="custom domain 'com.example'"):
        compiler.load_onnx(model)


def dynamic_batch_model() -> onnx.ModelProto:
    m = Maker()
    y = m.op("Relu", [m.op("Conv", ["input", m.weight(4, 3, 3, 3)], pads=[1, 1, 1, 1])])
    graph = helper.make_graph(m.nodes, "dyn",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                             ["batch", 3, 16, 16])],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT,
                                                             ["batch", 4, 16, 16])],
                              initializer=m.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_dynamic_shapes_need_input_shapes():
    model = dynamic_batch_model()
    with pytest.raises(ShapeError, match=r"'input' has a dynamic shape.*input_shapes="):
        compiler.load_onnx(model)
    graph = compiler.load_onnx(model, input_shapes={"input": (2, 3, 16, 16)})
    assert graph.shape(graph.outputs[0]) == (2, 4, 16, 16)
    x = random_input((2, 3, 16, 16))
    assert_close(compiler.interpret(graph, x), run_ort(model, x))
    with pytest.raises(ShapeError, match="model says"):
        compiler.load_onnx(model, input_shapes={"input": (2, 4, 16, 16)})
    with pytest.raises(ShapeError, match="not inputs"):
        compiler.load_onnx(model, input_shapes={"images": (1, 3, 16, 16)})


def test_non_float_input_is_refused():
    m = Maker()
    y = m.op("Cast", ["input"], to=TensorProto.FLOAT)
    graph = helper.make_graph(m.nodes, "u8",
                              [helper.make_tensor_value_info("input", TensorProto.UINT8, [1, 4])],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(CompileError, match="'input'.*uint8.*float32"):
        compiler.load_onnx(model)


def test_interpreter_checks_its_input():
    graph = compiler.load_onnx(torch_style())
    with pytest.raises(ShapeError, match=r"\(1, 3, 32, 32\)"):
        compiler.interpret(graph, np.zeros((1, 3, 30, 30), np.float32))
    with pytest.raises(CompileError, match="missing input"):
        compiler.interpret(graph, {"other": np.zeros((1, 3, 32, 32), np.float32)})


def test_every_handler_is_named_after_its_op():
    for op_type, fn in compiler.HANDLERS.items():
        assert fn.__name__ in (op_type, "_pattern_only"), op_type
    assert {"Conv", "BatchNormalization", "Relu", "MaxPool", "Add", "GlobalAveragePool",
            "Flatten", "Gemm", "Softmax", "Concat", "AveragePool", "Reshape", "Transpose",
            "MatMul", "Clip", "Dropout", "Identity"} <= set(compiler.HANDLERS)


# --- QDQ models (onnxruntime's quantize_static) ---------------------------------------------


def qdq_model(tmp_path, activation: str, per_channel: bool) -> onnx.ModelProto:
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter({"input": random_input((1, 3, 32, 32), seed)}
                                for seed in range(4))

        def get_next(self):
            return next(self.batches, None)

    onnx.save(torch_style(), tmp_path / "fp32.onnx")
    quantize_static(str(tmp_path / "fp32.onnx"), str(tmp_path / "qdq.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=getattr(QuantType, activation), weight_type=QuantType.QInt8)
    return onnx.load(tmp_path / "qdq.onnx")


@pytest.mark.parametrize("activation, per_channel", [("QInt8", True), ("QUInt8", False)])
def test_qdq_model_scales_become_annotations(tmp_path, activation, per_channel):
    import onnxruntime as ort

    model = qdq_model(tmp_path, activation, per_channel)
    options = ort.SessionOptions()  # Q/DQ executed as written, not fused into int8 kernels
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    x = random_input((1, 3, 32, 32), seed=9)
    expected = run_ort(session, x)
    graph = compiler.load_onnx(model)
    assert graph.op_counts()["Quantize"] > 10
    assert_close(compiler.interpret(graph, x), expected, rtol=1e-6)  # Q/DQ as ONNX defines

    compiler.optimize(graph)
    assert all(isinstance(n, ir.CANONICAL_NODE_TYPES) for n in graph.nodes), graph.summary()
    dtype = "int8" if activation == "QInt8" else "uint8"
    q_input = graph.tensors["input"].quant
    assert q_input is not None and q_input.dtype == dtype and q_input.axis is None
    annotated = [t for t in graph.tensors.values() if t.quant is not None and not t.is_const]
    assert len(annotated) >= 8
    branch = next(n for n in graph.nodes if n.name == "branch.conv")  # no BN folded in
    weight_quant = graph.tensors[branch.weight].quant
    assert weight_quant is not None and weight_quant.dtype == "int8"
    assert weight_quant.axis == (0 if per_channel else None)
    fc = next(n for n in graph.nodes if isinstance(n, ir.Dense))
    assert graph.tensors[fc.weight].quant is None  # Gemm alpha=0.5 changed the weights
    # rounding every annotated tensor reproduces the QDQ model within one output step
    out = graph.outputs[0]
    step = graph.tensors[out].quant.scale
    got = compiler.interpret(graph, x, fake_quant=True)[out]
    assert np.abs(got - expected[out]).max() <= 1.01 * step
