"""The FPGA design record (accel/fpga/design.py): the one source of the bitstream's knobs,
read by the kernels (-D options), the host (accel/ops/fpga.py) and the estimator, which
charges exactly the memories and modes the kernels have."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from accel.fpga import design as design_module
from accel.fpga.design import DEFAULT_DESIGN, FpgaDesign
from full_setup import missing_setup

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "kernels"


def test_the_host_and_the_estimator_read_the_same_record():
    from accel.fpga import estimate as _  # noqa: F401  (the module, for its record use)
    from accel.ops import fpga as fpga_ops
    est = sys.modules["accel.fpga.estimate"]
    assert fpga_ops.DEFAULT_CONFIG is DEFAULT_DESIGN and fpga_ops.FpgaConfig is FpgaDesign
    record = est.design_record(32, 64)
    assert (record.win_buf_size, record.weight_buf_size, record.stream_depth) == \
        (DEFAULT_DESIGN.win_buf_size, DEFAULT_DESIGN.weight_buf_size, DEFAULT_DESIGN.stream_depth)
    # no buffer size of its own left in the estimator's accel datapath
    source = (ROOT / "accel" / "fpga" / "estimate.py").read_text()
    assert "65536" not in source and "pool_line" not in source


def test_the_kernels_standalone_defaults_are_the_records():
    """The kernels' #ifndef fallbacks (a standalone build) equal the record's defaults; the
    host always passes every option anyway."""
    if shutil.which("clang") is None:
        missing_setup("clang is not installed (CI installs it)")
    text = subprocess.run(
        ["clang", "-x", "cl", "-cl-std=CL1.2", "-E", "-dM", "-I", str(KERNELS), "-DINTELFPGA_CL",
         "-include", str(KERNELS / "fpga_builtins_check.h"), str(KERNELS / "fpga_bitstream.cl")],
        capture_output=True, text=True, check=True).stdout
    macros = dict(re.findall(r"#define (\w+) (\S+)", text))
    for name, value in DEFAULT_DESIGN.defines().items():
        assert macros.get(name) == str(value), (name, macros.get(name), value)


def test_defines_emulator_depths_and_modes():
    board = DEFAULT_DESIGN.defines()
    emu = DEFAULT_DESIGN.defines(emulator=True)
    assert board["STREAM_DEPTH"] == 2 and emu["STREAM_DEPTH"] == 8192
    only = FpgaDesign(conv_modes=("float32",), pool_modes=("fixed",)).defines()
    assert (only["FPGA_CONV_FIXED"], only["FPGA_CONV_RESIDUAL"], only["FPGA_CONV_F32"]) == (0, 0, 1)
    assert (only["FPGA_POOL_FIXED"], only["FPGA_POOL_F32"], only["FPGA_POOL_AVG_F32"]) == (1, 0, 0)
    # residual implies the fixed datapath it extends
    assert FpgaDesign(conv_modes=("residual",)).conv_modes == ("fixed", "residual")


def test_bad_records_are_clear_errors():
    with pytest.raises(ValueError, match="power of two"):
        FpgaDesign(vec_size=12)
    with pytest.raises(ValueError, match="multiple of vec_size"):
        FpgaDesign(win_buf_size=100)
    with pytest.raises(ValueError, match="conv_modes must be"):
        FpgaDesign(conv_modes=("int4",))
    with pytest.raises(ValueError, match="pool_modes must be"):
        FpgaDesign(pool_modes=())
    with pytest.raises(ValueError, match="stream_depth"):
        FpgaDesign(stream_depth=0)


def test_config_for_a_model_carries_only_its_modes():
    from accel.numerics import Activation
    from accel.ops import fpga as fpga_ops
    from accel.ops.conv import ConvLayer, Residual
    from accel.ops.pool import GlobalAvgPoolParams, PoolParams
    plain = ConvLayer(1, 4, 4, 16, 16, 3, 3, pads=(1, 1, 1, 1))
    residual = ConvLayer(1, 4, 4, 16, 16, 1, 1, residual=Residual(0, 1 << 30, 1),
                         activation=Activation())
    qdq = ConvLayer(1, 4, 4, 16, 16, 1, 1, requant="float32")
    pool = PoolParams("max", (1, 4, 4, 16), 2, 2)
    gap = GlobalAvgPoolParams((1, 4, 4, 16))
    fp32_resnet = fpga_ops.config_for([plain, residual, pool, gap])
    assert fp32_resnet.conv_modes == ("fixed", "residual") and fp32_resnet.pool_modes == ("fixed",)
    assert not any(fp32_resnet.switched.values())
    qdq_vgg = fpga_ops.config_for([qdq, pool])
    assert qdq_vgg.conv_modes == ("float32",) and not qdq_vgg.switched["conv"]
    qdq_resnet = fpga_ops.config_for([qdq, residual])
    assert qdq_resnet.switched["conv"]        # both datapaths: reported, and charged
    with pytest.raises(ValueError, match="has no float32 mode"):
        fpga_ops._check_modes(fp32_resnet, qdq)


def test_the_estimator_charges_each_mode_channel_and_buffer():
    from accel import fpga
    one = fpga.resources("a10gx1150", 16, 16, modes=(("fixed",), ("fixed",)))
    both = fpga.resources("a10gx1150", 16, 16, modes=(("fixed", "residual", "float32"),
                                                      ("fixed",)))
    names = [c.name for c in one.components]
    for part in ("MAC array", "conv epilogue", "pool", "window buffer", "weight buffer",
                 "data_ch", "weight_ch", "acc_ch", "result_ch", "pool_ch", "load units",
                 "writer store units"):
        assert any(n.startswith(part) for n in names), part
    # residual + float32 products, per requantize datapath (the board design's epilogue has
    # LANE / epilogue_steps of them)
    lanes = 16 // design_module.BOARD_DESIGN.epilogue_steps
    assert both.dsp.used - one.dsp.used == lanes * (2 + 2)
    # a deep weight channel is LANE x VEC bytes wide: hundreds of M20K
    deep = fpga.resources("a10gx1150", 32, 64, fpga_design=FpgaDesign(
        vec_size=32, lane_num=64, stream_depth=64))
    shallow = fpga.resources("a10gx1150", 32, 64)
    weight_ch = {r: next(c for c in r.components if c.name == "weight_ch")
                 for r in (deep, shallow)}
    assert weight_ch[deep].m20k >= 400 and weight_ch[shallow].m20k == 0


def test_the_estimator_charges_the_writers_store_units():
    """Aligned 16-byte stores: LANE / 16 + VEC / 16 store sites; byte-predicated stores (the
    kernels before) one per channel."""
    from dataclasses import replace

    from accel import fpga
    from accel.fpga.estimate import ACCEL_DESIGN

    def stores(design):
        res = fpga.resources("a10gx1150", 32, 64, design)
        return next(c for c in res.components if c.name.startswith("writer store units"))

    vector, byte = stores(ACCEL_DESIGN), stores(replace(ACCEL_DESIGN, store_bytes=1))
    assert vector.name == "writer store units (6)" and byte.name == "writer store units (96)"
    assert byte.m20k == 16 * vector.m20k


def test_published_clock_points_and_the_fitted_rule():
    from accel.fpga import fmax
    for point, modelled in fmax.residuals("broadcast"):
        assert abs(modelled - point.fmax_mhz) / point.fmax_mhz < 0.2, point
        assert point.source
    scale, derate = fmax.fit("broadcast")
    assert 0 < derate < 1
    # a fuller array never clocks faster
    assert fmax.achievable_mhz("a10gx1150", "broadcast", 0.9) < \
        fmax.achievable_mhz("a10gx1150", "broadcast", 0.3)
    # a systolic array holds its clock better than a broadcast one (tests/test_fpga_fmax.py)
    assert fmax.achievable_mhz("a10gx1150", "systolic", 0.9) > \
        fmax.achievable_mhz("a10gx1150", "broadcast", 0.9) + 50


def test_cli_report(capsys):
    from accel.cli import main
    assert main(["fpga", "report", "--vec-size", "16", "--lane-num", "32"]) == 0
    out = capsys.readouterr().out
    assert "MAC array 16x32" in out and "weight_ch" in out and "fits: yes" in out
    assert "-DFPGA_CONV_F32=1" in out
    assert main(["fpga", "report", "--model", "alexnet"]) == 0
    out = capsys.readouterr().out
    assert "-DFPGA_CONV_F32=0" in out and "conv epilogue: fixed " in out
    assert main(["fpga", "report", "--vec-size", "64", "--lane-num", "256"]) == 1
    assert "fits: NO" in capsys.readouterr().out


def test_design_module_needs_no_estimator():
    code = ("import sys, accel.fpga.design as d; "
            "print(d.FpgaDesign().mode_word, 'onnx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(design_module.DEFAULT_DESIGN.mode_word), "False"]


def test_the_history_table_runs_and_today_is_the_default_estimate():
    from accel import fpga
    from accel.fpga import steps
    today = next(s for s in steps.STEPS if s.label.endswith("(= today)"))
    assert today.design == fpga.ACCEL_DESIGN and today.record is None and today.built
    assert steps.run(today, "alexnet").latency_ms == fpga.estimate("alexnet").latency_ms
    reviewed = steps.run(steps.STEPS[0], "alexnet")
    assert not reviewed.fits                    # every mode + deep channel: over the DSPs
    text = steps.table(models=("alexnet",))
    # header, rule, the old model, every step, PipeCNN and the DPU
    assert text.count("\n") == len(steps.STEPS) + 4 and "| NO |" in text
    conservative = next(s for s in steps.STEPS if s.clock == "broadcast")
    slow = steps.run(conservative, "alexnet")
    assert slow.fmax_mhz < 250 and slow.latency_ms > steps.run(today, "alexnet").latency_ms
    # every modelled-only record is marked not built, every built one has no such option
    for step in steps.STEPS:
        record = step.record or design_module.BOARD_DESIGN
        assert step.built == (not record.modelled_only), step.label


@pytest.mark.slow
def test_the_readme_table_is_the_table_tools_output():
    """benchmarks/README.md's FPGA table is `python -m accel.fpga.steps`, verbatim."""
    from accel.fpga import steps
    readme = (ROOT / "benchmarks" / "README.md").read_text()
    assert steps.table() in readme, "regenerate the table: python -m accel.fpga.steps"


def test_modelled_only_options_build_no_kernel():
    from dataclasses import replace
    board = design_module.BOARD_DESIGN
    assert board.modelled_only == () and DEFAULT_DESIGN.modelled_only == ()
    assert design_module.PERSISTENT_DESIGN.modelled_only == ()  # built (FPGA_PERSISTENT)
    assert design_module.PERSISTENT_DESIGN.defines()["FPGA_PERSISTENT"] == 1
    for record in (design_module.ON_CHIP_DESIGN,
                   design_module.TWO_PIXEL_DESIGN, design_module.FOUR_PIXEL_DESIGN):
        assert record.modelled_only and "(modelled only)" in record.describe()
        with pytest.raises(ValueError, match="is modelled only"):
            record.defines()
    with pytest.raises(ValueError, match="needs persistent=True"):
        replace(board, chain_buf_size=4096)
    with pytest.raises(ValueError, match="pixels_per_cycle must be 1, 2 or 4"):
        replace(board, pixels_per_cycle=3)
    with pytest.raises(ValueError, match="chain_buf_size must be 0 or a positive multiple"):
        replace(design_module.PERSISTENT_DESIGN, chain_buf_size=100)
    with pytest.raises(ValueError, match="persistent must be True or False"):
        replace(board, persistent=1)


def test_the_epilogue_steps_knob():
    design = FpgaDesign(lane_num=32, epilogue_steps=4)
    assert design.defines()["EPILOGUE_STEPS"] == 4
    assert "epilogue 8 lanes/cycle" in design.describe()
    with pytest.raises(ValueError, match="epilogue_steps 3 must divide lane_num 16"):
        FpgaDesign(epilogue_steps=3)
    assert design_module.BOARD_DESIGN.epilogue_steps == 2
