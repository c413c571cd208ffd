"""Every kernel source passes clang's strict OpenCL C 1.2 syntax check, with the FPGA macros
off (the NDRange shape) and on (-DINTELFPGA_CL plus kernels/fpga_builtins_check.h declaring
the Intel channel built-ins), so a typo in FPGA-only code shows here, not in a board build."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "fpga-syntax-check.sh"
KERNELS = sorted((ROOT / "kernels").glob("*.cl"))

pytestmark = pytest.mark.skipif(shutil.which("clang") is None,
                                reason="clang is not installed (CI installs it)")


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
    ("d = fpga_load_input(input, n, y0", "d = fpga_load_inptu(input, n, y0"),
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
