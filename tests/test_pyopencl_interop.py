"""pyopencl interop (accel/interop.py): contexts, queues and buffers shared by handle on every
device, op wrappers on pyopencl arrays bit-equal to the numpy path, handles released, a
compiled model run on device tensors, and accel.kernels' source and options building the
program accel builds. pyopencl is the optional [pyopencl] extra; accel imports without it."""

from __future__ import annotations

import gc
import subprocess
import sys

import numpy as np
import pytest

import accel
from accel import interop, kernel_source, numerics
from accel.numerics import Activation
from accel.ops import affine, conv, eltwise, pool, winograd
from accel.reference import conv as conv_reference

from registry_model import SIDE, tiny_onnx

cl = pytest.importorskip("pyopencl")
cla = pytest.importorskip("pyopencl.array")
# pyopencl warns whenever a compiler prints anything (vendors' notes on every build)
pytestmark = pytest.mark.filterwarnings("ignore:Non-empty compiler output")


def pyopencl_pair(device: accel.Device):
    """A new pyopencl context and (in-order) queue on the same OpenCL device."""
    platform = next(p for p in cl.get_platforms() if p.name == device.platform)
    context = cl.Context([platform.get_devices()[device.device_index]])
    return context, cl.CommandQueue(context)


def conv_case(rng, n, h, w, cin, cout, k, residual=False):
    x = rng.integers(-128, 128, (n, h, w, cin)).astype(np.int8)
    weights = rng.integers(-127, 128, (cout, k, k, cin)).astype(np.int8)
    bias = rng.integers(-2000, 2000, cout).astype(np.int32)
    multipliers, shifts = numerics.quantize_multipliers(
        rng.uniform(0.5, 2.0, cout) / (60.0 * np.sqrt(k * k * cin)))
    kwargs = dict(pads=((k - 1) // 2,) * 4, input_zero_point=int(rng.integers(-128, 128)),
                  multipliers=multipliers, shifts=shifts, output_zero_point=-3,
                  activation=Activation.relu(-3))
    if residual:
        m, s = numerics.quantize_multiplier(0.7)
        kwargs.update(residual=rng.integers(-128, 128, (n, h, w, cout)).astype(np.int8),
                      residual_zero_point=4, residual_multiplier=m, residual_shift=s)
    return x, weights, bias, kwargs


def test_from_pyopencl_shares_the_context_and_queue(device):
    context, queue = pyopencl_pair(device)
    before = (context.reference_count, queue.reference_count)
    ctx = accel.Context.from_pyopencl(context, queue)
    assert ctx.device == device
    assert ctx._context.int_ptr == context.int_ptr and ctx.queue.int_ptr == queue.int_ptr
    # retained on wrap (the accel queue also holds the context, as a cl queue does)
    assert context.reference_count > before[0] and queue.reference_count == before[1] + 1
    back_context, back_queue = ctx.to_pyopencl()
    assert back_context == context and back_queue == queue
    del ctx, back_context, back_queue
    gc.collect()
    assert (context.reference_count, queue.reference_count) == before


def test_to_pyopencl_of_an_accel_context_runs_pyopencl_work(ctx):
    context, queue = ctx.to_pyopencl()
    a = cla.to_device(queue, np.arange(64, dtype=np.float32))
    assert np.array_equal((2 * a).get(), 2 * np.arange(64, dtype=np.float32))


@pytest.mark.slow  # about 25 s on PoCL with a cold kernel cache, under 1 s warm
def test_ops_on_pyopencl_arrays_equal_the_numpy_path(device):
    context, queue = pyopencl_pair(device)
    ctx = accel.Context.from_pyopencl(context, queue)
    rng = np.random.default_rng(7)
    # channels padded on the device (3 -> 16, 20 -> 32) and not (32): both layouts
    for n, h, w, cin, cout, k, residual in ((1, 6, 7, 3, 5, 3, False),
                                            (2, 5, 5, 32, 32, 3, True),
                                            (1, 4, 9, 20, 33, 1, False)):
        x, weights, bias, kwargs = conv_case(rng, n, h, w, cin, cout, k, residual)
        expected = conv.conv2d(ctx, x, weights, bias, **kwargs)
        np.testing.assert_array_equal(expected, conv_reference.conv2d(x, weights, bias,
                                                                      **kwargs))
        device_kwargs = dict(kwargs)
        if residual:
            device_kwargs["residual"] = cla.to_device(queue, kwargs["residual"])
        got = conv.conv2d(ctx, cla.to_device(queue, x), weights, bias, **device_kwargs)
        assert isinstance(got, cla.Array) and got.shape == expected.shape
        np.testing.assert_array_equal(got.get(), expected)

    x, weights, bias, kwargs = conv_case(rng, 1, 1, 1, 40, 10, 1)
    dense_kwargs = {k: v for k, v in kwargs.items() if k != "pads"}
    expected = conv.dense(ctx, x[0, 0], weights[:, 0, 0], bias, **dense_kwargs)
    got = conv.dense(ctx, cla.to_device(queue, x[0, 0]), weights[:, 0, 0], bias, **dense_kwargs)
    np.testing.assert_array_equal(got.get(), expected)

    params = pool.PoolParams("max", (2, 9, 7, 20), 3, 2, (1, 1, 1, 1), input_zero_point=-7,
                             output_zero_point=20, scale_ratio=0.37)
    x = rng.integers(-128, 128, params.input_shape).astype(np.int8)
    x_cl = cla.to_device(queue, np.concatenate([x, x]))[2:]  # a view at an offset
    assert x_cl.offset > 0
    np.testing.assert_array_equal(pool.pool2d(ctx, params, x_cl).get(),
                                  pool.pool2d(ctx, params, x))

    x, weights, bias, kwargs = conv_case(rng, 1, 6, 5, 20, 24, 3)
    np.testing.assert_array_equal(
        winograd.conv2d(ctx, cla.to_device(queue, x), weights, bias, **kwargs).get(),
        conv.conv2d(ctx, x, weights, bias, **kwargs))

    channels = 20
    multipliers, shifts = numerics.quantize_multipliers(rng.uniform(0.002, 0.01, channels))
    params = affine.AffineParams((1, 3, 4, channels),
                                 rng.integers(-127, 128, channels).astype(np.int32),
                                 rng.integers(-500, 500, channels).astype(np.int32),
                                 multipliers, shifts, input_zero_point=3, output_zero_point=-2)
    x = rng.integers(-128, 128, params.shape).astype(np.int8)
    np.testing.assert_array_equal(affine.affine(ctx, params, cla.to_device(queue, x)).get(),
                                  affine.affine(ctx, params, x))

    add = eltwise.AddParams((1, 3, 5, 20), 3, 0.7, -4, 1.9, 5)
    a = rng.integers(-128, 128, add.shape).astype(np.int8)
    b = rng.integers(-128, 128, add.shape).astype(np.int8)
    a_cl = cla.to_device(queue, a)
    b_cl = a_cl.copy()  # pyopencl work queued before accel's: ordered by the shared queue
    b_cl.set(b)
    np.testing.assert_array_equal(eltwise.add(ctx, add, a_cl, b_cl).get(),
                                  eltwise.add(ctx, add, a, b))
    np.testing.assert_array_equal(eltwise.add(ctx, add, a_cl, b).get(),  # mixed inputs
                                  eltwise.add(ctx, add, a, b))


def test_an_array_on_another_queue_of_the_context_is_waited_for(ctx):
    context, _ = ctx.to_pyopencl()
    other = cl.CommandQueue(context)
    add = eltwise.AddParams((1, 4, 4, 16), 0, 1.0, 0, 1.0, 0)
    a = np.random.default_rng(3).integers(-60, 60, add.shape).astype(np.int8)
    a_cl = cla.to_device(other, a, async_=True)
    doubled = a_cl + a_cl  # queued on the other queue; accel's queue must wait for it
    np.testing.assert_array_equal(eltwise.add(ctx, add, doubled, a_cl).get(),
                                  eltwise.add(ctx, add, 2 * a, a))


def test_an_array_of_another_context_is_refused(ctx):
    context, queue = pyopencl_pair(ctx.device)  # a second context on the same device
    add = eltwise.AddParams((1, 2, 2, 16))
    x = cla.to_device(queue, np.zeros(add.shape, np.int8))
    with pytest.raises(ValueError, match="another OpenCL context"):
        eltwise.add(ctx, add, x, x)
    with pytest.raises(TypeError, match="int8"):
        eltwise.add(accel.Context.from_pyopencl(context, queue), add,
                    cla.to_device(queue, np.zeros(add.shape, np.float32)), x)


def test_shared_ownership_outlives_either_side(device):
    context, queue = pyopencl_pair(device)
    ctx = accel.Context.from_pyopencl(context, queue)
    del context, queue  # pyopencl's objects gone: accel's references keep the handles alive
    gc.collect()
    add = eltwise.AddParams((1, 2, 3, 16), 1, 0.5, -1, 0.5, 0)
    a = np.random.default_rng(0).integers(-128, 128, add.shape).astype(np.int8)
    expected = eltwise.add(ctx, add, a, a)
    context, queue = ctx.to_pyopencl()
    del ctx  # and the other way round
    gc.collect()
    ctx = accel.Context.from_pyopencl(context, queue)
    np.testing.assert_array_equal(eltwise.add(ctx, add, cla.to_device(queue, a), a).get(),
                                  expected)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def test_a_thousand_wrappers_release_their_handles(device):
    context, queue = pyopencl_pair(device)
    buffer = cl.Buffer(context, cl.mem_flags.READ_WRITE, 4096)

    def cycle():
        ctx = accel.Context.from_pyopencl(context, queue)
        wrapped = interop.wrap_buffer(buffer)
        back = ctx.to_pyopencl()
        view = interop.cl_buffer(wrapped)
        assert buffer.reference_count >= 3  # retained by the wrapper and its view
        del ctx, wrapped, back, view

    for _ in range(50):  # warm-up: lazily built tables, allocator pools
        cycle()
    gc.collect()
    counts = (context.reference_count, queue.reference_count, buffer.reference_count)
    rss = _rss_bytes()
    for _ in range(1000):
        cycle()
    gc.collect()
    assert (context.reference_count, queue.reference_count, buffer.reference_count) == counts
    assert _rss_bytes() - rss < 4 << 20, "resident memory grew by 4 MiB over 1000 wrappers"


@pytest.fixture(scope="module")
def tiny_model():
    rng = np.random.default_rng(1)
    calibration = [rng.normal(0, 60, (1, 3, SIDE, SIDE)).astype(np.float32) for _ in range(3)]
    return tiny_onnx(), calibration


@pytest.mark.slow  # about 8 s on PoCL with a cold kernel cache
def test_a_compiled_model_runs_on_pyopencl_buffers(device, tiny_model):
    model, calibration = tiny_model
    context, queue = pyopencl_pair(device)
    ctx = accel.Context.from_pyopencl(context, queue)
    compiled = accel.compile(model, calibration=calibration, device=ctx, progress=False)
    x = calibration[0]
    expected = compiled.run(x)
    raw = compiled.run_int8(x)

    device_in = compiled.quantize_inputs(x)
    assert [a.shape for a in device_in.values()] == [t.shape for t in compiled.device_inputs]
    out = compiled.run_device({k: cla.to_device(queue, v) for k, v in device_in.items()})
    assert list(out) == [t.name for t in compiled.device_outputs]
    for got, want in zip(out.values(), raw):
        assert isinstance(got, cla.Array)
        np.testing.assert_array_equal(got.get(), want)
    for name, value in compiled.dequantize_outputs(out).items():
        np.testing.assert_array_equal(value, expected[name])
    # run() takes a pyopencl float array too (read back once: quantization is on the host)
    for name, value in compiled.run(cla.to_device(queue, x)).items():
        np.testing.assert_array_equal(value, expected[name])

    other_context, other_queue = pyopencl_pair(device)
    stray = cla.to_device(other_queue, next(iter(device_in.values())))
    with pytest.raises(ValueError, match="another OpenCL context"):
        compiled.run_device(stray)


def test_kernels_source_and_options_are_what_accel_builds(device, monkeypatch):
    """accel.kernels.source/options equal the text and flags the conv op builds with, and a
    program pyopencl builds from them gives the op's output bit for bit."""
    ctx = accel.Context(device)
    built = []
    real = accel.runtime.Program

    class Recording:
        @staticmethod
        def from_source(context, source, options, cache_dir):
            built.append((source, options))
            return real.from_source(context, source, options, cache_dir)

    monkeypatch.setattr(accel.runtime, "Program", Recording)
    x, weights, bias, kwargs = conv_case(np.random.default_rng(5), 1, 6, 6, 32, 32, 3)
    expected = conv.conv2d(ctx, x, weights, bias, **kwargs)
    add = eltwise.AddParams((1, 2, 2, 16))
    eltwise.add(ctx, add, np.zeros(add.shape, np.int8), np.zeros(add.shape, np.int8))
    monkeypatch.undo()
    assert len(built) == 2
    assert built[1] == (accel.kernels.source("eltwise.cl"), accel.kernels.options("eltwise",
                                                                                   device))
    source, options = built[0]
    chosen = conv.prepare(ctx, conv.layer_for_arrays(
        x, weights, **{k: kwargs[k] for k in ("pads", "input_zero_point",
                                              "output_zero_point", "activation")}),
        weights, bias, kwargs["multipliers"], kwargs["shifts"]).knobs
    assert source == accel.kernels.source("conv") == kernel_source.load("conv.cl")
    assert options == accel.kernels.options("conv.cl", device, **chosen)
    if device.kind == "cpu":
        assert "-DACCEL_CPU_ISA=" in options

    context, queue = ctx.to_pyopencl()
    program = cl.Program(context, accel.kernels.source("conv")).build(
        options=accel.kernels.options("conv", device, **chosen))
    binary = program.get_info(cl.program_info.BINARIES)[0]
    ours = accel.runtime.Program.from_binary(ctx._context, binary, "")
    monkeypatch.setattr(ctx, "program", lambda name, defines: ours)
    np.testing.assert_array_equal(conv.conv2d(ctx, x, weights, bias, **kwargs), expected)


def test_kernels_api_refuses_unknown_names():
    assert "conv.cl" in accel.kernels.names() and "pool.cl" in accel.kernels.names()
    with pytest.raises(ValueError, match="no kernel file"):
        accel.kernels.source("nope")
    with pytest.raises(ValueError, match="file name"):
        accel.kernels.source("../kernels/conv.cl")
    assert accel.kernels.knobs("pool", "fpga-emulator", VEC=4)["VEC"] == 4


NO_PYOPENCL = """
import sys
sys.modules["pyopencl"] = None  # import pyopencl fails, as where it is not installed
import numpy as np, accel, accel.kernels, accel.interop
from accel.ops import eltwise
params = eltwise.AddParams((1, 2, 2, 16))
y = eltwise.add(accel.Context(), params, np.zeros((1, 2, 2, 16), np.int8),
                np.zeros((1, 2, 2, 16), np.int8))
assert y.shape == (1, 2, 2, 16) and len(accel.kernels.options("conv")) > 0
try:
    accel.Context().to_pyopencl()
except ImportError as error:
    print("refused:", error)
"""


def test_accel_works_without_pyopencl():
    run = subprocess.run([sys.executable, "-c", NO_PYOPENCL], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert "refused: pyopencl interop needs pyopencl (pip install 'accel[pyopencl]')" \
        in run.stdout
