"""Graph passes: each one alone on small graphs (structure changes as intended, outputs stay
those of onnxruntime), the cases each must refuse, and the whole pipeline on every model."""

from __future__ import annotations

import numpy as np
import pytest

import accel.models as models
from accel import compiler
from accel.compiler import ir, passes
from accel.compiler.passes import (activation_fusion, affine_folding, batchnorm_folding,
                                   batchnorm_to_affine, constant_folding, dead_code, dense,
                                   identity_removal, pad_fusion, reshape_removal,
                                   residual_fusion)
from _models_graphs import (Maker, assert_close, keras_stem, run_ort, tf2onnx_style,
                            torch_style)


def x_for(graph: ir.Graph, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, graph.shape(graph.inputs[0])).astype(np.float32)


def apply_pass(model, module, *extra_before):
    """Load ``model``, run the passes ``extra_before`` then ``module``; check the graph and
    that its outputs still match onnxruntime. Returns (graph, rewrites of ``module``)."""
    graph = compiler.load_onnx(model)
    for before in extra_before:
        passes.run_pass(graph, before)
    count = passes.run_pass(graph, module)
    graph.check()
    x = x_for(graph)
    assert_close(compiler.interpret(graph, x), run_ort(model, x))
    return graph, count


def ops(graph):
    return [n.op for n in graph.nodes]


# --- one pass at a time ---------------------------------------------------------------------


def test_constant_folding():
    # the frontend reads torch's x.view(x.size(0), -1) shape arithmetic itself; it is dead
    graph = compiler.load_onnx(torch_style())
    assert not any(isinstance(n, (ir.Gather, ir.Binary)) for n in graph.nodes)
    graph, count = apply_pass(tf2onnx_style(), constant_folding)
    conv1 = next(n for n in graph.nodes if n.name == "conv1")
    assert count == 1 and graph.const(conv1.weight).shape == (16, 3, 3, 3)  # HWIO transposed
    m = Maker()
    w = m.op("Mul", [m.weight(4, 2, 3, 3), m.const(np.float32(0.5))], name="scaled")
    w = m.op("Concat", [w, m.weight(4, 2, 3, 3)], axis=0, name="stacked")
    y = m.op("Conv", ["input", w], pads=[1, 1, 1, 1])
    graph, count = apply_pass(m.model([("input", [1, 2, 5, 5])], [(y, [1, 8, 5, 5])]),
                              constant_folding)
    assert count == 2 and ops(graph) == ["Conv"]


def test_identity_removal_keeps_output_names():
    graph, count = apply_pass(torch_style(), identity_removal)
    assert count == 2 and "Identity" not in ops(graph)
    m = Maker()
    y = m.op("Relu", ["input"])
    out = m.op("Identity", [y], name="final")
    model = m.model([("input", [1, 4])], [(out, [1, 4])])
    graph, count = apply_pass(model, identity_removal)
    assert count == 1 and graph.outputs == [out] and graph.nodes[-1].output == out
    # a 1x1 stride-1 pool is an identity too
    m = Maker()
    y = m.op("AveragePool", [m.op("Relu", ["input"])], kernel_shape=[1, 1], name="adaptive")
    graph, count = apply_pass(m.model([("input", [1, 2, 7, 7])], [(y, [1, 2, 7, 7])]),
                              identity_removal)
    assert count == 1 and ops(graph) == ["Activation"]
    # an Identity straight from input to output cannot go
    m = Maker()
    out = m.op("Identity", ["input"])
    graph, count = apply_pass(m.model([("input", [1, 4])], [(out, [1, 4])]), identity_removal)
    assert count == 0


def conv_bn(shared_reader=False, relu_first=False):
    m = Maker(1)
    y = m.op("Conv", ["input", m.weight(6, 3, 3, 3), m.weight(6)], pads=[1, 1, 1, 1], name="conv")
    if relu_first:
        y = m.op("Relu", [y])
    z = m.bn(y, 6)
    outputs = [(z, [1, 6, 8, 8])]
    if shared_reader:
        outputs.append((m.op("Relu", [y]), [1, 6, 8, 8]))
    return m.model([("input", [1, 3, 8, 8])], outputs)


def test_batchnorm_folding():
    graph, count = apply_pass(conv_bn(), batchnorm_folding)
    assert count == 1 and ops(graph) == ["Conv"]
    graph, count = apply_pass(conv_bn(shared_reader=True), batchnorm_folding)
    assert count == 0  # the conv's raw output is read elsewhere
    graph, count = apply_pass(conv_bn(relu_first=True), batchnorm_folding, activation_fusion)
    assert count == 0  # a clamp sits between conv and BN


def test_batchnorm_to_affine_after_concat():
    graph, count = apply_pass(torch_style(), batchnorm_to_affine, batchnorm_folding)
    assert count == 1  # the BN after the Concat; the other three folded into convs
    (affine,) = [n for n in graph.nodes if isinstance(n, ir.Affine)]
    assert graph.shape(affine.scale) == (12,)


def test_affine_folding_of_tf2onnx_batchnorm():
    graph, count = apply_pass(tf2onnx_style(), affine_folding, constant_folding)
    assert count == 2  # Mul into the conv, then Add into the same conv
    conv1 = next(n for n in graph.nodes if n.name == "conv1")
    assert conv1.output == "bn.add_out"
    (left,) = [n for n in graph.nodes if isinstance(n, ir.Affine)]
    assert left.name == "dense.add"  # MatMul's bias: the dense pass's job


def test_dense_from_gemm_and_matmul_add():
    graph, count = apply_pass(torch_style(), dense)
    (fc,) = [n for n in graph.nodes if isinstance(n, ir.Dense)]
    assert count == 1 and fc.bias is not None and "Gemm" not in ops(graph)
    graph, count = apply_pass(tf2onnx_style(), dense)
    assert count == 2 and "MatMul" not in ops(graph)
    (fc,) = [n for n in graph.nodes if isinstance(n, ir.Dense)]
    assert fc.bias is not None and graph.shape(fc.weight) == (5, 24)


@pytest.mark.parametrize("trans_b, alpha, beta, bias_shape", [
    (0, 1.0, 1.0, (7,)), (1, 2.0, 0.5, (1, 7)), (0, 1.0, 1.0, None)])
def test_gemm_variants(trans_b, alpha, beta, bias_shape):
    m = Maker(2)
    w = m.weight(*((7, 5) if trans_b else (5, 7)))
    inputs = ["input", w] + ([m.weight(*bias_shape)] if bias_shape else [])
    y = m.op("Gemm", inputs, transB=trans_b, alpha=alpha, beta=beta)
    graph, count = apply_pass(m.model([("input", [3, 5])], [(y, [3, 7])]), dense)
    assert count == 1 and ops(graph) == ["Dense"]


def test_reshape_removal_only_where_it_is_a_layout_noop():
    graph, count = apply_pass(torch_style(), reshape_removal, identity_removal, dense)
    assert count == 1 and "Reshape" not in ops(graph)  # [1,12,1,1] -> [1,12] before Dense
    m = Maker()
    flat = m.op("Flatten", ["input"], axis=1)  # [1, 4, 3, 3]: a transpose in NHWC
    y = m.op("Gemm", [flat, m.weight(5, 36)], transB=1)
    graph, count = apply_pass(m.model([("input", [1, 4, 3, 3])], [(y, [1, 5])]),
                              reshape_removal, dense)
    assert count == 0 and "Reshape" in ops(graph)
    m = Maker()
    y = m.op("Reshape", [m.op("Reshape", ["input", m.const(np.array([1, 36], np.int64))]),
                         m.const(np.array([4, 9], np.int64))])
    graph, count = apply_pass(m.model([("input", [1, 4, 3, 3])], [(y, [4, 9])]), reshape_removal)
    assert count == 1 and ops(graph) == ["Reshape"]


def test_activation_fusion():
    graph, count = apply_pass(torch_style(), activation_fusion, batchnorm_folding,
                              batchnorm_to_affine)
    assert "Activation" not in ops(graph) and count == 5
    branch = next(n for n in graph.nodes if n.name == "branch.conv")
    assert branch.clamp.kind == "relu6"
    add = next(n for n in graph.nodes if isinstance(n, ir.Add))
    assert add.clamp.kind == "relu"
    # not when the value before the activation is read elsewhere
    graph, count = apply_pass(conv_bn(shared_reader=True), activation_fusion)
    assert count == 0


def test_activation_chain_and_disjoint_clamps():
    m = Maker()
    y = m.op("Conv", ["input", m.weight(2, 2, 1, 1)])
    y = m.op("Relu", [y])
    y = m.op("Clip", [y, m.const(np.array(-1, np.float32)), m.const(np.array(0.5, np.float32))])
    graph, count = apply_pass(m.model([("input", [1, 2, 4, 4])], [(y, [1, 2, 4, 4])]),
                              activation_fusion)
    assert ops(graph) == ["Conv"] and graph.nodes[0].clamp == ir.Clamp(0.0, 0.5)
    assert ir.Clamp(1, 2).then(ir.Clamp(3, 4)) is None
    assert ir.Clamp().kind == "none" and ir.RELU.kind == "relu"


def test_residual_fusion_moves_the_conv_after_the_shortcut():
    graph, count = apply_pass(torch_style(), residual_fusion, batchnorm_folding,
                              activation_fusion)
    assert count == 1 and "Add" not in ops(graph)
    conv = next(n for n in graph.nodes if n.name == "block.conv2")
    assert conv.residual == "pool1_out" and conv.clamp.kind == "relu"
    # shortcut computed after the branch in node order: the conv must move after it
    m = Maker(4)
    branch = m.op("Conv", ["input", m.weight(4, 4, 1, 1)], name="branch")
    shortcut = m.op("Conv", ["input", m.weight(4, 4, 1, 1)], name="shortcut")
    shortcut = m.op("Relu", [shortcut])
    y = m.op("Relu", [m.op("Add", [branch, shortcut])])
    graph, count = apply_pass(m.model([("input", [1, 4, 5, 5])], [(y, [1, 4, 5, 5])]),
                              residual_fusion, activation_fusion)
    assert [n.name for n in graph.nodes] == ["shortcut", "branch"]


def test_residual_fusion_refuses_a_conv_with_its_own_clamp():
    m = Maker(4)
    a = m.op("Relu", [m.op("Conv", ["input", m.weight(4, 4, 1, 1)])])
    y = m.op("Add", [a, "input"])
    graph, count = apply_pass(m.model([("input", [1, 4, 5, 5])], [(y, [1, 4, 5, 5])]),
                              residual_fusion, activation_fusion)
    assert count == 0


def test_pad_fusion():
    graph, count = apply_pass(keras_stem(), pad_fusion, batchnorm_folding, activation_fusion)
    assert count == 3
    pads = {n.name: n for n in graph.nodes if isinstance(n, ir.Pad)}
    assert list(pads) == ["signed_pad"]  # max pool over values that can be negative: kept
    nodes = {n.name: n for n in graph.nodes}
    assert nodes["conv1_conv"].pads == (3, 3, 3, 3)
    assert nodes["pool1_pool"].pads == (1, 1, 1, 1)
    assert nodes["avg_pool"].pads == (1, 1, 1, 1) and nodes["avg_pool"].count_include_pad


def test_pad_handler_variants():
    for opset in (11, 18):
        model = keras_stem(opset=opset)
        graph = compiler.load_onnx(model)
        x = x_for(graph)
        assert_close(compiler.interpret(graph, x), run_ort(model, x))
    m = Maker()
    y = m.op("Pad", ["input", m.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))],
             mode="reflect", name="reflect_pad")
    with pytest.raises(compiler.UnsupportedOpError, match="'reflect_pad'.*reflect"):
        compiler.load_onnx(m.model([("input", [1, 2, 4, 4])], [(y, [1, 2, 6, 6])]))


def test_dead_code():
    graph = compiler.load_onnx(torch_style())
    graph.nodes.append(ir.Activation("unused", graph.add_const("dead", np.zeros(1)),
                                     x=graph.inputs[0]))
    graph.tensors["dead"].data = None
    graph.tensors["dead"].shape = graph.shape(graph.inputs[0])
    before = len(graph.nodes)
    assert passes.run_pass(graph, dead_code) >= 1
    assert len(graph.nodes) == before - 1 and "dead" not in graph.tensors


def test_graph_check_catches_broken_graphs():
    graph = compiler.load_onnx(torch_style())
    graph.nodes.reverse()
    with pytest.raises(compiler.CompileError, match="before it is produced"):
        graph.check()
    graph = compiler.load_onnx(torch_style())
    graph.tensors[graph.nodes[0].output].shape = (1, 2, 3, 4)
    with pytest.raises(compiler.ShapeError, match="inferred"):
        graph.check()


def test_every_pass_documents_when_it_is_unsafe():
    for module in passes.PIPELINE:
        assert callable(module.match) and callable(module.apply)
        assert "Unsafe" in module.__doc__ or "unsafe" in module.__doc__, module.__name__


# --- the pipeline ---------------------------------------------------------------------------


@pytest.mark.parametrize("make", [torch_style, tf2onnx_style, keras_stem])
def test_pipeline_on_exporter_styles(make):
    model = make()
    graph = compiler.load_onnx(model)
    compiler.optimize(graph)
    assert all(isinstance(n, ir.CANONICAL_NODE_TYPES) for n in graph.nodes), graph.summary()
    for seed in (0, 1):
        x = x_for(graph, seed)
        assert_close(compiler.interpret(graph, x), run_ort(model, x))


EXPECTED_OPS = {
    "resnet50": {"Conv": 53, "Pool": 2, "Dense": 1, "Softmax": 1},
    "resnet152": {"Conv": 155, "Pool": 2, "Dense": 1, "Softmax": 1},
    "densenet121": {"Conv": 120, "Pool": 5, "Affine": 62, "Concat": 58, "Dense": 1,
                    "Softmax": 1},
    "vgg16": {"Conv": 13, "Pool": 5, "Reshape": 1, "Dense": 3},
    "ssd_vgg300": {"Conv": 35, "Pool": 5, "L2Norm": 1, "Transpose": 12, "Reshape": 12},
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow)
                                  if n in ("resnet152", "vgg16") else n
                                  for n in models.MODEL_NAMES])
def test_pipeline_matches_onnxruntime_on_every_model(name):
    model = models.build(name)
    graph = compiler.load_onnx(model)
    counts = compiler.optimize(graph)
    assert graph.op_counts() == EXPECTED_OPS[name], counts
    assert all(isinstance(n, ir.CANONICAL_NODE_TYPES) for n in graph.nodes)
    assert graph.outputs == models.output_names(name)
    if name.startswith("resnet"):
        # every residual Add went into a conv, with its ReLU
        fused = [n for n in graph.nodes if isinstance(n, ir.Conv) and n.residual]
        assert len(fused) == {"resnet50": 16, "resnet152": 50}[name]
        assert all(n.clamp.kind == "relu" for n in fused)
    x = np.random.default_rng(0).normal(0, 64, models.input_shape(name)).astype(np.float32)
    assert_close(compiler.interpret(graph, x), run_ort(model, x), rtol=1e-4)


def test_optimize_reports_rewrites_per_pass():
    graph = compiler.load_onnx(torch_style())
    counts = compiler.optimize(graph)
    assert list(counts) == [passes.pass_name(m) for m in passes.PIPELINE]
    assert counts["batchnorm_folding"] == 3 and counts["residual_fusion"] == 1
    assert counts["qdq_annotation"] == 0 and counts["activation_fusion"] == 5
