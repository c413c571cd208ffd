"""The host-class logic on the classes this host is not: the modules below run again in a
child pytest with tests/simulated_host.py making accel see an AVX-512 VNNI host
(its tuning keys, its preferred CPU runtime, the ISA levels on devices).
Tests of what the compilers or onnxruntime do on such a host cannot be simulated and stay
with the real host class."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from accel.isa import host_isa

TESTS = Path(__file__).resolve().parent
MODULES = ("test_tune.py", "test_isa.py", "test_devices.py", "test_chosen_devices.py")


# AVX-512 VNNI only: in the simulation an AVX-512 host without VNNI takes the same paths
# (Intel's runtime is capped below VNNI on both), and each class costs its own kernel builds.
LEVEL = "avx512-vnni"


@pytest.mark.slow
@pytest.mark.skipif(not host_isa().avx2, reason="the simulation builds for AVX2 targets")
def test_the_host_class_logic_holds_on_a_simulated_vnni_host():
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "ACCEL_TEST_SIMULATED_ISA": LEVEL, "PYTHONPATH": path}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "simulated_host", "-p", "no:xdist",
         "-p", "no:cacheprovider", *(str(TESTS / m) for m in MODULES)],
        cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert f"simulated host class: {LEVEL} (" in run.stdout, run.stdout[:2000]
    assert " passed" in run.stdout.splitlines()[-1], run.stdout[-500:]
