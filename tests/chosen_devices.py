"""The OpenCL devices the tests run on, chosen in one place.

``ACCEL_TEST_DEVICES`` (a comma list of substrings of a device's short name, name or
platform, e.g. ``pocl,emulator``) narrows every device-parametrised test to the devices
it matches. tests/conftest.py turns these into the fixtures ``device`` / ``ctx`` (every
chosen device), ``fastest_cpu`` and ``emulator``; module-level code (default arguments,
skip conditions) uses the functions here."""

from __future__ import annotations

import os

import accel

ENV = "ACCEL_TEST_DEVICES"


def _wanted() -> list[str]:
    return [w.strip().lower() for w in os.environ.get(ENV, "").split(",") if w.strip()]


def _matches(device, wanted: list[str]) -> bool:
    return allows(f"{device.short_name} {device.name} {device.platform}", wanted)


def allows(description: str, wanted: list[str] | None = None) -> bool:
    """Whether ACCEL_TEST_DEVICES lets tests run on a device so described (its short name,
    name, platform), e.g. oclgrind's simulator, which accel.devices() lists only inside an
    oclgrind run. Everything is allowed when it is unset."""
    wanted = _wanted() if wanted is None else wanted
    return not wanted or any(w in description.lower() for w in wanted)


def chosen() -> list:
    """Every device present, narrowed by ACCEL_TEST_DEVICES."""
    return [d for d in accel.devices() if _matches(d, _wanted())]


def find(kind: str, platform: str | None = None):
    """The first chosen device of this kind (and platform, e.g. "Portable Computing
    Language"), or None."""
    return next((d for d in chosen() if d.kind == kind
                 and (platform is None or d.platform == platform)), None)


def fastest_cpu():
    """The CPU device accel would choose (accel.select_device's ranking) among the chosen
    ones; else the first chosen device; None where nothing is chosen."""
    devices = chosen()
    cpus = [d for d in devices if d.kind == "cpu"]
    if cpus:
        best = accel.select_device()
        return best if best in cpus else cpus[0]
    return devices[0] if devices else None


def emulator():
    """The Intel FPGA emulator among the chosen devices, or None."""
    return find("fpga-emulator")
