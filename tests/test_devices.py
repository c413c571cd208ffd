"""Device enumeration and selection, the three-platform set-up, and ``accel devices``."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import types

import pytest

import accel
import accel.devices
import accel.kernel_source
from accel import _icd
from accel.isa import ENV, HostISA, host_isa
from accel.devices import RANK

PRESENT = accel.devices()


def test_devices_describe_themselves():
    assert PRESENT, "no OpenCL device found"
    for device in PRESENT:
        assert device.kind in {"fpga", "fpga-emulator", "cpu", "gpu", "simulator", "other"}
        assert device.platform and device.name and device.vendor
        assert device.compute_units >= 1
        assert device.global_mem_bytes > 0


def test_setup_brings_all_three_platforms():
    """CI runs the set-up, so losing a platform (the FPGA emulator above all) fails here."""
    if _icd.setup_vendors_dir() is None:
        from full_setup import missing_setup
        missing_setup("tools/setup-opencl.sh has not run for this Python")
    platforms = {d.platform for d in PRESENT}
    assert "Portable Computing Language" in platforms
    assert "Intel(R) OpenCL" in platforms
    assert any("FPGA Emulation" in p for p in platforms)
    emulators = [d for d in PRESENT if d.kind == "fpga-emulator"]
    assert emulators and "cl_intel_channels" in emulators[0].extensions


def test_select_by_kind_index_and_name(monkeypatch):
    for device in PRESENT:
        assert accel.select_device(device.index) == device
        assert accel.select_device(device.kind).kind == device.kind
        assert accel.select_device(device) is device
    if any(d.kind == "fpga-emulator" for d in PRESENT):
        assert accel.select_device("fpga-emu").kind == "fpga-emulator"
        monkeypatch.setenv("ACCEL_DEVICE", "fpga-emulator")
        assert accel.select_device().kind == "fpga-emulator"
    if any("Portable" in d.platform for d in PRESENT):
        assert accel.select_device("POCL").platform == "Portable Computing Language"


def _made_up(platform, name, vendor, kind, index):
    device_class = importlib.import_module("accel.devices").Device  # accel.devices: a function
    return device_class(platform=platform, name=name, kind=kind, vendor=vendor,
                        compute_units=2, version="OpenCL 3.0", driver_version="1",
                        global_mem_bytes=1 << 30, platform_index=index, device_index=0)


# What an Intel Xeon host lists: PoCL names its device after the CPU model.
XEON_HOST = [
    _made_up("Portable Computing Language", "pthread-skylake-avx512-Intel(R) Xeon(R) Processor",
             "GenuineIntel", "cpu", 0),
    _made_up("Intel(R) OpenCL", "Intel(R) Xeon(R) Processor", "Intel(R) Corporation", "cpu", 1),
    _made_up("Intel(R) FPGA Emulation Platform for OpenCL(TM)", "Intel(R) FPGA Emulation Device",
             "Intel(R) Corporation", "fpga-emulator", 2)]


@pytest.mark.parametrize("level", ["avx2", "avx512-vnni"])
def test_a_runtime_s_name_wins_over_a_cpu_model_s_name(monkeypatch, level):
    """"intel" is Intel's runtime even on an Intel CPU, where PoCL's device name says Intel
    too and PoCL is preferred; "xeon", which no short name or platform holds, still finds
    the CPU devices."""
    module = importlib.import_module("accel.devices")
    monkeypatch.setattr(module, "devices", lambda: list(XEON_HOST))
    flags = {"avx2": (True, False, False, False), "avx512-vnni": (True, True, True, False)}
    monkeypatch.setattr(module, "host_isa", lambda: HostISA(*flags[level]))
    monkeypatch.delenv("ACCEL_DEVICE", raising=False)
    assert module.select_device("intel").platform == "Intel(R) OpenCL"
    assert module.select_device("pocl").platform == "Portable Computing Language"
    assert module.select_device("fpga-emu").kind == "fpga-emulator"
    assert module.select_device("xeon").platform == module.platform_preference()[0]
    with pytest.raises(accel.DeviceError, match="devices present"):
        module.select_device("epyc")


def test_default_device_is_never_the_emulator(monkeypatch):
    monkeypatch.delenv("ACCEL_DEVICE", raising=False)
    if all(d.kind == "fpga-emulator" for d in PRESENT):
        with pytest.raises(accel.DeviceError, match="only when asked"):
            accel.select_device()
    else:
        chosen = accel.select_device()
        assert chosen.kind != "fpga-emulator"
        ranked = sorted((d for d in PRESENT if d.kind != "fpga-emulator"),
                        key=lambda d: RANK[d.kind])
        assert RANK[chosen.kind] == RANK[ranked[0].kind]


@pytest.mark.parametrize("selector", ["", "  ", "1", 5])
def test_empty_or_bare_number_selectors_are_refused(selector):
    with pytest.raises(accel.DeviceError, match="empty|bare number"):
        accel.select_device(selector)


def test_bad_env_device_lists_devices(monkeypatch):
    monkeypatch.setenv("ACCEL_DEVICE", "9:9")
    with pytest.raises(accel.DeviceError, match="no OpenCL device matches '9:9'"):
        accel.select_device()


def test_no_platform_at_all_is_an_empty_list_not_a_crash(tmp_path):
    env = dict(os.environ, OCL_ICD_VENDORS=str(tmp_path))  # an empty vendors folder
    code = ("import accel; print(len(accel.devices()));\n"
            "try:\n    accel.select_device()\nexcept accel.DeviceError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("0\n")
    assert "no OpenCL devices are present" in out


def test_cli_devices_prints_every_platform():
    out = subprocess.run([sys.executable, "-m", "accel", "devices"], capture_output=True,
                         text=True, check=True).stdout
    for device in PRESENT:
        assert device.platform in out and device.name in out


def test_cli_smoke_on_a_bad_device_says_what_exists():
    run = subprocess.run([sys.executable, "-m", "accel", "smoke", "--device", "nope-nope"],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert "no OpenCL device matches 'nope-nope'" in run.stderr


def test_intel_cpu_runtime_is_asked_for_avx512_on_avx512_hosts():
    if host_isa().avx512bw:
        assert os.environ.get("CL_CONFIG_CPU_TARGET_ARCH")
    env = dict(os.environ, CL_CONFIG_CPU_TARGET_ARCH="")
    code = "import os, accel; print(repr(os.environ.get('CL_CONFIG_CPU_TARGET_ARCH')))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out != "''"  # never left empty: an empty value disables Intel's devices


@pytest.mark.parametrize("flags, target", [((True, False, False, False), None),
                                           ((True, False, False, True), None),  # AVX-VNNI
                                           ((True, True, False, False), "skx"),
                                           ((True, True, True, False), "cascadelake")])
def test_intel_cpu_target_follows_the_host_class(flags, target):
    """VNNI hosts get a target with AVX-512 VNNI (conv.cl's vpdpbusd path), other AVX-512
    hosts Skylake-server, AVX2 hosts the runtime's own choice."""
    from accel._icd import intel_cpu_target
    assert intel_cpu_target(HostISA(*flags)) == target


@pytest.mark.parametrize("target, code", [("cascadelake", 4), ("icelake-server", 4),
                                          ("skx", 3), (None, 3)])
def test_intel_runtime_gets_vnni_variants_only_for_a_vnni_target(monkeypatch, target, code):
    """On a VNNI host, Intel's CPU runtime builds the VNNI variants only when the target it
    compiles for has VNNI (a user's CL_CONFIG_CPU_TARGET_ARCH=skx would fail to build them)."""
    from accel.runtime import INTEL_CPU_PLATFORM, host_defines
    if target is None:
        monkeypatch.delenv("CL_CONFIG_CPU_TARGET_ARCH", raising=False)
    else:
        monkeypatch.setenv("CL_CONFIG_CPU_TARGET_ARCH", target)
    device = types.SimpleNamespace(isa="avx512-vnni", platform=INTEL_CPU_PLATFORM)
    assert host_defines(device) == {"ACCEL_CPU_ISA": code, "ACCEL_LLVM_X86": 1}
    pocl = types.SimpleNamespace(isa="avx512-vnni", platform="Portable Computing Language")
    assert host_defines(pocl) == {"ACCEL_CPU_ISA": 4}


@pytest.mark.parametrize("level, first", [("avx2", "Intel(R) OpenCL"),
                                          ("avx512", "Portable Computing Language"),
                                          ("avx512-vnni", "Intel(R) OpenCL")])
def test_the_faster_cpu_runtime_for_the_host_class_is_preferred(monkeypatch, level, first):
    """The measured rule (accel/devices.py): Intel's runtime on AVX2 and AVX-512 VNNI hosts,
    PoCL on AVX-512 without VNNI."""
    monkeypatch.delenv("ACCEL_DEVICE", raising=False)
    monkeypatch.delenv(ENV, raising=False)  # the host class made up here, not lowered
    flags = {"avx2": (True, False, False, False), "avx512": (True, True, False, False),
             "avx512-vnni": (True, True, True, False)}[level]
    module = importlib.import_module("accel.devices")  # accel.devices is also a function
    monkeypatch.setattr(module, "host_isa", lambda: HostISA(*flags))
    assert module.platform_preference()[0] == first
    platforms = {d.platform for d in PRESENT}
    if {"Portable Computing Language", "Intel(R) OpenCL"} <= platforms and not any(
            d.kind in ("fpga", "gpu") for d in PRESENT):
        assert accel.select_device().platform == first
        assert accel.select_device("cpu").platform == first
        assert accel.select_device("intel").platform == "Intel(R) OpenCL"
        assert accel.select_device("pocl").platform == "Portable Computing Language"
