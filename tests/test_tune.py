"""``accel tune``: a tiny --quick run writes the user's tuning file, and the kernels then use
its knobs over the shipped kernels/tuning.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

import accel.cli
from accel import numerics, tuner
from accel.numerics import Activation
from accel.ops import conv as conv_ops
from accel.ops import tuning

SMALL = ((1, 8, 8, 32, 32, 3, 1, 1), 2)  # one small conv layer, twice in the "network"


@pytest.fixture
def user_file(tmp_path, monkeypatch):
    path = tmp_path / "config" / "tuning.json"
    monkeypatch.setenv(tuning.USER_FILE_ENV, str(path))
    tuning.reload()
    yield path
    monkeypatch.delenv(tuning.USER_FILE_ENV)
    tuning.reload()


def prepared_knobs(ctx, layer: conv_ops.ConvLayer) -> dict:
    weights = np.ones(layer.weight_shape, np.int8)
    mult, shift = numerics.quantize_multipliers(np.full(layer.out_channels, 1e-3))
    return conv_ops.prepare(ctx, layer, weights, np.zeros(layer.out_channels, np.int32),
                            mult, shift).knobs


def test_quick_tune_writes_the_user_file_and_the_kernels_use_it(fastest_cpu, user_file,
                                                                monkeypatch, capsys):
    monkeypatch.setattr(tuner, "QUICK_LAYERS", (SMALL,))
    code = accel.cli.main(["tune", "--quick", "--device", fastest_cpu.index, "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    key = fastest_cpu.tuning_key
    assert result["tuning_key"] == key and result["file"] == str(user_file)
    assert [layer["shape"] for layer in result["layers"]] == [list(SMALL[0])]
    assert all(layer["shipped_ms"] > 0 and layer["tuned_ms"] > 0 for layer in result["layers"])
    written = json.loads(user_file.read_text())
    assert written["conv.cl"][key] == result["chosen"]
    assert result["chosen"] in tuner.candidates(tuner.QUICK_CANDIDATES) + [result["shipped"]]
    # the loader now answers the tuned knobs, and a prepared conv runs with them
    assert tuning.knobs("conv.cl", key) == result["chosen"]
    layer = conv_ops.ConvLayer(batch=1, in_height=8, in_width=8, in_channels=32,
                               out_channels=32, kernel_h=3, kernel_w=3, stride=(1, 1),
                               pads=(1, 1, 1, 1), activation=Activation())
    ctx = accel.Context(fastest_cpu)
    knobs = prepared_knobs(ctx, layer)
    assert {k: knobs[k] for k in result["chosen"]} == conv_ops.layer_knobs(layer,
                                                                           result["chosen"])


def test_the_user_file_wins_over_the_shipped_table(fastest_cpu, user_file):
    key = fastest_cpu.tuning_key
    shipped = tuning.knobs("conv.cl", key)
    user_file.parent.mkdir(parents=True)
    user_file.write_text(json.dumps({"conv.cl": {key.split("/")[0]: {"TILE_W": 3}}}))
    tuning.reload()
    if "/" in key:  # a runtime-wide user entry does not hide the shipped exact key's
        assert tuning.knobs("conv.cl", key) == shipped
    user_file.write_text(json.dumps({"conv.cl": {key: {"TILE_W": 3}}}))
    tuning.reload()
    assert tuning.knobs("conv.cl", key) == {**shipped, "TILE_W": 3}
    layer = conv_ops.ConvLayer(batch=1, in_height=6, in_width=9, in_channels=16,
                               out_channels=16, kernel_h=1, kernel_w=1, stride=(1, 1),
                               pads=(0, 0, 0, 0), activation=Activation())
    assert prepared_knobs(accel.Context(fastest_cpu), layer)["TILE_W"] == 3


def test_a_broken_user_file_is_a_clear_error(user_file):
    user_file.parent.mkdir(parents=True)
    user_file.write_text("{not json")
    tuning.reload()
    with pytest.raises(ValueError, match="tuning file .* is not valid JSON"):
        tuning.knobs("conv.cl", "pocl-cpu/avx2")
