"""Tuning as data and ``accel tune``: every knob and selection rule comes from
kernels/tuning.json through accel.ops.tuning, checked against the constraints it declares
(which the kernels' #error guards mirror); the tuner writes per-shape entries (knobs, and
Winograd or the direct conv) to the user's file, and a compiled model runs each conv layer
with its shape's entry. Timings are never asserted: a fake measure makes the choice
deterministic where the choice is under test."""

from __future__ import annotations

import json

import numpy as np
import pytest

import accel
import accel.cli
from accel import numerics, tuner
from accel.backend import binding
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
    # the 3x3 stride-1 shape got a measured kernel selection, the strided one none
    assert set(result["winograd_shapes"]) == {tuner.shape_class(SMALL[0])}
    assert json.loads(user_file.read_text())["winograd.cl"][key]["shapes"] == \
        result["winograd_shapes"]
    # what the table now gives each layer is what a compiled model runs it with
    ctx = accel.Context(fastest_cpu)
    for layer in result["layers"]:
        conv = tuner.conv_layer(tuple(layer["shape"]))
        winograd = layer["kernel"] == "winograd"
        assert accel.ops.winograd.use_for(key, conv, None) == winograd
        if winograd:
            assert accel.ops.winograd.tuned_knobs(key, conv) == layer["knobs"]
            assert layer["winograd_ms"] == layer["tuned_ms"]
        else:
            assert conv_ops.tuned_knobs(key, conv) == layer["knobs"]
            assert tuned_part(prepared_knobs(ctx, conv)) == layer["knobs"]
            assert layer["own_entry"] == (layer["shape_class"] in result["shapes"])


def fake_measure(winners: dict, tile_w):
    """A measure that makes ``winners[shape]`` (conv.cl's adapted knobs, or a kernel, "conv"
    or "winograd", and its knobs) the fastest on its shape in every round and otherwise
    prefers conv.cl with TILE_W ``tile_w`` (or ``tile_w[shape]``) and winograd.cl with its
    shipped knobs, equally (so the shipped kernel stays); no kernel runs."""
    def measure(ctx, shape, options, rounds):
        winner = winners.get(shape)
        preferred = tile_w[shape] if isinstance(tile_w, dict) else tile_w
        winner = ("conv", winner) if isinstance(winner, dict) else winner

        def ms(kernel, knobs):
            if winner is not None and (winner == (kernel, knobs) or winner == (kernel, None)):
                return 0.5
            if kernel == "winograd":
                shipped = tuning.knobs("winograd.cl", ctx.device.tuning_key)
                return 1.0 if knobs == shipped else 2.0
            return 1.0 if knobs.get("TILE_W") == preferred else 2.0
        return [[ms(kernel, knobs)] * rounds for kernel, knobs in options]
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
    # each shape prefers the TILE_W the shipped set gives it (cut to its width differently)
    preferred = {shape: conv_ops.layer_knobs(tuner.conv_layer(shape), shipped, rules)["TILE_W"]
                 for shape, _ in layers}
    monkeypatch.setattr(tuner, "measure", fake_measure({TINY_CONV2[0]: own}, preferred))
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


# two 3x3 stride-1 convs of different shape classes (both Winograd-eligible): the net
# two_conv_onnx builds, as workbench conv shapes
SIDE = 16
WINO_A = ((1, SIDE, SIDE, 3, 8, 3, 1, 1), 1)
WINO_B = ((1, SIDE, SIDE, 8, 16, 3, 1, 1), 1)


def two_conv_onnx():
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32),
                                     name)
             for name, shape in (("w1", (8, 3, 3, 3)), ("b1", (8,)), ("w2", (16, 8, 3, 3)),
                                 ("b2", (16,)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["y"])]
    graph = helper.make_graph(
        nodes, "two_convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                           [1, 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, SIDE, SIDE])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def two_conv_artifact(fastest_cpu, tmp_path_factory):
    rng = np.random.default_rng(1)
    calibration = [rng.normal(0, 1, (1, 3, SIDE, SIDE)).astype(np.float32) for _ in range(2)]
    compiled = accel.compile(two_conv_onnx(), calibration=calibration, device=fastest_cpu,
                             progress=False)
    return compiled.save(tmp_path_factory.mktemp("two_convs") / "two_convs.accel")


def conv_kernels(model) -> dict:
    """Shape class -> the op module each conv layer of a loaded model runs on."""
    return {conv_ops.shape_class(p.layer): "winograd" if isinstance(
                p, accel.ops.winograd.PreparedWinograd) else "conv"
            for p in model._bound.buffers if isinstance(p, conv_ops.PreparedConv)}


@pytest.mark.slow
@pytest.mark.parametrize("winograd_on", ["A", "B"])
def test_each_3x3_shape_runs_the_kernel_measured_faster_on_it(
        fastest_cpu, user_file, monkeypatch, two_conv_artifact, winograd_on):
    """The tuner times winograd.cl against conv.cl per 3x3 stride-1 shape and writes the
    selection; a model bound afterwards runs each layer on its shape's winner, and its
    outputs stay the same bits."""
    fast, slow = (WINO_A, WINO_B) if winograd_on == "A" else (WINO_B, WINO_A)
    monkeypatch.setattr(tuner, "measure", fake_measure(
        {fast[0]: ("winograd", None), slow[0]: ("conv", None)}, tile_w=0))
    result = tuner.tune(fastest_cpu, layers=(WINO_A, WINO_B), space=tuner.QUICK_CANDIDATES,
                        show_progress=False)
    fast_class, slow_class = tuner.shape_class(fast[0]), tuner.shape_class(slow[0])
    assert result.winograd_shapes == {fast_class: {"WINOGRAD": 1},
                                      slow_class: {"WINOGRAD": 0}}
    assert {r.shape_class: r.kernel for r in result.layers} == \
        {fast_class: "winograd", slow_class: "conv"}
    written = json.loads(user_file.read_text())["winograd.cl"][fastest_cpu.tuning_key]
    assert written["shapes"] == result.winograd_shapes

    tuned = accel.load(two_conv_artifact, fastest_cpu)
    assert conv_kernels(tuned) == {fast_class: "winograd", slow_class: "conv"}
    x = np.random.default_rng(2).normal(0, 1, (1, 3, SIDE, SIDE)).astype(np.float32)
    monkeypatch.setattr(binding, "WINOGRAD", False)  # every layer direct
    direct = accel.load(two_conv_artifact, fastest_cpu)
    assert set(conv_kernels(direct).values()) == {"conv"}
    np.testing.assert_array_equal(tuned.run(x)["y"], direct.run(x)["y"])


@pytest.mark.parametrize("fast, shipped_rounds, wins", [
    ([8.0, 10.5, 10.4, 10.6, 10.2, 10.3], [10.0] * 6, False),  # one lucky round
    ([9.8] * 6, [10.0] * 6, False),                            # 2%: within the noise
    ([9.5, 9.6, 12.0, 9.5, 9.6, 9.4], [10.0] * 6, True),       # >= 3% in 5 of 6 rounds
    ([9.5, 9.6, 9.5, 9.6, 9.4, 9.5], [10.0, 13.0, 9.0, 9.0, 9.0, 14.0], False),  # 3 of 6
])
def test_a_candidate_other_than_the_shipped_one_must_win_consistently(fast, shipped_rounds,
                                                                      wins):
    assert tuner.pick("shipped", {"shipped": shipped_rounds, "other": fast}) == \
        ("other" if wins else "shipped")
    # the shipped one wins ties and any best round
    assert tuner.pick("shipped", {"shipped": fast, "other": fast}) == "shipped"


def test_a_shapes_winner_must_win_again_head_to_head(fastest_cpu, user_file, monkeypatch):
    """A shape's own winner is measured a second time against the incumbent alone: one that
    was lucky in the first measurement (here: only there) is not written."""
    key = fastest_cpu.tuning_key
    layer = tuner.conv_layer(STRIDED[0])
    shipped = conv_ops.tuned_knobs(key, layer)
    other = next(k for k in (conv_ops.layer_knobs(layer, {**shipped, "TILE_W": w},
                                                  tuning.rules("conv.cl", key))
                             for w in (1, 2, 3, 4)) if k != shipped)
    calls = []

    def measure(ctx, shape, options, rounds):
        if shape == STRIDED[0]:
            calls.append([knobs for _, knobs in options])
        lucky = len(calls) == 1 and shape == STRIDED[0]  # its first measurement only
        return [[0.5 if lucky and knobs == other else 1.0] * rounds for _, knobs in options]
    monkeypatch.setattr(tuner, "measure", measure)
    # SMALL, all ties, weighs so much that the network's default stays the shipped one
    result = tuner.tune(fastest_cpu, layers=((SMALL[0], 100), STRIDED), space={
        "TILE_W": (1, 2, 3, 4), "COUT_BLOCKS": (shipped["COUT_BLOCKS"],),
        "CIN_STEP": (shipped["CIN_STEP"],)}, show_progress=False)
    assert result.chosen == tuning.knobs("conv.cl", key)
    assert len(calls) == 2 and calls[1] == [shipped, other]  # the head-to-head measurement
    assert result.shapes == {} and result.layers[1].knobs == shipped


def test_candidates_run_in_rotation():
    orders = [tuner.rotation(3, r) for r in range(3)]
    assert orders == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]


@pytest.mark.slow
def test_tuning_into_the_shipped_table_keeps_its_other_entries_and_rules(
        fastest_cpu, monkeypatch, tmp_path):
    """``accel tune -o kernels/tuning.json``: the device's entries become the tuner's (its
    provenance, its values), every other entry and the device's selection rules stay."""
    from accel import kernel_source
    before = json.loads((kernel_source.kernel_dir() / "tuning.json").read_text())
    copy = tmp_path / "tuning.json"
    copy.write_text(json.dumps(before))
    monkeypatch.setattr(tuner, "measure", fake_measure({}, tile_w=0))
    result = tuner.tune(fastest_cpu, layers=(SMALL, STRIDED), space=tuner.QUICK_CANDIDATES,
                        show_progress=False, path=copy, command="accel tune -o tuning.json")
    after = json.loads(copy.read_text())
    key = fastest_cpu.tuning_key
    assert {f: v for f, v in after.items() if f.startswith("_")} == \
        {f: v for f, v in before.items() if f.startswith("_")}
    for kernel_file, entries in before.items():
        if not kernel_file.startswith("_"):
            assert {k: v for k, v in after[kernel_file].items() if k != key} == \
                {k: v for k, v in entries.items() if k != key}
    for kernel_file, chosen in (("conv.cl", result.chosen),
                                ("winograd.cl", result.winograd_chosen)):
        old, new = before[kernel_file].get(key, {}), after[kernel_file][key]
        rule_names = tuning.declared(kernel_file, "_rules")
        assert {k: v for k, v in new.items() if k in rule_names} == \
            {k: v for k, v in old.items() if k in rule_names}
        assert {k: v for k, v in new.items() if k in tuning.declared(kernel_file)} == chosen
        made = new["_provenance"]
        assert (made["tool"], made["command"]) == ("accel tune", "accel tune -o tuning.json")
    # ties keep the shipped values; the 3x3 shape goes to Winograd, which the fake measure
    # times at half of every conv.cl candidate (whatever the shipped rule says for this host
    # class: PoCL's AVX-512 entry keeps 8x8 outputs on conv.cl)
    assert result.chosen == tuning.knobs("conv.cl", key)
    assert result.winograd_chosen == tuning.knobs("winograd.cl", key)
    assert result.winograd_shapes == {tuner.shape_class(SMALL[0]): {"WINOGRAD": 1}}
    assert tuner.dumps(after).count("\n") > 50  # laid out, one member a line


def test_the_fpga_emulator_is_not_tuned(emulator, user_file, capsys):
    assert accel.cli.main(["tune", "--quick", "--device", emulator.index]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "FPGA design" in err
    assert not user_file.exists()


def test_the_user_file_wins_over_the_shipped_table(fastest_cpu, user_file):
    key = fastest_cpu.tuning_key
    shipped = tuning.knobs("conv.cl", key)
    runtime = key.split("/")[0]
    if runtime != key:  # a runtime-wide user entry: under the shipped exact key where the
        # table lists one (AVX2 hosts), over the shipped runtime-wide one where not (AVX-512)
        write(user_file, {"conv.cl": {runtime: {"TILE_W": 3}}})
        exact = key in tuning._table()["conv.cl"]
        assert tuning.knobs("conv.cl", key) == (shipped if exact else {**shipped, "TILE_W": 3})
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


@pytest.mark.parametrize("runtime", ["pocl-cpu", "intel-cpu"])
def test_a_user_entry_for_an_isa_the_table_does_not_list_keeps_the_runtime_wide_values(
        user_file, runtime):
    """The shipped table lists AVX2 and AVX-512 VNNI keys: on an AVX-512 host without VNNI
    (``pocl-cpu/avx512``) the runtime-wide entry applies, and a user's entry for the exact key
    (what ``accel tune`` writes there) changes only what it names, rules (Winograd) and shape
    entries included."""
    key = f"{runtime}/avx512"
    assert key not in tuning._table()["conv.cl"]
    runtime_wide = tuning.entry("conv.cl", runtime)
    assert tuning.entry("conv.cl", key) == runtime_wide
    winograd_rules = tuning.rules("winograd.cl", key)
    assert winograd_rules == tuning.rules("winograd.cl", runtime)
    cls = "k3x3 s1 c8-8 hw8"
    write(user_file, {"conv.cl": {key: {"TILE_W": 3, "shapes": {cls: {"TILE_W": 1}}}},
                      "winograd.cl": {key: {"shapes": {cls: {"WINOGRAD": 0}}}}})
    assert tuning.entry("conv.cl", key) == {**runtime_wide, "TILE_W": 3}
    assert tuning.entry("conv.cl", key, cls) == {**runtime_wide, "TILE_W": 1}
    assert tuning.rules("winograd.cl", key) == winograd_rules  # not lost under the user's
    assert tuning.rules("winograd.cl", key, cls)["WINOGRAD"] == 0
    assert tuning.from_shape_entry("winograd.cl", "WINOGRAD", key, cls)
    assert tuning.entry("conv.cl", runtime) == runtime_wide  # other keys untouched


def test_a_shape_selection_decides_for_its_class_and_the_users_file_wins_as_a_whole(
        fastest_cpu, user_file, monkeypatch):
    import functools
    from accel.ops import winograd
    key = fastest_cpu.tuning_key
    layer, other = tuner.conv_layer(SMALL[0]), tuner.conv_layer((1, 8, 8, 32, 64, 3, 1, 1))
    cls = conv_ops.shape_class(layer)
    shipped = json.loads(json.dumps(tuning._table()))
    entry = shipped["winograd.cl"].setdefault(key, {})
    monkeypatch.setattr(tuning, "_table", functools.lru_cache(maxsize=None)(lambda: shipped))
    # a measured selection wins over the device's threshold, for its class only
    entry.update(WINOGRAD=1, WINOGRAD_MIN_OUTPUT_PIXELS=10 ** 6, shapes={cls: {"WINOGRAD": 1}})
    assert winograd.use_for(key, layer, None) and not winograd.use_for(key, other, None)
    entry.update(WINOGRAD_MIN_OUTPUT_PIXELS=0, shapes={cls: {"WINOGRAD": 0, "TILES": 1}})
    assert not winograd.use_for(key, layer, None) and winograd.use_for(key, other, None)
    assert winograd.tuned_knobs(key, layer)["TILES"] == 1
    # the user's device values win over the shipped shape entry; the user's shape entry
    # over both
    write(user_file, {"winograd.cl": {key: {"WINOGRAD": 1, "TILES": 4}}})
    assert winograd.use_for(key, layer, None) and winograd.tuned_knobs(key, layer)["TILES"] == 4
    write(user_file, {"winograd.cl": {key: {"WINOGRAD": 1, "shapes": {cls: {"WINOGRAD": 0}}}}})
    assert not winograd.use_for(key, layer, None) and winograd.use_for(key, other, None)
    write(user_file, {"winograd.cl": {key: {"WINOGRAD": 0}}})  # off for the device
    assert not winograd.use_for(key, layer, None) and not winograd.use_for(key, other, None)


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


def test_every_shipped_entry_says_where_it_came_from():
    """Each entry's _provenance: accel tune's record (tool, command, host, device, date) or
    a line saying it is hand-set."""
    for kernel_file, entries in tuning._table().items():
        if kernel_file.startswith("_"):
            continue
        for key, entry in entries.items():
            made = entry.get("_provenance")
            assert made, f"{kernel_file} {key} has no _provenance"
            if isinstance(made, dict):
                assert made["tool"] == "accel tune" and \
                    {"command", "host", "device", "when", "layers"} <= set(made), \
                    f"{kernel_file} {key}"
                assert made["host"].split()[0] == key.split("/")[1], f"{kernel_file} {key}"


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
