"""ResNet-50 end to end through the FPGA shape of the kernels (channel pipelines on the
Intel FPGA emulator) equals the NDRange kernels on PoCL, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import accel
from accel import models
from chosen_devices import find
from full_setup import missing_setup


def device_of(kind: str, platform: str | None = None):
    """A device the tests may use (tests/chosen_devices.py: ACCEL_TEST_DEVICES)."""
    device = find(kind, platform)
    if device is None:
        missing_setup(f"no {platform or kind} device among the test devices")
    return device


@pytest.fixture(scope="module")
def resnet50_on_pocl():
    """ResNet-50 compiled on PoCL (one compile for the tests below), and its images."""
    pocl = device_of("cpu", "Portable Computing Language")
    rng = np.random.default_rng(0)
    images = [rng.normal(0, 60, (1, 3, 224, 224)).astype(np.float32) for _ in range(3)]
    return accel.compile(models.build("resnet50"), calibration=images[:2], device=pocl,
                         progress=False), images


@pytest.mark.slow
def test_resnet50_on_the_fpga_emulator_equals_pocl_bit_for_bit(resnet50_on_pocl):
    emulator = device_of("fpga-emulator")
    on_pocl, images = resnet50_on_pocl
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
    for x in (images[0], images[2]):  # a calibration image and another
        for ours, theirs in zip(on_emulator.run_int8(x), on_pocl.run_int8(x)):
            np.testing.assert_array_equal(ours, theirs)


def small_resnet():
    """A stem (7x7/2 on RGB: space-to-depth, 12 channels), a max pool, a 48-channel conv
    (not a multiple of 32), a fused residual add, global average pool and a dense layer."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(1)
    inits, nodes = [], []

    def weight(name, shape):
        inits.append(numpy_helper.from_array(rng.normal(0, 0.1, shape).astype(np.float32), name))
        return name

    def conv(x, out, cin, cout, k, s=1, p=0, relu=True):
        nodes.append(helper.make_node("Conv", [x, weight(out + "_w", (cout, cin, k, k)),
                                               weight(out + "_b", (cout,))], [out + "_c"],
                                      kernel_shape=[k, k], strides=[s, s], pads=[p] * 4))
        if not relu:
            return out + "_c"
        nodes.append(helper.make_node("Relu", [out + "_c"], [out]))
        return out

    conv("x", "c1", 3, 64, 7, 2, 3)
    nodes.append(helper.make_node("MaxPool", ["c1"], ["p1"], kernel_shape=[3, 3],
                                  strides=[2, 2], pads=[1] * 4))
    y = conv(conv("p1", "c2", 64, 48, 3, 1, 1), "c3", 48, 64, 1, relu=False)
    nodes += [helper.make_node("Add", [y, "p1"], ["a"]), helper.make_node("Relu", ["a"], ["r"]),
              helper.make_node("GlobalAveragePool", ["r"], ["g"]),
              helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("Gemm", ["f", weight("fc_w", (10, 64)), weight("fc_b", (10,))],
                               ["out"], transB=1)]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])


@pytest.mark.slow
def test_a_vec32_lane64_bitstream_runs_a_model_bit_for_bit():
    """The estimator's ResNet-50 knobs (VEC 32 x LANE 64) on the emulator: the stem's kernel
    columns are folded into channels (4 x 12 = 48) and the tensors the pipelines read are
    re-strided to multiples of 32 (the stem input's 48, the 48-channel conv's output); the
    outputs equal PoCL's NDRange kernels bit for bit."""
    from accel.fpga.design import FpgaDesign
    from accel.fpga.estimate import DEFAULT_LANE_NUM, DEFAULT_VEC_SIZE
    emulator = device_of("fpga-emulator")
    pocl = device_of("cpu", "Portable Computing Language")
    rng = np.random.default_rng(0)
    images = [rng.normal(0, 1, (1, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    on_pocl = accel.compile(small_resnet(), calibration=images, device=pocl, progress=False)
    design = FpgaDesign(vec_size=DEFAULT_VEC_SIZE, lane_num=DEFAULT_LANE_NUM)
    on_emulator = accel.CompiledModel(on_pocl.lowered, emulator, fpga_design=design)
    before, after = on_pocl.lowered.placements, on_emulator.lowered.placements
    assert [before[n].stride for n in ("x", "c2")] == [16, 48]
    assert [after[n].stride for n in ("x", "c2")] == [64, 64]
    assert after["x"].shape == before["x"].shape[:2] + (before["x"].shape[2] - 3, 48)
    stem = next(s for s in on_emulator.lowered.steps if s.inputs[0] == "x")
    assert (stem.attrs["layer"]["kernel_h"], stem.attrs["layer"]["kernel_w"]) == (4, 1)
    assert on_emulator.lowered.device_inputs[0].space_to_depth.fold_width == 4
    (config,) = {kept.geometry.config for kept in on_emulator._bound.buffers
                 if hasattr(kept, "geometry")}
    assert (config.vec_size, config.lane_num) == (32, 64)
    for x in images[:1] + [rng.normal(0, 1, (1, 3, 32, 32)).astype(np.float32)]:
        for ours, theirs in zip(on_emulator.run_int8(x), on_pocl.run_int8(x)):
            np.testing.assert_array_equal(ours, theirs)
    # The re-strided model still runs on the NDRange kernels (it is what gets saved).
    again = accel.CompiledModel(on_emulator.lowered, pocl)
    for ours, theirs in zip(again.run_int8(images[0]), on_pocl.run_int8(images[0])):
        np.testing.assert_array_equal(ours, theirs)


def test_the_fpga_layout_refuses_a_tensor_an_ndrange_add_reads_contiguously():
    """A 48-channel tensor read by a conv pipeline (so re-strided to 64 at VEC 32) and by an
    unfused Add (eltwise.cl reads it as 48 contiguous channels): refused with a clear error;
    at VEC 16 nothing changes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from accel.backend.fpga_layout import pad_for_fpga
    from accel.compiler.errors import CompileError
    pocl = device_of("cpu", "Portable Computing Language")
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.normal(0, 0.1, shape).astype(np.float32), name)
             for name, shape in (("w1", (48, 16, 3, 3)), ("w2", (48, 48, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Add", ["r1", "r2"], ["y"])]
    graph = helper.make_graph(
        nodes, "add48", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 48, 6, 6])], inits)
    model = helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    images = [rng.normal(0, 1, (1, 16, 6, 6)).astype(np.float32)]
    lowered = accel.compile(model, calibration=images, device=pocl, progress=False).lowered
    assert pad_for_fpga(lowered, 16) is lowered
    with pytest.raises(CompileError, match=r"reads 'r1' as a contiguous 48-channel tensor, "
                                           r"but an FPGA pipeline needs it padded to VEC_SIZE 32"):
        pad_for_fpga(lowered, 32)


def board_design():
    """The design the estimator models for ResNet-50 on an Arria 10 (VEC 32 x LANE 64, the
    systolic core, the epilogue in 2 cycles per vector)."""
    from dataclasses import replace

    from accel.fpga.design import BOARD_DESIGN
    from accel.fpga.estimate import DEFAULT_LANE_NUM, DEFAULT_VEC_SIZE
    return replace(BOARD_DESIGN, vec_size=DEFAULT_VEC_SIZE, lane_num=DEFAULT_LANE_NUM)


@pytest.mark.slow
def test_resnet50_at_the_estimators_board_design_equals_pocl_bit_for_bit(resnet50_on_pocl):
    emulator = device_of("fpga-emulator")
    on_pocl, images = resnet50_on_pocl
    on_emulator = accel.CompiledModel(on_pocl.lowered, emulator, fpga_design=board_design())
    (config,) = {kept.geometry.config for kept in on_emulator._bound.buffers
                 if hasattr(kept, "geometry")}
    assert (config.vec_size, config.lane_num, config.epilogue_steps) == (32, 64, 2)
    assert config.systolic
    for ours, theirs in zip(on_emulator.run_int8(images[0]), on_pocl.run_int8(images[0])):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.slow
def test_a_qdq_model_at_the_board_design_equals_pocl_bit_for_bit(tmp_path):
    """A QDQ model (float32 requantize in every conv, unfused residual add, float32 global
    average pool) on the board design's bitstream: only the float32 conv datapath, 32 of
    them per cycle."""
    from qdq_host import quantize_qdq
    emulator = device_of("fpga-emulator")
    pocl = device_of("cpu", "Portable Computing Language")
    rng = np.random.default_rng(4)
    images = [rng.normal(0, 1, (1, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    qdq = quantize_qdq(small_resnet(), images, tmp_path, "QUInt8")
    on_pocl = accel.compile(qdq, device=pocl, progress=False)
    on_emulator = accel.CompiledModel(on_pocl.lowered, emulator, fpga_design=board_design())
    (config,) = {kept.geometry.config for kept in on_emulator._bound.buffers
                 if hasattr(kept, "geometry")}
    assert config.conv_modes == ("float32",) and config.epilogue_steps == 2 and config.systolic
    for x in images:
        for ours, theirs in zip(on_emulator.run_int8(x), on_pocl.run_int8(x)):
            np.testing.assert_array_equal(ours, theirs)
