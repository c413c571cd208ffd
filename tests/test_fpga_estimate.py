"""The analytical FPGA model (accel.fpga): layer extraction, cycle counts, resources, the
knob search, calibration against PipeCNN and the CLI. Pure Python, no OpenCL device."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

from accel.fpga.design import FpgaDesign

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from accel import fpga  # noqa: E402
from accel.fpga import calibration  # noqa: E402
from accel.fpga.boards import ARRIA10_GX1150  # noqa: E402
import accel.fpga.estimate  # noqa: E402
from accel.fpga.cli import main as fpga_main  # noqa: E402

DEPTH = fpga.ACCEL_DESIGN.pipeline_depth_cycles


def loads(vectors, vector_bytes, mhz=200):
    """Cycles of a prologue load: a vector per cycle at most, no faster than the board's DDR
    (a LANE x VEC weight vector of 256 B takes two cycles' DDR bytes at 200 MHz)."""
    return max(vectors, -(-vectors * vector_bytes * mhz * 10**6 //
                          int(ARRIA10_GX1150.ddr_bytes_per_s)))
PARAM = sys.modules["accel.fpga.estimate"].PARAM_BYTES_PER_CHANNEL


class Graph:
    """A tiny ONNX graph builder with real (zero) initializers."""

    def __init__(self, shape):
        self.nodes, self.inits, self.n = [], [], 0
        self.input = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))

    def op(self, op_type, inputs, weights=(), name=None, **attrs):
        self.n += 1
        names = []
        for i, shape in enumerate(weights):
            wname = f"w{self.n}_{i}"
            self.inits.append(numpy_helper.from_array(np.zeros(shape, np.float32), wname))
            names.append(wname)
        out = name or f"{op_type.lower()}{self.n}"
        self.nodes.append(helper.make_node(op_type, list(inputs) + names, [out], name=out,
                                           **attrs))
        return out

    def conv(self, x, cin, cout, k, stride=1, pad=0, group=1, name=None):
        return self.op("Conv", [x], [(cout, cin // group, k, k), (cout,)], name=name,
                       kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4,
                       group=group)

    def model(self, out):
        graph = helper.make_graph(self.nodes, "tiny", [self.input],
                                  [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                                  initializer=self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def one_conv(cin, cout, k=3, hw=4, pad=1, stride=1):
    g = Graph((1, cin, hw, hw))
    return g.model(g.conv("x", cin, cout, k, stride=stride, pad=pad, name="c"))


def conv_row(model, vec, lane, **kw):
    """The first layer's estimate at 200 MHz; by default on the board design's epilogue with
    the broadcast core (the by-hand counts below; the systolic core adds its drain, see
    test_the_systolic_core_adds_its_drain_per_layer)."""
    kw.setdefault("fpga_design", dataclasses.replace(fpga.design.BOARD_DESIGN, systolic=False,
                                                     vec_size=vec, lane_num=lane))
    return fpga.estimate(model, vec_size=vec, lane_num=lane, fmax_mhz=200, **kw).layers[0]


# ---------------------------------------------------------------- cycle counts by hand

def test_cycles_of_a_tiny_conv_by_hand():
    # 8->16 channels, 3x3 pad 1 on 4x4: VEC 4, LANE 8 -> 2 passes x 16 px x 9 taps x 2 vectors
    # (each row streams 4 px x 18 vectors, longer than its 3 x 4 x 2 window reload), plus the
    # prologue (18 weight vectors, a 24-vector window) and one pipeline fill
    row = conv_row(one_conv(8, 16), vec=4, lane=8)
    assert row.macs == 16 * 16 * 9 * 8
    assert row.cycles == 2 * 16 * 9 * 2 + (18 + 24) + DEPTH
    assert row.stall_ms == 0


def test_channel_counts_not_dividing_vec_and_lane_round_up():
    # Cin 5 -> ceil(5/4) = 2 vectors, Cout 9 -> ceil(9/8) = 2 passes: same as 8->16
    row = conv_row(one_conv(5, 9), vec=4, lane=8)
    assert row.cycles == 2 * 16 * 9 * 2 + (18 + 24) + DEPTH
    # and one more channel each way costs nothing until the next multiple
    assert conv_row(one_conv(8, 16), 4, 8).cycles == row.cycles


def test_stride_and_fc_cycles():
    model = one_conv(16, 16, k=1, hw=8, pad=0, stride=2)
    # 4x4 outputs, one vector each; the 1x1 kernel's compact window reloads only the 4
    # columns it reads per output row: no stall
    one_cycle = FpgaDesign(vec_size=16, lane_num=16)   # the epilogue in 1 cycle per vector
    row = conv_row(model, vec=16, lane=16, fpga_design=one_cycle)
    assert loads(1, 16 * 16) == 2                      # the first weights: DDR-bound
    assert row.cycles == 4 * 4 + (2 + 4) + DEPTH and row.stall_ms == 0
    # the board design's epilogue takes 2 cycles per vector: a 1-vector reduction waits
    row = conv_row(model, vec=16, lane=16)
    assert row.cycles == 4 * 4 * 2 + (2 + 4) + DEPTH
    assert row.stall_ms == pytest.approx(16 / 200e6 * 1e3)
    # a whole-row window (the reader before it) reloads all 8 columns: 4 stalls per row
    row = conv_row(model, vec=16, lane=16,
                   design=dataclasses.replace(fpga.ACCEL_DESIGN, compact_window=False))
    assert row.cycles == 4 * 8 + (2 + 8) + DEPTH
    assert row.compute_ms == pytest.approx(16 / 200e6 * 1e3)
    assert row.stall_ms == pytest.approx(16 / 200e6 * 1e3)
    g = Graph((1, 100))
    model = g.model(g.op("Gemm", ["x"], [(30, 100), (30,)], transB=1))
    row = conv_row(model, vec=16, lane=8)
    assert row.type == "fc" and row.macs == 3000
    assert row.cycles == 4 * 7 + (7 + 7) + DEPTH            # ceil(30/8) x ceil(100/16)


def test_ddr_bytes_by_hand():
    # weights 16x8x3x3 + the parameters once; the window (3 input rows x 4 px x 2 vectors of
    # 4 bytes) reloaded per output row and pass, plus the prologue's; the output 4x4x16
    row = conv_row(one_conv(8, 16), vec=4, lane=8)
    assert row.ddr_bytes == (16 * 8 * 9 + 16 * PARAM) + (2 * 4 + 1) * (3 * 4 * 8) + 4 * 4 * 16


def test_pipecnn_refetches_weights_every_seven_pixels():
    model = one_conv(16, 16, hw=14)            # 196 output pixels -> 28 weight loads
    accel_row = conv_row(model, vec=16, lane=16)
    pipecnn_row = conv_row(model, vec=16, lane=16, design=fpga.PIPECNN_DESIGN)
    weights = 16 * 16 * 9 + 16 * PARAM
    # PipeCNN re-reads KH input rows per output row; so does accel's reader (its window
    # holds one output row's KH input rows), plus its prologue's window
    assert pipecnn_row.ddr_bytes == 28 * weights + 14 * 3 * 14 * 16 + 14 * 14 * 16
    assert accel_row.ddr_bytes == weights + 15 * 3 * 14 * 16 + 14 * 14 * 16


def test_the_stem_runs_space_to_depth_as_the_compiler_lowers_it():
    """stem.space_to_depth_stems folds 2x2 patches into channels: the 7x7/2 stem on 3
    channels becomes 4x4/1 on 12 (one vector), over an 11-wide folded input."""
    model = one_conv(3, 16, k=7, hw=16, pad=3, stride=2)
    plain = conv_row(model, vec=16, lane=16,
                     design=dataclasses.replace(fpga.ACCEL_DESIGN, stem_space_to_depth=False))
    folded = conv_row(model, vec=16, lane=16,
                      design=dataclasses.replace(fpga.ACCEL_DESIGN, fold_stem=False))
    w = 16 * 16                                        # bytes of a weight vector
    assert plain.cycles - (loads(49, w) + 7 * 16) - DEPTH == 8 * 8 * 7 * 7  # 3 channels
    assert folded.cycles - (loads(16, w) + 4 * 11) - DEPTH == 8 * 8 * 4 * 4  # 12 channels
    # the FPGA binding also folds the 4 kernel columns into channels (fpga_layout.fold_stems):
    # 4x1 over 48 channels, 3 vectors per tap row; the 1x1-wide window holds the 8 columns read
    columns = conv_row(model, vec=16, lane=16)
    assert columns.shape.startswith("48x") and "k4x1" in columns.shape
    assert columns.cycles - (loads(4 * 3, w) + 4 * 8 * 3) - DEPTH == 8 * 8 * 4 * 3


def test_standalone_pool_and_eltwise_by_hand():
    g = Graph((1, 16, 8, 8))
    p = g.op("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2], name="pool")
    pool = conv_row(g.model(p), vec=16, lane=8)
    # 4x4 outputs x 4 taps, one 16-channel vector per tap; every tap read from DDR
    assert pool.type == "pool" and pool.cycles == 4 * 4 * 4 + DEPTH
    assert pool.ddr_bytes == 4 * 4 * 4 * 16 + 4 * 4 * 16
    g = Graph((1, 16, 8, 8))
    add = conv_row(g.model(g.op("Add", ["x", "x"], name="add")), vec=8, lane=8)
    assert add.type == "eltwise" and add.cycles == 8 * 8 * 4 + DEPTH   # 32 channels in


def test_time_is_max_of_compute_and_memory_plus_overheads():
    row = conv_row(one_conv(64, 64, hw=32), vec=8, lane=8)
    board = ARRIA10_GX1150
    prologue = 9 * 8 + 3 * 32 * 8             # first weights, first window
    expected = (max(row.compute_ms, row.memory_ms) + (prologue + DEPTH) / 200e6 * 1e3
                + board.launch_overhead_us / 1e3)
    assert row.stall_ms == 0
    assert row.time_ms == pytest.approx(expected)
    assert row.bound == ("compute" if row.compute_ms >= row.memory_ms else "memory")


def test_a_big_fc_at_batch_1_is_memory_bound():
    g = Graph((1, 4096))
    model = g.model(g.op("Gemm", ["x"], [(4096, 4096), (4096,)], transB=1))
    row = conv_row(model, vec=16, lane=64)
    assert row.bound == "memory"
    assert row.ddr_bytes >= 4096 * 4096


# ---------------------------------------------------------------- layer extraction

def test_extracts_conv_geometry_and_fuses_relu_pool_and_residual():
    g = Graph((1, 3, 32, 32))
    x = g.conv("x", 3, 16, 7, stride=2, pad=3, name="stem")          # 16x16x16
    x = g.op("Relu", [x])
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 8x8
    a = g.conv(x, 16, 16, 3, pad=1, name="a")
    a = g.op("BatchNormalization", [a], [(16,), (16,), (16,), (16,)])
    s = g.op("Add", [a, x])                                          # residual into conv a
    s = g.op("Relu", [s])
    p = g.op("GlobalAveragePool", [s])
    f = g.op("Flatten", [p])
    out = g.op("Gemm", [f], [(10, 16), (10,)], transB=1, name="fc")
    layers = fpga.extract_layers(g.model(out)).layers
    assert [(l.name, l.kind) for l in layers] == [
        ("stem", "conv"), ("a", "conv"), ("globalaveragepool8", "pool"), ("fc", "fc")]
    stem, conv_a, pool, fc = layers
    assert (stem.in_c, stem.in_h, stem.out_c, stem.out_h) == (3, 32, 16, 16)
    assert stem.kernel == (7, 7) and stem.stride == (2, 2)
    assert stem.pool is not None and stem.written_hw == (8, 8)
    assert "MaxPool" in stem.fused and "Relu" in stem.fused
    assert conv_a.residual and conv_a.pool is None
    assert pool.pool.kind == "avg" and pool.kernel == (8, 8)
    assert (fc.in_c, fc.out_c) == (16, 10)


def test_pool_is_standalone_when_the_conv_output_is_also_used_elsewhere():
    g = Graph((1, 8, 8, 8))
    c = g.conv("x", 8, 8, 3, pad=1, name="c")
    p = g.op("AveragePool", [c], kernel_shape=[2, 2], strides=[2, 2], name="pool")
    q = g.op("MaxPool", [c], kernel_shape=[2, 2], strides=[2, 2], name="pool2")
    out = g.op("Add", [p, q], name="sum")
    layers = fpga.extract_layers(g.model(out)).layers
    assert [(l.name, l.kind) for l in layers] == [
        ("c", "conv"), ("pool", "pool"), ("pool2", "pool"), ("sum", "eltwise")]
    assert layers[0].pool is None


def test_grouped_conv_matmul_and_unmodelled_ops():
    g = Graph((1, 8, 6, 6))
    c = g.conv("x", 8, 16, 3, pad=1, group=2, name="grouped")
    f = g.op("Flatten", [c])
    m = g.op("MatMul", [f], [(16 * 36, 5)], name="mm")
    out = g.op("Softmax", [m])
    extracted = fpga.extract_layers(g.model(out))
    grouped, mm = extracted.layers
    assert grouped.groups == 2 and grouped.macs == 16 * 36 * 9 * 4
    assert (mm.kind, mm.in_c, mm.out_c) == ("fc", 576, 5)
    assert extracted.unmodelled == {"Softmax": 1}
    # grouped: each group is its own pass: 2 x ceil(8/8) passes x 36 px x 9 x ceil(4/4)
    row = conv_row(extracted, vec=4, lane=8)
    assert row.cycles == 2 * 36 * 9 + (9 + 3 * 6) + DEPTH


def test_qdq_model_weights_and_bias_are_constants():
    g = Graph((1, 8, 6, 6))
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    weight = numpy_helper.from_array(np.zeros((8, 8, 3, 3), np.int8), "w_q")
    bias = numpy_helper.from_array(np.zeros((1, 8, 1, 1), np.float32), "b")
    g.inits += [scale, zero, weight, bias]
    q = g.op("QuantizeLinear", ["x", "s", "z"])
    dq = g.op("DequantizeLinear", [q, "s", "z"])
    w = g.op("DequantizeLinear", ["w_q", "s", "z"])
    c = g.op("Conv", [dq, w], name="c", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    out = g.op("Relu", [g.op("Add", [c, "b"])])
    extracted = fpga.extract_layers(g.model(out))
    assert [(l.name, l.kind) for l in extracted.layers] == [("c", "conv")]
    assert extracted.unmodelled == {}


def test_exporter_padding_arithmetic_and_pad_are_free():
    """torch's export of TF-style "same" padding (EfficientNet-Lite0's static_padding): pad
    amounts computed by ConstantOfShape, Concat, Reshape, Slice, Transpose and Cast from
    constants, then a Pad that the compiler folds into the conv. Nothing unmodelled, and the
    conv reads the padded image."""
    g = Graph((1, 8, 6, 6))
    g.inits += [numpy_helper.from_array(np.array([4], np.int64), "n"),
                numpy_helper.from_array(np.array([1, 1, 1, 1], np.int64), "tail"),
                numpy_helper.from_array(np.array([4, 2], np.int64), "shape")]
    zeros = g.op("ConstantOfShape", ["n"], value=numpy_helper.from_array(np.zeros(1, np.int64)))
    amounts = g.op("Reshape", [g.op("Concat", [zeros, "tail"], axis=0), "shape"])
    amounts = g.op("Cast", [g.op("Transpose", [amounts], perm=[1, 0])], to=7)
    flat = g.op("Reshape", [amounts, g.op("Constant", [], value=numpy_helper.from_array(
        np.array([-1], np.int64)))])
    padded = g.op("Pad", ["x", flat])
    c = g.op("Conv", [padded], [(8, 8, 3, 3)], name="c", kernel_shape=[3, 3])
    extracted = fpga.extract_layers(g.model(c))
    assert extracted.unmodelled == {}
    (conv,) = extracted.layers
    assert (conv.in_h, conv.in_w, conv.out_h, conv.out_w) == (8, 8, 6, 6)


def test_symbolic_batch_and_bad_models():
    g = Graph(("N", 4, 5, 5))
    model = g.model(g.conv("x", 4, 4, 3, pad=1, name="c"))
    assert fpga.extract_layers(model).layers[0].out_h == 5
    with pytest.raises(TypeError, match="ModelProto"):
        fpga.extract_layers("not a model")
    empty = helper.make_model(helper.make_graph([], "e", [], []))
    with pytest.raises(ValueError, match="no nodes"):
        fpga.extract_layers(empty)


def test_the_alexnet_calibration_net():
    est = fpga.estimate("alexnet", vec_size=16, lane_num=64)
    # accel's pipeline runs a pool after a conv as its own pass (kernels/fpga_pool.cl)
    assert [row.type for row in est.layers] == (["conv", "pool"] * 2 + ["conv"] * 3 + ["pool"]
                                                + ["fc"] * 3)
    assert sum(row.macs for row in est.layers) == pytest.approx(724e6, rel=0.01)
    assert est.unmodelled == {"LRN": 2}
    # PipeCNN's pool stage sits in the conv's writer: no pool passes
    pipecnn = fpga.estimate("alexnet", vec_size=16, lane_num=64, design=fpga.PIPECNN_DESIGN)
    assert [row.type for row in pipecnn.layers] == ["conv"] * 5 + ["fc"] * 3


# ---------------------------------------------------------------- monotonicity, resources

def _tiny_resnet():
    g = Graph((1, 3, 64, 64))
    x = g.op("Relu", [g.conv("x", 3, 32, 7, stride=2, pad=3)])
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    y = g.op("Relu", [g.conv(x, 32, 48, 1)])
    y = g.op("Relu", [g.conv(y, 48, 48, 3, pad=1)])
    y = g.conv(y, 48, 32, 1)
    x = g.op("Relu", [g.op("Add", [y, x])])
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    return g.model(g.op("Gemm", [x], [(100, 32), (100,)], transB=1))


def test_more_lanes_never_more_compute_cycles():
    model = fpga.extract_layers(_tiny_resnet())
    previous = None
    for lane in (4, 8, 16, 32, 64):
        est = fpga.estimate(model, vec_size=8, lane_num=lane, fmax_mhz=200)
        mac_cycles = sum(r.cycles for r in est.layers if r.type in ("conv", "fc"))
        if previous is not None:
            assert mac_cycles <= previous
        previous = mac_cycles
    assert previous < fpga.estimate(model, vec_size=8, lane_num=4, fmax_mhz=200).layers[0].cycles


def test_more_bandwidth_is_never_slower():
    model = fpga.extract_layers(_tiny_resnet())
    previous = None
    for gbps in (1.0, 4.0, 17.0, 100.0):
        board = dataclasses.replace(ARRIA10_GX1150, ddr_bank_peak_gbps=gbps)
        est = fpga.estimate(model, board, vec_size=16, lane_num=32, fmax_mhz=200)
        if previous is not None:
            assert est.latency_ms <= previous
        previous = est.latency_ms
    slow = dataclasses.replace(ARRIA10_GX1150, ddr_bank_peak_gbps=0.5)
    assert fpga.estimate(model, slow, 16, 32, 200).memory_bound_layers > 0


def test_resources_scale_with_vec_times_lane():
    small = fpga.resources("a10gx1150", 8, 16)
    double_vec = fpga.resources("a10gx1150", 16, 16)
    double_lane = fpga.resources("a10gx1150", 8, 32)
    # the MAC array: V x L / 2 DSPs; doubling V adds that many + the pool's requantizers
    # (every pool mode of the default record)
    pool_dsp = sum(dict(fpga.ACCEL_DESIGN.pool_mode_dsp)[m] for m in fpga.DEFAULT_DESIGN.pool_modes)
    assert double_vec.dsp.used - small.dsp.used == 8 * 16 // 2 + 8 * pool_dsp
    def epilogue_dsp(res):
        return next(c.dsp for c in res.components if c.name.startswith("conv epilogue"))
    assert epilogue_dsp(double_lane) > epilogue_dsp(double_vec)   # requantizers per lane
    for bigger in (double_vec, double_lane):
        # a buffer is as many M20Ks as its width or its depth needs, whichever is more
        assert bigger.m20k.used >= small.m20k.used
        assert bigger.alm.used > small.alm.used
    assert double_lane.m20k.used > small.m20k.used                 # weight buffers per lane
    assert fpga.resources("a10gx1150", 64, 16).m20k.used > small.m20k.used   # width-bound
    for bigger in (double_vec, double_lane):
        assert bigger.fmax_achievable_mhz <= small.fmax_achievable_mhz


def test_too_big_a_configuration_does_not_fit():
    est = fpga.estimate(_tiny_resnet(), vec_size=64, lane_num=256)
    assert not est.fits and not est.resources.fits
    assert est.binding_resource == "dsp"
    assert est.resources.dsp.used > ARRIA10_GX1150.dsp_blocks
    small = fpga.estimate(_tiny_resnet(), vec_size=8, lane_num=8)
    assert small.fits


def test_bad_arguments_are_clear_errors():
    model = _tiny_resnet()
    with pytest.raises(ValueError, match="vec_size"):
        fpga.estimate(model, vec_size=0)
    with pytest.raises(ValueError, match="lane_num"):
        fpga.estimate(model, lane_num=2.5)
    with pytest.raises(ValueError, match="fmax_mhz"):
        fpga.estimate(model, fmax_mhz=-1)
    with pytest.raises(ValueError, match="unknown board"):
        fpga.estimate(model, board="stratix10")
    with pytest.raises(TypeError, match="model name"):
        fpga.estimate(42)
    with pytest.raises(FileNotFoundError):
        fpga.estimate("/nonexistent/model.onnx")


def test_choose_knobs_picks_the_fastest_fitting_configuration():
    model = fpga.extract_layers(_tiny_resnet())
    choice = fpga.choose_knobs(model, "a10gx1150", vec_sizes=(8, 16), lane_nums=(16, 32, 512),
                               goal_ms=None)
    assert choice.estimate.fits and choice.rejected == 2            # LANE 512 never fits
    for vec in (8, 16):
        for lane in (16, 32):
            other = fpga.estimate(model, "a10gx1150", vec, lane,
                                  int(fpga.resources("a10gx1150", vec, lane).fmax_achievable_mhz))
            assert choice.estimate.latency_ms <= other.latency_ms + 1e-9


# ---------------------------------------------------------------- calibration, models

# measured with this model (see benchmarks/README.md "## FPGA model")
CALIBRATION_BOUNDS = {("a10gx1150", "alexnet"): 45.0, ("a10gx1150", "vgg16-pipecnn"): 25.0,
                      ("s5gxa7", "alexnet"): 5.0, ("s5gxa7", "vgg16-pipecnn"): 25.0}


def test_calibration_error_within_the_measured_bound():
    points = fpga.calibrate()
    assert len(points) == 4
    for point in points:
        key = (point.figure.board, point.figure.net)
        assert abs(point.error_percent) <= CALIBRATION_BOUNDS[key], point.line()
        # the modelled MAC-array DSPs never exceed what PipeCNN reports using
        assert point.modelled_dsp <= point.figure.dsp_used


def test_calibration_nets_are_weightless_and_quick():
    model = calibration.vgg16()
    assert len(model.graph.initializer) == 0
    assert fpga.extract_layers(model).macs == pytest.approx(15.47e9, rel=0.01)


@pytest.fixture(scope="module")
def resnet50():
    pytest.importorskip("accel.models")
    return fpga.load_model("resnet50")      # extract_layers + the graph's sole readers


def test_resnet50_layers(resnet50):
    kinds = [layer.kind for layer in resnet50.layers]
    assert kinds.count("conv") == 53 and kinds.count("fc") == 1 and kinds.count("pool") == 1
    assert sum(layer.residual for layer in resnet50.layers) == 16
    assert resnet50.macs == pytest.approx(4.09e9, rel=0.01)


def test_default_knobs_are_the_chosen_ones_and_the_goal_verdict(resnet50):
    # LANE_NUM a multiple of 16: the writer's stores stay whole 16-byte vectors
    choice = fpga.choose_knobs(resnet50, "a10gx1150", goal_ms=5.0,
                               lane_nums=tuple(range(16, 257, 16)))
    assert (choice.vec_size, choice.lane_num) == (fpga.DEFAULT_VEC_SIZE, fpga.DEFAULT_LANE_NUM)
    assert choice.estimate.fits
    # the 5 ms goal needs more int8 MACs/s than the board's DSPs give: the model says so
    assert not choice.meets_goal and choice.estimate.binding_resource == "dsp"
    assert "DSP binds" in choice.summary()


@pytest.mark.parametrize("name", ["resnet152", "densenet121", "ssd_vgg300",
                                  pytest.param("vgg16", marks=pytest.mark.slow)])
def test_every_model_extracts_and_estimates(name):
    models = pytest.importorskip("accel.models")
    est = fpga.estimate(models.build(name))
    assert est.layers and est.latency_ms > 0 and est.fits
    assert all(row.type in ("conv", "fc", "pool", "eltwise") for row in est.layers)


# ---------------------------------------------------------------- CLI

def test_cli_prints_a_table(tmp_path, capsys):
    path = tmp_path / "tiny.onnx"
    onnx.save(_tiny_resnet(), str(path))
    status = fpga_main(["estimate", str(path), "--vec-size", "8", "--lane-num", "16",
                        "--fmax-mhz", "200", "--plot", str(tmp_path / "layers.png")])
    out = capsys.readouterr().out
    assert status == 0
    assert "VEC_SIZE=8 LANE_NUM=16 fmax=200 MHz" in out
    assert "total:" in out and "DSP:" in out and "binding resource" in out
    assert out.count(" conv ") == 4 and " fc " in out
    assert ("plot written" in out and (tmp_path / "layers.png").exists()) or \
        "matplotlib is not installed" in out


def test_cli_estimates_and_reports_a_qdq_model(tmp_path, capsys):
    path = tmp_path / "tiny.onnx"
    onnx.save(_tiny_resnet(), str(path))
    assert fpga_main(["estimate", str(path), "--qdq", "--vec-size", "8", "--lane-num",
                      "16"]) == 0
    out = capsys.readouterr().out
    assert "bitstream modes: conv=float32," in out and " eltwise " in out
    assert fpga_main(["report", "--model", str(path), "--qdq"]) == 0
    out = capsys.readouterr().out
    assert "NDRange add (eltwise.cl, float32)" in out and "-DFPGA_CONV_F32=1" in out
    assert "-DFPGA_CONV_FIXED=0" in out and "-DEPILOGUE_STEPS=2" in out


def test_cli_too_big_and_bad_model(tmp_path, capsys):
    path = tmp_path / "tiny.onnx"
    onnx.save(_tiny_resnet(), str(path))
    assert fpga_main(["estimate", str(path), "--vec-size", "64", "--lane-num", "256"]) == 1
    assert "fits: NO" in capsys.readouterr().out
    assert fpga_main(["estimate", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "unknown model" in err and len(err.strip().splitlines()) == 1


def test_a_compiled_model_is_estimated_from_its_source():
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    import accel
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(0, 0.1, (32, 16, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["y"], ["out"], name="relu")],
        "one_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 28, 28])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 32, 28, 28])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    compiled = accel.compile(model, calibration=[rng.normal(size=(1, 16, 28, 28)).astype(np.float32)],
                             progress=False)
    from accel import fpga
    assert fpga.estimate(compiled).latency_ms == fpga.estimate(model).latency_ms > 0


def test_a_qdq_resnet50_bitstream_fits_and_charges_its_unfused_adds():
    """A QDQ model's convs requantize in float32 and its residual adds stay unfused (the
    compiler's residual_fusion), so the bitstream carries the float32 conv datapath only,
    plus the NDRange add beside it; at 32 x 64 it fits (the emulator runs it bit-exact)."""
    from accel.fpga.estimate import model_modes
    model = fpga.load_model("resnet50")
    assert model_modes(model.layers, "float32") == (("float32",), ("fixed", "float32"))
    assert model_modes(model.layers) == (("fixed", "residual"), ("fixed",))
    qdq = fpga.estimate(model, vec_size=32, lane_num=64, requant="float32")
    fp32 = fpga.estimate(model, vec_size=32, lane_num=64)
    assert qdq.fits and qdq.fpga_design.conv_modes == ("float32",)
    adds = [row for row in qdq.layers if row.type == "eltwise"]
    assert len(adds) == 16 and not any(row.type == "eltwise" for row in fp32.layers)
    names = [c.name for c in qdq.resources.components]
    assert "NDRange add (eltwise.cl, float32)" in names
    assert qdq.latency_ms > fp32.latency_ms      # 16 extra passes over the residual tensors


def test_a_narrow_epilogue_halves_its_dsps_and_charges_short_reductions():
    one = FpgaDesign(vec_size=32, lane_num=64)
    two = FpgaDesign(vec_size=32, lane_num=64, epilogue_steps=2)

    def epilogue(record):
        res = fpga.resources("a10gx1150", 32, 64, fpga_design=record)
        return next(c.dsp for c in res.components if c.name.startswith("conv epilogue"))

    assert epilogue(one) == 2 * epilogue(two) == 64 * (2 + 2 + 2)
    # ResNet-50 at VEC 32: every reduction takes >= 2 cycles, so 2 steps cost no time
    model = fpga.load_model("resnet50")
    at = dict(vec_size=32, lane_num=64, fmax_mhz=200)
    assert fpga.estimate(model, fpga_design=one.with_modes(("fixed", "residual"), ("fixed",)),
                         **at).latency_ms == pytest.approx(
        fpga.estimate(model, fpga_design=two.with_modes(("fixed", "residual"), ("fixed",)),
                      **at).latency_ms)
    # at 4 steps the 1x1 convs over 64 channels (2 vectors) wait for the epilogue
    four = FpgaDesign(vec_size=32, lane_num=64, epilogue_steps=4).with_modes(
        ("fixed", "residual"), ("fixed",))
    assert fpga.estimate(model, fpga_design=four, **at).stall_ms > 0.1


def test_the_systolic_core_adds_its_drain_and_delay_rings():
    """fpga_conv.cl's systolic core: LANE - 1 more cycles per conv pass (the skew drains),
    per-lane weight and sum delay rings in M20K, and the clock of the systolic rule."""
    model = one_conv(8, 16)
    broadcast = FpgaDesign(vec_size=4, lane_num=8, epilogue_steps=2)
    systolic = dataclasses.replace(broadcast, systolic=True)
    assert (conv_row(model, 4, 8, fpga_design=systolic).cycles
            == conv_row(model, 4, 8, fpga_design=broadcast).cycles + 8 - 1)
    flat = fpga.resources("a10gx1150", 32, 64, fpga_design=dataclasses.replace(
        broadcast, vec_size=32, lane_num=64))
    ring = fpga.resources("a10gx1150", 32, 64, fpga_design=dataclasses.replace(
        systolic, vec_size=32, lane_num=64))
    rings = {c.name: c for c in ring.components if c.name.startswith("systolic")}
    assert rings["systolic weight delay rings"].m20k == 64 * 8     # 64 x 32 B: 8 blocks wide
    assert rings["systolic sum de-skew rings"].m20k == 64
    assert ring.dsp.used == flat.dsp.used and ring.m20k.used == flat.m20k.used + 64 * 9
    # each at its style's rule for its use (fmax.py); the systolic rule well above
    from accel.fpga import fmax
    for res, style in ((ring, "systolic"), (flat, "broadcast")):
        use = max(res.dsp.utilization, res.m20k.utilization)
        assert res.fmax_achievable_mhz == fmax.achievable_mhz("a10gx1150", style, use)
    assert ring.fmax_achievable_mhz > flat.fmax_achievable_mhz + 50


# ---------------------------------------------------------------- faster by design (modelled)

def _two_convs():
    """8 -> 16 (3x3) -> 16 (3x3) on 4x4: the first output read only by the second conv."""
    g = Graph((1, 8, 4, 4))
    return g.model(g.conv(g.conv("x", 8, 16, 3, pad=1, name="a"), 16, 16, 3, pad=1, name="b"))


def _rows(model, record, **kw):
    record = dataclasses.replace(record, vec_size=4, lane_num=8)
    return fpga.estimate(model, vec_size=4, lane_num=8, fmax_mhz=200, fpga_design=record,
                         **kw).layers


def _at(record, vec=32, lane=64):
    return dataclasses.replace(record, vec_size=vec, lane_num=lane).with_modes(
        ("fixed", "residual"), ("fixed",))


def test_persistent_kernels_trade_the_launch_for_a_layer_sync():
    from accel.fpga import design
    model = _two_convs()
    host = _rows(model, design.BOARD_DESIGN)
    persistent = _rows(model, design.PERSISTENT_DESIGN)
    launch_ms = ARRIA10_GX1150.launch_overhead_us * 1e-3
    sync_ms = fpga.ACCEL_DESIGN.layer_sync_cycles / 200e6 * 1e3
    assert persistent[0].time_ms == pytest.approx(host[0].time_ms)   # the host starts pass 1
    # pass 2: no launch, the sync instead; its 36 first weight vectors (9 x 4, 32 B each)
    # load while pass 1 drains and signals, which takes longer: wholly hidden
    assert loads(36, 32) == 36 < DEPTH + 7 + fpga.ACCEL_DESIGN.layer_sync_cycles
    assert persistent[1].time_ms == pytest.approx(
        host[1].time_ms - launch_ms + sync_ms - 36 / 200e6 * 1e3)
    # charged: one wide descriptor load unit per persistent kernel, each kernel's copy of
    # the descriptor in registers, the layer loop and tokens; no DSP
    est = sys.modules["accel.fpga.estimate"]
    base = fpga.resources("a10gx1150", 32, 64, fpga_design=_at(design.BOARD_DESIGN))
    more = fpga.resources("a10gx1150", 32, 64, fpga_design=_at(design.PERSISTENT_DESIGN))
    (unit,) = [c for c in more.components if c.name == "layer descriptors (persistent)"]
    lsus = len(est.PERSISTENT_KERNELS)
    assert lsus == 6 and unit.m20k == lsus * fpga.ACCEL_DESIGN.lsu_m20k
    assert unit.alm == lsus * (fpga.ACCEL_DESIGN.lsu_alm + 64 * 32 // 4) + \
        fpga.ACCEL_DESIGN.descriptor_alm
    assert more.dsp.used == base.dsp.used and more.m20k.used == base.m20k.used + unit.m20k
    assert more.alm.used == base.alm.used + unit.alm


def test_a_persistent_pass_hides_its_first_weights_behind_the_drain_and_sync_only():
    """fpga_conv.cl's persistent reader loads a pass's first weights, then waits for the
    previous pass's token: the previous pass's drain and the layer sync hide that much of the
    load (DDR-bound for LANE x VEC-byte vectors), the rest is charged."""
    from accel.fpga import design
    g = Graph((1, 128, 4, 4))
    model = g.model(g.conv(g.conv("x", 128, 128, 3, pad=1, name="a"), 128, 128, 3, pad=1,
                           name="b"))
    at = dict(vec_size=32, lane_num=64, fmax_mhz=200)
    host = fpga.estimate(model, fpga_design=_at(design.BOARD_DESIGN), **at).layers
    persistent = fpga.estimate(model, fpga_design=_at(design.PERSISTENT_DESIGN), **at).layers
    weights = loads(9 * 4, 64 * 32)        # 36 vectors of 2,048 B
    sync = fpga.ACCEL_DESIGN.layer_sync_cycles
    hidden = DEPTH + 63 + sync             # pass a's drain (the systolic skew too), the sync
    assert weights > hidden
    launch_ms = ARRIA10_GX1150.launch_overhead_us * 1e-3
    assert persistent[1].time_ms == pytest.approx(
        host[1].time_ms - launch_ms + (sync - hidden) / 200e6 * 1e3)
    assert persistent[1].overhead_ms > (weights - hidden) / 200e6 * 1e3


def test_on_chip_intermediates_remove_their_ddr_traffic_and_cost_m20k():
    from accel.fpga import design
    model = _two_convs()
    ddr = _rows(model, design.PERSISTENT_DESIGN)
    chip = _rows(model, dataclasses.replace(design.ON_CHIP_DESIGN, chain_buf_size=256))
    # a's 4x4x16 output stays on chip; b reads it there: no window bytes, reload or prologue
    assert chip[0].ddr_bytes == ddr[0].ddr_bytes - 4 * 4 * 16
    assert chip[1].ddr_bytes == 16 * 16 * 9 + 16 * PARAM + 4 * 4 * 16
    assert chip[1].cycles == ddr[1].cycles - 3 * 4 * 4          # its 48-vector window
    # a buffer too small keeps the tensor in DDR
    small = _rows(model, dataclasses.replace(design.ON_CHIP_DESIGN, chain_buf_size=128))
    assert [r.ddr_bytes for r in small] == [r.ddr_bytes for r in ddr]
    # so does a second reader of a's output (the graph's consumers, not the layer order)
    g = Graph((1, 8, 4, 4))
    a = g.conv("x", 8, 16, 3, pad=1, name="a")
    b = g.conv(a, 16, 16, 3, pad=1, name="b")
    shared = g.model(g.op("Add", [b, g.conv(a, 16, 16, 1, name="c")]))
    assert fpga.load_model(shared).sole_next == frozenset()
    assert fpga.load_model(model).sole_next == {"a"}
    base = fpga.resources("a10gx1150", 32, 64, fpga_design=_at(design.PERSISTENT_DESIGN))
    more = fpga.resources("a10gx1150", 32, 64, fpga_design=_at(design.ON_CHIP_DESIGN))
    buffers = next(c for c in more.components if c.name == "on-chip intermediates")
    assert buffers.m20k == 2 * 8 * 13            # 32 B wide, 200,704 B deep, two of them
    assert more.m20k.used == base.m20k.used + buffers.m20k and more.dsp.used == base.dsp.used


def test_resnet50_bottleneck_intermediates_on_chip(resnet50):
    """Every 1x1 -> 3x3 and 3x3 -> 1x1 intermediate of ResNet-50 but layer2.0's 56x56x128 one
    stays on chip; the model is compute-bound at the systolic clock, so DDR falls and time barely moves."""
    from accel.fpga import design
    est = sys.modules["accel.fpga.estimate"]
    record = _at(design.ON_CHIP_DESIGN)
    passes = est._passes(resnet50.layers, fpga.ACCEL_DESIGN, "fixed", 32)
    pairs = [(passes[i].name, passes[i + 1].name)
             for i in sorted(est._chained(passes, record, resnet50.sole_next))]
    assert len(pairs) == 16 * 2 - 1 and ("layer2.0.conv1", "layer2.0.conv2") not in pairs
    for a, b in pairs:   # within one block, convN -> convN+1
        assert a.rsplit(".", 1)[0] == b.rsplit(".", 1)[0] and a[-1] in "12"
    persistent = fpga.estimate(resnet50, fpga_design=_at(design.PERSISTENT_DESIGN))
    chip = fpga.estimate(resnet50, fpga_design=record)
    assert chip.fits and chip.ddr_bytes < 0.8 * persistent.ddr_bytes
    # time barely moves: compute-bound, and the buffers' M20K cost the clock a MHz or two
    assert chip.latency_ms <= 1.01 * persistent.latency_ms
    today = fpga.estimate(resnet50)
    assert persistent.latency_ms < today.latency_ms - 0.5        # 55 host launches saved


def test_pixels_per_cycle_costs_and_clock():
    from accel.fpga import design, fmax
    one, two, four = (_at(r, 32, 32) for r in (design.BOARD_DESIGN, design.TWO_PIXEL_DESIGN,
                                               design.FOUR_PIXEL_DESIGN))
    res = {p: fpga.resources("a10gx1150", 32, 32, fpga_design=r)
           for p, r in ((1, one), (2, two), (4, four))}

    def part(p, name):
        return next(c for c in res[p].components if c.name.startswith(name))

    for p in (2, 4):
        assert part(p, "MAC array").dsp == p * part(1, "MAC array").dsp
        assert part(p, "conv epilogue").dsp == p * part(1, "conv epilogue").dsp
        assert part(p, "weight buffer").m20k == part(1, "weight buffer").m20k   # shared
        assert part(p, "window buffer").m20k >= part(1, "window buffer").m20k
        assert res[p].alm.used > res[1].alm.used
        # the clock: the systolic rule at the design's use (no published P > 1 point)
        use = max(res[p].dsp.utilization, res[p].m20k.utilization)
        assert res[p].fmax_achievable_mhz == fmax.achievable_mhz("a10gx1150", "systolic", use)
    assert part(4, "window buffer").m20k == 2 * part(2, "window buffer").m20k  # 8 banks
    # cycles: ceil(OW / P) slots per row; 4 px on a 4-wide row: a quarter of the stream
    model = one_conv(8, 16)
    rows = {p: _rows(model, r)[0] for p, r in ((1, design.BOARD_DESIGN),
                                               (2, design.TWO_PIXEL_DESIGN),
                                               (4, design.FOUR_PIXEL_DESIGN))}
    assert rows[1].compute_ms == pytest.approx(2 * rows[2].compute_ms)
    assert rows[1].compute_ms == pytest.approx(4 * rows[4].compute_ms)
    # a 7-wide row at 4 px takes 2 slots: 8 pixels' time for 7
    seven = _rows(one_conv(8, 16, hw=7), design.FOUR_PIXEL_DESIGN)[0]
    assert seven.compute_ms == pytest.approx(2 * 7 * 9 * 2 * 2 / 200e6 * 1e3)
