"""Every kernel source passes clang's strict OpenCL C 1.2 syntax check, with the FPGA macros
off (the NDRange shape) and on (-DINTELFPGA_CL plus kernels/fpga_builtins_check.h declaring
the Intel channel built-ins), so a typo in FPGA-only code shows here, not in a board build."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from full_setup import missing_setup

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "fpga-syntax-check.sh"
KERNELS = sorted((ROOT / "kernels").glob("*.cl"))


@pytest.fixture(autouse=True)
def clang_present():
    if shutil.which("clang") is None:
        missing_setup("clang is not installed (CI installs it)")


def check(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *map(str, files)], capture_output=True,
                          text=True, timeout=300)


def test_every_kernel_file_passes_with_fpga_macros_off_and_on():
    assert KERNELS, "no kernels/*.cl found"
    run = check()
    assert run.returncode == 0, run.stdout + run.stderr
    for path in KERNELS:
        for mode in ("plain", "fpga"):
            assert f"ok    {mode}  {path}" in run.stdout, run.stdout


def test_the_fpga_check_sees_the_fpga_only_code():
    """Without -DINTELFPGA_CL the pipeline kernels vanish (ACCEL_FPGA is 0); with it clang
    must see them: ask clang to list the kernel functions it parsed."""
    source = ROOT / "kernels" / "fpga_conv.cl"
    flags = ["clang", "-x", "cl", "-cl-std=CL1.2", "-E", "-I", str(ROOT / "kernels"), str(source)]
    plain = subprocess.run(flags, capture_output=True, text=True, check=True).stdout
    fpga = subprocess.run(flags[:-1] + ["-DINTELFPGA_CL", "-include",
                                        str(ROOT / "kernels" / "fpga_builtins_check.h"),
                                        str(source)],
                          capture_output=True, text=True, check=True).stdout
    assert "fpga_conv_reader" not in plain
    for name in ("fpga_conv_reader", "fpga_conv_core", "fpga_conv_epilogue", "fpga_conv_writer"):
        assert name in fpga


@pytest.mark.parametrize("typo", [
    # a misspelled function inside FPGA-only code
    ("const data_vec fill = fpga_fill_vec(input_zero_point);",
     "const data_vec fill = fpga_fill_vce(input_zero_point);"),
    # a value of the wrong type written to a channel
    ("write_channel_intel(acc_ch, out);", "write_channel_intel(acc_ch, d);"),
    # a misspelled channel
    ("read_channel_intel(weight_ch)", "read_channel_intel(wieght_ch)"),
])
def test_a_typo_in_fpga_only_code_fails_the_check(tmp_path, typo):
    old, new = typo
    text = (ROOT / "kernels" / "fpga_conv.cl").read_text()
    assert old in text, f"test is stale: {old!r} is no longer in fpga_conv.cl"
    broken = tmp_path / "broken_fpga_conv.cl"
    broken.write_text(text.replace(old, new, 1))
    run = check(broken)
    assert run.returncode != 0
    # The NDRange view cannot see it (it is FPGA-only); the FPGA view must.
    assert f"ok    plain  {broken}" in run.stdout, run.stdout
    assert f"FAIL  fpga  {broken}" in run.stdout, run.stdout
    assert "error" in run.stdout


def test_the_check_only_header_is_never_used_by_real_builds():
    for path in KERNELS + [ROOT / "kernels" / "quant.h"]:
        assert "fpga_builtins_check.h" not in path.read_text(), path


def preprocess(name: str, *flags: str) -> str:
    return subprocess.run(["clang", "-x", "cl", "-cl-std=CL1.2", "-E", "-I",
                           str(ROOT / "kernels"), *flags, str(ROOT / "kernels" / name)],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("flags, stream, result, pool", [
    # aoc (a board): the shallow defaults
    (["-DINTELFPGA_CL"], 2, 16, 16),
    # Intel's emulator (cl_intel_channels without INTELFPGA_CL): deep channels
    (["-Dcl_intel_channels"], 8192, 8192, 8192),
    # the knobs, either way
    (["-DINTELFPGA_CL", "-DSTREAM_DEPTH=128", "-DRESULT_DEPTH=32", "-DPOOL_DEPTH=8"], 128, 32, 8),
    (["-Dcl_intel_channels", "-DSTREAM_DEPTH=4", "-DRESULT_DEPTH=2", "-DPOOL_DEPTH=1"], 4, 2, 1),
], ids=["board", "emulator", "board-knobs", "emulator-knobs"])
def test_channel_depths_are_knobs_with_board_and_emulator_defaults(flags, stream, result, pool):
    conv = preprocess("fpga_conv.cl", *flags)
    for channel, depth in (("data_ch", stream), ("weight_ch", stream), ("acc_ch", result),
                           ("result_ch", result)):
        assert f"{channel} __attribute__((depth({depth})))" in conv, channel
    assert f"pool_ch __attribute__((depth({pool})))" in preprocess("fpga_pool.cl", *flags)
    banners = (ROOT / "kernels" / "fpga_conv.cl").read_text() + \
        (ROOT / "kernels" / "fpga_pool.cl").read_text()
    for knob in ("STREAM_DEPTH", "RESULT_DEPTH", "POOL_DEPTH"):
        assert f" *   {knob} " in banners, f"{knob} is not documented in a banner"


def test_the_epilogue_and_writer_name_the_padded_channel_count():
    """They receive the layer's channels padded to 16 (accel/ops/fpga.py), so say so."""
    conv = preprocess("fpga_conv.cl", "-Dcl_intel_channels")
    for kernel in ("fpga_conv_epilogue", "fpga_conv_writer"):
        signature = conv[conv.index(f"void {kernel}("):]
        signature = signature[:signature.index(")")]
        assert "out_channels_padded" in signature and "out_channels," not in signature, signature
