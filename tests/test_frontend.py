"""The ONNX frontend: graphs in two exporters' styles, patterns, and clear errors."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from accel import compiler
from accel.compiler import folding, frontend, ir
from accel.compiler.errors import (CompileError, DynamicBatchWarning, ModelFormatError,
                                   ShapeError, UnsupportedOpError)
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


def raw_normalize_model() -> onnx.ModelProto:
    """F.normalize(x, dim=1) * weight.view(1, -1, 1, 1) as torch.onnx(dynamo=True,
    optimize=False) writes it: the axes made by a Reshape, eps by CastLike(1e-12, norm), the
    clamp_min a Clip, the norm Expand-ed to x's shape, the weight reshaped to a computed shape."""
    m = Maker(7)
    x = m.op("Conv", ["input", m.weight(8, 3, 1, 1)], name="conv")
    axes = m.op("Reshape", [m.op("Constant", [], value_ints=[1]),
                            m.op("Constant", [], value_ints=[-1])])
    norm = m.op("ReduceL2", [x, axes], keepdims=1)
    eps = m.op("Constant", [], value=helper.make_tensor("eps", TensorProto.FLOAT, [], [1e-12]))
    norm = m.op("Clip", [norm, m.op("CastLike", [eps, norm])])
    shape = m.op("Concat", [m.op("Constant", [], value_ints=[1]),
                            m.op("Constant", [], value_ints=[8, 5, 5])], axis=0)
    y = m.op("Div", [x, m.op("Expand", [norm, shape])], name="normalize")
    view = m.op("Reshape", [m.const(np.arange(1, 9, dtype=np.float32)),
                            m.op("Constant", [], value_ints=[1, -1, 1, 1])], allowzero=1)
    y = m.op("Mul", [y, view], name="scaled")
    return m.model([("input", [1, 3, 5, 5])], [(y, [1, 8, 5, 5])], opset=18)


def test_raw_torch_normalize_is_one_l2norm():
    model = raw_normalize_model()
    graph = compiler.load_onnx(model)
    assert [n.op for n in graph.nodes] == ["Conv", "L2Norm"]
    l2 = graph.nodes[1]
    assert l2.axis == 1 and l2.eps == pytest.approx(1e-12)
    np.testing.assert_array_equal(graph.const(l2.scale), np.arange(1, 9, dtype=np.float32))
    x = random_input((1, 3, 5, 5))
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


def test_a_dynamic_batch_defaults_with_a_notice_other_dynamic_dims_need_input_shapes():
    model = dynamic_batch_model()
    with pytest.warns(DynamicBatchWarning, match=r"'input' has a dynamic batch dimension; "
                      r"compiling for batch 1 \(the default; input_shapes="):
        graph = compiler.load_onnx(model)
    assert graph.shape("input") == (1, 3, 16, 16)
    with pytest.warns(DynamicBatchWarning, match="batch 3 .the calibration inputs' batch"):
        assert compiler.load_onnx(model, batch=3).shape("input") == (3, 3, 16, 16)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    with pytest.raises(ShapeError, match=r"'input' has a dynamic shape.*input_shapes="):
        compiler.load_onnx(model)
    model = dynamic_batch_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # input_shapes= fixes the batch: no notice
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


# --- constant folding of shape arithmetic ---------------------------------------------------

I64_MIN = np.iinfo(np.int64).min


def i64(*values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def f32(*values) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def fold_case(op, inputs, expected, opset=20, activations=(), reference=True, **attrs):
    """One op folded from ``inputs`` (None: an absent optional input); the indices in
    ``activations`` are graph inputs of that shape instead of constants (read for their shape
    and type only). ``reference``: whether ONNX's reference implementation has the op at
    ``opset`` to compare with."""
    inputs = [None if v is None else np.asarray(v) for v in inputs]
    ident = f"{op}-{opset}-" + "-".join(sorted(attrs)) + ("-act" if activations else "")
    return pytest.param(op, inputs, np.asarray(expected), opset, tuple(activations), reference,
                        attrs, id=ident)


ARANGE = np.arange(24, dtype=np.int64).reshape(2, 3, 4)
FOLD_CASES = [
    fold_case("Constant", [], i64(1, -1), value_ints=[1, -1]),
    fold_case("Constant", [], np.float32(2.5), value_float=2.5),
    fold_case("Constant", [], f32(1, 2), value=helper.make_tensor("v", TensorProto.FLOAT, [2],
                                                                  [1, 2])),
    fold_case("Identity", [i64(3, 4)], i64(3, 4)),
    fold_case("Shape", [np.zeros((2, 3, 4, 5), np.float32)], i64(2, 3, 4, 5), activations=[0]),
    fold_case("Shape", [np.zeros((2, 3, 4, 5), np.float32)], i64(3, 4), activations=[0],
              start=1, end=-1),
    fold_case("Size", [np.zeros((2, 3, 4), np.float32)], np.int64(24), activations=[0]),
    fold_case("Cast", [f32(1.7, -1.7, 0.2)], i64(1, -1, 0), to=TensorProto.INT64),
    fold_case("Cast", [i64(0, 2)], np.array([False, True]), to=TensorProto.BOOL),
    fold_case("CastLike", [np.float32(0), np.zeros((1, 3), np.float32)], np.float32(0),
              activations=[1]),
    fold_case("CastLike", [i64(3, 1), np.zeros((1, 3), np.float32)], f32(3, 1),
              activations=[1]),
    fold_case("Reshape", [ARANGE, i64(0, -1)], ARANGE.reshape(2, 12)),
    fold_case("Reshape", [np.zeros((0, 3), np.int64), i64(3, 0)], np.zeros((3, 0), np.int64),
              allowzero=1),
    fold_case("Reshape", [ARANGE, i64(-1)], ARANGE.reshape(-1), opset=5),
    fold_case("Reshape", [ARANGE], ARANGE.reshape(4, 6), opset=4, reference=False,
              shape=[4, -1]),
    fold_case("Flatten", [ARANGE], ARANGE.reshape(6, 4), axis=2),
    fold_case("Squeeze", [i64(7).reshape(1, 1, 1)], i64(7), opset=11, axes=[0, 2]),
    fold_case("Squeeze", [i64(7, 8).reshape(1, 2, 1), i64(-1)], i64(7, 8).reshape(1, 2)),
    fold_case("Squeeze", [i64(7, 8).reshape(1, 2, 1)], i64(7, 8)),
    fold_case("Unsqueeze", [i64(5)], i64(5).reshape(1, 1, 1), opset=11, axes=[0, 2]),
    fold_case("Unsqueeze", [i64(5, 6), i64(-1)], i64(5, 6).reshape(2, 1)),
    fold_case("Concat", [i64(1), i64(-1, 40)], i64(1, -1, 40), axis=0),
    fold_case("Concat", [ARANGE[:, :1], ARANGE[:, 2:]], ARANGE[:, [0, 2]], axis=-2),
    fold_case("Gather", [i64(2, 3, 4, 5), np.int64(-1)], np.int64(5), axis=0),
    fold_case("Gather", [ARANGE[0], i64(0, 3, 3, 1).reshape(2, 2)],
              ARANGE[0][:, [[0, 3], [3, 1]]], axis=1),
    fold_case("Slice", [np.arange(10)], np.arange(10)[2:], opset=9, starts=[2], ends=[1000]),
    fold_case("Slice", [np.arange(10), i64(-1), i64(I64_MIN), i64(0), i64(-3)], i64(9, 6, 3, 0)),
    fold_case("Slice", [ARANGE, i64(1), i64(-1), i64(2)], ARANGE[:, :, 1:-1]),
    fold_case("Expand", [np.float32(0), i64(4)], np.zeros(4, np.float32)),
    fold_case("Expand", [i64(1, 2, 3).reshape(3, 1), i64(2, 1, 4)],
              np.broadcast_to(i64(1, 2, 3).reshape(3, 1), (2, 3, 4))),
    fold_case("Tile", [i64(1, 2).reshape(1, 2), i64(2, 2)], np.tile(i64(1, 2), (2, 2))),
    fold_case("Transpose", [ARANGE], ARANGE.transpose()),
    fold_case("Transpose", [ARANGE], ARANGE.transpose(1, 0, 2), perm=[1, 0, 2]),
    fold_case("Range", [np.int64(1), np.int64(10), np.int64(3)], i64(1, 4, 7)),
    fold_case("Range", [np.float32(5), np.float32(2), np.float32(-1.5)], f32(5, 3.5)),
    fold_case("Range", [np.int64(5), np.int64(1), np.int64(1)], i64()),
    fold_case("ConstantOfShape", [i64(2, 3)], np.zeros((2, 3), np.float32)),
    fold_case("ConstantOfShape", [i64(2)], i64(7, 7),
              value=helper.make_tensor("v", TensorProto.INT64, [1], [7])),
    fold_case("Add", [i64(1, 2), np.int64(10)], i64(11, 12)),
    fold_case("Sub", [i64(1, 2), i64(3, 3)], i64(-2, -1)),
    fold_case("Mul", [i64(2, 3), np.int64(4)], i64(8, 12)),
    fold_case("Mul", [np.float32(32), np.float32(0.5)], np.float32(16)),
    fold_case("Div", [i64(7, -7, 7, -7), i64(2, 2, -2, -2)], i64(3, -3, -3, 3)),  # truncates
    fold_case("Div", [np.float32(7), np.float32(2)], np.float32(3.5)),
    fold_case("Mod", [i64(-7, 7), i64(3, -3)], i64(2, -2)),
    fold_case("Mod", [f32(-7.5, 7.5), f32(2, 2)], f32(-1.5, 1.5), fmod=1),
    fold_case("Pow", [np.float32(2), np.int64(3)], np.float32(8)),
    fold_case("Neg", [i64(1, -2)], i64(-1, 2)),
    fold_case("Abs", [i64(1, -2)], i64(1, 2)),
    fold_case("Floor", [f32(1.5, -1.5)], f32(1, -2)),
    fold_case("Ceil", [f32(1.5, -1.5)], f32(2, -1)),
    fold_case("Sqrt", [f32(4, 9)], f32(2, 3)),
    fold_case("Reciprocal", [f32(4, 0.5)], f32(0.25, 2)),
    fold_case("Sign", [i64(-3, 0, 3)], i64(-1, 0, 1)),
    fold_case("Equal", [i64(1, 2, 3), np.int64(2)], np.array([False, True, False])),
    fold_case("Less", [i64(1, 2, 3), np.int64(2)], np.array([True, False, False])),
    fold_case("LessOrEqual", [i64(1, 2, 3), np.int64(2)], np.array([True, True, False])),
    fold_case("Greater", [i64(1, 2, 3), np.int64(2)], np.array([False, False, True])),
    fold_case("GreaterOrEqual", [i64(1, 2, 3), np.int64(2)], np.array([False, True, True])),
    fold_case("And", [np.array([True, True, False]), np.array([True, False, False])],
              np.array([True, False, False])),
    fold_case("Or", [np.array([True, False]), np.array([False, False])], np.array([True, False])),
    fold_case("Xor", [np.array([True, True]), np.array([True, False])], np.array([False, True])),
    fold_case("Not", [np.array([True, False])], np.array([False, True])),
    fold_case("Max", [i64(1, 5), i64(4, 2), i64(3, 3)], i64(4, 5)),
    fold_case("Min", [i64(1, 5), i64(4, 2)], i64(1, 2)),
    fold_case("Where", [np.array([True, False]), i64(1, 2), np.int64(-1)], i64(1, -1)),
    fold_case("Clip", [i64(-5, 3, 10), np.int64(0), np.int64(6)], i64(0, 3, 6)),
    fold_case("Clip", [i64(-5, 3, 10), None, np.int64(6)], i64(-5, 3, 6)),
    fold_case("Clip", [f32(-1, 7)], f32(0, 6), opset=6, min=0.0, max=6.0),
    fold_case("ReduceProd", [ARANGE[0] + 1], i64(45, 120, 231, 384), opset=13, axes=[0],
              keepdims=0),
    fold_case("ReduceSum", [ARANGE[0], i64(1)], i64(6, 22, 38).reshape(3, 1), opset=13),
    fold_case("ReduceMax", [ARANGE[0], i64()], ARANGE[0], noop_with_empty_axes=1),
    fold_case("ReduceMin", [ARANGE[0]], np.zeros((1, 1), np.int64)),
    fold_case("ReduceMean", [f32(1, 2, 3, 6).reshape(2, 2), i64(-1)], f32(1.5, 4.5),
              keepdims=0),
]


def single_node_model(node: onnx.NodeProto, inputs, activations, opset) -> onnx.ModelProto:
    """``node`` alone in a graph: its inputs are initializers, or graph inputs for the indices
    in ``activations``."""
    graph_inputs, initializers = [], []
    for index, (name, value) in enumerate(zip(node.input, inputs)):
        if not name:
            continue
        if index in activations:
            graph_inputs.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape))
        else:
            initializers.append(numpy_helper.from_array(value, name))
    graph = helper.make_graph([node], "fold", graph_inputs,
                              [helper.make_empty_tensor_value_info("out")],
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("op, inputs, expected, opset, activations, reference, attrs",
                         FOLD_CASES)
def test_folding_computes_what_onnx_defines(op, inputs, expected, opset, activations, reference,
                                            attrs):
    """Each op of the folding table, alone in a tiny graph: the frontend makes its output the
    expected constant, value and type, the same as ONNX's reference implementation."""
    names = [f"in{i}" if v is not None else "" for i, v in enumerate(inputs)]
    node = helper.make_node(op, names, ["out"], name=f"my_{op}", **attrs)
    model = single_node_model(node, inputs, activations, opset)
    fe = frontend.Frontend(model, None)
    fe.convert(node)
    folded = fe.graph.const("out")
    assert folded is not None, f"{op} was not folded"
    assert folded.dtype == expected.dtype and folded.shape == expected.shape, folded
    np.testing.assert_array_equal(folded, expected)
    if reference:
        feeds = {n: v for i, (n, v) in enumerate(zip(names, inputs)) if i in activations}
        (want,) = ReferenceEvaluator(model).run(None, feeds)
        assert want.dtype == folded.dtype
        np.testing.assert_array_equal(folded, want)


def test_every_folded_op_has_a_case():
    assert {case.values[0] for case in FOLD_CASES} == set(folding.FOLDERS)


def raw_dynamo_model() -> onnx.ModelProto:
    """A conv without bias -> x * scale.view(1, -1, 1, 1) -> clamp(0, 6) -> x.mean((2, 3)) ->
    x.view(x.size(0), -1) -> linear, with the shape arithmetic written out as
    torch.onnx(dynamo=True, optimize=False) does (its zero bias: Shape(weight)[:1], Expand-ed,
    CastLike(0.0), Expand) and a batch of 2 read from the input's shape."""
    m = Maker(4)
    w = m.weight(4, 3, 3, 3)
    channels = m.op("Shape", [w], start=0, end=1)
    channels = m.op("Where", [m.op("Equal", [channels, m.const(i64(-1))]),  # expand(-1) = keep
                              m.op("ConstantOfShape", [m.op("Shape", [channels])],
                                   value=helper.make_tensor("one", TensorProto.INT64, [1], [1])),
                              channels])
    zero = m.op("CastLike", [m.const(np.float32(0)), "input"])
    bias = m.op("Expand", [zero, channels], name="zero_bias")
    y = m.op("Conv", ["input", w, bias], pads=[1, 1, 1, 1], name="conv")
    scale_shape = m.op("Concat", [m.op("Constant", [], value_ints=[1]),
                                  m.op("Constant", [], value_ints=[-1, 1, 1])], axis=0)
    scale = m.op("Reshape", [m.const(f32(0.5, 1, 1.5, 2)), scale_shape])  # w.view(1, -1, 1, 1)
    y = m.op("Mul", [y, scale], name="scale")
    y = m.op("Max", [y, m.op("CastLike", [m.const(np.float32(0)), y])], name="clamp_min")
    y = m.op("Min", [y, m.op("CastLike", [m.const(np.float32(6)), y])], name="clamp_max")
    rank = m.op("Size", [m.op("Shape", ["input"])])
    axes = m.op("Range", [m.const(np.int64(2)), rank, m.const(np.int64(1))])  # [2, 3]
    y = m.op("ReduceMean", [y, axes], keepdims=0, name="mean")
    batch = m.op("Gather", [m.op("Shape", ["input"]), m.const(np.int64(0))], axis=0)
    target = m.op("Concat", [m.op("Unsqueeze", [batch, m.const(i64(0))]), m.const(i64(-1))],
                  axis=0)
    y = m.op("Reshape", [y, target], allowzero=1, name="view")
    y = m.op("Gemm", [y, m.weight(5, 4), m.weight(5)], transB=1, name="fc")
    return m.model([("input", [2, 3, 8, 8])], [(y, [2, 5])], opset=18)


def test_raw_dynamo_shape_arithmetic_folds_away():
    model = raw_dynamo_model()
    graph = compiler.load_onnx(model)
    conv = next(n for n in graph.nodes if n.name == "conv")
    bias = graph.const(conv.bias)
    assert bias.dtype == np.float32 and bias.shape == (4,) and not bias.any()
    view = next(n for n in graph.nodes if n.name == "view")
    assert isinstance(view, ir.Reshape) and view.shape == (2, 4)
    scale = next(n for n in graph.nodes if n.name == "scale")
    assert isinstance(scale, ir.Affine)  # the reshaped weight is a per-channel constant
    np.testing.assert_array_equal(graph.const(scale.scale), f32(0.5, 1, 1.5, 2))
    assert graph.op_counts() == {"Conv": 1, "Affine": 1, "Activation": 2, "Pool": 1,
                                 "Reshape": 2, "Gemm": 1}
    x = random_input((2, 3, 8, 8))
    expected = run_ort(model, x)
    assert_close(compiler.interpret(graph, x), expected)
    compiler.optimize(graph)
    assert graph.op_counts() == {"Conv": 1, "Pool": 1, "Dense": 1}, graph.summary()
    assert graph.nodes[0].clamp.kind == "relu6"  # Max/Min with a constant are a clamp
    assert_close(compiler.interpret(graph, x), expected)


def legacy_squeeze_model(condition_from_input: bool = False) -> onnx.ModelProto:
    """The legacy exporter's x.squeeze(0) of a dim that was dynamic: If(size(0) == 1)."""
    m = Maker(6)
    y = m.op("Flatten", [m.op("GlobalAveragePool", ["input"])])  # [1, 3]
    if condition_from_input:
        condition = m.op("Cast", [m.op("Gather", [y, m.const(np.int64(0))], axis=1)],
                         to=TensorProto.BOOL)
        condition = m.op("Squeeze", [condition])
    else:
        batch = m.op("Gather", [m.op("Shape", [y]), m.const(np.int64(0))], axis=0)
        condition = m.op("Equal", [batch, m.const(np.int64(1))])
    then_branch = helper.make_graph(
        [helper.make_node("Squeeze", [y, "squeeze_axes"], ["squeezed"])], "then", [],
        [helper.make_empty_tensor_value_info("squeezed")],
        initializer=[numpy_helper.from_array(i64(0), "squeeze_axes")])
    else_branch = helper.make_graph([helper.make_node("Identity", [y], ["same"])], "else", [],
                                    [helper.make_empty_tensor_value_info("same")])
    y = m.op("If", [condition], then_branch=then_branch, else_branch=else_branch, name="if")
    y = m.op("Unsqueeze", [y, m.const(i64(0))])
    y = m.op("Gemm", [y, m.weight(5, 3), m.weight(5)], transB=1)
    return m.model([("input", [1, 3, 6, 6])], [(y, [1, 5])])


def test_if_with_a_constant_condition_is_its_branch():
    model = legacy_squeeze_model()
    graph = compiler.load_onnx(model)
    x = random_input((1, 3, 6, 6))
    expected = run_ort(model, x)
    assert_close(compiler.interpret(graph, x), expected)
    compiler.optimize(graph)
    assert graph.op_counts() == {"Pool": 1, "Dense": 1}, graph.summary()
    assert_close(compiler.interpret(graph, x), expected)
    with pytest.raises(UnsupportedOpError, match="'If'.*'if'.*condition is computed at run"):
        compiler.load_onnx(legacy_squeeze_model(condition_from_input=True))


def test_shape_arithmetic_on_values_still_fails_clearly():
    """What cannot be folded (it depends on the input's values) and has no handler is an
    error naming the op and the node, never a guess."""
    # a Reshape target made from a value of the activation
    m = Maker()
    y = m.op("Flatten", ["input"])
    value = m.op("Cast", [m.op("Gather", [y, m.const(i64(0))], axis=1)], to=TensorProto.INT64)
    target = m.op("Concat", [m.const(i64(1)), m.op("Squeeze", [value, m.const(i64(0))]),
                             m.const(i64(-1))], axis=0)
    y = m.op("Relu", [m.op("Reshape", ["input", target], name="by_value")])
    model = m.model([("input", [1, 4, 2, 2])], [(y, [1, 1, 16])])
    with pytest.raises(ShapeError, match="'by_value'.*computed at run time"):
        compiler.load_onnx(model)
    # a Shape of a data-dependent op
    m = Maker()
    shape = m.op("Shape", [m.op("NonZero", ["input"], name="nonzero")])
    y = m.op("Reshape", ["input", shape])
    model = m.model([("input", [1, 4])], [(y, [1, 4])])
    with pytest.raises(UnsupportedOpError, match="'NonZero'.*'nonzero'"):
        compiler.load_onnx(model)
    # an Expand that would broadcast an activation
    m = Maker()
    y = m.op("Expand", ["input", m.const(i64(3, 4))], name="broadcast")
    model = m.model([("input", [1, 4])], [(y, [3, 4])])
    with pytest.raises(UnsupportedOpError, match="'Expand'.*'broadcast'.*broadcasts"):
        compiler.load_onnx(model)


@pytest.mark.parametrize("op, inputs, attrs, error, message", [
    ("Gather", [i64(2, 3), np.int64(2)], {"axis": 0}, CompileError, "'bad'.*index 2"),
    ("Reshape", [i64(1, 2, 3), i64(2, 2)], {}, ShapeError, r"'bad'.*cannot reshape \(3,\)"),
    ("Reshape", [i64(1, 2, 3), i64(-1, -1)], {}, ShapeError, "'bad'.*several -1"),
    ("Cast", [i64(1)], {"to": TensorProto.STRING}, UnsupportedOpError,
     "'Cast'.*'bad'.*cast to STRING"),
    ("Div", [i64(1), i64(0)], {}, CompileError, "'bad'.*division by zero"),
    ("Range", [np.int64(0), np.int64(3), np.int64(0)], {}, ShapeError, "'bad'.*delta 0"),
    ("Squeeze", [i64(1, 2), i64(0)], {}, ShapeError, r"'bad'.*axes \[0\] of \(2,\) are not 1"),
])
def test_folding_bad_constants_names_the_node(op, inputs, attrs, error, message):
    m = Maker()
    names = [m.const(v) for v in inputs]
    value = m.op(op, names, name="bad", **attrs)
    y = m.op("Add", ["input", m.op("Cast", [m.op("Size", [value])], to=TensorProto.FLOAT)])
    model = m.model([("input", [1, 4])], [(y, [1, 4])])
    with pytest.raises(error, match=message):
        compiler.load_onnx(model)


def test_weight_arithmetic_is_left_to_the_constant_folding_pass():
    m = Maker()
    w = m.op("Mul", [m.weight(4, 2, 3, 3), m.const(np.float32(0.5))], name="scaled")
    y = m.op("Conv", ["input", w])
    graph = compiler.load_onnx(m.model([("input", [1, 2, 5, 5])], [(y, [1, 4, 3, 3])]))
    assert graph.op_counts() == {"Binary": 1, "Conv": 1}
