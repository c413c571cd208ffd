"""Tests that need a tool or set-up step (clang, tools/setup-opencl.sh) skip where it is
missing, so a bare checkout still runs the suite, but FAIL when ACCEL_REQUIRE_FULL_SETUP=1
(tools/test.sh sets it): in CI a missing tool is a broken set-up, not a reason to skip."""

from __future__ import annotations

import os

import pytest

REQUIRE_FULL_SETUP = "ACCEL_REQUIRE_FULL_SETUP"


def missing_setup(reason: str) -> None:
    """Skip the running test because of ``reason``, or fail it when the full set-up is
    required."""
    if os.environ.get(REQUIRE_FULL_SETUP) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_FULL_SETUP}=1 requires it", pytrace=False)
    pytest.skip(reason)
