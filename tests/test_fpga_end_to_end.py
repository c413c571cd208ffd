"""ResNet-50 end to end through the FPGA shape of the kernels (channel pipelines on the
Intel FPGA emulator) equals the NDRange kernels on PoCL, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import accel
from accel import models
from full_setup import missing_setup


def device_of(kind: str, platform: str | None = None):
    for device in accel.devices():
        if device.kind == kind and (platform is None or device.platform == platform):
            return device
    missing_setup(f"no {platform or kind} device")


@pytest.mark.slow
def test_resnet50_on_the_fpga_emulator_equals_pocl_bit_for_bit():
    emulator = device_of("fpga-emulator")
    pocl = device_of("cpu", "Portable Computing Language")
    rng = np.random.default_rng(0)
    images = [rng.normal(0, 60, (1, 3, 224, 224)).astype(np.float32) for _ in range(2)]
    on_pocl = accel.compile(models.build("resnet50"), calibration=images, device=pocl,
                            progress=False)
    on_emulator = accel.CompiledModel(on_pocl.lowered, emulator)  # FPGA pipelines by default
    # The emulator's plan really is the FPGA shape: stages of concurrent pipeline kernels.
    assert on_emulator._bound.plan.num_queues >= 2
    assert on_pocl._bound.plan.num_queues == 1
    # One bitstream for the model, with only the datapaths an fp32 ResNet uses: the fixed
    # requantize with the fused residual add; no float32 mode (no run-time mode switch).
    configs = {kept.geometry.config for kept in on_emulator._bound.buffers
               if hasattr(kept, "geometry")}
    assert len(configs) == 1
    (config,) = configs
    assert config.conv_modes == ("fixed", "residual") and config.pool_modes == ("fixed",)
    assert not any(config.switched.values())
    for x in images[:1] + [rng.normal(0, 60, (1, 3, 224, 224)).astype(np.float32)]:
        for ours, theirs in zip(on_emulator.run_int8(x), on_pocl.run_int8(x)):
            np.testing.assert_array_equal(ours, theirs)
