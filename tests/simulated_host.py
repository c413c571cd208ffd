"""A pytest plugin (``-p simulated_host``) that runs tests as on another CPU host class:
accel.isa reads the host's CPUID flags plus those of ``ACCEL_TEST_SIMULATED_ISA``
(``avx512`` or ``avx512-vnni``), so everything decided in Python from the host's ISA
(levels, tuning keys, the preferred CPU runtime, the tests' own branches) takes that class's
path. What runs is still this host's: Intel's CPU runtime is kept on an AVX2 target and its
VNNI variants off (a user's target without VNNI caps them, accel.runtime.host_defines), and
PoCL's compiler targets this host, so no instruction the host lacks is ever built. The
compilers' and onnxruntime's own choices are not simulated: tests of those stay with the
real host. Needs an AVX2 host. Run by tests/test_host_classes.py."""

from __future__ import annotations

import os

ENV = "ACCEL_TEST_SIMULATED_ISA"
EXTRA_FLAGS = {"avx512": {"avx2", "avx512bw"}, "avx512-vnni": {"avx2", "avx512bw", "avx512_vnni"}}

LEVEL = os.environ.get(ENV, "")
if LEVEL not in EXTRA_FLAGS:
    raise RuntimeError(f"{ENV}={LEVEL!r} is not one of {', '.join(EXTRA_FLAGS)}")
# Before accel's first import (accel._icd would ask Intel's runtime for an AVX-512 target).
os.environ["CL_CONFIG_CPU_TARGET_ARCH"] = "core-avx2"

import accel.isa  # noqa: E402

_real_cpu_flags = accel.isa._cpu_flags
accel.isa._cpu_flags = lambda: _real_cpu_flags() | EXTRA_FLAGS[LEVEL]
accel.isa.host_isa.cache_clear()


def pytest_report_header(config):
    return f"simulated host class: {accel.isa.host_isa().describe()}"
