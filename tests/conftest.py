"""Shared fixtures: every test that takes ``device`` or ``ctx`` runs once per OpenCL device
present (PoCL, Intel's CPU runtime, the FPGA emulator, a GPU where there is one), or once
per device ACCEL_TEST_DEVICES chooses (tests/chosen_devices.py); ``fastest_cpu`` is the
CPU device accel would pick, ``emulator`` the FPGA emulator (missing: skipped, or failed
under ACCEL_REQUIRE_FULL_SETUP=1)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The suite keeps its own program cache (under build/, which git ignores), never the user's.
BUILD = Path(__file__).resolve().parent.parent / "build"
os.environ.setdefault("ACCEL_CACHE_DIR", str(BUILD / "test-program-cache"))
# ... and the shipped tuning (kernels/tuning.json), never the user's `accel tune` file.
os.environ.setdefault("ACCEL_TUNING_FILE", "off")
# Under pytest-xdist each worker gets its own PoCL kernel cache: PoCL compiles a kernel for
# its work-group size at first launch, and two processes finishing the same entry at once
# must not share one.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("POCL_CACHE_DIR",
                          str(BUILD / f"pocl-cache-{os.environ['PYTEST_XDIST_WORKER']}"))

import accel  # noqa: E402
from chosen_devices import emulator as _emulator  # noqa: E402
from chosen_devices import fastest_cpu as _fastest_cpu  # noqa: E402
from chosen_devices import chosen  # noqa: E402
from full_setup import missing_setup  # noqa: E402

DEVICES = chosen()


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", DEVICES, ids=[d.short_name for d in DEVICES],
                             scope="session")


@pytest.hookimpl(wrapper=True)
def pytest_report_to_serializable(config, report):
    """A failing test's report may quote text that is not UTF-8 encodable (lone surrogates: a
    fuzzer's generated input, bytes decoded with surrogateescape). pytest-xdist cannot send
    such a report to the controller, and the worker then stops with an internal error that
    ends the whole run; those characters are sent escaped instead."""
    return utf8_encodable((yield))


def utf8_encodable(value):
    """``value`` (a report's serialized form) with every string UTF-8 encodable."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {utf8_encodable(k): utf8_encodable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [utf8_encodable(v) for v in value]
    if isinstance(value, tuple):  # a subclass (named tuple) becomes a plain one
        return tuple(utf8_encodable(v) for v in value)
    return value


@pytest.fixture(scope="session")
def fastest_cpu():
    device = _fastest_cpu()
    if device is None:
        pytest.skip("ACCEL_TEST_DEVICES chooses no device")
    return device


@pytest.fixture(scope="session")
def emulator():
    device = _emulator()
    if device is None:
        if any(d.kind == "fpga-emulator" for d in accel.devices()):
            pytest.skip("ACCEL_TEST_DEVICES leaves the FPGA emulator out")
        missing_setup("no Intel FPGA emulator among the test devices")
    return device


@pytest.fixture(scope="session")
def ctx(device):
    """One context per device for the whole session (contexts are costly to make)."""
    return accel.Context(device)


@pytest.fixture(autouse=True, scope="module")
def _tensorflow_stays_out_of_the_test_process():
    """TensorFlow exports its own LLVM's symbols to the whole process and PoCL's kernel
    compiler then crashes in them (tests/tf_helpers.py): TensorFlow work runs in children."""
    yield
    assert "tensorflow" not in sys.modules, \
        "this test module imported TensorFlow into the test process: run it in a child"


@pytest.fixture
def compile_calls(monkeypatch) -> dict:
    """The keyword arguments of the test's accel.compile calls (the real compile still runs),
    for tests that check a CLI option reaches compile()."""
    import accel
    seen: dict = {}
    real_compile = accel.compile

    def recording_compile(*args, **kwargs):
        seen.update(kwargs)
        return real_compile(*args, **kwargs)

    monkeypatch.setattr(accel, "compile", recording_compile)
    return seen
