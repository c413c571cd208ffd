"""Host instruction-set detection, the ACCEL_CPU_ISA override, and tuning keyed by it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import accel
from accel import isa
from accel.ops import tuning


def test_levels_are_ordered_and_flags_give_the_level():
    assert isa.HostISA(True, True, True, False).native_level == "avx512-vnni"
    assert isa.HostISA(True, True, False, False).native_level == "avx512"
    assert isa.HostISA(True, False, False, True).native_level == "avx2"
    assert isa.HostISA(True, False, False, True).has_vnni  # AVX-VNNI: 256-bit vpdpbusd
    assert not isa.HostISA(True, True, False, False).has_vnni
    assert isa.HostISA(False, False, False, False).native_level == "baseline"


def test_the_override_only_lowers_the_level():
    assert isa.effective_level("avx512-vnni", None) == "avx512-vnni"
    assert isa.effective_level("avx512-vnni", "AVX2") == "avx2"
    assert isa.effective_level("avx2", "avx2") == "avx2"
    with pytest.raises(ValueError, match="more than this host has"):
        isa.effective_level("avx2", "avx512-vnni")
    with pytest.raises(ValueError, match="not one of"):
        isa.effective_level("avx2", "sse9")


def test_the_host_is_read_from_cpuid_flags():
    flags = isa._cpu_flags()
    host = isa.host_isa()
    assert host.avx2 == ("avx2" in flags) and host.avx512bw == ("avx512bw" in flags)
    assert host.avx512_vnni == ("avx512_vnni" in flags)


def _devices_with(env_isa: str) -> dict:
    code = ("import json, accel; print(json.dumps({d.short_name: [d.isa, d.tuning_key] "
            "for d in accel.devices()}))")
    env = {"ACCEL_CPU_ISA": env_isa}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, **env}, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_cpu_devices_carry_the_level_and_forcing_lower_changes_their_tuning_key():
    seen = _devices_with("baseline")
    for device in accel.devices():
        isa_level, key = seen[device.short_name]
        if device.kind == "cpu":
            assert device.isa == isa.host_isa().level
            assert device.tuning_key == f"{device.short_name}/{device.isa}"
            assert (isa_level, key) == ("baseline", f"{device.short_name}/baseline")
            assert "ISA " in str(device)
        else:
            assert device.isa is None and key == device.short_name


def test_tuning_falls_back_from_isa_to_runtime_to_default(monkeypatch):
    table = {"k.cl": {"default": {"A": 1}, "rt-cpu": {"A": 2}, "rt-cpu/avx2": {"A": 3}}}
    monkeypatch.setattr(tuning, "_table", lambda: table)
    assert tuning.knobs("k.cl", "rt-cpu/avx2") == {"A": 3}
    assert tuning.knobs("k.cl", "rt-cpu/avx512-vnni") == {"A": 2}
    assert tuning.knobs("k.cl", "other-fpga") == {"A": 1}
    assert tuning.knobs("missing.cl", "rt-cpu") == {}
