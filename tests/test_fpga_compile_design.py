"""accel.compile(..., fpga_design=) and ``accel compile --fpga-design``: a design by name
(accel/fpga/presets.py) or record, a clear error for an unknown name, and the design saved
with the compiled model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import accel
from accel.backend.compiled import ModelLoadError
from accel.fpga import FpgaDesign, presets
from accel.fpga.design import TWO_PIXEL_DESIGN
from test_fpga_end_to_end import device_of, small_resnet


def _bitstream(compiled):
    (config,) = {kept.geometry.config for kept in compiled._bound.buffers
                 if hasattr(kept, "geometry")}
    return config


def test_the_board_preset_is_the_estimators_design():
    from accel.fpga.design import BOARD_DESIGN
    from accel.fpga.estimate import DEFAULT_LANE_NUM, DEFAULT_VEC_SIZE
    board = presets.DESIGNS["board"]
    assert (board.vec_size, board.lane_num) == (DEFAULT_VEC_SIZE, DEFAULT_LANE_NUM)
    assert (board.systolic, board.epilogue_steps) == (BOARD_DESIGN.systolic, 2)
    for design in presets.DESIGNS.values():
        assert not design.modelled_only and presets.from_dict(presets.to_dict(design)) == design


def test_an_unknown_or_unbuildable_design_is_a_clear_error_before_any_work():
    model = small_resnet()
    with pytest.raises(ValueError, match=r"unknown FPGA design 'arria'; known designs: "
                                         r"default, board, persistent"):
        accel.compile(model, calibration=None, fpga_design="arria")
    with pytest.raises(TypeError, match="fpga_design must be a design name"):
        accel.compile(model, fpga_design=32)
    with pytest.raises(ValueError, match="modelled only"):
        accel.compile(model, fpga_design=TWO_PIXEL_DESIGN)
    with pytest.raises(ValueError, match="does not know"):
        presets.from_dict({"vec_size": 32, "warp_speed": 9})


@pytest.mark.slow
def test_compile_binds_the_named_design_and_saves_it(tmp_path):
    emulator = device_of("fpga-emulator")
    pocl = device_of("cpu", "Portable Computing Language")
    rng = np.random.default_rng(5)
    images = [rng.normal(0, 1, (1, 3, 32, 32)).astype(np.float32) for _ in range(3)]
    model = small_resnet()
    on_pocl = accel.compile(model, calibration=images[:2], device=pocl, progress=False)
    on_emulator = accel.compile(model, calibration=images[:2], device=emulator,
                                progress=False, fpga_design="board")
    assert on_emulator.fpga_design == presets.DESIGNS["board"]
    config = _bitstream(on_emulator)
    assert (config.vec_size, config.lane_num, config.systolic) == (32, 64, True)
    for ours, theirs in zip(on_emulator.run_int8(images[2]), on_pocl.run_int8(images[2])):
        np.testing.assert_array_equal(ours, theirs)
    # saved with the model; loaded, the same bitstream and the same outputs
    path = on_emulator.save(tmp_path / "m.accel")
    assert json.loads((path / "model.json").read_text())["fpga_design"]["lane_num"] == 64
    loaded = accel.load(path, device=emulator)
    assert loaded.fpga_design == presets.DESIGNS["board"]
    assert _bitstream(loaded) == config
    for ours, theirs in zip(loaded.run_int8(images[2]), on_pocl.run_int8(images[2])):
        np.testing.assert_array_equal(ours, theirs)
    # a record, not a name; the default (None) saves nothing
    custom = FpgaDesign(vec_size=16, lane_num=32)
    assert accel.compile(model, calibration=images[:2], device=pocl, progress=False,
                         fpga_design=custom).fpga_design == custom
    assert "fpga_design" not in json.loads(
        (on_pocl.save(tmp_path / "p.accel") / "model.json").read_text())
    # a corrupted record is a load error
    doc = json.loads((path / "model.json").read_text())
    doc["fpga_design"]["vec_size"] = 24
    (path / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ModelLoadError, match="malformed"):
        accel.load(path, device=pocl)


def test_cli_unknown_design_is_one_line_and_exit_2(tmp_path, capsys):
    from accel.cli import main
    src = tmp_path / "m.onnx"
    onnx.save(small_resnet(), src)
    code = main(["compile", str(src), "-o", str(tmp_path / "out"), "--fpga-design", "arria"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown FPGA design 'arria'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_compiles_for_a_named_design(tmp_path, capsys):
    from accel.cli import main
    emulator = device_of("fpga-emulator")
    src = tmp_path / "m.onnx"
    onnx.save(small_resnet(), src)
    out = tmp_path / "out"
    assert main(["compile", str(src), "-o", str(out), "--device", emulator.index,
                 "--fpga-design", "board"]) == 0, capsys.readouterr().err
    doc = json.loads((out / "model.json").read_text())
    assert presets.from_dict(doc["fpga_design"]) == presets.DESIGNS["board"]
