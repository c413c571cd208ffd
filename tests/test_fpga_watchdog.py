"""A compiled model's FPGA pipelines cannot hang a process: its plan waits at most
ACCEL_FPGA_TIMEOUT_S, then raises accel.LaunchError naming the kernels that had not finished.
The deadlock is made on purpose (each conv stage bound without its reader kernel) in a child
process, which leaves without waiting for the stuck kernels."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from accel.backend import binding
from accel.ops import fpga

DEADLOCKED_MODEL = textwrap.dedent("""
    import os, sys, numpy as np
    sys.path.insert(0, sys.argv[2])
    import accel
    from accel.ops import fpga
    from registry_model import tiny_onnx
    bind = fpga.bind
    fpga.bind = lambda *args, **kw: bind(*args, **kw)[1:]  # every conv stage loses its reader
    rng = np.random.default_rng(1)
    images = [rng.normal(0, 60, (1, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    model = accel.compile(tiny_onnx(), calibration=images, device=sys.argv[1], progress=False)
    try:
        model.run(images[0])
    except accel.LaunchError as error:
        print("LaunchError", error.code, error)
        sys.stdout.flush()
        os._exit(0)   # the stuck kernels still run; leave without waiting for them
    os._exit(1)
""")


@pytest.mark.slow
def test_a_deadlocked_model_raises_naming_the_kernels_that_did_not_finish(emulator):
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, binding.FPGA_TIMEOUT_ENV: "3"}
    env.pop("CL_CONFIG_CPU_TBB_NUM_WORKERS", None)  # the emulator's own thread count
    run = subprocess.run([sys.executable, "-c", DEADLOCKED_MODEL, emulator.index, tests],
                         capture_output=True, text=True, timeout=240, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "LaunchError -10000" in run.stdout, run.stdout
    assert "did not finish within 3" in run.stdout, run.stdout
    # the conv core waits on the reader that never came: named, as running or not started
    assert "fpga_conv_core" in run.stdout and ("still running" in run.stdout
                                               or "never started" in run.stdout), run.stdout


def test_the_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(binding.FPGA_TIMEOUT_ENV, raising=False)
    assert binding.fpga_timeout_s() == fpga.DEFAULT_TIMEOUT_S
    monkeypatch.setenv(binding.FPGA_TIMEOUT_ENV, "0")
    assert binding.fpga_timeout_s() == 0
    monkeypatch.setenv(binding.FPGA_TIMEOUT_ENV, "12.5")
    assert binding.fpga_timeout_s() == 12.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(binding.FPGA_TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=f"ACCEL_FPGA_TIMEOUT_S='{bad}' must be a number"):
            binding.fpga_timeout_s()
