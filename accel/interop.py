"""pyopencl interop: contexts, queues and buffers shared by handle, arrays that stay on the
device.

    ctx = accel.Context.from_pyopencl(cl_context, cl_queue)   # the same OpenCL objects
    y = accel.ops.conv.conv2d(ctx, x_cl, weights, bias, ...)   # pyopencl.array.Array in and out

Every handle is shared, never copied: accel retains what it wraps and releases it when its
wrapper goes (clRetain*/clRelease*), so accel and pyopencl may drop their objects in any
order. pyopencl is optional: nothing here imports it until a pyopencl object is seen or asked
for, and without it only the functions that need it fail (ImportError naming the extra).

The op wrappers' device path (``run_on_device``): a pyopencl array argument is used where it
lies when its channels are already padded to CHANNEL_ALIGN (the device layout), else padded
into a new device buffer with copies on the device (fill + rectangular copy); the result is
a new pyopencl array over accel's output buffer (or an unpadded device copy of it). No byte
goes through the host. The op waits for its launch as the numpy path does, so the result is
ready when it returns.
"""

from __future__ import annotations

import sys

import numpy as np

from . import _runtime
from .devices import select_device
from .ops.layout import padded_channels

EXTRA = "pip install 'accel[pyopencl]'"


def pyopencl():
    """The pyopencl module, or ImportError saying how to install it."""
    try:
        import pyopencl
        import pyopencl.array  # noqa: F401
    except ImportError as error:
        raise ImportError(f"pyopencl interop needs pyopencl ({EXTRA}): {error}") from None
    return pyopencl


def is_device_array(x) -> bool:
    """Whether x is a pyopencl.array.Array (without importing pyopencl: none can exist
    before pyopencl has been imported)."""
    module = sys.modules.get("pyopencl.array")
    return module is not None and isinstance(x, module.Array)


# --- contexts and queues ---------------------------------------------------------------------
def context_from_pyopencl(cls, context, queue=None):
    """accel.Context.from_pyopencl (see there)."""
    cl = pyopencl()
    if not isinstance(context, cl.Context):
        raise TypeError(f"expected a pyopencl.Context, got {type(context).__name__}")
    if queue is None:
        devices = context.devices
        if len(devices) != 1:
            raise ValueError(f"the pyopencl context has {len(devices)} devices: pass the "
                             "command queue of the one accel should use")
        device = devices[0]
    else:
        if not isinstance(queue, cl.CommandQueue):
            raise TypeError(f"expected a pyopencl.CommandQueue, got {type(queue).__name__}")
        # (the runtime checks that the queue is the context's; pyopencl's queue.context
        # would keep one more reference to the context for the queue's lifetime)
        device = queue.device
    raw = _runtime.Context.from_int_ptr(context.int_ptr, device.int_ptr)
    info = raw.device
    raw_queue = (_runtime.Queue(raw) if queue is None
                 else _runtime.Queue.from_int_ptr(raw, queue.int_ptr))
    self = cls.__new__(cls)
    self._attach(select_device(f"{info['platform_index']}:{info['device_index']}"), raw,
                 raw_queue)
    return self


def to_pyopencl(ctx):
    """(pyopencl.Context, pyopencl.CommandQueue) over an accel Context's own handles."""
    cl = pyopencl()
    return (cl.Context.from_int_ptr(ctx._context.int_ptr, retain=True),
            cl.CommandQueue.from_int_ptr(ctx.queue.int_ptr, retain=True))


# --- buffers and arrays ----------------------------------------------------------------------
def cl_buffer(buffer: _runtime.Buffer):
    """A pyopencl.Buffer over an accel Buffer's cl_mem (retained)."""
    return pyopencl().Buffer.from_int_ptr(buffer.int_ptr, retain=True)


def wrap_buffer(cl_buffer_object) -> _runtime.Buffer:
    """An accel Buffer over a pyopencl Buffer's cl_mem (retained)."""
    return _runtime.Buffer.from_int_ptr(cl_buffer_object.int_ptr)


def check_same_context(ctx, array, what: str) -> None:
    if array.context.int_ptr != ctx._context.int_ptr:
        raise ValueError(f"{what} is a pyopencl array of another OpenCL context than the "
                         f"accel Context's; make the Context with "
                         f"accel.Context.from_pyopencl(context, queue)")


def check_array(array, what: str, dtype=None) -> None:
    """A non-empty C-contiguous pyopencl array (of ``dtype`` when given)."""
    if dtype is not None and array.dtype != dtype:
        raise TypeError(f"{what} must be {np.dtype(dtype).name}, got {array.dtype}")
    if array.size == 0:
        raise ValueError(f"{what} is empty (shape {array.shape})")
    if not array.flags.c_contiguous:
        raise ValueError(f"{what} must be a C-contiguous pyopencl array")


def ready(ctx, array) -> None:
    """Make the array's pending writes visible to ctx's queue: its own events always, and
    its queue's work when that is another queue (which the in-order ctx queue does not
    follow)."""
    array.finish()
    queue = array.queue
    if queue is not None and queue.int_ptr != ctx.queue.int_ptr:
        queue.finish()


def device_input(ctx, array, fill: int, what: str = "input") -> _runtime.Buffer:
    """An int8 NHWC pyopencl array as an accel Buffer in the device layout (channels padded
    to CHANNEL_ALIGN with ``fill``): the array's own memory where it already has that
    layout, else a padded copy made on the device."""
    cl = pyopencl()
    check_same_context(ctx, array, what)
    check_array(array, what, np.int8)
    ready(ctx, array)
    channels = array.shape[-1]
    padded = padded_channels(channels)
    if padded == channels and array.offset == 0:
        return wrap_buffer(array.base_data)
    _, queue = ctx.to_pyopencl()
    rows = array.size // channels
    out = ctx.buffer(rows * padded)
    dest = cl_buffer(out)
    if padded != channels:
        cl.enqueue_fill_buffer(queue, dest, np.int8(fill), 0, rows * padded)
    cl.enqueue_copy(queue, dest, array.base_data, src_origin=(array.offset, 0, 0),
                    dst_origin=(0, 0, 0), region=(channels, rows, 1),
                    src_pitches=(channels, channels * rows),
                    dst_pitches=(padded, padded * rows))
    return out


def device_output(ctx, buffer: _runtime.Buffer, shape, queue, dtype=np.int8):
    """A pyopencl array of logical ``shape`` holding the device-layout tensor in ``buffer``
    (channels padded to CHANNEL_ALIGN): a view of the buffer where no channel is padding,
    else an unpadded device copy. Finished when returned."""
    cl = pyopencl()
    shape = tuple(int(v) for v in shape)
    channels = shape[-1]
    padded = padded_channels(channels)
    if padded == channels:
        return cl.array.Array(queue, shape, dtype, data=cl_buffer(buffer))
    rows = int(np.prod(shape[:-1]))
    result = cl.array.empty(queue, shape, dtype)
    _, own_queue = ctx.to_pyopencl()
    cl.enqueue_copy(own_queue, result.base_data, cl_buffer(buffer), src_origin=(0, 0, 0),
                    dst_origin=(result.offset, 0, 0), region=(channels, rows, 1),
                    src_pitches=(padded, padded * rows),
                    dst_pitches=(channels, channels * rows)).wait()
    return result


def result_queue(ctx, arrays):
    """The queue a result array is given: the first pyopencl input's (the caller's), else
    the context's own."""
    for array in arrays:
        if is_device_array(array) and array.queue is not None:
            return array.queue
    return ctx.to_pyopencl()[1]


def run_on_device(ctx, inputs, output_shape, run):
    """accel.ops.layout.run_on_device when an input is a pyopencl array: the same contract,
    device memory in and out (numpy inputs among them are uploaded)."""
    from .ops.layout import pad_channels
    arrays = [array for array, _ in inputs]
    in_bufs = []
    for index, (array, fill) in enumerate(inputs):
        if is_device_array(array):
            in_bufs.append(device_input(ctx, array, fill, f"input {index}"))
        else:
            in_bufs.append(ctx.upload(pad_channels(array, fill=fill)))
    padded_shape = tuple(output_shape[:-1]) + (padded_channels(output_shape[-1]),)
    out_buf = ctx.buffer(int(np.prod(padded_shape)))
    run(in_bufs, out_buf)
    return device_output(ctx, out_buf, output_shape, result_queue(ctx, arrays))
