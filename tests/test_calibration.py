"""Calibration options for trained networks (issue 14): the MSE-optimal activation range,
bias correction, and per-channel weight scales that survive nearly dead channels."""

from __future__ import annotations

import numpy as np
import pytest

from accel.backend import api, quantize
from accel.compiler import interpret, load_onnx, optimize
from accel.quantization import (MinMaxObserver, MSEObserver, PercentileObserver, dequantize,
                                quantize as quantize_values, quantize_weights_per_channel)
from accel.quantization.params import CHANNEL_SCALE_FLOOR_BITS

from test_compile import FASTEST, Net, cosine, inputs_for, ort_outputs
from test_depthwise_model import mobile_net


def _mse(values, q):
    return float(np.mean((dequantize(quantize_values(values, q), q) - values) ** 2))


def test_mse_observer_clips_a_long_tail_and_beats_minmax():
    """Laplace-distributed values (a heavy tail, as linear bottleneck outputs have): the
    least-error range clips the rarest values (measured: scale 0.083 against min/max's
    0.100, squared error 0.00063 against 0.00083)."""
    values = np.random.default_rng(0).laplace(0, 1, 200_000).astype(np.float32)
    observers = {"minmax": MinMaxObserver(), "mse": MSEObserver()}
    for chunk in np.split(values, 4):
        for obs in observers.values():
            obs.update(chunk)
    q = {name: obs.qparams() for name, obs in observers.items()}
    assert q["mse"].scale < 0.9 * q["minmax"].scale
    assert _mse(values, q["mse"]) < 0.85 * _mse(values, q["minmax"])


def test_mse_observer_keeps_a_bounded_range():
    """ReLU6-like values filling [0, 6]: clipping would only add error, the range stays."""
    values = np.random.default_rng(1).uniform(0, 6, 100_000).astype(np.float32)
    obs = MSEObserver()
    obs.update(values)
    q = obs.qparams()
    assert q.scale == pytest.approx(6.0 / 255, rel=0.03)
    assert q.scale * (-128 - q.zero_point) == pytest.approx(0.0, abs=0.03)  # lo stays 0
    with pytest.raises(ValueError, match="no values"):
        MSEObserver().qparams()


def test_nearly_dead_channels_keep_a_usable_weight_scale():
    """A channel at 1e-10 of its layer's peak (trained nets with folded BatchNorms have
    them) gets the floor scale: its weights round to 0, and multipliers stay in range."""
    w = np.random.default_rng(2).normal(0, 1, (4, 3, 3, 3)).astype(np.float32)
    w[1] *= 1e-10
    q, scales = quantize_weights_per_channel(w)
    peak = np.abs(w[0]).max()
    assert scales.max() / scales[1] <= 2.0 ** CHANNEL_SCALE_FLOOR_BITS * 1.01
    assert not q[1].any()
    for c in (0, 2, 3):  # the others are untouched
        assert np.abs(q[c]).max() == 127
    assert scales[0] == pytest.approx(peak / 127)


def test_bias_correction_zeroes_the_mean_error_of_int8_weights():
    """For a 1x1 conv (no padding) the corrected bias makes the quantized-weight layer's
    mean output over the calibration inputs equal the float layer's, channel by channel."""
    n = Net(5)
    y = n.conv("input", 8, 16, k=1, relu=False)
    import onnx
    n.nodes.append(onnx.helper.make_node("Identity", [y], ["out"], name="out"))
    model = n.model([("input", [2, 8, 6, 6])], [("out", [2, 16, 6, 6])], "one_by_one")
    graph = load_onnx(model)
    optimize(graph)
    rng = np.random.default_rng(3)
    calibration = [rng.normal(0.5, 1, (2, 8, 6, 6)).astype(np.float32) for _ in range(3)]
    means: dict = {}
    quantize.observe(graph, calibration, progress=False, channel_means=means)
    conv = graph.nodes[0]
    reference = [interpret(graph, x)["out"] for x in calibration]
    assert quantize.correct_biases(graph, means) == 1
    weights = graph.const(conv.weight)
    q, scales = quantize_weights_per_channel(weights)
    graph.tensors[conv.weight].data = (q * scales.reshape(-1, 1, 1, 1)).astype(np.float32)
    corrected = [interpret(graph, x)["out"] for x in calibration]
    mean_error = np.mean([c - r for c, r in zip(corrected, reference)], axis=(0, 1, 3, 4))
    assert np.abs(mean_error).max() < 1e-4, mean_error


def test_compile_options_improve_a_depthwise_net_and_are_checked():
    """On the MobileNet-style test net both options compile and stay close to onnxruntime;
    an unknown observer is a clear error."""
    model = mobile_net()
    calibration = inputs_for(model, 8, 0)
    for options in ({"observer": "mse"}, {"bias_correction": True},
                    {"observer": "percentile", "bias_correction": True},
                    {"observer": "auto", "bias_correction": "empirical"}):
        compiled = api.compile(model, calibration=calibration, device=FASTEST, progress=False,
                               **options)
        for x in inputs_for(model, 4, 1):
            assert cosine(compiled.run(x)["logits"], ort_outputs(model, x)["logits"]) > 0.99
    with pytest.raises(ValueError, match="observer must be one of"):
        api.compile(model, calibration=calibration, device=FASTEST, observer="kl",
                    progress=False)
    with pytest.raises(ValueError, match="bias_correction must be"):
        api.compile(model, calibration=calibration, device=FASTEST, bias_correction="mean",
                    progress=False)


def test_report_with_bias_correction_measures_against_the_original_model():
    model = mobile_net()
    calibration = inputs_for(model, 4, 0)
    compiled = api.compile(model, calibration=calibration, device=FASTEST, progress=False,
                           report=True, bias_correction=True)
    assert compiled.layer_errors and all(e.cosine > 0.98 for e in compiled.layer_errors)


def test_percentile_observer_still_available():
    obs = PercentileObserver(99.0)
    obs.update(np.arange(1000, dtype=np.float32))
    assert obs.qparams().scale < 999 / 255


def test_auto_observer_keeps_relu6_ranges_and_fits_linear_ones():
    """"auto": min/max for the input and ReLU6-bounded tensors, MSE for unbounded ones."""
    graph = load_onnx(mobile_net())
    optimize(graph)
    make = quantize.bounded_observers(graph)
    producers = graph.producers()
    assert isinstance(make(graph.inputs[0]), MinMaxObserver)
    kinds = {}
    for node in graph.nodes:
        clamp = getattr(node, "clamp", None)
        bounded = clamp is not None and np.isfinite(clamp.hi)
        kinds[bounded] = type(make(node.output))
        assert producers[node.output] is node
    assert kinds == {True: MinMaxObserver, False: MSEObserver}


def test_empirical_bias_correction_matches_the_float_mean_of_the_simulated_int8_net():
    """After correct_biases_empirically, a fake-quant run of the network (per-channel
    weights, every activation on its int8 grid) has, at each corrected layer, the float
    network's mean pre-activation output per channel on the calibration inputs: the last
    (linear) layer's mean error vanishes."""
    import copy
    from accel.compiler.interpret import evaluate_node
    graph = load_onnx(mobile_net())
    optimize(graph)
    calibration = inputs_for(mobile_net(), 6, 0)
    observed = quantize.observe(graph, calibration, progress=False)
    qparams = quantize.assign(graph, observed, optional={graph.outputs[0]})
    corrected = copy.deepcopy(graph)
    layers = [n for n in graph.nodes if n.op in ("Conv", "Dense")]
    assert quantize.correct_biases_empirically(corrected, qparams, calibration,
                                               {graph.outputs[0]}) == len(layers)

    def mean_error(g):
        """The last layer's mean (fake-quant - float) output, per feature."""
        errors = []
        for x in calibration:
            exact = interpret(graph, x)[graph.outputs[0]]
            env = {n: t.data for n, t in g.tensors.items() if t.is_const}
            env[g.inputs[0]] = dequantize(quantize_values(x, qparams[g.inputs[0]]),
                                          qparams[g.inputs[0]])
            for node in g.nodes:
                if node.op in ("Conv", "Dense"):
                    q, s = quantize_weights_per_channel(env[node.weight])
                    env = {**env, node.weight: q * s.reshape((-1,) + (1,) * (q.ndim - 1))}
                out = evaluate_node(node, g, env)
                if node.output != g.outputs[0]:
                    out = dequantize(quantize_values(out, qparams[node.output]),
                                     qparams[node.output])
                env[node.output] = out
            errors.append(env[g.outputs[0]] - exact)
        return np.abs(np.mean(errors, axis=(0, 1)))

    before, after = mean_error(graph), mean_error(corrected)
    # measured: 0.041 before, 8e-8 after (the last layer is linear: its mean is exact)
    assert before.max() > 0.01 and after.max() < 1e-4, (before, after)
