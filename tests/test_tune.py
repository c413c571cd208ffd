"""Tuning as data and ``accel tune``: every knob and selection rule comes from
kernels/tuning.json through accel.ops.tuning, checked against the constraints it declares
(which the kernels' #error guards mirror); the tuner writes per-shape entries to the user's
file, and a compiled model runs each conv layer with its shape's entry. Timings are never
asserted: a fake measure makes the choice deterministic where the choice is under test."""

from __future__ import annotations

import json

import numpy as np
import pytest

import accel
import accel.cli
from accel import numerics, tuner
from accel.errors import BuildError
from accel.numerics import Activation
from accel.ops import conv as conv_ops
from accel.ops import tuning
from accel.ops.conv_f32 import KERNEL_FILE as CONV_F32
from registry_model import compile_tiny

SMALL = ((1, 8, 8, 32, 32, 3, 1, 1), 2)  # one small conv layer, twice in the "network"
STRIDED = ((1, 14, 14, 32, 64, 1, 2, 0), 1)
# the tiny registry model's second conv (8 -> 16, 3x3, stride 2 on 32x32): a conv.cl layer
TINY_CONV2 = ((1, 32, 32, 8, 16, 3, 2, 1), 1)
TINY_CONV1 = ((1, 32, 32, 3, 8, 3, 1, 1), 1)


@pytest.fixture
def user_file(tmp_path, monkeypatch):
    path = tmp_path / "config" / "tuning.json"
    monkeypatch.setenv(tuning.USER_FILE_ENV, str(path))
    tuning.reload()
    yield path
    monkeypatch.setenv(tuning.USER_FILE_ENV, "off")
    tuning.reload()


def write(path, table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table))
    tuning.reload()


def prepared_knobs(ctx, layer: conv_ops.ConvLayer) -> dict:
    weights = np.ones(layer.weight_shape, np.int8)
    mult, shift = numerics.quantize_multipliers(np.full(layer.out_channels, 1e-3))
    return conv_ops.prepare(ctx, layer, weights, np.zeros(layer.out_channels, np.int32),
                            mult, shift).knobs


def tuned_part(knobs: dict) -> dict:
    return {k: v for k, v in knobs.items() if k in conv_ops.USER_KNOBS}


@pytest.mark.slow
def test_quick_tune_writes_the_user_file_and_compile_applies_each_shapes_knobs(
        fastest_cpu, user_file, monkeypatch, capsys):
    monkeypatch.setattr(tuner, "QUICK_LAYERS", (SMALL, STRIDED))
    monkeypatch.setattr(tuner, "QUICK_ROUNDS", 1)
    code = accel.cli.main(["tune", "--quick", "--device", fastest_cpu.index, "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    key = fastest_cpu.tuning_key
    assert result["tuning_key"] == key and result["file"] == str(user_file)
    assert [layer["shape"] for layer in result["layers"]] == [list(SMALL[0]), list(STRIDED[0])]
    written = json.loads(user_file.read_text())["conv.cl"][key]
    made = written["_provenance"]
    assert (made["tool"], made["version"], made["quick"]) == ("accel tune", accel.__version__,
                                                             True)
    assert fastest_cpu.name in made["device"] and made["host"].split()[0] == \
        accel.isa.host_isa().native_level
    assert {k: v for k, v in written.items() if not k.startswith("_") and k != "shapes"} == \
        result["chosen"]
    assert written.get("shapes", {}) == result["shapes"]
    assert set(result["shapes"]) <= {tuner.shape_class(SMALL[0]), tuner.shape_class(STRIDED[0])}
    # what the table now gives each layer is what a compiled model prepares it with
    ctx = accel.Context(fastest_cpu)
    for layer in result["layers"]:
        conv = tuner.conv_layer(tuple(layer["shape"]))
        assert conv_ops.tuned_knobs(key, conv) == layer["knobs"]
        assert tuned_part(prepared_knobs(ctx, conv)) == layer["knobs"]
        assert layer["own_entry"] == (layer["shape_class"] in result["shapes"])


def fake_measure(winners: dict, tile_w: int):
    """A measure that makes ``winners[shape]`` (adapted knobs) the fastest on its shape and
    otherwise prefers TILE_W ``tile_w``; no kernel runs."""
    def measure(device, shape, knobs, rounds):
        if winners.get(shape) == knobs:
            return 0.5
        return 1.0 if knobs.get("TILE_W") == tile_w else 2.0
    return measure


def test_a_knob_set_that_computes_wrong_bits_is_never_written(fastest_cpu, user_file,
                                                              monkeypatch, tmp_path):
    """The tuner checks its winners bit-exact (the workbench's test) before writing: here
    conv.cl is swapped for a variant whose taps read one pixel to the right."""
    from accel import kernel_source, workbench
    text = (kernel_source.kernel_dir() / "conv.cl").read_text()
    tap = "const int ix = (ox0 + p) * stride_w - pad_left + kx * dilation_w;"
    assert text.count(tap) == 1, "conv.cl's tap indexing changed: update this test"
    wrong = tmp_path / "conv.cl"
    wrong.write_text(text.replace(tap, tap[:-1] + " + 1;"))
    real_test = workbench.test
    monkeypatch.setattr(workbench, "test",
                        lambda *args, **kwargs: real_test(*args, source=wrong, **kwargs))
    monkeypatch.setattr(tuner, "measure", fake_measure({}, 2))
    with pytest.raises(RuntimeError, match="computes wrong results.*nothing written"):
        tuner.tune(fastest_cpu, layers=(SMALL,), space=tuner.QUICK_CANDIDATES,
                   show_progress=False)
    assert not user_file.exists()
    monkeypatch.setattr(workbench, "test", real_test)  # the shipped kernel passes
    tuner.tune(fastest_cpu, layers=(SMALL,), space=tuner.QUICK_CANDIDATES, show_progress=False)
    assert user_file.exists()


def test_each_shape_gets_its_own_winner_and_compile_applies_it(fastest_cpu, user_file,
                                                              monkeypatch, tmp_path):
    key = fastest_cpu.tuning_key
    layers = ((TINY_CONV1[0], 3), TINY_CONV2)
    conv2 = tuner.conv_layer(TINY_CONV2[0])
    shipped = tuning.knobs("conv.cl", key)
    rules = tuning.rules("conv.cl", key)
    tile = conv_ops.layer_knobs(conv2, shipped, rules)["TILE_W"]
    own = conv_ops.layer_knobs(conv2, {"TILE_W": 4 if tile != 4 else 2, "CIN_STEP": 16,
                                       "COUT_BLOCKS": 1}, rules)
    monkeypatch.setattr(tuner, "measure", fake_measure({TINY_CONV2[0]: own}, tile))
    result = tuner.tune(fastest_cpu, layers=layers, space=tuner.QUICK_CANDIDATES,
                        show_progress=False)
    assert result.chosen == shipped  # the network's best, the shipped set on a tie
    assert result.shapes == {tuner.shape_class(TINY_CONV2[0]): own}
    assert [r.own_entry for r in result.layers] == [False, True]
    assert json.loads(user_file.read_text())["conv.cl"][key]["shapes"] == result.shapes

    artifact, _, _ = compile_tiny(tmp_path / "model", device=fastest_cpu)

    def conv_knobs(model) -> dict:
        return {tuning.conv_shape_class(p.layer.kernel_h, p.layer.kernel_w, p.layer.stride,
                                        p.layer.in_channels, p.layer.out_channels,
                                        p.layer.in_height, p.layer.in_width): tuned_part(p.knobs)
                for p in model._bound.buffers if isinstance(p, conv_ops.PreparedConv)}

    tuned = conv_knobs(accel.load(artifact, fastest_cpu))
    monkeypatch.setenv(tuning.USER_FILE_ENV, "off")
    tuning.reload()
    shipped = conv_knobs(accel.load(artifact, fastest_cpu))
    cls = tuner.shape_class(TINY_CONV2[0])
    assert tuned[cls] == own != shipped[cls]
    assert {c: k for c, k in tuned.items() if c != cls} == \
        {c: k for c, k in shipped.items() if c != cls}


def test_the_user_file_wins_over_the_shipped_table(fastest_cpu, user_file):
    key = fastest_cpu.tuning_key
    shipped = tuning.knobs("conv.cl", key)
    if "/" in key:  # a runtime-wide user entry does not hide the shipped exact key's
        write(user_file, {"conv.cl": {key.split("/")[0]: {"TILE_W": 3}}})
        assert tuning.knobs("conv.cl", key) == shipped
    write(user_file, {"conv.cl": {key: {"TILE_W": 3}}})
    assert tuning.knobs("conv.cl", key) == {**shipped, "TILE_W": 3}
    layer = conv_ops.ConvLayer(batch=1, in_height=6, in_width=9, in_channels=16,
                               out_channels=16, kernel_h=1, kernel_w=1, stride=(1, 1),
                               pads=(0, 0, 0, 0), activation=Activation())
    ctx = accel.Context(fastest_cpu)
    assert prepared_knobs(ctx, layer)["TILE_W"] == 3
    # a shape entry wins over the device's for layers of its class only
    write(user_file, {"conv.cl": {key: {"TILE_W": 3, "shapes": {
        conv_ops.shape_class(layer): {"TILE_W": 1}}}}})
    assert prepared_knobs(ctx, layer)["TILE_W"] == 1
    other = conv_ops.ConvLayer(1, 6, 9, 16, 32, 1, 1)
    assert prepared_knobs(ctx, other)["TILE_W"] == 3
    # selection rules too: turning Winograd off for the device
    write(user_file, {"winograd.cl": {key: {"WINOGRAD": 0}}})
    assert tuning.rules("winograd.cl", key)["WINOGRAD"] == 0
    assert not accel.ops.winograd.enabled_on(key)


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"conv.cl": {"pocl-cpu/avx2": {"TILE_W": 0}}}', r"conv.cl pocl-cpu/avx2: TILE_W=0 must "
                                                      r"be at least 1"),
    ('{"conv.cl": {"pocl-cpu": {"TILE_X": 2}}}', r"unknown knob\(s\) TILE_X"),
    ('{"conv.cl": {"pocl-cpu": {"shapes": {"k1x1 s1 c8-8 hw8": {"CIN_STEP": 3}}}}}',
     r"shapes k1x1 s1 c8-8 hw8: CIN_STEP=3 must be one of \(2, 4, 8, 16\)"),
    ('{"winograd.cl": {"intel-cpu": {"WINOGRAD": 2}}}', "WINOGRAD=2 must be 0 or 1"),
    ('{"nosuch.cl": {"default": {"A": 1}}}', "'nosuch.cl', which has no declared knobs"),
])
def test_a_bad_user_file_is_a_clear_error(user_file, content, message, capsys):
    user_file.parent.mkdir(parents=True)
    user_file.write_text(content)
    tuning.reload()
    with pytest.raises(ValueError, match=f"tuning file '{user_file}'.*{message}"):
        tuning.knobs("conv.cl", "pocl-cpu/avx2")
    # accel tune refuses it before measuring anything: one line, exit code 2
    assert accel.cli.main(["tune", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tuning file" in err


def test_the_shipped_table_holds_every_rule_and_default_knob():
    """The selection rules and defaults the ops modules used to hard-code are the table's,
    for every kind of tuning key (an ISA the table does not list falls back)."""
    for key in ("pocl-cpu/avx2", "pocl-cpu/avx512-vnni", "intel-cpu/avx512",
                "intel-fpga-emulator", "other-gpu"):
        assert set(tuning.rules("conv.cl", key)) == set(tuning.declared("conv.cl", "_rules"))
        assert set(tuning.rules("winograd.cl", key)) == \
            set(tuning.declared("winograd.cl", "_rules"))
        for kernel_file in ("pool.cl", "eltwise.cl", "l2norm.cl", "affine.cl"):
            assert set(tuning.knobs(kernel_file, key)) == {"VEC"}
        assert set(tuning.knobs(CONV_F32, key)) == set(tuning.declared(CONV_F32))
    assert tuning.knobs("affine.cl", "intel-cpu/avx2")["VEC"] != \
        tuning.knobs("affine.cl", "pocl-cpu/avx2")["VEC"]


def bad_value(constraint: dict) -> int:
    if "in" in constraint:
        return max(constraint["in"]) + 1
    if "divides" in constraint:
        return next(v for v in range(2, 100) if constraint["divides"] % v)
    if "min" in constraint:
        return constraint["min"] - 1
    return constraint["max"] + 1


def declared_knobs():
    return [(f, name, c) for f, knobs in tuning._table()["_knobs"].items()
            for name, c in knobs.items()]


@pytest.mark.parametrize("kernel_file, name, constraint", declared_knobs(),
                         ids=[f"{f}-{n}" for f, n, _ in declared_knobs()])
def test_each_declared_constraint_is_checked_on_the_host_and_guarded_in_the_kernel(
        fastest_cpu, kernel_file, name, constraint):
    value = bad_value(constraint)
    with pytest.raises(ValueError, match=f"{name}={value} must"):
        tuning.check(kernel_file, {name: value})
    ctx = accel.Context(fastest_cpu)
    ctx.program(kernel_file, tuning.knobs(kernel_file, fastest_cpu.tuning_key))  # builds
    with pytest.raises(BuildError, match=name):
        ctx.program(kernel_file, {**tuning.knobs(kernel_file, fastest_cpu.tuning_key),
                                  name: value})
