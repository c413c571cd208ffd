"""The C++ runtime through Python: builds, buffers, launches, plans, errors, the cache."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

import accel
import accel.devices
import accel.kernel_source
from accel import _runtime
from accel.smoke import add_sat_reference

N = 1000  # not a multiple of any work-group size


def random_i8(n, seed):
    return np.random.default_rng(seed).integers(-128, 128, n, dtype=np.int8)


def test_add_sat_matches_numpy(ctx):
    a, b = random_i8(N, 1), random_i8(N, 2)
    a[:4], b[:4] = [127, -128, 100, -100], [1, -1, 100, -100]  # both ends saturate
    program = ctx.build_file("eltwise.cl")
    out = ctx.buffer(N)
    ctx.launch(program, "add_sat_i8", [N], ctx.upload(a), ctx.upload(b), out, np.int32(N))
    result = ctx.download(out, np.int8, N)
    np.testing.assert_array_equal(result, add_sat_reference(a, b))
    assert list(result[:4]) == [127, -128, 127, -128]


def test_broken_kernel_raises_build_error_with_log(ctx):
    source = "__kernel void broken(__global int* x) { x[0] = undeclared_name_42; }"
    with pytest.raises(accel.BuildError) as info:
        ctx.build(source, cache=False)
    error = info.value
    assert error.routine == "clBuildProgram"
    assert error.code == -11  # CL_BUILD_PROGRAM_FAILURE
    assert "undeclared_name_42" in error.log
    assert "undeclared_name_42" in str(error)
    assert isinstance(error, accel.AccelError)


def test_unknown_kernel_name_is_a_build_error(ctx):
    program = ctx.build_file("eltwise.cl")
    assert "add_sat_i8" in program.kernel_names
    with pytest.raises(accel.BuildError, match="no_such_kernel"):
        _runtime.Kernel(program, "no_such_kernel")


def test_bad_device_name_lists_the_devices():
    with pytest.raises(accel.DeviceError) as info:
        accel.select_device("no-such-device-xyz")
    message = str(info.value)
    assert "no-such-device-xyz" in message
    for device in accel.devices():  # every device present, not only the chosen test devices
        assert device.name in message and device.index in message


def test_size_mismatched_copies_raise_and_the_process_goes_on(ctx):
    buffer = ctx.buffer(16)
    with pytest.raises(accel.DeviceMemoryError, match="17 bytes.*16"):
        buffer.write(ctx.queue, np.zeros(17, np.int8))
    with pytest.raises(accel.DeviceMemoryError, match="8 bytes.*16"):
        buffer.read(ctx.queue, np.zeros(8, np.int8))
    with pytest.raises(ValueError, match="C-contiguous"):
        buffer.write(ctx.queue, np.zeros(32, np.int8)[::2])
    with pytest.raises(ValueError, match="read-only"):
        readonly = np.zeros(16, np.int8)
        readonly.flags.writeable = False
        buffer.read(ctx.queue, readonly)
    with pytest.raises(accel.DeviceMemoryError):
        ctx.buffer(0)
    # The same buffer still works afterwards.
    data = np.arange(16, dtype=np.int8)
    buffer.write(ctx.queue, data)
    np.testing.assert_array_equal(ctx.download(buffer, np.int8, 16), data)


def test_kernel_arguments_are_checked(ctx):
    program = ctx.build_file("eltwise.cl")
    kernel = _runtime.Kernel(program, "add_sat_i8")
    assert kernel.num_args == 4
    with pytest.raises(TypeError, match="numpy scalar"):
        kernel.set_arg(3, 5)  # a Python int has no explicit width
    with pytest.raises(TypeError, match="takes 4 arguments, got 2"):
        kernel.set_args(ctx.buffer(4), ctx.buffer(4))
    with pytest.raises(IndexError, match="argument 9"):
        kernel.set_arg(9, np.int32(1))
    # A value of the wrong kind is refused before it could be taken as a device pointer.
    with pytest.raises(TypeError, match="expected a Buffer, got int64"):
        kernel.set_arg(0, np.int64(0xDEADBEEF))
    with pytest.raises(TypeError, match="expected a Buffer, got LocalMemory"):
        kernel.set_arg(2, accel.runtime.LocalMemory(8))
    with pytest.raises(TypeError, match="expected a numpy scalar, got Buffer"):
        kernel.set_arg(3, ctx.buffer(4))


def test_a_buffer_of_another_context_is_refused(ctx):
    other = accel.Context(ctx.device)
    kernel = _runtime.Kernel(ctx.build_file("eltwise.cl"), "add_sat_i8")
    with pytest.raises(ValueError, match="another context"):
        kernel.set_arg(0, other.buffer(16))


def test_object_arrays_are_refused(ctx):
    with pytest.raises(TypeError, match="Python objects"):
        ctx.buffer(8 * 2).write(ctx.queue, np.array([object(), object()]))


def test_bad_timeouts_are_refused(ctx):
    plan = ctx.plan()
    for bad in (float("nan"), float("inf"), -1.0, 1e300):
        with pytest.raises(ValueError, match="timeout"):
            plan.set_timeout(bad)
    with pytest.raises(ValueError, match="timeout"):
        ctx.queue.finish(timeout_s=float("nan"))


def test_waiting_with_a_timeout_outlives_the_queue(ctx):
    program = ctx.build_file("eltwise.cl")
    a = ctx.upload(random_i8(N, 8))
    event = ctx.kernel(program, "add_sat_i8", a, a, ctx.buffer(N), np.int32(N)).launch(
        ctx.new_queue(), [N])  # the queue object is dropped at once
    event.wait(timeout_s=30)
    assert event.end_ns >= event.start_ns


def test_bad_launch_raises_launch_error(ctx):
    program = ctx.build_file("eltwise.cl")
    a = ctx.buffer(N)
    with pytest.raises(accel.LaunchError, match="CL_INVALID_WORK_GROUP_SIZE") as info:
        ctx.launch(program, "add_sat_i8", [N], a, a, a, np.int32(N), local_size=[3])
    assert info.value.routine == "clEnqueueNDRangeKernel" and info.value.code == -54
    with pytest.raises(accel.LaunchError, match="CL_INVALID_KERNEL_ARGS"):
        _runtime.Kernel(program, "add_sat_i8").launch(ctx.queue, [N])
    with pytest.raises(accel.LaunchError, match="dimensions"):
        ctx.launch(program, "add_sat_i8", [], a, a, a, np.int32(N))


def test_program_cache_is_hit_on_the_second_build(ctx, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCEL_CACHE_DIR", str(tmp_path))
    # A comment unique to this run, so the first build cannot already be cached.
    source = f"// {uuid.uuid4()}\n" + accel.kernel_source.load("eltwise.cl")
    before = accel.program_cache_stats()
    first = ctx.build(source)
    middle = accel.program_cache_stats()
    second = ctx.build(source)
    after = accel.program_cache_stats()
    assert not first.from_cache and second.from_cache
    assert middle["misses"] == before["misses"] + 1 and middle["hits"] == before["hits"]
    assert after["hits"] == middle["hits"] + 1 and after["misses"] == middle["misses"]
    assert len(list(tmp_path.glob("*.bin"))) == 1
    # Different options are a different program.
    third = ctx.build(source, defines={"UNUSED_KNOB": 3})
    assert not third.from_cache
    # The cached program computes the same thing.
    a, b = random_i8(N, 3), random_i8(N, 4)
    out = ctx.buffer(N)
    ctx.launch(second, "add_sat_i8", [N], ctx.upload(a), ctx.upload(b), out, np.int32(N))
    np.testing.assert_array_equal(ctx.download(out, np.int8, N), add_sat_reference(a, b))


@pytest.mark.parametrize("damage", ["truncated", "payload zeroed", "grown"])
def test_corrupt_cache_entry_is_rebuilt(ctx, tmp_path, monkeypatch, damage):
    monkeypatch.setenv("ACCEL_CACHE_DIR", str(tmp_path))
    source = f"// {uuid.uuid4()}\n" + accel.kernel_source.load("eltwise.cl")
    ctx.build(source)
    (entry,) = tmp_path.glob("*.bin")
    data = entry.read_bytes()
    if damage == "truncated":
        data = data[:len(data) // 2]
    elif damage == "payload zeroed":  # same length: only the checksum can tell
        data = data[:len(data) // 2] + bytes(len(data) - len(data) // 2)
    else:
        data = data + b"extra"
    entry.write_bytes(data)
    rebuilt = ctx.build(source)
    assert not rebuilt.from_cache
    assert ctx.build(source).from_cache


def test_prebuilt_binary_loads_like_an_aocx(ctx, tmp_path):
    """Boards run prebuilt bitstreams (.aocx): the same path loads any device binary."""
    path = tmp_path / "eltwise.aocx"
    path.write_bytes(ctx.build_file("eltwise.cl", cache=False).binary())
    program = ctx.load_binary(path)
    a, b = random_i8(N, 6), random_i8(N, 7)
    out = ctx.buffer(N)
    ctx.launch(program, "add_sat_i8", [N], ctx.upload(a), ctx.upload(b), out, np.int32(N))
    np.testing.assert_array_equal(ctx.download(out, np.int8, N), add_sat_reference(a, b))
    path.write_bytes(b"this is not a device binary" * 10)
    with pytest.raises(accel.BuildError):
        ctx.load_binary(path)


def test_plan_runs_launches_with_arguments_bound_once(ctx):
    program = ctx.build_file("eltwise.cl")
    a_buf, b_buf, mid, out = (ctx.buffer(N) for _ in range(4))
    plan = ctx.plan()
    plan.add_input(a_buf)
    plan.add_input(b_buf)
    plan.add_launch(ctx.kernel(program, "add_sat_i8", a_buf, b_buf, mid, np.int32(N)), [N])
    plan.add_launch(ctx.kernel(program, "add_sat_i8", mid, b_buf, out, np.int32(N)), [N])
    plan.add_output(out)
    plan.set_profiling(True)
    for seed in range(3):
        a, b = random_i8(N, 10 + seed), random_i8(N, 20 + seed)
        result = np.empty(N, np.int8)
        plan.run([a, b], [result])
        np.testing.assert_array_equal(result, add_sat_reference(add_sat_reference(a, b), b))
    assert [name for name, _ in plan.last_profile] == ["add_sat_i8", "add_sat_i8"]
    assert sum(ns for _, ns in plan.last_profile) > 0
    with pytest.raises(accel.DeviceMemoryError, match="input 1"):
        plan.run([a, b[:-1]], [result])
    with pytest.raises(ValueError, match="takes 2 inputs"):
        plan.run([a], [result])


def test_a_plan_s_kernels_cannot_be_changed_behind_its_back(ctx):
    program = ctx.build_file("eltwise.cl")
    a_buf, out = ctx.buffer(N), ctx.buffer(N)
    kernel = ctx.kernel(program, "add_sat_i8", a_buf, a_buf, out, np.int32(N))
    plan = ctx.plan()
    plan.add_input(a_buf)
    plan.add_launch(kernel, [N])
    plan.add_output(out)
    with pytest.raises(RuntimeError, match="belongs to a Plan"):
        kernel.set_arg(2, ctx.buffer(N))  # would leave the plan writing to a freed buffer
    a = random_i8(N, 9)
    result = np.empty(N, np.int8)
    plan.run([a], [result])
    np.testing.assert_array_equal(result, add_sat_reference(a, a))


def test_one_plan_run_from_several_threads(ctx):
    from concurrent.futures import ThreadPoolExecutor
    program = ctx.build_file("eltwise.cl")
    a_buf, out = ctx.buffer(N), ctx.buffer(N)
    plan = ctx.plan()
    plan.add_input(a_buf)
    plan.add_launch(ctx.kernel(program, "add_sat_i8", a_buf, a_buf, out, np.int32(N)), [N])
    plan.add_output(out)

    def run(seed):
        a = random_i8(N, 100 + seed)
        result = np.empty(N, np.int8)
        plan.run([a], [result])
        return np.array_equal(result, add_sat_reference(a, a))

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(run, range(40)))


def test_event_profiling_times_are_ordered(ctx):
    program = ctx.build_file("eltwise.cl")
    a = ctx.upload(random_i8(N, 5))
    event = ctx.launch(program, "add_sat_i8", [N], a, a, ctx.buffer(N), np.int32(N))
    assert event.queued_ns <= event.start_ns <= event.end_ns
    assert event.duration_ns == event.end_ns - event.start_ns


def test_error_names():
    assert _runtime.error_name(-11) == "CL_BUILD_PROGRAM_FAILURE"
    assert _runtime.error_name(-5) == "CL_OUT_OF_RESOURCES"
    assert _runtime.error_name(-12345) == "CL_UNKNOWN_ERROR"


CHANNEL_PAIR = """
#pragma OPENCL EXTENSION cl_intel_channels : enable
channel int pipe_ch __attribute__((depth(256)));

__attribute__((max_global_work_dim(0)))
__kernel void produce(__global const int* in, const int n) {
  for (int i = 0; i < n; ++i) write_channel_intel(pipe_ch, in[i] * 3);
}

__attribute__((max_global_work_dim(0)))
__kernel void consume(__global int* out, const int n) {
  for (int i = 0; i < n; ++i) out[i] = read_channel_intel(pipe_ch) + 1;
}
"""


@pytest.fixture
def emulator_ctx(emulator):
    """A context on the FPGA emulator (tests/conftest.py's ``emulator``)."""
    return accel.Context(emulator)


def test_concurrent_stage_runs_a_channel_pipeline_on_the_fpga_emulator(emulator_ctx):
    ctx = emulator_ctx
    program = ctx.build(CHANNEL_PAIR)
    # Far more values than the channel holds, so both kernels must run at once. (A deeper
    # channel than a board needs: the emulator hands over a full or empty channel only at an
    # OS time slice, which a shallow one would hit on every value.)
    n = 4000
    src, dst, scaled = ctx.buffer(4 * n), ctx.buffer(4 * n), ctx.buffer(4 * n)
    plan = ctx.plan()
    plan.add_input(src)
    plan.add_concurrent([(ctx.kernel(program, "produce", src, np.int32(n)), [1], [1]),
                         (ctx.kernel(program, "consume", dst, np.int32(n)), [1], [1])])
    plan.add_concurrent([(ctx.kernel(program, "produce", dst, np.int32(n)), [1], [1]),
                         (ctx.kernel(program, "consume", scaled, np.int32(n)), [1], [1])])
    plan.add_output(scaled)
    plan.set_timeout(120)
    assert plan.num_queues == 2 and plan.num_launches == 4
    values = np.arange(n, dtype=np.int32)
    out = np.empty(n, np.int32)
    plan.run([values], [out])
    np.testing.assert_array_equal(out, (values * 3 + 1) * 3 + 1)


HANG = """
import sys, os, numpy as np, accel
ctx = accel.Context(sys.argv[1])
{body}
try:
    {wait}
except accel.LaunchError as error:
    print("LaunchError", error.code, error)
    sys.stdout.flush()
    os._exit(0)  # the stuck kernel is still running; leave without waiting for it
os._exit(1)
"""


def run_hang(device_index, body, wait):
    import subprocess
    import sys
    code = HANG.format(body=body, wait=wait)
    run = subprocess.run([sys.executable, "-c", code, device_index], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_a_kernel_that_never_ends_times_out_instead_of_hanging(device):
    out = run_hang(device.index,
                   'program = ctx.build("__kernel void spin(__global volatile int* f) '
                   '{ while (f[0] == 0) { } }", cache=False)\n'
                   'flag = ctx.upload(np.zeros(1, np.int32))\n'
                   'event = ctx.launch(program, "spin", [1], flag, wait=False)',
                   "event.wait(timeout_s=1.0)")
    assert "LaunchError -10000 timed out after 1" in out


def test_a_channel_deadlock_times_out_with_a_clear_error(emulator_ctx):
    ctx = emulator_ctx
    # Only the consumer is launched: it waits on an empty channel forever.
    out = run_hang(ctx.device.index,
                   f"program = ctx.build({CHANNEL_PAIR!r})\n"
                   "dst = ctx.buffer(4000)\n"
                   "plan = ctx.plan()\n"
                   "plan.add_concurrent([(ctx.kernel(program, 'consume', dst, np.int32(1000)), [1], [1])])\n"
                   "plan.add_output(dst)\n"
                   "plan.set_timeout(2.0)",
                   "plan.run([], [np.empty(1000, np.int32)])")
    assert "channel deadlock" in out
