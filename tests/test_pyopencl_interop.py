"""pyopencl interop (accel/interop.py): contexts, queues and buffers shared by handle on every
device, op wrappers on pyopencl arrays bit-equal to the numpy path, handles released, a
compiled model run on device tensors, and accel.kernels' source and options building the
program accel builds. pyopencl is the optional [pyopencl] extra; accel imports without it."""

from __future__ import annotations

import contextlib
import gc
import importlib
import inspect
import pkgutil
import subprocess
import sys

import numpy as np
import pytest

import accel
import accel.ops
from accel import _runtime, interop, kernel_source, numerics
from accel.numerics import Activation
from accel.ops import affine, conv, conv_f32, depthwise, eltwise, fpga, l2norm, pool, winograd
from accel.reference import conv as conv_reference

from program_builds import recorded_builds
from registry_model import SIDE, tiny_onnx

cl = pytest.importorskip("pyopencl")
cla = pytest.importorskip("pyopencl.array")
pytest.importorskip("pyopencl.tools")
# pyopencl warns whenever a compiler prints anything (vendors' notes on every build)
pytestmark = pytest.mark.filterwarnings("ignore:Non-empty compiler output")


def pyopencl_pair(device: accel.Device):
    """A new pyopencl context and (in-order) queue on the same OpenCL device."""
    platform = next(p for p in cl.get_platforms() if p.name == device.platform)
    context = cl.Context([platform.get_devices()[device.device_index]])
    return context, cl.CommandQueue(context)


@contextlib.contextmanager
def no_host_reads():
    """Within the block, reading device memory back to the host fails the test: an op on
    pyopencl arrays must not take its activations through the host (weights and parameters
    are uploaded, which stays allowed)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the op read device memory back to the host")

    real_copy = cl.enqueue_copy

    def device_copy_only(queue, dest, src, **kwargs):
        if isinstance(dest, np.ndarray) or isinstance(src, np.ndarray):
            refuse()
        return real_copy(queue, dest, src, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_runtime.Buffer, "read", refuse)
        patch.setattr(accel.Context, "download", refuse)
        patch.setattr(cla.Array, "get", refuse)
        patch.setattr(cl, "enqueue_copy", device_copy_only)
        yield


def on_device(op, *args, **kwargs):
    """op(*args, **kwargs) with no host read-back, its result a pyopencl array."""
    with no_host_reads():
        result = op(*args, **kwargs)
    assert isinstance(result, cla.Array), type(result)
    return result


def test_no_host_reads_catches_a_read_back(ctx):
    """The guard the device-path tests rely on does catch a host round trip."""
    context, queue = ctx.to_pyopencl()
    x = cla.to_device(queue, np.arange(32, dtype=np.int8))
    for read in (x.get, lambda: ctx.download(ctx.upload(np.zeros(4, np.int8)), np.int8, (4,)),
                 lambda: cl.enqueue_copy(queue, np.empty(32, np.int8), x.data)):
        with pytest.raises(AssertionError, match="read device memory back"):
            with no_host_reads():
                read()


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
        got = on_device(conv.conv2d, ctx, cla.to_device(queue, x), weights, bias,
                        **device_kwargs)
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got.get(), expected)

    x, weights, bias, kwargs = conv_case(rng, 1, 1, 1, 40, 10, 1)
    dense_kwargs = {k: v for k, v in kwargs.items() if k != "pads"}
    expected = conv.dense(ctx, x[0, 0], weights[:, 0, 0], bias, **dense_kwargs)
    got = on_device(conv.dense, ctx, cla.to_device(queue, x[0, 0]), weights[:, 0, 0], bias,
                    **dense_kwargs)
    np.testing.assert_array_equal(got.get(), expected)

    params = pool.PoolParams("max", (2, 9, 7, 20), 3, 2, (1, 1, 1, 1), input_zero_point=-7,
                             output_zero_point=20, scale_ratio=0.37)
    x = rng.integers(-128, 128, params.input_shape).astype(np.int8)
    x_cl = cla.to_device(queue, np.concatenate([x, x]))[2:]  # a view at an offset
    assert x_cl.offset > 0
    np.testing.assert_array_equal(on_device(pool.pool2d, ctx, params, x_cl).get(),
                                  pool.pool2d(ctx, params, x))

    x, weights, bias, kwargs = conv_case(rng, 1, 6, 5, 20, 24, 3)
    np.testing.assert_array_equal(
        on_device(winograd.conv2d, ctx, cla.to_device(queue, x), weights, bias, **kwargs).get(),
        conv.conv2d(ctx, x, weights, bias, **kwargs))

    channels = 20
    multipliers, shifts = numerics.quantize_multipliers(rng.uniform(0.002, 0.01, channels))
    params = affine.AffineParams((1, 3, 4, channels),
                                 rng.integers(-127, 128, channels).astype(np.int32),
                                 rng.integers(-500, 500, channels).astype(np.int32),
                                 multipliers, shifts, input_zero_point=3, output_zero_point=-2)
    x = rng.integers(-128, 128, params.shape).astype(np.int8)
    np.testing.assert_array_equal(on_device(affine.affine, ctx, params,
                                            cla.to_device(queue, x)).get(),
                                  affine.affine(ctx, params, x))

    add = eltwise.AddParams((1, 3, 5, 20), 3, 0.7, -4, 1.9, 5)
    a = rng.integers(-128, 128, add.shape).astype(np.int8)
    b = rng.integers(-128, 128, add.shape).astype(np.int8)
    a_cl = cla.to_device(queue, a)
    b_cl = a_cl.copy()  # pyopencl work queued before accel's: ordered by the shared queue
    b_cl.set(b)
    np.testing.assert_array_equal(on_device(eltwise.add, ctx, add, a_cl, b_cl).get(),
                                  eltwise.add(ctx, add, a, b))
    np.testing.assert_array_equal(on_device(eltwise.add, ctx, add, a_cl, b).get(),  # mixed
                                  eltwise.add(ctx, add, a, b))


def other_wrapper_cases(rng):
    """(name, op, activations, other arguments) of the wrappers the test above leaves out."""
    shape = (2, 5, 6, 20)  # channels padded on the device (20 -> 32)
    x = rng.integers(-128, 128, shape).astype(np.int8)
    cases = []
    weights = rng.integers(-127, 128, (20, 3, 3)).astype(np.int8)
    multipliers, shifts = numerics.quantize_multipliers(rng.uniform(0.002, 0.01, 20))
    cases.append(("depthwise.conv2d", depthwise.conv2d, [x], dict(
        weights=weights, bias=rng.integers(-500, 500, 20).astype(np.int32),
        stride=(2, 1), pads=(1, 1, 1, 1), input_zero_point=3, multipliers=multipliers,
        shifts=shifts, output_zero_point=-2, activation=Activation.relu(-2))))
    for k in (3, 1):  # conv_f32_i8 and the 1x1 kernel conv1x1_f32_i8
        params = conv_f32.ConvF32Params(
            shape, rng.integers(-127, 128, (7, 20, k, k)).astype(np.int8),
            rng.uniform(0.001, 0.004, 7).astype(np.float32), 0.03, 3, 0.05, -5,
            bias=rng.normal(0, 0.5, 7), pads=((k - 1) // 2,) * 4)
        cases.append((f"conv_f32.conv2d_f32 {k}x{k}", conv_f32.conv2d_f32, [x],
                      dict(params=params)))
    cases.append(("l2norm.l2norm", l2norm.l2norm, [x], dict(
        params=l2norm.L2NormParams(shape, rng.uniform(0.5, 2.0, 20), 0.02, 3, -1))))
    cases.append(("affine.requantize", affine.requantize, [x], dict(
        params=affine.RequantizeParams(shape, affine.requantize_table(0.03, 3, 0.05, -2)),
        in_zero_point=3)))
    cases.append(("pool.global_avg_pool", pool.global_avg_pool, [x], dict(
        params=pool.GlobalAvgPoolParams(shape, 3, -2, 0.8))))
    cases.append(("pool.pool2d avg", pool.pool2d, [x], dict(
        params=pool.PoolParams("avg", shape, 3, 2, (1, 1, 1, 1), input_zero_point=3))))
    add = eltwise.AddParams(shape, 3, 0.7, -4, 1.9, 5, requant="float32_dq", a_scale=0.02,
                            b_scale=0.03, output_scale=0.04)
    cases.append(("eltwise.add float32_dq", eltwise.add, [x, x[::-1].copy()],
                  dict(params=add)))
    return cases


def _call(op, ctx, arrays, kwargs):
    """op with the activations where its signature has them (after ctx, or after params)."""
    if "params" in kwargs:
        kwargs = dict(kwargs)
        return op(ctx, kwargs.pop("params"), *arrays, **kwargs)
    return op(ctx, *arrays, **kwargs)


@pytest.mark.slow  # about 7 s on PoCL with cold kernel caches, under 1 s warm
def test_the_other_op_wrappers_keep_pyopencl_arrays_on_the_device(device):
    """depthwise, the float islands (conv_f32), l2norm, requantize, global and average
    pools, the float Add: pyopencl arrays in and out, bit-equal to the numpy path."""
    context, queue = pyopencl_pair(device)
    ctx = accel.Context.from_pyopencl(context, queue)
    pool_allocator = cl.tools.MemoryPool(cl.tools.ImmediateAllocator(queue))  # PooledBuffers
    for name, op, arrays, kwargs in other_wrapper_cases(np.random.default_rng(11)):
        expected = _call(op, ctx, arrays, kwargs)
        assert isinstance(expected, np.ndarray), name
        got = on_device(_call, op, ctx,
                        [cla.to_device(queue, a, allocator=pool_allocator) for a in arrays],
                        kwargs)
        assert got.shape == expected.shape, name
        np.testing.assert_array_equal(got.get(), expected, err_msg=name)


def test_the_fpga_pipeline_wrappers_take_pyopencl_arrays(emulator):
    """accel.ops.fpga's conv2d, dense and pool2d (the FPGA pipelines) on the emulator. The
    numpy path runs first: it also reads the bitstream's self-description back once (the
    host's check of the program, not the activations)."""
    context, queue = pyopencl_pair(emulator)
    ctx = accel.Context.from_pyopencl(context, queue)
    rng = np.random.default_rng(12)
    x, weights, bias, kwargs = conv_case(rng, 1, 5, 4, 20, 24, 3, residual=True)
    expected = fpga.conv2d(ctx, x, weights, bias, **kwargs)
    device_kwargs = dict(kwargs, residual=cla.to_device(queue, kwargs["residual"]))
    np.testing.assert_array_equal(
        on_device(fpga.conv2d, ctx, cla.to_device(queue, x), weights, bias,
                  **device_kwargs).get(), expected)
    x, weights, bias, kwargs = conv_case(rng, 1, 1, 3, 40, 10, 1)
    dense_kwargs = {k: v for k, v in kwargs.items() if k != "pads"}
    expected = fpga.dense(ctx, x[0, 0], weights[:, 0, 0], bias, **dense_kwargs)
    np.testing.assert_array_equal(
        on_device(fpga.dense, ctx, cla.to_device(queue, x[0, 0]), weights[:, 0, 0], bias,
                  **dense_kwargs).get(), expected)
    params = pool.PoolParams("max", (1, 7, 6, 20), 3, 2, (1, 1, 1, 1), input_zero_point=-7)
    x = rng.integers(-128, 128, params.input_shape).astype(np.int8)
    expected = fpga.pool2d(ctx, params, x)
    np.testing.assert_array_equal(
        on_device(fpga.pool2d, ctx, params, cla.to_device(queue, x)).get(), expected)


# Every array-level op wrapper, and the test that runs it on pyopencl arrays.
WRAPPER_TESTS = {
    "conv.conv2d": "test_ops_on_pyopencl_arrays_equal_the_numpy_path",
    "conv.dense": "test_ops_on_pyopencl_arrays_equal_the_numpy_path",
    "pool.pool2d": "test_ops_on_pyopencl_arrays_equal_the_numpy_path",
    "winograd.conv2d": "test_ops_on_pyopencl_arrays_equal_the_numpy_path",
    "affine.affine": "test_ops_on_pyopencl_arrays_equal_the_numpy_path",
    "eltwise.add": "test_ops_on_pyopencl_arrays_equal_the_numpy_path",
    "depthwise.conv2d": "test_the_other_op_wrappers_keep_pyopencl_arrays_on_the_device",
    "conv_f32.conv2d_f32": "test_the_other_op_wrappers_keep_pyopencl_arrays_on_the_device",
    "l2norm.l2norm": "test_the_other_op_wrappers_keep_pyopencl_arrays_on_the_device",
    "affine.requantize": "test_the_other_op_wrappers_keep_pyopencl_arrays_on_the_device",
    "pool.global_avg_pool": "test_the_other_op_wrappers_keep_pyopencl_arrays_on_the_device",
    "fpga.conv2d": "test_the_fpga_pipeline_wrappers_take_pyopencl_arrays",
    "fpga.dense": "test_the_fpga_pipeline_wrappers_take_pyopencl_arrays",
    "fpga.pool2d": "test_the_fpga_pipeline_wrappers_take_pyopencl_arrays",
}


def array_wrappers() -> set[str]:
    """The public functions of accel.ops' modules that run an op on arrays: ctx first, then
    an activation (x, or a and b) given as an array."""
    found = set()
    for info in pkgutil.iter_modules(accel.ops.__path__):
        module = importlib.import_module(f"accel.ops.{info.name}")
        for name, function in vars(module).items():
            if name.startswith("_") or not inspect.isfunction(function) \
                    or function.__module__ != module.__name__:
                continue
            parameters = inspect.signature(function).parameters
            if next(iter(parameters), None) == "ctx" and any(
                    p.name in ("x", "a") and "ndarray" in str(p.annotation)
                    for p in parameters.values()):
                found.add(f"{info.name}.{name}")
    return found


def test_every_op_wrapper_is_run_on_pyopencl_arrays():
    """A new array-level op wrapper must join the tests above (WRAPPER_TESTS)."""
    assert array_wrappers() == set(WRAPPER_TESTS)
    cases = {name.split()[0] for name, *_ in other_wrapper_cases(np.random.default_rng(0))}
    covered = {k for k, v in WRAPPER_TESTS.items()
               if v == "test_the_other_op_wrappers_keep_pyopencl_arrays_on_the_device"}
    assert covered <= cases
    for test in set(WRAPPER_TESTS.values()):
        assert test in globals(), test


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


def test_op_results_on_the_device_release_their_buffers(device):
    """Ops on pyopencl arrays (device copies padding the channels, accel's output buffer, the
    unpadded result) leave nothing behind: the context's reference count (PoCL counts each
    buffer and kernel in it) and resident memory (CPU runtimes' buffers are host memory:
    ~0.8 MB per call here, 160 MB if they leaked) come back."""
    context, queue = pyopencl_pair(device)
    ctx = accel.Context.from_pyopencl(context, queue)
    add = eltwise.AddParams((1, 64, 64, 40), 3, 0.7, -4, 1.9, 5)  # 40 channels: padded
    a = cla.to_device(queue, np.random.default_rng(2).integers(-128, 128, add.shape)
                      .astype(np.int8))

    def cycle():
        eltwise.add(ctx, add, a, a).finish()

    for _ in range(20):  # warm-up: the program, allocator pools
        cycle()
    gc.collect()
    counts = (context.reference_count, queue.reference_count, a.base_data.reference_count)
    rss = _rss_bytes()
    for _ in range(200):
        cycle()
    gc.collect()
    assert (context.reference_count, queue.reference_count,
            a.base_data.reference_count) == counts
    assert _rss_bytes() - rss < 16 << 20, "resident memory grew by 16 MiB over 200 ops"


def test_an_out_of_order_queue_is_refused(device):
    context, _ = pyopencl_pair(device)
    queue = cl.CommandQueue(
        context, properties=cl.command_queue_properties.OUT_OF_ORDER_EXEC_MODE_ENABLE)
    with pytest.raises(accel.AccelError, match="out of order"):
        accel.Context.from_pyopencl(context, queue)


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
    device_tensors = {k: cla.to_device(queue, v) for k, v in device_in.items()}
    with no_host_reads():  # int8 in and out on the device, no read-back in between
        out = compiled.run_device(device_tensors)
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
    built = recorded_builds(monkeypatch)
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


MODE_KNOBS = {"HAS_RESIDUAL", "REQUANT_F32", "ADD_F32", "AVG_F32"}  # set by the op per layer


@pytest.mark.slow  # about 9 s on the emulator with cold caches (the bitstream), under 1 s warm
def test_kernels_options_are_what_every_op_builds(device, monkeypatch):
    """For each kernel file an op builds (depthwise, conv_f32, l2norm, affine, pool, eltwise,
    and the FPGA bitstream on the emulator), accel.kernels.source/options are exactly the
    text and flags accel built (its per-layer mode knobs passed as knobs)."""
    ctx = accel.Context(device)
    built = recorded_builds(monkeypatch)
    for name, op, arrays, kwargs in other_wrapper_cases(np.random.default_rng(13)):
        _call(op, ctx, arrays, kwargs)
    add = eltwise.AddParams((1, 2, 2, 16))
    eltwise.add(ctx, add, np.zeros(add.shape, np.int8), np.zeros(add.shape, np.int8))
    if device.kind == "fpga-emulator":
        fpga.bitstream(ctx)  # the default design: every mode in
    monkeypatch.undo()
    texts = {name: accel.kernels.source(name) for name in accel.kernels.names()}
    files = []
    for source, options in built:
        name = next((n for n, text in texts.items() if text == source), None)
        assert name is not None, "accel built a text accel.kernels.source does not give"
        modes = dict(define_of_option(o) for o in options.split()
                     if define_of_option(o)[0] in MODE_KNOBS)
        assert options == accel.kernels.options(name, device, **modes), name
        files.append(name)
    expected = {"depthwise.cl", "conv_f32.cl", "l2norm.cl", "affine.cl", "pool.cl",
                "eltwise.cl"} | ({"fpga_bitstream.cl"} if device.kind == "fpga-emulator"
                                 else set())
    assert set(files) == expected


def define_of_option(option: str) -> tuple[str, int]:
    """``-DNAME=3`` -> ("NAME", 3)."""
    assert option.startswith("-D"), option
    name, _, value = option[2:].partition("=")
    return name, int(value or 1)


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
