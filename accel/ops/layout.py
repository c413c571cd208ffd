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
