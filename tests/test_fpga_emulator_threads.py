"""Intel's CPU runtime and FPGA emulator share one TBB thread pool in a process. Started after
the emulator, the CPU runtime used to cap the pool at the host's core count, leaving the
emulator too few threads to run a pipeline's concurrent kernels: the pipeline deadlocked.
accel.Context starts the CPU runtime before the emulator's first context (accel/runtime.py).
Checked in a child process, where the order in which the two runtimes start is known."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import accel
from accel.backend import binding
from accel.runtime import INTEL_CPU_PLATFORM, TBB_WORKERS_ENV, check_concurrent_kernels
from chosen_devices import find
from full_setup import missing_setup

# An NDRange kernel on the emulator, then the CPU runtime's first context (compiling the model
# on it), then the model's FPGA pipelines on the emulator, compared with the CPU's int8 outputs.
EMULATOR_FIRST = textwrap.dedent("""
    import os, sys, numpy as np
    sys.path.insert(0, sys.argv[3])
    import accel
    from accel.ops import eltwise
    from registry_model import tiny_onnx
    emulator, intel_cpu = accel.select_device(sys.argv[1]), accel.select_device(sys.argv[2])
    rng = np.random.default_rng(3)
    shape = (1, 8, 8, 16)
    a = rng.integers(-128, 128, shape, dtype=np.int8)
    eltwise.add(accel.Context(emulator), eltwise.AddParams(shape), a, a)
    images = [rng.normal(0, 60, (1, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    on_cpu = accel.compile(tiny_onnx(), calibration=images, device=intel_cpu, progress=False)
    on_emulator = accel.CompiledModel(on_cpu.lowered, emulator)
    try:
        for x in images:
            for ours, theirs in zip(on_emulator.run_int8(x), on_cpu.run_int8(x)):
                np.testing.assert_array_equal(ours, theirs)
    except accel.LaunchError as error:
        print("LaunchError", error)
        sys.stdout.flush()
        os._exit(1)  # the stuck kernels still run; leave without waiting for them
    print("bit-exact")
    sys.stdout.flush()
    os._exit(0)
""")


def test_pipelines_run_after_the_cpu_runtime_started_second(emulator):
    intel_cpu = find("cpu", INTEL_CPU_PLATFORM)
    if intel_cpu is None:
        missing_setup("no device of Intel's CPU runtime among the test devices")
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, binding.FPGA_TIMEOUT_ENV: "20"}
    env.pop(TBB_WORKERS_ENV, None)  # the runtimes' own thread counts
    run = subprocess.run([sys.executable, "-c", EMULATOR_FIRST, emulator.index, intel_cpu.index,
                          tests], capture_output=True, text=True, timeout=240, env=env)
    assert run.returncode == 0 and "bit-exact" in run.stdout, run.stdout + run.stderr


# A model bound on the emulator where TBB allows too few threads: a clear error at once.
TOO_FEW_THREADS = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, sys.argv[2])
    import accel
    from registry_model import tiny_onnx
    rng = np.random.default_rng(0)
    images = [rng.normal(0, 60, (1, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    try:
        accel.compile(tiny_onnx(), calibration=images, device=sys.argv[1], progress=False)
    except ValueError as error:
        print("ValueError", error)
""")


def test_too_few_emulator_threads_is_a_clear_error_not_a_deadlock(emulator):
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, TBB_WORKERS_ENV: "4", binding.FPGA_TIMEOUT_ENV: "20"}
    run = subprocess.run([sys.executable, "-c", TOO_FEW_THREADS, emulator.index, tests],
                         capture_output=True, text=True, timeout=240, env=env)
    assert ("ValueError the FPGA emulator can run only 3 kernels at once (TBB allows 4 "
            "threads: CL_CONFIG_CPU_TBB_NUM_WORKERS=4); its pipelines need 4"
            in run.stdout), run.stdout + run.stderr


def test_the_thread_check_reads_tbb(emulator):
    accel.Context(emulator)  # the emulator's runtime (and TBB) loaded
    limit = accel.runtime.tbb_thread_limit()
    assert limit is not None and limit >= 5, limit  # this process's pipelines can run
    check_concurrent_kernels(emulator, limit - 1)
    with pytest.raises(ValueError, match=f"its pipelines need {limit}"):
        check_concurrent_kernels(emulator, limit)
    other = find("cpu")
    if other is not None:  # only the emulator runs a kernel per thread
        check_concurrent_kernels(other, limit + 10)
