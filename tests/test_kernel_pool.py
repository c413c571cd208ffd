"""kernels/pool.cl: bit-exact against accel.reference.pool on every device; the reference's
window semantics checked against onnxruntime; bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import accel
from accel.numerics import Activation
from accel.ops import pool
from accel.ops.layout import pad_channels
from accel.reference import pool as reference


def random_i8(shape, seed):
    return np.random.default_rng(seed).integers(-128, 128, shape, dtype=np.int8)


def check(ctx, params, seed=0, defines=None):
    x = random_i8(params.input_shape, seed)
    expected = reference.pool2d(params, x)
    np.testing.assert_array_equal(pool.pool2d(ctx, params, x, defines), expected)
    return expected


P = pool.PoolParams
G = pool.GlobalAvgPoolParams

# (id, params, also runs under oclgrind)
CASES = [
    ("max3x3s2p1_odd_c20", P("max", (1, 9, 7, 20), 3, 2, (1, 1, 1, 1)), True),
    ("max2x2s2", P("max", (2, 8, 8, 16), 2, 2), True),
    ("max3x3s1p1_c3", P("max", (1, 5, 5, 3), 3, 1, (1, 1, 1, 1)), True),
    ("max1x1_spatial1", P("max", (1, 1, 1, 5), 1, 1), True),
    ("max_asym_pads", P("max", (1, 6, 5, 17), (3, 2), (1, 2), (0, 1, 2, 0)), True),
    ("max_ceil", P("max", (1, 6, 6, 32), 3, 2, ceil_mode=True), True),
    ("max_ceil_pads_odd", P("max", (1, 7, 9, 8), 3, 2, (1, 0, 1, 2), ceil_mode=True), True),
    ("max_requant_relu", P("max", (1, 5, 7, 24), 2, 1, input_zero_point=-7,
                           output_zero_point=20, scale_ratio=0.37,
                           activation=Activation.relu(20)), True),
    ("max_saturates", P("max", (1, 6, 6, 16), 2, 2, input_zero_point=3, scale_ratio=5.0), True),
    ("max_ratio_near_1", P("max", (1, 4, 4, 16), 2, 2, input_zero_point=-1, output_zero_point=2,
                           scale_ratio=1.0 - 2.0 ** -30), True),
    ("max_ratio_near_2^-31", P("max", (1, 4, 4, 16), 2, 2, scale_ratio=1.5 * 2.0 ** -31), True),
    ("avg2x2s2", P("avg", (1, 8, 8, 48), 2, 2), True),
    ("avg3x3p1_exclude_pad", P("avg", (1, 5, 5, 20), 3, 1, (1, 1, 1, 1), input_zero_point=5,
                               output_zero_point=-3, scale_ratio=0.8), True),
    ("avg3x3p1_include_pad", P("avg", (1, 5, 5, 20), 3, 1, (1, 1, 1, 1), count_include_pad=True,
                               input_zero_point=5, output_zero_point=-3, scale_ratio=0.8), True),
    ("avg_ceil_include_pad", P("avg", (1, 6, 6, 16), 3, 2, (1, 1, 1, 1), ceil_mode=True,
                               count_include_pad=True), True),
    ("avg_ceil_exclude_pad", P("avg", (1, 6, 6, 16), 3, 2, (1, 1, 1, 1), ceil_mode=True), True),
    ("avg7x7s2p3", P("avg", (1, 9, 9, 16), 7, 2, (3, 3, 3, 3), count_include_pad=True), True),
    ("avg_whole_plane", P("avg", (1, 7, 7, 24), 7, 1, input_zero_point=-128), True),
    ("avg_asym_stride_odd", P("avg", (1, 7, 5, 33), (2, 3), (2, 1), (1, 0, 0, 2)), True),
    ("avg_saturates", P("avg", (1, 4, 4, 16), 2, 2, scale_ratio=6.0, output_zero_point=-5), True),
    ("avg_ratio_near_2^-31", P("avg", (1, 3, 3, 16), 1, 1, scale_ratio=1.1 * 2.0 ** -31), True),
    ("gap7x7_c40", G((2, 7, 7, 40), input_zero_point=3, output_zero_point=-4, scale_ratio=0.9), True),
    ("gap1x1", G((1, 1, 1, 16), input_zero_point=-2, scale_ratio=1.0), True),
    ("gap_saturates_relu", G((1, 3, 5, 20), output_zero_point=-10, scale_ratio=9.0,
                             activation=Activation.relu(-10)), True),
]


@pytest.mark.parametrize("params", [
    pytest.param(p, id=name, marks=[pytest.mark.oclgrind] if small else [])
    for name, p, small in CASES])
def test_pool_is_bit_exact(ctx, params):
    check(ctx, params)


def test_saturation_cases_reach_both_ends():
    """The saturation cases above really clamp at -128 and 127 (so they test something)."""
    for name, params, _ in CASES:
        if "saturates" in name:
            out = reference.pool2d(params, random_i8(params.input_shape, 0))
            assert out.min() == params.activation.lo and out.max() == 127, name


@pytest.mark.oclgrind
@pytest.mark.parametrize("vec", [1, 2, 8, 16])
def test_vector_width_knob(ctx, vec):
    check(ctx, P("max", (1, 5, 6, 32), 3, 2, (1, 1, 1, 1)), defines={"VEC": vec})
    check(ctx, P("avg", (1, 5, 6, 32), 3, 2, (1, 1, 1, 1)), seed=1, defines={"VEC": vec})
    check(ctx, G((1, 3, 3, 32)), seed=2, defines={"VEC": vec})


@pytest.mark.oclgrind
def test_output_into_a_channel_slice_leaves_the_rest(ctx):
    """A pool writing its 16 channels at offset 16 of a 48-channel tensor (Concat in place)."""
    params = P("avg", (1, 4, 4, 10), 2, 2, input_zero_point=1)
    x = random_i8(params.input_shape, 3)
    _, oh, ow, _ = params.output_shape
    sentinel = np.full((1, oh, ow, 48), 77, dtype=np.int8)
    out_buf = ctx.upload(sentinel)
    in_buf = ctx.upload(pad_channels(x, fill=1))
    kernel, global_size, local_size = pool.bind(ctx, params, [in_buf], out_buf,
                                                out_channel_stride=48, out_channel_offset=16)
    kernel.launch(ctx.queue, global_size, local_size).wait()
    out = ctx.download(out_buf, np.int8, sentinel.shape)
    np.testing.assert_array_equal(out[..., 16:26], reference.pool2d(params, x))
    np.testing.assert_array_equal(out[..., 26:32], 0)  # padded channels: z_y
    np.testing.assert_array_equal(out[..., :16], 77)
    np.testing.assert_array_equal(out[..., 32:], 77)


@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_random_pools_are_bit_exact(ctx, data):
    kind = data.draw(st.sampled_from(["max", "avg"]))
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    pads = (data.draw(st.integers(0, kh - 1)), data.draw(st.integers(0, kw - 1)),
            data.draw(st.integers(0, kh - 1)), data.draw(st.integers(0, kw - 1)))
    h = data.draw(st.integers(max(1, kh - pads[0] - pads[2]), 9))
    w = data.draw(st.integers(max(1, kw - pads[1] - pads[3]), 9))
    params = P(kind, (data.draw(st.integers(1, 2)), h, w, data.draw(st.integers(1, 40))),
               (kh, kw), (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))), pads,
               ceil_mode=data.draw(st.booleans()), count_include_pad=data.draw(st.booleans()),
               input_zero_point=data.draw(st.integers(-128, 127)),
               output_zero_point=data.draw(st.integers(-128, 127)),
               scale_ratio=data.draw(st.floats(0.01, 8.0)))
    check(ctx, params, seed=data.draw(st.integers(0, 1000)))


# The real pooling layers of the models (one device: these are larger).
MODEL_POOLS = [
    ("resnet50_pool1", P("max", (1, 112, 112, 64), 3, 2, (1, 1, 1, 1))),
    ("resnet50_gap", G((1, 7, 7, 2048), scale_ratio=0.7)),
    ("vgg16_pool1", P("max", (1, 224, 224, 64), 2, 2)),
    ("vgg16_pool5", P("max", (1, 14, 14, 512), 2, 2)),
    ("densenet121_transition1", P("avg", (1, 56, 56, 128), 2, 2, scale_ratio=0.9)),
    ("densenet121_transition3", P("avg", (1, 14, 14, 512), 2, 2, scale_ratio=0.9)),
    ("densenet121_gap", G((1, 7, 7, 1024), scale_ratio=0.8)),
    ("ssd_pool5", P("max", (1, 19, 19, 512), 3, 1, (1, 1, 1, 1))),
]


@pytest.fixture(scope="module")
def cpu_ctx():
    return accel.Context(accel.select_device("cpu"))


@pytest.mark.parametrize("params", [pytest.param(p, id=name) for name, p in MODEL_POOLS])
def test_model_pool_shapes(cpu_ctx, params):
    check(cpu_ctx, params)


# The reference's window semantics (pads, ceil_mode, count_include_pad) against onnxruntime.
def onnx_pool(params: pool.PoolParams, x: np.ndarray) -> np.ndarray:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    op = "MaxPool" if params.kind == "max" else "AveragePool"
    attrs = dict(kernel_shape=list(params.kernel), strides=list(params.stride),
                 pads=list(params.pads), ceil_mode=int(params.ceil_mode))
    if op == "AveragePool":
        attrs["count_include_pad"] = int(params.count_include_pad)
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "pool",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    nchw = np.transpose(x.astype(np.float32), (0, 3, 1, 2))
    return np.transpose(session.run(None, {"x": nchw})[0], (0, 2, 3, 1))


ORT_CASES = [p for _, p, _ in CASES if isinstance(p, pool.PoolParams)] + [
    P("avg", (1, 7, 8, 4), 3, 2, (1, 2, 2, 1), ceil_mode=True, count_include_pad=cip)
    for cip in (False, True)] + [P("max", (1, 8, 7, 4), 3, 3, (2, 0, 1, 2), ceil_mode=True)]


@pytest.mark.parametrize("params", ORT_CASES)
def test_reference_windows_match_onnxruntime(params):
    """Dequantized reference output vs onnxruntime's float pool: same shape, within 1 LSB."""
    x = random_i8(params.input_shape, 5)
    real_in = (x.astype(np.float32) - params.input_zero_point) * params.scale_ratio
    expected = np.clip(np.round(onnx_pool(params, real_in)) + params.output_zero_point,
                       params.activation.lo, params.activation.hi)
    got = reference.pool2d(params, x).astype(np.float32)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1


# Bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(kind="min"), ValueError, "kind"),
    (dict(input_shape=(1, 0, 4, 4)), ValueError, "zero-size"),
    (dict(input_shape=(4, 4, 4)), ValueError, r"\(N, H, W, C\)"),
    (dict(kernel=(5, 5)), ValueError, "larger than the padded input"),
    (dict(kernel=0), ValueError, "positive"),
    (dict(stride=(0, 1)), ValueError, "positive"),
    (dict(pads=(2, 0, 0, 0)), ValueError, "smaller than the kernel"),
    (dict(pads=(-1, 0, 0, 0)), ValueError, "negative"),
    (dict(input_zero_point=128), ValueError, "input_zero_point"),
    (dict(scale_ratio=0.0), ValueError, "scale_ratio"),
    (dict(scale_ratio=float("nan")), ValueError, "scale_ratio"),
    (dict(scale_ratio=2.0 ** 31), ValueError, "out of range"),
    (dict(kind="avg", scale_ratio=2.0 ** -32), ValueError, "out of range"),
    (dict(activation=Activation(10, -10)), ValueError, "clamp"),
])
def test_bad_parameters_are_clear_errors(kwargs, error, match):
    base = dict(kind="max", input_shape=(1, 4, 4, 4), kernel=2, stride=2)
    with pytest.raises(error, match=match):
        P(**{**base, **kwargs})


def test_bad_arrays_and_buffers_are_clear_errors(cpu_ctx):
    params = P("max", (1, 4, 4, 4), 2, 2)
    with pytest.raises(TypeError, match="int8"):
        pool.pool2d(cpu_ctx, params, np.zeros((1, 4, 4, 4), np.float32))
    with pytest.raises(TypeError, match="numpy array"):
        pool.pool2d(cpu_ctx, params, [[1, 2]])
    with pytest.raises(ValueError, match="shape"):
        pool.pool2d(cpu_ctx, params, np.zeros((1, 4, 4, 5), np.int8))
    small = cpu_ctx.buffer(16)
    with pytest.raises(ValueError, match="input buffer"):
        pool.bind(cpu_ctx, params, [small], cpu_ctx.buffer(1024))
    with pytest.raises(ValueError, match="output buffer"):
        pool.bind(cpu_ctx, params, [cpu_ctx.buffer(1024)], small)
    with pytest.raises(ValueError, match="one input buffer"):
        pool.bind(cpu_ctx, params, [small, small], small)
    with pytest.raises(ValueError, match="do not fit"):
        pool.bind(cpu_ctx, params, [cpu_ctx.buffer(1024)], cpu_ctx.buffer(1024),
                  out_channel_stride=16, out_channel_offset=16)
    with pytest.raises(ValueError, match="VEC"):
        pool.bind(cpu_ctx, params, [cpu_ctx.buffer(1024)], cpu_ctx.buffer(1024),
                  defines={"VEC": 3})
    with pytest.raises(ValueError, match="zero-size"):
        G((1, 0, 7, 16))


def test_unknown_knobs_are_refused(cpu_ctx):
    params = P("max", (1, 4, 4, 4), 2, 2)
    with pytest.raises(ValueError, match=r"unknown knob\(s\) VECTOR for pool.cl"):
        pool.bind(cpu_ctx, params, [cpu_ctx.buffer(1024)], cpu_ctx.buffer(1024),
                  defines={"VECTOR": 4})


@pytest.mark.parametrize("vec, words", [(3, "VEC must divide 16"), (32, "VEC must divide 16"),
                                        (0, "VEC must be at least 1")])
def test_kernel_refuses_impossible_vec(ctx, vec, words):
    with pytest.raises(accel.BuildError) as error:
        ctx.build_file(pool.KERNEL_FILE, {"VEC": vec}, cache=False)
    assert words in error.value.log
