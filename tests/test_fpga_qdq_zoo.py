"""QDQ zoo models (onnxruntime's quantize_static) through the FPGA pipelines on Intel's FPGA
emulator: VGG-16, ResNet-152 and SSD-VGG300, each bit-equal to the NDRange kernels on PoCL
running the same compiled model, at the Arria 10 board design (VEC 32 x LANE 64, systolic).
ResNet-152 and VGG-16 take a 32 x 32 input (VGG-16's fc6 cut to the 1 x 1 map it then sees,
as tests/test_recorded_outputs.py does at 64 x 64); SSD keeps 300 x 300 (its heads' reshapes
fix it) and runs one image, with a longer watchdog: minutes on the emulator."""

from __future__ import annotations

import numpy as np
import pytest

import accel
from accel.backend.steps import step_kind
from qdq_host import quantize_qdq
from test_fpga_end_to_end import device_of
from test_recorded_outputs import _small_input

SIDE = 32  # the ResNets' and VGG's input side here: five stride-2 stages leave 1 x 1


def _model(name: str):
    from onnx import numpy_helper
    from accel import models
    model = models.build(name)
    if name == "ssd_vgg300":
        return model
    model = _small_input(model, SIDE)
    side = SIDE // 32
    for i, init in enumerate(model.graph.initializer):
        if tuple(init.dims) == (4096, 512 * 7 * 7):  # VGG's fc6, after the flatten
            w = numpy_helper.to_array(init).reshape(-1, 512, 7, 7)[:, :, :side, :side]
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(
                np.ascontiguousarray(w.reshape(w.shape[0], -1)), init.name))
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg16", "resnet152", "ssd_vgg300"])
def test_qdq_zoo_model_through_fpga_pipelines_equals_pocl(name, tmp_path, monkeypatch):
    pocl = device_of("cpu", "Portable Computing Language")
    emulator = device_of("fpga-emulator")
    fp32 = _model(name)
    shape = [d.dim_value for d in fp32.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(2)
    images = [rng.normal(0, 60, shape).astype(np.float32) for _ in range(3)]
    qdq = quantize_qdq(fp32, images[:2], tmp_path, "QUInt8")   # host_reduce_range()
    on_pocl = accel.compile(qdq, device=pocl, progress=False)
    evaluate = (images[0], images[2])  # a calibration image and another
    if name == "ssd_vgg300":  # about 31 GMAC at 300 x 300: minutes on the emulator
        monkeypatch.setenv("ACCEL_FPGA_TIMEOUT_S", "1800")
        evaluate = (images[2],)
    on_emulator = accel.CompiledModel(on_pocl.lowered, emulator, fpga_design="board")
    # the FPGA shape: stages of concurrent pipeline kernels, on PoCL one queue of NDRange ones
    assert on_emulator._bound.plan.num_queues >= 2 and on_pocl._bound.plan.num_queues == 1
    # every conv, dense and pool layer is a pipeline stage of several kernels, bound to one
    # bitstream at the board design carrying the QDQ conv datapath only (float32 requantize;
    # the compiler fuses no residual add in a QDQ model)
    bound = on_emulator._bound
    kernels = dict(zip(bound.launch_names, bound.launch_counts))
    layers = [s.name for s in on_pocl.lowered.steps if step_kind(s.op).bind_fpga]
    assert len(layers) > 10 and all(kernels[name] >= 2 for name in layers), kernels
    configs = {kept.geometry.config for kept in bound.buffers if hasattr(kept, "geometry")}
    assert len(configs) == 1
    (config,) = configs
    assert (config.vec_size, config.lane_num, config.systolic) == (32, 64, True)
    assert config.conv_modes == ("float32",)
    # no run-time mode switch in the MAC lanes; the pool carries what the model's pools need
    # (a ResNet's max pool in fixed point and its global average in float32)
    assert not config.switched["conv"]
    for x in evaluate:
        ours, theirs = on_emulator.run_int8(x), on_pocl.run_int8(x)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)
