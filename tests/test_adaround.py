"""AdaRound weight rounding (accel.quantization.adaround, compile(weight_rounding="adaround")):
its error measure is the layer's real output error, it beats nearest rounding on it, it
stays within one step of nearest on the same per-channel scales, and the compiled model
carries exactly the int8 weights it chose."""

from __future__ import annotations

import numpy as np
import pytest

from full_setup import missing_setup

try:
    import torch
except ImportError:  # AdaRound needs the [pretrained] extra's PyTorch
    torch = None

from accel.backend import api, quantize, reconstruct
from accel.compiler import load_onnx, optimize
from accel.quantization import dequantize, qparams_from_range, quantize as quantize_values
from accel.quantization import quantize_weights_per_channel
from accel.quantization.adaround import PatchStatistics, adaround, reconstruction_error

from test_compile import FASTEST, cosine, inputs_for, ort_outputs
from test_depthwise_model import mobile_net



@pytest.fixture(autouse=True)
def _needs_torch():
    if torch is None:
        missing_setup("AdaRound needs PyTorch (the [pretrained] extra)")


# (weight shape, groups, strides, pads): a 3x3 conv with uneven padding, a strided
# depthwise 5x5, a 1x1, and a dense layer (groups None)
LAYERS = {
    "conv3x3": ((12, 6, 3, 3), 1, (1, 1), (1, 0, 1, 2)),
    "depthwise5x5": ((8, 1, 5, 5), 8, (2, 2), (2, 2, 2, 2)),
    "pointwise": ((16, 24, 1, 1), 1, (1, 1), (0, 0, 0, 0)),
    "dense": ((10, 40), None, None, None),
}


def _layer(kind: str, seed: int = 0):
    """(weights, stats, float inputs, int8-simulated inputs) of a layer fed correlated,
    ReLU6-like inputs; the simulated ones are the float ones on an int8 grid."""
    shape, groups, strides, pads = LAYERS[kind]
    rng = np.random.default_rng(seed)
    w = (rng.normal(0, 1, shape) * rng.uniform(0.2, 2, (shape[0],) + (1,) * (len(shape) - 1))
         ).astype(np.float32)
    if groups is None:
        stats = PatchStatistics.for_dense(shape)
        xs = [rng.normal(0, 1, (16, shape[1])) @ rng.normal(0, 1, (shape[1], shape[1]))
              for _ in range(3)]
    else:
        stats = PatchStatistics.for_conv(shape, strides, pads, (1, 1), groups)
        channels = shape[1] * groups
        mix = rng.normal(0, 1, (channels, channels))
        xs = [np.einsum("dc,nchw->ndhw", mix, rng.normal(0, 1, (2, channels, 9, 11)))
              for _ in range(3)]
    xs = [np.clip(x + 1.0, 0, 6).astype(np.float32) for x in xs]
    q = qparams_from_range(0, 6)
    sims = [dequantize(quantize_values(x, q), q) for x in xs]
    for x, s in zip(xs, sims):
        stats.add(x, s)
    return w, stats, xs, sims, (groups, strides, pads)


def _outputs(w, x, layout):
    groups, strides, pads = layout
    t = torch.from_numpy(np.asarray(x, np.float32)).double()
    wt = torch.from_numpy(np.asarray(w, np.float64))
    if groups is None:
        return (t @ wt.T).numpy()
    top, left, bottom, right = pads
    t = torch.nn.functional.pad(t, (left, right, top, bottom))
    return torch.nn.functional.conv2d(t, wt, stride=strides, groups=groups).numpy()


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_reconstruction_error_is_the_layers_centred_output_error(kind):
    """The quadratic form from patch covariances equals the directly computed error of the
    layer's outputs (after removing its mean per channel: bias correction), summed over
    channels and averaged over positions: the patches match the conv's own (padding,
    stride, groups, torch unfold's order)."""
    w, stats, xs, sims, layout = _layer(kind)
    q, scales = quantize_weights_per_channel(w)
    rounded = q * scales.reshape((-1,) + (1,) * (w.ndim - 1))
    diff = np.concatenate([_outputs(rounded, s, layout) - _outputs(w, x, layout)
                           for x, s in zip(xs, sims)])
    channels_last = np.moveaxis(diff, 1, -1).reshape(-1, w.shape[0])
    direct = float(((channels_last - channels_last.mean(0)) ** 2).sum(1).mean())
    assert reconstruction_error(rounded, w, stats) == pytest.approx(direct, rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_adaround_beats_nearest_within_one_step_on_the_same_scales(kind):
    w, stats, *_ = _layer(kind)
    nearest, scales = quantize_weights_per_channel(w)
    q, ada_scales, result = adaround(w, stats, iterations=200)
    assert q.dtype == np.int8 and q.shape == w.shape
    np.testing.assert_array_equal(ada_scales, scales)
    assert np.abs(q.astype(int) - nearest).max() <= 1
    assert np.abs(q.astype(int)).max() <= 127
    steps = w / scales.reshape((-1,) + (1,) * (w.ndim - 1))
    assert np.all((q >= np.floor(steps) - 1e-6) & (q <= np.ceil(steps) + 1e-6))
    # the channel peaks keep their value, so the scales stay those of the scheduler
    assert np.array_equal(np.abs(q.reshape(w.shape[0], -1)).max(1),
                          np.abs(nearest.reshape(w.shape[0], -1)).max(1))
    shape = (-1,) + (1,) * (w.ndim - 1)
    assert result.error_nearest == pytest.approx(
        reconstruction_error(nearest * scales.reshape(shape), w, stats))
    assert result.error_adaround == pytest.approx(
        reconstruction_error(q * scales.reshape(shape), w, stats))
    # measured: 0.45-0.83 of nearest's error, 4-21% of the weights flipped (3 seeds)
    assert result.error_adaround < 0.9 * result.error_nearest, result
    assert 0 < result.flipped < 0.5


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pointwise", "dense"])
def test_adaround_is_deterministic_across_calls_and_thread_counts(kind):
    """The same statistics give the same integers and errors, whatever torch's thread count
    (the compile is then reproducible: measured on EfficientNet-Lite0, two processes with
    other hash seeds compile to the same bits)."""
    w, stats, *_ = _layer(kind)
    threads = torch.get_num_threads()
    try:
        runs = []
        for count in (1, 2, 1):
            torch.set_num_threads(count)
            runs.append(adaround(w, stats, iterations=30))
    finally:
        torch.set_num_threads(threads)
    for q, scales, result in runs[1:]:
        np.testing.assert_array_equal(q, runs[0][0])
        np.testing.assert_array_equal(scales, runs[0][1])
        assert result == runs[0][2]


def test_adaround_rejects_bad_arguments():
    w, stats, *_ = _layer("pointwise")
    with pytest.raises(ValueError, match="at least 1 iteration"):
        adaround(w, stats, iterations=0)
    with pytest.raises(ValueError, match="at least one calibration input"):
        adaround(w, PatchStatistics.for_dense((3, 4)), iterations=1)


@pytest.mark.slow
@pytest.mark.parametrize("rounding", ["adaround", "block"])
def test_compiled_model_carries_the_adaround_weights(monkeypatch, rounding):
    """compile(weight_rounding="adaround" or "block") on the MobileNet-style net: every
    conv's, depthwise conv's and the dense's int8 weights in the lowered steps are exactly
    the ones the rounding chose (each output channel's nonzero values, whatever the step's
    layout and padding), some differ from nearest rounding, and the model still agrees with
    onnxruntime's float output."""
    model = mobile_net()
    calibration = inputs_for(model, 6, 0)
    chosen = {}
    real_apply = quantize.apply_rounding

    def recording_apply(graph, rounded):
        names = {n.weight: n.name for n in graph.nodes if n.op in ("Conv", "Dense")}
        chosen.update({names[w]: q for w, (q, _) in rounded.items()})
        return real_apply(graph, rounded)

    monkeypatch.setattr(quantize, "apply_rounding", recording_apply)
    blocks_learnt = []
    real_round_block = reconstruct.round_block
    monkeypatch.setattr(reconstruct, "round_block", lambda *a, **k: blocks_learnt.append(a[1])
                        or real_round_block(*a, **k))
    compiled = api.compile(model, calibration=calibration, device=FASTEST, progress=False,
                           observer="auto", bias_correction="empirical",
                           weight_rounding=rounding, adaround_iterations=100)
    for x in inputs_for(model, 4, 1):
        assert cosine(compiled.run(x)["logits"], ort_outputs(model, x)["logits"]) > 0.99
    graph = load_onnx(model)
    optimize(graph)
    nearest = {n.name: quantize_weights_per_channel(graph.const(n.weight))[0]
               for n in graph.nodes if n.op in ("Conv", "Dense")}
    assert chosen.keys() == nearest.keys()
    def rows(a):  # each output channel's nonzero values, sorted (the stem pads with zeros)
        return [sorted(v for v in row if v) for row in np.asarray(a, int).reshape(len(a), -1)]
    checked = flipped = 0
    for step in compiled.lowered.steps:
        if step.name in chosen:
            assert rows(step.arrays["weights"]) == rows(chosen[step.name]), step.name
            checked += 1
    for name, q in chosen.items():
        assert np.abs(q.astype(int) - nearest[name]).max() <= 1
        flipped += int(np.sum(q != nearest[name]))
    assert checked == len(chosen) and flipped > 0, (checked, flipped)
    # block rounding learnt both of the net's blocks (none fell back to layer by layer)
    assert len(blocks_learnt) == (2 if rounding == "block" else 0), blocks_learnt
    with pytest.raises(ValueError, match="weight_rounding must be"):
        api.compile(model, calibration=calibration, device=FASTEST, progress=False,
                    weight_rounding="stochastic")


def test_apply_rounding_gives_the_scheduler_exactly_the_chosen_integers():
    graph = load_onnx(mobile_net())
    optimize(graph)
    conv = next(n for n in graph.nodes if n.op == "Conv")
    w = graph.const(conv.weight)
    q, scales = quantize_weights_per_channel(w)
    q = np.clip(q.astype(int) + np.sign(q), -127, 127).astype(np.int8)  # any choice
    quantize.apply_rounding(graph, {conv.weight: (q, scales)})
    from accel.backend.op_lowering import quantize_weights
    got, got_scales = quantize_weights(graph.const(conv.weight),
                                       graph.tensors[conv.weight].quant)
    np.testing.assert_array_equal(got, q)
    np.testing.assert_array_equal(got_scales, scales)


def test_cli_compile_takes_adaround(capsys, compile_calls, tmp_path):
    """`accel compile --weight-rounding adaround --adaround-iterations N` reaches compile();
    a step count below 1 is a usage error (exit 2)."""
    from accel.cli import main
    from test_cli_commands import PHOTOS, tiny_classifier
    model = tiny_classifier(tmp_path / "tiny.onnx")
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in PHOTOS[:2]:
        (photos / photo.name).write_bytes(photo.read_bytes())
    seen = compile_calls
    out = tmp_path / "tiny.accel"
    code = main(["compile", str(model), "-o", str(out), "--calibration", str(photos),
                 "--weight-rounding", "adaround", "--adaround-iterations", "20"])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert (seen["weight_rounding"], seen["adaround_iterations"]) == ("adaround", 20)
    assert out.exists()
    code = main(["compile", str(model), "-o", str(tmp_path / "x.accel"),
                 "--adaround-iterations", "0"])
    _, err = capsys.readouterr()
    assert code == 2 and "--adaround-iterations" in err, err


@pytest.mark.slow
def test_adaround_without_empirical_correction_and_with_a_report():
    """AdaRound alone, and with analytic bias correction (computed for the weights AdaRound
    chose), both compile; the per-layer report is measured against the float model."""
    model = mobile_net()
    calibration = inputs_for(model, 4, 0)
    for correction in (False, True):
        compiled = api.compile(model, calibration=calibration, device=FASTEST, progress=False,
                               report=True, bias_correction=correction,
                               weight_rounding="adaround", adaround_iterations=20)
        assert compiled.layer_errors and all(e.cosine > 0.98 for e in compiled.layer_errors)
        x = inputs_for(model, 1, 1)[0]
        assert cosine(compiled.run(x)["logits"], ort_outputs(model, x)["logits"]) > 0.99
