"""Block-wise weight rounding (accel.backend.reconstruct, compile(weight_rounding="block")):
its torch simulation of each node equals the float interpreter, its activation rounding
equals quantize/dequantize, blocks are cut where the network's blocks end, and the rounding
it learns lowers the block's output error below nearest rounding's on the same scales."""

from __future__ import annotations

import numpy as np
import pytest

from full_setup import missing_setup

try:
    import torch
except ImportError:  # block rounding needs the [pretrained] extra's PyTorch
    torch = None

from accel.backend import reconstruct
from accel.compiler import ir, load_onnx, optimize
from accel.compiler.interpret import evaluate_node
from accel.quantization import dequantize, qparams_from_range, quantize
from accel.quantization import quantize_weights_per_channel

from test_compile import Net
from test_depthwise_model import depthwise, mobile_net


@pytest.fixture(autouse=True)
def _needs_torch():
    if torch is None:
        missing_setup("block rounding needs PyTorch (the [pretrained] extra)")


def inverted_residual() -> "onnx.ModelProto":  # noqa: F821
    """An inverted-residual block as Lite0's: 1x1 expand + ReLU6, 3x3 depthwise + ReLU6,
    1x1 linear projection, added to the block's input."""
    n = Net(5)
    expand = n.op("Clip", [n.conv("input", 8, 24, k=1, relu=False), n.const(0.0, "lo"),
                           n.const(6.0, "hi")])
    project = n.conv(depthwise(n, expand, 24, 3), 24, 8, k=1, relu=False)
    n.op("Add", [project, "input"], "out")
    n.nodes[-1].output[0] = "out"
    return n.model([("input", [1, 8, 10, 10])], [("out", [1, 8, 10, 10])], "block")


def graph_of(model) -> ir.Graph:
    graph = load_onnx(model)
    optimize(graph)
    return graph


def _relu6_inputs(shape, count, seed):
    rng = np.random.default_rng(seed)
    return [np.clip(rng.normal(1.5, 1.5, shape), 0, 6).astype(np.float32) for _ in range(count)]


@pytest.mark.parametrize("make", [mobile_net, inverted_residual])
def test_each_simulated_node_equals_the_interpreter(make):
    graph = graph_of(make())
    rng = np.random.default_rng(0)
    consts = {n: t.data for n, t in graph.tensors.items() if t.is_const}
    checked = 0
    for node in graph.nodes:
        if type(node) not in reconstruct.SIMULATORS:
            continue
        env = dict(consts)
        for name in node.input_names():
            if not graph.tensors[name].is_const:
                env[name] = rng.normal(0, 2, graph.shape(name)).astype(np.float32)
        want = evaluate_node(node, graph, env)
        tensors = {k: torch.tensor(np.asarray(v)) for k, v in env.items()}
        got = reconstruct.SIMULATORS[type(node)](node, tensors, tensors)
        assert tuple(got.shape) == want.shape, node.name
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5, err_msg=node.name)
        checked += 1
    assert checked == len(graph.nodes) >= 3  # every node of both nets


def test_fake_quant_equals_quantize_then_dequantize_and_passes_gradients_inside_the_range():
    """A power-of-two scale makes every k + 0.5 an exact tie (half to even: 2.5 -> 2, 3.5 ->
    4); the gradient is 1 where the rounded value is within int8, 0 where it is clipped."""
    from accel.quantization import QParams
    q = QParams(2.0 ** -4, 3)
    steps = np.arange(-140, 140) + np.array([[0.0], [0.5], [0.25], [-0.5]])
    x = ((steps.ravel() - q.zero_point) * q.scale).astype(np.float32)
    t = torch.tensor(x, requires_grad=True)
    got = reconstruct.fake_quant(t, q)
    np.testing.assert_array_equal(got.detach().numpy(), dequantize(quantize(x, q), q))
    assert reconstruct.fake_quant(torch.tensor([2.5 / 16, 3.5 / 16]), QParams(1 / 16, 0)
                                  ).tolist() == [2 / 16, 4 / 16]
    got.sum().backward()
    rounded = np.rint(x / np.float32(q.scale)) + q.zero_point
    inside = (rounded >= -128) & (rounded <= 127)
    np.testing.assert_array_equal(t.grad.numpy(), inside.astype(np.float32))


def test_blocks_end_at_projections_residuals_and_branch_points():
    graph = graph_of(inverted_residual())
    weighted = {n.name for n in graph.nodes if n.op == "Conv"}
    runs = reconstruct.blocks(graph, weighted)
    assert [len(run) for run in runs] == [3] and runs[0][-1].residual is not None
    assert reconstruct.boundary(graph, runs[0]) == (["input"], ["out"])
    graph = graph_of(mobile_net())
    weighted = {n.name for n in graph.nodes if n.op in ("Conv", "Dense")}
    runs = reconstruct.blocks(graph, weighted)
    # stem + depthwise + linear 1x1 | depthwise + 1x1 + pool + dense (to the end)
    assert [[n.op for n in run] for run in runs] == [["Conv"] * 3,
                                                     ["Conv", "Conv", "Pool", "Dense"]]
    assert all(reconstruct.simulable(run) for run in runs)
    assert [n for run in runs for n in run] == graph.nodes[:sum(map(len, runs))]
    assert reconstruct.boundary(graph, runs[1])[1] == [runs[1][-1].output]


def test_blocks_also_end_at_branch_points_and_at_the_size_limit():
    """A ReLU conv read by two convs ends a block (a branch point); a chain of ReLU convs is
    cut every MAX_WEIGHTED layers."""
    n = Net(3)
    a = n.conv("input", 4, 4)
    n.op("Add", [n.conv(a, 4, 4), n.conv(a, 4, 4)], "out")
    n.nodes[-1].output[0] = "out"
    graph = graph_of(n.model([("input", [1, 4, 6, 6])], [("out", [1, 4, 6, 6])], "fork"))
    runs = reconstruct.blocks(graph, {node.name for node in graph.nodes if node.op == "Conv"})
    assert runs[0] == [graph.nodes[0]] and [n for r in runs for n in r] == graph.nodes
    n = Net(4)
    x = "input"
    for _ in range(2 * reconstruct.MAX_WEIGHTED + 1):
        x = n.conv(x, 4, 4)
    graph = graph_of(n.model([("input", [1, 4, 6, 6])], [(x, [1, 4, 6, 6])], "chain"))
    runs = reconstruct.blocks(graph, {node.name for node in graph.nodes})
    assert [len(r) for r in runs] == [reconstruct.MAX_WEIGHTED] * 2 + [1]


def _round(graph, block, inputs, iterations, seed=0, centred=False):
    weighted = {n.weight: graph.const(n.weight) for n in block if n.op == "Conv"}
    q = qparams_from_range(0, 6)
    quantized = [{"input": dequantize(quantize(x, q), q)} for x in inputs]
    qparams = {}  # each activation's min/max over the float block's values
    consts = {n: t.data for n, t in graph.tensors.items() if t.is_const}
    envs = [dict(consts, input=x[i:i + 1]) for x in inputs for i in range(len(x))]
    for node in block:
        values = [env.setdefault(node.output, evaluate_node(node, graph, env)) for env in envs]
        qparams[node.output] = qparams_from_range(min(v.min() for v in values),
                                                  max(v.max() for v in values))
    return weighted, qparams, quantized, reconstruct.round_block(
        graph, block, weighted, [{"input": x} for x in inputs], quantized, qparams,
        iterations=iterations, batch=4, seed=seed, centred=centred)


def _block_error(graph, block, weights, inputs, quantized, qparams, centred=False):
    """The block's int8-simulated output error against the float block, by the
    interpreter (not the code under test): squared error summed over channels, averaged
    over inputs and positions. ``centred``: each weighted layer's output first loses its
    mean error per channel over all inputs (what the empirical bias correction removes)."""
    from dataclasses import replace
    consts = {n: t.data for n, t in graph.tensors.items() if t.is_const}
    want = [dict(consts, input=x) for x in inputs]
    got = [dict(consts, **weights, input=xq["input"]) for xq in quantized]
    for node in block:
        if node.op == "Conv":
            linear = replace(node, clamp=ir.Clamp())
            w = [evaluate_node(linear, graph, e) for e in want]
            g = [evaluate_node(linear, graph, e) for e in got]
            shift = np.mean([(b - a).mean(axis=(0, 2, 3)) for a, b in zip(w, g)], axis=0) \
                if centred else np.zeros(w[0].shape[1])
            for e, a in zip(want, w):
                e[node.output] = node.clamp.apply(a)
            values = [node.clamp.apply(b - shift.reshape(1, -1, 1, 1).astype(np.float32))
                      for b in g]
        else:
            for e in want:
                e[node.output] = evaluate_node(node, graph, e)
            values = [evaluate_node(node, graph, e) for e in got]
        for e, v in zip(got, values):
            e[node.output] = dequantize(quantize(v, qparams[node.output]), qparams[node.output])
    out = block[-1].output
    d = np.concatenate([(g[out] - w[out]) ** 2 for g, w in zip(got, want)])
    return float(d.mean(axis=(0, 2, 3)).sum())


@pytest.fixture
def one_thread():
    """One torch thread: the xdist workers already use every core (many threads on two
    cores made this test 50x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_block_rounding_beats_nearest_within_one_step_and_is_deterministic(one_thread):
    """Uncentred (the default: the block's raw output error), on calibration inputs and on
    held-out ones, the learnt rounding removes a good part of the error that nearest
    rounding's weights add to the error of the activations' rounding alone (float weights);
    values stay within one step of nearest on the same scales; the same inputs give the same
    bits."""
    graph = graph_of(inverted_residual())
    block = reconstruct.blocks(graph, {n.name for n in graph.nodes})[0]
    inputs = _relu6_inputs((1, 8, 10, 10), 12, 1)
    weighted, qparams, quantized, chosen = _round(graph, block, inputs, 200)
    assert chosen.keys() == weighted.keys()
    learnt, nearest = {}, {}
    for name, w in weighted.items():
        q, scales, flipped, error_nearest, error = chosen[name]
        assert error < error_nearest
        near, near_scales = quantize_weights_per_channel(w)
        np.testing.assert_array_equal(scales, near_scales)
        assert np.abs(q.astype(int) - near).max() <= 1 and flipped == np.mean(q != near)
        shape = (-1,) + (1,) * (w.ndim - 1)
        learnt[name] = q * scales.reshape(shape)
        nearest[name] = near * scales.reshape(shape)
    assert all(c.flipped > 0.05 for c in chosen.values())
    held_out = _relu6_inputs((1, 8, 10, 10), 12, 2)
    q = qparams_from_range(0, 6)
    held_out_q = [{"input": dequantize(quantize(x, q), q)} for x in held_out]
    for xs, xqs in ((inputs, quantized), (held_out, held_out_q)):
        floor = _block_error(graph, block, weighted, xs, xqs, qparams)
        e_learnt = _block_error(graph, block, learnt, xs, xqs, qparams) - floor
        e_nearest = _block_error(graph, block, nearest, xs, xqs, qparams) - floor
        assert 0 < e_learnt < 0.8 * e_nearest, (e_learnt, e_nearest, floor)
    again = _round(graph, block, inputs, 200)[3]
    assert all(np.array_equal(again[k].q, chosen[k].q) for k in chosen)


def test_block_rounding_repeats_on_two_threads():
    """On two torch threads too, the same inputs give the same int8 weights. (Unlike
    layer-wise AdaRound's, the bits may differ between thread counts: torch's convolutions
    sum in another order; measured here, 1 vs 2 threads.)"""
    graph = graph_of(inverted_residual())
    block = reconstruct.blocks(graph, {n.name for n in graph.nodes})[0]
    inputs = _relu6_inputs((1, 8, 10, 10), 6, 3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        runs = [_round(graph, block, inputs, 100)[3] for _ in range(2)]
    finally:
        torch.set_num_threads(threads)
    assert all(np.array_equal(runs[0][k].q, runs[1][k].q) for k in runs[0])
    assert any(r.flipped > 0 for r in runs[0].values())


@pytest.mark.slow
def test_centred_loss_is_the_error_left_after_bias_correction(one_thread):
    """centred=True: the block loss it reports for nearest rounding is the
    interpreter's error after each layer's mean error per channel is removed (what the
    empirical bias correction that follows does), below the uncentred one; what it keeps is
    never worse than nearest on that loss."""
    graph = graph_of(inverted_residual())
    block = reconstruct.blocks(graph, {n.name for n in graph.nodes})[0]
    inputs = _relu6_inputs((1, 8, 10, 10), 12, 1)
    weighted, qparams, quantized, chosen = _round(graph, block, inputs, 300, centred=True)
    nearest = {}
    for name, w in weighted.items():
        near, scales = quantize_weights_per_channel(w)
        nearest[name] = near * scales.reshape(-1, 1, 1, 1)
    first = next(iter(chosen.values()))
    centred = _block_error(graph, block, nearest, inputs, quantized, qparams, centred=True)
    raw = _block_error(graph, block, nearest, inputs, quantized, qparams)
    assert first.block_error_nearest == pytest.approx(centred, rel=1e-4)
    assert centred < 0.95 * raw
    kept = {name: c.q * c.scales.reshape(-1, 1, 1, 1) for name, c in chosen.items()}
    assert first.block_error == pytest.approx(
        _block_error(graph, block, kept, inputs, quantized, qparams, centred=True), rel=1e-4)
    assert first.block_error <= first.block_error_nearest


def test_calibration_inputs_of_batch_two_are_rows_like_any_other():
    """round_block samples every row of inputs of batch 2 (its minibatches draw from inputs
    x batch rows)."""
    graph = graph_of(inverted_residual())
    block = reconstruct.blocks(graph, {n.name for n in graph.nodes})[0]
    inputs = _relu6_inputs((2, 8, 10, 10), 3, 0)
    seen = []
    real = torch.randperm
    try:
        torch.randperm = lambda n, **kw: seen.append(n) or real(n, **kw)
        _round(graph, block, inputs, 3)
    finally:
        torch.randperm = real
    assert seen == [6] * 3


def test_round_block_rejects_bad_arguments():
    graph = graph_of(inverted_residual())
    block = reconstruct.blocks(graph, {n.name for n in graph.nodes})[0]
    inputs = _relu6_inputs((1, 8, 10, 10), 2, 0)
    with pytest.raises(ValueError, match="at least 1 iteration"):
        _round(graph, block, inputs, 0)
    weighted = {n.weight: graph.const(n.weight) for n in block}
    items = [{"input": x} for x in inputs]
    with pytest.raises(ValueError, match="batch of at least 1"):
        reconstruct.round_block(graph, block, weighted, items, items, {}, batch=0)
    with pytest.raises(ValueError, match="as many float inputs"):
        reconstruct.round_block(graph, block, weighted, items, items[:1], {})
