"""The FPGA pipelines (kernels/fpga_conv.cl, fpga_pool.cl) on Intel's FPGA Emulation
Platform, bit-exact against the numpy references: every layer type of ResNet-50/152, VGG-16,
DenseNet-121 and SSD-VGG300, small shapes and a few real ones, all with ONE knob set
(DEFAULT_CONFIG), plus the knobs' other values, deadlocks and bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import accel
from accel import numerics
from accel.numerics import Activation
from accel.ops import conv as conv_ops
from accel.ops import fpga
from accel.ops.conv import ConvLayer, Residual, dense_layer
from accel.ops.layout import pad_channels, unpad_channels
from accel.ops.pool import GlobalAvgPoolParams, PoolParams
from accel.reference import conv as conv_ref
from accel.reference import pool as pool_ref
from chosen_devices import chosen

@pytest.fixture(scope="module")
def emu(emulator):
    """A context on the emulator tests/conftest.py chooses (ACCEL_TEST_DEVICES)."""
    return accel.Context(emulator)


def random_conv(rng, cin, cout, k, *, bias_range=5000, scale=(0.0005, 0.004)):
    kh, kw = (k, k) if isinstance(k, int) else k
    weights = rng.integers(-127, 128, (cout, kh, kw, cin), dtype=np.int8)
    bias = rng.integers(-bias_range, bias_range, cout).astype(np.int32)
    multipliers, shifts = numerics.quantize_multipliers(rng.uniform(*scale, cout))
    return weights, bias, multipliers, shifts


def dilate(weights, dilation):
    """The same conv as a dense kernel with zeros between the taps (a dilated conv is
    exactly this; kept as a check independent of the reference's own ``dilation``)."""
    dh, dw = dilation
    cout, kh, kw, cin = weights.shape
    out = np.zeros((cout, (kh - 1) * dh + 1, (kw - 1) * dw + 1, cin), dtype=np.int8)
    out[:, ::dh, ::dw, :] = weights
    return out


def run_conv(emu, rng, *, n=1, h, w, cin, cout, k, stride=(1, 1), pads=(0, 0, 0, 0),
             dilation=(1, 1), zx=-3, zy=5, activation="relu", residual=False,
             config=fpga.DEFAULT_CONFIG, requant="fixed"):
    x = rng.integers(-128, 128, (n, h, w, cin), dtype=np.int8)
    weights, bias, multipliers, shifts = random_conv(rng, cin, cout, k)
    if requant == "float32":  # onnxruntime's float32 requantization (QDQ models)
        multipliers, shifts = numerics.float32_multipliers(rng.uniform(0.0005, 0.004, cout))
    act = {"relu": Activation.relu(zy), "none": Activation(),
           "relu6": Activation.relu6(0.05, zy)}[activation]
    extra = {}
    dense_weights = dilate(weights, dilation)
    if residual:
        oh = conv_ref.output_size(h, dense_weights.shape[1], stride[0], pads[0], pads[2])
        ow = conv_ref.output_size(w, dense_weights.shape[2], stride[1], pads[1], pads[3])
        rm, rs = numerics.quantize_multiplier(0.8)
        extra = dict(residual=rng.integers(-128, 128, (n, oh, ow, cout), dtype=np.int8),
                     residual_zero_point=7, residual_multiplier=rm, residual_shift=rs)
    common = dict(stride=stride, pads=pads, input_zero_point=zx, multipliers=multipliers,
                  shifts=shifts, output_zero_point=zy, activation=act, requant=requant, **extra)
    want = conv_ref.conv2d(x, dense_weights, bias, **common)
    got = fpga.conv2d(emu, x, weights, bias, dilation=dilation, config=config, **common)
    np.testing.assert_array_equal(got, want)
    return got


# Conv layer types, small shapes -------------------------------------------------------------
CONV_CASES = {
    "1x1": dict(h=6, w=5, cin=16, cout=16, k=1),
    "3x3-pad1": dict(h=7, w=6, cin=16, cout=32, k=3, pads=(1, 1, 1, 1)),
    "3x3-stride2": dict(h=9, w=8, cin=32, cout=16, k=3, stride=(2, 2), pads=(1, 1, 1, 1)),
    "7x7-stride2-pad3-rgb": dict(h=15, w=13, cin=3, cout=16, k=7, stride=(2, 2), pads=(3, 3, 3, 3)),
    "1x1-stride2-projection": dict(h=8, w=8, cin=16, cout=32, k=1, stride=(2, 2)),
    # 1x1: the reader's compact window holds only the columns the kernel reads
    "1x1-stride2-pads-batch2": dict(n=2, h=7, w=9, cin=20, cout=24, k=1, stride=(2, 2),
                                    pads=(1, 0, 1, 2)),
    "1x1-stride3-wide": dict(h=3, w=16, cin=40, cout=16, k=1, stride=(1, 3), pads=(0, 1, 0, 0)),
    "odd-channels": dict(h=5, w=7, cin=20, cout=40, k=3, pads=(1, 1, 1, 1)),
    "tiny-channels": dict(h=4, w=4, cin=5, cout=3, k=3, pads=(1, 1, 1, 1)),
    "asymmetric-pads": dict(h=6, w=7, cin=16, cout=16, k=3, pads=(0, 1, 2, 1)),
    "1xN-image": dict(h=1, w=9, cin=24, cout=8, k=1),
    "batch-2": dict(n=2, h=5, w=5, cin=16, cout=16, k=3, pads=(1, 1, 1, 1)),
    "dilation-2": dict(h=9, w=9, cin=16, cout=16, k=3, pads=(2, 2, 2, 2), dilation=(2, 2)),
    "dilation-6-ssd-fc6": dict(h=13, w=13, cin=16, cout=32, k=3, pads=(6, 6, 6, 6), dilation=(6, 6)),
    "no-activation": dict(h=5, w=5, cin=16, cout=16, k=3, pads=(1, 1, 1, 1), activation="none"),
    "relu6": dict(h=5, w=5, cin=16, cout=16, k=3, pads=(1, 1, 1, 1), activation="relu6"),
    "residual-add": dict(h=6, w=6, cin=16, cout=32, k=1, residual=True),
    "residual-add-odd-channels": dict(h=5, w=5, cin=24, cout=20, k=3, pads=(1, 1, 1, 1),
                                      residual=True, activation="none"),
}


@pytest.mark.parametrize("case", CONV_CASES, ids=list(CONV_CASES))
def test_conv_layer_types(emu, case):
    run_conv(emu, np.random.default_rng(len(case)), **CONV_CASES[case])


@pytest.mark.parametrize("case", ["3x3-pad1", "7x7-stride2-pad3-rgb", "odd-channels",
                                  "dilation-2", "relu6"])
def test_conv_float32_requant(emu, case):
    """The float32 requantization (requant_f32 = 1 in the epilogue) against the reference
    and the NDRange kernel on the same device: the same bits."""
    got = run_conv(emu, np.random.default_rng(100 + len(case)), requant="float32",
                   **CONV_CASES[case])
    rng = np.random.default_rng(100 + len(case))
    c = {"n": 1, "stride": (1, 1), "pads": (0, 0, 0, 0), "dilation": (1, 1), **CONV_CASES[case]}
    x = rng.integers(-128, 128, (c["n"], c["h"], c["w"], c["cin"]), dtype=np.int8)
    weights, bias, _, _ = random_conv(rng, c["cin"], c["cout"], c["k"])
    multipliers, shifts = numerics.float32_multipliers(rng.uniform(0.0005, 0.004, c["cout"]))
    act = {"relu": Activation.relu(5), "relu6": Activation.relu6(0.05, 5)}[c.get("activation", "relu")]
    ndrange = conv_ops.conv2d(emu, x, weights, bias, stride=c["stride"], pads=c["pads"],
                              dilation=c["dilation"], input_zero_point=-3,
                              multipliers=multipliers, shifts=shifts, output_zero_point=5,
                              activation=act, requant="float32")
    np.testing.assert_array_equal(got, ndrange)


def test_many_random_layers_agree(emu):
    """Random shapes and data: catches state that leaks between runs of the pipeline."""
    rng = np.random.default_rng(7)
    for _ in range(12):
        k = int(rng.choice([1, 3]))
        run_conv(emu, rng, h=int(rng.integers(1, 9)) + k, w=int(rng.integers(1, 9)) + k,
                 cin=int(rng.integers(1, 40)), cout=int(rng.integers(1, 40)), k=k,
                 pads=(k // 2,) * 4, stride=(int(rng.integers(1, 3)),) * 2,
                 zx=int(rng.integers(-128, 128)), zy=int(rng.integers(-20, 20)))


@pytest.mark.parametrize("config", [
    fpga.FpgaConfig(vec_size=8, lane_num=32),
    fpga.FpgaConfig(vec_size=4, lane_num=8),
    # Buffers too small for the layer: window and weights come straight from global memory.
    fpga.FpgaConfig(win_buf_size=64, weight_buf_size=64),
    # A narrow epilogue: 8 lanes per cycle (4 cycles per vector), and 1 lane per cycle.
    fpga.FpgaConfig(vec_size=8, lane_num=32, epilogue_steps=4),
    fpga.FpgaConfig(lane_num=32, epilogue_steps=32),
    # The systolic core: data passed lane to lane, lane l l cycles late (and a lane count
    # that is not a power of two: the delay rings round up).
    fpga.FpgaConfig(systolic=True),
    fpga.FpgaConfig(vec_size=8, lane_num=40, epilogue_steps=2, systolic=True),
], ids=["vec8-lane32", "vec4-lane8", "off-chip-buffers", "epilogue-8-lanes",
        "epilogue-1-lane", "systolic", "systolic-lane40"])
def test_other_knob_values(emu, config):
    rng = np.random.default_rng(3)
    run_conv(emu, rng, h=7, w=6, cin=20, cout=40, k=3, pads=(1, 1, 1, 1), residual=True,
             config=config)
    run_conv(emu, rng, h=9, w=9, cin=8, cout=16, k=3, pads=(2, 2, 2, 2), dilation=(2, 2),
             config=config)
    run_conv(emu, rng, h=7, w=8, cin=24, cout=16, k=1, stride=(2, 2), pads=(1, 1, 0, 0),
             config=config)
    if config.epilogue_steps > 1 or config.systolic:  # the float32 datapath too
        run_conv(emu, rng, h=5, w=7, cin=20, cout=40, k=3, pads=(1, 1, 1, 1),
                 requant="float32", config=config.with_modes(("float32",)))


def test_dilation_comes_from_the_conv_layer(emu):
    """The compiler's path: a ConvLayer carrying its dilation, prepared and bound with no
    separate argument; ``prepare(dilation=...)`` overrides it; ConvGeometry refuses a
    dilation that contradicts its layer."""
    rng = np.random.default_rng(81)
    x = rng.integers(-128, 128, (1, 9, 10, 12), dtype=np.int8)
    weights, bias, multipliers, shifts = random_conv(rng, 12, 20, (3, 2))
    layer = ConvLayer(batch=1, in_height=9, in_width=10, in_channels=12, out_channels=20,
                      kernel_h=3, kernel_w=2, stride=(1, 2), pads=(2, 1, 1, 3),
                      input_zero_point=-6, output_zero_point=2, dilation=(2, 3))
    common = dict(input_zero_point=-6, multipliers=multipliers, shifts=shifts,
                  output_zero_point=2)
    for override, dilation in ((None, (2, 3)), (1, (1, 1))):
        prepared = fpga.prepare(emu, layer, weights, bias, multipliers, shifts,
                                dilation=override)
        assert prepared.layer.dilation == prepared.geometry.dilation == dilation
        out = emu.buffer(prepared.geometry.output_bytes)
        fpga.run_stage(emu, fpga.bind(prepared, emu.upload(pad_channels(x, fill=-6)), out))
        g = prepared.geometry
        got = unpad_channels(emu.download(out, np.int8, (1, g.out_height, g.out_width, 32)), 20)
        want = conv_ref.conv2d(x, dilate(weights, dilation), bias, stride=(1, 2),
                               pads=(2, 1, 1, 3), **common)
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match=r"dilation \(2, 2\) differs from the layer's \(2, 3\)"):
        fpga.ConvGeometry(layer, (2, 2))


# Dense ----------------------------------------------------------------------------------------
def run_dense(emu, rng, n, k, cout, config=fpga.DEFAULT_CONFIG):
    x = rng.integers(-128, 128, (n, k), dtype=np.int8)
    weights, bias, multipliers, shifts = random_conv(rng, k, cout, 1, scale=(0.0001, 0.001))
    common = dict(input_zero_point=-9, multipliers=multipliers, shifts=shifts,
                  output_zero_point=-4)
    want = conv_ref.dense(x, weights[:, 0, 0, :], bias, **common)
    got = fpga.dense(emu, x, weights[:, 0, 0, :], bias, config=config, **common)
    np.testing.assert_array_equal(got, want)


def test_dense_small(emu):
    run_dense(emu, np.random.default_rng(11), n=3, k=40, cout=10)


def test_dense_whose_weights_stream_from_global_memory(emu):
    """K beyond WEIGHT_BUF_SIZE (like VGG's fc6, K = 25088): weights are not buffered."""
    geometry = fpga.ConvGeometry(dense_layer(1, 12000, 24), (1, 1), fpga.DEFAULT_CONFIG)
    assert not geometry.weights_on_chip
    run_dense(emu, np.random.default_rng(12), n=2, k=12000, cout=24)


# Channel offsets (concat) and plans -------------------------------------------------------------
def test_conv_writes_and_reads_channel_slices_of_a_concat_tensor(emu):
    """DenseNet: each layer reads the first channels of the block's concat buffer and writes
    its growth channels at an offset into the same buffer."""
    rng = np.random.default_rng(21)
    h = w = 5
    total = 64  # the concat tensor: 32 input channels + 16 + 16 new ones
    x = rng.integers(-128, 128, (1, h, w, 32), dtype=np.int8)
    concat = np.full((1, h, w, total), 99, dtype=np.int8)
    concat[..., :32] = x
    buffer = emu.upload(concat)
    expected = concat.copy()
    for offset, cin in ((32, 32), (48, 48)):
        weights, bias, multipliers, shifts = random_conv(rng, cin, 16, 3)
        layer = ConvLayer(batch=1, in_height=h, in_width=w, in_channels=cin, out_channels=16,
                          kernel_h=3, kernel_w=3, pads=(1, 1, 1, 1), input_zero_point=-2,
                          output_zero_point=1, activation=Activation.relu(1),
                          in_channel_stride=total, out_channel_offset=offset,
                          out_channel_stride=total)
        prepared = fpga.prepare(emu, layer, weights, bias, multipliers, shifts)
        fpga.run_stage(emu, fpga.bind(prepared, buffer, buffer), timeout_s=60)
        expected[..., offset:offset + 16] = conv_ref.conv2d(
            expected[..., :cin], weights, bias, pads=(1, 1, 1, 1), input_zero_point=-2,
            multipliers=multipliers, shifts=shifts, output_zero_point=1,
            activation=Activation.relu(1))
    got = emu.download(buffer, np.int8, concat.shape)
    np.testing.assert_array_equal(got, expected)


def test_a_plan_of_stages_runs_the_resnet_stem(emu):
    """conv 7x7/2 + ReLU, then max pool 3x3/2, as two concurrent stages of one Plan: the way
    the compiler's scheduler will emit FPGA layers."""
    rng = np.random.default_rng(31)
    x = rng.integers(-128, 128, (1, 32, 32, 3), dtype=np.int8)
    weights, bias, multipliers, shifts = random_conv(rng, 3, 64, 7)
    layer = ConvLayer(batch=1, in_height=32, in_width=32, in_channels=3, out_channels=64,
                      kernel_h=7, kernel_w=7, stride=(2, 2), pads=(3, 3, 3, 3),
                      input_zero_point=-1, output_zero_point=-128,
                      activation=Activation.relu(-128))
    pool = PoolParams("max", (1, 16, 16, 64), 3, 2, (1, 1, 1, 1), input_zero_point=-128,
                      output_zero_point=-128)
    prepared = fpga.prepare(emu, layer, weights, bias, multipliers, shifts)
    x_buf = emu.buffer(layer.input_bytes)
    mid = emu.buffer(prepared.geometry.output_bytes)
    out = emu.buffer(int(np.prod(pool.output_shape)))
    plan = emu.plan()
    plan.add_input(x_buf)
    conv_stage = fpga.bind(prepared, x_buf, mid)
    pool_stage = fpga.bind_pool(emu, pool, mid, out)
    plan.add_concurrent(conv_stage)
    plan.add_concurrent(pool_stage)
    plan.add_output(out)
    plan.set_timeout(120)
    assert plan.num_queues == 4 and plan.num_launches == 6
    got = np.empty(pool.output_shape, dtype=np.int8)
    plan.run([pad_channels(x, fill=-1)], [got])
    stem = conv_ref.conv2d(x, weights, bias, stride=(2, 2), pads=(3, 3, 3, 3),
                           input_zero_point=-1, multipliers=multipliers, shifts=shifts,
                           output_zero_point=-128, activation=Activation.relu(-128))
    np.testing.assert_array_equal(got, pool_ref.pool2d(pool, stem))


# Pooling ------------------------------------------------------------------------------------
POOL_CASES = {
    "max-3x3-s2-p1-resnet": PoolParams("max", (1, 15, 15, 16), 3, 2, (1, 1, 1, 1)),
    "max-2x2-s2-vgg": PoolParams("max", (2, 8, 8, 32), 2, 2),
    "max-2x2-s2-ceil-ssd": PoolParams("max", (1, 9, 9, 20), 2, 2, ceil_mode=True,
                                      input_zero_point=3, output_zero_point=-2, scale_ratio=0.7),
    "max-3x3-s1-p1-ssd-pool5": PoolParams("max", (1, 6, 6, 16), 3, 1, (1, 1, 1, 1)),
    "avg-2x2-s2-densenet": PoolParams("avg", (1, 8, 8, 40), 2, 2, input_zero_point=-5,
                                      output_zero_point=4, scale_ratio=1.3),
    "avg-3x3-p1-count-pad": PoolParams("avg", (1, 7, 7, 24), 3, 1, (1, 1, 1, 1),
                                       count_include_pad=True, input_zero_point=-5,
                                       activation=Activation.relu(0)),
    "avg-3x3-p1-exclude-pad": PoolParams("avg", (1, 7, 7, 24), 3, 1, (1, 1, 1, 1),
                                         input_zero_point=-5),
    "global-avg": GlobalAvgPoolParams((2, 5, 3, 17), input_zero_point=4, output_zero_point=-3,
                                      scale_ratio=1.1),
}


@pytest.mark.parametrize("case", POOL_CASES, ids=list(POOL_CASES))
def test_pool_layer_types(emu, case):
    params = POOL_CASES[case]
    x = np.random.default_rng(len(case)).integers(-128, 128, params.input_shape, dtype=np.int8)
    np.testing.assert_array_equal(fpga.pool2d(emu, params, x), pool_ref.pool2d(params, x))


def test_pool_writes_at_a_channel_offset(emu):
    params = PoolParams("avg", (1, 6, 6, 16), 2, 2, input_zero_point=2)
    x = np.random.default_rng(41).integers(-128, 128, params.input_shape, dtype=np.int8)
    out = emu.upload(np.full((1, 3, 3, 48), 99, dtype=np.int8))
    fpga.run_stage(emu, fpga.bind_pool(emu, params, emu.upload(x), out, out_channel_stride=48,
                                       out_channel_offset=16), timeout_s=60)
    got = emu.download(out, np.int8, (1, 3, 3, 48))
    np.testing.assert_array_equal(got[..., 16:32], pool_ref.pool2d(params, x))
    assert (got[..., :16] == 99).all() and (got[..., 32:] == 99).all()


# Real layer shapes (one knob set for all) ---------------------------------------------------------
REAL_CONV = {
    # ResNet-50 res2 3x3 conv: 451,584 MAC-array cycles
    "resnet50-res2-3x3": dict(h=56, w=56, cin=64, cout=64, k=3, pads=(1, 1, 1, 1)),
    # ResNet-50 res5 bottleneck expansion with the fused residual add
    "resnet50-res5-1x1-residual": dict(h=7, w=7, cin=512, cout=2048, k=1, residual=True,
                                       activation="relu"),
    # ResNet-50 res3 downsampling 3x3 stride 2
    "resnet50-res3-3x3-s2": dict(h=56, w=56, cin=128, cout=128, k=3, stride=(2, 2),
                                 pads=(1, 1, 1, 1)),
    # DenseNet-121 block 3 layer: 1x1 bottleneck from 512 concat channels, 3x3 growth conv
    "densenet121-b3-1x1": dict(h=14, w=14, cin=512, cout=128, k=1),
    "densenet121-b3-3x3": dict(h=14, w=14, cin=128, cout=32, k=3, pads=(1, 1, 1, 1)),
    # SSD-VGG300 fc6 at its real 19x19 size and dilation 6 (channels cut from 512 -> 1024
    # to 64 -> 64 to keep the emulator time reasonable)
    "ssd300-fc6-dilated": dict(h=19, w=19, cin=64, cout=64, k=3, pads=(6, 6, 6, 6),
                               dilation=(6, 6)),
}


@pytest.mark.parametrize("case", REAL_CONV, ids=list(REAL_CONV))
def test_real_conv_shapes(emu, case):
    run_conv(emu, np.random.default_rng(5), **REAL_CONV[case])


@pytest.mark.slow
def test_real_resnet50_stem_conv(emu):
    """ResNet-50 conv1: 224x224x3 -> 112x112x64, 7x7 stride 2 pad 3 (2.5 M cycles)."""
    run_conv(emu, np.random.default_rng(6), h=224, w=224, cin=3, cout=64, k=7, stride=(2, 2),
             pads=(3, 3, 3, 3))


def test_real_dense_shapes(emu):
    rng = np.random.default_rng(8)
    run_dense(emu, rng, n=1, k=2048, cout=1000)   # ResNet-50/152 fc
    run_dense(emu, rng, n=1, k=4096, cout=1000)   # VGG-16 fc8


@pytest.mark.slow
def test_real_vgg16_fc6(emu):
    """VGG-16 fc6: K = 7*7*512 = 25088 -> 4096, weights streamed from global memory."""
    run_dense(emu, np.random.default_rng(9), n=1, k=25088, cout=4096)


def test_real_pool_shapes(emu):
    rng = np.random.default_rng(10)
    for params in (PoolParams("max", (1, 112, 112, 64), 3, 2, (1, 1, 1, 1)),  # ResNet/DenseNet stem
                   PoolParams("avg", (1, 28, 28, 256), 2, 2),                # DenseNet transition 2
                   GlobalAvgPoolParams((1, 7, 7, 2048), input_zero_point=-7,  # ResNet head
                                       output_zero_point=3, scale_ratio=0.9)):
        x = rng.integers(-128, 128, params.input_shape, dtype=np.int8)
        np.testing.assert_array_equal(fpga.pool2d(emu, params, x), pool_ref.pool2d(params, x))


# ONE configuration serves every layer -------------------------------------------------------------
# The largest windows and reductions of the five models' conv layers (NHWC, batch 1).
LARGEST_LAYERS = {
    "resnet50-conv1": ConvLayer(1, 224, 224, 3, 64, 7, 7, (2, 2), (3, 3, 3, 3)),
    "resnet-res5-3x3": ConvLayer(1, 7, 7, 512, 512, 3, 3, (1, 1), (1, 1, 1, 1)),
    "vgg16-conv1_2": ConvLayer(1, 224, 224, 64, 64, 3, 3, (1, 1), (1, 1, 1, 1)),
    "vgg16-conv5_3": ConvLayer(1, 14, 14, 512, 512, 3, 3, (1, 1), (1, 1, 1, 1)),
    "densenet121-b4-1x1": ConvLayer(1, 7, 7, 1024, 128, 1, 1),
    "ssd300-conv1_2": ConvLayer(1, 300, 300, 64, 64, 3, 3, (1, 1), (1, 1, 1, 1)),
    "ssd300-fc6": ConvLayer(1, 19, 19, 512, 1024, 3, 3, (1, 1), (6, 6, 6, 6), dilation=(6, 6)),
    "ssd300-fc7-head": ConvLayer(1, 19, 19, 1024, 24, 3, 3, (1, 1), (1, 1, 1, 1)),
    "ssd300-conv4_3-head": ConvLayer(1, 38, 38, 512, 84, 3, 3, (1, 1), (1, 1, 1, 1)),
}


@pytest.mark.parametrize("name", LARGEST_LAYERS, ids=list(LARGEST_LAYERS))
def test_default_knobs_keep_every_conv_layer_on_chip(name):
    geometry = fpga.ConvGeometry(LARGEST_LAYERS[name], config=fpga.DEFAULT_CONFIG)
    geometry.check()
    assert geometry.window_on_chip and geometry.weights_on_chip


# Deadlocks and bad input --------------------------------------------------------------------------
DEADLOCK = textwrap.dedent("""
    import os, sys, numpy as np, accel
    from accel.ops import fpga
    from accel.ops.conv import ConvLayer
    ctx = accel.Context(sys.argv[1])
    layer = ConvLayer(batch=1, in_height=4, in_width=4, in_channels=16, out_channels=16,
                      kernel_h=3, kernel_w=3, pads=(1, 1, 1, 1))
    rng = np.random.default_rng(0)
    prepared = fpga.prepare(ctx, layer, rng.integers(-127, 128, (16, 3, 3, 16), dtype=np.int8),
                            np.zeros(16, np.int32), np.full(16, 1 << 30, np.int32),
                            np.full(16, 20, np.int32))
    stage = fpga.bind(prepared, ctx.buffer(layer.input_bytes), ctx.buffer(layer.output_bytes))
    try:
        fpga.run_stage(ctx, stage[1:], timeout_s=2.0)   # the pipeline without its reader
    except accel.LaunchError as error:
        print("LaunchError", error.code, error)
        sys.stdout.flush()
        os._exit(0)   # the stuck kernels still run; leave without waiting for them
    os._exit(1)
""")


def test_a_pipeline_without_its_reader_times_out_with_a_clear_error(emu):
    run = subprocess.run([sys.executable, "-c", DEADLOCK, emu.device.index], capture_output=True,
                         text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "LaunchError -10000" in run.stdout and "channel deadlock" in run.stdout, run.stdout


def test_bad_input_gives_clear_errors(emu):
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (1, 4, 4, 16), dtype=np.int8)
    weights, bias, multipliers, shifts = random_conv(rng, 16, 8, 3)
    common = dict(input_zero_point=0, multipliers=multipliers, shifts=shifts, output_zero_point=0)
    with pytest.raises(TypeError, match="x must be int8"):
        fpga.conv2d(emu, x.astype(np.int16), weights, bias, **common)
    with pytest.raises(ValueError, match="input channels"):
        fpga.conv2d(emu, x[..., :8], weights, bias, **common)
    with pytest.raises(ValueError, match="does not fit"):
        fpga.conv2d(emu, x, weights, bias, dilation=3, **common)
    with pytest.raises(ValueError, match="dilation"):
        fpga.conv2d(emu, x, weights, bias, dilation=0, **common)
    with pytest.raises(ValueError, match="multiplier out of range"):
        fpga.conv2d(emu, x, weights, bias, input_zero_point=0, multipliers=multipliers // 4,
                    shifts=shifts, output_zero_point=0)
    with pytest.raises(ValueError, match="residual needs"):
        fpga.conv2d(emu, x, weights, bias, residual=x, **common)
    with pytest.raises(ValueError, match="must be a multiple of vec_size"):
        fpga.FpgaConfig(win_buf_size=100)
    layer = ConvLayer(batch=1, in_height=4, in_width=4, in_channels=16, out_channels=8,
                      kernel_h=3, kernel_w=3, residual=Residual(0, 1 << 30, 1))
    prepared = fpga.prepare(emu, layer, weights, bias, multipliers, shifts)
    with pytest.raises(ValueError, match="no residual buffer"):
        fpga.bind(prepared, emu.buffer(layer.input_bytes), emu.buffer(layer.output_bytes))
    with pytest.raises(ValueError, match="output buffer holds 4 bytes"):
        fpga.bind(prepared, emu.buffer(layer.input_bytes), emu.buffer(4), emu.buffer(4096))


def test_non_fpga_devices_are_refused_with_a_clear_error():
    others = [d for d in chosen() if d.kind not in fpga.FPGA_KINDS]
    if not others:
        pytest.skip("only FPGA devices present")
    ctx = accel.Context(others[0])
    assert not fpga.is_fpga(ctx)
    rng = np.random.default_rng(0)
    weights, bias, multipliers, shifts = random_conv(rng, 16, 8, 1)
    with pytest.raises(ValueError, match="need an FPGA or the FPGA emulator"):
        fpga.conv2d(ctx, rng.integers(-128, 128, (1, 2, 2, 16), dtype=np.int8), weights, bias,
                    input_zero_point=0, multipliers=multipliers, shifts=shifts,
                    output_zero_point=0)


def test_the_board_branch_builds_and_runs_in_intels_fpga_front_end(emu):
    """With INTELFPGA_CL (what aoc defines) the kernels take their board shape: shallow
    channels, aoc pragmas. Intel's emulator compiles that branch too; run a layer through it."""
    rng = np.random.default_rng(51)
    layer = ConvLayer(batch=1, in_height=6, in_width=6, in_channels=20, out_channels=24,
                      kernel_h=3, kernel_w=3, pads=(1, 1, 1, 1), input_zero_point=3,
                      output_zero_point=-1)
    weights, bias, multipliers, shifts = random_conv(rng, 20, 24, 3)
    board = emu.build_file(fpga.BITSTREAM_FILE, {**fpga.DEFAULT_CONFIG.defines(),
                                                 "INTELFPGA_CL": 1})
    prepared = fpga.prepare(emu, layer, weights, bias, multipliers, shifts, program=board)
    x = rng.integers(-128, 128, (1, 6, 6, 20), dtype=np.int8)
    out = emu.buffer(layer.output_bytes)
    fpga.run_stage(emu, fpga.bind(prepared, emu.upload(pad_channels(x, fill=3)), out),
                   timeout_s=120)
    got = unpad_channels(emu.download(out, np.int8, (1, 6, 6, 32)), 24)
    want = conv_ref.conv2d(x, weights, bias, pads=(1, 1, 1, 1), input_zero_point=3,
                           multipliers=multipliers, shifts=shifts, output_zero_point=-1)
    np.testing.assert_array_equal(got, want)
    params = PoolParams("max", (1, 6, 6, 24), 3, 2, (1, 1, 1, 1))
    pooled = emu.buffer(int(np.prod(params.output_shape)) * 32 // 24)
    fpga.run_stage(emu, fpga.bind_pool(emu, params, out, pooled, program=board), timeout_s=120)
    got = unpad_channels(emu.download(pooled, np.int8, (1, 3, 3, 32)), 24)
    np.testing.assert_array_equal(got, pool_ref.pool2d(params, want))


@pytest.mark.slow
def test_real_ssd300_fc6_input(emu):
    """SSD-VGG300 fc6 on its real 19x19x512 input, 3x3, dilation 6; 256 of its 1024 output
    channels (1.7 M cycles; the numpy reference of the dilated conv is the slow part)."""
    run_conv(emu, np.random.default_rng(61), h=19, w=19, cin=512, cout=256, k=3,
             pads=(6, 6, 6, 6), dilation=(6, 6))


def test_a_resnet_bottleneck_block_runs_as_three_stages_of_one_plan(emu):
    """1x1 reduce + ReLU, 3x3 + ReLU, 1x1 expand + residual add + ReLU: the block's input
    buffer is the last stage's residual, nothing leaves the device between stages."""
    rng = np.random.default_rng(71)
    h = w = 8
    x = rng.integers(-128, 128, (1, h, w, 64), dtype=np.int8)
    params = [random_conv(rng, 64, 16, 1), random_conv(rng, 16, 16, 3), random_conv(rng, 16, 64, 1)]
    zps = [-4, -128, -128, 6]  # input, two inner activations after ReLU, output
    rm, rs = numerics.quantize_multiplier(0.6)
    shapes = [(64, 16, 1, (0, 0, 0, 0)), (16, 16, 3, (1, 1, 1, 1)), (16, 64, 1, (0, 0, 0, 0))]
    buffers = [emu.buffer(h * w * c) for c in (64, 16, 16, 64)]
    plan = emu.plan()
    plan.add_input(buffers[0])
    for i, (cin, cout, k, pads) in enumerate(shapes):
        layer = ConvLayer(batch=1, in_height=h, in_width=w, in_channels=cin, out_channels=cout,
                          kernel_h=k, kernel_w=k, pads=pads, input_zero_point=zps[i],
                          output_zero_point=zps[i + 1], activation=Activation.relu(zps[i + 1]),
                          residual=Residual(zps[0], rm, rs) if i == 2 else None)
        prepared = fpga.prepare(emu, layer, *params[i])
        plan.add_concurrent(fpga.bind(prepared, buffers[i], buffers[i + 1],
                                      buffers[0] if i == 2 else None))
    plan.add_output(buffers[3])
    plan.set_timeout(120)
    got = np.empty((1, h, w, 64), dtype=np.int8)
    plan.run([x], [got])
    y = x
    for i, (cin, cout, k, pads) in enumerate(shapes):
        weights, bias, multipliers, shifts = params[i]
        extra = dict(residual=x, residual_zero_point=zps[0], residual_multiplier=rm,
                     residual_shift=rs) if i == 2 else {}
        y = conv_ref.conv2d(y, weights, bias, pads=pads, input_zero_point=zps[i],
                            multipliers=multipliers, shifts=shifts, output_zero_point=zps[i + 1],
                            activation=Activation.relu(zps[i + 1]), **extra)
    np.testing.assert_array_equal(got, y)


def test_a_bitstream_built_with_other_knobs_is_refused(emu):
    """A program (a board's .aocx) built with other knobs than the FpgaConfig in use would
    compute garbage: its fpga_config kernel reports its knobs and prepare/bind_pool refuse it."""
    other = fpga.FpgaConfig(vec_size=8, lane_num=32)
    program = fpga.bitstream(emu, other)
    assert fpga.built_config(emu, program) == other
    assert fpga.built_config(emu, fpga.bitstream(emu)) == fpga.DEFAULT_CONFIG
    rng = np.random.default_rng(81)
    layer = ConvLayer(batch=1, in_height=4, in_width=4, in_channels=16, out_channels=8,
                      kernel_h=3, kernel_w=3, pads=(1, 1, 1, 1))
    weights, bias, multipliers, shifts = random_conv(rng, 16, 8, 3)
    mismatch = (r"the FPGA program was built with VEC_SIZE=8 LANE_NUM=32 window 65536 B x2, "
                r"weights 9216 B/lane x2, .* but the layer uses VEC_SIZE=16 LANE_NUM=16 ")
    with pytest.raises(ValueError, match=mismatch):
        fpga.prepare(emu, layer, weights, bias, multipliers, shifts, program=program)
    params = PoolParams("max", (1, 4, 4, 16), 2, 2)
    with pytest.raises(ValueError, match=mismatch):
        fpga.bind_pool(emu, params, emu.buffer(256), emu.buffer(64), program=program)
    # With the config it was built for, the same program is accepted.
    fpga.prepare(emu, layer, weights, bias, multipliers, shifts, config=other, program=program)


def test_a_program_without_the_config_kernel_is_refused(emu):
    """An FPGA program that cannot report its knobs (not built from fpga_bitstream.cl)."""
    conv_only = emu.build_file("fpga_conv.cl", fpga.DEFAULT_CONFIG.defines())
    rng = np.random.default_rng(82)
    layer = ConvLayer(batch=1, in_height=4, in_width=4, in_channels=16, out_channels=8,
                      kernel_h=1, kernel_w=1)
    with pytest.raises(ValueError, match="has no fpga_config kernel"):
        fpga.prepare(emu, layer, *random_conv(rng, 16, 8, 1), program=conv_only)
