"""The device layout of activations: NHWC int8 with the channel count padded to a multiple
of CHANNEL_ALIGN. Padded channels of weights, bias and multipliers are zero-filled by the
host, so kernels compute every padded channel like a real one (its value is the output
zero point) and never read uninitialised memory; consumers ignore them."""

from __future__ import annotations

import numpy as np

CHANNEL_ALIGN = 16


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def padded_channels(channels: int, align: int = CHANNEL_ALIGN) -> int:
    return round_up(channels, align)


def pad_channels(x: np.ndarray, align: int = CHANNEL_ALIGN, fill: int = 0) -> np.ndarray:
    """The last axis padded with ``fill`` to a multiple of ``align`` (a C-contiguous copy)."""
    channels = x.shape[-1]
    target = padded_channels(channels, align)
    if target == channels:
        return np.ascontiguousarray(x)
    out = np.full(x.shape[:-1] + (target,), fill, dtype=x.dtype)
    out[..., :channels] = x
    return out


def unpad_channels(x: np.ndarray, channels: int) -> np.ndarray:
    return np.ascontiguousarray(x[..., :channels])


def run_on_device(ctx, inputs, output_shape, run) -> np.ndarray:
    """The numpy round trip of an op's array-level entry point (conv2d, pool2d, ...):
    upload each (logical int8 NHWC array, fill of its padded channels) of ``inputs``, make an
    output buffer for the logical ``output_shape`` with its channels padded, call
    ``run(input_buffers, output_buffer)`` (which launches and waits) and return the logical
    int8 output. With a pyopencl array among the inputs, everything stays on the device and
    the output is a pyopencl array (accel.interop.run_on_device)."""
    from accel import interop
    if any(interop.is_device_array(array) for array, _ in inputs):
        return interop.run_on_device(ctx, inputs, output_shape, run)
    in_bufs = [ctx.upload(pad_channels(array, fill=fill)) for array, fill in inputs]
    channels = output_shape[-1]
    padded_shape = tuple(output_shape[:-1]) + (padded_channels(channels),)
    out_buf = ctx.buffer(int(np.prod(padded_shape)))
    run(in_bufs, out_buf)
    return unpad_channels(ctx.download(out_buf, np.int8, padded_shape), channels)


def launch_and_wait(ctx, binding) -> None:
    """Run a (kernel, global size, local size) from an op's bind() once, to completion."""
    kernel, global_size, local_size = binding
    kernel.launch(ctx.queue, list(global_size), list(local_size)).wait()
