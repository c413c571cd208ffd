"""ACCEL_REQUIRE_FULL_SETUP=1 turns the "tool or set-up missing" skips of
tests/test_fpga_syntax.py and tests/test_devices.py into failures (tests/full_setup.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUARDED = ["tests/test_fpga_syntax.py::test_the_check_only_header_is_never_used_by_real_builds",
           "tests/test_devices.py::test_setup_brings_all_three_platforms"]
# pytest in a child process where neither clang (PATH is an empty folder) nor the OpenCL
# set-up (setup_vendors_dir answers None) is found; the devices themselves still load.
RUNNER = """
import sys
import pytest
from accel import _icd
_icd.setup_vendors_dir = lambda: None
sys.exit(pytest.main(sys.argv[1:]))
"""


def run_without_setup(tmp_path, require: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": str(tmp_path)}
    env.pop("ACCEL_REQUIRE_FULL_SETUP", None)
    if require is not None:
        env["ACCEL_REQUIRE_FULL_SETUP"] = require
    return subprocess.run([sys.executable, "-c", RUNNER, "-q", "-rsf", "-p", "no:cacheprovider",
                           *GUARDED], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("require", [None, "0"])
def test_missing_setup_skips_by_default(tmp_path, require):
    run = run_without_setup(tmp_path, require)
    output = run.stdout + run.stderr
    assert run.returncode == 0 and "2 skipped" in output, output
    assert "clang is not installed" in output, output
    assert "tools/setup-opencl.sh has not run" in output, output


def test_missing_setup_fails_when_the_full_setup_is_required(tmp_path):
    run = run_without_setup(tmp_path, "1")
    output = run.stdout + run.stderr
    assert run.returncode != 0 and "skipped" not in output, output
    assert "clang is not installed (CI installs it), and ACCEL_REQUIRE_FULL_SETUP=1" in output, output
    assert "tools/setup-opencl.sh has not run for this Python, and ACCEL_REQUIRE_FULL_SETUP=1" \
        in output, output
