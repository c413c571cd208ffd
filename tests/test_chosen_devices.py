"""ACCEL_TEST_DEVICES narrows the devices the tests run on (tests/chosen_devices.py)."""

from __future__ import annotations

import accel
import chosen_devices


def test_the_filter_keeps_the_matching_devices(monkeypatch):
    present = accel.devices()
    first = present[0]
    monkeypatch.setenv(chosen_devices.ENV, f"no-such-device, {first.short_name.upper()}")
    chosen = chosen_devices.chosen()
    assert first in chosen
    assert all(first.short_name.lower() in f"{d.short_name} {d.name} {d.platform}".lower()
               for d in chosen)
    monkeypatch.setenv(chosen_devices.ENV, "no-such-device")
    assert chosen_devices.chosen() == []
    assert chosen_devices.fastest_cpu() is None and chosen_devices.emulator() is None
    monkeypatch.delenv(chosen_devices.ENV)
    assert chosen_devices.chosen() == present


def test_fastest_cpu_is_a_chosen_cpu(monkeypatch):
    monkeypatch.delenv(chosen_devices.ENV, raising=False)
    assert chosen_devices.fastest_cpu().kind == "cpu"
    for cpu in [d for d in accel.devices() if d.kind == "cpu"]:
        monkeypatch.setenv(chosen_devices.ENV, cpu.short_name)
        assert chosen_devices.fastest_cpu() == cpu  # also where accel would pick another


def test_find_and_allows_follow_the_filter(monkeypatch):
    monkeypatch.delenv(chosen_devices.ENV, raising=False)
    assert chosen_devices.allows("oclgrind-simulator Oclgrind Simulator")
    for device in accel.devices():
        assert chosen_devices.find(device.kind, device.platform).kind == device.kind
        monkeypatch.setenv(chosen_devices.ENV, "no-such-device")
        assert chosen_devices.find(device.kind, device.platform) is None
        monkeypatch.delenv(chosen_devices.ENV)
    monkeypatch.setenv(chosen_devices.ENV, "pocl")
    assert not chosen_devices.allows("oclgrind-simulator Oclgrind Simulator")
    assert chosen_devices.allows("pocl-cpu cpu Portable Computing Language")
