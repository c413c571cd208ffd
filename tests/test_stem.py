"""Space-to-depth of stem convs (accel.backend.stem.space_to_depth_stems): a strided conv
with few input channels on a model input becomes host padding + an s x s fold into channels
+ a stride-1 conv, bit-identical to the plain lowering on every device (the FPGA
emulator's pipelines included), through save/load too."""

from __future__ import annotations

import json

import numpy as np
import pytest

import accel
from accel import models
from accel.backend import api
from accel.backend import stem as stem_rewrite
from accel.backend.compiled import ModelLoadError, load
from accel.backend.lowered import Placement, Step
from accel.reference.conv import conv2d_accumulators, output_size
from chosen_devices import ENV as DEVICES_ENV
from chosen_devices import find
from test_compile import Net


def stem_net(kernel: int, height: int, width: int, channels: int = 3, stride: int = 2):
    """A stem conv (kernel x kernel / stride, pad kernel // 2) and a 3x3 conv after it."""
    net = Net(kernel * 100 + height)
    y = net.conv("x", channels, 24, k=kernel, stride=stride)
    y = net.conv(y, 24, 20, k=3)
    return net.model([("x", [1, channels, height, width])], [(y, [1, 20, None, None])],
                     f"stem{kernel}")


def images(shape, count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1, shape).astype(np.float32) for _ in range(count)]


def compile_both(model, calibration, device):
    """(rewritten, plain) compilations of the same model and calibration."""
    compiled = {}
    for flag in (True, False):
        saved, stem_rewrite.SPACE_TO_DEPTH = stem_rewrite.SPACE_TO_DEPTH, flag
        try:
            compiled[flag] = api.compile(model, calibration=calibration, device=device,
                                         progress=False)
        finally:
            stem_rewrite.SPACE_TO_DEPTH = saved
    return compiled[True], compiled[False]


def assert_same_int8(a, b, inputs):
    for x in inputs:
        for ours, theirs in zip(a.run_int8(x), b.run_int8(x)):
            np.testing.assert_array_equal(ours, theirs)


# --- the rewrite in numpy: same accumulators -------------------------------------------------


@pytest.mark.parametrize("kernel,stride,pads,height,width,channels", [
    (7, 2, (3, 3, 3, 3), 37, 41, 3),    # ResNet's stem on odd sizes
    (3, 2, (1, 1, 1, 1), 16, 15, 3),
    (3, 2, (0, 0, 1, 1), 17, 18, 1),    # asymmetric (TF "SAME")
    (5, 3, (2, 0, 1, 2), 20, 23, 4),    # a stride that does not divide the kernel
    (11, 4, (2, 2, 2, 2), 63, 67, 3),   # AlexNet-like
    (4, 2, (0, 0, 0, 0), 9, 10, 2),     # window ends before the input does
])
def test_rewritten_conv_has_the_same_accumulators(kernel, stride, pads, height, width,
                                                  channels):
    rng = np.random.default_rng(kernel + height)
    n, cout, zero_point = 2, 5, -7
    x = rng.integers(-128, 128, (n, height, width, channels), dtype=np.int8)
    weights = rng.integers(-127, 128, (cout, kernel, kernel, channels), dtype=np.int8)
    bias = rng.integers(-1000, 1000, cout).astype(np.int32)
    expected = conv2d_accumulators(x, weights, bias, stride=(stride, stride), pads=pads,
                                   input_zero_point=zero_point)
    layer = dict(batch=n, in_height=height, in_width=width, in_channels=channels,
                 out_channels=cout, kernel_h=kernel, kernel_w=kernel, stride=[stride, stride],
                 pads=list(pads), dilation=[1, 1], input_zero_point=zero_point,
                 output_zero_point=0, activation=[-128, 127], in_channel_offset=0,
                 in_channel_stride=16, out_channel_offset=0, out_channel_stride=16)
    step = Step("conv", "stem", ["x"], "y", {"layer": layer}, {"weights": weights})
    s2d, shape = stem_rewrite.space_to_depth_conv(
        step, Placement("x", 0, 16, (n, height, width, channels)))
    folded = stem_rewrite.apply_space_to_depth(x, s2d, zero_point)
    assert folded.shape == shape == (n, s2d.height // stride, s2d.width // stride,
                                     stride * stride * channels)
    padded = stem_rewrite.apply_space_to_depth(x, s2d, zero_point, channels=shape[3] + 16)
    np.testing.assert_array_equal(padded[..., :shape[3]], folded)
    assert np.all(padded[..., shape[3]:] == zero_point)
    new_weights = step.arrays["weights"]
    # The kernel folds zx * sum(w) into the bias: the rearrangement must keep every sum.
    np.testing.assert_array_equal(new_weights.astype(np.int64).sum(axis=(1, 2, 3)),
                                  weights.astype(np.int64).sum(axis=(1, 2, 3)))
    assert step.attrs["layer"]["stride"] == [1, 1] and step.attrs["layer"]["pads"] == [0] * 4
    assert step.attrs["layer"]["kernel_h"] == -(-kernel // stride)
    got = conv2d_accumulators(folded, new_weights, bias, input_zero_point=zero_point)
    assert got.shape[1:3] == (output_size(height, kernel, stride, pads[0], pads[2]),
                              output_size(width, kernel, stride, pads[1], pads[3]))
    np.testing.assert_array_equal(got, expected)


# --- compiled nets: bit-identical on every device --------------------------------------------


@pytest.fixture(scope="module", params=[(7, 37, 41), (3, 37, 41)], ids=["7x7s2", "3x3s2"])
def stem(request, fastest_cpu):
    kernel, height, width = request.param
    model = stem_net(kernel, height, width)
    data = images((1, 3, height, width), 5, seed=kernel)
    rewritten, plain = compile_both(model, data[:3], fastest_cpu)
    return rewritten, plain, data


def test_stem_is_rewritten(stem):
    rewritten, plain, _ = stem
    spec = rewritten.lowered.device_inputs[0]
    assert spec.space_to_depth is not None and spec.space_to_depth.block == 2
    assert rewritten.lowered.placements["x"].shape[3] == 12  # 2 x 2 x RGB
    first = rewritten.lowered.steps[0]
    assert first.attrs["space_to_depth"] == 2 and first.attrs["layer"]["stride"] == [1, 1]
    assert plain.lowered.device_inputs[0].space_to_depth is None
    assert "space_to_depth" not in plain.lowered.steps[0].attrs


def test_stem_rewrite_is_bit_identical(stem, device):
    rewritten, plain, data = stem
    on_device = accel.CompiledModel(rewritten.lowered, device)  # FPGA pipelines on the emulator
    plain_on_device = accel.CompiledModel(plain.lowered, device)
    assert_same_int8(on_device, plain_on_device, data)
    x = data[-1]
    for name, value in on_device.run(x).items():
        np.testing.assert_array_equal(value, plain_on_device.run(x)[name])


def test_rewritten_stem_survives_save_load(stem, tmp_path, fastest_cpu):
    rewritten, _, data = stem
    loaded = load(rewritten.save(tmp_path / "stem.accel"), fastest_cpu)
    assert loaded.lowered.device_inputs[0].space_to_depth == \
        rewritten.lowered.device_inputs[0].space_to_depth
    assert loaded.lowered.placements["x"] == rewritten.lowered.placements["x"]
    assert_same_int8(loaded, rewritten, data)
    # A damaged rearrangement is refused on load, not at the first run.
    model_file = tmp_path / "stem.accel" / "model.json"
    doc = json.loads(model_file.read_text())
    doc["device_inputs"][0]["space_to_depth"]["height"] += 1
    model_file.write_text(json.dumps(doc))
    with pytest.raises(ModelLoadError, match="space-to-depth"):
        load(tmp_path / "stem.accel", fastest_cpu)


def test_no_rewrite_where_it_does_not_apply(fastest_cpu):
    cases = {
        "stride 1": stem_net(3, 12, 13, stride=1),
        "16 channels": stem_net(3, 12, 13, channels=16),
        "1x1 kernel": stem_net(1, 12, 13),
    }
    # An input that two convs read: the host cannot hand each its own layout.
    net = Net(3)
    a = net.conv("x", 3, 16, k=3, stride=2)
    b = net.conv("x", 3, 16, k=3, stride=2)
    y = net.op("Add", [a, b])
    cases["shared input"] = net.model([("x", [1, 3, 12, 13])], [(y, [1, 16, 6, 7])], "shared")
    for why, model in cases.items():
        shape = tuple(model.graph.input[0].type.tensor_type.shape.dim[i].dim_value
                      for i in range(4))
        data = images(shape, 2)
        rewritten, plain = compile_both(model, data, fastest_cpu)
        assert all(s.space_to_depth is None for s in rewritten.lowered.device_inputs), why
        assert not any("space_to_depth" in s.attrs for s in rewritten.lowered.steps), why
        assert_same_int8(rewritten, plain, data)


@pytest.mark.slow
def test_resnet50_stem_rewrite_is_bit_identical_on_pocl():
    pocl = find("cpu", "Portable Computing Language")
    if pocl is None and any(d.kind == "cpu" and d.platform == "Portable Computing Language"
                            for d in accel.devices()):
        pytest.skip(f"{DEVICES_ENV} leaves PoCL out")
    assert pocl, "PoCL is part of the test setup"
    data = images((1, 3, 224, 224), 3, seed=1)
    data = [x * 60 for x in data]
    rewritten, plain = compile_both(models.build("resnet50"), data[:2], pocl)
    assert rewritten.lowered.steps[0].attrs.get("space_to_depth") == 2
    assert rewritten.lowered.steps[0].attrs["layer"]["kernel_h"] == 4
    assert_same_int8(rewritten, plain, data)
