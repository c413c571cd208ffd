"""Shared fixtures: every test that takes ``device`` or ``ctx`` runs once per OpenCL device
present (PoCL, Intel's CPU runtime, the FPGA emulator, a GPU where there is one)."""

from __future__ import annotations

import pytest

import accel

DEVICES = accel.devices()


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", DEVICES, ids=[d.short_name for d in DEVICES],
                             scope="session")


@pytest.fixture(scope="session")
def ctx(device):
    """One context per device for the whole session (contexts are costly to make)."""
    return accel.Context(device)
